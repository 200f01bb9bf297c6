"""Where a published dataset's shards live: the ``storage`` object of an entry record (blobs, http, s3).

Local shards become PDS blobs (uploaded as they are, ``application/x-tar``, with their sha256 and their index
sidecar); remote shards are recorded by URL. A local path never goes into a record.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from tqdm.auto import tqdm

from ..dataset import Dataset
from ..errors import BlobLimitError, PublishError
from ._lexicon import EXT_KEY, NO_CHECKSUM, NS
from ._xrpc import XrpcRepo

__all__ = ["build_storage", "shard_name"]


def build_storage(
    xrpc: XrpcRepo,
    ds: Dataset[Any],
    shards: list[str],
    storage: str | None,
    *,
    endpoint: str | None = None,
    region: str | None = None,
    progress: bool | None = None,
) -> tuple[dict[str, Any], dict[str, int]]:
    """``(storage object, size)`` for an entry record; ``storage=None`` picks by the shards' kind.

    Raises:
        PublishError: mixed kinds, a local path for URL storage, or an unknown storage kind.
        BlobLimitError: a shard is larger than the PDS accepts.
    """
    kinds = {"local" if _is_local(u) else u.split("://", 1)[0].lower() for u in shards}
    if storage is None:
        if kinds == {"local"}:
            storage = "blobs"
        elif kinds <= {"http", "https"}:
            storage = "http"
        elif kinds == {"s3"}:
            storage = "s3"
        else:
            raise PublishError(
                f"shards of mixed kinds ({sorted(kinds)}); pass storage='blobs' to upload them all to the PDS"
            )
    if storage == "blobs":
        return _blob_storage(xrpc, ds, shards, progress)
    if storage == "http":
        return _http_storage(ds, shards)
    if storage == "s3":
        return _s3_storage(ds, shards, endpoint, region)
    raise PublishError(f"unknown storage {storage!r}; use 'blobs', 'http' or 's3'")


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def _local_path(url: str) -> str:
    return url[len("file://") :] if url.startswith("file://") else url


def shard_name(url: str) -> str:
    return url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def _local_refusal(shard: str, storage: str) -> PublishError:
    return PublishError(
        f"shard {shard!r} is a local file, and a {storage} record must never hold a local path (nobody else can "
        f"read it). Publish with storage='blobs' to upload the shards to your PDS, or upload them to a web "
        f"server / S3 bucket and publish a Dataset of those URLs",
        shard=shard,
    )


def _remote_sha256(ds: Dataset[Any], shard: str) -> dict[str, str]:
    side = ds._sidecar(shard)
    if side is not None and side.sha256:
        return {"algorithm": "sha256", "digest": side.sha256}
    return dict(NO_CHECKSUM)


def _remote_size(ds: Dataset[Any]) -> dict[str, int]:
    d = ds.summary()  # samples and bytes from the sidecars, when every shard has one
    return {k: int(d[k]) for k in ("shards", "samples", "bytes") if d[k] is not None}


def _http_storage(ds: Dataset[Any], shards: list[str]) -> tuple[dict[str, Any], dict[str, int]]:
    out = []
    for s in shards:
        if _is_local(s):
            raise _local_refusal(s, "storageHttp")
        if not s.lower().startswith(("http://", "https://")):
            raise PublishError(f"shard {s!r} is not an http(s) URL; use storage='s3' or 'blobs'", shard=s)
        if "@" in s.split("://", 1)[1].split("/", 1)[0]:
            raise PublishError(
                "a shard URL carries credentials (user:password@host); a public record must not hold them: "
                "publish URLs without credentials",
                shard=s,
            )
        out.append({"url": s, "checksum": _remote_sha256(ds, s)})
    return {"$type": f"{NS}.storageHttp", "shards": out}, _remote_size(ds)


def _s3_storage(
    ds: Dataset[Any], shards: list[str], endpoint: str | None, region: str | None
) -> tuple[dict[str, Any], dict[str, int]]:
    buckets = set()
    keys = []
    for s in shards:
        if _is_local(s):
            raise _local_refusal(s, "storageS3")
        if not s.startswith("s3://"):
            raise PublishError(f"shard {s!r} is not an s3:// URL; use storage='http' or 'blobs'", shard=s)
        bucket, _, key = s[5:].partition("/")
        buckets.add(bucket)
        keys.append((s, key))
    if len(buckets) != 1:
        raise PublishError(f"a storageS3 record holds one bucket; the shards are in {sorted(buckets)}")
    endpoint = endpoint or getattr(ds.source, "endpoint", None)
    region = region or getattr(ds.source, "region", None)
    stor: dict[str, Any] = {
        "$type": f"{NS}.storageS3",
        "bucket": buckets.pop(),
        "shards": [{"key": k, "checksum": _remote_sha256(ds, s)} for s, k in keys],
    }
    if region:
        stor["region"] = str(region)
    if endpoint:
        stor["endpoint"] = str(endpoint)
    return stor, _remote_size(ds)


def _upload(xrpc: XrpcRepo, data: bytes | memoryview, mime: str, what: str) -> dict[str, Any]:
    xrpc.account()
    if xrpc.max_blob_bytes is not None and len(data) > xrpc.max_blob_bytes:
        raise _too_large(xrpc, what, len(data))
    try:
        return xrpc.upload_blob(data, mime, what=what)
    except BlobLimitError:
        raise _too_large(xrpc, what, len(data)) from None


def _too_large(xrpc: XrpcRepo, what: str, size: int) -> BlobLimitError:
    limit = (
        f"its limit is {xrpc.max_blob_bytes:,} bytes"
        if xrpc.max_blob_bytes is not None
        else "it answered 413 PayloadTooLarge; the reference PDS's default limit is 5 MiB (5,242,880 bytes)"
    )
    return BlobLimitError(
        f"{what} is {size:,} bytes, larger than {xrpc.pds} accepts as one blob ({limit}; a self-hosted PDS "
        "raises it with PDS_BLOB_UPLOAD_LIMIT). Write smaller shards (ShardWriter(maxsize=...)), or put the "
        "shards on a web server or S3 and publish with storage='http' / 's3'",
        shard=what,
    )


def _blob_storage(
    xrpc: XrpcRepo, ds: Dataset[Any], shards: list[str], progress: bool | None
) -> tuple[dict[str, Any], dict[str, int]]:
    sizes: list[int] = []
    for s in shards:
        if _is_local(s):
            sizes.append(os.path.getsize(_local_path(s)))
        else:
            side = ds._sidecar(s)
            sizes.append(side.size if side is not None else -1)
    if xrpc.max_blob_bytes is not None:  # refuse before uploading anything
        for s, n in zip(shards, sizes, strict=True):
            if n > xrpc.max_blob_bytes:
                raise _too_large(xrpc, shard_name(s), n)
    blobs = []
    total_samples = 0
    bar = tqdm(
        total=sum(max(n, 0) for n in sizes),
        unit="B",
        unit_scale=True,
        desc="uploading shards",
        leave=False,
        disable=None if progress is None else not progress,
    )
    try:
        for s in shards:
            if _is_local(s):
                path = _local_path(s)
                with open(path, "rb") as f:
                    data: bytes | memoryview = f.read()
            else:
                data = ds._buffer(s)
            digest = hashlib.sha256(data).hexdigest()
            blob = _upload(xrpc, data, "application/x-tar", f"shard {shard_name(s)}")
            idx = ds.shard_index(s, data)
            total_samples += idx.count
            index_blob = _upload(xrpc, idx.to_json(), "application/octet-stream", f"index of {shard_name(s)}")
            blobs.append(
                {
                    "blob": blob,
                    "checksum": {"algorithm": "sha256", "digest": digest},
                    # Extensions the original ignores: the file name (splits), its index sidecar, its samples.
                    EXT_KEY: {"name": shard_name(s), "index": index_blob, "samples": idx.count},
                }
            )
            bar.update(len(data))
    finally:
        bar.close()
    size = {"samples": total_samples, "bytes": sum(b["blob"]["size"] for b in blobs), "shards": len(blobs)}
    return {"$type": f"{NS}.storageBlobs", "blobs": blobs}, size
