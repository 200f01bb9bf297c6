"""The epoch order: a pure function of (counts, seed, epoch, block size, window)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atdata_torch._order import DEFAULT_BLOCK_SIZE, DEFAULT_WINDOW, epoch_rng, iter_epoch_order

HYP = settings(max_examples=50, deadline=None, database=None)

counts_st = st.lists(st.integers(min_value=0, max_value=60), min_size=0, max_size=8)
seeds = st.integers(min_value=-(2**63), max_value=2**64 - 1)
epochs = st.integers(min_value=0, max_value=1000)
block_sizes = st.integers(min_value=1, max_value=20)
windows = st.integers(min_value=1, max_value=6)


def _pairs(counts: list[int], **kw: object) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for shard_idx, sample_idx in iter_epoch_order(counts, **kw):  # type: ignore[arg-type]
        assert shard_idx.dtype == np.int64
        assert sample_idx.dtype == np.int64
        assert shard_idx.shape == sample_idx.shape
        out.extend(zip(shard_idx.tolist(), sample_idx.tolist(), strict=True))
    return out


def _all_pairs(counts: list[int]) -> list[tuple[int, int]]:
    return [(s, i) for s, n in enumerate(counts) for i in range(n)]


@HYP
@given(counts=counts_st, seed=seeds, epoch=epochs, block_size=block_sizes, window=windows)
def test_shuffled_order_is_a_permutation(
    counts: list[int], seed: int, epoch: int, block_size: int, window: int
) -> None:
    pairs = _pairs(counts, seed=seed, epoch=epoch, block_size=block_size, window=window)
    assert len(pairs) == sum(counts)
    assert sorted(pairs) == _all_pairs(counts)


@HYP
@given(counts=counts_st, seed=seeds, epoch=epochs)
def test_unshuffled_order_is_shard_then_sample_order(counts: list[int], seed: int, epoch: int) -> None:
    assert _pairs(counts, seed=seed, epoch=epoch, shuffle=False) == _all_pairs(counts)


@HYP
@given(counts=counts_st, seed=seeds, epoch=epochs, block_size=block_sizes, window=windows)
def test_order_is_deterministic(counts: list[int], seed: int, epoch: int, block_size: int, window: int) -> None:
    kw = {"seed": seed, "epoch": epoch, "block_size": block_size, "window": window}
    first = list(iter_epoch_order(counts, **kw))  # type: ignore[arg-type]
    second = list(iter_epoch_order(counts, **kw))  # type: ignore[arg-type]
    assert len(first) == len(second)
    for (s1, i1), (s2, i2) in zip(first, second, strict=True):
        np.testing.assert_array_equal(s1, s2)
        np.testing.assert_array_equal(i1, i2)


@HYP
@given(counts=counts_st, seed=seeds, epoch=epochs, block_size=block_sizes, window=windows)
def test_each_chunk_reads_at_most_window_blocks(
    counts: list[int], seed: int, epoch: int, block_size: int, window: int
) -> None:
    """Reads stay local: a chunk covers at most ``window`` blocks of consecutive samples."""
    for shard_idx, sample_idx in iter_epoch_order(counts, seed=seed, epoch=epoch, block_size=block_size, window=window):
        blocks = set(zip(shard_idx.tolist(), (sample_idx // block_size).tolist(), strict=True))
        assert len(blocks) <= window
        assert len(shard_idx) <= window * block_size
        # Every block in the chunk is complete.
        for shard, block in blocks:
            start = block * block_size
            expected = set(range(start, min(start + block_size, counts[shard])))
            pairs = zip(shard_idx.tolist(), sample_idx.tolist(), strict=True)
            got = {i for s, i in pairs if s == shard}
            assert expected <= got


def test_order_depends_on_seed_and_epoch() -> None:
    counts = [50, 30, 20]
    base = _pairs(counts, seed=0, epoch=0, block_size=4, window=3)
    assert base == _pairs(counts, seed=0, epoch=0, block_size=4, window=3)
    assert base != _pairs(counts, seed=1, epoch=0, block_size=4, window=3)
    assert base != _pairs(counts, seed=0, epoch=1, block_size=4, window=3)
    assert base != _all_pairs(counts)
    # Epoch orders are all distinct over several epochs.
    orders = {tuple(_pairs(counts, seed=3, epoch=e, block_size=4, window=3)) for e in range(8)}
    assert len(orders) == 8


def test_defaults_shuffle_inside_a_single_block() -> None:
    counts = [10, 10]  # fewer samples than one default block per shard
    pairs = _pairs(counts, seed=0, epoch=0)
    assert sorted(pairs) == _all_pairs(counts)
    assert pairs != _all_pairs(counts)
    assert DEFAULT_BLOCK_SIZE >= 1
    assert DEFAULT_WINDOW >= 1


def test_block_size_one_and_window_one_keeps_samples_apart() -> None:
    """With one-sample blocks and one-block windows, each chunk is a single sample."""
    chunks = list(iter_epoch_order([3, 4], seed=9, epoch=2, block_size=1, window=1))
    assert [len(s) for s, _ in chunks] == [1] * 7


def test_empty_and_zero_counts() -> None:
    assert _pairs([], seed=0, epoch=0) == []
    assert _pairs([0, 0], seed=0, epoch=0) == []
    assert _pairs([0, 2, 0], seed=0, epoch=0, block_size=1) in ([(1, 0), (1, 1)], [(1, 1), (1, 0)])
    assert _pairs([0, 0], seed=0, epoch=0, shuffle=False) == []


@pytest.mark.parametrize(("block_size", "window"), [(0, 1), (1, 0), (-3, 4)])
def test_invalid_block_size_or_window(block_size: int, window: int) -> None:
    with pytest.raises(ValueError, match="block_size and window must be >= 1"):
        list(iter_epoch_order([3], seed=0, epoch=0, block_size=block_size, window=window))


def test_epoch_rng_streams() -> None:
    a = epoch_rng(1, 2, 0).integers(0, 2**32, 8)
    np.testing.assert_array_equal(a, epoch_rng(1, 2, 0).integers(0, 2**32, 8))
    assert not np.array_equal(a, epoch_rng(1, 2, 1).integers(0, 2**32, 8))
    assert not np.array_equal(a, epoch_rng(1, 3, 0).integers(0, 2**32, 8))
    assert not np.array_equal(a, epoch_rng(2, 2, 0).integers(0, 2**32, 8))
    # Negative and huge seeds are accepted.
    epoch_rng(-1, 0).integers(0, 10)
    epoch_rng(2**70, 0).integers(0, 10)
