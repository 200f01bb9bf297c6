"""Writing shards: :class:`ShardWriter` and :func:`write_samples`.

Shards are plain ustar tars (no PAX headers, integer mtime 0), one ``<key>.msgpack`` member per sample, padded to
the 10240-byte record size, so writing the same samples twice gives byte-identical shards. Each shard is written
to a temporary file and renamed into place only when complete; its index sidecar (``<shard>.idx.json``) follows
the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import IO, Any, TypeVar

from tqdm.auto import tqdm

from ._msgpack import pack_mapping, pack_sample
from ._packed import PACKED_EXT, pair
from ._shards import shard_name
from ._sidecar import SIDECAR_SUFFIX, ShardIndex
from ._tarheader import BLOCK, RECORD
from ._tarwrite import end_of_archive, ustar_header
from .errors import EmptyDatasetError, SchemaError
from .schema import DictSample, PackableSample

__all__ = ["ShardWriter", "build_index", "write_samples"]

T = TypeVar("T")


def _payload(sample: Any) -> tuple[bytes, str | None]:
    if isinstance(sample, PackableSample):
        return pack_sample(sample), type(sample).__atdata_schema_id__
    if isinstance(sample, DictSample):
        return pack_mapping(sample.to_dict()), None
    if isinstance(sample, dict):
        return pack_mapping(sample), None
    raise SchemaError(
        f"cannot write a {type(sample).__name__}: samples must be @packable instances, DictSample or dict"
    )


def _pad(size: int) -> int:
    """``size`` rounded up to whole 512-byte tar blocks."""
    return size + (-size) % BLOCK


def _padded_end(pos: int) -> int:
    """The size of a shard whose members end at ``pos``: end-of-archive blocks and record padding included."""
    end = pos + 2 * BLOCK
    return end + (-end) % RECORD


def _umask() -> int:
    """The process's umask, read without changing it where the OS tells (Linux), else by setting and restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_file(directory: str, suffix: str) -> tuple[int, str]:
    """A temporary file to be renamed into place, with the mode a plain ``open(path, "w")`` would give it.

    ``mkstemp`` creates files ``0600``, a mode that would survive the rename and make a dataset written for a team
    unreadable to it; the umask is respected instead, as for any other file.
    """
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    except BaseException:
        os.close(fd)
        _unlink(tmp)
        raise
    return fd, tmp


