"""``QueryExecutor`` and ``SampleLocation``: queries over manifests, answered without opening the shards."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ManifestNotFoundError, SchemaError, ShardFormatError
from ._manifest import ShardManifest, manifest_paths
from ._proxy import Predicate
from ._remote import fetch_manifests, is_remote

__all__ = ["QueryExecutor", "SampleLocation", "Where", "check_local", "query_shards"]

Where = Callable[[Any], Any] | Predicate


@dataclass(frozen=True)
class SampleLocation:
    """Where a sample is: its shard, its ``__key__``, and the byte offset of its tar header in the shard.

    Example:
        >>> SampleLocation(shard="data/train-000000.tar", key="sample_000042", offset=43008).key
        'sample_000042'
    """

    shard: str
    key: str
    offset: int


class QueryExecutor:
    """Runs a ``where`` over the per-sample tables of manifests and returns the matching :class:`SampleLocation`\\ s,
    in manifest and row order.

    ``where`` is a :class:`Predicate` (``(Q.score > 0.9) & (Q.label == "dog")``) or a function of the DataFrame
    returning a boolean mask (``lambda df: df["score"] > 0.9``).

    Args:
        manifests: The manifests to query; a location's ``shard`` is the manifest's ``shard_id``.

    Example:
        >>> import atdata_torch as atd
        >>> from atdata_torch.manifest import ManifestBuilder
        >>> @atd.packable
        ... class S:
        ...     score: float
        >>> b = ManifestBuilder(S, "s")
        >>> for i in range(3):
        ...     b.add_sample(key=f"k{i}", offset=1024 * i, size=16, sample=S(i / 2))
        >>> QueryExecutor([b.build()]).query(where=lambda df: df["score"] >= 0.5)
        [SampleLocation(shard='s', key='k1', offset=1024), SampleLocation(shard='s', key='k2', offset=2048)]
    """

    def __init__(self, manifests: Sequence[ShardManifest]) -> None:
        self._manifests = [(m, m.shard_id) for m in manifests]

    @property
    def manifests(self) -> list[ShardManifest]:
        """The manifests queried."""
        return [m for m, _ in self._manifests]

    def query(self, where: Where) -> list[SampleLocation]:
        """The locations of the samples ``where`` selects.

        Raises:
            ManifestNotFoundError: when a manifest was loaded without its per-sample table but has samples.
            SchemaError: when a :class:`Predicate` names a field no manifest table has, or ``where`` does not return
                one boolean per row.
        """
        out: list[SampleLocation] = []
        for m, shard in self._manifests:
            df = m.samples
            if len(df) == 0:
                if m.num_samples > 0:
                    raise ManifestNotFoundError(
                        f"manifest of shard {m.shard_id!r} was loaded without its .manifest.parquet table, so its "
                        f"{m.num_samples} samples cannot be queried; load it with ShardManifest.from_files()",
                        shard=shard,
                    )
                continue
            if isinstance(where, Predicate):
                unknown = sorted(where.fields() - set(df.columns))
                if unknown:
                    raise SchemaError(
                        f"the query reads {unknown}, which shard {m.shard_id!r}'s manifest does not hold; its "
                        f"fields are {[c for c in df.columns if not c.startswith('__')]}",
                        shard=shard,
                        field=unknown[0],
                    )
            out.extend(_matches(df, where(df), shard))
        return out

    @classmethod
    def from_directory(cls, directory: str | Path) -> QueryExecutor:
        """The manifests of a directory's ``*.manifest.json`` files (sorted), each with its parquet table when
        present (header only otherwise: :meth:`query` then raises for it)."""
        d = Path(directory)
        if not d.is_dir():
            raise ManifestNotFoundError(f"manifest directory {str(d)!r} does not exist", shard=str(d))
        manifests = []
        for j in sorted(d.glob("*.manifest.json")):
            p = j.with_name(j.name[: -len(".json")] + ".parquet")
            manifests.append(ShardManifest.from_files(j, p) if p.exists() else ShardManifest.from_json_only(j))
        return cls(manifests)

    @classmethod
    def from_shard_urls(cls, shard_urls: Sequence[str], *, source: Any = None) -> QueryExecutor:
        """The manifests beside the shards (``a.tar`` -> ``a.manifest.json`` / ``.manifest.parquet``); a
        location's ``shard`` is the shard as given. Manifests of ``http(s)://`` and ``s3://`` shards are fetched
        through ``source`` (the dataset's: its headers, credentials, endpoint), or a source with the default
        options (S3 credentials from the environment) when ``None``.

        Raises:
            ManifestNotFoundError: naming the shards without both manifest files (the original skipped them,
                silently leaving their samples out of every answer).
        """
        ex = cls([])
        ex._manifests = [(m, s) for s, m in zip(shard_urls, _load(list(shard_urls), source), strict=True)]
        return ex


def _matches(df: Any, mask: Any, shard: str) -> list[SampleLocation]:
    n = len(df)
    if getattr(mask, "shape", None) != (n,) or str(getattr(mask, "dtype", "")) not in ("bool", "boolean"):
        raise SchemaError(
            f"where= must return one boolean per manifest row ({n} rows), got {type(mask).__name__} "
            f"{getattr(mask, 'dtype', '')} of shape {getattr(mask, 'shape', None)}; e.g. lambda df: df['score'] > 0.5",
            shard=shard,
        )
    hit = df[mask.fillna(False) if hasattr(mask, "fillna") else mask]
    return [
        SampleLocation(shard, str(k), int(o))
        for k, o in zip(hit["__key__"].tolist(), hit["__offset__"].tolist(), strict=True)
    ]


def check_local(shards: list[str]) -> None:
    """Raise :class:`ManifestNotFoundError` when some shards are remote (manifests are read beside local shards)."""
    remote = [s for s in shards if "://" in s and not s.startswith("file://")]
    if remote:
        raise ManifestNotFoundError(
            f"manifest queries read the manifests beside local shards, and {len(remote)} shard(s) are remote (first "
            f"{remote[0]!r}); download the shards with their .manifest.json/.manifest.parquet files, or load the "
            "manifests with ShardManifest.from_files() and query them with QueryExecutor",
            shard=remote[0],
        )


def _load(shards: list[str], source: Any = None) -> list[ShardManifest]:
    fetched = fetch_manifests(source, [s for s in shards if is_remote(s)])  # http(s)://, s3:// (c17d)
    paths = [manifest_paths(s[len("file://") :] if s.startswith("file://") else s) for s in shards]
    missing = [
        s for s, (j, p) in zip(shards, paths, strict=True)
        if s not in fetched and not (os.path.exists(j) and os.path.exists(p))
    ]  # fmt: skip
    if missing:
        raise ManifestNotFoundError(
            f"{len(missing)} of {len(shards)} shard(s) have no manifest (first: {missing[0]!r} lacks "
            f"{os.path.basename(manifest_paths(missing[0])[0])} / .manifest.parquet); write the shards with "
            "write_samples(..., manifest=True) (or ShardWriter(..., manifest=True))",
            shard=missing[0],
        )
    manifests = [
        fetched[s] if s in fetched else ShardManifest.from_files(j, p) for s, (j, p) in zip(shards, paths, strict=True)
    ]
    for shard, m in zip(shards, manifests, strict=True):
        stem = os.path.splitext(os.path.basename(shard))[0]
        if m.shard_id != stem:
            raise ShardFormatError(
                f"the manifest beside shard {shard!r} was written for shard {m.shard_id!r} ({m.num_samples} "
                f"samples), so its rows may not be this shard's: the original atdata 0.7's write_samples(maxcount=/"
                "maxsize=) labels each manifest with the previous shard and leaves the last one empty; rewrite "
                "them with atdata_torch.manifest.build_manifests(ds)",
                shard=shard,
            )
    return manifests


def query_shards(shards: Sequence[str], where: Where, source: Any = None) -> list[SampleLocation]:
    """``Dataset.query``: the manifests beside ``shards`` (remote ones fetched through ``source``), queried
    (locations name the shards as given)."""
    if not shards:
        return []
    return QueryExecutor.from_shard_urls(shards, source=source).query(where)
