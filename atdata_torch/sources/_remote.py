"""What HTTP and S3 sources share: downloads that resume, retries with backoff, read-ahead, and the shard cache.

A remote source implements :meth:`RemoteSource._open_range` (a stream from a byte offset, and the total size)
and :meth:`RemoteSource._classify` (is an exception transient?). Everything else lives here:

- ``buffer(shard)``: the whole shard, downloaded in-process with large reads (resuming a broken transfer with a
  range request from the last byte received), through the shard cache when one is configured (then an mmap of the
  cached file), and read ahead: when the pipeline announces the shards it will read (:meth:`prefetch`), the next
  ``readahead`` ones download concurrently in background threads.
- ``read_range(shard, start, end)``: a ranged read for random access without downloading the shard.
- ``read_sidecar(shard)``: the ``<shard>.idx.json`` index, or ``None``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import mmap
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any

import numpy as np

from ..errors import ChecksumError, ShardNotFoundError, SourceError
from ._base import Buffer, ShardSource

log = logging.getLogger("atdata_torch")

SIDECAR_SUFFIX = ".idx.json"
CHUNK = 4 << 20


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
    """Raised by ``_open_range`` implementations for failures worth retrying (wraps the cause)."""


class RemoteSource(ShardSource):
    """Base class of sources that download shards (HTTP(S), S3).

    Args:
        cache: A :class:`~atdata_torch.ShardCache` or a cache directory; ``None`` keeps downloads in memory.
        retries: Attempts after the first for transient failures (connection errors, timeouts, 5xx, 429).
        backoff: Base of the exponential backoff between attempts, in seconds.
        max_concurrency: Download threads per process (read-ahead).
        readahead: How many upcoming shards to download ahead of the one being read.
        checksums: Expected sha256 (hex) per shard, e.g. from a dataset record: a download that does not match
            raises :class:`~atdata_torch.errors.ChecksumError` before any of its samples is read.
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
        checksums: dict[str, str] | None = None,
    ) -> None:
        from ..cache import ShardCache

        self.cache: ShardCache | None = ShardCache(cache) if isinstance(cache, (str, os.PathLike)) else cache
        self.retries = retries
        self.backoff = backoff
        self.max_concurrency = max(1, max_concurrency)
        self.readahead = max(0, readahead)
        self.checksums: dict[str, str] = {k: v.lower() for k, v in (checksums or {}).items() if v}
        self._local: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------------ per process
    def _state(self) -> dict[str, Any]:
        """Per-process state (clients and thread pools are not fork-safe): rebuilt after a fork."""
        pid = os.getpid()
        st = self._local
        if st.get("pid") != pid:
            st.clear()
            st["pid"] = pid
            st["lock"] = threading.Lock()
            st["pending"] = OrderedDict()  # shard -> Future[Buffer]
            st["plan"] = []
            st["sidecars"] = {}
        return st

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
    def _with_retries(self, shard: str, what: str, fn: Any) -> Any:
        attempt = 0
        while True:
            try:
                return fn()
            except TransientError as exc:
                attempt += 1
                cause = exc.__cause__ or exc
                if attempt > self.retries:
                    raise SourceError(
                        f"{what} {self._display(shard)!r} failed after {attempt} attempts "
                        f"({type(cause).__name__}: {cause}); check that the server is reachable, or raise retries=",
                        shard=self._display(shard),
                    ) from cause
                delay = self.backoff * (2 ** (attempt - 1))
                log.info("atdata_torch: retrying %s of %s in %.2fs (%s)", what, self._display(shard), delay, cause)
                time.sleep(delay)

    def download_to(self, shard: str, sink: Any) -> int:
        """Write the whole shard to ``sink``; a broken transfer resumes where it stopped. Returns the size."""
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

        return int(self._with_retries(shard, "download of", attempt))

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

    def _fetch(self, shard: str) -> Buffer:
        if self.cache is not None:
            return self.cache.open(
                self._cache_key(shard),
                lambda f: self.download_to(shard, f),
                opener=_map_file,
                sha256=self._expected_sha256(shard),
            )
        sink = _MemorySink()
        n = self.download_to(shard, sink)
        data = sink.data[:n]
        expected = self.checksums.get(shard)
        if expected is not None:
            digest = hashlib.sha256(data).hexdigest()
            if digest != expected:
                raise ChecksumError(
                    f"downloaded shard has sha256 {digest[:16]}..., its record says {expected[:16]}...: the "
                    "remote copy changed or is corrupt; re-publish the dataset or fix the stored shard",
                    shard=self._display(shard),
                )
        return data

    def _expected_sha256(self, shard: str) -> str | None:
        """The shard's sha256: given in ``checksums``, else from its index sidecar when that was read."""
        if shard in self.checksums:
            return self.checksums[shard]
        raw = self._state()["sidecars"].get(shard)
        if not raw:
            return None
        try:
            digest = json.loads(raw).get("sha256")
        except (ValueError, AttributeError):
            return None
        return digest if isinstance(digest, str) and len(digest) == 64 else None

    def _cache_key(self, shard: str) -> str:
        return shard

    def _pool(self) -> ThreadPoolExecutor:
        st = self._state()
        pool = st.get("pool")
        if pool is None:
            pool = st["pool"] = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="atdata-fetch")
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
            pending: OrderedDict[str, Future[Buffer]] = st["pending"]
            start = plan.index(current) + 1 if current in plan else 0
            for shard in plan[start : start + self.readahead]:
                if shard not in pending:
                    pending[shard] = self._pool().submit(self._fetch, shard)
            # Bound memory: forget downloads that fell far behind the plan.
            while len(pending) > self.readahead + self.max_concurrency:
                _, fut = pending.popitem(last=False)
                fut.cancel()

    def buffer(self, shard: str) -> Buffer:
        st = self._state()
        with st["lock"]:
            fut = st["pending"].pop(shard, None)
        self._schedule(shard)
        if fut is not None:
            result: Buffer = fut.result()
            return result
        return self._fetch(shard)

    def open_shard(self, shard: str) -> IO[bytes]:
        """A sequential stream of the shard (downloaded with resume; from the cache when configured)."""
        return io.BytesIO(bytes(self.buffer(shard)))

    def read_sidecar(self, shard: str) -> bytes | None:
        st = self._state()
        cache: dict[str, bytes | None] = st["sidecars"]
        if shard not in cache:
            buf = io.BytesIO()
            try:
                self.download_to(sidecar_url(shard), buf)
                cache[shard] = buf.getvalue()
            except ShardNotFoundError:
                cache[shard] = None
            except SourceError as exc:
                # Sidecars are optional: a refused one (S3 answers 403 for a missing key without ListBucket; a
                # signed URL does not cover the sidecar's path) reads as absent. The shard itself still raises.
                log.debug("atdata_torch: no index sidecar for %s (%s)", self._display(shard), exc.message)
                cache[shard] = None
        return cache[shard]

    def iter_chunks(self, shard: str) -> Iterator[bytes]:
        """The shard as a sequence of chunks (no retry across chunks: for tools that stream once)."""
        stream, _ = self._open_range(shard, 0)
        try:
            while chunk := stream.read(CHUNK):
                yield chunk
        finally:
            stream.close()


def _map_file(path: Any) -> Buffer:
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return b""
        return memoryview(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))


class _MemorySink:
    """A write target that allocates once the size is known (numpy memory: no zero-fill, huge pages when large)."""

    def __init__(self) -> None:
        self._arr = np.empty(0, np.uint8)
        self._view = memoryview(self._arr)  # type: ignore[arg-type]
        self.pos = 0

    @property
    def data(self) -> memoryview:
        return self._view

    def reserve(self, size: int) -> None:
        if len(self._arr) < size:
            new = np.empty(size, np.uint8)
            new[: self.pos] = self._arr[: self.pos]
            self._arr, self._view = new, memoryview(new)  # type: ignore[arg-type]

    def write(self, chunk: bytes) -> int:
        end = self.pos + len(chunk)
        if end > len(self._arr):
            self.reserve(max(end, 2 * len(self._arr)))
        self._view[self.pos : end] = chunk
        self.pos = end
        return len(chunk)
