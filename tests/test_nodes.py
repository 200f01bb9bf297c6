"""torchdata.nodes source: global order, exact resume through Batcher / ParallelMapper / Prefetcher, epochs."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import torch
from torchdata.nodes import BaseNode, Batcher, Loader, Mapper, ParallelMapper, Prefetcher

import atdata_torch as atd
from atdata_torch.nodes import PipelineNode, source


@atd.packable
class Item:
    x: atd.NDArray
    idx: int


N = 23  # 4 shards of at most 7: not a multiple of the batch sizes used below


@pytest.fixture
def ds(tmp_path: Path) -> atd.Dataset[Item]:
    samples = [Item(x=np.full(3, i, np.float32), idx=i) for i in range(N)]
    return atd.write_samples(samples, tmp_path / "items.tar", maxcount=7, progress=False)


def idxs(batch: Any) -> list[int]:
    """The sample ids of a batch: a list of Items, a SampleBatch or a TensorBatch."""
    if isinstance(batch, list):
        return [s.idx for s in batch]
    return [int(i) for i in batch.idx]


def flat(batches: list[Any]) -> list[int]:
    return [i for b in batches for i in idxs(b)]


def global_order(ds: atd.Dataset[Item], *, shuffle: bool = False, seed: int = 0, epoch: int = 0) -> list[int]:
    pipe = ds.shuffled(seed=seed, rank=0, world_size=1) if shuffle else ds.ordered(rank=0, world_size=1)
    pipe.set_epoch(epoch)
    return [s.idx for s in pipe]


def to_tensor_batch(samples: list[Item]) -> atd.TensorBatch:
    return atd.collate(samples)


Build = Callable[[BaseNode[Any]], BaseNode[Any]]

CHAINS: dict[str, Build] = {
    "batcher": lambda src: Batcher(src, 4, drop_last=False),
    "collate": lambda src: Mapper(Batcher(src, 4, drop_last=False), to_tensor_batch),
    "parallel-thread": lambda src: Prefetcher(
        ParallelMapper(Batcher(src, 4, drop_last=False), to_tensor_batch, num_workers=2, method="thread"), 2
    ),
    "prefetch-first": lambda src: Batcher(Prefetcher(src, 3), 4, drop_last=False),
}


# ---------------------------------------------------------------------------------------------------- order
def test_batcher_yields_every_sample_once_in_global_order(ds: atd.Dataset[Item]) -> None:
    loader = Loader(Batcher(source(ds.ordered()), 4, drop_last=False))
    batches = list(loader)
    assert [len(b) for b in batches] == [4, 4, 4, 4, 4, 3]
    assert flat(batches) == list(range(N))
    assert all(isinstance(s, Item) for b in batches for s in b)


def test_dataset_argument_and_batched_pipeline(ds: atd.Dataset[Item]) -> None:
    # A Dataset is read with the given settings; a batched pipeline yields SampleBatches (columnar decode).
    node = source(ds, batch_size=5)
    batches = list(Loader(Mapper(node, atd.collate)))
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
    assert flat(batches) == list(range(N))
    assert batches[0].x.dtype == torch.float32 and tuple(batches[0].x.shape) == (5, 3)


def test_source_of_pipeline_rejects_settings(ds: atd.Dataset[Item]) -> None:
    with pytest.raises(TypeError, match="shuffle"):
        source(ds.ordered(), shuffle=True)
    with pytest.raises(TypeError, match="Dataset or Pipeline"):
        source([1, 2, 3])  # type: ignore[arg-type]


def test_ranks_split_the_global_order(ds: atd.Dataset[Item]) -> None:
    per_rank = [list(Loader(source(ds, rank=r, world_size=2, last_batch="exact"))) for r in range(2)]
    assert sorted(s.idx for r in per_rank for s in r) == list(range(N))
    # Interleaved step by step they are the global order.
    inter = [s.idx for pair in zip(*per_rank, strict=False) for s in pair] + [per_rank[0][-1].idx]
    assert inter == list(range(N))


# ---------------------------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("chain", list(CHAINS))
def test_mid_epoch_resume_is_exact_at_every_stop(ds: atd.Dataset[Item], chain: str) -> None:
    build = CHAINS[chain]
    full = flat(list(Loader(build(source(ds.shuffled(seed=3))))))
    assert sorted(full) == list(range(N))
    nbatches = -(-N // 4)
    for stop in range(nbatches + 1):
        loader = Loader(build(source(ds.shuffled(seed=3))))
        it = iter(loader)
        head = [next(it) for _ in range(stop)]
        state = loader.state_dict()
        del it
        resumed = Loader(build(source(ds.shuffled(seed=3))))  # a fresh process would build the same chain
        resumed.load_state_dict(state)
        tail = list(resumed)
        got = flat(head) + flat(tail)
        if stop == nbatches:
            # Saved after the last batch: the restored pass is empty, so the Loader starts the next epoch.
            assert flat(head) == full and sorted(flat(tail)) == list(range(N)) and flat(tail) != full
        else:
            assert got == full, (chain, stop)
        # The next pass is the following epoch, complete.
        nxt = flat(list(resumed))
        assert sorted(nxt) == list(range(N))


def test_resume_through_process_mapper(ds: atd.Dataset[Item]) -> None:
    def build(src: BaseNode[Any]) -> BaseNode[Any]:
        return ParallelMapper(Batcher(src, 4, drop_last=False), to_tensor_batch, num_workers=2, method="process")

    full = flat(list(Loader(build(source(ds.ordered())))))
    loader = Loader(build(source(ds.ordered())))
    it = iter(loader)
    head = [next(it) for _ in range(3)]
    state = loader.state_dict()
    del it
    resumed = Loader(build(source(ds.ordered())))
    resumed.load_state_dict(state)
    assert flat(head) + flat(list(resumed)) == full == list(range(N))


def test_state_is_global_and_small(ds: atd.Dataset[Item]) -> None:
    node = source(ds.ordered(rank=1, world_size=2, last_batch="exact"))
    assert next(node).idx == 1
    assert next(node).idx == 3
    st = node.state_dict()
    assert st["epoch"] == 0 and st["position"] == 4  # two global steps of 2 samples
    assert set(st) == {"epoch", "position", "seed", "fingerprint"}
    # Resumed on one rank (elastic): the rest of the global order, nothing repeated or skipped.
    single = source(ds.ordered(rank=0, world_size=1))
    single.reset(st)
    assert [s.idx for s in single] == list(range(4, N))


def test_resume_with_filter_stage_counts_positions(ds: atd.Dataset[Item]) -> None:
    odd = ds.filter(lambda s: s.idx % 2 == 1)
    full = [s.idx for s in Loader(source(odd))]
    assert full == list(range(1, N, 2))
    for stop in range(len(full) + 1):
        node = source(odd)
        head = [next(node).idx for _ in range(stop)]
        st = node.state_dict()
        again = source(odd)
        again.reset(st)
        assert head + [s.idx for s in again] == full, stop


def test_wrong_state_is_refused(ds: atd.Dataset[Item], tmp_path: Path) -> None:
    node = source(ds.shuffled(seed=1))
    next(node)
    st = node.state_dict()
    with pytest.raises(atd.LoaderStateError, match="seed"):
        source(ds.shuffled(seed=2)).reset(st)
    other = atd.write_samples([Item(x=np.zeros(3, np.float32), idx=0)], tmp_path / "other.tar", progress=False)
    with pytest.raises(atd.LoaderStateError, match="another dataset"):
        source(other.shuffled(seed=1)).reset(st)
    with pytest.raises(atd.LoaderStateError, match="not an atdata_torch node state"):
        source(ds).reset({"snapshot": 1})
    with pytest.raises(atd.LoaderStateError, match="malformed"):
        source(ds).reset({"epoch": "one", "position": 0})
    with pytest.raises(atd.LoaderStateError, match="malformed"):
        source(ds).reset({"epoch": 0, "position": -4})


def test_skipped_samples_keep_positions_exact(
    tmp_path: Path, tar_bytes: Callable[[list[tuple[str, bytes]]], bytes]
) -> None:
    payloads = [msgpack.packb({"x": atd.array_to_bytes(np.full(3, i, np.float32)), "idx": i}) for i in range(9)]
    payloads[4] = b"\xc1\xc1 not msgpack"
    path = tmp_path / "bad.tar"
    path.write_bytes(tar_bytes([(f"k{i:02d}.msgpack", p) for i, p in enumerate(payloads)]))
    ds = atd.Dataset[Item](str(path))
    expected = [0, 1, 2, 3, 5, 6, 7, 8]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", atd.SkippedSamplesWarning)
        node = source(ds, on_error="skip")
        assert [s.idx for s in Loader(node)] == expected
        assert node.pipeline.last_report.samples == 1
        for stop in range(len(expected) + 1):
            node = source(ds, on_error="skip")
            head = [next(node).idx for _ in range(stop)]
            again = source(ds, on_error="skip")
            again.reset(node.state_dict())
            assert head + [s.idx for s in again] == expected, stop


# ---------------------------------------------------------------------------------------------------- epochs
def test_shuffled_epochs_differ_and_reproduce(ds: atd.Dataset[Item]) -> None:
    def three_epochs() -> list[list[int]]:
        loader = Loader(Batcher(source(ds, shuffle=True, seed=7), 4, drop_last=False))
        return [flat(list(loader)) for _ in range(3)]

    a, b = three_epochs(), three_epochs()
    assert a == b
    assert len({tuple(e) for e in a}) == 3
    assert all(sorted(e) == list(range(N)) for e in a)
    assert a == [global_order(ds, shuffle=True, seed=7, epoch=e) for e in range(3)]


def test_epoch_follows_pipeline_and_set_epoch(ds: atd.Dataset[Item]) -> None:
    pipe = ds.shuffled(seed=7)
    pipe.set_epoch(2)
    node = source(pipe)
    assert isinstance(node, PipelineNode) and node.epoch == 2
    assert [s.idx for s in Loader(node)] == global_order(ds, shuffle=True, seed=7, epoch=2)
    node.set_epoch(5)
    assert [s.idx for s in Loader(node)] == global_order(ds, shuffle=True, seed=7, epoch=5)
    assert node.epoch == 5
