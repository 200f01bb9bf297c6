"""Where a download's bytes go: one growing buffer (:class:`_MemorySink`), or pooled segments handed over while
they arrive, with the placed ranges received straight into batch rows (:class:`_SegmentSink`)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..errors import SourceError
from ._buffers import _BufferPool
from ._filling import Filling
from ._policy import TransientError

if TYPE_CHECKING:
    from .._placement import Router

__all__ = ["CHUNK", "SEGMENT", "_MemorySink", "_SegmentSink", "_read_into"]

CHUNK = 4 << 20  # bytes per read call
SEGMENT = 4 << 20  # bytes per segment of a shard received in segments (see _SegmentSink)


class _Routed(Protocol):
    """What a :class:`_SegmentSink` asks of its download: the router it follows, if any (set while it runs)."""

    router: Router | None


_SCRATCH = threading.local()  # per download thread: a reused receive buffer (recv into cache-warm memory, then copy)


def _read_into(stream: Any, view: memoryview, direct: bool = False) -> int:
    """Read from ``stream`` into ``view``: ``readinto`` a reused per-thread buffer, then one copy by numpy, which
    lets go of the GIL while it copies (measured faster than receiving straight into a large shard buffer, than a
    memoryview copy, which holds the GIL and stalls the thread decoding, and than ``read()``, which allocates).
    ``direct``: ``readinto`` the view itself (a recycled segment, see :class:`_SegmentSink`)."""
    try:
        readinto = getattr(stream, "readinto", None)
        if readinto is not None and direct:
            return int(readinto(view))
        if readinto is not None:
            scratch = getattr(_SCRATCH, "buf", None)
            if scratch is None:
                arr = np.empty(CHUNK, np.uint8)
                scratch = _SCRATCH.buf = (arr, memoryview(arr))  # type: ignore[arg-type]
            n = int(readinto(scratch[1][: min(len(view), CHUNK)]))
            if n:
                np.copyto(np.frombuffer(view, np.uint8, n), scratch[0][:n])
            return n
        data = stream.read(len(view))
        view[: len(data)] = data
        return len(data)
    except (TransientError, SourceError):
        raise
    except Exception as exc:
        raise TransientError(f"{type(exc).__name__}: {exc}") from exc


class _MemorySink:
    """A write target that allocates once the size is known (numpy memory: no zero-fill, huge pages when large;
    from a :class:`_BufferPool` when given one)."""

    def __init__(self, pool: _BufferPool | None = None) -> None:
        self._pool = pool
        self._arr = np.empty(0, np.uint8)
        self._view = memoryview(self._arr)  # type: ignore[arg-type]
        self.pos = 0
        self.hasher: Any = None  # hashlib object fed the bytes in order, when set

    @property
    def data(self) -> memoryview:
        return self._view

    def reserve(self, size: int) -> None:
        if len(self._arr) < size:
            new = self._pool.get(size) if self._pool is not None else np.empty(size, np.uint8)
            new[: self.pos] = self._arr[: self.pos]
            self._arr, self._view = new, memoryview(new)  # type: ignore[arg-type]

    def read_from(self, stream: Any, n: int) -> int:
        """Read up to ``n`` bytes of ``stream`` into the buffer (growing it when needed); 0 at the end."""
        if self.pos + n > len(self._arr):
            self.reserve(max(self.pos + n, 2 * len(self._arr)))
        got = _read_into(stream, self._view[self.pos : self.pos + n])
        if self.hasher is not None and got:
            self.hasher.update(self._view[self.pos : self.pos + got])
        self.pos += got
        return got


class _SegmentSink:
    """A shard received straight into ``SEGMENT``-sized buffers from a pool, and handed over as a segmented
    :class:`Filling` once its size is known.

    Why segments: a reader in order lets each segment go once it has passed it (:meth:`Filling.drop_before`), and
    the pool hands the buffer freed last to the next segment, so the kernel receives into a few recently used
    buffers instead of a fresh shard-sized one. Measured on loopback (image shape, 1.2 GB per pass, 2 cores): the
    kernel's copy into a shard-sized buffer cost so much that receiving through a small buffer plus a second copy was
    faster; receiving into recycled segments drops that second copy and took the client's CPU per pass from 973 to
    about 805 ms (the pass from 689 to about 600 ms). Only this sink's current segment is referenced here: the
    Filling holds the others while the reader needs them.
    """

    def __init__(self, pool: _BufferPool, shard: str, shards_ahead: int, job: _Routed | None = None) -> None:
        self._job = job  # its router (job.router) may be set while the download runs
        self._pool = pool
        self._shard = shard
        self._shards_ahead = shards_ahead  # shards that may be in memory at once (the pool keeps as many)
        self.pos = 0
        self.fill: Filling | None = None
        self._cur: memoryview | None = None
        self._k = -1
        self._segs: list[memoryview] = []  # all segments, while the size is not known (no Filling yet)
        self._prev: memoryview | None = None  # segment _k - 1
        # The placed range at or after the download's position (-1: router not taken up yet, -2: declined).
        self._route = -1

    def reserve(self, size: int) -> None:
        if self.fill is None:
            self.fill = Filling.segmented(size, SEGMENT, self._shard)
            for k, seg in enumerate(self._segs):
                self.fill.put(k, seg)
            self._segs = []
            self._pool.keep = max(self._pool.keep, self._shards_ahead * -(-size // SEGMENT))

    def read_from(self, stream: Any, n: int) -> int:
        """Receive up to ``n`` bytes (not past the current segment's end, nor into or out of a placed range: those
        bytes go to their batch row); 0 at the end of the stream."""
        router = self._job.router if self._job is not None else None
        if router is not None and self.fill is not None and self._route != -2:
            if self._route == -1:
                if getattr(stream, "scatters", False):
                    # Take the router up: the ranges from here on are placed. The reader sees the router on the
                    # Filling before any of their bytes are announced.
                    self._route = router.attach(self.pos)
                    self.fill.router = router
                else:
                    self._route = -2  # this stream cannot receive into many buffers at once: nothing is placed
            if self._route >= 0:
                return self._read_placed(stream, n, router)
        k, off = divmod(self.pos, SEGMENT)
        got = _read_into(stream, self._segment(k)[off : off + min(n, SEGMENT - off)], direct=True)
        self.pos += got
        return got

    def _segment(self, k: int) -> memoryview:
        """Segment ``k``, taken from the pool when the download first writes into it. A placed read may ask for the
        next segment and then receive less than asked for: the one before stays at hand (``_prev``)."""
        if k == self._k and self._cur is not None:
            return self._cur
        if k == self._k - 1 and self._prev is not None:
            return self._prev
        self._prev = self._cur if k == self._k + 1 else None
        self._cur = memoryview(self._pool.get(SEGMENT))  # type: ignore[arg-type]
        self._k = k
        if self.fill is not None:
            self.fill.put(k, self._cur)
        else:
            self._segs.append(self._cur)
        return self._cur

    def _read_placed(self, stream: Any, n: int, router: Router) -> int:
        """Receive up to ``n`` bytes in one call: placed ranges into their batch rows, the bytes between them into
        segments (see ``atdata_torch._placement``)."""
        pos = limit = self.pos
        limit += n
        starts, ends = router.starts, router.ends
        i = self._route
        while i < len(starts) and ends[i] <= pos:
            i += 1
        self._route = i
        bufs: list[memoryview] = []
        while pos < limit:
            if i < len(starts) and starts[i] <= pos:
                lo, hi = starts[i], min(ends[i], limit)
                bufs.append(router.dest(i)[pos - lo : hi - lo])
                i += hi == ends[i]
            else:
                hi = min(starts[i] if i < len(starts) else limit, limit, (pos // SEGMENT + 1) * SEGMENT)
                off = pos % SEGMENT
                bufs.append(self._segment(pos // SEGMENT)[off : off + hi - pos])
            pos = hi
        try:
            got = int(stream.readinto_many(bufs))
        except (TransientError, SourceError):
            raise
        except Exception as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        self.pos += got
        return got

    def finished(self) -> Filling:
        """The whole download as a finished Filling (made here when the size was never announced)."""
        self._cur = self._prev = None
        if self.fill is None:
            self.reserve(self.pos)
            assert self.fill is not None
            self.fill.finish()
        return self.fill
