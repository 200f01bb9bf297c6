"""``build_manifests``: manifests for shards that have none, or whose manifests are wrong, by reading the shards."""

from __future__ import annotations

import os
from typing import Any

from ..errors import ShardFormatError
from ._builder import ManifestBuilder
from ._manifest import ShardManifest
from ._query import check_local
from ._writer import ManifestWriter

__all__ = ["build_manifests"]


def build_manifests(dataset: Any, *, write: bool = True, fsync: bool = True) -> list[ShardManifest]:
    """Read each (local) shard of ``dataset`` and (re)write its manifest beside it; returns the manifests.

    For shards written without ``manifest=True``, by webdataset, or by the original atdata's ``write_samples`` with
    ``maxcount``/``maxsize`` (whose manifests carry the previous shard's ``shard_id`` and leave the last shard's
    empty).

    Args:
        dataset: A ``Dataset[T]`` of a ``@packable`` type over local shards.
        write: Write the files (otherwise only return the manifests).
        fsync: ``fsync`` each file before its rename.

    Raises:
        SchemaError: when the dataset's sample type is not a ``@packable`` class.
        ManifestNotFoundError: for remote shards.

    Example:
        >>> import os, tempfile
        >>> import atdata_torch as atd
        >>> @atd.packable
        ... class S:
        ...     n: int
        >>> ds = atd.write_samples([S(i) for i in range(5)], os.path.join(tempfile.mkdtemp(), "s.tar"), progress=False)
        >>> [m.num_samples for m in build_manifests(ds)], [loc.key for loc in ds.query(where=ds.fields.n > 2)]
        ([5], ['00000003', '00000004'])
    """
    shards = dataset.list_shards()
    check_local(shards)
    st = dataset.sample_type
    out = []
    for shard in shards:
        builder = ManifestBuilder(st, shard_id=os.path.splitext(os.path.basename(shard))[0])
        idx = dataset.shard_index(shard)
        samples = list(type(dataset)([shard], sample_type=st).ordered())
        if len(samples) != idx.count:
            raise ShardFormatError(
                f"shard {shard!r} indexes {idx.count} samples but {len(samples)} were read; rebuild its index "
                "(atd.build_index) and retry",
                shard=shard,
            )
        sizes = idx.payload_sizes if idx.payload_sizes is not None else idx.lengths
        for key, offset, size, sample in zip(idx.keys, idx.offsets, sizes, samples, strict=True):
            builder.add_sample(key=key, offset=offset, size=size, sample=sample)
        m = builder.build()
        if write:
            ManifestWriter(shard).write(m, fsync=fsync)
        out.append(m)
    return out
