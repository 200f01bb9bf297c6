"""Where shards come from: the :class:`DataSource` protocol, built-in sources and a scheme registry.

The core never imports an optional backend: schemes map to ``"module:Class"`` strings that are imported on first
use. URLs that no registered source serves fall back to webdataset's ``gopen``.

Example:
    >>> from atdata_torch.sources import MemorySource
    >>> src = MemorySource({"a.tar": b""})
    >>> src.list_shards()
    ['a.tar']
"""

from __future__ import annotations

from ._base import ConcatSource, DataSource, Filling, ShardSource
from ._registry import options_for, register_source, resolve_source, source_for_urls
from .local import LocalSource
from .memory import MemorySource
from .url import URLSource

# HTTPSource (urllib3), BlobSource (over HTTPSource) and S3Source (boto3, the "s3" extra) are imported on first use.


def __getattr__(name: str) -> object:
    if name == "HTTPSource":
        from .http import HTTPSource

        return HTTPSource
    if name == "S3Source":
        from .s3 import S3Source

        return S3Source
    if name == "BlobSource":
        from .blob import BlobSource

        return BlobSource
    raise AttributeError(name)


__all__ = [
    "BlobSource",
    "ConcatSource",
    "DataSource",
    "Filling",
    "HTTPSource",
    "LocalSource",
    "MemorySource",
    "S3Source",
    "ShardSource",
    "URLSource",
    "options_for",
    "register_source",
    "resolve_source",
    "source_for_urls",
]
