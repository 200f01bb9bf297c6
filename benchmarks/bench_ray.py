"""Ray Data throughput: ``write_atdata`` / ``read_atdata`` against Ray's own ``write_webdataset`` /
``read_webdataset``, in the same run, on the same rows and the same local Ray.

The rows (an image-like uint8 array, an int label and a str caption) are generated and materialized in Ray's object
store first, so that both writers start from the same blocks. Ray's webdataset layout has one member per field
(``image.npy``, ``label.cls``, ``caption.txt``); ours one msgpack member per sample, with index sidecars. Ray's
workers are warmed up first (each imports atdata_torch, and torch, once). Each read is consumed to the end with
``iter_batches`` (numpy batches). Prints samples/s of each and the ratios (ours / Ray's; above 1: we are faster).
Not part of the test run.

    uv run python benchmarks/bench_ray.py                         # 20000 samples of 64x64x3, 4 CPUs
    uv run python benchmarks/bench_ray.py --samples 2000 --side 32 --cpus 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

import atdata_torch as atd


@atd.packable
class Image:
    image: NDArray[np.uint8]
    label: int
    caption: str


def _rows(side: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def make(batch: dict[str, Any]) -> dict[str, Any]:
        ids = batch["id"]
        rng = np.random.default_rng(int(ids[0]))
        return {
            "image": rng.integers(0, 255, (len(ids), side, side, 3), dtype=np.uint8),
            "label": (ids % 1000).astype(np.int64),
            "caption": np.array([f"an image of thing {i}" for i in ids], dtype=object),
        }

    return make


def _timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _consume(ds: Any) -> int:
    return sum(len(next(iter(b.values()))) for b in ds.iter_batches(batch_size=256, batch_format="numpy"))


def _warm_wds(ds: Any, path: str) -> str:
    ds.rename_columns({"image": "image.npy", "label": "label.cls", "caption": "caption.txt"}).write_webdataset(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--side", type=int, default=64, help="images are side x side x 3 uint8")
    parser.add_argument("--per-shard", type=int, default=2_000)
    parser.add_argument("--cpus", type=int, default=4)
    args = parser.parse_args()

    import ray

    from atdata_torch.integrations.ray import read_atdata, write_atdata

    here = os.path.dirname(os.path.abspath(__file__))
    path = os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=args.cpus, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    n = args.samples
    blocks = max(1, n // args.per_shard)
    src = ray.data.range(n, override_num_blocks=blocks).map_batches(_rows(args.side)).materialize()
    wds_src = src.rename_columns({"image": "image.npy", "label": "label.cls", "caption": "caption.txt"}).materialize()
    root = tempfile.mkdtemp(prefix="bench-ray-")
    try:
        ours_dir, ray_dir = os.path.join(root, "atdata"), os.path.join(root, "wds")
        # Warm-up: each Ray worker imports atdata_torch (and torch) once, seconds that are not throughput.
        tiny = ray.data.range(4 * args.cpus, override_num_blocks=args.cpus).map_batches(_rows(4))
        warm = write_atdata(tiny, os.path.join(root, "warm", "w.tar"), Image, maxcount=4)
        _consume(read_atdata(warm.list_shards()))
        _consume(ray.data.read_webdataset(_warm_wds(tiny, os.path.join(root, "warm-wds"))))
        w_ours = _timed(lambda: write_atdata(src, os.path.join(ours_dir, "train.tar"), Image, maxcount=args.per_shard))
        w_ray = _timed(lambda: wds_src.write_webdataset(ray_dir, min_rows_per_file=args.per_shard))
        counts: dict[str, int] = {}
        r_ours = _timed(lambda: counts.update(ours=_consume(read_atdata(os.path.join(ours_dir, "train-*.tar")))))
        r_ray = _timed(lambda: counts.update(ray=_consume(ray.data.read_webdataset(ray_dir))))
        if counts["ours"] != n or counts["ray"] != n:
            raise SystemExit(f"row counts differ: {counts} (expected {n})")
        size = {d: sum(os.path.getsize(os.path.join(p, f)) for p, _, fs in os.walk(d) for f in fs)
                for d in (ours_dir, ray_dir)}  # fmt: skip
        print(f"{n} samples of {args.side}x{args.side}x3 uint8 + int + str, {args.cpus} CPUs, "
              f"{args.per_shard} per shard")  # fmt: skip
        print(f"{'':18}{'atdata_torch':>14}{'ray webdataset':>16}{'ratio':>8}")
        print(f"{'write samples/s':18}{n / w_ours:14.0f}{n / w_ray:16.0f}{w_ray / w_ours:8.2f}")
        print(f"{'read samples/s':18}{n / r_ours:14.0f}{n / r_ray:16.0f}{r_ray / r_ours:8.2f}")
        print(f"{'bytes on disk':18}{size[ours_dir]:14d}{size[ray_dir]:16d}{size[ray_dir] / size[ours_dir]:8.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
        ray.shutdown()


if __name__ == "__main__":
    main()
