"""Behaviour the original atdata's users rely on (issue 17): an unseeded ``shuffled()`` draws a new order per call,
an ordered pass yields the samples before a damaged shard first, ``SampleBatch(samples)``, the ``Packable``
protocol, ``streaming=`` accepted, and the CLI's ``version`` command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from torch.utils.data import DataLoader

import atdata_torch as atdata

N = 40


@atdata.packable
class BhvRec:
    n: int
    x: atdata.NDArray


def _write(tmp_path: Path, n: int = N, maxcount: int = 10, name: str = "b.tar") -> atdata.Dataset[BhvRec]:
    samples = [BhvRec(n=i, x=np.full(2, i, np.float32)) for i in range(n)]
    return atdata.write_samples(samples, str(tmp_path / name), maxcount=maxcount, progress=False)


def _ns(items: object) -> list[int]:
    """The ``n`` of every sample of these samples or batches (SampleBatch, or the loader's TensorBatch)."""
    out: list[int] = []
    for item in items:  # type: ignore[attr-defined]
        n = item.n
        out.extend(int(v) for v in n) if isinstance(n, (list, np.ndarray)) else out.append(int(n))
    return out


# ------------------------------------------------------------------------------------------------ shuffled()
def test_unseeded_shuffled_draws_a_new_order_per_call(tmp_path: Path) -> None:
    ds = _write(tmp_path)
    orders = {tuple(_ns(ds.shuffled(block_size=1))) for _ in range(4)}
    assert len(orders) > 1  # (40! orders: four equal draws would be a broken seed)
    pipes = [ds.shuffled() for _ in range(3)]
    assert len({p.seed for p in pipes}) == 3


def test_a_seed_keeps_it_reproducible(tmp_path: Path) -> None:
    ds = _write(tmp_path)
    a, b = ds.shuffled(block_size=1, seed=7), ds.shuffled(block_size=1, seed=7)
    assert _ns(a) == _ns(b) and sorted(_ns(a)) == list(range(N))
    drawn = ds.shuffled(block_size=1)
    first = _ns(drawn)
    assert _ns(ds.shuffled(block_size=1, seed=drawn.seed)) == first  # the drawn seed replays the order


def test_the_loaders_seed_epoch_contract_is_unchanged(tmp_path: Path) -> None:
    ds = _write(tmp_path)
    one = _ns(ds.loader(batch_size=8, shuffle=True, block_size=1))
    two = _ns(ds.loader(batch_size=8, shuffle=True, block_size=1))
    assert (
        one == two and sorted(one) == list(range(N)) and one != list(range(N))
    )  # loader(seed=0) by default: the same order for the same (seed, epoch)


def test_a_drawn_seed_is_shared_by_the_dataloader_workers(tmp_path: Path) -> None:
    ds = _write(tmp_path)
    pipe = ds.shuffled(4)
    got = _ns(DataLoader(pipe, batch_size=None, num_workers=2, timeout=60))
    assert sorted(got) == list(range(N))  # each sample once: the workers read one order


# ------------------------------------------------------------------------------------------------ damaged shards
def _damage_last(ds: atdata.Dataset[BhvRec], how: str) -> str:
    shard = ds.list_shards()[-1]
    data = Path(shard).read_bytes()
    Path(shard).write_bytes(data[:2600] if how == "truncate" else b"garbage!" * 200)
    os.remove(shard + ".idx.json")
    return shard


@pytest.mark.parametrize("how", ["truncate", "junk"])
@pytest.mark.parametrize("batch_size", [None, 3])
def test_a_damaged_later_shard_lets_the_good_samples_come_first(
    tmp_path: Path, how: str, batch_size: int | None
) -> None:
    ds = _write(tmp_path, n=30)
    bad = _damage_last(ds, how)
    got: list[int] = []
    with pytest.raises(atdata.ShardFormatError) as info:
        for item in atdata.Dataset[BhvRec](ds.list_shards()).ordered(batch_size):
            got.extend(_ns([item]))
    assert info.value.shard == bad
    assert got == list(range(20))  # every sample of the good shards, then the error (none of the damaged one)


def test_a_damaged_first_shard_raises_before_any_sample(tmp_path: Path) -> None:
    ds = _write(tmp_path, n=20)
    first = ds.list_shards()[0]
    Path(first).write_bytes(b"garbage!" * 200)
    os.remove(first + ".idx.json")
    with pytest.raises(atdata.ShardFormatError):
        next(iter(atdata.Dataset[BhvRec](ds.list_shards()).ordered()))


def test_a_damaged_shard_with_workers_still_raises(tmp_path: Path) -> None:
    ds = _write(tmp_path, n=30)
    _damage_last(ds, "junk")
    loader = DataLoader(atdata.Dataset[BhvRec](ds.list_shards()).ordered(5), batch_size=None, num_workers=2, timeout=60)
    got: list[int] = []
    with pytest.raises(atdata.ShardFormatError):
        for b in loader:
            got.extend(_ns([b]))
    assert got == list(range(len(got))) and len(got) >= 10


def test_skip_mode_and_shuffled_behave_as_before(tmp_path: Path) -> None:
    ds = _write(tmp_path, n=30)
    _damage_last(ds, "junk")
    again = atdata.Dataset[BhvRec](ds.list_shards())
    with pytest.raises(atdata.ShardFormatError):
        next(iter(again.shuffled(seed=0)))  # a shuffled pass needs every index before its first sample
    with pytest.warns(atdata.SkippedSamplesWarning):
        assert _ns(again.ordered(on_error="skip")) == list(range(20))


# ------------------------------------------------------------------------------------------------ SampleBatch
def test_sample_batch_from_samples_without_a_size() -> None:
    batch = atdata.SampleBatch([BhvRec(n=1, x=np.zeros(2, np.float32)), BhvRec(n=2, x=np.ones(2, np.float32))])
    assert len(batch) == 2 and batch.n == [1, 2] and batch.x.shape == (2, 2)
    assert batch.sample_type is BhvRec
    typed = atdata.SampleBatch[BhvRec]([BhvRec(n=3, x=np.zeros(2, np.float32))])
    assert typed.n == [3]
    dicts = atdata.SampleBatch([atdata.DictSample(a=1), atdata.DictSample(a=2)])
    assert dicts.a == [1, 2]
    with pytest.raises(TypeError, match="size"):
        atdata.SampleBatch({"n": [1]})
    assert len(atdata.SampleBatch({"n": [1]}, 1)) == 1  # ours, unchanged


# ------------------------------------------------------------------------------------------------ Packable
def test_packable_protocol() -> None:
    class Custom:
        packed = b"\x80"
        as_wds: ClassVar[dict[str, object]] = {"__key__": "k", "msgpack": b"\x80"}

        @classmethod
        def from_data(cls, data: dict[str, object]) -> Custom:
            return cls()

        @classmethod
        def from_bytes(cls, bs: bytes) -> Custom:
            return cls()

    assert isinstance(Custom(), atdata.Packable)
    assert not isinstance(object(), atdata.Packable)
    del Custom.as_wds
    assert not isinstance(Custom(), atdata.Packable)
    from atdata_torch._protocols import DataSource

    assert DataSource is atdata.DataSource


def test_our_samples_are_packable() -> None:
    assert isinstance(BhvRec(n=1, x=np.zeros(1)), atdata.Packable)
    assert isinstance(atdata.DictSample(a=1), atdata.Packable)


# ------------------------------------------------------------------------------------------------ streaming=
def test_streaming_is_accepted(tmp_path: Path) -> None:
    _write(tmp_path, name="train.tar")
    dd = atdata.load_dataset(str(tmp_path), BhvRec, streaming=True)
    assert isinstance(dd, atdata.DatasetDict) and dd.streaming is True
    assert _ns(dd["train"].ordered()) == list(range(N))
    assert atdata.load_dataset(str(tmp_path), BhvRec).streaming is False
    one = atdata.load_dataset(str(tmp_path), BhvRec, split="train", streaming=True)
    assert len(one) == N
    assert atdata.DatasetDict({}, None, streaming=True).streaming is True
    assert atdata.DatasetDict(streaming=False).streaming is False
    from atdata_torch._hf_api import DatasetDict, load_dataset

    assert (DatasetDict, load_dataset) == (atdata.DatasetDict, atdata.load_dataset)


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_version_command_without_importing_torch() -> None:
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "atdata_torch.cli", "version"], capture_output=True, text=True, timeout=120, env=env
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == f"atdata-torch {atdata.__version__}"
    imported = {line.rsplit("|", 1)[1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "atdata_torch.cli" in imported
    assert not any(m == "torch" or m.startswith("torch.") for m in imported)


def test_shuffled_takes_the_originals_buffer_keywords(tmp_path: Path) -> None:
    ds = _write(tmp_path)
    pipe = ds.shuffled(buffer_shards=100, buffer_samples=10_000, batch_size=4)
    assert pipe.window == -(-10_000 // pipe.block_size) and pipe.batch_size == 4
    assert sorted(_ns(pipe)) == list(range(N))
    assert ds.shuffled(buffer_samples=1, block_size=1).window == 1
    assert ds.shuffled(buffer_samples=500, window=3).window == 3  # an explicit window wins
    with pytest.raises(ValueError, match="buffer_samples"):
        ds.shuffled(buffer_samples=0)
