"""``Dataset[T]``: typed samples read from WebDataset tar shards.

Example:
    >>> import numpy as np, tempfile, os
    >>> import atdata_torch as atd
    >>> @atd.packable
    ... class Sample:
    ...     x: atd.NDArray
    ...     label: int
    >>> d = tempfile.mkdtemp()
    >>> ds = atd.write_samples([Sample(x=np.full(3, i, np.float32), label=i) for i in range(10)],
    ...                        os.path.join(d, "train.tar"), maxcount=4, progress=False)
    >>> len(ds), ds.list_shards()[0].endswith("train-000000.tar")
    (10, True)
    >>> next(iter(ds.ordered(batch_size=4))).x.shape
    (4, 3)
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from torch.utils.data import IterableDataset

from ._batch import SampleBatch
from ._order import DEFAULT_BLOCK_SIZE, DEFAULT_WINDOW
from ._pipeline import LastBatch, OnError, Pipeline, decode_record
from ._reader import Buffer, read_record
from ._sidecar import ShardIndex, scan, stale_error
from ._tarheader import BLOCK, verify_headers
from .errors import AtdataError, ShardFormatError
from .lens import Lens, registry
from .schema import DictSample, PackableSample, schema_id
from .sources import DataSource, resolve_source
from .sources._base import Filling

if TYPE_CHECKING:
    from .loader import Loader

__all__ = ["Dataset"]

log = logging.getLogger("atdata_torch")

T = TypeVar("T")
V = TypeVar("V")


class _Shared:
    """State shared by a dataset and the datasets derived from it (same shards): cached shard indexes."""

    def __init__(self) -> None:
        self.indexes: dict[str, ShardIndex] = {}
        self.sidecars: dict[str, ShardIndex | None] = {}
        self.unchecked: set[str] = set()  # remote shards whose index is a sidecar not yet checked against the bytes


class _TypedDataset:
    """What ``Dataset[T]`` evaluates to at run time: calling it builds a ``Dataset`` of sample type ``T``."""

    def __init__(self, cls: type, sample_type: Any) -> None:
        self._cls = cls
        self._sample_type = sample_type

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._cls(*args, sample_type=self._sample_type, **kwargs)

    def __repr__(self) -> str:
        return f"{self._cls.__name__}[{getattr(self._sample_type, '__name__', self._sample_type)}]"


class Dataset(IterableDataset[T], Generic[T]):
    """A dataset of typed samples stored as WebDataset tar shards.

    Args:
        source: A URL or path with optional braces (``"data/train-{000000..000009}.tar"``), a list of them, or a
            :class:`~atdata_torch.sources.DataSource`. ``http(s)://`` and ``s3://`` URLs are streamed in-process.
        sample_type: The sample class; ``Dataset[T](...)`` sets it. Defaults to :class:`DictSample`.
        **source_options: For remote URLs: ``cache_dir=`` / ``cache_max_bytes=`` (a local shard cache),
            ``headers=``, ``timeout=``, ``retries=``, ``readahead=``, ``max_concurrency=``; for ``s3://``:
            ``endpoint=``, ``access_key=``, ``secret_key=``, ``region=``, ``profile=``.

    Iterating a dataset directly yields samples in shard order (``ordered()``).
    """

    def __class_getitem__(cls, item: Any) -> Any:
        return _TypedDataset(cls, item)

    def __init__(
        self,
        source: str | os.PathLike[str] | list[str] | DataSource,
        *,
        sample_type: type[T] | None = None,
        **source_options: Any,
    ) -> None:
        self.source: DataSource = resolve_source(source, **source_options)
        st: Any = DictSample if sample_type is None else sample_type
        if not (st is DictSample or (isinstance(st, type) and issubclass(st, PackableSample))):
            raise TypeError(
                f"Dataset[{getattr(st, '__name__', st)}]: the sample type must be a @packable class or DictSample"
            )
        self.sample_type: type[T] = st  # type: ignore[assignment]
        self._decode_type: type = st
        self._stages: tuple[tuple[str, Any], ...] = ()
        self._shared = _Shared()
        self._shards: list[str] | None = None
        self._ranges: dict[str, tuple[int, int]] = {}

    def _derive(self, sample_type: Any, stages: tuple[tuple[str, Any], ...], decode_type: type | None = None) -> Any:
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.sample_type = sample_type
        new._stages = stages
        if decode_type is not None:
            new._decode_type = decode_type
        return new

    # ------------------------------------------------------------------------------------------------ shards
    def list_shards(self) -> list[str]:
        """The shard identifiers, in order."""
        if self._shards is None:
            self._shards = list(self.source.list_shards())
        return self._shards

    @property
    def shard_list(self) -> list[str]:
        """Alias of :meth:`list_shards` (the original atdata's name)."""
        return self.list_shards()

    def _buffer_or_none(self, shard: str) -> Buffer | None:
        get = getattr(self.source, "buffer", None)
        return get(shard) if get is not None else None

    def _buffer(self, shard: str) -> Buffer:
        buf = self._buffer_or_none(shard)
        if buf is None:
            with self.source.open_shard(shard) as f:
                buf = f.read()
        return buf

    def _stream_buffer(self, shard: str, owner: Any = None) -> Buffer | Filling:
        """The shard for a pass: a :class:`~atdata_torch.sources.Filling` when a remote source streams it (readers
        wait for the bytes they need), else the whole buffer. ``owner``: the pass's placement, if it places bytes
        (see ``atdata_torch._placement``)."""
        get = getattr(self.source, "stream_buffer", None)
        got: Buffer | Filling | None = None
        if get is not None:
            got = get(shard, owner) if owner is not None else get(shard)
        if got is None:
            got = self._buffer(shard)
        if shard in self._shared.unchecked:
            self._check_remote(shard, got)
        return got

    def _check_remote(self, shard: str, got: Buffer | Filling) -> None:
        """Check a remote shard's sidecar index against the shard's bytes, now that a pass has them (see
        :meth:`ShardIndex.stale`; the bytes after the last sample are read by one ranged request while a streamed
        download has not reached them). A stale sidecar is forgotten (the next pass scans the shard) and the pass
        stops with a stale-sidecar :class:`ShardFormatError`: its order was laid out from the sidecar's count."""
        idx = self._shared.indexes.get(shard)
        self._shared.unchecked.discard(shard)
        if idx is None:
            return
        if len(got) < idx.size:
            return  # a shard cut short: the pass reports each sample past its end (see past_end), and reads the rest
        tail = last_header = None
        read_range = getattr(self.source, "read_range", None)
        end = idx.end
        if (
            isinstance(got, Filling)
            and got.filled < end + BLOCK
            and read_range is not None
            and len(got) == idx.size
            and end + BLOCK <= idx.size
        ):
            last = idx.offsets[-1] if idx.count else end
            if end - last <= 1 << 16:  # one small ranged read: the last sample's header and the marker after it
                got_tail = bytes(read_range(shard, last, end + BLOCK))
                tail, last_header = got_tail[-BLOCK:], (got_tail[:BLOCK] if idx.count else None)
            else:
                tail = bytes(read_range(shard, end, end + BLOCK))
        why = idx.stale(got, tail, last_header)
        if why is None:
            return
        del self._shared.indexes[shard]
        self._shared.sidecars[shard] = None
        raise stale_error(
            shard,
            f"{why}; the pass stops here, as its order was laid out from the sidecar; the next pass scans the shard",
        )

    def _warm_sidecars(self) -> None:
        """Let a remote source fetch the sidecars not read yet all at once (see ``RemoteSource.read_sidecars``)."""
        warm = getattr(self.source, "read_sidecars", None)
        if warm is not None:
            known = self._shared.indexes
            warm([s for s in self.list_shards() if s not in known and s not in self._shared.sidecars])

    def _sidecar(self, shard: str) -> ShardIndex | None:
        """The shard's index sidecar, validated against its schema (see :meth:`ShardIndex.from_json`), and, for a
        shard whose bytes are at hand (not remote), against the shard (O(1), see :meth:`ShardIndex.stale`): a
        stale sidecar is logged and reads as absent, so that the shard is scanned instead. ``None``: no usable
        sidecar."""
        cache = self._shared.sidecars
        if shard not in cache:
            read = getattr(self.source, "read_sidecar", None)
            raw = read(shard) if read is not None else None
            idx = ShardIndex.from_json(raw, shard) if raw is not None else None
            if idx is not None and not getattr(self.source, "remote", False):
                try:
                    buf = self._buffer_or_none(shard)
                except AtdataError:
                    buf = None  # an unreadable shard raises when it is read
                if buf is not None and not self._current(idx, buf, shard):
                    idx = None
            cache[shard] = idx
        return cache[shard]

    @staticmethod
    def _current(idx: ShardIndex, buf: Buffer, shard: str, headers: bool = False) -> bool:
        """Whether a sidecar describes ``buf`` (O(1); with ``headers``, also every payload's tar header, in one
        vectorized pass); logs a warning when it does not."""
        why = idx.stale(buf)
        if why is None and headers and idx.payload_offsets is not None and idx.payload_sizes is not None:
            try:
                verify_headers(buf, [o - BLOCK for o in idx.payload_offsets], idx.payload_sizes, shard)
            except ShardFormatError as exc:
                why = exc.message
        if why is None:
            return True
        log.warning(
            "atdata_torch: the index sidecar of %s is stale (%s); the shard is scanned instead; rebuild the "
            "sidecar with atd.build_index()",
            shard,
            why,
        )
        return False

    def shard_index(self, shard: str, buf: Buffer | None = None) -> ShardIndex:
        """The index of one shard: from its sidecar when present and current, else built by one scan (cached).

        A sidecar is checked against the shard once per process before it is trusted: its size, that the tar
        ends right after its last sample, and every header it points at (one vectorized pass). A stale one is
        logged and the index rebuilt by a scan. A remote shard is not downloaded for this: its sidecar is checked
        when a pass first opens the shard (see :meth:`_stream_buffer`).
        """
        cached = self._shared.indexes.get(shard)
        if cached is not None:
            return cached
        idx = self._sidecar(shard)
        if idx is not None and idx.count and buf is None and getattr(self.source, "remote", False):
            # A remote shard is not downloaded just to check its sidecar: the pass that reads it checks it (the
            # cache also verifies the sidecar's sha256; decoding checks every payload). A sidecar of no samples is
            # checked now: no pass would open its shard.
            self._shared.indexes[shard] = idx
            self._shared.unchecked.add(shard)
            return idx
        if buf is None:
            buf = self._buffer(shard)
        if idx is None or not self._current(idx, buf, shard, headers=True):
            idx = scan(buf, shard)
        self._shared.indexes[shard] = idx
        self._shared.unchecked.discard(shard)
        return idx

    def salvage_index(self, shard: str) -> tuple[ShardIndex, AtdataError | None]:
        """The index of a shard's intact samples, and the error that stopped a full read (``None`` if none).

        Used by ``on_error="skip"`` / ``"warn"``: a truncated or damaged shard still gives the samples before the
        damage. A missing or unreachable shard raises: it is a configuration problem, not bad data.
        """
        try:
            return self._ranged(shard, self.shard_index(shard)), None
        except ShardFormatError as exc:
            first: AtdataError = exc
        buf = self._buffer(shard)  # a missing or unreachable shard is never skipped: it raises
        errors: list[ShardFormatError] = []
        idx = scan(buf, shard, salvage=errors)
        return self._ranged(shard, idx), errors[0] if errors else first

    def shard_indexes(self) -> list[ShardIndex]:
        """The index of every shard this dataset reads (restricted to its sample ranges, see
        :meth:`select_range`)."""
        self._warm_sidecars()
        return [self._ranged(s, self.shard_index(s)) for s in self.list_shards()]

    def _ranged(self, shard: str, idx: ShardIndex) -> ShardIndex:
        r = self._ranges.get(shard)
        return idx if r is None else idx.slice(*r)

    def _count(self) -> int:
        self._warm_sidecars()
        total = 0
        for shard in self.list_shards():
            cached = self._shared.indexes.get(shard)
            if cached is None:
                side = self._sidecar(shard)
                cached = side if side is not None else self.shard_index(shard)
            r = self._ranges.get(shard)
            total += cached.count if r is None else max(0, min(cached.count, r[1]) - r[0])
        return total

    def select_range(self, start: int, stop: int) -> Dataset[T]:
        """The samples ``[start, stop)`` of the dataset in its shard order (what ``train[:10%]`` selects).

        Example:
            >>> # first_hundred = ds.select_range(0, 100)
        """
        idxs = self.shard_indexes()
        shards: list[str] = []
        ranges: dict[str, tuple[int, int]] = {}
        base = 0
        for shard, idx in zip(self.list_shards(), idxs, strict=True):
            lo, hi = max(start - base, 0), min(stop - base, idx.count)
            if lo < hi:
                r0 = self._ranges.get(shard, (0, 0))[0]
                shards.append(shard)
                ranges[shard] = (r0 + lo, r0 + hi)
            base += idx.count
        new = self._derive(self.sample_type, self._stages)
        new._shards = shards
        new._ranges = ranges
        return new  # type: ignore[no-any-return]

    @classmethod
    def concat(cls, parts: list[Dataset[Any]]) -> Dataset[Any]:
        """One dataset reading ``parts`` one after the other (same sample type and stages).

        Example:
            >>> # both = atd.Dataset.concat([train, validation])
        """
        if not parts:
            raise ValueError("concat() needs at least one dataset")
        first = parts[0]
        for p in parts[1:]:
            if p.sample_type is not first.sample_type or p._stages != first._stages:
                raise TypeError("concat() needs datasets of the same sample type and the same map/filter stages")
        from .sources import ConcatSource

        new = first._derive(first.sample_type, first._stages)
        new.source = ConcatSource([p.source for p in parts])
        new._shards = [s for p in parts for s in p.list_shards()]
        if len(set(new._shards)) != len(new._shards):
            raise ValueError("concat() got the same shard twice; select disjoint parts")
        new._ranges = {k: v for p in parts for k, v in p._ranges.items()}
        shared = _Shared()
        for p in parts:
            shared.indexes.update(p._shared.indexes)
            shared.sidecars.update(p._shared.sidecars)
            shared.unchecked.update(p._shared.unchecked)
        new._shared = shared
        return new  # type: ignore[no-any-return]

    @property
    def _has_filter(self) -> bool:
        """Whether a filter() stage makes the sample count unknowable without reading."""
        return any(kind == "filter" for kind, _ in self._stages)

    def _known_len(self) -> int | None:
        return None if self._has_filter else self._count()

    def __len__(self) -> int:
        """The number of samples: from the sidecars, or one scan of each shard (cached)."""
        n = self._known_len()
        if n is None:
            raise TypeError("len() is unknown after filter(); count with sum(1 for _ in ds)")
        return n

    # ------------------------------------------------------------------------------------------------ iteration
    @overload
    def ordered(
        self,
        batch_size: None = None,
        *,
        drop_last: bool | None = None,
        last_batch: LastBatch | None = None,
        on_error: OnError = "raise",
        rank: int | None = None,
        world_size: int | None = None,
    ) -> Pipeline[T]: ...

    @overload
    def ordered(
        self,
        batch_size: int,
        *,
        drop_last: bool | None = None,
        last_batch: LastBatch | None = None,
        on_error: OnError = "raise",
        rank: int | None = None,
        world_size: int | None = None,
    ) -> Pipeline[SampleBatch[T]]: ...

    def ordered(
        self,
        batch_size: int | None = None,
        *,
        drop_last: bool | None = None,
        last_batch: LastBatch | None = None,
        on_error: OnError = "raise",
        rank: int | None = None,
        world_size: int | None = None,
    ) -> Pipeline[Any]:
        """Iterate in shard order, then tar order (on several ranks: each rank its slice of every global step).

        Args:
            batch_size: ``None`` yields samples; an int yields :class:`SampleBatch` es of that size (per rank).
            drop_last: Drop the last partial batch (kept by default; on several ranks it is padded instead, so
                that every rank runs the same number of steps).
            last_batch: ``"exact"``, ``"drop"`` or ``"pad"``; overrides ``drop_last`` (see :class:`Pipeline`).
            on_error: ``"raise"`` (default), or ``"skip"`` / ``"warn"`` to skip undecodable samples and report
                how many at the end of the epoch.
            rank: This process's rank (``None``: torch.distributed, then the ``RANK`` environment, else 0).
            world_size: Number of ranks (``None``: detected likewise, else 1).
        """
        return Pipeline(
            self,
            batch_size=batch_size,
            shuffle=False,
            drop_last=drop_last,
            last_batch=last_batch,
            on_error=on_error,
            rank=rank,
            world_size=world_size,
        )

    @overload
    def shuffled(
        self,
        batch_size: None = None,
        *,
        seed: int = 0,
        drop_last: bool | None = None,
        last_batch: LastBatch | None = None,
        on_error: OnError = "raise",
        block_size: int = DEFAULT_BLOCK_SIZE,
        window: int = DEFAULT_WINDOW,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> Pipeline[T]: ...

    @overload
    def shuffled(
        self,
        batch_size: int,
        *,
        seed: int = 0,
        drop_last: bool | None = None,
        last_batch: LastBatch | None = None,
        on_error: OnError = "raise",
        block_size: int = DEFAULT_BLOCK_SIZE,
        window: int = DEFAULT_WINDOW,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> Pipeline[SampleBatch[T]]: ...

    def shuffled(
        self,
        batch_size: int | None = None,
        *,
        seed: int = 0,
        drop_last: bool | None = None,
        last_batch: LastBatch | None = None,
        on_error: OnError = "raise",
        block_size: int = DEFAULT_BLOCK_SIZE,
        window: int = DEFAULT_WINDOW,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> Pipeline[Any]:
        """Iterate in a shuffled order that is a pure function of ``(seed, epoch)``.

        Blocks of ``block_size`` consecutive samples are permuted across the dataset, then samples are permuted
        inside windows of ``window`` blocks. Each pass over the returned pipeline advances the epoch (a new
        permutation); ``set_epoch(e)`` picks one. Ranks and workers only choose their slice of that order.
        Other arguments as in :meth:`ordered`.
        """
        return Pipeline(
            self,
            batch_size=batch_size,
            shuffle=True,
            seed=seed,
            drop_last=drop_last,
            last_batch=last_batch,
            on_error=on_error,
            block_size=block_size,
            window=window,
            rank=rank,
            world_size=world_size,
        )

    def loader(
        self,
        batch_size: int = 64,
        *,
        shuffle: bool = True,
        seed: int = 0,
        num_workers: int = 0,
        drop_last: bool | None = None,
        last_batch: LastBatch | None = None,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        on_error: OnError = "raise",
        block_size: int = DEFAULT_BLOCK_SIZE,
        window: int = DEFAULT_WINDOW,
        **kwargs: Any,
    ) -> Loader:
        """A ready ``StatefulDataLoader`` yielding :class:`~atdata_torch.TensorBatch` es of ``batch_size`` per rank.

        Every rank yields the same number of batches (``len(loader)``, exact) unless ``last_batch="exact"``; the
        order is a pure function of (seed, epoch); ``state_dict()`` / ``load_state_dict()`` resume mid-epoch on
        any number of ranks and workers. ``rank`` / ``world_size`` override detection (one process can play any
        rank). Other keyword arguments go to ``StatefulDataLoader`` (``prefetch_factor``,
        ``multiprocessing_context``, ``timeout``, ``collate_fn``...).

        Example:
            >>> # for batch in ds.loader(batch_size=64, num_workers=2): loss = model(batch.image) ...
        """
        from .loader import Loader

        pipe: Pipeline[Any] = Pipeline(
            self,
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
            last_batch=last_batch,
            on_error=on_error,
            block_size=block_size,
            window=window,
            rank=rank,
            world_size=world_size,
        )
        return Loader(
            pipe, num_workers=num_workers, pin_memory=pin_memory, persistent_workers=persistent_workers, **kwargs
        )

    def __iter__(self) -> Iterator[T]:
        return iter(self.ordered())

    # ------------------------------------------------------------------------------------------------ transforms
    def as_type(self, view: type[V]) -> Dataset[V]:
        """View the samples as another type, through the lens registry (multi-hop paths included).

        On a ``Dataset[DictSample]`` with no stages, the shards decode straight into ``view``.

        Raises:
            LensNotFoundError: when no chain of registered lenses converts the current type to ``view``.
        """
        current: Any = self.sample_type
        if current is view:
            return self  # type: ignore[return-value]
        if not self._stages and current is DictSample and issubclass(view, PackableSample):
            return self._derive(view, (), decode_type=view)  # type: ignore[no-any-return]
        lens_: Lens[Any, V] = registry.find(current, view)
        return self._derive(view, (*self._stages, ("lens", lens_.get)))  # type: ignore[no-any-return]

    def map(self, fn: Callable[[T], V]) -> Dataset[V]:
        """Apply ``fn`` to every sample (lazily, inside iteration; batching happens after it)."""
        return self._derive(Any, (*self._stages, ("map", fn)))  # type: ignore[no-any-return]

    def filter(self, predicate: Callable[[T], bool]) -> Dataset[T]:
        """Keep the samples for which ``predicate`` is true (lazily; batching happens after it)."""
        return self._derive(self.sample_type, (*self._stages, ("filter", predicate)))  # type: ignore[no-any-return]

    # ------------------------------------------------------------------------------------------------ inspection
    def head(self, n: int = 5) -> list[T]:
        """The first ``n`` samples in order."""
        return list(itertools.islice(self.ordered(), n))

    def get(self, key: str) -> T:
        """The sample with this key (uses the shard indexes; raises ``KeyError`` if absent)."""
        for shard, idx in zip(self.list_shards(), self.shard_indexes(), strict=True):
            if key in idx.keys:
                i = idx.keys.index(key)
                rec = read_record(self._buffer(shard), shard, idx.offsets[i], idx.lengths[i])
                sample = decode_record(rec, self._decode_type)
                for kind, fn in self._stages:
                    if kind == "filter":
                        if not fn(sample):
                            raise KeyError(key)
                    else:
                        sample = fn(sample)
                return sample  # type: ignore[no-any-return]
        raise KeyError(key)

    def describe(self) -> dict[str, Any]:
        """A summary: sample type and fields, shards, samples and bytes (when known without reading data)."""
        st = self.sample_type
        fields: list[dict[str, Any]] | None = None
        if isinstance(st, type) and issubclass(st, PackableSample):
            fields = [f.describe() for f in st.__atdata_fields__]
        shards = self.list_shards()
        sidecars = [self._sidecar(s) for s in shards]
        known = all(s is not None for s in sidecars)
        return {
            "sample_type": getattr(st, "__name__", str(st)),
            "schema_id": schema_id(st) if isinstance(st, type) else None,
            "fields": fields,
            "shards": len(shards),
            "samples": sum(s.count for s in sidecars if s is not None) if known else None,
            "bytes": sum(s.size for s in sidecars if s is not None) if known else None,
            "stages": [kind for kind, _ in self._stages],
            "source": repr(self.source),
        }

    def __repr__(self) -> str:
        st = getattr(self.sample_type, "__name__", str(self.sample_type))
        stages = "".join(f".{k}(...)" for k, _ in self._stages)
        return f"Dataset[{st}]({self.source!r}){stages}"
