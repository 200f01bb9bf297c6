"""Weighted mixtures: ``atd.mix([ds_a, ds_b], weights=[3, 1])`` reads several datasets as one, in set proportions.

A :class:`Mixture` is a :class:`~atdata_torch.Dataset` (``.loader()``, ``.shuffled()``, ``atd.nodes.source()``, the
Lightning DataModule and configs take it as they take any dataset) whose epoch is laid out by a schedule (see
``atdata_torch._mix_schedule``): each position of the epoch names a source and a sample of that source, so the
reader slices it per rank and worker and resumes it exactly as it does a single dataset's order. What holds:

- The order is a pure function of ``(seed, epoch)`` (the loader's ``seed``: it shuffles each source's own order
  and the interleave of the sources). Ranks and workers only choose their slice of it; every rank yields the same
  number of batches; a ``state_dict()`` resumes mid-epoch on any number of ranks and workers.
- Proportions are exact up to rounding: every block of ``mix_block`` consecutive positions (and, unshuffled, every
  prefix of the epoch) holds each source's share of it to within a few samples (at most ``1 + k * p`` for a source of
  weight ``p`` among ``k`` sources: within 2 for two or three sources), however long the block.
- The epoch's length depends only on the sources' sizes, the weights and the stop rule (``len(loader)`` is the
  same every epoch): ``stop="first_exhausted"`` (default) ends it when a source that does not ``repeat`` runs out;
  ``stop="all_exhausted"`` when every source has been read whole, the others repeating meanwhile; ``samples=N``
  caps it at ``N``. A source that repeats starts a fresh pass (its next own epoch, a new permutation) each time it
  runs out.
- ``source_field="source"`` adds the source's index (its place in the list) to every batch as an int64 column.

Sources must share batches: the same sample type and the same ``map()`` / ``filter()`` / lens stages (apply
stages to the mixture instead: ``atd.mix([a, b]).map(fn)``), and distinct shards.

Example:
    >>> import numpy as np, os, tempfile
    >>> import atdata_torch as atd
    >>> @atd.packable
    ... class Tok:
    ...     ids: atd.NDArray
    >>> d = tempfile.mkdtemp()
    >>> web = atd.write_samples([Tok(ids=np.zeros(4, np.int32)) for _ in range(300)], os.path.join(d, "web.tar"),
    ...                         progress=False)
    >>> code = atd.write_samples([Tok(ids=np.ones(4, np.int32)) for _ in range(50)], os.path.join(d, "code.tar"),
    ...                          progress=False)
    >>> mixed = atd.mix([web, code], weights=[3, 1], repeat=[False, True], source_field="source")
    >>> len(mixed)                          # web read once, code repeated as needed: 300 + 100
    400
    >>> loader = mixed.loader(batch_size=40, seed=0)
    >>> [int((b.source == 1).sum()) for b in loader][:4]     # code's share of each batch: 10 on average
    [11, 9, 11, 8]
    >>> sum(int((b.source == 1).sum()) for b in loader)      # a quarter of every epoch, exactly
    100
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, get_args

import numpy as np
from numpy.typing import NDArray

from ._batch import SampleBatch
from ._mix_schedule import EpochPlan, Stop, epoch_plan, interleave, source_seed
from ._order import iter_epoch_order
from ._reader import Record
from .dataset import Dataset
from .errors import MixtureError
from .options import ReadOptions

Ints = NDArray[np.int64]

__all__ = ["DEFAULT_MIX_BLOCK", "Mixture", "Stop", "mix"]

#: Positions per block of the interleave shuffle (each block holds each source's share).
DEFAULT_MIX_BLOCK = 1024


if TYPE_CHECKING:
    _Base = Dataset[Any]
else:
    _Base = Dataset  # Dataset[T] at run time builds a typed dataset (see dataset._TypedDataset), not a base


class Mixture(_Base):
    """Several datasets read as one, each a set share of every stretch of the epoch (built by :func:`mix`).

    Attributes:
        parts: The source datasets, in order (a batch's ``source`` column indexes this list).
        weights: The normalized weights (they sum to 1).
        repeat: Per source: whether it starts a new pass when it runs out (else it ends the epoch).
        stop: ``"first_exhausted"`` or ``"all_exhausted"``.
        samples: The epoch-length cap (``None``: the stop rule alone).
        mix_block: Positions per block of the interleave shuffle.
        source_field: The batch column that carries each sample's source index (``None``: none).
    """

    parts: tuple[Dataset[Any], ...]
    weights: tuple[float, ...]
    repeat: tuple[bool, ...]
    stop: Stop
    samples: int | None
    mix_block: int
    source_field: str | None
    _offsets: tuple[int, ...]
    _shard_source: Ints
    _plans: dict[tuple[int, ...], EpochPlan]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_plans"] = {}  # the schedule (one entry per position) is rebuilt where it is read, not sent
        return state

    # ------------------------------------------------------------------------------------------------ the plan
    def _source_counts(self, counts: Sequence[int]) -> list[list[int]]:
        """The shard counts of each source, cut from the counts of every shard of the mixture."""
        o = self._offsets
        return [list(counts[o[i] : o[i + 1]]) for i in range(len(self.parts))]

    def plan_of(self, counts: Sequence[int]) -> EpochPlan:
        """The shape of every epoch for these per-shard sample counts (cached).

        Raises:
            MixtureError: when a source that is drawn from has no samples, or nothing ends the epoch.
        """
        key = tuple(int(c) for c in counts)
        plan = self._plans.get(key)
        if plan is None:
            sizes = [sum(c) for c in self._source_counts(key)]
            plan = epoch_plan(sizes, self.weights, self.repeat, self.stop, self.samples)
            self._plans = {key: plan}  # one entry: the counts change only under on_error="skip" salvage
        return plan

    def epoch_length(self, counts: list[int]) -> int:
        """Positions of an epoch, for these per-shard sample counts (the same for every seed and epoch)."""
        return self.plan_of(counts).length

    def epoch_sequence(self, counts: list[int], epoch: int, options: ReadOptions) -> tuple[Ints, Ints]:
        """The global sequence of ``epoch``: ``(shard_index, sample_index)`` arrays over the mixture's shards.

        Position ``j`` holds source ``s``'s draw ``k``: pass ``k // n_s`` of the source (its own epoch
        ``epoch * passes[s] + k // n_s``, seeded by :func:`~atdata_torch._mix_schedule.source_seed`), sample
        ``k % n_s`` of that pass's order."""
        plan = self.plan_of(counts)
        src, draw = interleave(plan, options.seed, epoch, shuffle=options.shuffle, mix_block=self.mix_block)
        shard_of = np.empty(plan.length, dtype=np.int64)
        index_of = np.empty(plan.length, dtype=np.int64)
        for s, shard_counts in enumerate(self._source_counts(counts)):
            where = np.flatnonzero(src == s)
            if len(where) == 0:
                continue
            k = draw[where]  # increasing: a source's draws come in position order
            n = sum(shard_counts)
            bounds = np.searchsorted(k, np.arange(plan.passes[s] + 1, dtype=np.int64) * n)
            for q in range(plan.passes[s]):
                lo, hi = int(bounds[q]), int(bounds[q + 1])
                if lo == hi:
                    continue
                chunks = list(
                    iter_epoch_order(
                        shard_counts,
                        seed=source_seed(options.seed, s),
                        epoch=epoch * plan.passes[s] + q,
                        shuffle=options.shuffle,
                        block_size=options.block_size,
                        window=options.window,
                    )
                )
                r = k[lo:hi] - q * n
                at = where[lo:hi]
                shard_of[at] = np.concatenate([c[0] for c in chunks])[r] + self._offsets[s]
                index_of[at] = np.concatenate([c[1] for c in chunks])[r]
        return shard_of, index_of

    def open_shards(self, options: ReadOptions) -> int:
        """How many shards a pass keeps mapped: every source reads its own stretch of shards at once."""
        per = options.window + 2 if options.shuffle else 2
        return per * len(self.parts)

    def order_settings(self) -> dict[str, Any]:
        """What the order depends on besides the shards and the read options (it goes into the fingerprint)."""
        return {
            "parts": list(self._offsets),
            "weights": [round(w, 12) for w in self.weights],
            "repeat": list(self.repeat),
            "stop": self.stop,
            "samples": self.samples,
            "mix_block": self.mix_block,
        }

    def label_rows(self, recs: list[Record], shard_of: Ints, lossy: bool) -> tuple[list[Record], Any]:
        """The source of each record read for a batch (``None`` without ``source_field``); when rows may be lost
        (``lossy``: a filter, or ``on_error="skip"``), the records' keys remember their rows (:class:`_RowKey`)."""
        if self.source_field is None:
            return recs, None
        labels = self._shard_source[shard_of]  # one vectorized lookup per batch
        if lossy:
            recs = [r._replace(key=_RowKey.of(r.key, i)) for i, r in enumerate(recs)]
        return recs, labels

    def label_batch(self, batch: SampleBatch[Any], labels: Any, lossy: bool) -> None:
        """Add the sources of the batch's rows as its ``source_field`` column (int64)."""
        assert self.source_field is not None
        if lossy:
            keys = batch.keys or []
            rows = [k.row if isinstance(k, _RowKey) else -1 for k in keys]
            if -1 in rows:
                raise MixtureError(
                    "a mixture could not tell the sources of a batch's rows (a map() or a lens made new sample "
                    f"keys); drop source_field={self.source_field!r} or keep the keys"
                )
            batch.keys = [str.__str__(k) for k in keys]
            labels = labels[np.asarray(rows, dtype=np.int64)]
        elif len(labels) != len(batch):
            raise MixtureError(f"a batch of {len(batch)} rows was read from {len(labels)} records (a lost row)")
        batch._columns[self.source_field] = labels

    # ------------------------------------------------------------------------------------------------ sizes
    def sample_count(self) -> int:
        """Positions of one epoch of the mixture (not the sum of the sources: see the stop rule)."""
        return self.epoch_length([ix.count for ix in self.shard_indexes()])

    def select_range(self, start: int, stop: int) -> Dataset[Any]:
        """Not for a mixture: select on the sources, then mix them."""
        raise MixtureError(
            f"select_range({start}, {stop}) of a mixture: the range of a weighted schedule is no dataset; select "
            "ranges of the sources, then mix them (atd.mix([a.select_range(...), b.select_range(...)], ...))"
        )

    def __repr__(self) -> str:
        st = getattr(self.sample_type, "__name__", str(self.sample_type))
        stages = "".join(f".{k}(...)" for k, _ in self._stages[len(self.parts[0]._stages) :])
        weights = ", ".join(f"{w:.3g}" for w in self.weights)
        return f"Mixture[{st}]({len(self.parts)} sources, weights=[{weights}], stop={self.stop!r}){stages}"


class _RowKey(str):
    """A sample key that remembers its row among the records read for a batch; it prints as the key."""

    row: int

    @classmethod
    def of(cls, key: str, row: int) -> _RowKey:
        out = cls(key)
        out.row = row
        return out

    def __reduce__(self) -> tuple[Any, ...]:
        return (_RowKey.of, (str.__str__(self), self.row))


def _check_weights(weights: Sequence[float] | None, k: int) -> tuple[float, ...]:
    if weights is None:
        return tuple(1.0 / k for _ in range(k))
    try:
        w = [float(x) for x in weights]
    except (TypeError, ValueError):
        raise MixtureError(f"mix(): weights must be numbers, got {weights!r}") from None
    if len(w) != k:
        raise MixtureError(f"mix(): {len(w)} weights for {k} datasets; give one weight per dataset")
    bad = [x for x in w if not (math.isfinite(x) and x > 0)]
    if bad:
        raise MixtureError(
            f"mix(): weights must be finite and > 0, got {bad[0]!r}; leave a dataset out instead of weighting it 0"
        )
    total = sum(w)
    return tuple(x / total for x in w)


def _check_repeat(repeat: bool | Sequence[bool], stop: str, k: int) -> tuple[bool, ...]:
    if stop not in get_args(Stop):
        raise MixtureError(f"mix(): stop must be 'first_exhausted' or 'all_exhausted', got {stop!r}")
    reps = (bool(repeat),) * k if isinstance(repeat, (bool, np.bool_)) else tuple(bool(r) for r in repeat)
    if len(reps) != k:
        raise MixtureError(f"mix(): {len(reps)} repeat flags for {k} datasets; give one per dataset (or one bool)")
    if stop == "all_exhausted":
        if isinstance(repeat, (bool, np.bool_)) or all(reps):
            return (True,) * k
        raise MixtureError(
            "mix(): stop='all_exhausted' repeats every source until the last one has been read whole; per-source "
            "repeat flags only apply to stop='first_exhausted'"
        )
    return reps


def _check_parts(datasets: Sequence[Dataset[Any]], source_field: str | None) -> list[Dataset[Any]]:
    parts = list(datasets)
    if not parts:
        raise MixtureError("mix() needs at least one dataset")
    for i, p in enumerate(parts):
        if not isinstance(p, Dataset):
            raise MixtureError(f"mix(): dataset {i} is a {type(p).__name__}, not an atdata_torch Dataset")
        if isinstance(p, Mixture):
            raise MixtureError(f"mix(): dataset {i} is itself a mixture; mix its sources with combined weights")
    first = parts[0]
    for i, p in enumerate(parts[1:], 1):
        if p.sample_type is not first.sample_type or p._stages != first._stages:
            raise MixtureError(
                f"mix(): dataset {i} ({p!r}) does not share batches with dataset 0 ({first!r}): the sample types "
                "and the map/filter/lens stages must be the same. Read the sources as one type and apply the "
                "stages to the mixture (atd.mix([a, b]).map(fn))"
            )
    fields = getattr(first.sample_type, "__atdata_fields__", ())
    if source_field is not None and any(f.name == source_field for f in fields):
        raise MixtureError(f"mix(): source_field={source_field!r} is a field of {first.sample_type.__name__}")
    return parts


def _check_sizes(reps: tuple[bool, ...], stop: str, samples: int | None, mix_block: int) -> None:
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 1):
        raise MixtureError(f"mix(): samples must be a positive int (the epoch length) or None, got {samples!r}")
    if stop == "first_exhausted" and all(reps) and samples is None:
        raise MixtureError(
            "mix(): every source repeats and no epoch size is set, so nothing ends the epoch: pass samples=N (the "
            "epoch length), let a source stop (repeat=[..., False, ...]) or use stop='all_exhausted'"
        )
    if isinstance(mix_block, bool) or not isinstance(mix_block, int) or mix_block < 1:
        raise MixtureError(f"mix(): mix_block must be an int >= 1, got {mix_block!r}")


