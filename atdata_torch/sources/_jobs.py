"""The lifecycle of one shard download: a head request that learns the size, the parts after it, a streamed
download handed over while it arrives, cancellation, and the result (or the first error)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from typing import IO, TYPE_CHECKING, Any, Protocol

from ._buffers import _buffer_pool
from ._downloader import _Downloader
from ._filling import Buffer, Filling
from ._policy import TransientError
from ._sinks import CHUNK, _MemorySink, _SegmentSink

if TYPE_CHECKING:
    from .._placement import Router

__all__ = ["FIRST_READ", "_Job"]

FIRST_READ = 256 << 10  # the first read of a shard that is decoded as it arrives (then doubling up to CHUNK)


class _JobSource(Protocol):
    """What a download asks of its source (a :class:`~._remote.RemoteSource`)."""

    chunk_size: int
    readahead: int
    max_concurrency: int
    shards_downloaded: int

    def _open_range(self, shard: str, start: int, end: int | None = None) -> tuple[IO[bytes], int | None]: ...

    def _display(self, shard: str) -> str: ...

    def _with_retries(self, shard: str, what: str, fn: Any, *, deadline: float | bool | None = True) -> Any: ...

    def _state(self) -> dict[str, Any]: ...

    def _downloader(self) -> _Downloader: ...

    def _read_part(self, shard: str, view: memoryview, lo: int, hi: int, bar: Any = None) -> None: ...


class _Job:
    """One shard download into memory: a head request (the first part, which also tells the size), then the other
    parts, each retried and resumed on its own. ``future`` gets the shard's bytes or the first part's error."""

    def __init__(
        self,
        src: _JobSource,
        shard: str,
        priority: tuple[int, int],
        *,
        hash_stream: bool = False,
        streamed: bool = False,
    ) -> None:
        self.src = src
        self.hash_stream = hash_stream
        self.streamed = streamed  # received in segments, handed over while it arrives (a Filling, see take())
        self.digest: str | None = None  # sha256 of a shard that came as one stream (with hash_stream)
        self.shard = shard
        self.priority = priority
        self.future: Future[Any] = Future()  # a memoryview, or the Filling of a streamed download
        self.filling: Filling | None = None
        self.router: Router | None = None  # where this download's placed ranges go (streamed jobs; see route())
        self.bar: Any = None  # a tqdm bar advanced per chunk received (see RemoteSource._download)
        self.active = 0  # parts being downloaded (the downloader's lock)
        self.cancelled = False
        self._lock = threading.Lock()
        self._handed = threading.Event()  # a Filling was published, or the job ended
        self._left = 1
        self._view: memoryview | Filling | None = None
        # The head request's progress across its attempts (see _head): where its bytes stop (None: at the end of
        # the stream), the shard's size once known, and whether the first request was made (then it resumes).
        self._end: int | None = None
        self._size: int | None = None
        self._started = False

    @property
    def failed(self) -> bool:
        return self.future.done()

    def cancel(self) -> bool:
        """Stop a read-ahead download nobody took (it ends at its next chunk)."""
        self.cancelled = True
        return True

    def take(self) -> Buffer | Filling:
        """The shard's bytes: a :class:`Filling` once the download knows the size (one stream), else the finished
        buffer (or the download's error)."""
        while True:
            if self.filling is not None:
                return self.filling
            if self.future.done():
                got: Buffer | Filling = self.future.result()
                return got
            self._handed.wait(1.0)

    def _finish(self, exc: BaseException | None = None) -> None:
        with self._lock:
            if self.future.done():
                return
            if exc is not None:
                self.future.set_exception(exc)
                if self.filling is not None:
                    self.filling.finish(exc)
                self._handed.set()
                return
            self._left -= 1
            if self._left == 0:
                assert self._view is not None
                self.future.set_result(self._view)
                if self.filling is not None:
                    self.filling.finish()
                self._handed.set()

    def head(self) -> None:
        try:
            self._head()
        except BaseException as exc:
            self._finish(exc)
        else:
            self._finish()

    def _head(self) -> None:
        src, shard = self.src, self.shard
        sink: _MemorySink | _SegmentSink
        if self.streamed:  # (never with chunk_size: see RemoteSource._begin)
            sink = _SegmentSink(_buffer_pool(0, "segment"), src._display(shard), src.readahead + 2, self)
        else:
            sink = _MemorySink(_buffer_pool(src.readahead + src.max_concurrency + 2))
            if self.hash_stream:
                sink.hasher = hashlib.sha256()

        def attempt() -> int:
            stream = self._reopen(sink) if self._started else self._open_head(sink)
            self._receive(sink, stream)
            return sink.pos

        src._with_retries(shard, "download of", attempt)
        with src._state()["lock"]:
            src.shards_downloaded += 1
        if isinstance(sink, _SegmentSink):
            self._view = sink.finished()
        elif self._view is None:  # one stream: the whole shard
            self._view = sink.data[: sink.pos]
            if sink.hasher is not None:
                self.digest = sink.hasher.hexdigest()

    def _open_head(self, sink: _MemorySink | _SegmentSink) -> IO[bytes]:
        """The first request: the head part (or, without ``chunk_size``, the whole shard), which tells the size; a
        streamed download is handed over from here on, a ranged one queues its other parts."""
        src, chunk = self.src, self.src.chunk_size
        stream, total = src._open_range(self.shard, 0, chunk or None)
        self._started = True
        ranged = bool(chunk) and getattr(stream, "ranged", True)
        if total is not None:
            self._size = self._end = total
            sink.reserve(total)
            if self.bar is not None:
                self.bar.reset(total)
            if isinstance(sink, _SegmentSink):
                self.filling = sink.fill
                self._handed.set()
            elif ranged and total > chunk:
                self._end = chunk
                self._split(sink, total)
        return stream

    def _reopen(self, sink: _MemorySink | _SegmentSink) -> IO[bytes]:
        """Resume from the last byte received (to the end of the shard: an open range, as in ``download_to``)."""
        end, size = self._end, self._size
        stream, total = self.src._open_range(self.shard, sink.pos, None if end is None or end == size else end)
        if total is not None and end is None:
            self._size = self._end = total
            sink.reserve(total)
        return stream

    def _receive(self, sink: _MemorySink | _SegmentSink, stream: IO[bytes]) -> None:
        """Receive the head's bytes from ``stream`` into ``sink`` (announcing them to the Filling as they come)."""
        end, fill, bar = self._end, self.filling, self.bar
        try:
            while end is None or sink.pos < end:
                if self.cancelled:
                    raise CancelledError(f"read-ahead of {self.src._display(self.shard)} cancelled")
                # Reads grow from FIRST_READ to CHUNK: a shard being decoded as it arrives (a Filling) hands over
                # its first samples after a few hundred kilobytes rather than after the first CHUNK.
                step = min(CHUNK, max(FIRST_READ, sink.pos)) if fill is not None else CHUNK
                n = sink.read_from(stream, step if end is None else min(step, end - sink.pos))
                if not n:
                    break
                if fill is not None:
                    fill.advance(sink.pos)
                if bar is not None:
                    bar.update(n)
        finally:
            stream.close()
        if end is not None and sink.pos < end:
            raise TransientError(f"connection closed after {sink.pos} of {end} bytes")

    def _split(self, sink: _MemorySink, total: int) -> None:
        """Queue the parts after the head's (the buffer is allocated: ``total`` bytes)."""
        chunk = self.src.chunk_size
        sink.hasher = None  # parts arrive out of order: hashed once they are all in
        self._view = sink.data[:total]
        bounds = [(lo, min(lo + chunk, total)) for lo in range(chunk, total, chunk)]
        with self._lock:
            self._left += len(bounds)
        dl = self.src._downloader()
        for lo, hi in bounds:
            dl.submit(self, lo, self._part_task(lo, hi))

    def _part_task(self, lo: int, hi: int) -> Callable[[], None]:
        def run() -> None:
            if self.failed:
                return
            try:
                assert isinstance(self._view, memoryview)  # parts: never streamed
                self.src._read_part(self.shard, self._view, lo, hi, self.bar)
            except BaseException as exc:
                self._finish(exc)
            else:
                self._finish()

        return run
