"""Fallback for URLs no registered source serves (``pipe:``, ``gs://``, ...): webdataset's ``gopen``."""

from __future__ import annotations

from typing import IO

from ..errors import ShardNotFoundError, SourceError
from ..errors import _redact as redact
from ._base import ShardSource

__all__ = ["URLSource", "redact"]


class URLSource(ShardSource):
    """Streams each URL with ``webdataset.gopen`` (sequential reads only)."""

    def __init__(self, urls: list[str]) -> None:
        self._urls = list(urls)

    @classmethod
    def from_urls(cls, urls: list[str]) -> URLSource:
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
