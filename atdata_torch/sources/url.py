"""Fallback for URLs no registered source serves (``pipe:``, ``gs://``, ...): webdataset's ``gopen``."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import IO

from .._redaction import redact
from ..errors import ShardNotFoundError, SourceError
from ._base import ShardSource, as_shard_list

__all__ = ["URLSource", "redact"]


class URLSource(ShardSource):
    """Streams each URL with ``webdataset.gopen`` (sequential reads only).

    Args:
        urls: One URL or path with optional braces (the original atdata's ``URLSource(url)``), or a list of them.

    Example:
        >>> src = URLSource("/data/train-{000000..000001}.tar")
        >>> src.list_shards(), src.url
        (['/data/train-000000.tar', '/data/train-000001.tar'], '/data/train-{000000..000001}.tar')
    """

    def __init__(self, urls: str | os.PathLike[str] | Iterable[str]) -> None:
        self.url: str | None = os.fspath(urls) if isinstance(urls, (str, os.PathLike)) else None
        self._urls = as_shard_list(urls, "URLSource")

    @classmethod
    def from_urls(cls, urls: str | list[str]) -> URLSource:
        """Build from URLs."""
        return cls(urls)

    def list_shards(self) -> list[str]:
        return list(self._urls)

    def open_shard(self, shard: str) -> IO[bytes]:
        from webdataset.gopen import gopen

        try:
            return gopen(shard, "rb")  # type: ignore[no-any-return]
        except FileNotFoundError as exc:
            raise ShardNotFoundError(f"shard {redact(shard)!r} does not exist", shard=redact(shard)) from exc
        except Exception as exc:
            raise SourceError(
                f"cannot open shard {redact(shard)!r} ({type(exc).__name__})", shard=redact(shard)
            ) from exc

    def __repr__(self) -> str:
        return f"URLSource({len(self._urls)} shards)"
