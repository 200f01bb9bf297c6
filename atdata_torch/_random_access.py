"""Random access: ``ds[i]``, ``ds[i:j]``, ``ds[[i, j, ...]]`` and a map-style view for torch samplers.

A sample's global index counts across the shards in order (what ``ds.ordered()`` yields at that position). The
index sidecars give each sample's byte range, so a sample is read without reading its shard: locally one ``pread``
on a file descriptor kept open per process; remotely one ranged GET. A list or slice reads the samples of each shard
sorted by offset, with nearby ranges coalesced into one read (remote reads of several ranges in parallel), and
returns them in the order asked for. The headers inside each range are checked (a stale sidecar raises a
:class:`~atdata_torch.errors.ShardFormatError` naming ``atd.build_index()``).

A :class:`MapDataset` (``ds.as_map()``) is a ``torch.utils.data.Dataset`` with ``__len__``, ``__getitem__`` and
``__getitems__`` (the DataLoader's batched fetch): any ``Sampler`` works, ``DistributedSampler`` included. It pickles
as the sample locations only: file descriptors, connections and thread pools are opened lazily in each process.

Example:
    >>> import numpy as np, tempfile, os
    >>> import atdata_torch as atd
    >>> @atd.packable
    ... class Point:
    ...     x: atd.NDArray
    ...     label: int
    >>> ds = atd.write_samples([Point(x=np.full(2, i, np.float32), label=i) for i in range(10)],
    ...                        os.path.join(tempfile.mkdtemp(), "p.tar"), maxcount=4, progress=False)
    >>> ds[5].label, [p.label for p in ds[-2:]], [p.label for p in ds[[7, 0]]]
    (5, [8, 9], [7, 0])
    >>> view = ds.as_map()
    >>> len(view), view.__getitems__([3, 1])[0].label
    (10, 3)
"""

from __future__ import annotations

import bisect
import contextlib
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import numpy as np
from torch.utils.data import Dataset as TorchDataset

from ._decode import _SAMPLE_CONTEXT, decode_record
from ._reader import Record, read_indexed, read_record
from .errors import RandomAccessError, SampleIndexError, ShardFormatError
from .sources import LocalSource
from .sources._capabilities import Buffered, RangeReading

if TYPE_CHECKING:
    from ._sidecar import ShardIndex
    from .dataset import Dataset

__all__ = ["MapDataset", "RandomAccess", "getitem", "random_access"]

T = TypeVar("T")

#: Coalescing of the byte ranges of a list / slice: ranges of one shard closer than ``gap`` bytes are read by one
#: request, while it spans at most ``span`` bytes. Remote round trips cost more than the bytes in between.
LOCAL_GAP, LOCAL_SPAN = 64 << 10, 8 << 20
REMOTE_GAP, REMOTE_SPAN = 256 << 10, 16 << 20
_MAX_FDS = 64  # file descriptors kept open per process (least recently used closed first)


class _OffsetView:
    """Bytes ``data`` that lie at ``base`` in a shard, sliced by shard offsets (what the tar walkers read)."""

    __slots__ = ("base", "data")

    def __init__(self, data: memoryview, base: int) -> None:
        self.data, self.base = data, base

    def __len__(self) -> int:
        return self.base + len(self.data)

    def __getitem__(self, sl: slice, /) -> memoryview:
        b = self.base
        return self.data[max(0, (sl.start or 0) - b) : max(0, (len(self) if sl.stop is None else sl.stop) - b)]


def _owner(source: Any, shard: str, owners: dict[str, Any]) -> Any:
    """The source that holds ``shard``: the source itself, or, for a ConcatSource, the part that lists it."""
    parts = getattr(source, "sources", None)
    if parts is None:
        return source
    if not owners:
        for part in parts:
            for s in part.list_shards():
                owners.setdefault(s, part)
    part = owners.get(shard, source)
    return part if part is source else _owner(part, shard, {})


def _is_remote(source: Any) -> bool:
    return bool(getattr(source, "remote", False))


