"""``ManifestWriter``: a manifest's two files beside its shard, each written to a temporary file and renamed."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

from ._manifest import ShardManifest, manifest_paths

__all__ = ["ManifestWriter", "write_atomic"]


def write_atomic(path: str, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory, renamed into place (the mode a
    plain ``open(path, "w")`` gives: ``0o666`` less the umask)."""
    d = os.path.dirname(path) or "."
    tmp = os.path.join(d, f".tmp-{uuid.uuid4().hex}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class ManifestWriter:
    """Writes a :class:`ShardManifest` as ``<base>.manifest.json`` and ``<base>.manifest.parquet``.

    Args:
        base_path: The shard path without ``.tar`` (a path ending in ``.tar`` is accepted too).

    Example:
        >>> import os, tempfile
        >>> import atdata_torch as atd
        >>> from atdata_torch.manifest import ManifestBuilder
        >>> @atd.packable
        ... class S:
        ...     n: int
        >>> b = ManifestBuilder(S, "s")
        >>> b.add_sample(key="0", offset=0, size=9, sample=S(1))
        >>> j, p = ManifestWriter(os.path.join(tempfile.mkdtemp(), "s")).write(b.build())
        >>> j.name, p.name
        ('s.manifest.json', 's.manifest.parquet')
    """

    def __init__(self, base_path: str | Path) -> None:
        self._json, self._parquet = manifest_paths(os.fspath(base_path))

    @property
    def json_path(self) -> Path:
        """The header file."""
        return Path(self._json)

    @property
    def parquet_path(self) -> Path:
        """The per-sample table."""
        return Path(self._parquet)

    def write(self, manifest: ShardManifest, *, fsync: bool = True) -> tuple[Path, Path]:
        """Write both files (the parquet first, so a header never points at a missing table); returns their paths."""
        os.makedirs(os.path.dirname(self._json) or ".", exist_ok=True)
        parquet, header = manifest.parquet_bytes(), manifest.header_bytes()
        write_atomic(self._parquet, parquet, fsync=fsync)
        write_atomic(self._json, header, fsync=fsync)
        return self.json_path, self.parquet_path
