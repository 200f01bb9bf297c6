"""What HTTP and S3 sources share: downloads that resume, retries with backoff, read-ahead, and the shard cache.

A remote source implements :meth:`RemoteSource._open_range` (a stream from a byte offset, and the total size)
and :meth:`RemoteSource._classify` (is an exception transient?). Everything else lives here:

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

import bisect
import hashlib
import io
import itertools
import json
import logging
import mmap
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from .. import _progress
from ..errors import ChecksumError, ShardNotFoundError, SourceError, redact_text
from ._base import Buffer, Filling, ShardSource

if TYPE_CHECKING:
    from .._placement import Router

log = logging.getLogger("atdata_torch")

SIDECAR_SUFFIX = ".idx.json"
CHUNK = 4 << 20  # bytes per read call
FIRST_READ = 256 << 10  # the first read of a shard that is decoded as it arrives (then doubling up to CHUNK)
SEGMENT = 4 << 20  # bytes per segment of a shard received in segments (see _SegmentSink)


def sidecar_url(shard: str) -> str:
    """The URL of a shard's index sidecar; for HTTP(S) the suffix goes before a query string (signed URLs).

    Example:
        >>> sidecar_url("https://h/a.tar?sig=x"), sidecar_url("s3://b/a?.tar")
        ('https://h/a.tar.idx.json?sig=x', 's3://b/a?.tar.idx.json')
    """
    if not shard.lower().startswith(("http://", "https://")):
        return shard + SIDECAR_SUFFIX
    base, sep, query = shard.partition("?")
    return base + SIDECAR_SUFFIX + sep + query


class TransientError(Exception):
    """Raised by ``_open_range`` implementations for failures worth retrying (wraps the cause).

    Args:
        message: What happened (shown in the retry warning and the final error).
        retry_after: Seconds the server asked the client to wait (``Retry-After``), if it did.
    """

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


_LIMITS = threading.local()  # the deadline (a time.monotonic() value) of the request this thread is making


def request_deadline() -> float | None:
    """When the request being retried on this thread must be done by (``time.monotonic()``), or ``None``.

    Set by :meth:`RemoteSource._with_retries` around every attempt; ``_open_range`` implementations bound their
    connect and read timeouts by it, and :class:`Pace` checks it as bytes arrive."""
    until: float | None = getattr(_LIMITS, "until", None)
    return until


class Pace:
    """The limits on one response body as it is received: the request's total deadline, and a minimum transfer
    rate (``min_rate`` bytes/s averaged over ``window`` seconds), which a server that trickles a byte at a time
    (never idle long enough for the read timeout) cannot defeat. :meth:`got` is called after every receive: one
    clock read and two comparisons (cheap next to the system call it follows).

    Example:
        >>> p = Pace(None, 0.0, 1.0, "a.tar")
        >>> p.got(10)  # no limits: never raises
    """

    __slots__ = ("min_rate", "shard", "until", "win_bytes", "win_start", "window")

    def __init__(self, until: float | None, min_rate: float, window: float, shard: str) -> None:
        self.until = until
        self.min_rate = min_rate
        self.window = max(window, 1e-3)
        self.shard = shard
        self.win_start = time.monotonic()
        self.win_bytes = 0

    def got(self, n: int) -> None:
        """``n`` more bytes arrived; raise :class:`TransientError` when the deadline passed or the rate is too low."""
        now = time.monotonic()
        self.win_bytes += n
        if self.until is not None and now > self.until:
            raise TransientError("the request's deadline passed while the body was arriving")
        elapsed = now - self.win_start
        if elapsed >= self.window:
            if self.win_bytes < self.min_rate * elapsed:
                raise TransientError(
                    f"the server sent {self.win_bytes} bytes in {elapsed:.1f}s, below min_rate={self.min_rate:g} "
                    "bytes/s (a stalled or trickling transfer)"
                )
            self.win_start, self.win_bytes = now, 0


class RemoteSource(ShardSource):
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
        from ..cache import ShardCache

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
        a ``Retry-After`` asked for, up to ``max_retry_after``) and a WARNING per retry."""
        limit = self.deadline if deadline is True else deadline
        until = time.monotonic() + float(limit) if limit else None
        shown = self._display(shard)
        outer = getattr(_LIMITS, "until", None)
        _LIMITS.until = until if outer is None or until is None else min(until, outer)
        attempt = 0
        try:
            while True:
                try:
                    return fn()
                except TransientError as exc:
                    attempt += 1
                    cause: BaseException = exc.__cause__ or exc
                    text = str(exc) if cause is exc else f"{type(cause).__name__}: {cause}"
                    reason = redact_text(text)
                    if reason != text:  # a foreign error quoting the URL's query or user info: chain a redacted copy
                        cause = TransientError(reason)
                    now = time.monotonic()
                    if until is not None and now >= until:
                        raise self._too_slow(what, shown, limit, attempt, reason) from cause
                    if attempt > self.retries:
                        raise SourceError(
                            f"{what} {shown!r} failed after {attempt} attempts ({reason}); check that the server is "
                            f"reachable, or raise retries= (now {self.retries})",
                            shard=shown,
                        ) from cause
                    delay = self.backoff * (2 ** (attempt - 1))
                    note = ""
                    if exc.retry_after is not None:
                        if exc.retry_after > self.max_retry_after:
                            note = (
                                f"; the server asked to wait {exc.retry_after:g}s (Retry-After), more than "
                                f"max_retry_after={self.max_retry_after:g}"
                            )
                        delay = max(delay, min(exc.retry_after, self.max_retry_after))
                    if until is not None and now + delay >= until:
                        raise self._too_slow(
                            what, shown, limit, attempt, f"{reason}; the next try would start after it"
                        ) from cause
                    log.warning(
                        "atdata_torch: %s %s failed (attempt %d of %d: %s); retrying in %.2fs%s",
                        what,
                        shown,
                        attempt,
                        self.retries + 1,
                        reason,
                        delay,
                        note,
                    )
                    time.sleep(delay)
        finally:
            _LIMITS.until = outer

    @staticmethod
    def _too_slow(what: str, shown: str, limit: Any, attempts: int, reason: str) -> SourceError:
        return SourceError(
            f"{what} {shown!r} did not finish within its deadline of {float(limit):g}s ({attempts} attempts; last: "
            f"{reason}); the server is stalled or too slow: check it, or raise deadline= (sidecar_deadline= for "
            "index sidecars)",
            shard=shown,
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

    def _expected_sha256(self, shard: str) -> str | None:
        """The shard's sha256: given in ``checksums``, else from its index sidecar when that was read (in this
        process or, before a fork or pickling, in the parent)."""
        if shard in self.checksums:
            return self.checksums[shard]
        return self._digests.get(shard) or None

    @staticmethod
    def _digest_of(raw: bytes | None) -> str:
        """The ``sha256`` an index sidecar's JSON promises ("" when none, or when it is not valid)."""
        if not raw:
            return ""
        try:
            digest = json.loads(raw).get("sha256")
        except (ValueError, AttributeError, RecursionError):
            return ""
        if isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdefABCDEF" for c in digest):
            return digest.lower()
        return ""

    def _checked_sha256(self, shard: str) -> str | None:
        """The sha256 a download of this shard is checked against without a cache (``checksums=``), if any."""
        if shard in self.checksums:
            return self.checksums[shard]
        if not self.verify_sidecars:
            return None
        if shard not in self._digests:
            self.read_sidecar(shard)  # a read-ahead may start before the dataset has read the sidecars
        return self._expected_sha256(shard)

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
            if isinstance(got, _Job) and got.router is not None and got.router.owner is not owner:
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
                router = st["routers"].get(shard)
                if router is not None and router.owner is owner:
                    del st["routers"][shard]
                else:
                    router = None
                got = self._begin(shard, priority, router)
                self._taken(shard, got, owner)
        return got.take() if isinstance(got, _Job) else got.result()

    def _taken(self, shard: str, got: Any, owner: Any) -> None:
        """Remember a streamed download handed to a pass that places bytes: :meth:`route` may still reach it
        (under the state's lock)."""
        if owner is not None and isinstance(got, _Job) and got.streamed:
            self._state()["taken"][shard] = (weakref.ref(got), owner)

    def route(self, shard: str, router: Router) -> None:
        """Receive the placed ranges of ``shard`` straight into batch rows (see ``atdata_torch._placement``): the
        download of it that is on its way takes the router up at the byte it has reached; one started later,
        from the start. Only the router's owner gets such a download (:meth:`stream_buffer`)."""
        st = self._state()
        with st["lock"]:
            job = st["pending"].get(shard)
            if job is None:  # the owner took it already and it is still arriving, or it has not started
                ref, owner = st["taken"].get(shard, (None, None))
                job = ref() if ref is not None and owner is router.owner else None
                if job is None:
                    st["routers"][shard] = router
            if isinstance(job, _Job) and job.streamed and job.router is None:
                job.router = router

    def unroute(self, owner: Any) -> None:
        """The pass of ``owner`` ended: forget its routers, and stop the downloads that follow them."""
        st = self._state()
        with st["lock"]:
            routers: dict[str, Router] = st["routers"]
            for shard in [s for s, r in routers.items() if r.owner is owner]:
                del routers[shard]
            taken = st["taken"]
            for shard in [s for s, (_, o) in taken.items() if o is owner]:
                del taken[shard]
            pending = st["pending"]
            for shard in [s for s, j in pending.items() if isinstance(j, _Job) and j.router is not None]:
                if pending[shard].router.owner is owner:
                    pending.pop(shard).cancel()

    def open_shard(self, shard: str) -> IO[bytes]:
        """A sequential stream of the shard (downloaded with resume; from the cache when configured)."""
        return io.BytesIO(bytes(self.buffer(shard)))

    def _sidecar_url(self, shard: str) -> str | None:
        """Where the shard's index sidecar is (``None``: it has none, and nothing is requested)."""
        return sidecar_url(shard)

    def read_sidecar(self, shard: str) -> bytes | None:
        st = self._state()
        cache: dict[str, bytes | None] = st["sidecars"]
        while shard not in cache:
            with st["lock"]:
                if shard in cache:
                    break
                busy: threading.Event | None = st["sidecar_reads"].get(shard)
                if busy is None:  # this thread reads it (a read already running elsewhere is waited for)
                    busy = st["sidecar_reads"][shard] = threading.Event()
                    mine = True
                else:
                    mine = False
            if not mine:
                busy.wait(1.0)
                continue
            try:
                cache[shard] = self._read_sidecar(shard)
            finally:
                with st["lock"]:
                    cache.setdefault(shard, None)
                    del st["sidecar_reads"][shard]
                busy.set()
        raw = cache[shard]
        self._digests[shard] = self._digest_of(raw)
        return raw

    def _read_sidecar(self, shard: str) -> bytes | None:
        url = self._sidecar_url(shard)
        if url is None:
            return None
        buf = io.BytesIO()
        try:
            self.download_to(url, buf, deadline=self.sidecar_deadline)
        except ShardNotFoundError:
            return None
        except SourceError as exc:
            # Sidecars are optional: a refused one (S3 answers 403 for a missing key without ListBucket; a
            # signed URL does not cover the sidecar's path) reads as absent. The shard itself still raises.
            refused = "refused" in exc.message
            log.log(
                logging.DEBUG if refused else logging.WARNING,
                "atdata_torch: no index sidecar for %s (%s)%s",
                self._display(shard),
                exc.message,
                "" if refused else "; the shard is scanned instead",
            )
            return None
        return buf.getvalue()

    def read_sidecars(self, shards: list[str]) -> None:
        """Fetch the index sidecars of these shards concurrently (``max_concurrency`` at once) into the cache that
        :meth:`read_sidecar` reads: a dataset of many remote shards learns its length in a few round trips rather
        than one per shard."""
        cached = self._state()["sidecars"]
        todo = [s for s in dict.fromkeys(shards) if s not in cached]
        if len(todo) > 1:
            list(self._pool().map(self.read_sidecar, todo))

    def iter_chunks(self, shard: str) -> Iterator[bytes]:
        """The shard as a sequence of chunks (no retry across chunks: for tools that stream once)."""
        stream, _ = self._open_range(shard, 0)
        try:
            while chunk := stream.read(CHUNK):
                yield chunk
        finally:
            stream.close()


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


class _Job:
    """One shard download into memory: a head request (the first part, which also tells the size), then the other
    parts, each retried and resumed on its own. ``future`` gets the shard's bytes or the first part's error."""

    def __init__(
        self,
        src: RemoteSource,
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
        src, shard, chunk = self.src, self.shard, self.src.chunk_size
        sink: _MemorySink | _SegmentSink
        if self.streamed:  # (never with chunk_size: see RemoteSource._begin)
            sink = _SegmentSink(_buffer_pool(0, "segment"), src._display(shard), src.readahead + 2, self)
        else:
            sink = _MemorySink(_buffer_pool(src.readahead + src.max_concurrency + 2))
            if self.hash_stream:
                sink.hasher = hashlib.sha256()
        end: int | None = None  # where the head's bytes stop (None: at the end of the stream)
        size: int | None = None
        started = False

        def attempt() -> int:
            nonlocal end, size, started
            if not started:
                stream, total = src._open_range(shard, 0, chunk or None)
                started = True
                ranged = bool(chunk) and getattr(stream, "ranged", True)
                if total is not None:
                    size = end = total
                    sink.reserve(total)
                    if self.bar is not None:
                        self.bar.reset(total)
                    if isinstance(sink, _SegmentSink):
                        self.filling = sink.fill
                        self._handed.set()
                    elif ranged and total > chunk:
                        end = chunk
                        self._split(sink, total)
            else:  # resume from the last byte received (to the end of the shard: an open range, as in download_to)
                stream, total = src._open_range(shard, sink.pos, None if end is None or end == size else end)
                if total is not None and end is None:
                    size = end = total
                    sink.reserve(total)
            fill, bar = self.filling, self.bar
            try:
                while end is None or sink.pos < end:
                    if self.cancelled:
                        raise CancelledError(f"read-ahead of {src._display(shard)} cancelled")
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


class _Downloader:
    """Download threads serving parts in priority order (the shard needed first, then its parts by offset), with
    at most ``per_job`` parts of one shard at a time. Tasks never wait on other tasks (no deadlock). Threads start
    on demand and end after ``IDLE_EXIT`` seconds without work."""

    IDLE_EXIT = 2.0

    def __init__(self, threads: int, per_job: int) -> None:
        self._threads = threads
        self._per_job = per_job
        self._cv = threading.Condition()
        self._tasks: list[tuple[tuple[int, int, int], int, _Job, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._started = 0
        self._idle = 0

    def submit(self, job: _Job, offset: int, fn: Callable[[], None]) -> None:
        with self._cv:
            bisect.insort(self._tasks, ((*job.priority, offset), next(self._seq), job, fn), key=lambda t: t[:2])
            if self._idle == 0 and self._started < self._threads:
                self._started += 1
                threading.Thread(target=self._work, name=f"atdata-download-{self._started}", daemon=True).start()
            else:
                self._cv.notify_all()

    def _take(self) -> tuple[_Job, Callable[[], None]] | None:
        with self._cv:
            while True:
                for i, (_, _, job, fn) in enumerate(self._tasks):
                    if job.active < self._per_job:
                        del self._tasks[i]
                        job.active += 1
                        return job, fn
                self._idle += 1
                woken = self._cv.wait(self.IDLE_EXIT)
                self._idle -= 1
                if not woken and not self._tasks:
                    self._started -= 1  # idle for a while: this thread ends (a later submit starts another)
                    if self._started == 0:  # this source is idle: drop buffers no source used for as long
                        for pool in list(_POOLS.values()):
                            pool.release(self.IDLE_EXIT)
                    return None

    def _work(self) -> None:
        while True:
            task = self._take()
            if task is None:
                return
            job, fn = task
            try:
                fn()
            except BaseException:  # pragma: no cover - tasks report their errors through their job
                log.exception("atdata_torch: download task failed")
            finally:
                with self._cv:
                    job.active -= 1
                    self._cv.notify_all()
            del task, job, fn  # an idle thread must not keep the last shard (and its buffer) alive


def _short(shown: str) -> str:
    """A shard's name for a progress bar: its last path part (the bar has little room)."""
    return shown.rstrip("/").rsplit("/", 1)[-1] or shown


def _map_file(path: Any) -> Buffer:
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return b""
        return memoryview(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))


class _BufferPool:
    """Download buffers reused across shards, so that a shard arrives in memory that is already mapped.

    One pool per process, shared by every remote source and epoch in it. A fresh shard-sized buffer costs a page
    fault per page, which the kernel zero-fills while the download waits (measured on loopback, image shape: page
    zeroing was the largest single cost in a profile; reuse gave a median of 12,196 vs 10,420 samples/s, and took
    away the slow passes, 4,263-11,003 with fresh buffers vs 10,288-12,660). A buffer is handed
    out as a numpy view and reused only once that view is gone: everything that refers to the shard's bytes (the
    memoryview of the shard, records' payloads, decoded arrays that alias them) keeps the view alive. At most
    ``keep`` buffers are kept; the spare ones are dropped when downloads go idle (:meth:`release`).
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._slots: list[_Slot] = []
        self._lock = threading.Lock()

    def get(self, size: int) -> np.ndarray:
        """An uninitialised ``uint8`` array of ``size`` bytes (a view of a pooled buffer when one is free)."""
        with self._lock:
            best: _Slot | None = None
            for slot in self._slots:
                # A free buffer that fits without wasting more than half of it; the smallest such, and of those the
                # one freed last (its bytes are likelier to be in the CPU cache still).
                if (
                    slot.free
                    and size <= len(slot.arr) <= 2 * size
                    and (best is None or (len(slot.arr), -slot.free_since) < (len(best.arr), -best.free_since))
                ):
                    best = slot
            if best is None:
                arr = np.empty(size, np.uint8)
                if len(self._slots) < self.keep:
                    best = _Slot(arr)
                    self._slots.append(best)
                else:  # full: replace a free buffer, if any (the new size is the likelier one from now on)
                    free = [i for i, slot in enumerate(self._slots) if slot.free]
                    if not free:
                        return arr
                    best = self._slots[free[0]] = _Slot(arr)
            return best.hand_out(size)

    def in_use(self) -> int:
        """Buffers handed out and not free yet."""
        with self._lock:
            return sum(1 for slot in self._slots if not slot.free)

    def release(self, idle: float = 0.0) -> None:
        """Drop the buffers nothing has referred to for ``idle`` seconds."""
        cutoff = time.monotonic() - idle
        with self._lock:
            self._slots = [slot for slot in self._slots if not (slot.free and slot.free_since <= cutoff)]

    def __len__(self) -> int:
        return len(self._slots)


class _Slot:
    """A pooled buffer, and the view of it handed out (freed when that view is gone)."""

    __slots__ = ("__weakref__", "arr", "free_since", "view")

    def __init__(self, arr: np.ndarray) -> None:
        self.arr = arr
        self.view: weakref.ref[np.ndarray] | None = None
        self.free_since = time.monotonic()

    @property
    def free(self) -> bool:
        return self.view is None or self.view() is None

    def hand_out(self, size: int) -> np.ndarray:
        view = self.arr[:size]
        self.view = weakref.ref(view, self._freed)
        return view

    def _freed(self, _ref: object) -> None:
        self.free_since = time.monotonic()


_POOLS: dict[str, _BufferPool] = {}  # this process's pools by kind (sources and epochs share them)
_POOL_LOCK = threading.Lock()


def _pool_after_fork() -> None:
    """A forked child (a DataLoader worker) starts with no pool and a fresh lock (a download thread of the parent
    may have held it at the fork)."""
    global _POOL_LOCK
    _POOL_LOCK = threading.Lock()
    _POOLS.clear()


os.register_at_fork(after_in_child=_pool_after_fork)


def _buffer_pool(keep: int, kind: str = "shard") -> _BufferPool:
    """This process's pool of ``kind`` buffers (whole shards, or segments), keeping at least ``keep`` of them (a
    forked child starts its own)."""
    with _POOL_LOCK:
        pool = _POOLS.get(kind)
        if pool is None:
            pool = _POOLS[kind] = _BufferPool(keep)
        pool.keep = max(pool.keep, keep)
        return pool


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

    def __init__(self, pool: _BufferPool, shard: str, shards_ahead: int, job: _Job | None = None) -> None:
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
