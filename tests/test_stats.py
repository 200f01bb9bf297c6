"""Loader stats: wait vs held time, throughput, profile logging, the package logger, the Lightning callback."""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from http_server import FaultServer
from remote_data import FORK_WITH_THREADS, Rec, deadline, rows, write_shards

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


def test_profile_true_logs_at_epoch_end_and_every_default_n_batches(
    ds: atd.Dataset[StatRec], caplog: pytest.LogCaptureFixture
) -> None:
    from atdata_torch._stats import DEFAULT_PROFILE_EVERY

    loader = ds.loader(batch_size=16, profile=True)
    assert loader._profile_every == DEFAULT_PROFILE_EVERY == 100
    with caplog.at_level(logging.INFO, logger="atdata_torch"):
        list(loader)  # 4 batches: fewer than 100, so only the epoch's end
    lines = [r.getMessage() for r in caplog.records if "atdata_torch loader" in r.getMessage()]
    assert len(lines) == 1 and lines[0].endswith("(end of epoch)") and "decoded" in lines[0]
    assert ds.loader(batch_size=16, profile=2)._profile_every == 2
    assert ds.loader(batch_size=16, profile=True, profile_every=3)._profile_every == 3
    assert ds.loader(batch_size=16)._profile_every is None
    with pytest.raises(ValueError, match="profile_every must be >= 0"):
        ds.loader(batch_size=16, profile_every=-1)


def test_in_process_reader_reports_its_decode_time(ds: atd.Dataset[StatRec]) -> None:
    loader = ds.map(_slow).loader(batch_size=16, shuffle=False)
    list(loader)
    s = loader.stats()
    (w,) = s["workers"]
    assert w["worker"] is None and w["batches"] == 4
    assert w["decode_s"] >= 64 * 0.002  # map() runs while the records become a batch
    assert s["decode_s"] == w["decode_s"] and s["read_s"] == w["read_s"] > 0
    assert (s["cache_hits"], s["downloads"]) == (0, 0)  # local shards
    list(loader)
    assert loader.stats()["workers"][0]["batches"] == 4  # counted per epoch


@FORK_WITH_THREADS
def test_two_workers_report_decode_time_cache_hits_and_downloads(
    http_server: FaultServer, http_root: Path, tmp_path: Path
) -> None:
    shards = write_shards(http_root, n=20, per_shard=5)  # 4 shards of 5: one batch each
    names = [p.name for p in shards]
    url = f"{http_server.base_url}/data-{{000000..000003}}.tar"
    ds = atd.Dataset[Rec](url, cache_dir=str(tmp_path / "cache"), retries=1, backoff=0.01)
    loader = ds.loader(batch_size=5, shuffle=False, num_workers=2, multiprocessing_context="fork")
    want = rows(atd.Dataset[Rec]([str(p) for p in shards]).ordered())
    with deadline(60):
        assert rows(loader) == want
    s = loader.stats()
    by_worker = {w["worker"]: w for w in s["workers"]}
    assert sorted(by_worker) == [0, 1]
    for w in by_worker.values():
        assert w["batches"] == 2 and w["decode_s"] > 0 and w["read_s"] > 0
        # Worker w reads batches w, w + 2 (shards w, w + 2); a read-ahead that starts before the worker's plan is
        # known may also open one shard the other worker reads: the one that comes second finds it in the cache.
        assert w["downloads"] + w["cache_hits"] >= 2, w
    assert s["downloads"] == 4  # every shard was downloaded once, by one of the workers
    assert s["cache_hits"] == sum(w["cache_hits"] for w in by_worker.values())
    assert s["decode_s"] == pytest.approx(sum(w["decode_s"] for w in by_worker.values()))
    assert {n: len(http_server.downloads(n)) for n in names} == dict.fromkeys(names, 1)  # as the server saw it

    with deadline(60):
        assert rows(loader) == want  # the second epoch reads every shard from the cache
    s = loader.stats()
    assert [(w["worker"], w["downloads"]) for w in s["workers"]] == [(0, 0), (1, 0)]
    assert all(w["cache_hits"] >= 2 for w in s["workers"]) and s["cache_hits"] >= 4
    assert all(w["decode_s"] > 0 for w in s["workers"])
    assert {n: len(http_server.downloads(n)) for n in names} == dict.fromkeys(names, 1)


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
