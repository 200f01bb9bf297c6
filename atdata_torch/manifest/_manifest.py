"""``ShardManifest``: one shard's manifest, its JSON header and its per-sample table."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import ManifestNotFoundError, SchemaError, ShardFormatError
from ._parquet import frame_table, pandas, read_samples, table_bytes

__all__ = ["MANIFEST_FORMAT_VERSION", "ShardManifest", "manifest_paths"]

MANIFEST_FORMAT_VERSION = "1.0.0"

_REQUIRED = ("shard_id", "schema_type", "schema_version", "num_samples", "size_bytes", "created_at")


def manifest_paths(shard: str | os.PathLike[str]) -> tuple[str, str]:
    """The manifest files of a shard: ``<shard without .tar>.manifest.json`` and ``.manifest.parquet``.

    Example:
        >>> manifest_paths("data/train-000000.tar")
        ('data/train-000000.manifest.json', 'data/train-000000.manifest.parquet')
    """
    s = os.fspath(shard)
    base = s[: -len(".tar")] if s.endswith(".tar") else s
    return base + ".manifest.json", base + ".manifest.parquet"


@dataclass
class ShardManifest:
    """One shard's manifest: the header (identity, counts, per-field ``aggregates``) and ``samples``, a pandas
    DataFrame with ``__key__``, ``__offset__``, ``__size__`` and one column per manifest field.

    ``__offset__`` is the byte offset of the sample's tar header in the shard and ``__size__`` the size of its
    msgpack payload (see the migration guide for how the original differs).

    Example:
        >>> import os, tempfile
        >>> import atdata_torch as atd
        >>> @atd.packable
        ... class S:
        ...     label: str
        >>> d = tempfile.mkdtemp()
        >>> _ = atd.write_samples([S("a"), S("b")], os.path.join(d, "s.tar"), manifest=True, progress=False)
        >>> m = ShardManifest.from_files(os.path.join(d, "s.manifest.json"), os.path.join(d, "s.manifest.parquet"))
        >>> m.num_samples, m.aggregates["label"]["cardinality"], list(m.samples["label"])
        (2, 2, ['a', 'b'])
    """

    shard_id: str
    schema_type: str
    schema_version: str
    num_samples: int
    size_bytes: int
    created_at: datetime
    aggregates: dict[str, dict[str, Any]]
    samples: Any
    provenance: dict[str, Any] = field(default_factory=dict)
    _table: Any = field(default=None, init=False, repr=False, compare=False)

    def header_dict(self) -> dict[str, Any]:
        """The JSON header (``.manifest.json``): the original's keys, in its order."""
        header: dict[str, Any] = {
            "manifest_version": MANIFEST_FORMAT_VERSION,
            "shard_id": self.shard_id,
            "schema_type": self.schema_type,
            "schema_version": self.schema_version,
            "num_samples": self.num_samples,
            "size_bytes": self.size_bytes,
            "created_at": self.created_at.isoformat(),
            "aggregates": self.aggregates,
        }
        if self.provenance:
            header["provenance"] = self.provenance
        return header

    def header_bytes(self) -> bytes:
        """The ``.manifest.json`` file: the header as strict JSON (no ``NaN``/``Infinity``), indented as the
        original's.

        Raises:
            SchemaError: when the header holds a value JSON cannot carry.
        """
        try:
            return json.dumps(self.header_dict(), indent=2, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise SchemaError(
                f"the manifest header of shard {self.shard_id!r} cannot be written as JSON ({exc}); aggregates and "
                "provenance must hold JSON values (no NaN or infinity)"
            ) from exc

    def parquet_bytes(self) -> bytes:
        """The ``.manifest.parquet`` file (needs the ``arrow`` extra)."""
        table = self._table if self._table is not None else frame_table(self.samples)
        return table_bytes(table)

    @classmethod
    def _from_header(cls, path: str, samples: Any) -> ShardManifest:
        header = _read_header(path)
        try:
            created = datetime.fromisoformat(str(header["created_at"]))
        except ValueError as exc:
            raise ShardFormatError(
                f"manifest {path!r} has created_at {header['created_at']!r}, expected an ISO timestamp", shard=path
            ) from exc
        return cls(
            shard_id=str(header["shard_id"]),
            schema_type=str(header["schema_type"]),
            schema_version=str(header["schema_version"]),
            num_samples=int(header["num_samples"]),
            size_bytes=int(header["size_bytes"]),
            created_at=created,
            aggregates=dict(header.get("aggregates") or {}),
            samples=samples,
            provenance=dict(header.get("provenance") or {}),
        )

    @classmethod
    def from_files(cls, json_path: str | Path, parquet_path: str | Path) -> ShardManifest:
        """Load a manifest from its two files (written by this library or the original).

        Raises:
            ManifestNotFoundError: (a ``FileNotFoundError``) when either file is missing.
            ShardFormatError: (a ``ValueError``) when one is malformed.
        """
        samples = read_samples(_existing(os.fspath(parquet_path)))
        return cls._from_header(os.fspath(json_path), samples)

    @classmethod
    def from_json_only(cls, json_path: str | Path) -> ShardManifest:
        """Load only the header (``samples`` is empty): enough for shard-level statistics, not for queries."""
        return cls._from_header(os.fspath(json_path), pandas().DataFrame())


def _existing(path: str) -> str:
    if not os.path.exists(path):
        raise ManifestNotFoundError(
            f"manifest file {path!r} does not exist; write the shards with write_samples(..., manifest=True)",
            shard=path,
        )
    return path


def _read_header(path: str) -> dict[str, Any]:
    try:
        with open(_existing(path), "rb") as f:
            header = json.loads(f.read())
    except (ValueError, RecursionError) as exc:
        raise ShardFormatError(f"manifest header {path!r} is not valid JSON ({exc}); rewrite it", shard=path) from exc
    if not isinstance(header, dict):
        raise ShardFormatError(
            f"manifest header {path!r} holds a {type(header).__name__}, expected an object", shard=path
        )
    missing = [k for k in _REQUIRED if k not in header]
    if missing:
        raise ShardFormatError(
            f"manifest header {path!r} lacks {missing}; expected the keys manifest_version, "
            + ", ".join(_REQUIRED)
            + ", aggregates; rewrite it with write_samples(..., manifest=True)",
            shard=path,
        )
    return header
