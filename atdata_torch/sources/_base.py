"""The DataSource protocol, the ShardSource base class, the Filling a download fills, and ConcatSource."""

from __future__ import annotations

import threading
from typing import IO, Any, Protocol, runtime_checkable

from ..errors import ShardFormatError

Buffer = bytes | memoryview


def past_end(shard: str, end: int, size: int, *, key: str | None = None, start: int | None = None) -> ShardFormatError:
    """The error for an index that points past the end of its shard (bytes ``[start, end)``, ``size`` in all)."""
    what = f"sample {key!r} at bytes [{start}, {end})" if key is not None else f"bytes up to {end}"
    return ShardFormatError(
        f"the shard index puts {what} but the shard has {size} bytes: the index sidecar is stale or the shard was "
        "replaced; rebuild the index with atd.build_index()",
        shard=shard,
        key=key,
        offset=start if start is not None else size,
    )


class Filling:
    """A shard that a download is still filling, in order: :attr:`size` bytes in all, ``[0, filled)`` are in.
    Readers :meth:`wait` for the prefix they need, so decoding starts with the first bytes instead of after the
    last (see :meth:`RemoteSource.stream_buffer`).

    The bytes are one buffer (:attr:`view`), or, for a download that arrives in segments (:meth:`segmented`),
    fixed-size pieces that are received straight into reused buffers: ``filling[a:b]`` is a zero-copy
    slice when ``[a, b)`` lies in one segment and a copy when it spans two; :meth:`drop_before` lets the segments
    that a sequential reader has passed go back to the pool once nothing refers to them.

    Example:
        >>> f = Filling(memoryview(bytearray(8)), "a.tar")
        >>> f.view[:4] = b"tar!"; f.advance(4)
        >>> f.wait(4); bytes(f[:4])
        b'tar!'
        >>> f.finish(); f.done
        True
        >>> g = Filling.segmented(6, 4, "b.tar")
        >>> g.put(0, memoryview(bytearray(b"abcd"))); g.put(1, memoryview(bytearray(b"ef.."))); g.finish()
        >>> bytes(g[1:3]), bytes(g[3:6]), len(g)
        (b'bc', b'def', 6)
    """

    __slots__ = ("_cv", "_error", "_joined", "_segs", "done", "filled", "router", "segment", "shard", "size", "view")

    def __init__(self, view: memoryview | None, shard: str, *, size: int | None = None, segment: int = 0) -> None:
        self.view = view
        self.shard = shard  # as shown in messages
        self.size = len(view) if view is not None else int(size or 0)
        self.segment = segment  # bytes per segment (0: one buffer, ``view``)
        self._segs: list[memoryview | None] = [None] * (-(-self.size // segment) if segment else 0)
        self._joined: memoryview | None = None
        self.filled = 0
        self.done = False
        self._error: BaseException | None = None
        self._cv = threading.Condition()
        # The placement router this download follows (see atdata_torch._placement): the ranges it routes are not
        # in the segments but in batch rows, which only the router's owner reads.
        self.router: Any = None

    @classmethod
    def segmented(cls, size: int, segment: int, shard: str) -> Filling:
        """A shard of ``size`` bytes that arrives as segments of ``segment`` bytes (see :meth:`put`)."""
        return cls(None, shard, size=size, segment=segment)

    def __len__(self) -> int:
        return self.size

    def put(self, k: int, segment: memoryview) -> None:
        """Segment ``k`` (bytes ``[k * segment, ...)``), before the bytes in it are announced by :meth:`advance`."""
        self._segs[k] = segment

    def __getitem__(self, sl: slice) -> memoryview:
        """Bytes ``[sl.start, sl.stop)``, which must be in (see :meth:`wait`)."""
        start, stop, _ = sl.indices(self.size)
        if self.view is not None:
            return self.view[start:stop]
        seg = self.segment
        k = start // seg
        if stop <= (k + 1) * seg:
            return self._piece(k)[start - k * seg : stop - k * seg]
        out = bytearray(stop - start)
        pos = start
        while pos < stop:
            k = pos // seg
            n = min(stop, (k + 1) * seg) - pos
            out[pos - start : pos - start + n] = self._piece(k)[pos - k * seg : pos - k * seg + n]
            pos += n
        return memoryview(out)

    def _piece(self, k: int) -> memoryview:
        got = self._segs[k]
        if got is None:
            raise RuntimeError(f"segment {k} of {self.shard} was released or never arrived")  # pragma: no cover
        return got

    def drop_before(self, offset: int) -> None:
        """A sequential reader is past ``offset``: forget the segments that end at or before it."""
        if self.segment:
            for k in range(min(offset // self.segment, len(self._segs))):
                self._segs[k] = None

    def contiguous(self) -> memoryview:
        """The whole shard as one buffer, once it is in (segments are joined: one copy)."""
        self.wait(self.size)
        if self.view is not None:
            return self.view
        if self._joined is None:
            out = bytearray(self.size)
            for k in range(len(self._segs)):
                lo = k * self.segment
                hi = min(self.size, lo + self.segment)
                out[lo:hi] = self._piece(k)[: hi - lo]
            self._joined = memoryview(out)
        return self._joined

    def advance(self, filled: int) -> None:
        """The download got bytes ``[0, filled)`` (called by the downloading thread)."""
        self.filled = filled
        with self._cv:
            self._cv.notify_all()

    def finish(self, error: BaseException | None = None) -> None:
        """The download ended: every byte is in, or it failed with ``error`` (waiters get the error)."""
        with self._cv:
            if error is None:
                self.filled = self.size
            else:
                self._error = error
            self.done = True
            self._cv.notify_all()

    def wait(self, end: int) -> None:
        """Block until bytes ``[0, end)`` are in; raise the download's error if it failed first."""
        if end > self.size:
            raise past_end(self.shard, end, self.size)
        with self._cv:
            while self.filled < end and not self.done:
                self._cv.wait(1.0)
        if self.filled < end:
            assert self._error is not None
            raise self._error

    def __repr__(self) -> str:
        kind = f", segments of {self.segment}" if self.segment else ""
        return f"Filling({self.shard!r}, {self.filled}/{self.size} bytes{kind}{', done' if self.done else ''})"


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
    def shards(self) -> list[str]:
        """Alias of :meth:`list_shards` (the original atdata's name)."""
        return self.list_shards()

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
        return self._owner[shard].open_shard(shard)

    def buffer(self, shard: str) -> Buffer | None:
        get = getattr(self._owner[shard], "buffer", None)
        return get(shard) if get is not None else None

    def stream_buffer(self, shard: str) -> Buffer | Filling | None:
        get = getattr(self._owner[shard], "stream_buffer", None)
        return get(shard) if get is not None else self.buffer(shard)

    def read_sidecar(self, shard: str) -> bytes | None:
        get = getattr(self._owner[shard], "read_sidecar", None)
        return get(shard) if get is not None else None

    def read_sidecars(self, shards: list[str]) -> None:
        for src in self.sources:
            warm = getattr(src, "read_sidecars", None)
            if warm is not None:
                warm([s for s in shards if self._owner.get(s) is src])

    def prefetch(self, shards: list[str]) -> None:
        for src in self.sources:
            pf = getattr(src, "prefetch", None)
            if pf is not None:
                pf([s for s in shards if self._owner.get(s) is src])

    def __repr__(self) -> str:
        return f"ConcatSource({', '.join(repr(s) for s in self.sources)})"
