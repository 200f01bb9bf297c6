"""AtdataDataModule with a real lightning.Trainer (CPU): exact mid-epoch resume, fast_dev_run, val/test loops, ranks.

The training runs go through examples/lightning_train.py in-process (its ``main``, ``make_datamodule`` and
``make_trainer``), on a 200-digit data set: 160 training samples, batch 24, last batch dropped -> 6 steps per epoch.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("lightning")
pytest.importorskip("sklearn")

import torch

import atdata_torch as atd
from atdata_torch.config import DataConfig
from atdata_torch.integrations.lightning import AtdataDataModule

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
STEPS_PER_EPOCH = 6  # 160 // 24

pytestmark = [
    # lightning 2.6.6 still builds torch.utils._pytree.LeafSpec, which torch 2.15 deprecates (in self.log).
    pytest.mark.filterwarnings("ignore:`isinstance.treespec, LeafSpec.` is deprecated:FutureWarning"),
    # ModelCheckpoint says so whenever a run resumes in its own run directory, which is what these tests do.
    pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty:UserWarning"),
    # Lightning's advice to use more workers on machines with more cores (the tests use 0 or 2 on purpose).
    pytest.mark.filterwarnings("ignore:The '.*' does not have many workers"),
]


@pytest.fixture(scope="module")
def ex() -> Iterator[ModuleType]:
    """The examples/lightning_train.py module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(EXAMPLES))
        yield importlib.import_module("lightning_train")


@pytest.fixture(scope="module")
def data(ex: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("digits")
    assert ex.write_digits(d, limit=200) == {"train": 160, "val": 20, "test": 20}
    return d


def run(ex: ModuleType, data: Path, out: Path, *args: object) -> dict[str, Any]:
    argv = ["--data", str(data), "--out", str(out), "--batch-size", "24", *(str(a) for a in args)]
    result: dict[str, Any] = ex.main(argv)
    return result


def keys_of(ex: ModuleType, out: Path) -> list[list[str]]:
    keys: list[list[str]] = ex.read_keys(str(out / "keys.jsonl"))
    return keys


# ------------------------------------------------------------------------------------------------ resume
@pytest.mark.parametrize(("workers", "val"), [(0, True), (2, False)], ids=["workers0-val", "workers2"])
def test_interrupted_and_resumed_run_reads_the_same_stream(
    ex: ModuleType, data: Path, tmp_path: Path, workers: int, val: bool
) -> None:
    n = 14
    full = tmp_path / "full"
    opts = ["--workers", workers] if val else ["--workers", workers, "--no-val"]  # val: after each epoch
    assert run(ex, data, full, "--max-steps", n, *opts)["global_step"] == n
    ref = keys_of(ex, full)
    assert len(ref) == n
    epoch0 = [k for batch in ref[:STEPS_PER_EPOCH] for k in batch]
    assert len(epoch0) == len(set(epoch0)) == STEPS_PER_EPOCH * 24
    assert ref[:STEPS_PER_EPOCH] != ref[STEPS_PER_EPOCH : 2 * STEPS_PER_EPOCH]  # a new permutation per epoch

    # k=4: mid-epoch 0; k=12: the end of epoch 1. The run stops after k steps with a checkpoint, then a new
    # process (here: a new Trainer, DataModule and model) resumes it in the same run directory.
    for k in (4, 12):
        out = tmp_path / f"interrupted-{k}"
        run(ex, data, out, "--max-steps", k, "--ckpt-every", k, *opts)
        ckpt = out / "checkpoints" / f"step={k}.ckpt"
        result = run(ex, data, out, "--max-steps", n, "--ckpt-every", k, "--resume-from", ckpt, *opts)
        assert result["global_step"] == n
        assert keys_of(ex, out) == ref, f"the run resumed at step {k} read another stream"


def test_checkpoint_holds_the_global_loader_state(ex: ModuleType, data: Path, tmp_path: Path) -> None:
    run(ex, data, tmp_path, "--max-steps", 8, "--ckpt-every", 8, "--no-val")
    ckpt = torch.load(tmp_path / "checkpoints" / "step=8.ckpt", weights_only=True)
    # Lightning's own copy (stateful loaders under the fit loop) and the DataModule's copy agree.
    (fit_state,) = ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    dm_state = ckpt["AtdataDataModule"]["train_loader"]
    assert fit_state == dm_state
    assert (dm_state["epoch"], dm_state["position"]) == (1, 2 * 24)  # 8 steps = 6 (epoch 0) + 2
    assert ckpt["datamodule_hyper_parameters"]["as_type"] == "digits_data:DigitVector"
    rebuilt = AtdataDataModule.load_from_checkpoint(tmp_path / "checkpoints" / "step=8.ckpt")
    assert rebuilt.config.to_dict() == ex.make_datamodule(str(data), batch_size=24).config.to_dict()


def test_resume_when_the_model_reads_estimated_stepping_batches(ex: ModuleType, data: Path, tmp_path: Path) -> None:
    """Lightning-AI/pytorch-lightning#20550: Lightning then skips its loader restore; the DataModule's holds."""

    class Scheduled(ex.DigitClassifier):  # type: ignore[name-defined,misc]
        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            total = int(self.trainer.estimated_stepping_batches)  # sets up the train loader before the restore
            sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0, end_factor=0.1, total_iters=total)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def fit(out: Path, max_steps: int = -1, ckpt_path: Path | None = None) -> list[list[str]]:
        dm = ex.make_datamodule(str(data), batch_size=24)
        trainer = ex.make_trainer(str(out), max_epochs=2, max_steps=max_steps, ckpt_every=4, limit_val_batches=0)
        trainer.fit(Scheduled(), datamodule=dm, ckpt_path=ckpt_path)
        return keys_of(ex, out)

    ref = fit(tmp_path / "full")
    assert len(ref) == 2 * STEPS_PER_EPOCH
    fit(tmp_path / "cut", max_steps=4)
    assert fit(tmp_path / "cut", ckpt_path=tmp_path / "cut" / "checkpoints" / "step=4.ckpt") == ref


