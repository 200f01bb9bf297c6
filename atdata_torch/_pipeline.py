"""Iteration: the epoch's global order -> this reader's slice -> records -> decode -> stages -> batches.

:class:`Pipeline` is what ``Dataset.ordered()`` and ``Dataset.shuffled()`` return: a
``torch.utils.data.IterableDataset`` that yields samples or :class:`SampleBatch` es.

The order of an epoch is a pure function of (seed, epoch, dataset) (see ``_order``). A global step takes the next
``batch_size * world_size`` positions of that sequence; rank ``r`` reads the ``r``-th block of ``batch_size`` of
them, and DataLoader worker ``w`` of ``n`` produces the rank's batches ``w, w + n, ...``, which the DataLoader
yields round-robin. So the concatenated stream of all ranks in global step order is the same sequence for every
topology with the same global batch size, and a resume only needs the global position.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import numpy as np
import torch
from torch.utils.data import IterableDataset

from ._batch import SampleBatch
from ._decode import Decoder, lost, sample_rng, sample_seed
from ._decode import decode_record as decode_record  # re-exported: dataset and cli import it from here
from ._order import DEFAULT_BLOCK_SIZE, DEFAULT_WINDOW, iter_epoch_order
from ._placement import Placement, learn
from ._placement import placed_record as _placed_record
from ._reader import Record, read_record
from ._stats import Work, io_counts
from ._topology import Topology, control_slot, resolve_rank_world
from .errors import ShardFormatError, SkippedSamplesWarning
from .sources._base import Filling, past_end

if TYPE_CHECKING:
    from .dataset import Dataset

__all__ = ["LastBatch", "OnError", "Pipeline", "SkipReport", "sample_rng", "sample_seed"]

log = logging.getLogger("atdata_torch")

T = TypeVar("T")
OnError = Literal["raise", "skip", "warn"]
LastBatch = Literal["exact", "drop", "pad"]


@dataclass
class SkipReport:
    """What an epoch skipped under ``on_error="skip"`` / ``"warn"``.

    Attributes:
        samples: Number of samples skipped.
        shards: Shards that could not be read at all.
        errors: The first errors seen (at most 20), as strings naming shard, key and offset.
    """

    samples: int = 0
    shards: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, exc: BaseException, *, shard: str | None = None) -> None:
        """Count the samples ``exc`` lost (one, or more: see :func:`lost`), or, with ``shard``, one unreadable
        shard."""
        self.merge(0 if shard is not None else lost(exc), [shard] if shard is not None else [], [str(exc)])

    def merge(self, samples: int, shards: list[str], errors: list[str]) -> None:
        """Add counts from elsewhere (a DataLoader worker's part of the epoch)."""
        self.samples += samples
        self.shards.extend(shards)
        self.errors.extend(errors[: max(0, 20 - len(self.errors))])

    def __bool__(self) -> bool:
        return bool(self.samples or self.shards)

    def summary(self) -> str:
        """One line for logs and warnings."""
        msg = f"skipped {self.samples} undecodable sample(s)"
        if self.shards:
            msg += f" and {len(self.shards)} unreadable shard(s) {self.shards[:5]}"
        if self.errors:
            msg += f"; first error: {self.errors[0]}"
        return msg


class SkipsOnly:
    """What an unbatched pass in a Loader's worker yields last when samples it skipped after its last sample have
    no sample to travel to the main process with (see ``loader._SendCheck``); the Loader drops it."""

    __slots__ = ()

    def __reduce__(self) -> str:
        return "SKIPS_ONLY"  # one instance in every process


SKIPS_ONLY = SkipsOnly()


# ---------------------------------------------------------------------------------------------------- control
_SLOTS = 64


class _Control:
    """Epoch and resume control in shared memory, so that it reaches DataLoader workers (persistent ones too).

    Layout: ``[base_epoch, resume_epoch, resume_position, counter(main), counter(worker 0), ...]``. Each reader
    counts its own passes: pass ``k`` of a reader runs epoch ``base_epoch + k``.
    """

    def __init__(self) -> None:
        self.t = torch.zeros(3 + _SLOTS, dtype=torch.int64)
        self.t[1] = -1
        self.t.share_memory_()  # type: ignore[no-untyped-call]

    def set_epoch(self, epoch: int) -> None:
        self.t[3:] = 0
        self.t[1] = -1
        self.t[0] = epoch

    def resume(self, epoch: int, position: int) -> None:
        self.t[3:] = 0
        self.t[0] = epoch
        self.t[2] = position
        self.t[1] = epoch

    def next_epoch(self) -> int:
        """The epoch the main process would run next."""
        return int(self.t[0] + self.t[3])

    def begin(self, slot: int) -> tuple[int, int]:
        i = 3 + slot
        epoch = int(self.t[0] + self.t[i])
        self.t[i] += 1
        start = int(self.t[2]) if int(self.t[1]) == epoch else 0
        return epoch, start


# ---------------------------------------------------------------------------------------------------- pipeline
class Pipeline(IterableDataset[T], Generic[T]):
    """An iterable over a dataset in a given order, optionally batched, sliced for this rank and worker.

    Each ``iter()`` runs one epoch and then advances the epoch, so a shuffled pipeline gives a new (reproducible)
    permutation per pass; :meth:`set_epoch` picks the epoch explicitly, and reaches DataLoader workers (persistent
    ones included) through shared memory.

    Args:
        dataset: The dataset.
        batch_size: Samples per batch on this rank (``None``: yield samples).
        shuffle: Shuffle (two-level block/window permutation) or keep shard order.
        seed: Seed of the permutation.
        drop_last: ``True`` drops the last partial global batch; ``False`` keeps every sample (``"exact"`` on one
            rank, ``"pad"`` on several, so that every rank runs the same number of steps).
        last_batch: ``"exact"`` (every sample once; on several ranks the last step may give some ranks one batch
            fewer: for evaluation), ``"drop"`` or ``"pad"`` (wrap around to fill the last global batch). Overrides
            ``drop_last``.
        on_error: ``"raise"``, or ``"skip"`` / ``"warn"`` undecodable samples, reported at the end of the epoch.
        rank: This process's rank; ``None`` detects it (torch.distributed, then ``RANK``).
        world_size: Number of ranks; ``None`` detects it.
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        *,
        batch_size: int | None = None,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool | None = None,
        last_batch: LastBatch | None = None,
        on_error: OnError = "raise",
        block_size: int = DEFAULT_BLOCK_SIZE,
        window: int = DEFAULT_WINDOW,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
        if on_error not in ("raise", "skip", "warn"):
            raise ValueError(f"on_error must be 'raise', 'skip' or 'warn', got {on_error!r}")
        if last_batch is not None and last_batch not in ("exact", "drop", "pad"):
            raise ValueError(f"last_batch must be 'exact', 'drop' or 'pad', got {last_batch!r}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = int(seed)
        self.on_error = on_error
        self.block_size = block_size
        self.window = window
        self._drop_last = drop_last
        self._last_batch = last_batch
        self.rank, self.world_size = resolve_rank_world(rank, world_size)
        self._control = _Control()
        self._order_cache: tuple[int, np.ndarray, np.ndarray] | None = None
        self.last_report = SkipReport()
        # Set by a multi-worker Loader: workers then leave warnings and the epoch summary to the main process, which
        # gets each batch's skips with the batch (see loader._SendCheck) and reports them where users see them.
        self.forward_reports = False
        self._outbox: list[tuple[str | None, str, int]] = []
        # This reader's counts for Loader.stats() (see take_work), kept per process: a worker starts from zero.
        self._work_pid = 0
        self._work = [0.0, 0.0, 0]  # read_s, decode_s, batches
        self._io_base = (0, 0)  # the source's (cache hits, downloads) at the last take_work()

    def take_skips(self) -> list[tuple[str | None, str, int]]:
        """What this worker skipped since the last call: ``(shard or None, message, samples lost)`` per per-sample
        error (``None``) or unreadable shard. The Loader's collate wrapper sends it to the main process with each
        batch."""
        out, self._outbox = self._outbox, []
        return out

    def take_work(self) -> Work:
        """This reader's counts since the last call: seconds reading records (waiting for shard bytes included) and
        decoding them into batches, batches made, shards served by the cache and shards downloaded. The Loader
        sends them with each batch from a worker (see ``loader._SendCheck``) for :meth:`Loader.stats`."""
        if self._work_pid != os.getpid():
            self._start_work()
        (read_s, decode_s, batches), self._work = self._work, [0.0, 0.0, 0]
        hits, downloads = io_counts(self.dataset.source)
        base, self._io_base = self._io_base, (hits, downloads)
        return read_s, decode_s, int(batches), hits - base[0], downloads - base[1]

    def _start_work(self) -> None:
        """Counts start in each process where this pipeline first runs (a worker does not report its parent's)."""
        self._work_pid = os.getpid()
        self._work = [0.0, 0.0, 0]
        self._io_base = io_counts(self.dataset.source)

    # ------------------------------------------------------------------------------------------------ settings
    @property
    def last_batch(self) -> LastBatch:
        """The effective last-batch policy."""
        if self._last_batch is not None:
            return self._last_batch
        if self._drop_last:
            return "drop"
        return "exact" if self.world_size == 1 else "pad"

    @property
    def drop_last(self) -> bool:
        """Whether the last partial batch is dropped."""
        return self.last_batch == "drop"

    @property
    def global_batch_size(self) -> int:
        """Samples per global step (``batch_size * world_size``; ``world_size`` when unbatched)."""
        return (self.batch_size or 1) * self.world_size

    def set_topology(self, rank: int | None = None, world_size: int | None = None) -> None:
        """Set (or re-detect, with ``None``) this process's rank and world size. Call before iterating."""
        self.rank, self.world_size = resolve_rank_world(rank, world_size)

    @property
    def epoch(self) -> int:
        """The epoch the next ``iter()`` in this process will run."""
        return self._control.next_epoch()

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch of the next ``iter()`` (in this process and in DataLoader workers)."""
        self._control.set_epoch(int(epoch))

    def resume(self, epoch: int, position: int) -> None:
        """Make the next pass run ``epoch`` starting at global ``position`` (samples already consumed)."""
        if position < 0:
            raise ValueError("position must be >= 0")
        self._control.resume(int(epoch), int(position))

    def _indexes(self, report: SkipReport | None = None) -> list[Any]:
        """Every shard's index; under ``on_error="skip"/"warn"`` a damaged shard contributes its intact samples."""
        ds = self.dataset
        if self.on_error == "raise":
            return ds.shard_indexes()
        out = []
        ds._warm_sidecars()
        for shard in ds.list_shards():
            idx, err = ds.salvage_index(shard)
            if err is not None and report is not None:
                self._note(report, err, shard=shard)
            out.append(idx)
        return out

    def fingerprint(self) -> str:
        """Identifies what the order depends on: shard names and sample counts, shuffle settings."""
        ds = self.dataset
        desc = {
            "shards": [os.path.basename(s.rstrip("/")) for s in ds.list_shards()],
            "counts": [ix.count for ix in self._indexes()],
            "shuffle": self.shuffle,
            "block_size": self.block_size,
            "window": self.window,
        }
        return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]

    # ------------------------------------------------------------------------------------------------ sizes
    def _total(self) -> int:
        if self.on_error == "raise":
            return self.dataset._count()
        return sum(ix.count for ix in self._indexes())

    def count_for_rank(self, n: int, start: int = 0, rank: int | None = None) -> int:
        """Items (batches, or samples when unbatched) that ``rank`` yields for an epoch of ``n`` samples."""
        r = self.rank if rank is None else rank
        rem = max(n - start, 0)
        if rem == 0:
            return 0
        b = self.batch_size or 1
        g = b * self.world_size
        policy = self.last_batch
        if policy == "drop":
            return rem // g
        if policy == "pad":
            return -(-rem // g)
        full, tail = divmod(rem, g)
        return full + (1 if tail > r * b else 0)

    def __len__(self) -> int:
        """Batches (or samples) this rank yields per epoch, exactly (unknown after ``filter()``)."""
        if self.dataset._has_filter:
            raise TypeError("len() is unknown for this pipeline (a filter() stage drops an unknown number)")
        return self.count_for_rank(self._total())

    # ------------------------------------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[T]:
        worker, nworkers, slot = control_slot()
        epoch, start = self._control.begin(1 + (slot - 1) % (_SLOTS - 1) if slot else 0)
        return self._run(epoch, start, Topology(self.rank, self.world_size, worker, nworkers))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_order_cache"] = None
        return state

    def epoch_order(self, epoch: int, indexes: list[Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The global sequence of an epoch: ``(shard_index, sample_index)`` arrays, one entry per position."""
        cached = self._order_cache
        if cached is not None and cached[0] == epoch:
            return cached[1], cached[2]
        counts = [ix.count for ix in (indexes if indexes is not None else self._indexes())]
        chunks = list(
            iter_epoch_order(
                counts,
                seed=self.seed,
                epoch=epoch,
                shuffle=self.shuffle,
                block_size=self.block_size,
                window=self.window,
            )
        )
        shards = np.concatenate([c[0] for c in chunks]) if chunks else np.zeros(0, np.int64)
        idx = np.concatenate([c[1] for c in chunks]) if chunks else np.zeros(0, np.int64)
        self._order_cache = (epoch, shards, idx)
        return shards, idx

    def _groups(self, n: int, start: int, topo: Topology) -> Iterator[np.ndarray]:
        """Positions this reader produces, one array per batch (or per chunk of samples when unbatched)."""
        rem = max(n - start, 0)
        if rem == 0:
            return
        policy = self.last_batch
        w, nw, r, world = topo.worker, topo.num_workers, topo.rank, topo.world_size
        if self.batch_size is None:
            count = self.count_for_rank(n, start, r)
            mine = np.arange(w, count, nw, dtype=np.int64)  # this worker's items among the rank's
            positions = start + r + world * mine
            if policy == "pad":
                positions %= n
            for lo in range(0, len(positions), 512):
                yield positions[lo : lo + 512]
            return
        b = self.batch_size
        g = b * world
        steps = self.count_for_rank(n, start, r)
        for j in range(w, steps, nw):
            lo = start + j * g + r * b
            hi = lo + b
            if policy == "exact":
                hi = min(hi, n)
            pos = np.arange(lo, hi, dtype=np.int64)
            if policy == "pad":
                pos %= n
            yield pos

    def _run(self, epoch: int, start: int, topo: Topology) -> Iterator[Any]:
        if self._work_pid != os.getpid():
            self._start_work()  # before any download of this process starts (see take_work)
        report = SkipReport()
        self.last_report = report
        ds = self.dataset
        shards = ds.list_shards()
        prefetch = getattr(ds.source, "prefetch", None)
        if prefetch is not None and not self.shuffle and start == 0:
            # An ordered pass from the start reads the shards in list order: their downloads can start while the
            # indexes are read (the exact plan follows below).
            prefetch(shards)
        indexes = self._indexes(report)
        shard_of, index_of = self.epoch_order(epoch, indexes)
        n = len(shard_of)
        views: dict[int, memoryview | Filling] = {}  # a Filling (remote, maybe still arriving) slices like a memoryview
        batched = self.batch_size is not None
        fast = batched and self._fast_batches_possible()
        groups = list(self._groups(n, start, topo))
        if prefetch is not None and groups:
            order = shard_of[np.concatenate(groups)]
            _, first = np.unique(order, return_index=True)
            prefetch([shards[s] for s in order[np.sort(first)].tolist()])
        placement = owner = self._placement(groups, indexes) if fast else None
        clock = time.perf_counter
        try:
            if placement is not None:
                placement = self._plan(placement, groups, shard_of, index_of, shards, indexes, views)
            for j, positions in enumerate(groups):
                t0 = clock()
                slots: list[int] | None = [] if placement is not None and placement.layout is not None else None
                recs, kept = self._read(positions, shard_of, index_of, shards, indexes, views, report, placement, slots)
                t1 = clock()
                work = self._work  # (take_work() swaps the list between two batches)
                work[0] += t1 - t0
                if not batched:
                    for _key, sample in self._samples(recs, report, kept, epoch):
                        yield sample
                    continue
                if not fast:
                    batch = self._slow_batch(recs, report, kept, epoch)
                elif placement is not None and slots is not None and any(x >= 0 for x in slots):
                    batch = self._fast_batch(recs, report, placement, j, slots)
                else:  # nothing of this batch went to its rows (the bytes were in before the routes were set)
                    if placement is not None and slots is not None:
                        placement.take(j, make=False)
                    batch = self._fast_batch(recs, report)
                del recs  # the records' bytes may be download segments: they go back to the pool before the next read
                work[1] += clock() - t1
                work[2] += 1
                # One batch per step, even when filter() or skipped samples emptied it: step counts stay equal across
                # ranks (DDP), workers stay in round-robin order, and a resume position is steps x global batch size.
                yield batch if batch is not None else self._empty_batch()
        finally:
            if owner is not None:
                owner.close()
                unroute = getattr(ds.source, "unroute", None)
                if unroute is not None:
                    unroute(owner)
        if not batched and self._outbox and self._forwarding():
            yield SKIPS_ONLY  # skips after this worker's last sample have no sample to travel with: this carries them
        if report and not self._forwarding():
            msg = f"atdata_torch epoch {epoch}: {report.summary()}"
            log.warning(msg)
            warnings.warn(msg, SkippedSamplesWarning, stacklevel=2)

    def _forwarding(self) -> bool:
        """Whether this process is a Loader's worker whose skip reports travel to the main process."""
        return self.forward_reports and torch.utils.data.get_worker_info() is not None

    # ------------------------------------------------------------------------------------------------ placement
    def _placement(self, groups: list[np.ndarray], indexes: list[Any]) -> Placement | None:
        """A placement for this pass (see ``atdata_torch._placement``) when its array bytes can go straight into
        batch rows: an in-order pass in batches, over a source that routes its reads (remote downloads, local
        ``preadv``), with every shard's payloads located by its index sidecar, for a type with an NDArray field."""
        if self.shuffle or self.last_batch == "pad" or not groups:
            return None
        if not callable(getattr(self.dataset.source, "route", None)):
            return None
        if not all(ix.payload_ext is not None and ix.payload_offsets is not None for ix in indexes):
            return None
        specs = self.dataset._decode_type.__atdata_fields__  # type: ignore[attr-defined]
        return Placement() if any(spec.kind == "ndarray" for spec in specs) else None

    def _plan(
        self,
        placement: Placement,
        groups: list[np.ndarray],
        shard_of: np.ndarray,
        index_of: np.ndarray,
        shards: list[str],
        indexes: list[Any],
        views: dict[int, memoryview | Filling],
    ) -> Placement | None:
        """Before the first batch: learn the layout from the pass's first sample (waiting for its bytes only), and
        route the bytes of every batch that are still to come. ``None`` when the layout cannot be placed."""
        s, i = int(shard_of[groups[0][0]]), int(index_of[groups[0][0]])
        ix = indexes[s]
        source = self.dataset.source
        p, size = ix.payload_offsets[i], ix.payload_sizes[i]
        view = views.get(s)
        read_range = getattr(source, "read_range", None)
        if view is None and not getattr(source, "remote", False) and callable(read_range):
            # A local shard is read whole when it is opened: the first payload alone teaches the layout, so that the
            # first shard is routed before it is read.
            payload = memoryview(read_range(shards[s], p, p + size))
            if len(payload) < size:
                return None  # a stale index: the pass raises or skips it as usual
        else:
            if view is None:
                got = self.dataset._stream_buffer(shards[s], placement)
                view = views[s] = got if isinstance(got, Filling) else memoryview(got)
            if p + size > len(view):
                return None  # a stale index: the pass raises or skips it as usual
            if isinstance(view, Filling):
                view.wait(p + size)
            payload = view[p : p + size]
        fields = {spec.name: spec for spec in self.dataset._decode_type.__atdata_fields__}  # type: ignore[attr-defined]
        layout = learn(payload, fields)
        if layout is None:
            return None
        placement.plan(layout, groups, 0, shard_of, index_of, indexes)
        route = source.route  # type: ignore[attr-defined]
        for s, router in placement.routers.items():
            route(shards[s], router)
        return placement

    # ------------------------------------------------------------------------------------------------ records
    def _read(
        self,
        positions: np.ndarray,
        shard_of: np.ndarray,
        index_of: np.ndarray,
        shards: list[str],
        indexes: list[Any],
        views: dict[int, memoryview | Filling],
        report: SkipReport,
        placement: Placement | None = None,
        slots: list[int] | None = None,
    ) -> tuple[list[Record], list[int]]:
        """The records at these global positions, and the positions that could be read.

        With ``slots`` (a pass that places bytes, see ``atdata_torch._placement``), one slot per record: its row in
        the batch if its array went there (its record then holds only the payload's bytes after the array), else
        ``~row``."""
        out: list[Record] = []
        kept: list[int] = []
        ds = self.dataset
        # Positions only grow within a shard (in order, no wrap-around padding): the download segments before the
        # record being read can go back to the pool (see Filling.drop_before).
        forward = not self.shuffle and self.last_batch != "pad"
        pos_list = positions.tolist()
        for k, (s, i) in enumerate(zip(shard_of[positions].tolist(), index_of[positions].tolist(), strict=True)):
            view = views.get(s)
            if view is None:
                # Few shards stay mapped: a mapped shard's pages count in RSS (ordered reads need one at a time,
                # shuffled reads one per block of the window).
                if len(views) >= (self.window + 2 if self.shuffle else 2):
                    del views[next(iter(views))]
                got = ds._stream_buffer(shards[s], placement)
                view = views[s] = got if isinstance(got, Filling) else memoryview(got)
            ix = indexes[s]
            need = ix.offsets[i] + ix.lengths[i]
            if need > len(view):
                exc = past_end(shards[s], need, len(view), key=ix.keys[i], start=ix.offsets[i])
                if self.on_error == "raise":
                    raise exc
                self._note(report, exc)
                continue
            if view.__class__ is Filling:  # a remote shard: wait for the bytes this record needs, if not in yet
                if view.filled < need:
                    view.wait(need)
                if forward:
                    view.drop_before(ix.offsets[i])
            ext = ix.payload_ext
            if ext is not None:
                p = ix.payload_offsets[i]
                end = p + ix.payload_sizes[i]
                if slots is not None:
                    router = view.router if view.__class__ is Filling else None
                    r = router.placed(i) if router is not None and router.owner is placement else -1
                    if r >= 0:
                        rec, whole = _placed_record(placement, router, r, view, shards[s], ix, i)
                        out.append(rec)
                        slots.append(~k if whole else k)
                        kept.append(pos_list[k])
                        continue
                    slots.append(~k)
                out.append(Record(shards[s], ix.keys[i], ix.offsets[i], ix.lengths[i], {ext: view[p:end]}, p))
                kept.append(pos_list[k])
                continue
            try:
                out.append(read_record(view, shards[s], ix.offsets[i], ix.lengths[i]))
                kept.append(pos_list[k])
                if slots is not None:
                    slots.append(~k)
            except ShardFormatError as exc:
                if self.on_error == "raise":
                    raise
                self._note(report, exc)
        return out, kept

    def _note(self, report: SkipReport, exc: BaseException, *, shard: str | None = None) -> None:
        report.add(exc, shard=shard)
        if self._forwarding():
            self._outbox.append((shard, str(exc), 0 if shard is not None else lost(exc)))
        elif self.on_error == "warn":
            warnings.warn(f"atdata_torch skipped: {exc}", SkippedSamplesWarning, stacklevel=3)

    # ------------------------------------------------------------------------------------------------ decoding
    def _decoder(self) -> Decoder:
        """The decoder of this pipeline's dataset, ``on_error`` and seed (see ``atdata_torch._decode``), made once
        (and again if one of them is changed)."""
        cached: tuple[Any, str, int, Decoder] | None = self.__dict__.get("_decoder_of")
        ds = self.dataset
        if cached is not None and cached[0] is ds and cached[1] == self.on_error and cached[2] == self.seed:
            return cached[3]
        dec = Decoder(ds._decode_type, ds.sample_type, ds._stages, self.on_error, self._note, self.seed)
        self.__dict__["_decoder_of"] = (ds, self.on_error, self.seed, dec)
        return dec

    def _samples(
        self, recs: list[Record], report: SkipReport, positions: list[int], epoch: int
    ) -> Iterator[tuple[str, Any]]:
        return self._decoder().samples(recs, report, positions, epoch)

    def _slow_batch(
        self, recs: list[Record], report: SkipReport, positions: list[int], epoch: int
    ) -> SampleBatch[Any] | None:
        return self._decoder().slow_batch(recs, report, positions, epoch)

    def _empty_batch(self) -> SampleBatch[Any]:
        return self._decoder().empty_batch()

    def _fast_batches_possible(self) -> bool:
        return self._decoder().fast

    def _fast_batch(
        self,
        recs: list[Record],
        report: SkipReport,
        placement: Placement | None = None,
        j: int = 0,
        slots: list[int] | None = None,
    ) -> SampleBatch[Any] | None:
        """Columnar decoding (see :meth:`Decoder.fast_batch`); with ``placement`` and ``slots`` (see :meth:`_read`),
        batch ``j``'s placed field is the array its download filled."""
        dec = self._decoder()
        return dec.fast_batch(recs, report, dec.placed(placement, j, slots))
