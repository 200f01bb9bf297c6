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

import importlib
import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from torch.utils.data import IterableDataset

from ._batch import SampleBatch
from ._dataset_compat import DatasetCompat
from ._epoch import OrdersEpochs  # issue 18
from ._indexing import ShardIndexes
from ._order import DEFAULT_BLOCK_SIZE, DEFAULT_WINDOW, buffer_window, fresh_seed
from ._pipeline import Pipeline
from ._random_access import MapDataset, getitem
from ._reader import Buffer
from ._sidecar import ShardIndex, scan
from .errors import AtdataError, MixtureError, ShardFormatError
from .lens import Lens, registry
from .options import LastBatch, OnError, OrderKeywords, ReadOptions, ShuffleKeywords
from .schema import DictSample, PackableSample
from .sources import DataSource, resolve_source
from .sources._base import Filling

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .loader import Loader
    from .manifest import SampleLocation

__all__ = ["Dataset"]

T = TypeVar("T")
V = TypeVar("V")


class _TypedDataset:
    """What ``Dataset[T]`` evaluates to at run time: calling it builds a ``Dataset`` of sample type ``T``."""

    def __init__(self, cls: type, sample_type: Any) -> None:
        self._cls = cls
        self._sample_type = sample_type

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._cls(*args, sample_type=self._sample_type, **kwargs)

    def __repr__(self) -> str:
        return f"{self._cls.__name__}[{getattr(self._sample_type, '__name__', self._sample_type)}]"


