"""Quickstart: write typed shards, index them, load them by name, and train a small model.

Converts scikit-learn's bundled ``load_digits`` (1,797 8x8 images, no download) into atdata_torch shards with
train/test splits, registers them as ``digits`` in the local dataset index (SQLite, no server), loads them back
with ``load_dataset("@local/digits")`` and trains a small PyTorch classifier through a 2-worker DataLoader.

    uv run examples/quickstart.py                       # default index; shards under ./quickstart-data
    uv run examples/quickstart.py --out /tmp/qs --epochs 5 --index /tmp/qs/index.db
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.datasets import load_digits

import atdata_torch as atd


@atd.packable
class DigitSample:
    """One 8x8 grayscale digit."""

    image: NDArray[np.float32]  # (8, 8), values in [0, 1]
    label: int


def write_dataset(index: atd.Index, out: str) -> str:
    """Write the digits as typed shards (80/20 train/test) into ``out`` and index them as ``digits``."""
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(int)
    order = np.random.default_rng(0).permutation(len(labels))
    split = int(0.8 * len(order))
    train = [DigitSample(image=images[i], label=int(labels[i])) for i in order[:split]]
    test = [DigitSample(image=images[i], label=int(labels[i])) for i in order[split:]]
    entry = index.write_samples(
        {"train": train, "test": test},
        name="digits",
        version="1.0.0",
        description="scikit-learn's 8x8 digits",
        tags=["vision", "quickstart"],
        maxcount=500,
        data_dir=out,
    )
    return str(entry.cid)


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="quickstart-data", help="directory for the shards")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--index", default=None, help="index location (default: $ATDATA_TORCH_INDEX or the user's one)")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)

    t0 = time.perf_counter()
    index = atd.Index(args.index) if args.index else atd.Index()
    cid = write_dataset(index, args.out)
    print(f"wrote and indexed digits@1.0.0 ({cid}) in {index.location} in {time.perf_counter() - t0:.2f}s")

    # Load back by name, as any other program would.
    train = atd.load_dataset("@local/digits@1.0.0", DigitSample, split="train", index=index)
    test = atd.load_dataset("@local/digits@1.0.0", DigitSample, split="test", index=index)
    print(f"train: {len(train)} samples in {len(train.list_shards())} shards; test: {len(test)} samples")
    print(train.describe()["fields"])

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    # A StatefulDataLoader with 2 worker processes; a new (reproducible) permutation every epoch.
    loader = train.loader(batch_size=args.batch_size, shuffle=True, seed=args.seed, num_workers=args.workers)
    for epoch in range(args.epochs):
        model.train()
        total = 0.0
        for batch in loader:  # TensorBatch: batch.image is a (B, 8, 8) float32 tensor, batch.label a list
            y = torch.as_tensor(batch.label)
            opt.zero_grad()
            loss = loss_fn(model(batch.image), y)
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
        print(f"epoch {epoch}: train loss {total / len(train):.4f} ({len(loader)} batches)")

    model.eval()
    correct = 0
    with torch.no_grad():
        for batch in test.loader(batch_size=256, shuffle=False):
            pred = model(batch.image).argmax(dim=1)
            correct += int((pred == torch.as_tensor(batch.label)).sum())
    accuracy = correct / len(test)
    print(f"test accuracy: {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    main()
    sys.exit(0)
