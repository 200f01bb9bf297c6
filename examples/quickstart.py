"""Quickstart: write typed shards, load them back, and train a small model.

Converts scikit-learn's bundled ``load_digits`` (1,797 8x8 images, no download) into atdata_torch shards,
reads them back as typed, shuffled batches and trains a small PyTorch classifier for a few epochs.

    uv run examples/quickstart.py                 # writes ./quickstart-data
    uv run examples/quickstart.py --out /tmp/qs --epochs 5
"""

from __future__ import annotations

import argparse
import os
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


def write_dataset(out: str) -> tuple[atd.Dataset[DigitSample], atd.Dataset[DigitSample]]:
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(int)
    order = np.random.default_rng(0).permutation(len(labels))
    split = int(0.8 * len(order))
    train = [DigitSample(image=images[i], label=int(labels[i])) for i in order[:split]]
    test = [DigitSample(image=images[i], label=int(labels[i])) for i in order[split:]]
    train_ds = atd.write_samples(train, os.path.join(out, "train.tar"), maxcount=500)
    test_ds = atd.write_samples(test, os.path.join(out, "test.tar"), maxcount=500)
    return train_ds, test_ds


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="quickstart-data", help="directory for the shards")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)

    t0 = time.perf_counter()
    write_dataset(args.out)
    print(f"wrote shards to {args.out}/ in {time.perf_counter() - t0:.2f}s")

    # Load back by URL, as any other program would.
    train_shards = sorted(f for f in os.listdir(args.out) if f.startswith("train-") and f.endswith(".tar"))
    train = atd.Dataset[DigitSample](os.path.join(args.out, f"train-{{000000..{len(train_shards) - 1:06d}}}.tar"))
    test = atd.Dataset[DigitSample](os.path.join(args.out, "test-*.tar"))
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
