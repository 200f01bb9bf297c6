"""The schedule of a weighted mixture: which source each position of an epoch reads, as a pure function.

A mixture of sources with probabilities ``p_i`` lays out its epoch in two steps:

1. **The base interleave** (no randomness): source ``i``'s ``k``-th draw has the virtual time ``(k + 0.5) / p_i``;
   positions take the draws in order of time (ties: lower source first). Every prefix of ``K`` positions then
   holds ``p_i * K`` draws of source ``i`` to within ``0.5 + p_i * k / 2`` samples for ``k`` sources (Webster's
   divisor method: a prefix ends at a time ``T`` where each source has ``T * p_i`` draws to within a half, and
   ``T`` is within ``k / 2`` of ``K``), so any block holds its share to within ``1 + p_i * k``, and the
   proportions are exact up to rounding over any stretch, not only on average. The epoch's length follows from the
   stop rule alone (see :func:`epoch_plan`): it depends on the sources' sizes and weights, never on the seed or
   the epoch, so that ``len(loader)`` is the same every epoch and a resume position means the same in each.
2. **The shuffle** (a pure function of ``(seed, epoch)``): the sources' labels are permuted inside consecutive
   blocks of ``mix_block`` positions, so a block keeps each source's exact share while the batches' composition
   varies. Each source's draws keep their own order: source ``i``'s ``k``-th draw is the ``k``-th of its positions.

Nothing here knows ranks or workers: like a single dataset's order, they only choose their slice of this sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from ._order import epoch_rng
from .errors import MixtureError

Ints = NDArray[np.int64]

__all__ = ["MIX_STREAM", "EpochPlan", "Stop", "epoch_plan", "interleave", "source_seed"]

#: How a mixture's epoch ends (see :func:`epoch_plan`).
Stop = Literal["first_exhausted", "all_exhausted"]

#: The random stream of the interleave shuffle (``epoch_rng(seed, epoch, MIX_STREAM)``); ``0`` is the single
#: dataset's order.
MIX_STREAM = 0x6D6978


@dataclass(frozen=True)
class EpochPlan:
    """The shape of every epoch of a mixture (the same for every seed and epoch).

    Attributes:
        length: Positions of an epoch.
        draws: Draws of each source in an epoch.
        passes: Passes over each source an epoch starts (``ceil(draws / samples)``; at least 1). Mixture epoch
            ``e`` reads source ``i``'s own epochs ``e * passes[i] ...``: a fresh permutation per pass.
        labels: The base interleave: the source of each position, before the shuffle.
    """

    length: int
    draws: tuple[int, ...]
    passes: tuple[int, ...]
    labels: Ints


def source_seed(seed: int, source: int) -> int:
    """The seed of source ``source``'s own order in a mixture read with ``seed`` (independent per source).

    Example:
        >>> source_seed(0, 0) != source_seed(0, 1)
        True
    """
    state = np.random.SeedSequence([seed & (2**63 - 1), MIX_STREAM, source]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def _merge(probs: NDArray[np.float64], upto: Ints) -> tuple[Ints, Ints, NDArray[np.float64]]:
    """The base interleave of draws ``0 .. upto[i] - 1`` of each source: (source, draw, time) per position."""
    src = np.repeat(np.arange(len(probs), dtype=np.int64), upto)
    starts = np.cumsum(upto) - upto
    draw = np.arange(int(upto.sum()), dtype=np.int64) - np.repeat(starts, upto)
    time = (draw + 0.5) / probs[src]
    order = np.lexsort((src, time))  # by time; ties: the lower source first
    return src[order], draw[order], time[order]


def _position_of(src: Ints, draw: Ints, source: int, k: int) -> int:
    """The position of source ``source``'s draw ``k`` in a merged interleave."""
    hit = np.flatnonzero((src == source) & (draw == k))
    return int(hit[0])


