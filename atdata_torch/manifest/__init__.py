"""Per-shard manifests and queries (the original atdata's ``atdata.manifest``).

``write_samples(..., manifest=True)`` writes, beside each shard ``X.tar``, ``X.manifest.json`` (identity, counts and
per-field statistics) and ``X.manifest.parquet`` (one row per sample: ``__key__``, ``__offset__``, ``__size__`` and
the manifest fields). ``ds.query(where=...)`` answers from them with :class:`SampleLocation`\\ s, without opening
a shard. Reading and writing the parquet tables needs the ``arrow`` extra (pyarrow, pandas).

Example:
    >>> import os, tempfile
    >>> import atdata_torch as atd
    >>> @atd.packable
    ... class S:
    ...     label: str
    ...     score: float
    >>> d = tempfile.mkdtemp()
    >>> ds = atd.write_samples([S(f"c{i % 2}", i / 10) for i in range(6)], os.path.join(d, "s.tar"),
    ...                        maxcount=3, manifest=True, progress=False)
    >>> Q = ds.fields
    >>> [loc.key for loc in ds.query(where=(Q.label == "c1") & (Q.score > 0.2))]
    ['00000003', '00000005']
"""

from ._aggregates import CategoricalAggregate, NumericAggregate, SetAggregate, create_aggregate
from ._builder import ManifestBuilder
from ._fields import AggregateKind, ManifestField, resolve_manifest_fields
from ._manifest import MANIFEST_FORMAT_VERSION, ShardManifest, manifest_paths
from ._proxy import F, FieldProxy, Predicate, query_fields
from ._query import QueryExecutor, SampleLocation, query_shards
from ._rebuild import build_manifests
from ._writer import ManifestWriter

__all__ = [
    "MANIFEST_FORMAT_VERSION",
    "AggregateKind",
    "CategoricalAggregate",
    "F",
    "FieldProxy",
    "ManifestBuilder",
    "ManifestField",
    "ManifestWriter",
    "NumericAggregate",
    "Predicate",
    "QueryExecutor",
    "SampleLocation",
    "SetAggregate",
    "ShardManifest",
    "build_manifests",
    "create_aggregate",
    "manifest_paths",
    "query_fields",
    "query_shards",
    "resolve_manifest_fields",
]
