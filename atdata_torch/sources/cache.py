"""A local cache of remote shards: bounded, verified, atomic, and safe to share between processes.

- One download per shard at a time: a per-entry file lock (``filelock``) serializes DataLoader workers and
  processes that want the same shard; the others wait and then read the finished file.
- Atomic: a download goes to a temporary file in the cache directory and is renamed into place when complete, so
  a reader never sees a torn file.
- Verified: the sha256 of every download is recorded next to it (and checked against an expected digest when the
  caller knows one, e.g. from the shard's index sidecar); a cached file whose content no longer matches is
  detected the first time a process uses it, deleted and fetched again.
- Bounded: with ``max_bytes``, the least recently used entries are evicted after a download. Only files this
  cache wrote (``<sha256 of url>.shard`` plus their ``.sha256`` records) are ever evicted, never one in use.

Example:
    >>> import tempfile
    >>> cache = ShardCache(tempfile.mkdtemp(), max_bytes=10 << 30)
    >>> path = cache.get("https://example.org/a.tar", lambda f: f.write(b"tar bytes"))
    >>> path.read_bytes()
    b'tar bytes'
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

from filelock import FileLock, Timeout

from .._redaction import redact  # keys are URLs: no credentials in messages
from ..errors import ChecksumError

__all__ = ["ShardCache"]

log = logging.getLogger("atdata_torch")

_T = TypeVar("_T")
_ENTRY = re.compile(r"^[0-9a-f]{40}\.shard$")


class _HashingWriter:
    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self._f.write(data)


class ShardCache:
    """A directory of downloaded shards.

    Args:
        root: The cache directory (created if missing). ``ATDATA_TORCH_CACHE_DIR`` is a common choice.
        max_bytes: Evict least recently used entries beyond this total size (``None``: no limit).
        lock_timeout: Seconds to wait for another process's download of the same shard.
    """

    def __init__(self, root: str | os.PathLike[str], max_bytes: int | None = None, lock_timeout: float = 3600) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "locks").mkdir(exist_ok=True)
        self.max_bytes = max_bytes
        self.lock_timeout = lock_timeout
        self._verified: set[tuple[str, int, int]] = set()
        self._guard = threading.Lock()
        self.downloads = 0  # downloads done by this object (in this process)
        self.hits = 0  # entries served from the cache, without a download, by this object (in this process)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_guard"] = None
        state["_verified"] = set()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._guard = threading.Lock()

    def _name(self, key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()[:40]

    def path_for(self, key: str) -> Path:
        """Where the entry for ``key`` (a URL) lives."""
        return self.root / f"{self._name(key)}.shard"

    def _lock(self, key: str) -> FileLock:
        return FileLock(str(self.root / "locks" / f"{self._name(key)}.lock"), timeout=self.lock_timeout)

    def _recorded(self, path: Path) -> str | None:
        try:
            return (path.parent / (path.name + ".sha256")).read_text().strip() or None
        except FileNotFoundError:
            return None

    def _valid(self, path: Path, expected: str | None) -> bool:
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        recorded = self._recorded(path)
        want = expected or recorded
        if want is None:
            return False  # no record: not written by us, or torn: fetch again
        memo = (str(path), st.st_size, st.st_mtime_ns)
        if memo in self._verified and want == recorded:
            return True
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(8 << 20):
                h.update(chunk)
        ok = h.hexdigest() == want
        if ok:
            self._verified.add(memo)
        else:
            log.warning("atdata_torch cache: %s does not match its checksum; fetching it again", path.name)
        return ok

    def get(
        self,
        key: str,
        download: Callable[[Any], object],
        *,
        sha256: str | None = None,
    ) -> Path:
        """The cached file for ``key``, downloading it with ``download(file)`` when missing or corrupt.

        Args:
            key: Identifies the content (the shard URL).
            download: Writes the content into the binary file it is given.
            sha256: The expected digest, when known; a download that does not match raises ``SourceError``.
        """
        return self.open(key, download, sha256=sha256, opener=lambda p: p)

    def open(
        self,
        key: str,
        download: Callable[[Any], object],
        *,
        opener: Callable[[Path], _T],
        sha256: str | None = None,
    ) -> _T:
        """Like :meth:`get`, and ``opener(path)`` runs while the entry is locked, so that a concurrent eviction
        cannot remove the file between its download and its opening (an mmap opened here outlives an unlink)."""
        path = self.path_for(key)
        with self._lock(key):
            if self._valid(path, sha256):
                _touch(path)
                with self._guard or threading.Lock():
                    self.hits += 1
                return opener(path)
            for stale in (path, path.parent / (path.name + ".sha256")):
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as f:
                    w = _HashingWriter(f)
                    download(w)
                    f.flush()
                    os.fsync(f.fileno())
                digest = w.sha.hexdigest()
                if sha256 is not None and digest != sha256:
                    raise ChecksumError(
                        f"downloaded content of {redact(key)!r} has sha256 {digest[:16]}..., expected "
                        f"{sha256[:16]}...: the remote shard changed or is corrupt; rebuild its index sidecar or "
                        "re-upload it",
                        shard=redact(key),
                    )
                rec = path.parent / (path.name + ".sha256")
                rec_tmp = Path(tmp + ".sha256")
                rec_tmp.write_text(digest)
                os.replace(tmp, path)
                os.replace(rec_tmp, rec)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            with self._guard or threading.Lock():
                self.downloads += 1
                self._verified.add((str(path), path.stat().st_size, path.stat().st_mtime_ns))
            result = opener(path)
        self.evict(keep=path)
        return result

    def entries(self) -> list[Path]:
        """The shard files this cache wrote."""
        return [p for p in self.root.iterdir() if _ENTRY.match(p.name)]

    def size(self) -> int:
        """Total bytes of the cached shards."""
        return sum(p.stat().st_size for p in self.entries() if p.exists())

    def evict(self, keep: Path | None = None) -> int:
        """Delete least recently used entries until under ``max_bytes``; skips entries in use. Returns bytes freed."""
        if self.max_bytes is None:
            return 0
        freed = 0
        with FileLock(str(self.root / "locks" / "evict.lock"), timeout=self.lock_timeout):
            entries = []
            for p in self.entries():
                with contextlib.suppress(FileNotFoundError):
                    st = p.stat()
                    entries.append((st.st_atime_ns, st.st_size, p))
            total = sum(size for _, size, _ in entries)
            for _, size, p in sorted(entries):
                if total <= self.max_bytes:
                    break
                if keep is not None and p == keep:
                    continue
                if self._remove(p):
                    total -= size
                    freed += size
        return freed

    def _remove(self, p: Path) -> bool:
        """Delete an entry and its digest record, unless it is locked (being downloaded or read)."""
        try:
            with FileLock(str(self.root / "locks" / f"{p.stem}.lock"), timeout=0):
                p.unlink()
                with contextlib.suppress(FileNotFoundError):
                    (p.parent / (p.name + ".sha256")).unlink()
        except (Timeout, FileNotFoundError):
            return False
        return True

    def clear(self) -> int:
        """Delete every entry this cache wrote (skipping entries being downloaded). Returns how many."""
        return sum(self._remove(p) for p in self.entries())

    def __repr__(self) -> str:
        limit = "unbounded" if self.max_bytes is None else f"max_bytes={self.max_bytes}"
        return f"ShardCache({str(self.root)!r}, {limit})"


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(path)
