"""What HTTP and S3 sources share: downloads that resume, retries with backoff, read-ahead, and the shard cache.

A remote source implements :meth:`RemoteSource._open_range` (a stream from a byte offset, and the total size)
and raises :class:`~._policy.TransientError` for a failure worth retrying. Everything else lives here (and in the
modules it is made of: ``_policy`` retries and deadlines, ``_jobs`` and ``_downloader`` the downloads and their
threads, ``_sinks`` where the bytes go, ``_buffers`` the pooled memory, ``_sidecars`` the index sidecars):

- ``buffer(shard)``: the whole shard, downloaded in-process into one preallocated buffer, by one stream or (with
  ``chunk_size``) as ranged requests of which up to ``parallel`` are in flight at once (each part retried and resumed
  from its last byte received on its own; a server that ignores ``Range`` gets one stream), through the shard
  cache when one is configured (then an mmap of the cached file), and read ahead: when the pipeline announces the
  shards it will read (:meth:`prefetch`), the next ``readahead`` ones download in background threads. Parts are
  served in the order the shards will be read, so the shard needed next is never starved by the ones after it.
- ``stream_buffer(shard)``: the same download, handed over while it is still arriving (a :class:`Filling`), so the
  pipeline decodes the first samples of a shard while its last bytes are on the wire. Only where nothing has to
  be checked before the first sample is read: no cache (it verifies the sidecar's sha256 first) and no
  ``checksums`` entry for the shard; one stream per shard (not with ``chunk_size``). Else the finished buffer.
  Such a download is received straight into pooled ``SEGMENT``-sized buffers (:class:`_SegmentSink`) rather than
  into one shard-sized buffer: a reader in order lets each segment go once it has passed it, and the next segment
  reuses it (less CPU per byte; see the class).
- ``read_range(shard, start, end)``: a ranged read for random access without downloading the shard.
- ``read_sidecar(shard)``: the ``<shard>.idx.json`` index, or ``None``.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import mmap
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, TYPE_CHECKING, Any

from .. import _progress
from ..errors import ChecksumError, SourceError
from ._buffers import _buffer_pool, _BufferPool
from ._downloader import _Downloader
from ._filling import Buffer, Filling
from ._jobs import FIRST_READ, _Job
from ._policy import Pace, TransientError, request_deadline, with_retries
from ._routing import RoutedDownloads, _routed_elsewhere
from ._sidecars import SIDECAR_SUFFIX, SidecarReads, sidecar_url
from ._sinks import CHUNK, SEGMENT, _read_into, _SegmentSink
from .cache import ShardCache

if TYPE_CHECKING:
    from .._placement import Router

# Names other modules (and tests) import from here; they live in the modules named above.
__all__ = [
    "CHUNK",
    "FIRST_READ",
    "SEGMENT",
    "SIDECAR_SUFFIX",
    "Pace",
    "RemoteSource",
    "TransientError",
    "_BufferPool",
    "_SegmentSink",
    "_buffer_pool",
    "request_deadline",
    "sidecar_url",
]


class RemoteSource(SidecarReads, RoutedDownloads):
    """Base class of sources that download shards (HTTP(S), S3).

    Args:
        cache: A :class:`~atdata_torch.ShardCache` or a cache directory; ``None`` keeps downloads in memory.
        retries: Attempts after the first for transient failures (connection errors, timeouts, 5xx, 429).
        backoff: Base of the exponential backoff between attempts, in seconds.
        max_concurrency: Download threads (and connections) per process, shared by all shard downloads.
        readahead: How many upcoming shards to download ahead of the one being read.
        chunk_size: ``None`` (default) or ``0``: one streaming request per shard. A number of bytes: a shard is
            downloaded as ranged requests of that size (the first also tells the shard's size), each retried and
            resumed on its own, into one preallocated buffer. Worth it where one connection is slower than the
            link (object stores, long round trips), e.g. ``chunk_size=16 << 20, parallel=8, max_concurrency=8``;
            on a fast local network or loopback one stream per shard is faster (measured: fewer requests, and
            Python threads contending for the GIL).
        parallel: With ``chunk_size``: at most this many ranged requests of one shard in flight at once (and at
            most ``max_concurrency`` in all).
        checksums: Expected sha256 (hex) per shard, e.g. from a dataset record, or ``True`` for the sha256 each
            shard's index sidecar records: a download that does not match raises
            :class:`~atdata_torch.errors.ChecksumError` before any of its samples is read. (A shard whose sidecar
            records no sha256 is read unchecked; with a cache, downloads are always checked against the sidecar.)
        deadline: Seconds a shard request may take in all, every retry, backoff and ``Retry-After`` wait
            included (``None``: no limit). Past it the read raises :class:`~atdata_torch.errors.SourceError`
            naming the shard (a receive in progress may overrun it by up to the read ``timeout``).
        sidecar_deadline: The same for an index sidecar request (a sidecar that cannot be read in time is
            treated as absent, with a warning: the shard is scanned instead).
        min_rate: Least bytes per second a response body must average over each ``timeout`` seconds (the read
            timeout of the subclass); a slower transfer is broken off and retried from its last byte. ``0``: off.
        max_retry_after: The longest ``Retry-After`` honoured, in seconds; a server asking for longer is retried
            after this long (with a warning saying so).
        progress: A tqdm bar (bytes) for each shard downloaded into the ``cache``: ``None`` (default) only when
            stderr is a terminal and not in a DataLoader worker, ``True`` always, ``False`` never. (Downloads kept
            in memory, as a pass streams them, have none.)

    Every retry logs a WARNING on the ``atdata_torch`` logger naming the (redacted) URL, the attempt and the
    reason; logging rather than :mod:`warnings`, since a retry that succeeds is not an error of the caller's.
    """

    remote = True  # Dataset does not download a remote shard just to check its sidecar

    def __init__(
        self,
        *,
        cache: Any = None,
        retries: int = 5,
        backoff: float = 0.2,
        max_concurrency: int = 4,
        readahead: int = 2,
        chunk_size: int | None = None,
        parallel: int = 4,
        checksums: dict[str, str] | bool | None = None,
        deadline: float | None = 300.0,
        sidecar_deadline: float | None = 60.0,
        min_rate: float = 1024.0,
        max_retry_after: float = 30.0,
        progress: bool | None = None,
    ) -> None:
        self.cache: ShardCache | None = ShardCache(cache) if isinstance(cache, (str, os.PathLike)) else cache
        self.retries = retries
        self.backoff = backoff
        self.max_concurrency = max(1, max_concurrency)
        self.readahead = max(0, readahead)
        self.chunk_size = max(0, chunk_size or 0)
        self.parallel = max(1, parallel)
        if checksums is not None and not isinstance(checksums, (bool, dict)):
            raise TypeError(f"checksums= takes True or a {{shard: sha256}} dict, got {type(checksums).__name__}")
        self.verify_sidecars = checksums is True
        self.checksums: dict[str, str] = (
            {k: v.lower() for k, v in checksums.items() if v} if isinstance(checksums, dict) else {}
        )
        self.deadline = deadline if deadline is None or deadline > 0 else None
        self.sidecar_deadline = sidecar_deadline if sidecar_deadline is None or sidecar_deadline > 0 else None
        self.min_rate = max(0.0, float(min_rate))
        self.max_retry_after = max(0.0, float(max_retry_after))
        self.progress = progress
        # Shards downloaded (whole, into memory or the cache) by this process's copy of the source: the loader's
        # stats count them per DataLoader worker (see Loader.stats()).
        self.shards_downloaded = 0
        # The sha256 each shard's index sidecar promises ("": its sidecar was read and gives none). A plain attribute,
        # not per-process state: it reaches DataLoader workers (forked or pickled), which do not read sidecars again.
        self._digests: dict[str, str] = {}
        self._local: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------------ per process
    def _state(self) -> dict[str, Any]:
        """Per-process state (clients and thread pools are not fork-safe): rebuilt after a fork."""
        pid = os.getpid()
        st = self._local
        if st.get("pid") != pid:
            st.clear()
            st["pid"] = pid
            st["lock"] = threading.RLock()  # _schedule starts downloads (which may create the downloader) under it
            st["pending"] = OrderedDict()  # shard -> _Job (streamable download) | Future[Buffer] (_fetch)
            st["plan"] = []
            st["sidecars"] = {}
            st["sidecar_reads"] = {}  # shard -> Event of a sidecar read in progress (one request per sidecar)
            st["routers"] = {}  # shard -> Router for a download not started yet (see route())
            st["taken"] = {}  # shard -> (weakref to its streamed _Job, owner) handed to a pass that places bytes
            st["tickets"] = itertools.count()
        return st

    def _per_process(self, key: str, make: Callable[[], Any]) -> Any:
        """This process's ``key`` object (a client, a thread pool), made once by ``make`` even when download threads
        ask for it at the same time."""
        st = self._state()
        got = st.get(key)
        if got is None:
            with st["lock"]:
                got = st.get(key)
                if got is None:
                    got = st[key] = make()
        return got

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_local"] = {}
        return state

    # ------------------------------------------------------------------------------------------------ subclass API
    def _open_range(self, shard: str, start: int, end: int | None = None) -> tuple[IO[bytes], int | None]:
        """A stream of bytes ``[start, end)`` of the shard (``end=None``: to the end) and the shard's size."""
        raise NotImplementedError

    def _display(self, shard: str) -> str:
        """The shard as it may appear in messages (no credentials)."""
        return shard

    # ------------------------------------------------------------------------------------------------ downloads
    def _with_retries(self, shard: str, what: str, fn: Any, *, deadline: float | bool | None = True) -> Any:
        """Call ``fn`` until it does not raise :class:`TransientError`: at most ``retries`` more times, within
        ``deadline`` seconds in all (``True``: the source's ``deadline``), with exponential backoff (at least what
        a ``Retry-After`` asked for, up to ``max_retry_after``) and a WARNING per retry (see
        :func:`~._policy.with_retries`)."""
        limit = self.deadline if deadline is True else deadline
        return with_retries(
            fn,
            what=what,
            shown=self._display(shard),
            limit=float(limit) if limit else None,
            retries=self.retries,
            backoff=self.backoff,
            max_retry_after=self.max_retry_after,
        )

    def download_to(self, shard: str, sink: Any, *, deadline: float | bool | None = True) -> int:
        """Write the whole shard to ``sink``; a broken transfer resumes where it stopped. Returns the size.
        ``deadline``: seconds for it all (``True``: the source's ``deadline``)."""
        pos = 0
        size: int | None = None

        reserve = getattr(sink, "reserve", None)

        def attempt() -> int:
            nonlocal pos, size
            stream, total = self._open_range(shard, pos)
            if total is not None:
                size = total
                if reserve is not None:
                    reserve(total)
            try:
                while True:
                    try:
                        chunk = stream.read(CHUNK)
                    except (TransientError, SourceError):
                        raise
                    except Exception as exc:
                        raise TransientError(str(exc)) from exc
                    if not chunk:
                        break
                    sink.write(chunk)
                    pos += len(chunk)
            finally:
                stream.close()
            if size is not None and pos < size:
                raise TransientError(f"connection closed after {pos} of {size} bytes")
            return pos

        return int(self._with_retries(shard, "download of", attempt, deadline=deadline))

    def read_range(self, shard: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of a shard, by a ranged request (retried, resumed)."""
        out = io.BytesIO()

        def attempt() -> bytes:
            stream, _ = self._open_range(shard, start + out.tell(), end)
            try:
                while out.tell() < end - start:
                    try:
                        chunk = stream.read(min(CHUNK, end - start - out.tell()))
                    except Exception as exc:
                        raise TransientError(str(exc)) from exc
                    if not chunk:
                        raise TransientError("connection closed early")
                    out.write(chunk)
            finally:
                stream.close()
            return out.getvalue()

        return bytes(self._with_retries(shard, "ranged read of", attempt))

    def _fetch(self, shard: str, priority: tuple[int, int] = (0, 0)) -> Buffer:
        if self.cache is not None:
            if shard not in self.checksums and shard not in self._digests:
                # The cache verifies the sidecar's sha256: learn it first (a read-ahead may start before the
                # dataset has read the sidecars; a worker process has the digests its parent learned).
                self.read_sidecar(shard)
            return self.cache.open(
                self._cache_key(shard),
                lambda f: f.write(self._download(shard, priority, progress=self.progress)),
                opener=_map_file,
                sha256=self._expected_sha256(shard),
            )
        expected = self._checked_sha256(shard)
        if expected is None:
            return self._download(shard, priority)
        data, digest = self._download_hashed(shard, priority)
        if digest != expected:
            raise ChecksumError(
                f"downloaded shard has sha256 {digest[:16]}..., its record says {expected[:16]}...: the "
                "remote copy changed or is corrupt; re-publish the dataset or fix the stored shard",
                shard=self._display(shard),
            )
        return data

    def _download_hashed(self, shard: str, priority: tuple[int, int]) -> tuple[memoryview, str]:
        """:meth:`_download` and the sha256 of the bytes, hashed as they arrive when the shard comes as one stream
        (hashing overlaps the transfer), else after the parts are in."""
        job = _Job(self, shard, priority, hash_stream=True)
        self._downloader().submit(job, 0, job.head)
        view = job.future.result()
        return view, job.digest or hashlib.sha256(view).hexdigest()

    def _download(self, shard: str, priority: tuple[int, int], *, progress: bool | None = False) -> memoryview:
        """The whole shard in memory: ranged parts in parallel on the download threads (see ``chunk_size``), with a
        progress bar per ``progress`` (see ``atdata_torch._progress``)."""
        job = _Job(self, shard, priority)
        job.bar = _progress.bar(progress, desc=f"downloading {_short(self._display(shard))}", unit="B", unit_scale=True)
        try:
            self._downloader().submit(job, 0, job.head)
            view: memoryview = job.future.result()
        finally:
            if job.bar is not None:
                job.bar.close()
        return view

    def _downloader(self) -> _Downloader:
        dl: _Downloader = self._per_process("downloader", lambda: _Downloader(self.max_concurrency, self.parallel))
        return dl

    def _read_part(self, shard: str, view: memoryview, lo: int, hi: int, bar: Any = None) -> None:
        """Bytes ``[lo, hi)`` of the shard into ``view[lo:hi]`` by a ranged request (retried, resumed); ``bar``: a
        progress bar to advance per chunk."""
        pos = lo

        def attempt() -> None:
            nonlocal pos
            stream, _ = self._open_range(shard, pos, hi)
            try:
                while pos < hi:
                    n = _read_into(stream, view[pos : min(hi, pos + CHUNK)])
                    if not n:
                        raise TransientError(f"connection closed after {pos - lo} of {hi - lo} bytes of a part")
                    pos += n
                    if bar is not None:
                        bar.update(n)
            finally:
                stream.close()

        self._with_retries(shard, "download of", attempt)

    def _cache_key(self, shard: str) -> str:
        return shard

    def _pool(self) -> ThreadPoolExecutor:
        pool: ThreadPoolExecutor = self._per_process(
            "pool", lambda: ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="atdata-fetch")
        )
        return pool

    def prefetch(self, shards: Iterable[str]) -> None:
        """Announce the shards this reader will need, in order: the next ``readahead`` download in background."""
        st = self._state()
        with st["lock"]:
            st["plan"] = list(dict.fromkeys(shards))
        self._schedule(None)

    def _schedule(self, current: str | None) -> None:
        if self.readahead == 0:
            return
        st = self._state()
        with st["lock"]:
            plan: list[str] = st["plan"]
            pending: OrderedDict[str, _Job | Future[Buffer]] = st["pending"]
            start = plan.index(current) + 1 if current in plan else 0
            for shard in plan[start : start + self.readahead]:
                if shard not in pending:
                    # Read-ahead parts come after those of any shard being waited for, in plan order.
                    pending[shard] = self._begin(shard, (1, next(st["tickets"])), st["routers"].pop(shard, None))
            # Bound memory: forget downloads that fell far behind the plan.
            while len(pending) > self.readahead + self.max_concurrency:
                _, fut = pending.popitem(last=False)
                fut.cancel()

    def _begin(self, shard: str, priority: tuple[int, int], router: Router | None = None) -> _Job | Future[Buffer]:
        """Start downloading a shard: a streamed job where nothing has to be checked first (``router``: where its
        array bytes go, see :meth:`route`), else :meth:`_fetch` (cache, checksum) on the pool."""
        if self.cache is None and not self.chunk_size and self._checked_sha256(shard) is None:
            job = _Job(self, shard, priority, streamed=True)
            job.router = router
            self._downloader().submit(job, 0, job.head)
            return job
        return self._pool().submit(self._fetch, shard, priority)

    def _take(self, shard: str, owner: Any = None) -> tuple[_Job | Future[Buffer] | None, tuple[int, int]]:
        """The read-ahead download of ``shard``, if one was started (the next ones start now), and the priority of
        a download started for it now. A download routed for another reader (see :meth:`route`) is not handed
        over: it is stopped, and the caller downloads the shard again."""
        st = self._state()
        with st["lock"]:
            got = st["pending"].pop(shard, None)
            if _routed_elsewhere(got, owner):
                got.cancel()
                got = None
            self._taken(shard, got, owner)
        self._schedule(shard)
        return got, (0, next(st["tickets"]))

    def buffer(self, shard: str) -> Buffer:
        got, priority = self._take(shard)
        if got is None:
            return self._fetch(shard, priority)
        result = got.future.result() if isinstance(got, _Job) else got.result()
        return result.contiguous() if isinstance(result, Filling) else result

    def stream_buffer(self, shard: str, owner: Any = None) -> Buffer | Filling:
        """The shard as :meth:`buffer` gives it, or, while its download is still arriving, a :class:`Filling` of it
        (readers wait for the bytes they need; a download that fails raises from :meth:`Filling.wait`).

        ``owner``: the :class:`~atdata_torch._placement.Placement` of the pass reading it, whose routes (see
        :meth:`route`) this download may follow; nobody else gets a routed download."""
        got, priority = self._take(shard, owner)
        if got is None:
            st = self._state()
            with st["lock"]:
                got = self._begin(shard, priority, self._claim_router(shard, owner))
                self._taken(shard, got, owner)
        return got.take() if isinstance(got, _Job) else got.result()

    def open_shard(self, shard: str) -> IO[bytes]:
        """A sequential stream of the shard (downloaded with resume; from the cache when configured)."""
        return io.BytesIO(bytes(self.buffer(shard)))

    def iter_chunks(self, shard: str) -> Iterator[bytes]:
        """The shard as a sequence of chunks (no retry across chunks: for tools that stream once)."""
        stream, _ = self._open_range(shard, 0)
        try:
            while chunk := stream.read(CHUNK):
                yield chunk
        finally:
            stream.close()


def _short(shown: str) -> str:
    """A shard's name for a progress bar: its last path part (the bar has little room)."""
    return shown.rstrip("/").rsplit("/", 1)[-1] or shown


def _map_file(path: Any) -> Buffer:
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return b""
        return memoryview(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))
