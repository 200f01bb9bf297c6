"""``ManifestBuilder``: collects one shard's manifest while it is written."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ._aggregates import Aggregate, create_aggregate
from ._fields import resolve_manifest_fields
from ._manifest import ShardManifest
from ._parquet import build_table, samples_frame

__all__ = ["ManifestBuilder"]


def _column_kinds(sample_type: type, names: list[str]) -> dict[str, tuple[str | None, str | None]]:
    specs = {s.name: s for s in getattr(sample_type, "__atdata_fields__", ())}
    out: dict[str, tuple[str | None, str | None]] = {}
    for name in names:
        spec = specs.get(name)
        if spec is None:
            out[name] = (None, None)
        else:
            out[name] = (spec.kind, spec.items.kind if spec.items is not None else None)
    return out


class ManifestBuilder:
    """Collects the manifest of one shard: call :meth:`add_sample` for each sample written, then :meth:`build`.

    ``write_samples(..., manifest=True)`` and ``ShardWriter(..., manifest=True)`` use one per shard; use it
    directly for shards written some other way.

    Args:
        sample_type: The ``@packable`` class of the samples.
        shard_id: The shard's name without ``.tar`` (the original's ``Path(shard).stem``).
        schema_version: Recorded in the header.
        source_job_id: Provenance: the job that wrote the shard.
        parent_shards: Provenance: the shards it was derived from.
        pipeline_version: Provenance: the version of the pipeline.

    Example:
        >>> import atdata_torch as atd
        >>> @atd.packable
        ... class S:
        ...     label: str
        ...     score: float
        >>> b = ManifestBuilder(S, "train-000000")
        >>> b.add_sample(key="k0", offset=0, size=20, sample=S("cat", 0.5))
        >>> m = b.build()
        >>> m.num_samples, m.aggregates["score"]["max"], list(m.samples.columns)
        (1, 0.5, ['__key__', '__offset__', '__size__', 'label', 'score'])
    """

    def __init__(
        self,
        sample_type: type,
        shard_id: str,
        schema_version: str = "1.0.0",
        source_job_id: str | None = None,
        parent_shards: list[str] | None = None,
        pipeline_version: str | None = None,
    ) -> None:
        self._sample_type = sample_type
        self._shard_id = shard_id
        self._schema_version = schema_version
        self._provenance: dict[str, Any] = {}
        if source_job_id:
            self._provenance["source_job_id"] = source_job_id
        if parent_shards:
            self._provenance["parent_shards"] = list(parent_shards)
        if pipeline_version:
            self._provenance["pipeline_version"] = pipeline_version
        self._fields = resolve_manifest_fields(sample_type)
        self._aggregates: dict[str, Aggregate] = {n: create_aggregate(f.aggregate) for n, f in self._fields.items()}
        self._rows: list[tuple[str, int, int, dict[str, Any]]] = []
        self._total = 0

    def add_sample(self, *, key: str, offset: int, size: int, sample: Any) -> None:
        """Record one sample: its key, the byte offset of its tar header, its payload size, and its field values
        (``None`` values are left out of the aggregates)."""
        values: dict[str, Any] = {}
        for name, agg in self._aggregates.items():
            value = getattr(sample, name, None)
            if value is not None:
                agg.add(value)
                values[name] = value
        self._rows.append((key, int(offset), int(size), values))
        self._total += int(size)

    def build(self) -> ShardManifest:
        """The finished manifest (needs the ``arrow`` extra: pyarrow and pandas)."""
        table = build_table(self._rows, _column_kinds(self._sample_type, list(self._fields)))
        m = ShardManifest(
            shard_id=self._shard_id,
            schema_type=self._sample_type.__name__,
            schema_version=self._schema_version,
            num_samples=len(self._rows),
            size_bytes=self._total,
            created_at=datetime.now(timezone.utc),
            aggregates={name: agg.to_dict() for name, agg in self._aggregates.items()},
            samples=samples_frame(table),
            provenance=dict(self._provenance),
        )
        m._table = table
        return m
