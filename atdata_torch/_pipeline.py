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
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np
import torch
from torch.utils.data import IterableDataset

from . import _shm
from ._batch import SampleBatch
from ._decode import Decoder, lost, sample_rng, sample_seed
from ._decode import decode_record as decode_record  # re-exported: dataset and cli import it from here
from ._epoch import EpochReader
from ._placement import Placement
from ._placement import placed_record as _placed_record
from ._reader import Record
from ._stats import Work, io_counts
from ._topology import Topology, control_slot, resolve_rank_world
from .errors import SkippedSamplesWarning
from .options import LastBatch, OnError, ReadKeywords, ReadOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .dataset import Dataset

__all__ = ["LastBatch", "OnError", "Pipeline", "SkipReport", "sample_rng", "sample_seed"]

log = logging.getLogger("atdata_torch")

T = TypeVar("T")


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
        options: The read settings (:class:`~atdata_torch.options.ReadOptions`), or:
        **kw: The same settings as keywords (``batch_size``, ``shuffle``, ``seed``, ``drop_last``, ``last_batch``:
            ``"exact"`` (every sample once; on several ranks the last step may give some ranks one batch fewer: for
            evaluation), ``"drop"`` or ``"pad"`` (wrap around to fill the last global batch), ``on_error``,
            ``block_size``, ``window``, ``rank``, ``world_size``); see :class:`~atdata_torch.options.ReadOptions`.
    """

    def __init__(self, dataset: Dataset[Any], options: ReadOptions | None = None, **kw: Unpack[ReadKeywords]) -> None:
        if options is None:
            options = ReadOptions(**kw)
        elif kw:
            raise TypeError(f"Pipeline() takes options or keywords, not both (got {', '.join(kw)})")
        self.dataset = dataset
        self.options = options
        self.rank, self.world_size = resolve_rank_world(options.rank, options.world_size)
        self._control = _Control()
        self.reader = EpochReader(dataset, options, self._note, _placed_record)
        self.last_report = SkipReport()
        # Set by a multi-worker Loader: workers then leave warnings and the epoch summary to the main process, which
        # gets each batch's skips with the batch (see loader._SendCheck) and reports them where users see them.
        self.forward_reports = False
        # Set by a Loader with workers whose batches become tensors (the default collate): each worker then builds
        # its batch arrays in shared memory, so that sending a batch moves a handle, not the bytes (see _shm).
        self.shared_batches: _shm.SharedBatches | None = None
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
    def batch_size(self) -> int | None:
        """Samples per batch on this rank (``None``: samples)."""
        return self.options.batch_size

    @property
    def shuffle(self) -> bool:
        """Whether the order is shuffled."""
        return self.options.shuffle

    @property
    def seed(self) -> int:
        """Seed of the permutation."""
        return self.options.seed

    @property
    def on_error(self) -> OnError:
        """``"raise"``, ``"skip"`` or ``"warn"``."""
        return self.options.on_error

    @property
    def block_size(self) -> int:
        """Shuffle block size."""
        return self.options.block_size

    @property
    def window(self) -> int:
        """Shuffle window, in blocks."""
        return self.options.window

    @property
    def last_batch(self) -> LastBatch:
        """The effective last-batch policy."""
        return self.options.last_batch_for(self.world_size)

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

    def indexes(self, report: SkipReport | None = None) -> list[Any]:
        """Every shard's index; under ``on_error="skip"/"warn"`` a damaged shard contributes its intact samples
        (and is noted to ``report``). A :class:`~atdata_torch.Loader` reads them in the main process, so that its
        workers inherit them instead of rescanning."""
        return self.reader.indexes(report)

    def fingerprint(self) -> str:
        """Identifies what the order depends on: shard names and sample counts, shuffle settings."""
        ds = self.dataset
        desc = {
            "shards": [os.path.basename(s.rstrip("/")) for s in ds.list_shards()],
            "counts": [ix.count for ix in self.indexes()],
            "shuffle": self.shuffle,
            "block_size": self.block_size,
            "window": self.window,
        }
        if self.reader.mixture is not None:  # issue 18: a mixture's weights and stop rule shape its order too
            desc["mixture"] = self.reader.mixture.order_settings()
        return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]

    # ------------------------------------------------------------------------------------------------ sizes
    def total(self) -> int:
        """The samples of an epoch (under ``on_error="skip"/"warn"``: the intact ones)."""
        return self.reader.total()

    def count_for_rank(self, n: int, start: int = 0, rank: int | None = None) -> int:
        """Items (batches, or samples when unbatched) that ``rank`` yields for an epoch of ``n`` samples."""
        return self.reader.count_for_rank(n, start, self.rank if rank is None else rank, self.world_size)

    def __len__(self) -> int:
        """Batches (or samples) this rank yields per epoch, exactly (unknown after ``filter()``)."""
        if self.dataset.has_filter:
            raise TypeError("len() is unknown for this pipeline (a filter() stage drops an unknown number)")
        return self.count_for_rank(self.total())

    # ------------------------------------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[T]:
        worker, nworkers, slot = control_slot()
        epoch, start = self._control.begin(1 + (slot - 1) % (_SLOTS - 1) if slot else 0)
        return self._run(epoch, start, Topology(self.rank, self.world_size, worker, nworkers))

    def epoch_order(self, epoch: int, indexes: list[Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The global sequence of an epoch: ``(shard_index, sample_index)`` arrays, one entry per position."""
        return self.reader.epoch_order(epoch, indexes)

    def _run(self, epoch: int, start: int, topo: Topology) -> Iterator[Any]:
        if self._work_pid != os.getpid():
            self._start_work()  # before any download of this process starts (see take_work)
        report = SkipReport()
        self.last_report = report
        batched = self.batch_size is not None
        info = torch.utils.data.get_worker_info()
        _shm.enable(self.shared_batches if batched and info is not None else None, info.id if info is not None else 0)
        fast = batched and self._fast_batches_possible()
        clock = time.perf_counter
        with self.reader.begin(epoch, start, topo, report, place=fast) as epass:
            placement = epass.placement
            placing = placement is not None and placement.layout is not None
            for j, positions in enumerate(epass.groups):
                t0 = clock()
                slots: list[int] | None = [] if placing else None
                recs, kept = epass.read(positions, slots)
                t1 = clock()
                work = self._work  # (take_work() swaps the list between two batches)
                work[0] += t1 - t0
                if not batched:
                    for _key, sample in self._samples(recs, report, kept, epoch):
                        yield sample
                    continue
                batch = self.decode_batch(recs, report, kept, epoch, fast, placement, j, slots)
                del recs  # the records' bytes may be download segments: they go back to the pool before the next read
                work[1] += clock() - t1
                work[2] += 1
                # One batch per step, even when filter() or skipped samples emptied it: step counts stay equal across
                # ranks (DDP), workers stay in round-robin order, and a resume position is steps x global batch size.
                yield batch if batch is not None else self._empty_batch()
        if not batched and self._outbox and self._forwarding():
            yield SKIPS_ONLY  # skips after this worker's last sample have no sample to travel with: this carries them
        if report and not self._forwarding():
            msg = f"atdata_torch epoch {epoch}: {report.summary()}"
            log.warning(msg)
            warnings.warn(msg, SkippedSamplesWarning, stacklevel=2)

    def decode_batch(
        self,
        recs: list[Record],
        report: SkipReport,
        positions: list[int],
        epoch: int,
        fast: bool | None = None,
        placement: Placement | None = None,
        j: int = 0,
        slots: list[int] | None = None,
    ) -> SampleBatch[Any] | None:
        """The batch of the records read at ``positions`` (``None`` when none was kept), columnar when ``fast``
        (default: when the sample type allows it); with the pass's ``placement``, batch ``j``'s placed rows (see
        :meth:`EpochPass.read <atdata_torch._epoch.EpochPass.read>` for ``slots``)."""
        ds = self.reader.mixture
        if ds is None:
            return self._decode_batch(recs, report, positions, epoch, fast, placement, j, slots)
        # issue 18: a mixture labels each row with its source (a filter or a skip may drop rows: "lossy")
        lossy = self.on_error != "raise" or self.dataset.has_filter
        recs, labels = ds.label_rows(recs, self.reader.epoch_order(epoch)[0][positions], lossy)
        batch = self._decode_batch(recs, report, positions, epoch, fast, placement, j, slots)
        if batch is not None and labels is not None:
            ds.label_batch(batch, labels, lossy)
        return batch

    def _decode_batch(
        self,
        recs: list[Record],
        report: SkipReport,
        positions: list[int],
        epoch: int,
        fast: bool | None,
        placement: Placement | None,
        j: int,
        slots: list[int] | None,
    ) -> SampleBatch[Any] | None:
        if fast is None:
            fast = self._fast_batches_possible()
        if not fast:
            return self._slow_batch(recs, report, positions, epoch)
        if placement is not None and slots is not None:
            if any(x >= 0 for x in slots):
                return self._fast_batch(recs, report, placement, j, slots)
            placement.take(
                j, make=False
            )  # nothing of this batch went to its rows (the bytes were in before the routes)
        return self._fast_batch(recs, report)

    def decode_samples(
        self, recs: list[Record], report: SkipReport, positions: list[int], epoch: int
    ) -> Iterator[tuple[str, Any]]:
        """``(key, sample)`` for each record read at ``positions`` that decodes and passes the stages."""
        return self._samples(recs, report, positions, epoch)

    def _forwarding(self) -> bool:
        """Whether this process is a Loader's worker whose skip reports travel to the main process."""
        return self.forward_reports and torch.utils.data.get_worker_info() is not None

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