class Dataset(IterableDataset[T], DatasetCompat[T], Generic[T]):
    """A dataset of typed samples stored as WebDataset tar shards.

    Args:
        source: A URL or path with optional braces (``"data/train-{000000..000009}.tar"``), a list of them, or a
            :class:`~atdata_torch.sources.DataSource`. ``http(s)://`` and ``s3://`` URLs are streamed in-process.
        metadata_url: A msgpack map of dataset metadata, fetched on first use of :attr:`metadata`.
        url: The original atdata's older name of ``source``.
        sample_type: The sample class; ``Dataset[T](...)`` sets it. Defaults to :class:`DictSample`.
        **source_options: For remote URLs: ``cache_dir=`` / ``cache_max_bytes=`` (a local shard cache),
            ``headers=``, ``timeout=``, ``retries=``, ``readahead=``, ``max_concurrency=``; for ``s3://``:
            ``endpoint=``, ``access_key=``, ``secret_key=``, ``region=``, ``profile=``.

    Iterating a dataset directly yields samples in shard order (``ordered()``). The original atdata's members
    (``url``, ``metadata``, ``schema``, ``select()``, ``to_pandas()``, ``process_shards()``...) come from
    ``_dataset_compat.DatasetCompat``.
    """

    def __class_getitem__(cls, item: Any) -> Any:
        return _TypedDataset(cls, item)

    def __init__(
        self,
        source: str | os.PathLike[str] | list[str] | DataSource | None = None,
        metadata_url: str | None = None,
        *,
        url: str | None = None,
        sample_type: type[T] | None = None,
        **source_options: Any,
    ) -> None:
        spec = self._compat_init(source, metadata_url, url, source_options)  # url=, metadata_url= (_dataset_compat)
        self.source: DataSource = resolve_source(spec, **source_options)
        st: Any = DictSample if sample_type is None else sample_type
        if not (st is DictSample or (isinstance(st, type) and issubclass(st, PackableSample))):
            raise TypeError(
                f"Dataset[{getattr(st, '__name__', st)}]: the sample type must be a @packable class or DictSample"
            )
        self.sample_type: type[T] = st  # type: ignore[assignment]
        self._decode_type: type = st
        self._stages: tuple[tuple[str, Any], ...] = ()
        self._shared = ShardIndexes(self.source)
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
        return self._shared.buffer_or_none(shard)

    def _buffer(self, shard: str) -> Buffer:
        return self._shared.buffer(shard)

    def stream_buffer(self, shard: str, owner: Any = None) -> Buffer | Filling:
        """The shard for a pass: a :class:`~atdata_torch.sources.Filling` when a remote source streams it (readers
        wait for the bytes they need), else the whole buffer. ``owner``: the pass's placement, if it places bytes
        (see ``atdata_torch._placement``)."""
        return self._shared.stream_buffer(shard, owner)

    def warm_sidecars(self) -> None:
        """Let a remote source fetch the sidecars not read yet all at once (see ``RemoteSource.read_sidecars``)."""
        self._shared.warm(self.list_shards())

    def _sidecar(self, shard: str) -> ShardIndex | None:
        return self._shared.sidecar(shard)

    def shard_index(self, shard: str, buf: Buffer | None = None) -> ShardIndex:
        """The index of one shard: from its sidecar when present and current, else built by one scan (cached).

        A sidecar is checked against the shard once per process before it is trusted: its size, that the tar
        ends right after its last sample, and every header it points at (one vectorized pass). A stale one is
        logged and the index rebuilt by a scan. A remote shard is not downloaded for this: its sidecar is checked
        when a pass first opens the shard (see :meth:`stream_buffer`).
        """
        return self._shared.shard_index(shard, buf)

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
        self.warm_sidecars()
        # (deferred: a local sidecar's headers are checked when a pass opens its shard, see check_opened)
        return [self._ranged(s, self._shared.shard_index(s, defer=s not in self._ranges)) for s in self.list_shards()]

    def check_opened(self, shard: str, got: Buffer | Filling, idx: ShardIndex) -> ShardIndex | None:
        """A pass opened ``shard`` with its order laid out from ``idx``: check a deferred sidecar (see
        ``ShardIndexes.check_opened``; the index the pass goes on with, when it changed)."""
        return self._shared.check_opened(shard, got, idx)

    def _ranged(self, shard: str, idx: ShardIndex) -> ShardIndex:
        r = self._ranges.get(shard)
        return idx if r is None else idx.slice(*r)

    def sample_count(self) -> int:
        """The number of samples, filters aside: from the sidecars, or one scan of each shard (cached)."""
        self.warm_sidecars()
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
        if any(isinstance(p, OrdersEpochs) for p in parts):  # issue 18: a mixture lays out its own epochs
            raise MixtureError("concat() of a mixture: mix the sources instead (atd.mix([*mixture.parts, other]))")
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
        shared = ShardIndexes(new.source)
        for p in parts:
            shared.indexes.update(p._shared.indexes)
            shared.sidecars.update(p._shared.sidecars)
            shared.unchecked.update(p._shared.unchecked)
        new._shared = shared
        return new  # type: ignore[no-any-return]

    @property
    def decode_type(self) -> type:
        """The type the shards' records decode into (before the ``map()`` / lens stages)."""
        return self._decode_type

    @property
    def has_filter(self) -> bool:
        """Whether a filter() stage makes the sample count unknowable without reading."""
        return any(kind == "filter" for kind, _ in self._stages)

    def _known_len(self) -> int | None:
        return None if self.has_filter else self.sample_count()

    def __len__(self) -> int:
        """The number of samples: from the sidecars, or one scan of each shard (cached)."""
        n = self._known_len()
        if n is None:
            raise TypeError("len() is unknown after filter(); count with sum(1 for _ in ds)")
        return n

    # ------------------------------------------------------------------------------------------------ random access, HF
    @overload
    def __getitem__(self, key: int) -> T: ...

    @overload
    def __getitem__(self, key: slice | Sequence[int]) -> list[T]: ...

    def __getitem__(self, key: Any) -> Any:
        """``ds[i]`` (negative from the end), ``ds[i:j]``, ``ds[[i, j, ...]]``: by global index across the shards, one
        ranged read per sample, nearby ones coalesced (see ``atdata_torch._random_access``)."""
        return getitem(self, key)

    def as_map(self) -> MapDataset[T]:
        """A map-style ``torch.utils.data.Dataset`` over these samples, for any torch ``Sampler`` (see
        :class:`~atdata_torch.MapDataset`)."""
        return MapDataset(self)

    @classmethod
    def from_hf(cls, hf_dataset: Any, sample_type: type[V], path: str | os.PathLike[str], **kw: Any) -> Dataset[V]:
        """Write a Hugging Face ``datasets.Dataset`` as shards at ``path`` (see ``atdata_torch.integrations.hf``)."""
        # Looked up by name: the integration writes shards (writer -> dataset: an import cycle otherwise).
        hf = importlib.import_module("atdata_torch.integrations.hf")
        return hf.from_hf(hf_dataset, sample_type, path, **kw)  # type: ignore[no-any-return]

    def to_hf(self, limit: int | None = None) -> Any:
        """These samples as a Hugging Face ``datasets.Dataset`` (see ``atdata_torch.integrations.hf``)."""
        return importlib.import_module("atdata_torch.integrations.hf").to_hf(self, limit)

    # ------------------------------------------------------------------------------------------------ iteration
    @overload
    def ordered(self, batch_size: None = None, **kw: Unpack[OrderKeywords]) -> Pipeline[T]: ...

    @overload
    def ordered(self, batch_size: int, **kw: Unpack[OrderKeywords]) -> Pipeline[SampleBatch[T]]: ...

    def ordered(self, batch_size: int | None = None, **kw: Unpack[OrderKeywords]) -> Pipeline[Any]:
        """Iterate in shard order, then tar order (on several ranks: each rank its slice of every global step).

        Args:
            batch_size: ``None`` yields samples; an int yields :class:`SampleBatch` es of that size (per rank).
            **kw: ``drop_last``: drop the last partial batch (kept by default; on several ranks it is padded
                instead, so that every rank runs the same number of steps); ``last_batch``: ``"exact"``, ``"drop"``
                or ``"pad"``, overrides ``drop_last`` (see :class:`Pipeline`); ``on_error``: ``"raise"``
                (default), or ``"skip"`` / ``"warn"`` to skip undecodable samples and report how many at the end of
                the epoch; ``rank``: this process's rank (``None``: torch.distributed, then the ``RANK``
                environment, else 0); ``world_size``: number of ranks (``None``: detected likewise, else 1). See
                :class:`~atdata_torch.options.ReadOptions`.
        """
        return Pipeline(self, ReadOptions(batch_size=batch_size, shuffle=False, **kw))

    @overload
    def shuffled(
        self,
        batch_size: None = None,
        *,
        buffer_shards: int | None = None,
        buffer_samples: int | None = None,
        **kw: Unpack[ShuffleKeywords],
    ) -> Pipeline[T]: ...

    @overload
    def shuffled(
        self,
        batch_size: int,
        *,
        buffer_shards: int | None = None,
        buffer_samples: int | None = None,
        **kw: Unpack[ShuffleKeywords],
    ) -> Pipeline[SampleBatch[T]]: ...

    def shuffled(
        self,
        batch_size: int | None = None,
        *,
        buffer_shards: int | None = None,
        buffer_samples: int | None = None,
        **kw: Unpack[ShuffleKeywords],
    ) -> Pipeline[Any]:
        """Iterate in a shuffled order that is a pure function of ``(seed, epoch)``.

        Blocks of ``block_size`` consecutive samples are permuted across the dataset, then samples are permuted
        inside windows of ``window`` blocks. Each pass over the returned pipeline advances the epoch (a new
        permutation); ``set_epoch(e)`` picks one. Ranks and workers only choose their slice of that order.
        Keywords: ``seed``, ``block_size``, ``window``, and the others of :meth:`ordered`. Without ``seed``, each call
        draws a fresh one (a new order per call, as in the original atdata; ``pipe.seed`` tells which, for a rerun).
        The original's ``buffer_samples`` sets ``window`` (samples mix within about that many); ``buffer_shards`` is
        accepted and needs nothing: blocks are permuted across all shards.
        """
        if "seed" not in kw:
            kw["seed"] = fresh_seed()
        if buffer_samples is not None or buffer_shards is not None:
            window = buffer_window(buffer_shards, buffer_samples, kw.get("block_size", DEFAULT_BLOCK_SIZE))
            if window is not None and "window" not in kw:
                kw["window"] = window
        return Pipeline(self, ReadOptions(batch_size=batch_size, shuffle=True, **kw))

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

        options = ReadOptions(
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
        pipe: Pipeline[Any] = Pipeline(self, options)
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
        """The sample with this key (from the shard indexes); raises :class:`SampleKeyError` (a ``KeyError``)."""
        from ._random_access import get_by_key

        return get_by_key(self, key)  # type: ignore[no-any-return]

    # ------------------------------------------------------------------------------------------------ arrow (issue 18)
    def to_arrow(self, limit: int | None = None, *, batch_size: int = 1024) -> Any:
        """The samples in order (the first ``limit``, or all) as one ``pyarrow.Table`` (the ``arrow`` extra).

        NDArray fields become fixed-shape tensor columns (ragged ones ``struct<data, shape>``), other fields plain
        columns; see ``atdata_torch._arrow``. ``SampleBatch.to_arrow()`` converts one batch.
        """
        from ._arrow import dataset_to_arrow

        return dataset_to_arrow(self, limit, batch_size)

    # ------------------------------------------------------------------------------------------------ manifests (c17m)
    @property
    def fields(self) -> Any:
        """One :class:`~atdata_torch.manifest.FieldProxy` per manifest field of the sample type, for
        :meth:`query` (``Q = ds.fields; ds.query(where=Q.score > 0.9)``)."""
        from .manifest import query_fields

        return query_fields(self.sample_type)

    def query(self, where: Any) -> list[SampleLocation]:
        """The locations (shard, key, offset) of the samples ``where`` selects, read from the manifests beside the
        shards (``write_samples(..., manifest=True)``) without opening a shard; see :mod:`atdata_torch.manifest`.

        Raises:
            ManifestNotFoundError: when a shard has no manifest (the message names it and the fix).
        """
        from .manifest import query_shards

        return query_shards(self.list_shards(), where, self.source)  # remote manifests through the source

    def __repr__(self) -> str:
        st = getattr(self.sample_type, "__name__", str(self.sample_type))
        stages = "".join(f".{k}(...)" for k, _ in self._stages)
        return f"Dataset[{st}]({self.source!r}){stages}"