def _atomic_write(path: str, data: bytes) -> None:
    d = os.path.dirname(path) or "."
    fd, tmp = temp_file(d, ".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class ShardWriter:
    """Write samples into one or more shards, atomically, with index sidecars.

    Args:
        path: A single shard path (``"out/data.tar"``), a ``%``-pattern (``"out/train-%06d.tar"``), or with
            ``maxcount``/``maxsize`` a base path that becomes ``out/train-000000.tar``, ``-000001``, ...
        maxcount: Start a new shard after this many samples.
        maxsize: Start a new shard before this many bytes would be exceeded (end-of-archive record padding
            included); only a shard holding one sample larger than ``maxsize`` exceeds it (any value from 1 up:
            1 writes one sample per shard).
        key: ``key(sample, index) -> str`` for the member names; defaults to the zero-padded global index, so
            output is reproducible. Keys must not contain ``.``.
        sidecar: Write ``<shard>.idx.json`` next to each shard (default ``True``).
        fsync: ``fsync`` each shard before the rename (default ``True``).
        manifest: Also write ``<shard>.manifest.json`` and ``.manifest.parquet`` beside each shard (atomically; needs
            the ``arrow`` extra), for ``Dataset.query()``; see :mod:`atdata_torch.manifest`.
        pack: The compact layout for small samples: up to this many samples share one tar member
            (``<first key>.msgpacks``), instead of one ``<key>.msgpack`` member (a 512-byte header and padding) each.
            Every reader of this library reads it like the default layout (``len()``, ``ds[i]``, shuffling, resume);
            the original atdata cannot (webdataset sees one opaque ``msgpacks`` field per pack). ``None`` or 1: the
            default layout.

    Example:
        >>> import tempfile, os
        >>> import atdata_torch as atd
        >>> @atd.packable
        ... class S:
        ...     n: int
        >>> d = tempfile.mkdtemp()
        >>> with atd.ShardWriter(os.path.join(d, "t.tar"), maxcount=2) as w:
        ...     for i in range(3):
        ...         _ = w.write(S(n=i))
        >>> [os.path.basename(p) for p in w.shards]
        ['t-000000.tar', 't-000001.tar']
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        maxcount: int | None = None,
        maxsize: float | None = None,
        key: Callable[[Any, int], str] | None = None,
        sidecar: bool = True,
        fsync: bool = True,
        manifest: bool = False,
        pack: int | None = None,
    ) -> None:
        path = os.fspath(path)
        if pack is not None and (isinstance(pack, bool) or not isinstance(pack, int) or pack < 1):
            raise ValueError(f"pack must be an int >= 1 (samples per tar member), got {pack!r}")
        self._pack = pack if pack is not None and pack > 1 else None
        self._pend: list[bytes] = []  # the pairs of the packed member being filled
        self._pend_bytes = self._pend_first = 0
        if manifest:  # fail before writing anything when the arrow extra is missing
            from .manifest._parquet import arrow, pandas

            arrow(), pandas()
        self._manifest = manifest
        self._builder: Any = None
        if maxcount is not None and maxcount < 1:
            raise ValueError("maxcount must be >= 1")
        if maxsize is not None and maxsize < 1:
            raise ValueError(f"maxsize must be >= 1 byte (1: one sample per shard), got {maxsize}")
        self._path = path
        self._pattern = "%" in os.path.basename(path)
        self._sharded = self._pattern or maxcount is not None or maxsize is not None
        self.maxcount = maxcount
        self.maxsize = maxsize
        self._key = key
        self._sidecar = sidecar
        self._fsync = fsync
        self.shards: list[str] = []
        self.count = 0
        self._schema: str | bool | None = False  # False: no sample yet
        self._file: IO[bytes] | None = None
        self._tmp: str | None = None
        self._hash: Any = None
        self._pos = 0
        self._keys: list[str] = []
        self._offsets: list[int] = []
        self._lengths: list[int] = []
        self._sizes: list[int] = []
        self._poffs: list[int] = []
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)

    def _next_name(self) -> str:
        n = len(self.shards)
        if self._pattern:
            return self._path % n
        if self._sharded:
            return shard_name(self._path, n)
        if n:
            raise RuntimeError("a single-shard ShardWriter cannot start a second shard")
        return self._path

    def _open(self) -> None:
        name = self._next_name()
        fd, tmp = temp_file(os.path.dirname(name) or ".", ".tar.part")
        self._file = os.fdopen(fd, "wb", buffering=1 << 20)
        self._tmp = tmp
        self._final = name
        self._hash = hashlib.sha256()
        self._pos = 0
        self._keys, self._offsets, self._lengths, self._sizes, self._poffs = [], [], [], [], []

    def _emit(self, data: bytes) -> None:
        assert self._file is not None
        self._file.write(data)
        self._hash.update(data)
        self._pos += len(data)

    def write(self, sample: Any, key: str | None = None) -> str:
        """Write one sample; returns its key.

        Raises:
            SchemaError: when the sample cannot be encoded (naming the field), or its schema differs from the
                samples already written.
        """
        payload, sid = _payload(sample)
        if self._schema is False:
            self._schema = sid
        elif sid != self._schema:
            raise SchemaError(
                f"sample {self.count} is a {type(sample).__name__} (schema {sid}) but this writer holds "
                f"schema {self._schema}; write each sample type to its own shards"
            )
        if key is None:
            key = self._key(sample, self.count) if self._key is not None else f"{self.count:08d}"
        if not key or "." in key.rsplit("/", 1)[-1] or key.endswith("/"):
            raise ValueError(f"sample key {key!r} must be non-empty and have no '.' in its last path segment")
        raw, head = pair(key, payload) if self._pack else (payload, 0)
        size = BLOCK + _pad(self._pend_bytes + len(raw)) if self._pack else BLOCK + _pad(len(payload))
        if self._file is not None and (
            (self.maxcount is not None and len(self._keys) >= self.maxcount)
            or (self.maxsize is not None and self._keys and _padded_end(self._pos + size) > self.maxsize)
        ):
            self._finish()
        if self._file is None:
            self._open()
        if self._manifest:
            self._manifest_add(sample, key, len(payload))
        self._keys.append(key)
        self._offsets.append(self._pos)
        self._sizes.append(len(payload))
        if self._pack:
            self._add_pair(raw, head)
        else:
            self._lengths.append(size)
            self._poffs.append(self._pos + BLOCK)
            self._emit(ustar_header(f"{key}.msgpack", len(payload)))
            self._emit(payload)
            if size - BLOCK > len(payload):
                self._emit(bytes(size - BLOCK - len(payload)))
        self.count += 1
        return key

    def _add_pair(self, raw: bytes, head: int) -> None:
        """Add the sample just listed to the packed member being filled (written when it holds ``pack`` samples)."""
        assert self._pack is not None
        if not self._pend:
            self._pend_first = len(self._keys) - 1
        self._poffs.append(self._pos + BLOCK + self._pend_bytes + head)
        self._pend.append(raw)
        self._pend_bytes += len(raw)
        if len(self._pend) >= self._pack:
            self._flush()

    def _flush(self) -> None:
        """Write the packed member being filled (see ``pack``)."""
        if not self._pend:
            return
        data = b"".join(self._pend)
        length = BLOCK + _pad(len(data))
        self._lengths.extend([length] * (len(self._keys) - self._pend_first))
        self._emit(ustar_header(f"{self._keys[self._pend_first]}.{PACKED_EXT}", len(data)))
        self._emit(data)
        if length - BLOCK > len(data):
            self._emit(bytes(length - BLOCK - len(data)))
        self._pend, self._pend_bytes = [], 0

    def _manifest_add(self, sample: Any, key: str, size: int) -> None:
        if self._builder is None:
            from .manifest import ManifestBuilder

            self._builder = ManifestBuilder(type(sample), shard_id=os.path.splitext(os.path.basename(self._final))[0])
        self._builder.add_sample(key=key, offset=self._pos, size=size, sample=sample)

    def _finish(self) -> None:
        f, tmp = self._file, self._tmp
        assert f is not None and tmp is not None
        self._flush()
        self._emit(end_of_archive(self._pos))
        f.flush()
        if self._fsync:
            os.fsync(f.fileno())
        f.close()
        self._file = None
        os.replace(tmp, self._final)
        self._tmp = None
        if self._sidecar:
            idx = ShardIndex(
                count=len(self._keys),
                keys=self._keys,
                offsets=self._offsets,
                lengths=self._lengths,
                size=self._pos,
                sha256=self._hash.hexdigest(),
                schema_id=self._schema if isinstance(self._schema, str) else None,
                payload_ext="msgpack",
                payload_offsets=self._poffs,
                payload_sizes=self._sizes,
                packed=self._pack is not None,
            )
            _atomic_write(self._final + SIDECAR_SUFFIX, idx.to_json())
        if self._builder is not None:
            from .manifest import ManifestWriter

            ManifestWriter(self._final).write(self._builder.build(), fsync=self._fsync)
            self._builder = None
        self.shards.append(self._final)

    def close(self) -> None:
        """Finish the current shard (renaming it into place)."""
        if self._file is not None:
            self._finish()

    def abort(self) -> None:
        """Drop the shard being written (its temp file is removed); finished shards stay."""
        self._pend, self._pend_bytes = [], 0
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tmp is not None:
            _unlink(self._tmp)
            self._tmp = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __repr__(self) -> str:
        return f"ShardWriter({self._path!r}, shards={len(self.shards)}, samples={self.count})"


def write_samples(
    samples: Iterable[T],
    path: str | os.PathLike[str],
    *,
    maxcount: int | None = None,
    maxsize: float | None = None,
    key: Callable[[Any, int], str] | None = None,
    sidecar: bool = True,
    progress: bool | None = None,
    manifest: bool = False,
    content_metadata: Any = None,
    pack: int | None = None,
) -> Any:
    """Write samples to shard(s) and return a ``Dataset`` over them (typed like the first sample).

    Without ``maxcount``/``maxsize`` one shard is written at ``path``; with either, shards are named like the
    original atdata's (``out/train.tar`` -> ``out/train-000000.tar``, ...).

    Args:
        samples: ``@packable`` instances (or DictSample / dicts), all of one type.
        path: Output path (see :class:`ShardWriter`).
        maxcount: Samples per shard.
        maxsize: Bytes per shard.
        key: ``key(sample, index) -> str``; defaults to the zero-padded index.
        sidecar: Write index sidecars.
        progress: Show a tqdm progress bar (``None``: only when stderr is a terminal).
        manifest: Write per-shard manifests for ``Dataset.query()`` (see :class:`ShardWriter`).
        content_metadata: Dataset-level metadata (a ``@packable`` instance, a DictSample or a dict), kept on the
            returned dataset as ``.content_metadata`` (in memory, as the original atdata).
        pack: The compact layout for small samples: this many samples per tar member (see :class:`ShardWriter`;
            the original atdata cannot read it).

    With only one of ``maxcount`` / ``maxsize``, the other takes the original's default (100000 samples, 3e9
    bytes).

    Raises:
        EmptyDatasetError: when ``samples`` is empty (a ``ValueError``); nothing is written.
        SchemaError: when ``content_metadata`` is not a sample or a dict (a ``TypeError``).

    Example:
        >>> import tempfile, os, numpy as np
        >>> import atdata_torch as atd
        >>> @atd.packable
        ... class S:
        ...     x: atd.NDArray
        >>> ds = atd.write_samples([S(x=np.zeros(2))], os.path.join(tempfile.mkdtemp(), "a.tar"), progress=False)
        >>> len(ds)
        1
    """
    from ._dataset_compat import check_content_metadata, default_limits, shards_to_url
    from .dataset import Dataset

    check_content_metadata(content_metadata)
    maxcount, maxsize = default_limits(maxcount, maxsize)
    total = len(samples) if hasattr(samples, "__len__") else None  # type: ignore[arg-type]
    first_type: type | None = None
    with ShardWriter(
        path, maxcount=maxcount, maxsize=maxsize, key=key, sidecar=sidecar, manifest=manifest, pack=pack
    ) as w:
        bar = tqdm(
            samples,
            total=total,
            desc=f"writing {os.path.basename(os.fspath(path))}",
            unit="sample",
            disable=None if progress is None else not progress,
            leave=False,
        )
        for s in bar:
            if first_type is None:
                first_type = type(s)
            w.write(s)
        bar.close()
    if w.count == 0:
        raise EmptyDatasetError(
            f"write_samples() got no samples for {os.fspath(path)!r}; nothing was written. Pass a non-empty iterable"
        )
    st: Any = first_type if first_type is not None and issubclass(first_type, PackableSample) else DictSample
    ds = Dataset(w.shards, sample_type=st)
    ds._url, ds.content_metadata = shards_to_url([os.path.abspath(p) for p in w.shards]), content_metadata
    return ds


def build_index(
    shards: str | os.PathLike[str] | list[str] | Any, *, write: bool = True, progress: bool | None = None
) -> list[ShardIndex]:
    """Scan shards (plain webdataset tars, original atdata shards, ...) and write their index sidecars.

    Remote shards (``https://``, ``s3://``, or a source such as ``HTTPSource(urls, cache=...)``) are downloaded
    (through the source's cache, if it has one) and scanned; their sidecars cannot be written next to them, so pass
    ``write=False`` and upload each index's ``to_json()`` as ``<shard>.idx.json`` yourself.

    Args:
        shards: A path / URL / brace pattern / glob, a list of them, or a source.
        write: Write ``<shard>.idx.json`` next to each (local) shard, atomically; otherwise only return the indexes.
        progress: A progress bar over the shards (``None``: only when stderr is a terminal, never in a DataLoader
            worker). A remote source's own bars, one per shard downloaded into its cache, follow its ``progress=``.

    Raises:
        TypeError: ``write=True`` for remote shards.

    Example:
        >>> # atd.build_index("data/train-{000000..000009}.tar")
        >>> # atd.build_index("https://example.org/train-{000000..000009}.tar", write=False)
    """
    from . import _progress
    from ._sidecar import scan
    from .sources import LocalSource, resolve_source

    source = resolve_source(shards)
    local = isinstance(source, LocalSource)
    if write and not local:
        raise TypeError(
            f"build_index() writes sidecars next to local shards, and {type(source).__name__} shards are not local: "
            "pass write=False to get the indexes of remote shards (then upload each index's to_json() as "
            "<shard>.idx.json next to its shard), or download the shards and index the local copies"
        )
    names = source.list_shards()
    bar = _progress.bar(progress, total=len(names), desc="indexing", unit="shard")
    out = []
    try:
        for shard in names:
            get = getattr(source, "buffer", None)
            buf = get(shard) if get is not None else None
            if buf is None:
                with source.open_shard(shard) as f:
                    buf = f.read()
            idx = scan(buf, shard, with_sha256=True)
            if write:
                _atomic_write(shard + SIDECAR_SUFFIX, idx.to_json())
            out.append(idx)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return out
