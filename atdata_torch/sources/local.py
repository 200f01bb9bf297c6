"""Local files (plain paths and ``file://``), read through mmap."""

from __future__ import annotations

import mmap
import os
from typing import IO

from .._hints import local_options_message, missing_shard_message
from ..errors import ShardNotFoundError, SourceError
from ._base import Buffer, ShardSource

_SIDECAR = ".idx.json"


def _path(url: str) -> str:
    return url[len("file://") :] if url.startswith("file://") else url


class LocalSource(ShardSource):
    """Shards on a local filesystem.

    Example:
        >>> LocalSource(["/data/a.tar", "/data/b.tar"]).list_shards()
        ['/data/a.tar', '/data/b.tar']
    """

    def __init__(self, paths: list[str]) -> None:
        self._paths = [_path(os.fspath(p)) for p in paths]

    @classmethod
    def from_urls(cls, urls: list[str], **options: object) -> LocalSource:
        """Build from paths or ``file://`` URLs."""
        if options:
            raise TypeError(local_options_message(options))
        return cls(urls)

    def list_shards(self) -> list[str]:
        return list(self._paths)

    def open_shard(self, shard: str) -> IO[bytes]:
        try:
            return open(shard, "rb", buffering=1 << 20)
        except FileNotFoundError as exc:
            raise ShardNotFoundError(missing_shard_message(shard), shard=shard) from exc
        except OSError as exc:
            raise SourceError(f"cannot open shard {shard!r}: {exc.strerror}", shard=shard) from exc

    def buffer(self, shard: str) -> Buffer:
        with self.open_shard(shard) as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return b""
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return memoryview(mm)

    def read_sidecar(self, shard: str) -> bytes | None:
        try:
            with open(shard + _SIDECAR, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def __repr__(self) -> str:
        n = len(self._paths)
        first = self._paths[0] if n else ""
        return f"LocalSource({n} shard{'s' if n != 1 else ''}{', first=' + repr(first) if n else ''})"
