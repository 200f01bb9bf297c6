"""Local files (plain paths and ``file://``), read into memory.

A shard is read whole into a pooled buffer with large ``preadv`` calls, not mapped: a mapped file that shrinks while
it is read (another process truncating or rewriting it) kills the reading process with SIGBUS, which Python cannot
catch. Bytes in our own memory cannot change under the reader; a shard that changes size while it is read raises
:class:`~atdata_torch.errors.ShardFormatError` naming it.

An ordered pass in batches places the shard's arrays (see ``atdata_torch._placement``): the pass routes each shard
(:meth:`LocalSource.route`) before it opens it, and the read gives ``preadv`` a list of buffers, the batch rows of
the samples' array bytes and the pieces of the shard buffer between them, so each array is copied once, from the
page cache into its batch row. Read whole and then stacked into batches, every byte was copied twice: ordered
passes in batches of 64 (``benchmarks/bench_read.py``, 2 cores) went from 56.6-61.3k samples/s mapped to
40.2-41.6k read whole (image shape; large: 2518-2584 to 1588-1608). Placed, back to back with the mapped version
on a quiet machine: image 65.9k vs 62.7k mapped (a/b against webdataset 5.93x vs 6.05x), large 3538 vs 2298.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from typing import IO, TYPE_CHECKING, Any

from .._hints import local_options_message, missing_shard_message
from ..errors import ChecksumError, ShardFormatError, ShardNotFoundError, SourceError
from ._base import ShardSource, as_shard_list
from ._buffers import _buffer_pool
from ._filling import Buffer, Filling

if TYPE_CHECKING:
    from .._placement import Router

_SIDECAR = ".idx.json"
_POOLED = 18  # shards a shuffled pass holds at once with the default window (16) + 2
_CHUNK = 8 << 20  # bytes per read call (and per hash update, while they are in the CPU cache)


def _iov_max() -> int:
    try:
        return max(2, int(os.sysconf("SC_IOV_MAX")))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - POSIX has it
        return 16


_IOV_MAX = _iov_max()  # buffers per preadv call


def _path(url: str) -> str:
    return url[len("file://") :] if url.startswith("file://") else url


class LocalSource(ShardSource):
    """Shards on a local filesystem.

    Example:
        >>> LocalSource(["/data/a.tar", "/data/b.tar"]).list_shards()
        ['/data/a.tar', '/data/b.tar']
    """

    def __init__(
        self, paths: str | os.PathLike[str] | list[str], *, checksums: bool | dict[str, str] | None = None
    ) -> None:
        self._paths = [_path(p) for p in as_shard_list(paths, "LocalSource")]
        if checksums is not None and not isinstance(checksums, (bool, dict)):
            raise TypeError(f"checksums= takes True or a {{path: sha256}} dict, got {type(checksums).__name__}")
        self.verify_sidecars = checksums is True
        self.checksums = {_path(k): v.lower() for k, v in checksums.items() if v} if isinstance(checksums, dict) else {}
        self._routes: dict[str, Router] = {}  # shard -> the router of a pass that has not opened it yet (route())
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_routes"], state["_lock"] = {}, None  # routes belong to a pass in this process
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @classmethod
    def from_urls(cls, urls: list[str], **options: object) -> LocalSource:
        """Build from paths or ``file://`` URLs; ``checksums=True`` checks each shard against the sha256 its index
        sidecar records (or a ``{path: sha256}`` dict), raising :class:`ChecksumError` on bit-rot."""
        checksums = options.pop("checksums", None)
        if options:
            raise TypeError(local_options_message(options) + " (local files take only checksums=)")
        return cls(urls, checksums=checksums)  # type: ignore[arg-type]

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
        got = self._read(shard, None)
        assert not isinstance(got, Filling)
        return got

    def route(self, shard: str, router: Router) -> None:
        """Read the placed ranges of ``shard`` straight into batch rows when the router's pass opens it (see
        ``atdata_torch._placement`` and :meth:`stream_buffer`)."""
        with self._lock:
            self._routes[shard] = router

    def unroute(self, owner: Any) -> None:
        """The pass of ``owner`` ended: forget the routers of the shards it did not open."""
        with self._lock:
            for shard in [s for s, r in self._routes.items() if r.owner is owner]:
                del self._routes[shard]

    def stream_buffer(self, shard: str, owner: Any = None) -> Buffer | Filling:
        """The shard for a pass: for the pass (``owner``) that routed it, a finished :class:`Filling` whose
        router's ranges were read into their batch rows (the buffer holds the bytes between them); else the whole
        shard, as :meth:`buffer`."""
        router = None
        if owner is not None:
            with self._lock:
                got = self._routes.get(shard)
                if got is not None and got.owner is owner:
                    router = self._routes.pop(shard)
        return self._read(shard, router)

    def _read(self, shard: str, router: Router | None) -> Buffer | Filling:
        expected = self._expected_sha256(shard)
        with self.open_shard(shard) as f:
            fd = f.fileno()
            size = os.fstat(fd).st_size
            # Pooled: a recycled buffer costs no page faults (a fresh one faults on every page as it is filled). A
            # shuffled pass holds a window's worth of shards (window + 2); buffers idle for 10 s are let go. A placed
            # read leaves the buffer's bytes under the routed ranges untouched (a fresh buffer's pages there are
            # never faulted in).
            pool = _buffer_pool(_POOLED, "local")
            pool.release(idle=10.0)
            view = memoryview(pool.get(size)) if size else memoryview(b"")  # type: ignore[arg-type]
            hasher = hashlib.sha256() if expected is not None else None
            if router is not None:
                got = _read_placed(fd, view, size, router, hasher)
            else:
                got = 0
                while got < size:
                    n = os.preadv(fd, [view[got : min(size, got + _CHUNK)]], got)
                    if n == 0:
                        break
                    if hasher is not None:
                        hasher.update(view[got : got + n])
                    got += n
            now = os.fstat(fd).st_size
        if got != size or now != size:
            raise ShardFormatError(
                f"the shard changed size while it was read ({size} bytes when opened, {got} read, {now} now): "
                "another process is writing or truncating it; read it once it is complete",
                shard=shard,
            )
        if hasher is not None and expected is not None and hasher.hexdigest() != expected:
            raise ChecksumError(
                f"shard has sha256 {hasher.hexdigest()[:16]}..., its index sidecar (or checksums=) says "
                f"{expected[:16]}...: the file is corrupt (bit-rot, or rewritten without its sidecar); restore it "
                "from a good copy, or rebuild the sidecar with atd.build_index() if the new bytes are right",
                shard=shard,
            )
        if router is None:
            return view
        fill = Filling(view, shard)
        fill.router = router  # the pass reads the routed samples' arrays from their rows (Router.placed)
        fill.finish()
        return fill

    def read_range(self, shard: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of a shard (fewer where the file ends before ``end``)."""
        with self.open_shard(shard) as f:
            return os.pread(f.fileno(), max(0, end - start), start)

    def _expected_sha256(self, shard: str) -> str | None:
        if shard in self.checksums:
            return self.checksums[shard]
        if not self.verify_sidecars:
            return None
        raw = self.read_sidecar(shard)
        try:
            digest = json.loads(raw).get("sha256") if raw else None
        except (ValueError, AttributeError, RecursionError):
            digest = None  # a sidecar that is not valid is reported where it is read as an index
        return digest.lower() if isinstance(digest, str) and len(digest) == 64 else None

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