def epoch_plan(
    samples: Sequence[int], probs: Sequence[float], repeat: Sequence[bool], stop: Stop, cap: int | None
) -> EpochPlan:
    """The length of an epoch and each source's share of it.

    ``"first_exhausted"``: the epoch ends just before a source that does not repeat would be drawn once more than
    it holds (HF ``interleave_datasets`` ``stopping_strategy="first_exhausted"``; sources with ``repeat`` never end
    it). ``"all_exhausted"``: it ends once every source has been read whole, sources that run out earlier starting
    their next pass (HF ``"all_exhausted"``). ``cap``: at most this many positions (an epoch of a fixed size, as
    MosaicML's ``epoch_size``; with every source repeating, the only end).

    Raises:
        MixtureError: when nothing ends the epoch, or a source that must be drawn from holds no samples.

    Example:
        >>> plan = epoch_plan([4, 100], [0.5, 0.5], [False, False], "first_exhausted", None)
        >>> plan.length, plan.draws, plan.labels.tolist()
        (8, (4, 4), [0, 1, 0, 1, 0, 1, 0, 1])
    """
    n = np.asarray(samples, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    reps = list(repeat)
    k = len(n)
    empty = [i for i in range(k) if n[i] == 0]
    if empty:
        raise MixtureError(
            f"source {empty[0]} of the mixture holds no samples (its weight is {p[empty[0]]:g}): give it samples "
            '(its shards may all be damaged, under on_error="skip") or leave it out of the mixture'
        )
    # The entry that ends the epoch: (its time, source, draw, whether it is the last position or the first one past)
    ending: tuple[float, int, int, int] | None
    if stop == "all_exhausted":
        t, i = max((float((n[i] - 0.5) / p[i]), i) for i in range(k))
        ending = (t, i, int(n[i]) - 1, 1)  # the last source's last sample of its first pass
    else:
        stopping = [(float((n[i] + 0.5) / p[i]), i) for i in range(k) if not reps[i]]
        if not stopping and cap is None:
            raise MixtureError(
                "every source of the mixture repeats and no epoch size is set: nothing ends the epoch. Pass "
                'samples=N (the epoch length), let a source stop (repeat=False for it) or stop="all_exhausted"'
            )
        ending = None
        if stopping:
            t, i = min(stopping)
            ending = (t, i, int(n[i]), 0)  # the first draw a non-repeating source cannot serve
    end_time = ending[0] if ending is not None else float("inf")
    if cap is not None:
        end_time = min(end_time, float(cap + k))  # K positions reach past time K - k/2 (the p sum to 1)
    upto = np.floor(end_time * p + 0.5).astype(np.int64) + 2
    src, draw, _ = _merge(p, upto)
    length = len(src)
    if ending is not None and ending[0] <= end_time:
        length = _position_of(src, draw, ending[1], ending[2]) + ending[3]
    if cap is not None:
        length = min(length, cap)
    labels = src[:length]
    draws = np.bincount(labels, minlength=k)
    passes = tuple(max(1, -(-int(d) // int(c))) if c else 1 for d, c in zip(draws.tolist(), n.tolist(), strict=True))
    return EpochPlan(length, tuple(int(d) for d in draws), passes, labels)


def interleave(plan: EpochPlan, seed: int, epoch: int, *, shuffle: bool, mix_block: int) -> tuple[Ints, Ints]:
    """The source and the source's draw number at each position of an epoch: ``(source, draw)`` int64 arrays.

    Example:
        >>> plan = epoch_plan([2, 2], [0.5, 0.5], [False, False], "first_exhausted", None)
        >>> [a.tolist() for a in interleave(plan, 0, 0, shuffle=False, mix_block=8)]
        [[0, 1, 0, 1], [0, 0, 1, 1]]
    """
    labels = plan.labels
    n = len(labels)
    if shuffle and mix_block > 1 and n > 1:
        rng = epoch_rng(seed, epoch, MIX_STREAM)
        full = n // mix_block * mix_block
        head = rng.permuted(labels[:full].reshape(-1, mix_block), axis=1).reshape(-1)  # each block on its own
        labels = np.concatenate([head, rng.permutation(labels[full:])])
    draw = np.empty(n, dtype=np.int64)
    for s in range(len(plan.draws)):
        where = np.flatnonzero(labels == s)
        draw[where] = np.arange(len(where), dtype=np.int64)
    return labels.astype(np.int64, copy=False), draw
