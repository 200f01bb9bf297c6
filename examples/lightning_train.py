r"""Train with Lightning through ``AtdataDataModule``, checkpoint mid-epoch, resume, and log every batch's keys.

Writes scikit-learn's digits as typed shards (``examples/digits_data.py``), trains a small classifier on CPU with
a real ``lightning.Trainer`` and appends the sample keys of every training batch to ``<out>/keys.jsonl``, so
that an interrupted-and-resumed run can be compared with an uninterrupted one.

    uv run examples/lightning_train.py --out runs/full --max-steps 60
    uv run examples/lightning_train.py --out runs/cut --max-steps 25 --ckpt-every 25     # "interrupted" at step 25
    uv run examples/lightning_train.py --out runs/cut --max-steps 60 --ckpt-every 25 \
        --resume-from runs/cut/checkpoints/step=25.ckpt
    cmp runs/full/keys.jsonl runs/cut/keys.jsonl       # the same 60 batches: the stream continued exactly

The same data through ``LightningCLI`` and ``configs/digits.yaml``: ``uv run examples/lightning_cli.py fit
--config configs/digits.yaml``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from atdata_torch.integrations.lightning import AtdataDataModule

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from digits_data import DigitSample, DigitVector, write_digits


class DigitClassifier(L.LightningModule):
    """A two-layer MLP over ``DigitVector`` batches (``batch.pixels``: (B, 64) float32, ``batch.label``: ints)."""

    def __init__(self, hidden: int = 64, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))
        self.lr = lr
        self.seen: dict[str, list[str]] = {"val": [], "test": []}  # sample keys per evaluation loop
        self.correct: dict[str, int] = {"val": 0, "test": 0}

    def _loss(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(batch.pixels)
        y = torch.as_tensor(batch.label, device=logits.device)
        return torch.nn.functional.cross_entropy(logits, y), (logits.argmax(1) == y).sum()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, _ = self._loss(batch)
        self.log("train_loss", loss, batch_size=len(batch))
        return loss

    def _eval_step(self, split: str, batch: Any) -> None:
        loss, correct = self._loss(batch)
        self.seen[split].extend(batch.keys)
        self.correct[split] += int(correct)
        self.log(f"{split}_loss", loss, batch_size=len(batch))

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step("test", batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class KeyLogger(Callback):
    """Appends ``{"step", "epoch", "keys"}`` of every training batch to a JSON lines file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            row = {"step": trainer.global_step, "epoch": trainer.current_epoch, "keys": list(batch.keys)}
            f.write(json.dumps(row) + "\n")


def read_keys(path: str) -> list[list[str]]:
    """The key lists of a ``keys.jsonl`` file, one per training batch."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["keys"] for line in f if line.strip()]


def make_datamodule(data: str, *, batch_size: int = 32, workers: int = 0, seed: int = 0) -> AtdataDataModule:
    """The DataModule over the digits shards in ``data`` (viewed as ``DigitVector`` through the lens)."""
    return AtdataDataModule(
        train=os.path.join(data, "train-*.tar"),
        val=os.path.join(data, "val-*.tar"),
        test=os.path.join(data, "test-*.tar"),
        sample_type=DigitSample,
        as_type=DigitVector,
        batch_size=batch_size,
        eval_batch_size=128,
        num_workers=workers,
        seed=seed,
        last_batch="drop",
    )


def make_trainer(out: str, *, max_steps: int = -1, ckpt_every: int | None = None, **kwargs: Any) -> L.Trainer:
    """A small CPU trainer; with ``ckpt_every`` it keeps a checkpoint every that many steps."""
    os.makedirs(out, exist_ok=True)
    callbacks: list[Callback] = [KeyLogger(os.path.join(out, "keys.jsonl"))]
    if ckpt_every:
        callbacks.append(
            ModelCheckpoint(
                dirpath=os.path.join(out, "checkpoints"),
                filename="{step}",
                every_n_train_steps=ckpt_every,
                save_top_k=-1,
            )
        )
    options: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "max_steps": max_steps,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": bool(ckpt_every),
        "default_root_dir": out,
        "num_sanity_val_steps": 0,
        **kwargs,
    }
    return L.Trainer(callbacks=callbacks, **options)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data", default=os.path.join("examples", "data", "digits"), help="shard directory (written if empty)"
    )
    p.add_argument("--limit", type=int, default=None, help="write only this many digits (a small, fast data set)")
    p.add_argument(
        "--out", default=os.path.join("examples", "data", "run"), help="run directory: checkpoints/, keys.jsonl"
    )
    p.add_argument("--max-steps", type=int, default=60)
    p.add_argument("--ckpt-every", type=int, default=None, help="save a checkpoint every N training steps")
    p.add_argument("--resume-from", default=None, help="a checkpoint to resume from (mid-epoch is fine)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-every", type=int, default=None, help="validate every N training steps (default: per epoch)")
    p.add_argument("--no-val", action="store_true", help="skip validation")
    p.add_argument("--test", action="store_true", help="run the test loop after training")
    p.add_argument("--fast-dev-run", action="store_true", help="one training and one validation batch")
    args = p.parse_args(argv)

    counts = write_digits(args.data, limit=args.limit)
    os.makedirs(args.out, exist_ok=True)
    keys_log = os.path.join(args.out, "keys.jsonl")
    if args.resume_from is None and os.path.exists(keys_log):
        os.remove(keys_log)  # a fresh run starts a fresh log; a resumed one appends to it
    L.seed_everything(args.seed, verbose=False)
    dm = make_datamodule(args.data, batch_size=args.batch_size, workers=args.workers, seed=args.seed)
    model = DigitClassifier()
    extra: dict[str, Any] = {}
    if args.val_every:
        extra = {"val_check_interval": args.val_every, "check_val_every_n_epoch": None}
    if args.no_val:
        extra = {"limit_val_batches": 0}
    if args.fast_dev_run:
        extra["fast_dev_run"] = True
    trainer = make_trainer(args.out, max_steps=args.max_steps, ckpt_every=args.ckpt_every, **extra)

    t0 = time.perf_counter()
    trainer.fit(model, datamodule=dm, ckpt_path=args.resume_from)
    result: dict[str, Any] = {
        "samples": counts,
        "global_step": trainer.global_step,
        "train_loss": float(trainer.callback_metrics.get("train_loss", float("nan"))),
        "fit_seconds": round(time.perf_counter() - t0, 2),
        "val_seen": len(model.seen["val"]),
    }
    if args.test:
        trainer.test(model, datamodule=dm, verbose=False)
        result["test_seen"] = len(model.seen["test"])
        result["test_accuracy"] = model.correct["test"] / max(1, len(model.seen["test"]))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