def mix(
    datasets: Sequence[Dataset[Any]],
    weights: Sequence[float] | None = None,
    *,
    stop: Stop = "first_exhausted",
    repeat: bool | Sequence[bool] = False,
    samples: int | None = None,
    mix_block: int = DEFAULT_MIX_BLOCK,
    source_field: str | None = None,
) -> Mixture:
    """A weighted mixture of datasets: one dataset whose every stretch holds each source in proportion.

    Args:
        datasets: The sources (same sample type and stages, distinct shards). Their order is the source index.
        weights: Relative weights, one per dataset, all > 0 (normalized; default: equal).
        stop: ``"first_exhausted"``: the epoch ends when a source that does not repeat runs out (every sample at
            most once per epoch; HF ``interleave_datasets``' default, LitData ``iterate_over_all=False``).
            ``"all_exhausted"``: it ends when every source has been read whole, those that run out earlier
            repeating (HF ``"all_exhausted"``).
        repeat: With ``"first_exhausted"``: per source (or one bool for all), whether it starts a new pass when it
            runs out instead of ending the epoch (MosaicML ``Stream(repeat=...)``): e.g. a small, heavily weighted
            source cycles while a large corpus is read once. If every source repeats, give ``samples``.
        samples: Cap the epoch at this many samples (MosaicML ``epoch_size``; with ``repeat=True``, a fixed-size
            epoch over sources of any size).
        mix_block: The interleave of sources is shuffled within consecutive blocks of this many positions (each
            block keeps every source's share to within ``1 + k * p`` samples, ``k`` sources of weight ``p``); ``1``
            keeps the fixed, evenly spread interleave. The seed and ``shuffle`` are the loader's.
        source_field: Add each sample's source index to every batch under this name (an int64 column; a tensor
            after ``collate``). Batched reads only. ``None``: no column.

    Returns:
        A :class:`Mixture` (a ``Dataset``: ``.loader()``, ``.shuffled()``, ``atd.nodes.source()``...).

    Raises:
        MixtureError: for bad weights or flags, datasets that cannot share batches, or a field name that is taken.

    Example:
        >>> # train = atd.mix([web, books, code], weights=[0.6, 0.3, 0.1], repeat=[False, False, True])
        >>> # for batch in train.loader(batch_size=256, num_workers=4, seed=0): ...
    """
    parts = _check_parts(datasets, source_field)
    k = len(parts)
    probs = _check_weights(weights, k)
    reps = _check_repeat(repeat, stop, k)
    _check_sizes(reps, stop, samples, mix_block)
    try:
        joined = Dataset.concat(parts)
    except ValueError as exc:
        raise MixtureError(
            f"mix(): {exc}: a shard can feed only one source of a mixture; mix disjoint datasets (to weight a "
            "dataset more, raise its weight or let it repeat)"
        ) from None
    out: Mixture = object.__new__(Mixture)
    out.__dict__.update(joined.__dict__)
    sizes = [len(p.list_shards()) for p in parts]
    out.parts = tuple(parts)
    out.weights, out.repeat, out.stop, out.samples = probs, reps, stop, samples
    out.mix_block, out.source_field = mix_block, source_field
    out._offsets = tuple(int(x) for x in np.concatenate([[0], np.cumsum(sizes)]))
    out._shard_source = np.repeat(np.arange(k, dtype=np.int64), sizes)
    out._plans = {}
    return out
