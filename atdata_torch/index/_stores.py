"""The original atdata's data stores: where an index writes shards (``AbstractDataStore``, ``LocalDiskStore``).

A data store turns a ``Dataset`` into shards somewhere and returns their URLs as a :class:`ShardWriteResult` (a
``list[str]`` that also carries each shard's SHA-256). ``Index(data_store=...)`` writes through it;
:func:`verify_checksums` re-reads the shards an entry's ``metadata["checksums"]`` describes.

Example:
    >>> import os, tempfile, numpy as np, atdata_torch as atd
    >>> @atd.packable
    ... class Row:
    ...     x: atd.NDArray
    >>> d = tempfile.mkdtemp()
    >>> ds = atd.write_samples([Row(np.arange(3.0))] * 4, os.path.join(d, "src.tar"), progress=False)
    >>> store = LocalDiskStore(root=os.path.join(d, "store"))
    >>> urls = store.write_shards(ds, prefix="rows/v1", maxcount=2)
    >>> len(urls), os.path.basename(urls[0])[:6], urls[0].endswith("--000000.tar")
    (2, 'data--', True)
    >>> urls.checksums[urls[0]] == sha256_file(urls[0])
    True
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import SourceError
from ._locations import _user_data_dir

__all__ = [
    "AbstractDataStore",
    "LocalDiskStore",
    "ShardWriteResult",
    "sha256_file",
    "verify_checksums",
]

_REMOTE_PREFIXES = ("s3://", "at://", "http://", "https://")


class ShardWriteResult(list[str]):
    """The shard URLs a data store wrote (a ``list[str]``), with ``checksums``: URL -> SHA-256 hex digest.

    Example:
        >>> r = ShardWriteResult(["a.tar"], {"a.tar": "ab" * 32})
        >>> r[0], len(r.checksums["a.tar"])
        ('a.tar', 64)
    """

    checksums: dict[str, str]

    def __init__(self, urls: Iterable[str], checksums: Mapping[str, str] | None = None) -> None:
        super().__init__(urls)
        self.checksums = dict(checksums or {})


@runtime_checkable
class AbstractDataStore(Protocol):
    """What ``Index(data_store=...)`` needs of a shard store (the original's protocol, unchanged)."""

    def write_shards(self, ds: Any, *, prefix: str, **kwargs: Any) -> list[str]:
        """Write ``ds``'s samples as shards under ``prefix``; returns their URLs (ideally a ``ShardWriteResult``)."""
        ...

    def read_url(self, url: str) -> str:
        """The URL to read a written shard from (e.g. a signed URL)."""
        ...

    def supports_streaming(self) -> bool:
        """Whether shards can be read as streams."""
        ...


def sha256_file(path: str | os.PathLike[str], *, chunk_size: int = 1 << 20) -> str:
    """The SHA-256 hex digest of a file, read in chunks.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "empty.tar"; _ = p.write_bytes(b"")
        >>> sha256_file(p)[:8]
        'e3b0c442'
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            h.update(chunk)
    return h.hexdigest()


class LocalDiskStore:
    """Shards on the local disk: ``<root>/<prefix>/data--<uuid8>--%06d.tar`` (the original's layout).

    Args:
        root: The store's directory, created if missing. ``None``: ``$ATDATA_TORCH_DATA_DIR``, else ``data/``
            in the user data directory (the original's default is ``~/.atdata/data``).
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        if root is None:
            env = os.environ.get("ATDATA_TORCH_DATA_DIR")
            root = Path(env) if env else _user_data_dir() / "data"
        self._root = Path(root).expanduser().resolve()
        self._root.mkdir(parents=True, exist_ok=True)

    @property
    def root(self) -> Path:
        """The store's directory (absolute)."""
        return self._root

    def __repr__(self) -> str:
        return f"LocalDiskStore(root={str(self._root)!r})"

    def write_shards(
        self, ds: Any, *, prefix: str, maxcount: int | None = None, maxsize: int | None = None, **kwargs: Any
    ) -> ShardWriteResult:
        """Write every sample of ``ds`` (in order) as new shards under ``<root>/<prefix>/``.

        Args:
            ds: A ``Dataset`` (or any iterable of ``@packable`` samples).
            prefix: The sub-directory (``"mnist/v1"``).
            maxcount: Samples per shard (``None``: one shard unless ``maxsize`` splits it).
            maxsize: Bytes per shard.
            **kwargs: Options of other stores (``cache_local``, ...); ignored, as the original does.

        Returns:
            The absolute shard paths, with their SHA-256 digests in ``.checksums``.

        Raises:
            SourceError: ``ds`` has no samples (no shard was written).
        """
        from .. import ShardWriter

        shard_dir = self._root / prefix
        shard_dir.mkdir(parents=True, exist_ok=True)
        pattern = str(shard_dir / f"data--{uuid.uuid4().hex[:8]}--%06d.tar")
        samples = ds.ordered(rank=0, world_size=1) if hasattr(ds, "ordered") else ds
        writer = ShardWriter(pattern, maxcount=maxcount, maxsize=maxsize)
        try:
            for sample in samples:
                writer.write(sample)
        except BaseException:
            writer.abort()
            raise
        writer.close()
        shards = [str(Path(s).resolve()) for s in writer.shards]
        if not shards:
            raise SourceError(
                f"LocalDiskStore.write_shards(prefix={prefix!r}): the dataset has no samples, so no shard was "
                f"written under {shard_dir}; pass a dataset with at least one sample"
            )
        return ShardWriteResult(shards, {s: sha256_file(s) for s in shards})

    def read_url(self, url: str) -> str:
        """Local paths are read as they are."""
        return url

    def supports_streaming(self) -> bool:
        """Always ``True``."""
        return True


def verify_checksums(entry: Any) -> dict[str, str]:
    """Re-hash an entry's local shards against ``entry.metadata["checksums"]``.

    Returns:
        URL -> ``"ok"``, ``"mismatch"``, ``"skipped"`` (no stored digest, or a remote URL) or ``"error:<why>"``
        (the file cannot be read), as the original reports them.

    Example:
        >>> from atdata_torch.index import IndexEntry
        >>> verify_checksums(IndexEntry(name="x", schema_ref="s", data_urls=["s3://b/k.tar"]))
        {'s3://b/k.tar': 'skipped'}
    """
    stored = (getattr(entry, "metadata", None) or {}).get("checksums") or {}
    results: dict[str, str] = {}
    for url in entry.data_urls:
        if url not in stored or url.startswith(_REMOTE_PREFIXES):
            results[url] = "skipped"
            continue
        try:
            results[url] = "ok" if sha256_file(url) == stored[url] else "mismatch"
        except OSError as exc:
            results[url] = f"error:{exc}"
    return results
