"""Rank and world size: resolved once in the main process (explicit > torch.distributed > RANK/WORLD_SIZE >
LOCAL_RANK/NODE_RANK/LOCAL_WORLD_SIZE > (0, 1)) and carried into DataLoader workers, never re-read there."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist
from numpy.typing import NDArray
from torch.utils.data import DataLoader

import atdata_torch as atd
from atdata_torch._topology import Topology, resolve_rank_world, worker_slot

ENV_VARS = ["RANK", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE"]


@atd.packable
class TopoRec:
    x: NDArray[np.float32]
    label: int


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    assert not dist.is_initialized()


def _env(monkeypatch: pytest.MonkeyPatch, **values: int | str) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, str(value))


def _fake_process_group(monkeypatch: pytest.MonkeyPatch, rank: int, world: int) -> None:
    """Make torch.distributed look initialized (no process group is created)."""
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda *a, **k: rank)
    monkeypatch.setattr(dist, "get_world_size", lambda *a, **k: world)


# ------------------------------------------------------------------------------------------------
# precedence


def test_default_is_a_single_process() -> None:
    assert resolve_rank_world() == (0, 1)
    assert resolve_rank_world(None, None) == (0, 1)


def test_explicit_values_win(monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, RANK=1, WORLD_SIZE=2, LOCAL_RANK=1, LOCAL_WORLD_SIZE=2)
    _fake_process_group(monkeypatch, 3, 4)
    assert resolve_rank_world(2, 5) == (2, 5)
    assert resolve_rank_world(0, 1) == (0, 1)


def test_one_explicit_value_completes_the_detected_other(monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, RANK=1, WORLD_SIZE=4)
    assert resolve_rank_world(3, None) == (3, 4)
    assert resolve_rank_world(None, 2) == (1, 2)
    _fake_process_group(monkeypatch, 2, 8)
    assert resolve_rank_world(5, None) == (5, 8)
    assert resolve_rank_world(None, 3) == (2, 3)


def test_torch_distributed_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, RANK=1, WORLD_SIZE=2, LOCAL_RANK=0, NODE_RANK=0, LOCAL_WORLD_SIZE=2)
    _fake_process_group(monkeypatch, 3, 4)
    assert resolve_rank_world() == (3, 4)


def test_distributed_available_but_not_initialized_falls_back_to_env(monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, RANK=1, WORLD_SIZE=2)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    assert resolve_rank_world() == (1, 2)


def test_rank_and_world_size_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, RANK=2, WORLD_SIZE=3)
    assert resolve_rank_world() == (2, 3)


def test_rank_wins_over_local_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, RANK=3, WORLD_SIZE=4, LOCAL_RANK=1, NODE_RANK=0, LOCAL_WORLD_SIZE=2)
    assert resolve_rank_world() == (3, 4)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        # Lightning's DDP launcher: WORLD_SIZE, NODE_RANK, LOCAL_RANK (and no RANK)
        ({"WORLD_SIZE": 4, "NODE_RANK": 1, "LOCAL_RANK": 1, "LOCAL_WORLD_SIZE": 2}, (3, 4)),
        ({"WORLD_SIZE": 4, "NODE_RANK": 0, "LOCAL_RANK": 1, "LOCAL_WORLD_SIZE": 2}, (1, 4)),
        ({"WORLD_SIZE": 6, "GROUP_RANK": 2, "LOCAL_RANK": 0, "LOCAL_WORLD_SIZE": 2}, (4, 6)),
        ({"WORLD_SIZE": 2, "LOCAL_RANK": 1}, (1, 2)),  # one node
        ({"WORLD_SIZE": 4, "NODE_RANK": 1, "GROUP_RANK": 0, "LOCAL_RANK": 0, "LOCAL_WORLD_SIZE": 2}, (2, 4)),
    ],
)
def test_local_rank_node_rank_local_world_size(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, int], expected: tuple[int, int]
) -> None:
    _env(monkeypatch, **env)
    assert resolve_rank_world() == expected


def test_empty_environment_values_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, RANK="", WORLD_SIZE="")
    assert resolve_rank_world() == (0, 1)


# ------------------------------------------------------------------------------------------------
# invalid values


@pytest.mark.parametrize(("rank", "world"), [(-1, 2), (2, 2), (5, 3), (0, 0), (0, -1)])
def test_invalid_explicit_values(rank: int, world: int) -> None:
    with pytest.raises(ValueError, match="rank must be in"):
        resolve_rank_world(rank, world)


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"RANK": "one", "WORLD_SIZE": 2}, "RANK"),
        ({"RANK": 0, "WORLD_SIZE": "2.0"}, "WORLD_SIZE"),
        ({"WORLD_SIZE": 2, "LOCAL_RANK": "x"}, "LOCAL_RANK"),
        ({"RANK": 2, "WORLD_SIZE": 2}, "rank must be in"),
        ({"RANK": 0, "WORLD_SIZE": 0}, "rank must be in"),
        ({"RANK": -1, "WORLD_SIZE": 2}, "rank must be in"),
    ],
)
def test_invalid_environment(monkeypatch: pytest.MonkeyPatch, env: dict[str, int | str], match: str) -> None:
    _env(monkeypatch, **env)
    with pytest.raises(ValueError, match=match):
        resolve_rank_world()


def test_invalid_values_are_refused_when_building_a_pipeline(tmp_path: Path) -> None:
    ds = _dataset(tmp_path)
    with pytest.raises(ValueError, match="rank must be in"):
        ds.ordered(2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="rank must be in"):
        ds.loader(batch_size=2, rank=0, world_size=0)


# ------------------------------------------------------------------------------------------------
# the pipeline keeps what the main process resolved


def _dataset(tmp_path: Path) -> atd.Dataset[TopoRec]:
    recs = [TopoRec(x=np.full(2, i, np.float32), label=i) for i in range(22)]
    return atd.write_samples(recs, tmp_path / "topo.tar", maxcount=5, progress=False)  # type: ignore[no-any-return]


def test_worker_slot_in_the_main_process() -> None:
    assert worker_slot() == (0, 1)
    assert Topology(1, 2) == (1, 2, 0, 1)


def test_pipeline_and_loader_resolve_at_creation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = _dataset(tmp_path)
    _env(monkeypatch, RANK=1, WORLD_SIZE=2)
    pipe = ds.ordered(2)
    loader = ds.loader(batch_size=2)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert (pipe.rank, pipe.world_size) == (1, 2)
    assert (loader.pipeline.rank, loader.pipeline.world_size) == (1, 2)
    assert loader.pipeline.global_batch_size == 4
    pipe.set_topology(0, 3)
    assert (pipe.rank, pipe.world_size) == (0, 3)
    pipe.set_topology()  # re-detect: the environment now says (0, 1)
    assert (pipe.rank, pipe.world_size) == (0, 1)


def test_rank_reaches_spawned_workers_even_after_the_env_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = _dataset(tmp_path)
    _env(monkeypatch, RANK=1, WORLD_SIZE=2)
    pipe = ds.ordered(2, last_batch="exact")
    # The environment of the workers says rank 0 of 1 (spawned workers inherit it at start):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    loader = DataLoader(
        pipe, batch_size=None, num_workers=2, multiprocessing_context=multiprocessing.get_context("spawn")
    )
    labels = [[int(v) for v in b.label] for b in loader]
    # rank 1 of 2 with per-rank batches of 2: the second block of every global step of 4
    assert labels == [[2, 3], [6, 7], [10, 11], [14, 15], [18, 19]]
    rank0 = [[int(v) for v in b.label] for b in ds.ordered(2, rank=0, world_size=2, last_batch="exact")]
    assert rank0 == [[0, 1], [4, 5], [8, 9], [12, 13], [16, 17], [20, 21]]
