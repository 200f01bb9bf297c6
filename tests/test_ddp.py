"""DDP with torchrun (2 ranks, gloo on CPU): examples/ddp_train.py reads disjoint slices of one global order.

One torchrun job covers both cases: training with ``last_batch="drop"`` on 100 samples (not a multiple of the global
batch of 16: the dropped remainder must be exactly the tail of each epoch's order) and validation with
``last_batch="exact"`` on 48 samples (a multiple: every rank the same steps, every sample once).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import atdata_torch as atd

ROOT = Path(__file__).resolve().parent.parent
TRAIN, VAL, BATCH, EPOCHS, WORLD = 100, 48, 8, 2, 2
GLOBAL = BATCH * WORLD


def order_keys(url: str, *, shuffle: bool, epoch: int) -> list[str]:
    """The global order of an epoch, read in one process as one batch (rank 0 of 1)."""
    ds = atd.Dataset(url)
    n = len(ds)
    pipe = ds.shuffled(n, seed=0, rank=0, world_size=1) if shuffle else ds.ordered(n, rank=0, world_size=1)
    pipe.set_epoch(epoch)
    (batch,) = list(pipe)
    assert batch.keys is not None
    return list(batch.keys)


def interleave(per_rank: list[list[list[str]]]) -> list[str]:
    """Step j of rank 0, step j of rank 1, ...: the order the ranks consumed together."""
    return [k for step in zip(*per_rank, strict=True) for keys in step for k in keys]


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    out = tmp_path_factory.mktemp("ddp")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={WORLD}",
        str(ROOT / "examples" / "ddp_train.py"),
        "--out",
        str(out),
        "--samples",
        str(TRAIN),
        "--val-samples",
        str(VAL),
        "--shard-size",
        "16",
        "--batch-size",
        str(BATCH),
        "--epochs",
        str(EPOCHS),
        "--last-batch",
        "drop",
        "--workers",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150, cwd=out, env=env)
    except subprocess.TimeoutExpired as exc:  # pragma: no cover - a hang is the failure this guards against
        pytest.fail(f"torchrun did not finish in {exc.timeout}s (a DDP hang?)")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    reps = [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]
    return out, reps


@pytest.mark.slow
def test_ranks_run_the_same_steps_and_end_with_identical_weights(reports: tuple[Path, list[dict[str, Any]]]) -> None:
    _, reps = reports
    assert [r["rank"] for r in reps] == [0, 1] and all(r["world_size"] == WORLD for r in reps)
    assert reps[0]["steps"] == reps[1]["steps"] == EPOCHS * (TRAIN // GLOBAL)
    assert all(r["len_loader"] == TRAIN // GLOBAL and r["last_batch"] == "drop" for r in reps)
    assert reps[0]["checksum"] == reps[1]["checksum"]
    assert reps[0]["val_losses"] == reps[1]["val_losses"]
    assert reps[0]["val_losses"][-1] < reps[0]["val_losses"][0]  # it learned
    # The resume state is global: the same on every rank, at the start of the next epoch.
    assert reps[0]["loader_state"] == reps[1]["loader_state"]
    assert reps[0]["loader_state"]["epoch"] == EPOCHS and reps[0]["loader_state"]["position"] == 0


@pytest.mark.slow
def test_train_epochs_cover_the_global_order_and_drop_only_its_tail(
    reports: tuple[Path, list[dict[str, Any]]],
) -> None:
    out, reps = reports
    url = str(out / "data" / "train-*.tar")
    kept = (TRAIN // GLOBAL) * GLOBAL
    orders = []
    for epoch in range(EPOCHS):
        per_rank = [r["train_keys"][epoch] for r in reps]
        assert len(per_rank[0]) == len(per_rank[1]) == TRAIN // GLOBAL
        assert all(len(keys) == BATCH for steps in per_rank for keys in steps)
        seen = interleave(per_rank)
        order = order_keys(url, shuffle=True, epoch=epoch)
        assert sorted(order) == [f"train{i:06d}" for i in range(TRAIN)]
        assert seen == order[:kept]  # each kept sample exactly once, ranks disjoint, in global order
        assert len(set(seen)) == kept
        assert set(order) - set(seen) == set(order[kept:])  # the dropped remainder is the tail of the order
        orders.append(order)
    assert orders[0] != orders[1]  # a new permutation every epoch, in the persistent worker too


@pytest.mark.slow
def test_validation_sees_every_sample_exactly_once(reports: tuple[Path, list[dict[str, Any]]]) -> None:
    out, reps = reports
    order = order_keys(str(out / "data" / "val-*.tar"), shuffle=False, epoch=0)
    assert order == [f"val{i:06d}" for i in range(VAL)]
    for epoch in range(EPOCHS):
        per_rank = [r["val_keys"][epoch] for r in reps]
        assert len(per_rank[0]) == len(per_rank[1]) == VAL // GLOBAL
        assert interleave(per_rank) == order
