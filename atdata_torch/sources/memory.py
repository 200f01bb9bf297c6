"""An in-memory source: shards held as bytes (a test seam that ships with the library)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import IO

from ..errors import ShardNotFoundError
from ._base import ShardSource
from ._filling import Buffer

_SIDECAR = ".idx.json"


class MemorySource(ShardSource):
    """Shards kept in a dict ``{name: tar bytes}``; a ``name + ".idx.json"`` entry is that shard's sidecar.

    Example:
        >>> src = MemorySource({"x.tar": b"..."})
        >>> src.buffer("x.tar")
        b'...'
    """

    def __init__(self, shards: Mapping[str, bytes]) -> None:
        self._data = dict(shards)
        self._names = [k for k in self._data if not k.endswith(_SIDECAR)]

    @classmethod
    def from_urls(cls, urls: list[str]) -> MemorySource:  # pragma: no cover - not reachable by URL
        raise TypeError("MemorySource is built from a dict of bytes, not from URLs")

    def list_shards(self) -> list[str]:
        return list(self._names)

    def _get(self, shard: str) -> bytes:
        try:
            return self._data[shard]
        except KeyError:
            raise ShardNotFoundError(
                f"shard {shard!r} is not in this MemorySource (it has {self._names[:5]})",
                shard=shard,
            ) from None

    def open_shard(self, shard: str) -> IO[bytes]:
        return io.BytesIO(self._get(shard))

    def buffer(self, shard: str) -> Buffer:
        return self._get(shard)

    def read_sidecar(self, shard: str) -> bytes | None:
        return self._data.get(shard + _SIDECAR)

    def __repr__(self) -> str:
        return f"MemorySource({len(self._names)} shards)"
