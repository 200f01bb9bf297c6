"""The ready-made loader: a torchdata ``StatefulDataLoader`` with an elastic, topology-free resume state.

``Dataset.loader(...)`` builds one. Its ``state_dict()`` is small and global: the seed, the epoch, the number of
samples consumed in the epoch's global order, the global batch size and a fingerprint of the dataset. Any topology
(another number of ranks or workers) turns it back into per-rank, per-worker starting points, so a run saved on
1 rank x 4 workers resumes on 2 ranks x 2 workers with no sample repeated or skipped. (torchdata's own per-worker
snapshots only restore under the same worker count, so they are not used.)

Example:
    >>> # loader = ds.loader(batch_size=64, shuffle=True, seed=0, num_workers=2)
    >>> # for batch in loader: ...           # TensorBatch: batch.image is a torch.Tensor
    >>> # torch.save(loader.state_dict(), "loader.pt")
    >>> # loader.load_state_dict(torch.load("loader.pt")); for batch in loader: ...   # continues exactly
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch.utils.data
from torchdata.stateful_dataloader import StatefulDataLoader

from ._pipeline import SKIPS_ONLY, Pipeline, SkipReport
from ._shm import SharedBatches
from ._stats import DEFAULT_PROFILE_EVERY, LoaderStats, Work, _Timer
from .collate import collate
from .errors import AtdataError, LoaderStateError, SkippedSamplesWarning

log = logging.getLogger("atdata_torch")

__all__ = ["Loader", "LoaderStateError"]

STATE_VERSION = 1


def _identity(x: Any) -> Any:
    return x


class _WithSkips:
    """A batch from a worker, with what the worker skipped while building it (``on_error="skip"``/``"warn"``), the
    worker's id and its counts since its last batch (``Pipeline.take_work``: five numbers) for :meth:`Loader.stats`."""

    __slots__ = ("batch", "skips", "work", "worker")

    def __init__(
        self, batch: Any, skips: list[tuple[str | None, str, int]], worker: int | None = None, work: Work | None = None
    ) -> None:
        self.batch = batch
        self.skips = skips
        self.worker = worker
        self.work = work

    def pin_memory(self) -> _WithSkips:
        from torch.utils.data._utils.pin_memory import pin_memory

        return _WithSkips(pin_memory(self.batch), self.skips, self.worker, self.work)  # type: ignore[no-untyped-call]


class _SendCheck:
    """Wraps the collate function of a multi-worker loader.

    In each worker process, the first batch is pickled once before it is handed to the DataLoader: multiprocessing
    drops (and only prints) what it cannot pickle, and the main process then waits forever for that batch; this turns
    it into an error the main process raises. And what the worker's pipeline skipped travels with the batch it was
    skipped from (:class:`_WithSkips`), so that the main process counts and reports it, and so do the worker's
    counts for :meth:`Loader.stats` (read and decode time, cache hits, downloads)."""

    def __init__(self, fn: Callable[[Any], Any], pipeline: Pipeline[Any] | None = None) -> None:
        self.fn = fn
        self.pipeline = pipeline  # the worker's copy: the DataLoader sends it together with this wrapper
        self._checked_pid = 0
        self._worker: int | None = None

    def __call__(self, batch: Any) -> Any:
        out = batch if batch is SKIPS_ONLY else self._send_checked(self.fn(batch))
        p = self.pipeline
        if p is None:
            return out
        return _WithSkips(out, p.take_skips(), self._worker, p.take_work())

    def _send_checked(self, out: Any) -> Any:
        pid = os.getpid()
        info = torch.utils.data.get_worker_info() if self._checked_pid != pid else None
        if info is not None:
            self._worker = info.id
            from multiprocessing.reduction import ForkingPickler

            try:
                ForkingPickler.dumps(out)
            except Exception as exc:
                what = getattr(out, "sample_type", None) or type(out)
                raise AtdataError(
                    f"a DataLoader worker cannot send its batches to the main process: pickling a batch of "
                    f"{getattr(what, '__qualname__', what)} failed ({type(exc).__name__}: {exc}). Define sample "
                    "classes and map() functions at module level (not inside a function), or use num_workers=0"
                ) from exc
            self._checked_pid = pid
        return out


