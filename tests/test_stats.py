"""Loader stats: wait vs held time, throughput, profile logging, the package logger, the Lightning callback."""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import atdata_torch as atd


@atd.packable
class StatRec:
    x: atd.NDArray
    y: int


def _slow(s: StatRec) -> StatRec:
    time.sleep(0.002)
    return s


@pytest.fixture
def ds(tmp_path: Path) -> atd.Dataset[StatRec]:
    recs = [StatRec(x=np.full(16, i, np.float32), y=i % 2) for i in range(64)]
    return atd.write_samples(recs, str(tmp_path / "s" / "train.tar"), maxcount=32, progress=False)


def test_stats_tell_a_slow_loop_from_a_slow_loader(ds: atd.Dataset[StatRec]) -> None:
    loader = ds.loader(batch_size=16)
    for _ in loader:
        time.sleep(0.03)  # the loop's own work dominates
    s = loader.stats()
    assert (s["batches"], s["samples"], s["bytes"]) == (4, 64, 64 * 16 * 4)
    assert s["held_s"] >= 4 * 0.03 and s["wait_fraction"] < 0.5
    assert s["samples_per_s"] > 0 and s["bytes_per_s"] == pytest.approx(s["samples_per_s"] * 64, rel=1e-6)

    slow = ds.map(_slow).loader(batch_size=16)
    for _ in slow:
        pass  # the loader's decode + map dominates
    s = slow.stats()
    assert s["samples"] == 64 and s["wait_s"] >= 64 * 0.002 and s["wait_fraction"] > 0.5
    assert s["epoch"] == 0 and s["first_batch_s"] is not None


def test_profile_every_logs_every_n_batches_and_at_epoch_end(
    ds: atd.Dataset[StatRec], caplog: pytest.LogCaptureFixture
) -> None:
    loader = ds.loader(batch_size=16, profile_every=2)
    with caplog.at_level(logging.INFO, logger="atdata_torch"):
        list(loader)
    lines = [r.getMessage() for r in caplog.records if "atdata_torch loader" in r.getMessage()]
    assert len(lines) == 3 and lines[-1].endswith("(end of epoch)") and "samples/s" in lines[0]


def test_the_package_logger_has_a_null_handler() -> None:
    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("atdata_torch").handlers)


def test_lightning_callback_logs_loader_stats_to_the_trainers_logger(ds: atd.Dataset[StatRec], tmp_path: Path) -> None:
    L = pytest.importorskip("lightning")
    from lightning.pytorch.loggers import CSVLogger

    from atdata_torch.integrations.lightning import AtdataDataModule
    from atdata_torch.integrations.loader_stats import LoaderStatsCallback

    class Model(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(16, 2)

        def training_step(self, batch: atd.TensorBatch, batch_idx: int) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(self.net(batch.x), torch.as_tensor(batch.y))

        def validation_step(self, batch: atd.TensorBatch, batch_idx: int) -> None:
            self.net(batch.x)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=CSVLogger(str(tmp_path / "runs"), name="stats"),
        log_every_n_steps=1,
        callbacks=[LoaderStatsCallback(every_n_batches=2)],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    shards = ds.list_shards()
    dm = AtdataDataModule(train=shards, val=shards[:1], sample_type=StatRec, batch_size=8, num_workers=0, seed=0)
    trainer.fit(Model(), datamodule=dm)
    (metrics,) = (tmp_path / "runs").rglob("metrics.csv")
    with metrics.open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("loader/samples_per_s")]
    assert len(rows) >= 4  # every 2 of 8 batches, and the epoch's end
    assert all(float(r["loader/samples_per_s"]) > 0 for r in rows)
    assert {"loader/wait_fraction", "loader/bytes_per_s", "loader/held_s"} <= set(rows[0])
