"""EpochReader (atdata_torch._epoch): one epoch's order, sliced once for every rank and worker, read as records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import atdata_torch as atd
from atdata_torch._epoch import CHUNK, EpochReader
from atdata_torch._pipeline import SkipReport
from atdata_torch._topology import Topology
from atdata_torch.options import ReadOptions


@atd.packable
class EpochRec:
    x: atd.NDArray
    label: int


@pytest.fixture
def ds(tmp_path: Path) -> atd.Dataset[EpochRec]:
    recs = [EpochRec(x=np.full(4, i, np.float32), label=i) for i in range(23)]
    return atd.write_samples(recs, tmp_path / "e.tar", maxcount=5, progress=False)  # type: ignore[no-any-return]


def _reader(ds: atd.Dataset[Any], **kw: Any) -> tuple[EpochReader, list[Any]]:
    notes: list[Any] = []
    return EpochReader(ds, ReadOptions(**kw), lambda report, exc, **k: notes.append(exc), lambda *a: None), notes


def test_the_dataset_is_a_read_plan(ds: atd.Dataset[EpochRec]) -> None:
    reader, _ = _reader(ds)
    assert reader.total() == 23
    assert [ix.count for ix in reader.indexes()] == [5, 5, 5, 5, 3]


@pytest.mark.parametrize("batch_size", [None, 4])
@pytest.mark.parametrize("last_batch", ["exact", "drop", "pad"])
def test_groups_of_all_ranks_and_workers_tile_the_epoch(
    ds: atd.Dataset[EpochRec], batch_size: int | None, last_batch: str
) -> None:
    reader, _ = _reader(ds, batch_size=batch_size, shuffle=True, last_batch=last_batch)
    n = reader.total()
    for world in (1, 2, 3):
        got = [  # two DataLoader workers per rank
            int(p)
            for rank in range(world)
            for w in range(2)
            for group in reader.groups(n, 0, Topology(rank, world, w, 2))
            for p in group
        ]
        if last_batch == "exact":
            assert sorted(got) == list(range(n))
        elif last_batch == "drop":
            g = (batch_size or 1) * world
            assert sorted(got) == list(range(n // g * g))
        else:
            assert set(got) == set(range(n))
        for rank in range(world):
            steps = reader.count_for_rank(n, 0, rank, world)
            one = list(reader.groups(n, 0, Topology(rank, world)))
            assert len(one) == (steps if batch_size else -(-steps // CHUNK))


def test_a_pass_reads_the_records_of_its_positions(ds: atd.Dataset[EpochRec]) -> None:
    reader, notes = _reader(ds, batch_size=4)
    with reader.begin(0, 6, Topology(0, 1), SkipReport()) as epass:
        assert epass.placement is None
        first = epass.groups[0]
        recs, kept = epass.read(first)
    assert kept == [6, 7, 8, 9]
    assert [r.key for r in recs] == [ds.shard_indexes()[s].keys[i] for s, i in ((1, 1), (1, 2), (1, 3), (1, 4))]
    assert notes == []


def test_epoch_order_is_cached_per_epoch_and_not_pickled(ds: atd.Dataset[EpochRec]) -> None:
    import pickle

    reader, _ = _reader(ds, shuffle=True, seed=3)
    a = reader.epoch_order(1)
    assert reader.epoch_order(1)[0] is a[0]
    assert not np.array_equal(reader.epoch_order(2)[1], a[1])
    state = EpochReader.__getstate__(reader)
    assert state["_order_cache"] is None
    assert pickle.loads(pickle.dumps(ReadOptions(seed=3))) == ReadOptions(seed=3)