def _read_placed(fd: int, view: memoryview, size: int, router: Router, hasher: Any) -> int:
    """Read a shard of ``size`` bytes: the router's ranges into their batch rows, the bytes between them into
    ``view`` (at their offsets), ``_CHUNK`` bytes and at most ``_IOV_MAX`` buffers per ``preadv``; ``hasher`` is fed
    every byte in file order. Returns the bytes read (less than ``size`` when the file got shorter)."""
    starts, ends = router.starts, router.ends
    i = router.attach(0)  # every range is placed (0: the read starts at the shard's first byte)
    nr = len(starts)
    pos = 0
    while pos < size:
        limit = min(size, pos + _CHUNK)
        bufs: list[memoryview] = []
        p = pos
        while p < limit and len(bufs) < _IOV_MAX:
            if i < nr and starts[i] <= p:
                lo = starts[i]
                hi = min(ends[i], limit)
                bufs.append(router.dest(i)[p - lo : hi - lo])
                if hi == ends[i]:
                    i += 1
            else:
                hi = min(starts[i], limit) if i < nr else limit
                bufs.append(view[p:hi])
            p = hi
        n = os.preadv(fd, bufs, pos)
        if n == 0:
            break
        if hasher is not None:
            left = n
            for b in bufs:
                if left <= 0:
                    break
                hasher.update(b[:left] if len(b) > left else b)
                left -= len(b)
        pos += n
        while i > 0 and ends[i - 1] > pos:  # a short read: go on inside the range it stopped in
            i -= 1
    return pos
