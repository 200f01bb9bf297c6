"""A shard as a buffer: the bytes type sources hand out, and :class:`Filling`, a shard that a download is still
filling (readers wait for the prefix they need)."""

from __future__ import annotations

import threading
from typing import Any

from ..errors import ShardFormatError

__all__ = ["Buffer", "Filling", "past_end"]

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
