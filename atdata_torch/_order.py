"""The order of an epoch: a pure function of (seed, epoch, shard sample counts).

Two levels, so reads stay mostly sequential: the samples of each shard are cut into blocks of ``block_size``
consecutive samples; all blocks of the dataset are permuted; consecutive permuted blocks are grouped into windows
of ``window`` blocks, and the samples inside each window are permuted. Nothing here depends on ranks or workers:
they only choose which slice of this global sequence they produce.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np

__all__ = ["DEFAULT_BLOCK_SIZE", "DEFAULT_WINDOW", "buffer_window", "epoch_rng", "fresh_seed", "iter_epoch_order"]

DEFAULT_BLOCK_SIZE = 64
DEFAULT_WINDOW = 16


def fresh_seed() -> int:
    """A new random seed (63 bits from the OS), for a shuffle the caller gave no seed (``Dataset.shuffled()``)."""
    return int.from_bytes(os.urandom(8), "big") >> 1


def buffer_window(buffer_shards: int | None, buffer_samples: int | None, block_size: int) -> int | None:
    """The ``window`` (in blocks) for the original atdata's ``shuffled(buffer_shards=, buffer_samples=)``: samples
    mix within about ``buffer_samples``; ``buffer_shards`` needs no setting (blocks move across all shards).

    Example:
        >>> buffer_window(100, 10_000, 64), buffer_window(None, 10, 64), buffer_window(100, None, 64)
        (157, 1, None)
    """
    for name, value in (("buffer_shards", buffer_shards), ("buffer_samples", buffer_samples)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if buffer_samples is None:
        return None
    return max(1, -(-buffer_samples // block_size))


def epoch_rng(seed: int, epoch: int, *stream: int) -> np.random.Generator:
    """A generator seeded by (seed, epoch, *stream): independent streams for independent purposes."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed & (2**63 - 1), epoch, *stream])))


def iter_epoch_order(
    counts: Sequence[int],
    *,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    block_size: int = DEFAULT_BLOCK_SIZE,
    window: int = DEFAULT_WINDOW,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield the epoch's global sequence in chunks of ``(shard_indices, sample_indices)`` int64 arrays.

    Example:
        >>> chunks = list(iter_epoch_order([3, 2], seed=0, epoch=0, shuffle=False))
        >>> [(s.tolist(), i.tolist()) for s, i in chunks]
        [([0, 0, 0, 1, 1], [0, 1, 2, 0, 1])]
    """
    if block_size < 1 or window < 1:
        raise ValueError("block_size and window must be >= 1")
    counts_arr = np.asarray(counts, dtype=np.int64)
    if not shuffle:
        shards = np.repeat(np.arange(len(counts_arr), dtype=np.int64), counts_arr)
        starts = np.cumsum(counts_arr) - counts_arr
        within = np.arange(int(counts_arr.sum()), dtype=np.int64) - np.repeat(starts, counts_arr)
        yield shards, within
        return
    nblocks = (counts_arr + block_size - 1) // block_size
    block_shard = np.repeat(np.arange(len(counts_arr), dtype=np.int64), nblocks)
    block_first = np.arange(int(nblocks.sum()), dtype=np.int64) - np.repeat(np.cumsum(nblocks) - nblocks, nblocks)
    block_first *= block_size
    block_len = np.minimum(block_size, counts_arr[block_shard] - block_first)
    rng = epoch_rng(seed, epoch, 0)
    perm = rng.permutation(len(block_shard))
    for w in range(0, len(perm), window):
        sel = perm[w : w + window]
        lens = block_len[sel]
        shard_idx = np.repeat(block_shard[sel], lens)
        offsets = np.arange(int(lens.sum()), dtype=np.int64) - np.repeat(np.cumsum(lens) - lens, lens)
        sample_idx = np.repeat(block_first[sel], lens) + offsets
        p = rng.permutation(len(shard_idx))
        yield shard_idx[p], sample_idx[p]
