"""Published dataset entries as ``Dataset`` / ``DatasetDict``: splits from shard names, sources by storage kind."""

from __future__ import annotations

import logging
from typing import Any

from .._splits import DatasetDict, detect_split
from .._splits import select_split as _select
from ..dataset import Dataset
from ..errors import RecordNotFoundError
from ..schema import DictSample
from ._lexicon import DatasetRecord, Shard
from ._schemas import schema_type
from ._storage import shard_name
from ._xrpc import XrpcRepo

__all__ = ["load_entry"]

log = logging.getLogger("atdata_torch")


def load_entry(
    xrpc: XrpcRepo,
    rec: DatasetRecord,
    sample_type: type | None,
    *,
    split: str | None = None,
    **source_options: Any,
) -> Dataset[Any] | DatasetDict:
    """See :meth:`Atmosphere.load`."""
    st: Any = sample_type
    if st is None:
        if rec.schema_ref.startswith("at://"):
            st = schema_type(xrpc, rec.schema_ref)
        else:
            log.warning(
                "atdata_torch: %s has schema %r, not an at:// record; reading DictSample", rec.uri, rec.schema_ref
            )
            st = DictSample
    groups: dict[str, list[Shard]] = {}
    meta_split = (
        (rec.record.get("metadata") or {}).get("split") if isinstance(rec.record.get("metadata"), dict) else None
    )
    for sh in rec.shards:
        label = meta_split or detect_split(sh.name or shard_name(sh.url)) or "train"
        groups.setdefault(str(label), []).append(sh)
    if not groups:
        raise RecordNotFoundError(f"{rec.uri} lists no shards")
    splits = DatasetDict({k: _dataset(rec, v, st, source_options) for k, v in groups.items()}, st)
    return splits if split is None else _select(splits, split)


def _dataset(rec: DatasetRecord, shards: list[Shard], st: Any, options: dict[str, Any]) -> Any:
    urls = [s.url for s in shards]
    checksums = {s.url: s.sha256 for s in shards if s.sha256}
    if rec.storage == "blobs":
        from ..sources import options_for
        from ._blobs import BlobSource

        opts = options_for("https", options)
        index_urls = {s.url: s.index_url for s in shards if s.index_url}
        src = BlobSource(urls, checksums=checksums, index_urls=index_urls, **opts)
        return Dataset(src, sample_type=st)
    opts = dict(options)
    if rec.storage == "s3":
        if rec.s3.get("endpoint"):
            opts.setdefault("endpoint", rec.s3["endpoint"])
        if rec.s3.get("region"):
            opts.setdefault("region", rec.s3["region"])
    if checksums:
        opts.setdefault("checksums", checksums)
    return Dataset(urls, sample_type=st, **opts)
