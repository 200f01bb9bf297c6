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

from ._base import DataSource, ShardSource, register_source, resolve_source, source_for_urls
from .local import LocalSource
from .memory import MemorySource
from .url import URLSource

__all__ = [
    "DataSource",
    "LocalSource",
    "MemorySource",
    "ShardSource",
    "URLSource",
    "register_source",
    "resolve_source",
    "source_for_urls",
]
