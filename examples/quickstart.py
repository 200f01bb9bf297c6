"""Quickstart: write typed shards, index them, load them by name, and train a small model.

Converts scikit-learn's bundled ``load_digits`` (1,797 8x8 images, no download) into atdata_torch shards with
train/test splits, registers them as ``digits`` in the local dataset index (SQLite, no server), loads them back
with ``load_dataset("@local/digits")`` and trains a small PyTorch classifier through a 2-worker DataLoader.

    uv run examples/quickstart.py                       # default index; shards under ./quickstart-data
    uv run examples/quickstart.py --out /tmp/qs --epochs 5 --index /tmp/qs/index.db

Running it again reuses the shards and the index entry of the first run when they are still there and intact
(their sha256 matches what the index recorded) and says so; otherwise (deleted, damaged, or ``--rebuild``) it
writes them again and points ``digits@1.0.0`` at the new entry.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.datasets import load_digits

import atdata_torch as atd
from atdata_torch.index import IndexEntry


@atd.packable
class DigitSample:
    """One 8x8 grayscale digit."""

    image: NDArray[np.float32]  # (8, 8), values in [0, 1]
    label: int


def existing_entry(index: atd.Index, out: str) -> tuple[IndexEntry | None, str]:
    """The ``digits@1.0.0`` entry of an earlier run when its shards are in ``out`` and intact, and why not if not."""
    try:
        entry = index.get_dataset("digits@1.0.0")
    except LookupError:
        return None, "not in the index yet"
    checksums = (entry.metadata or {}).get("checksums") or {}
    root = os.path.abspath(out)
    for url in entry.data_urls:
        if not os.path.abspath(url).startswith(root + os.sep):
            return None, f"its shards are not under {out}"
        if not os.path.exists(url) or not os.path.exists(url + ".idx.json"):
            return None, f"{url} is missing"
        with open(url, "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() != checksums.get(url):
                return None, f"{url} does not match its recorded sha256"
    return entry, "intact"


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
        overwrite=True,  # this is a rebuild: point digits@1.0.0 at the new shards
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
    p.add_argument("--rebuild", action="store_true", help="write the shards again even when intact ones exist")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)

    t0 = time.perf_counter()
    index = atd.Index(args.index) if args.index else atd.Index()
    entry, why = (None, "--rebuild") if args.rebuild else existing_entry(index, args.out)
    if entry is not None:
        print(f"reusing digits@1.0.0 ({entry.cid}) from {index.location}: its {len(entry.data_urls)} shards are intact")
    else:
        cid = write_dataset(index, args.out)
        took = time.perf_counter() - t0
        print(f"wrote and indexed digits@1.0.0 ({cid}) in {index.location} in {took:.2f}s (rebuilt: {why})")

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
