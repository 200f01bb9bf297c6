"""DDP training on CPU with torchrun: every rank reads its slice of the same global order through ``ds.loader()``.

Rank 0 writes a small synthetic regression dataset (typed samples in tar shards: a train and a validation split)
while the other ranks wait at a barrier; then every rank builds ``ds.loader(..., num_workers=1)``. The loader takes
rank and world size from the initialized process group (in the main process, before its worker starts), gives
each rank a disjoint slice of every global batch, and the same number of batches on every rank (``len(loader)``),
so DDP's collectives never hang at the end of an epoch:

- training uses ``drop_last=True``: the last partial global batch (the tail of the epoch's shuffled order) is
  dropped on every rank;
- validation uses ``last_batch="exact"``: every sample once, the per-rank sums are all-reduced after the loop.

    uv run torchrun --standalone --nproc_per_node=2 examples/ddp_train.py --out /tmp/ddp
    uv run torchrun --standalone --nproc_per_node=2 examples/ddp_train.py --out /tmp/ddp --samples 100 \\
        --val-samples 48 --batch-size 8 --epochs 2

Each rank writes ``<out>/rank<r>.json``: steps, the sample keys of every step, the losses, the loader's (global)
resume state and a checksum of the final weights (identical on every rank).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import warnings
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from numpy.typing import NDArray
from torch.nn.parallel import DistributedDataParallel

import atdata_torch as atd


@atd.packable
class Point:
    """One noisy sample of a linear function: ``y = x @ w + 0.5``."""

    x: NDArray[np.float32]  # (8,)
    y: float


FEATURES = 8


def write_split(out: str, name: str, n: int, shard_size: int, seed: int) -> None:
    w = np.random.default_rng(1234).standard_normal(FEATURES).astype(np.float32)  # the same function for all splits
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((n, FEATURES)).astype(np.float32)
    ys = xs @ w + 0.5 + 0.01 * rng.standard_normal(n).astype(np.float32)
    samples = [Point(x=xs[i], y=float(ys[i])) for i in range(n)]
    atd.write_samples(
        samples,
        os.path.join(out, f"{name}.tar"),
        maxcount=shard_size,
        key=lambda s, i: f"{name}{i:06d}",
        progress=False,
    )


def weights_checksum(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="directory for the per-rank JSON reports")
    p.add_argument("--data", default=None, help="dataset directory (default: <out>/data; written by rank 0)")
    p.add_argument("--samples", type=int, default=1000, help="training samples")
    p.add_argument("--val-samples", type=int, default=256, help="validation samples")
    p.add_argument("--shard-size", type=int, default=40, help="samples per shard")
    p.add_argument("--batch-size", type=int, default=32, help="per rank")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--last-batch", choices=["pad", "drop", "exact"], default="drop", help="training loader policy")
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers per rank")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=0.05)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", message="'set_vital' is deprecated")  # torchdata 0.11 on torch >= 2.13

    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(args.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    data = args.data or os.path.join(args.out, "data")
    t0 = time.perf_counter()
    if rank == 0:
        os.makedirs(args.out, exist_ok=True)
        if not os.path.exists(data):
            os.makedirs(data)
            write_split(data, "train", args.samples, args.shard_size, seed=1)
            write_split(data, "val", args.val_samples, args.shard_size, seed=2)
    dist.barrier()  # the shards exist before any rank lists them

    train = atd.Dataset[Point](os.path.join(data, "train-*.tar"))
    val = atd.Dataset[Point](os.path.join(data, "val-*.tar"))
    # Rank and world size come from the process group. One worker process per rank, kept across epochs (the
    # epoch still advances in it: a new permutation every pass).
    loader = train.loader(
        batch_size=args.batch_size,
        shuffle=True,
        seed=args.seed,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
        last_batch=args.last_batch,
    )
    val_loader = val.loader(batch_size=args.batch_size, shuffle=False, num_workers=args.workers, last_batch="exact")

    model = DistributedDataParallel(torch.nn.Linear(FEATURES, 1))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    loss_fn = torch.nn.MSELoss()

    train_keys: list[list[list[str]]] = []  # [epoch][step] -> this rank's sample keys
    val_keys: list[list[list[str]]] = []
    losses: list[float] = []
    val_losses: list[float] = []
    steps = 0
    for epoch in range(args.epochs):
        model.train()
        seen: list[list[str]] = []
        for batch in loader:  # TensorBatch: batch.x is a (B, 8) float32 tensor, batch.y a list of floats
            target = torch.tensor(batch.y, dtype=torch.float32).unsqueeze(1)
            opt.zero_grad()
            loss = loss_fn(model(batch.x), target)
            loss.backward()  # gradients are averaged over the ranks here
            opt.step()
            losses.append(float(loss.item()))
            seen.append(list(batch.keys or []))
            steps += 1
        train_keys.append(seen)

        # Validation: every sample exactly once over all ranks; no collective inside the loop (model.module),
        # so ranks may run different step counts; the sums are reduced at the end.
        model.eval()
        sums = torch.zeros(2, dtype=torch.float64)  # squared error, count
        vseen: list[list[str]] = []
        with torch.no_grad():
            for batch in val_loader:
                target = torch.tensor(batch.y, dtype=torch.float32).unsqueeze(1)
                sums[0] += float(((model.module(batch.x) - target) ** 2).sum())
                sums[1] += len(batch)
                vseen.append(list(batch.keys or []))
        dist.all_reduce(sums)
        val_losses.append(float(sums[0] / sums[1]))
        val_keys.append(vseen)
        if rank == 0:
            print(
                f"epoch {epoch}: {len(seen)} steps per rank, train loss {losses[-1]:.4f}, "
                f"val loss {val_losses[-1]:.4f} over {int(sums[1])} samples",
                flush=True,
            )

    report = {
        "rank": rank,
        "world_size": world,
        "steps": steps,
        "len_loader": len(loader),
        "last_batch": loader.pipeline.last_batch,
        "global_batch_size": loader.pipeline.global_batch_size,
        "seed": args.seed,
        "train_keys": train_keys,
        "val_keys": val_keys,
        "losses": losses,
        "val_losses": val_losses,
        "checksum": weights_checksum(model.module),
        "loader_state": loader.state_dict(),
        "seconds": time.perf_counter() - t0,
    }
    with open(os.path.join(args.out, f"rank{rank}.json"), "w") as f:
        json.dump(report, f)
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
