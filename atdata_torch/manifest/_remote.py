"""Manifests beside remote shards (``http(s)://``, ``s3://``): fetched through the dataset's own source (its
headers, credentials, endpoint, retries and deadlines), so ``Dataset.query()`` works where the shards are.

Example:
    >>> manifest_urls("s3://b/data/train-000000.tar")
    ('s3://b/data/train-000000.manifest.json', 's3://b/data/train-000000.manifest.parquet')
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Sequence
from typing import Any

from ..errors import ManifestNotFoundError, ShardFormatError, ShardNotFoundError, SourceError
from ._manifest import ShardManifest, manifest_paths

__all__ = ["fetch_manifests", "is_remote", "manifest_urls"]


def is_remote(shard: str) -> bool:
    """Whether ``shard`` is a URL other than ``file://`` (its manifests are fetched, not opened)."""
    return "://" in shard and not shard.startswith("file://")


def manifest_urls(shard: str) -> tuple[str, str]:
    """The URLs of a remote shard's ``.manifest.json`` and ``.manifest.parquet`` (beside it, ``.tar`` replaced)."""
    return manifest_paths(shard)


def _downloader(source: Any, shard: str) -> Any:
    """The ``download_to`` of the (sub-)source serving ``shard``, or ``None``."""
    parts = getattr(source, "sources", None)
    if parts is not None:  # a ConcatSource: the part listing the shard
        for part in parts:
            if shard in part.list_shards():
                return _downloader(part, shard)
        return None
    return getattr(source, "download_to", None)


def _fetch(source: Any, shard: str, url: str) -> bytes:
    download = _downloader(source, shard) if source is not None else None
    if download is None:  # no source of the dataset's serves it: one with the default options (environment)
        from ..sources import source_for_urls

        download = source_for_urls([shard]).download_to  # type: ignore[attr-defined]
    buf = io.BytesIO()
    try:
        download(url, buf)
    except ShardNotFoundError as exc:
        raise ManifestNotFoundError(
            f"shard {shard!r} has no manifest: {os.path.basename(url)} is not there ({exc.message}); write the "
            "shards with write_samples(..., manifest=True) (or S3DataStore.write_shards(..., manifest=True)) "
            "and upload the .manifest.json/.manifest.parquet files beside them",
            shard=shard,
        ) from exc
    except SourceError as exc:
        raise SourceError(f"cannot fetch the manifest {url!r} of shard {shard!r}: {exc.message}", shard=shard) from exc
    return buf.getvalue()


def fetch_manifests(source: Any, shards: Sequence[str]) -> dict[str, ShardManifest]:
    """Shard -> its manifest, each downloaded through ``source`` (the dataset's; ``None``: a source with the
    default options) and parsed as a local one would be.

    Raises:
        ManifestNotFoundError: a shard has no manifest (naming it and the fix).
        ShardFormatError: a manifest file is malformed (naming its URL).
        SourceError: a manifest could not be fetched (refused, unreachable).
    """
    out: dict[str, ShardManifest] = {}
    if not shards:
        return out
    with tempfile.TemporaryDirectory(prefix="atdata-torch-manifest-") as tmp:
        for i, shard in enumerate(shards):
            urls = manifest_urls(shard)
            local = (os.path.join(tmp, f"{i}.manifest.json"), os.path.join(tmp, f"{i}.manifest.parquet"))
            for url, path in zip(urls, local, strict=True):
                with open(path, "wb") as f:
                    f.write(_fetch(source, shard, url))
            try:
                out[shard] = ShardManifest.from_files(*local)
            except ShardFormatError as exc:
                msg = exc.message.replace(local[0], urls[0]).replace(local[1], urls[1])
                raise ShardFormatError(msg, shard=shard) from exc
    return out
