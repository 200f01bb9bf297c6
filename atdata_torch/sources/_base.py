"""The DataSource protocol, the ShardSource base class, and ConcatSource (``Buffer``, ``Filling`` and ``past_end``
live in ``_filling``; they are importable from here too)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import IO, Any, Protocol, runtime_checkable

from .._shards import expand_urls
from ..errors import ShardNotFoundError
from ._capabilities import Buffered, Prefetching, SidecarBatching, SidecarReading, Streaming
from ._filling import Buffer, Filling, past_end

__all__ = ["Buffer", "ConcatSource", "DataSource", "Filling", "ShardSource", "as_shard_list", "past_end"]


def as_shard_list(value: str | os.PathLike[str] | Iterable[Any], what: str = "shards") -> list[str]:
    """Shard identifiers from a list, or from ONE string or path (brace-expanded, ``"data-{000..009}.tar"``), never
    from a string's characters (``URLSource("/data/a.tar")`` once opened ``'/'``, ``'d'``, ...).

    Example:
        >>> as_shard_list("a-{0..1}.tar"), as_shard_list(["x.tar"])
        (['a-0.tar', 'a-1.tar'], ['x.tar'])
    """
    if isinstance(value, (str, os.PathLike)):
        return expand_urls(os.fspath(value))
    if isinstance(value, (bytes, bytearray)):
        raise TypeError(f"{what}: expected a str, a path or a list of them, got bytes; decode it first")
    out = [os.fspath(v) for v in value]
    bad = [v for v in out if not isinstance(v, str)]
    if bad:
        raise TypeError(f"{what}: every shard must be a str or a path, got {type(bad[0]).__name__} ({bad[0]!r})")
    return out


@runtime_checkable
class DataSource(Protocol):
    """What a :class:`~atdata_torch.Dataset` reads shards through (compatible with the original atdata's).

    Required: :meth:`list_shards` and :meth:`open_shard`. Sources that can do better implement the optional
    methods of :class:`ShardSource` (random access, sidecars).
    """

    def list_shards(self) -> list[str]:
        """The shard identifiers (paths or URLs), in dataset order."""
        ...

    def open_shard(self, shard: str) -> IO[bytes]:
        """A binary stream of one shard's bytes."""
        ...


class ShardSource:
    """Base class for sources: sequential streams, plus optional random access and sidecars.

    Subclasses implement :meth:`list_shards` and :meth:`open_shard`; :meth:`buffer` returns the whole shard
    as a random-access buffer (mmap for local files) when the source can, and :meth:`read_sidecar` the bytes of
    ``<shard>.idx.json`` when it exists.
    """

    def list_shards(self) -> list[str]:
        """The shard identifiers, in dataset order."""
        raise NotImplementedError

    @property
    def shards(self) -> Iterator[tuple[str, IO[bytes]]]:
        """``(shard id, binary stream)`` for each shard, opened one at a time as the iteration reaches it (the
        original atdata's ``DataSource.shards``; close each stream when done with it)."""
        for shard in self.list_shards():
            yield shard, self.open_shard(shard)

    def open_shard(self, shard: str) -> IO[bytes]:
        """A binary stream of one shard."""
        raise NotImplementedError

    def buffer(self, shard: str) -> Buffer | None:
        """The whole shard as a random-access buffer, or ``None`` when only streaming is possible."""
        return None

    def read_sidecar(self, shard: str) -> bytes | None:
        """The bytes of the shard's index sidecar, or ``None`` if there is none."""
        return None

    def __len__(self) -> int:
        return len(self.list_shards())


class ConcatSource(ShardSource):
    """Several sources read as one (shard identifiers must be unique across them)."""

    def __init__(self, sources: list[DataSource]) -> None:
        self.sources = list(sources)
        self._owner: dict[str, DataSource] = {}
        for src in self.sources:
            for shard in src.list_shards():
                if shard in self._owner:
                    raise ValueError(f"shard {shard!r} appears in two of the concatenated sources")
                self._owner[shard] = src

    def list_shards(self) -> list[str]:
        return list(self._owner)

    def open_shard(self, shard: str) -> IO[bytes]:
        return self._source_of(shard).open_shard(shard)

    def _source_of(self, shard: str) -> DataSource:
        try:
            return self._owner[shard]
        except KeyError:
            raise ShardNotFoundError(
                f"shard {shard!r} is in none of the concatenated sources (they list {list(self._owner)[:3]}...)",
                shard=shard,
            ) from None

    def buffer(self, shard: str) -> Buffer | None:
        src = self._source_of(shard)
        return src.buffer(shard) if isinstance(src, Buffered) else None

    def stream_buffer(self, shard: str, owner: Any = None) -> Buffer | Filling | None:
        """The owning source's :meth:`stream_buffer` (else :meth:`buffer`). ``owner`` is not passed on: a
        ConcatSource does not route (it is no :class:`~._capabilities.Routing`), so no download is routed for it."""
        src = self._source_of(shard)
        return src.stream_buffer(shard) if isinstance(src, Streaming) else self.buffer(shard)

    def read_sidecar(self, shard: str) -> bytes | None:
        src = self._source_of(shard)
        return src.read_sidecar(shard) if isinstance(src, SidecarReading) else None

    def read_sidecars(self, shards: list[str]) -> None:
        for src in self.sources:
            if isinstance(src, SidecarBatching):
                src.read_sidecars([s for s in shards if self._owner.get(s) is src])

    def prefetch(self, shards: Iterable[str]) -> None:
        shards = list(shards)
        for src in self.sources:
            if isinstance(src, Prefetching):
                src.prefetch([s for s in shards if self._owner.get(s) is src])

    def __repr__(self) -> str:
        return f"ConcatSource({', '.join(repr(s) for s in self.sources)})"