class Loader(StatefulDataLoader):  # type: ignore[misc]
    """A ``StatefulDataLoader`` over a :class:`~atdata_torch.Pipeline` that yields tensor batches.

    Args:
        pipeline: What ``ds.ordered()`` / ``ds.shuffled()`` return (batched in the dataset).
        num_workers: DataLoader worker processes.
        pin_memory: Pin batches (``TensorBatch.pin_memory()``) for faster host-to-device copies.
        persistent_workers: Keep workers between epochs (the epoch still advances: it is shared memory).
        collate_fn: Turns each batch into what the loop gets; defaults to :func:`~atdata_torch.collate`
            (``TensorBatch``). Pass ``None`` to get ``SampleBatch`` es.
        profile_every: Log :meth:`stats` to ``logging.getLogger("atdata_torch")`` (INFO) every this many batches
            and at the end of each epoch (``None``: only keep them for :meth:`stats`).
        profile: ``True``: the same every 100 batches (``DEFAULT_PROFILE_EVERY``) and at the end of each epoch; a
            number: every that many batches (``profile_every`` wins when both are given).
        **kwargs: Passed to ``StatefulDataLoader`` (``prefetch_factor``, ``multiprocessing_context``,
            ``timeout``, ...).
    """

    def __init__(
        self,
        pipeline: Pipeline[Any],
        *,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        collate_fn: Callable[[Any], Any] | None = collate,
        profile_every: int | None = None,
        profile: bool | int = False,
        **kwargs: Any,
    ) -> None:
        if profile_every is None and profile:
            profile_every = DEFAULT_PROFILE_EVERY if profile is True else int(profile)
        if profile_every is not None and profile_every < 0:
            raise ValueError(f"profile_every must be >= 0 (batches between two log lines; 0: off), got {profile_every}")
        self._stats, self._profile_every = LoaderStats(), profile_every  # loader.stats(); see atdata_torch._stats
        if not isinstance(pipeline, Pipeline):
            raise TypeError(f"Loader needs a Pipeline (ds.ordered() / ds.shuffled()), got {type(pipeline).__name__}")
        # Indexes are resolved here, in the main process, so that workers inherit them instead of rescanning.
        pipeline.indexes()  # (under on_error="skip"/"warn", a damaged shard contributes its intact samples)
        # torchdata's per-worker snapshots are not used (the resume state is global): take them rarely.
        kwargs.setdefault("snapshot_every_n_steps", 1 << 30)
        # An unbatched pipeline yields samples one by one: the default collate (lists of samples -> tensors) does not
        # apply to them, and they arrive as they are (as torch's DataLoader gives them with batch_size=None).
        unbatched_default = collate_fn is collate and pipeline.batch_size is None
        fn = collate_fn if collate_fn is not None and not unbatched_default else _identity
        with warnings.catch_warnings():
            # torchdata 0.11 calls the deprecated torch.set_vital() in every constructor: not the user's concern.
            warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)
            super().__init__(
                pipeline,
                batch_size=None,
                num_workers=num_workers,
                pin_memory=pin_memory,
                persistent_workers=persistent_workers and num_workers > 0,
                collate_fn=_SendCheck(fn, pipeline) if num_workers else fn,
                **kwargs,
            )
        self.pipeline = pipeline
        pipeline.forward_reports = num_workers > 0
        # Workers build their batch arrays in shared memory, reused once this process lets go of them (see _shm).
        pipeline.shared_batches = SharedBatches() if num_workers > 0 and fn is collate else None
        self.last_report = SkipReport()
        self._next_epoch = pipeline.epoch
        self._pending: tuple[int, int] | None = None
        self._epoch = self._next_epoch
        self._start = 0
        self._yielded = 0

    # ------------------------------------------------------------------------------------------------ epochs
    @property
    def epoch(self) -> int:
        """The epoch of the current (or, before iterating, the next) pass."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Run ``epoch`` on the next pass (then advance by one per pass)."""
        self._next_epoch = int(epoch)
        self._epoch = int(epoch)
        self._pending = None

    def __iter__(self) -> Iterator[Any]:
        if self._pending is not None:
            epoch, start = self._pending
            self._pending = None
            self.pipeline.resume(epoch, start)
        else:
            epoch, start = self._next_epoch, 0
            self.pipeline.set_epoch(epoch)
        self._epoch, self._start, self._yielded = epoch, start, 0
        self._next_epoch = epoch + 1
        return self._count(super().__iter__())

    def _count(self, it: Iterator[Any]) -> Iterator[Any]:
        report = SkipReport()
        self.last_report = report
        workers = self.num_workers > 0
        self._stats.reset(self._epoch)
        timer = _Timer(self._stats, self._profile_every)
        while True:
            timer.before_next()
            try:
                batch = next(it)
            except StopIteration:
                break
            if batch.__class__ is _WithSkips:
                if batch.skips:
                    self._received(report, batch.skips)
                if batch.work is not None:
                    self._stats.record_work(batch.worker, batch.work)
                batch = batch.batch
                if batch is SKIPS_ONLY:
                    continue  # it only carried a worker's last skips
            elif not workers and not self._yielded & 15:
                # In this process the counts are the pipeline's own: taken every 16 batches (and by stats()), not at
                # the cost of a take per batch.
                self._stats.record_work(None, self.pipeline.take_work())
            timer.after_next(batch)
            self._yielded += 1
            yield batch
        if not workers:
            self._stats.record_work(None, self.pipeline.take_work())
        timer.end()
        if not workers:
            self.last_report = self.pipeline.last_report  # the pipeline ran here and reported itself
        elif report:
            msg = f"atdata_torch epoch {self._epoch}: {report.summary()}"
            log.warning(msg)
            warnings.warn(msg, SkippedSamplesWarning, stacklevel=2)
        # The pass ended on its own: every batch of this rank must have arrived. A batch a worker could not send
        # (multiprocessing drops what it cannot pickle, and only prints the error) would otherwise vanish silently.
        p = self.pipeline
        expected = p.count_for_rank(p.total(), self._start)
        if p.batch_size is None:  # one item per sample: skipped and filtered samples never arrive
            if p.dataset.has_filter:
                return
            expected -= report.samples
        if self._yielded < expected:
            raise AtdataError(
                f"epoch {self._epoch} ended after {self._yielded} of its {expected} batches on this rank: a DataLoader "
                "worker produced batches that never reached the main process (the reason, e.g. a PicklingError for "
                "a sample type or a map() result that cannot be pickled, is printed above). Nothing was skipped "
                "silently: make the batches picklable (module-level classes and functions), or use num_workers=0"
            )

    def _received(self, report: SkipReport, skips: list[tuple[str | None, str, int]]) -> None:
        """Count what a worker skipped, and (``on_error="warn"``) warn of each here, where the warning is seen."""
        for shard, message, samples in skips:
            if shard is not None and shard in report.shards:
                continue  # every worker finds the same unreadable shard when it reads the indexes
            report.merge(samples, [shard] if shard is not None else [], [message])
            if self.pipeline.on_error == "warn":
                warnings.warn(f"atdata_torch skipped: {message}", SkippedSamplesWarning, stacklevel=3)

    def __len__(self) -> int:
        return len(self.pipeline)

    def stats(self) -> dict[str, Any]:
        """Throughput and wait time of the current (or last) pass: is the loader the loop's bottleneck?

        Returns batches/s, samples/s, bytes/s, ``wait_s`` (the loop waiting inside ``next()``), ``held_s`` (the
        loop working on its batches), ``wait_fraction`` and ``first_batch_s``; the readers' ``read_s`` (locating
        records, waiting for shard bytes), ``decode_s`` (records into batches, ``map()`` included; not the
        ``collate_fn``), ``cache_hits`` and ``downloads`` (shards from the local cache, shards fetched), and the same
        per reader under ``workers`` (a list of dicts with ``worker``: the DataLoader worker id, ``None`` for the
        main process when ``num_workers=0``); see :class:`LoaderStats`. ``profile=True`` (or ``profile_every=N``)
        logs a summary to ``logging.getLogger("atdata_torch")`` every 100 (N) batches and at the end of each epoch.
        """
        if self.num_workers == 0:
            self._stats.record_work(None, self.pipeline.take_work())
        return self._stats.snapshot()

    # ------------------------------------------------------------------------------------------------ state
    def position(self) -> int:
        """Samples of the current epoch consumed in global order (by all ranks together)."""
        p = self.pipeline
        n = p.total()
        consumed = self._start + self._yielded * p.global_batch_size
        return min(consumed, n) if p.last_batch != "pad" else consumed

    def state_dict(self) -> dict[str, Any]:
        """The global resume state (the same on every rank): small, and valid for any topology."""
        p = self.pipeline
        n = p.total()
        pos = self.position()
        epoch = self._epoch
        if self._pending is not None:
            epoch, pos = self._pending
        elif pos >= n or p.count_for_rank(n, self._start) == self._yielded:
            epoch, pos = epoch + 1, 0  # the pass is complete: resume at the next epoch's start
        return {
            "version": STATE_VERSION,
            "seed": p.seed,
            "shuffle": p.shuffle,
            "epoch": epoch,
            "position": pos,
            "global_batch_size": p.global_batch_size,
            "fingerprint": p.fingerprint(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from a state saved by any loader over the same dataset and seed (any ranks, any workers).

        Raises:
            LoaderStateError: when the state belongs to another dataset or seed, or is not a loader state.
        """
        if not isinstance(state_dict, dict) or "fingerprint" not in state_dict or "position" not in state_dict:
            raise LoaderStateError(
                "this is not an atdata_torch loader state (expected keys 'fingerprint', 'epoch', 'position'); "
                "was it saved by another kind of DataLoader?"
            )
        try:
            version = int(state_dict.get("version", 0))
            epoch, pos = int(state_dict["epoch"]), int(state_dict["position"])
            seed = int(state_dict.get("seed", self.pipeline.seed))
        except (KeyError, TypeError, ValueError) as exc:
            raise LoaderStateError(
                f"malformed atdata_torch loader state ({type(exc).__name__}: {exc}); 'epoch', 'position', "
                "'seed' and 'version' must be integers"
            ) from None
        if version > STATE_VERSION:
            raise LoaderStateError(f"loader state version {version} is newer than this atdata_torch")
        if epoch < 0 or pos < 0:
            raise LoaderStateError(f"malformed atdata_torch loader state: epoch={epoch}, position={pos} (must be >= 0)")
        p = self.pipeline
        mine = p.fingerprint()
        if state_dict["fingerprint"] != mine:
            raise LoaderStateError(
                f"the loader state was saved for another dataset (fingerprint {state_dict['fingerprint']}, this "
                f"dataset's is {mine}): the shards, their sample counts or the shuffle settings differ. Resume "
                "with the same shards, or start a fresh epoch."
            )
        if seed != p.seed or bool(state_dict.get("shuffle", p.shuffle)) != p.shuffle:
            raise LoaderStateError(
                f"the loader state was saved with seed={state_dict.get('seed')} shuffle={state_dict.get('shuffle')}"
                f", this loader has seed={p.seed} shuffle={p.shuffle}; use the same settings to resume"
            )
        self._pending = (epoch, pos)
        self._epoch, self._start, self._yielded = epoch, pos, 0
        self._next_epoch = epoch

    def __repr__(self) -> str:
        p = self.pipeline
        return (
            f"Loader({p.dataset!r}, batch_size={p.batch_size}, shuffle={p.shuffle}, seed={p.seed}, "
            f"rank={p.rank}/{p.world_size}, num_workers={self.num_workers}, last_batch={p.last_batch!r})"
        )
