"""Local files (plain paths and ``file://``), read into memory.

A shard is read whole into a pooled buffer with large ``preadv`` calls, not mapped: a mapped file that shrinks while
it is read (another process truncating or rewriting it) kills the reading process with SIGBUS, which Python cannot
catch. Bytes in our own memory cannot change under the reader; a shard that changes size while it is read raises
:class:`~atdata_torch.errors.ShardFormatError` naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import IO

from .._hints import local_options_message, missing_shard_message
from ..errors import ChecksumError, ShardFormatError, ShardNotFoundError, SourceError
from ._base import Buffer, ShardSource

_SIDECAR = ".idx.json"
_POOLED = 18  # shards a shuffled pass holds at once with the default window (16) + 2
_CHUNK = 8 << 20  # bytes per read call (and per hash update, while they are in the CPU cache)


def _path(url: str) -> str:
    return url[len("file://") :] if url.startswith("file://") else url


class LocalSource(ShardSource):
    """Shards on a local filesystem.

    Example:
        >>> LocalSource(["/data/a.tar", "/data/b.tar"]).list_shards()
        ['/data/a.tar', '/data/b.tar']
    """

    def __init__(self, paths: list[str], *, checksums: bool | dict[str, str] | None = None) -> None:
        self._paths = [_path(os.fspath(p)) for p in paths]
        if checksums is not None and not isinstance(checksums, (bool, dict)):
            raise TypeError(f"checksums= takes True or a {{path: sha256}} dict, got {type(checksums).__name__}")
        self.verify_sidecars = checksums is True
        self.checksums = {_path(k): v.lower() for k, v in checksums.items() if v} if isinstance(checksums, dict) else {}

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
        from ._remote import _buffer_pool

        expected = self._expected_sha256(shard)
        with self.open_shard(shard) as f:
            fd = f.fileno()
            size = os.fstat(fd).st_size
            # Pooled: a recycled buffer costs no page faults (a fresh one faults on every page as it is filled). A
            # shuffled pass holds a window's worth of shards (window + 2); buffers idle for 10 s are let go.
            pool = _buffer_pool(_POOLED, "local")
            pool.release(idle=10.0)
            view = memoryview(pool.get(size)) if size else memoryview(b"")  # type: ignore[arg-type]
            hasher = hashlib.sha256() if expected is not None else None
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
        return view

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