# ------------------------------------------------------------------------------------------------ loops
def test_fast_dev_run(ex: ModuleType, data: Path, tmp_path: Path) -> None:
    result = run(ex, data, tmp_path, "--fast-dev-run", "--workers", 2)
    assert result["global_step"] == 1
    assert len(keys_of(ex, tmp_path)) == 1
    assert result["val_seen"] == 20  # one validation batch: the 20 validation digits


def _ordered_keys(pattern: Path) -> list[str]:
    batch = next(iter(atd.Dataset(str(pattern)).ordered(batch_size=1000)))
    return list(batch.keys)


def test_validation_and_test_loops_read_every_sample_once(ex: ModuleType, data: Path, tmp_path: Path) -> None:
    dm = ex.make_datamodule(str(data), batch_size=24)
    dm.config = dataclasses.replace(dm.config, eval_batch_size=8)  # 20 samples: 8 + 8 + 4
    model = ex.DigitClassifier()
    trainer = ex.make_trainer(str(tmp_path), max_steps=6, val_check_interval=3, check_val_every_n_epoch=None)
    trainer.fit(model, datamodule=dm)
    val_keys, test_keys = _ordered_keys(data / "val-*.tar"), _ordered_keys(data / "test-*.tar")
    assert model.seen["val"] == val_keys * 2  # validated after steps 3 and 6, in order

    train_state = dm.state_dict()
    trainer.validate(model, datamodule=dm, verbose=False)
    trainer.test(model, datamodule=dm, verbose=False)
    assert model.seen["val"] == val_keys * 3
    assert model.seen["test"] == test_keys
    assert dm.state_dict() == train_state  # evaluation never moves the training stream


