"""One epoch's records: the global order of an epoch -> this process's slice -> the records at its positions.

The order of an epoch is a pure function of (seed, epoch, dataset) (see ``_order``). A global step takes the next
``batch_size * world_size`` positions of that sequence; rank ``r`` reads the ``r``-th block of ``batch_size`` of
them, and DataLoader worker ``w`` of ``n`` produces the rank's batches ``w, w + n, ...``. The slicing lives here
once (:meth:`EpochReader.groups`); ``Pipeline``, ``nodes.source`` and the ``Loader`` are front-ends over it.

An :class:`EpochReader` reads a :class:`ReadPlan` (what a ``Dataset`` offers: shards, their indexes and a way to
open them) with a :class:`~atdata_torch.options.ReadOptions`; :meth:`EpochReader.begin` opens one pass
(:class:`EpochPass`), which reads the records of each group of positions, places array bytes straight into batch
rows where it can (see ``atdata_torch._placement``) and keeps few shards mapped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from ._order import iter_epoch_order
from ._placement import Placement, learn
from ._reader import Buffer, Record, read_record
from ._topology import Topology
from .errors import AtdataError, ShardFormatError
from .sources._base import Filling, past_end
from .sources._capabilities import Prefetching, RangeReading, Routing

if TYPE_CHECKING:
    from ._sidecar import ShardIndex
    from .options import LastBatch, ReadOptions

__all__ = ["CHUNK", "EpochPass", "EpochReader", "Note", "OrdersEpochs", "ReadPlan"]

CHUNK = 512  # an unbatched pass reads this many records at a time
_DAMAGE = np.zeros(0, np.int64)  # the last group of a pass that ends at a damaged shard: reading it raises


#: Records a skipped error: ``note(exc, shard=...)`` (``shard`` for an unreadable shard, else one sample lost).
Note = Callable[..., None]


class ReadPlan(Protocol):
    """What an epoch reads (a :class:`~atdata_torch.Dataset` is one): shards, their indexes, a way to open them."""

    @property
    def source(self) -> Any:
        """The shard source (its capabilities, see ``atdata_torch.sources._capabilities``, are asked for)."""

    @property
    def decode_type(self) -> type:
        """The type records decode into (its NDArray fields can be placed)."""

    def list_shards(self) -> list[str]:
        """The shards, in order."""

    def shard_indexes(self) -> list[ShardIndex]:
        """Every shard's index (raises for a damaged shard)."""

    def salvage_index(self, shard: str) -> tuple[ShardIndex, AtdataError | None]:
        """A shard's intact samples, and the error that stopped a full read."""

    def warm_sidecars(self) -> None:
        """Fetch the index sidecars not read yet, all at once where the source can."""

    def sample_count(self) -> int:
        """The number of samples (from the sidecars where they are at hand)."""

    def stream_buffer(self, shard: str, owner: Any = None) -> Buffer | Filling:
        """A shard's bytes for a pass (a :class:`Filling` while a download streams in)."""