class _Fetcher:
    """Reads byte ranges of shards in one process: local files by ``pread`` on kept-open descriptors, remote ones by
    ranged requests (several at once from a thread pool), in-memory sources by slicing their buffers."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.pid = os.getpid()
        self.owners: dict[str, Any] = {}
        self.fds: OrderedDict[str, _Fd] = OrderedDict()
        self.lock = threading.Lock()
        self.pool: ThreadPoolExecutor | None = None

    def owner(self, shard: str) -> Any:
        return _owner(self.source, shard, self.owners)

    def read(self, shard: str, start: int, end: int) -> memoryview:
        src = self.owner(shard)
        if isinstance(src, LocalSource):
            fd = self._fd(src, shard)  # held while it is read: an eviction cannot close it under this read
            return memoryview(os.pread(fd.fd, end - start, start))
        if isinstance(src, RangeReading):
            return memoryview(src.read_range(shard, start, end))
        if isinstance(src, Buffered):
            buf = src.buffer(shard)
            if buf is not None:
                return memoryview(buf)[start:end]
        raise RandomAccessError(
            f"ds[i] reads byte ranges of shards, and {type(src).__name__} can neither read ranges nor give a shard's "
            "buffer; copy the shards to local files (or HTTP / S3) to index them",
            shard=shard,
        )

    def _fd(self, src: LocalSource, shard: str) -> _Fd:
        with self.lock:
            got = self.fds.get(shard)
            if got is not None:
                self.fds.move_to_end(shard)
                return got
        with src.open_shard(shard) as f:  # raises ShardNotFoundError / SourceError naming the shard
            got = _Fd(os.dup(f.fileno()))
        with self.lock:
            self.fds[shard] = got
            while len(self.fds) > _MAX_FDS:
                self.fds.popitem(last=False)  # closed once no read in another thread holds it
        return got

    def read_many(self, jobs: list[tuple[str, int, int]]) -> list[memoryview]:
        """The bytes of each ``(shard, start, end)``; remote ones in parallel."""
        remote = [j for j in jobs if _is_remote(self.owner(j[0]))]
        if len(remote) < 2:
            return [self.read(*j) for j in jobs]
        if self.pool is None:
            workers = max(1, min(16, int(getattr(self.owner(remote[0][0]), "max_concurrency", 4))))
            self.pool = ThreadPoolExecutor(workers, thread_name_prefix="atdata-random-access")
        futures = [self.pool.submit(self.read, *j) for j in jobs]
        return [f.result() for f in futures]

    def close(self) -> None:
        """Let the descriptors go (each closes once no read holds it) and stop the thread pool."""
        with self.lock:
            self.fds = OrderedDict()
        pool, self.pool = self.pool, None
        if pool is not None and self.pid == os.getpid():
            pool.shutdown(wait=False)


class _Fd:
    """A file descriptor, closed when the last reference to it goes (in the process that opened it: a forked child
    leaves its parent's alone)."""

    __slots__ = ("fd", "pid")

    def __init__(self, fd: int) -> None:
        self.fd, self.pid = fd, os.getpid()

    def __del__(self) -> None:
        if self.pid == os.getpid():
            with contextlib.suppress(OSError):
                os.close(self.fd)


def _shard_index(ds: Dataset[Any], shard: str) -> ShardIndex:
    """A shard's index without reading the shard: its cached index or its sidecar (checked in O(1) locally, as for
    ``len()``), else (local shards only) one scan."""
    shared = ds._shared
    idx = shared.indexes.get(shard)
    if idx is None:
        idx = shared.sidecar(shard)
    if idx is None:
        idx = ds.shard_index(shard)
    r = ds._ranges.get(shard)
    return idx if r is None else idx.slice(*r)


class RandomAccess:
    """Where each sample of a dataset lies, and the reads that fetch samples by global index.

    Build it with :func:`random_access` (``ds[i]`` keeps one per dataset). It pickles as the locations alone.

    Raises:
        RandomAccessError: for a dataset with a ``filter()`` stage (its length is unknown), or remote shards without
            index sidecars.
    """

    def __init__(self, ds: Dataset[Any]) -> None:
        if ds.has_filter:
            raise RandomAccessError(
                "ds[i] needs the number of samples, and a filter() stage makes it unknown without reading every "
                "sample: index the dataset before filter() and apply the predicate to what you get, or write the "
                "filtered samples with atd.write_samples() and index those"
            )
        shards = ds.list_shards()
        source = ds.source
        ds.warm_sidecars()
        owners: dict[str, Any] = {}
        missing = [s for s in shards if _is_remote(_owner(source, s, owners)) and ds._sidecar(s) is None]
        if missing:
            raise RandomAccessError(
                f"ds[i] finds a sample through its shard's index sidecar (<shard>.idx.json), so as not to download "
                f"whole shards, and {len(missing)} of {len(shards)} remote shards have none (e.g. {missing[0]!r}): "
                "build them with atd.build_index(shards, write=False) (or atd.build_index() on local copies) and "
                "upload each index's to_json() as <shard>.idx.json next to its shard",
                shard=missing[0],
            )
        self.shards = shards
        self.indexes = [_shard_index(ds, s) for s in shards]
        self.starts = [0]
        for ix in self.indexes:
            self.starts.append(self.starts[-1] + ix.count)
        self.decode_type: type = ds.decode_type
        self.stages: tuple[tuple[str, Any], ...] = ds._stages
        self.source = source
        self._fetcher: _Fetcher | None = None

    def __len__(self) -> int:
        return self.starts[-1]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_fetcher"] = None  # descriptors, connections and threads are this process's: reopened lazily
        return state

    @property
    def fetcher(self) -> _Fetcher:
        f = self._fetcher
        if f is None or f.pid != os.getpid():
            f = self._fetcher = _Fetcher(self.source)
        return f

    # ------------------------------------------------------------------------------------------------ positions
    def position(self, i: Any) -> int:
        """``i`` (an int, negative from the end) as a position in ``[0, len)``."""
        n = self.starts[-1]
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise SampleIndexError(f"a sample index is an int, got {type(i).__name__} {i!r:.60}")
        j = int(i)
        if j < -n or j >= n:
            raise SampleIndexError(
                f"sample index {j} is out of range for a dataset of {n} samples (valid: {-n} to {n - 1})"
            )
        return j + n if j < 0 else j

    def positions(self, key: Any) -> np.ndarray[Any, np.dtype[np.int64]]:
        """A slice, or a sequence / array of ints, as positions in ``[0, len)``."""
        n = self.starts[-1]
        if isinstance(key, slice):
            return np.arange(*key.indices(n), dtype=np.int64)
        arr = np.asarray(key.tolist() if hasattr(key, "tolist") and not isinstance(key, np.ndarray) else key)
        if arr.size == 0:
            return np.zeros(0, np.int64)
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise SampleIndexError(
                f"ds[...] takes an int, a slice or a 1-d sequence of ints, got {arr.ndim}-d values of dtype {arr.dtype}"
            )
        pos = arr.astype(np.int64)
        bad = (pos < -n) | (pos >= n)
        if bad.any():
            j = int(pos[np.argmax(bad)])
            raise SampleIndexError(
                f"sample index {j} is out of range for a dataset of {n} samples (valid: {-n} to {n - 1})"
            )
        return np.where(pos < 0, pos + n, pos)

    # ------------------------------------------------------------------------------------------------ reads
    def get(self, i: Any) -> Any:
        """The sample at global index ``i`` (one read)."""
        pos = self.position(i)
        s = bisect.bisect_right(self.starts, pos) - 1
        ix = self.indexes[s]
        k = pos - self.starts[s]
        off, end = _span(ix, k)
        data = self.fetcher.read(self.shards[s], off, end)
        return self._sample(self._record(data, off, s, k), pos)

    def get_many(self, key: Any) -> list[Any]:
        """The samples at these global indexes (a slice, or ints), in that order; each shard's ranges sorted and
        coalesced into few reads."""
        pos = self.positions(key)
        if len(pos) == 0:
            return []
        uniq, inverse = np.unique(pos, return_inverse=True)  # sorted: by shard, then by offset
        shard_of = np.searchsorted(np.asarray(self.starts), uniq, side="right") - 1
        fetcher = self.fetcher
        runs: list[tuple[int, int, int, list[tuple[int, int, int, int]]]] = []  # (shard, lo, hi, [(k, pos, off, end)])
        ps = cast(list[int], uniq.tolist())
        ss = cast(list[int], shard_of.tolist())
        gap = span = 0
        for p, s in zip(ps, ss, strict=True):
            if not runs or runs[-1][0] != s:
                remote = _is_remote(fetcher.owner(self.shards[s]))
                gap, span = (REMOTE_GAP, REMOTE_SPAN) if remote else (LOCAL_GAP, LOCAL_SPAN)
            ix = self.indexes[s]
            k = p - self.starts[s]
            off, end = _span(ix, k)
            last = runs[-1] if runs else None
            if last is not None and last[0] == s and off - last[2] <= gap and end - last[1] <= span:
                last[3].append((k, p, off, end))
                runs[-1] = (s, last[1], max(last[2], end), last[3])
            else:
                runs.append((s, off, end, [(k, p, off, end)]))
        datas = fetcher.read_many([(self.shards[s], lo, hi) for s, lo, hi, _ in runs])
        samples: list[Any] = []
        for (s, lo, _, members), data in zip(runs, datas, strict=True):
            for k, p, off, end in members:
                piece = data[off - lo : end - lo]
                samples.append(self._sample(self._record(piece, off, s, k), p))
        return [samples[j] for j in inverse.tolist()]

    def _record(self, data: memoryview, off: int, s: int, k: int) -> Record:
        ix = self.indexes[s]
        shard, length = self.shards[s], ix.lengths[k]
        if ix.packed:
            return read_indexed(_OffsetView(data, off), shard, ix, k)
        if len(data) < length:
            raise ShardFormatError(
                f"sample {ix.keys[k]!r} lies in bytes [{off}, {off + length}) by the shard's index, but the shard "
                f"ends {length - len(data)} bytes before that: the shard is truncated or its index sidecar is stale; "
                "rebuild the sidecar with atd.build_index() (or restore the shard)",
                shard=shard,
                key=ix.keys[k],
                offset=off,
            )
        rec = read_record(_OffsetView(data, off), shard, off, length)
        if rec.key != ix.keys[k]:
            raise ShardFormatError(
                f"the shard's index says sample {ix.keys[k]!r} lies at byte {off}, but the tar holds {rec.key!r} "
                "there: the index sidecar is stale; rebuild it with atd.build_index()",
                shard=shard,
                key=ix.keys[k],
                offset=off,
            )
        return rec

    def _sample(self, rec: Record, pos: int) -> Any:
        ctx = _SAMPLE_CONTEXT
        outer, ctx.key = ctx.key, (0, 0, pos)  # sample_rng() in a stage: as in ds.ordered()'s first pass
        try:
            sample = decode_record(rec, self.decode_type)
            for _, fn in self.stages:
                sample = fn(sample)
        finally:
            ctx.key = outer
        return sample


_CACHE: weakref.WeakKeyDictionary[Any, RandomAccess] = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()


def random_access(ds: Dataset[Any]) -> RandomAccess:
    """The dataset's :class:`RandomAccess` (built once per dataset object and process; the shards' indexes are
    shared with the datasets it was derived from)."""
    with _CACHE_LOCK:
        got = _CACHE.get(ds)
    if got is None:
        got = RandomAccess(ds)
        with _CACHE_LOCK:
            _CACHE[ds] = got
    return got


def getitem(ds: Dataset[Any], key: Any) -> Any:
    """``ds[key]``: one sample for an int, a list of samples for a slice or a sequence of ints."""
    if isinstance(key, str):
        raise SampleIndexError(f"ds[...] takes sample positions; to find a sample by its key use ds.get({key!r})")
    ra = random_access(ds)
    if isinstance(key, (int, np.integer)) or (isinstance(key, np.ndarray) and key.ndim == 0):
        return ra.get(key.item() if isinstance(key, np.ndarray) else key)
    if hasattr(key, "ndim") and getattr(key, "ndim", 1) == 0:  # a 0-d tensor
        return ra.get(int(key))
    return ra.get_many(key)


class MapDataset(TorchDataset[T], Generic[T]):
    """A map-style view of a dataset (``ds.as_map()``): ``len()``, ``view[i]`` and the batched ``__getitems__``.

    Works with any torch ``Sampler`` (``RandomSampler``, ``DistributedSampler``, weighted ones) and with DataLoader
    workers: it pickles as the samples' locations; each process opens its own files and connections on first use.
    Batch with ``collate_fn=atd.collate`` (samples to a :class:`~atdata_torch.TensorBatch`).

    Example:
        >>> # from torch.utils.data import DataLoader, DistributedSampler
        >>> # view = ds.as_map()
        >>> # loader = DataLoader(view, batch_size=32, sampler=DistributedSampler(view), collate_fn=atd.collate)
    """

    def __init__(self, ds: Dataset[T]) -> None:
        self.dataset = ds
        self.access = random_access(ds)

    def __len__(self) -> int:
        return len(self.access)

    def __getitem__(self, i: int) -> T:
        return self.access.get(i)  # type: ignore[no-any-return]

    def __getitems__(self, indices: Sequence[int]) -> list[T]:
        """The samples at ``indices`` (what a DataLoader asks for one batch): coalesced reads, in that order."""
        return self.access.get_many(list(indices))

    def __repr__(self) -> str:
        return f"MapDataset({self.dataset!r}, {len(self)} samples)"


def get_by_key(ds: Any, key: str) -> Any:
    """``Dataset.get``: the sample with this key, found through the shard indexes."""
    from ._pipeline import decode_record
    from ._reader import read_indexed
    from .errors import SampleKeyError

    for shard, idx in zip(ds.list_shards(), ds.shard_indexes(), strict=True):
        if key in idx.keys:
            i = idx.keys.index(key)
            rec = read_indexed(ds._buffer(shard), shard, idx, i)
            sample = decode_record(rec, ds._decode_type)
            for kind, fn in ds._stages:
                if kind == "filter":
                    if not fn(sample):
                        raise SampleKeyError(key)
                else:
                    sample = fn(sample)
            return sample
    raise SampleKeyError(key)


def _span(ix: Any, k: int) -> tuple[int, int]:
    """The bytes to read for sample ``k`` of a shard: its record, or its pair in a packed shard."""
    if ix.packed:
        return cast(tuple[int, int], ix.pair_span(k))
    off = ix.offsets[k]
    return off, off + ix.lengths[k]