def test_missing_split_gives_no_loop_and_train_is_required(data: Path) -> None:
    dm = AtdataDataModule(val=str(data / "val-*.tar"), sample_type="digits_data:DigitSample")
    assert dm.test_dataloader() == []
    with pytest.raises(atd.AtdataError, match="no train data"):
        dm.train_dataloader()


# ------------------------------------------------------------------------------------------------ ranks
def _fake_trainer(rank: int, world: int) -> Any:
    return SimpleNamespace(global_rank=rank, world_size=world, state=SimpleNamespace(fn=None))


def test_setup_uses_the_trainers_rank_and_world_size(ex: ModuleType, data: Path) -> None:
    keys: list[list[str]] = []
    states = []
    for rank in (0, 1):
        dm = AtdataDataModule(train=str(data / "train-*.tar"), sample_type=ex.DigitSample, batch_size=16)
        dm.trainer = _fake_trainer(rank, 2)
        dm.setup("fit")
        loader = dm.train_dataloader()
        assert (loader.pipeline.rank, loader.pipeline.world_size) == (rank, 2)
        batches = list(loader)
        assert len(batches) == len(loader) == 5  # 160 samples = 5 global steps of 2 x 16
        keys.append([k for b in batches for k in b.keys])
        states.append(dm.state_dict())
    assert not set(keys[0]) & set(keys[1])
    assert len(set(keys[0]) | set(keys[1])) == 160
    assert states[0] == states[1]  # global: rank 0's checkpoint serves every rank


def test_loaders_are_rebuilt_when_the_topology_changes(data: Path) -> None:
    dm = AtdataDataModule(train=str(data / "train-*.tar"), batch_size=16)
    single = dm.train_dataloader()
    assert dm.train_dataloader() is single
    dm.trainer = _fake_trainer(1, 4)
    moved = dm.train_dataloader()
    assert moved is not single and (moved.pipeline.rank, moved.pipeline.world_size) == (1, 4)


def test_state_loaded_before_setup_is_applied_when_the_loader_is_built(data: Path) -> None:
    def module() -> AtdataDataModule:
        return AtdataDataModule(train=str(data / "train-*.tar"), batch_size=16, seed=3)

    first = module()
    it = iter(first.train_dataloader())
    seen = [next(it).keys for _ in range(3)]
    rest = [b.keys for b in it]
    state = {"train_loader": {**first.state_dict()["train_loader"], "epoch": 0, "position": 3 * 16}}
    second = module()
    second.load_state_dict(state)  # no loader yet (Lightning restores the DataModule after setup, but be safe)
    assert second.state_dict() == state
    assert [b.keys for b in second.train_dataloader()] == rest
    assert len(seen) == 3


def test_datamodule_arguments_are_the_config_fields() -> None:
    params = list(inspect.signature(AtdataDataModule.__init__).parameters)[1:]
    assert params == list(DataConfig().to_dict())


def test_str_does_not_build_loaders(data: Path) -> None:
    dm = AtdataDataModule(train=str(data / "train-*.tar"))
    assert "AtdataDataModule(splits=['train']" in str(dm)
    assert dm._loaders == {}


# ------------------------------------------------------------------------------------------------ imports
def test_without_lightning_the_integration_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lightning", None)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    monkeypatch.delitem(sys.modules, "atdata_torch.integrations.lightning")
    with pytest.raises(atd.MissingDependencyError, match=r"atdata-torch\[lightning\]"):
        importlib.import_module("atdata_torch.integrations.lightning")
    with pytest.raises(ImportError, match="lightning"):  # MissingDependencyError is an ImportError
        DataConfig(train="x.tar").datamodule()

    # atdata_torch.config and atdata_torch.integrations themselves import no lightning: run fresh copies.
    for name, rel in (("atdata_torch._probe_config", "config.py"), ("atdata_torch.integrations._probe", "__init__")):
        path = ROOT / "atdata_torch" / (rel if rel.endswith(".py") else "integrations/__init__.py")
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        probe = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, probe)
        spec.loader.exec_module(probe)