# ---- issue 18: a plan that lays out its own epochs (a weighted mixture, atdata_torch.mixture) ----
@runtime_checkable
class OrdersEpochs(Protocol):
    """A :class:`ReadPlan` whose epochs are not its shards' order but a sequence it lays out itself (a weighted
    mixture: ``atdata_torch.mixture``). The reader slices, reads and resumes it like any order. Its passes may
    read a shard's samples more than once and out of order (no forward-only reads), and keep
    :meth:`open_shards` shards mapped."""

    def epoch_length(self, counts: list[int]) -> int:
        """Positions of an epoch, given every shard's sample count (the same for every seed and epoch)."""

    def epoch_sequence(
        self, counts: list[int], epoch: int, options: ReadOptions
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """The global sequence of ``epoch``: ``(shard_index, sample_index)`` arrays, one entry per position."""

    def open_shards(self, options: ReadOptions) -> int:
        """How many shards a pass keeps mapped."""

    def order_settings(self) -> dict[str, Any]:
        """What the order depends on besides shards, counts and read options (for the resume fingerprint)."""

    def label_rows(self, recs: list[Record], shard_of: NDArray[np.int64], lossy: bool) -> tuple[list[Record], Any]:
        """Before a batch is decoded: per-record labels from the shards read (``None``: no labels), and the records
        to decode (when ``lossy``, a filter or a skip may drop rows: their keys then remember their rows)."""

    def label_batch(self, batch: Any, labels: Any, lossy: bool) -> None:
        """After: add the labels of the rows that made it into the batch as a column."""


# ---- end issue 18 ----


class EpochReader:
    """Reads the records of one process's slice of an epoch.

    Args:
        plan: What is read (a dataset).
        options: The read settings (order, batch size, last batch, ``on_error``).
        note: Records what ``on_error="skip"`` / ``"warn"`` skips (see :data:`Note`).
        placed_record: Builds the record of a sample whose array bytes went to its batch row (the decoder's
            counterpart of placement: ``(placement, router, range, view, shard, index, i) -> (record, whole)``).
    """

    def __init__(
        self, plan: ReadPlan, options: ReadOptions, note: Note, placed_record: Callable[..., tuple[Record, bool]]
    ) -> None:
        self.plan = plan
        # issue 18: a plan that lays out its own epochs (a mixture), checked once (a Protocol isinstance costs ~10 us)
        self.mixture: OrdersEpochs | None = plan if isinstance(plan, OrdersEpochs) else None
        self.options = options
        self.note = note
        self.placed_record = placed_record
        self._order_cache: tuple[int, np.ndarray, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_order_cache"] = None
        return state

    # ------------------------------------------------------------------------------------------------ sizes
    def indexes(self, report: Any = None) -> list[Any]:
        """Every shard's index; under ``on_error="skip"/"warn"`` a damaged shard contributes its intact samples
        (the error noted to ``report``, when given)."""
        plan = self.plan
        if self.options.on_error == "raise":
            return plan.shard_indexes()
        out = []
        plan.warm_sidecars()
        for shard in plan.list_shards():
            idx, err = plan.salvage_index(shard)
            if err is not None and report is not None:
                self.note(report, err, shard=shard)
            out.append(idx)
        return out

    def total(self) -> int:
        """The samples of an epoch (under ``on_error="skip"/"warn"``: the intact ones)."""
        if self.mixture is not None:  # issue 18: a mixture's epoch is its schedule's length
            return self.mixture.epoch_length([ix.count for ix in self.indexes()])
        if self.options.on_error == "raise":
            return self.plan.sample_count()
        return sum(ix.count for ix in self.indexes())

    def count_for_rank(self, n: int, start: int, rank: int, world_size: int) -> int:
        """Items (batches, or samples when unbatched) that ``rank`` yields for an epoch of ``n`` samples."""
        rem = max(n - start, 0)
        if rem == 0:
            return 0
        b = self.options.batch_size or 1
        g = b * world_size
        policy = self.options.last_batch_for(world_size)
        if policy == "drop":
            return rem // g
        if policy == "pad":
            return -(-rem // g)
        full, tail = divmod(rem, g)
        return full + (1 if tail > rank * b else 0)

    # ------------------------------------------------------------------------------------------------ order
    def epoch_order(self, epoch: int, indexes: list[Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The global sequence of an epoch: ``(shard_index, sample_index)`` arrays, one entry per position."""
        cached = self._order_cache
        if cached is not None and cached[0] == epoch:
            return cached[1], cached[2]
        o = self.options
        counts = [ix.count for ix in (indexes if indexes is not None else self.indexes())]
        if self.mixture is not None:  # issue 18: a mixture lays out its own epochs
            shards, idx = self.mixture.epoch_sequence(counts, epoch, o)
            self._order_cache = (epoch, shards, idx)
            return shards, idx
        chunks = list(
            iter_epoch_order(
                counts, seed=o.seed, epoch=epoch, shuffle=o.shuffle, block_size=o.block_size, window=o.window
            )
        )
        shards = np.concatenate([c[0] for c in chunks]) if chunks else np.zeros(0, np.int64)
        idx = np.concatenate([c[1] for c in chunks]) if chunks else np.zeros(0, np.int64)
        self._order_cache = (epoch, shards, idx)
        return shards, idx

    def groups(self, n: int, start: int, topo: Topology) -> Iterator[np.ndarray]:
        """Positions this reader produces, one array per batch (or per chunk of samples when unbatched).

        With ``topo.num_workers == 1``, group ``j`` is the rank's step ``j`` (unbatched: chunk ``j`` holds its
        steps ``j * CHUNK ...``)."""
        rem = max(n - start, 0)
        if rem == 0:
            return
        policy = self.options.last_batch_for(topo.world_size)
        w, nw, r, world = topo.worker, topo.num_workers, topo.rank, topo.world_size
        steps = self.count_for_rank(n, start, r, world)
        if self.options.batch_size is None:
            mine = np.arange(w, steps, nw, dtype=np.int64)  # this worker's items among the rank's
            positions = start + r + world * mine
            if policy == "pad":
                positions %= n
            for lo in range(0, len(positions), CHUNK):
                yield positions[lo : lo + CHUNK]
            return
        b = self.options.batch_size
        g = b * world
        for j in range(w, steps, nw):
            lo = start + j * g + r * b
            hi = lo + b
            if policy == "exact":
                hi = min(hi, n)
            pos = np.arange(lo, hi, dtype=np.int64)
            if policy == "pad":
                pos %= n
            yield pos

    def _until_damage(self) -> tuple[list[Any], AtdataError | None]:
        """An ordered pass over a dataset with a damaged shard: the indexes of the shards before it, and the error
        that stopped the damaged shard's scan. The pass reads those shards' samples first, then raises the error (as
        a streaming reader would: a bad later shard does not hide the good samples before it)."""
        out: list[Any] = []
        for shard in self.plan.list_shards():
            idx, err = self.plan.salvage_index(shard)
            if err is not None:
                return out, err
            out.append(idx)
        return out, None

    # ------------------------------------------------------------------------------------------------ passes
    def begin(self, epoch: int, start: int, topo: Topology, report: Any, *, place: bool = False) -> EpochPass:
        """Open a pass over this process's slice of ``epoch`` from global position ``start``: indexes read, order
        laid out, downloads started, array bytes routed to batch rows when ``place`` (a pass in columnar batches)
        and the source and sidecars allow it. Close it (it is a context manager) to release its routes."""
        source = self.plan.source
        shards = self.plan.list_shards()
        prefetch = source.prefetch if isinstance(source, Prefetching) else None
        own_order = self.mixture is not None  # issue 18: a mixture does not read in list order
        if prefetch is not None and not self.options.shuffle and start == 0 and not own_order:
            # An ordered pass from the start reads the shards in list order: their downloads can start while the
            # indexes are read (the exact plan follows below).
            prefetch(shards)
        damage: AtdataError | None = None
        try:
            indexes = self.indexes(report)
        except ShardFormatError:
            if self.options.shuffle or self.options.on_error != "raise":
                raise
            indexes, damage = self._until_damage()
        shard_of, index_of = self.epoch_order(epoch, indexes)
        groups = list(self.groups(len(shard_of), start, topo))
        if prefetch is not None and groups:
            order = shard_of[np.concatenate(groups)]
            _, first = np.unique(order, return_index=True)
            prefetch([shards[s] for s in order[np.sort(first)].tolist()])
        last_batch = self.options.last_batch_for(topo.world_size)
        epass = EpochPass(self, groups, shard_of, index_of, shards, indexes, report, last_batch, damage)
        if place:
            try:
                epass.place()
            except BaseException:
                epass.close()
                raise
        return epass


class EpochPass:
    """One pass's state: its groups of positions, the epoch's order, the shards' indexes and the mapped shards.

    Attributes:
        groups: The positions of each group (batch, or chunk of samples) this process reads, in order.
        placement: The pass's placement while array bytes go straight into batch rows, else ``None``.
    """

    def __init__(
        self,
        reader: EpochReader,
        groups: list[np.ndarray],
        shard_of: np.ndarray,
        index_of: np.ndarray,
        shards: list[str],
        indexes: list[Any],
        report: Any,
        last_batch: LastBatch,
        damage: AtdataError | None = None,
    ) -> None:
        self.reader = reader
        self.groups = groups
        # An ordered pass that reads up to a damaged shard (see EpochReader._until_damage) ends with a group that
        # raises the damage when it is read, after every sample before it.
        self.damage = damage
        if damage is not None:
            groups.append(_DAMAGE)
        self.shard_of, self.index_of = shard_of, index_of
        self.shards, self.indexes = shards, indexes
        self.report = report
        self.placement: Placement | None = None
        self._owner: Placement | None = None
        self._views: dict[int, memoryview | Filling] = {}  # a Filling (remote, maybe arriving) slices like one
        o = reader.options
        # Positions only grow within a shard (in order, no wrap-around padding): the download segments before the
        # record being read can go back to the pool (see Filling.drop_before).
        self._forward = not o.shuffle and last_batch != "pad"
        self._forward = self._forward and reader.mixture is None  # issue 18: a mixture may read a shard again
        self._pad = last_batch == "pad"
        # Few shards stay mapped: a mapped shard's pages count in RSS (ordered reads need one at a time, shuffled
        # reads one per block of the window).
        self._max_views = o.window + 2 if o.shuffle else 2
        if reader.mixture is not None:  # issue 18: each source of a mixture reads its own shards
            self._max_views = reader.mixture.open_shards(o)
        self._raise = o.on_error == "raise"

    def __enter__(self) -> EpochPass:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the pass's routes (its placement's rows and the source's routers)."""
        owner, self._owner = self._owner, None
        if owner is not None:
            owner.close()
            source = self.reader.plan.source
            if isinstance(source, Routing):
                source.unroute(owner)

    # ------------------------------------------------------------------------------------------------ placement
    def place(self) -> None:
        """Route the array bytes of this pass's batches straight into batch rows, when it can (see
        :meth:`_placement`)."""
        placement = self._owner = self._placement()
        if placement is not None:
            self.placement = self._plan(placement)

    def _placement(self) -> Placement | None:
        """A placement for this pass (see ``atdata_torch._placement``) when its array bytes can go straight into
        batch rows: an in-order pass in batches, over a source that routes its reads (remote downloads, local
        ``preadv``), with every shard's payloads located by its index sidecar, for a type with an NDArray field."""
        if self.reader.options.shuffle or self._pad or not self.groups or self.damage is not None:
            return None
        if not isinstance(self.reader.plan.source, Routing):
            return None
        if not all(ix.payload_ext is not None and ix.payload_offsets is not None for ix in self.indexes):
            return None
        specs = self.reader.plan.decode_type.__atdata_fields__  # type: ignore[attr-defined]
        return Placement() if any(spec.kind == "ndarray" for spec in specs) else None

    def _plan(self, placement: Placement) -> Placement | None:
        """Before the first batch: learn the layout from the pass's first sample (waiting for its bytes only), and
        route the bytes of every batch that are still to come. ``None`` when the layout cannot be placed."""
        first = self.groups[0][0]
        s, i = int(self.shard_of[first]), int(self.index_of[first])
        ix = self.indexes[s]
        plan = self.reader.plan
        source = plan.source
        p, size = ix.payload_offsets[i], ix.payload_sizes[i]
        view = self._views.get(s)
        if view is None and not getattr(source, "remote", False) and isinstance(source, RangeReading):
            # A local shard is read whole when it is opened: the first payload alone teaches the layout, so that the
            # first shard is routed before it is read.
            payload = memoryview(source.read_range(self.shards[s], p, p + size))
            if len(payload) < size:
                return None  # a stale index: the pass raises or skips it as usual
        else:
            if view is None:
                view = self._open(s, placement)
            if p + size > len(view):
                return None  # a stale index: the pass raises or skips it as usual
            if isinstance(view, Filling):
                view.wait(p + size)
            payload = view[p : p + size]
        fields = {spec.name: spec for spec in plan.decode_type.__atdata_fields__}  # type: ignore[attr-defined]
        layout = learn(payload, fields)
        if layout is None:
            return None
        placement.plan(layout, self.groups, 0, self.shard_of, self.index_of, self.indexes)
        assert isinstance(source, Routing)
        for s, router in placement.routers.items():
            source.route(self.shards[s], router)
        return placement

    # ------------------------------------------------------------------------------------------------ records
    def _open(self, s: int, placement: Placement | None) -> memoryview | Filling:
        views = self._views
        if len(views) >= self._max_views:
            del views[next(iter(views))]
        plan = self.reader.plan
        got = plan.stream_buffer(self.shards[s], placement)
        check = getattr(plan, "check_opened", None)  # a sidecar believed on O(1) checks: its headers, now
        if check is not None:
            fresh = check(self.shards[s], got, self.indexes[s])
            if fresh is not None:  # the same count, scanned from the bytes just read: the order still holds
                self.indexes[s] = fresh
        view = views[s] = got if isinstance(got, Filling) else memoryview(got)
        return view

    def _skip(self, exc: AtdataError) -> None:
        if self._raise:
            raise exc
        self.reader.note(self.report, exc)

    def read(self, positions: np.ndarray, slots: list[int] | None = None) -> tuple[list[Record], list[int]]:
        """The records at these global positions, and the positions that could be read.

        With ``slots`` (a pass that places bytes, see ``atdata_torch._placement``), one slot per record: its row in
        the batch if its array went there (its record then holds only the payload's bytes after the array), else
        ``~row``."""
        if positions is _DAMAGE and self.damage is not None:
            raise self.damage
        out: list[Record] = []
        kept: list[int] = []
        views, shards, indexes = self._views, self.shards, self.indexes
        placement = self.placement
        forward = self._forward
        pos_list = positions.tolist()
        pairs = zip(self.shard_of[positions].tolist(), self.index_of[positions].tolist(), strict=True)
        for k, (s, i) in enumerate(pairs):
            view = views.get(s)
            if view is None:
                view = self._open(s, placement)
            ix = indexes[s]
            need = ix.offsets[i] + ix.lengths[i]
            if need > len(view):
                self._skip(past_end(shards[s], need, len(view), key=ix.keys[i], start=ix.offsets[i]))
                continue
            if view.__class__ is Filling:  # a remote shard: wait for the bytes this record needs, if not in yet
                if view.filled < need:
                    view.wait(need)
                if forward:
                    view.drop_before(ix.offsets[i])
            ext = ix.payload_ext
            if ext is not None:
                if slots is None:
                    p = ix.payload_offsets[i]
                    end = p + ix.payload_sizes[i]
                    out.append(Record(shards[s], ix.keys[i], ix.offsets[i], ix.lengths[i], {ext: view[p:end]}, p))
                else:
                    out.append(self._placed(view, s, i, k, slots))
                kept.append(pos_list[k])
                continue
            try:
                out.append(read_record(view, shards[s], ix.offsets[i], ix.lengths[i]))
            except ShardFormatError as exc:
                self._skip(exc)
                continue
            kept.append(pos_list[k])
            if slots is not None:
                slots.append(~k)
        return out, kept

    def _placed(self, view: Any, s: int, i: int, k: int, slots: list[int]) -> Record:
        """The record of sample ``i`` of shard ``s`` in a pass that places bytes, located by its index's payload
        offsets; its slot appended to ``slots`` (see :meth:`read`)."""
        ix = self.indexes[s]
        placement = self.placement
        router = view.router if view.__class__ is Filling else None
        r = router.placed(i) if router is not None and router.owner is placement else -1
        if r >= 0:
            rec, whole = self.reader.placed_record(placement, router, r, view, self.shards[s], ix, i)
            slots.append(~k if whole else k)
            return rec
        slots.append(~k)
        p = ix.payload_offsets[i]
        end = p + ix.payload_sizes[i]
        return Record(self.shards[s], ix.keys[i], ix.offsets[i], ix.lengths[i], {ix.payload_ext: view[p:end]}, p)
