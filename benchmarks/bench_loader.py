"""Loader throughput, time to first batch and peak memory: atdata_torch's ``ds.loader()`` against webdataset's
``WebLoader``, in the same run, over the same shards.

For each shape of ``bench_read.py`` (small, image-like, large) the shards are written once in the atdata layout
(one msgpack member per sample), then read into tensor batches of 64 at ``num_workers`` 0, 1 and 2 by:

- atdata_torch: ``Dataset[T](url).loader(batch_size=64, shuffle=False, num_workers=k)`` (``TensorBatch`` es)
- webdataset:   ``wds.WebLoader(wds.WebDataset(url, shardshuffle=False).map(decode).batched(64), batch_size=None,
  num_workers=k)`` with bench_read's (b) decode (msgpack + the original atdata's array decoding) plus
  ``torch.from_numpy`` for each array; ``batched`` stacks the tensors.

The main process runs ``torch.set_num_threads(1)`` unless ``--threads`` says otherwise (DataLoader workers always
do): on a few busy cores a multi-threaded ``torch.stack`` in webdataset's collation was several times slower.
An epoch's time includes starting the worker processes (as in training). Also measured:

- time to first batch: from constructing the dataset and the loader to the first batch (local shards, warm page
  cache, fresh objects; includes indexing the shards and starting the worker processes);
- peak memory: a fresh subprocess reads a whole epoch of the dataset, then of one 4x larger (4x the shards of the
  same size). Reported: the peak RSS (VmHWM; ``ru_maxrss`` is not used, as Linux carries it across ``execve``
  from the parent), its growth over the peak after imports, split into anonymous memory (heap, shared memory)
  and file-backed pages (mmap'ed shards: page cache, reclaimable), and the peak total RSS of the workers.

    uv run python benchmarks/bench_loader.py                       # full size (bench_read's sample counts)
    uv run python benchmarks/bench_loader.py --scale 0.1           # a few minutes on 2 cores
    uv run python benchmarks/bench_loader.py --shapes small --workers 0 2 --repeat 1

Not part of the test run.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np
import torch
import webdataset as wds

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_read import SHAPES, Shape, original_decode

import atdata_torch as atd

BATCH = 64
warnings.filterwarnings("ignore", message="'set_vital' is deprecated")
warnings.filterwarnings("ignore", category=ResourceWarning)


# ---------------------------------------------------------------------------------------------------- data
def scaled(shape: Shape, scale: float) -> Shape:
    """The shape with ``scale`` x the samples, in as many shards as at full size (so that workers have shards)."""
    if scale == 1.0:
        return shape
    shards = -(-shape.count // shape.maxcount)
    count = max(int(shape.count * scale), min(shape.count, 16 * shards))
    return replace(shape, count=count, maxcount=math.ceil(count / shards))


def write(shape: Shape, root: str, name: str, count: int) -> str:
    """Write ``count`` samples of ``shape`` as ``<name>-NNNNNN.tar``; returns the brace URL."""
    rng = np.random.default_rng(0)
    samples: Iterator[Any] = (shape.make(rng, i) for i in range(count))
    ds = atd.write_samples(samples, os.path.join(root, f"{name}.tar"), maxcount=shape.maxcount, progress=False)
    n = len(ds.list_shards())
    return os.path.join(root, f"{name}-{{000000..{n - 1:06d}}}.tar")


def array_fields(shape: Shape) -> tuple[str, ...]:
    return tuple(f.name for f in shape.cls.__atdata_fields__ if f.kind == "ndarray")


# ---------------------------------------------------------------------------------------------------- loaders
class TensorDecode:
    """bench_read's (b) decode (msgpack + original ndarray bytes decoding), then arrays to tensors."""

    def __init__(self, arrays: tuple[str, ...]) -> None:
        self.arrays = arrays
        self.decode = original_decode(arrays)

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        d = self.decode(sample)
        for f in self.arrays:
            d[f] = torch.from_numpy(d[f])
        return d


def make_ours(shape: Shape, url: str, workers: int) -> Iterable[Any]:
    ds = atd.Dataset[shape.cls](url)
    return ds.loader(batch_size=BATCH, shuffle=False, num_workers=workers)


def make_wds(shape: Shape, url: str, workers: int) -> Iterable[Any]:
    pipe = wds.WebDataset(url, shardshuffle=False).map(TensorDecode(array_fields(shape))).batched(BATCH)
    return wds.WebLoader(pipe, batch_size=None, num_workers=workers)


LOADERS: dict[str, Callable[[Shape, str, int], Iterable[Any]]] = {"ours": make_ours, "wds": make_wds}


def batch_len(b: Any) -> int:
    if isinstance(b, dict):
        v = next(iter(b.values()))
        return int(v.shape[0]) if isinstance(v, torch.Tensor | np.ndarray) else len(v)
    return len(b)


def check_tensors(b: Any, arrays: tuple[str, ...]) -> None:
    for f in arrays:
        v = b[f]
        assert isinstance(v, torch.Tensor) and v.shape[0] == batch_len(b), (f, type(v))


def throughput(make: Callable[[], Iterable[Any]], arrays: tuple[str, ...], repeat: int) -> tuple[float, int]:
    """Best seconds for one epoch (after one warm-up pass), and the samples read."""
    best, n = float("inf"), 0
    for i in range(repeat + 1):
        loader = make()
        gc.collect()
        t0 = time.perf_counter()
        n = 0
        for b in loader:
            if n == 0:
                check_tensors(b, arrays)
            n += batch_len(b)
        dt = time.perf_counter() - t0
        del loader
        if i > 0 or repeat == 0:
            best = min(best, dt)
    return best, n


def first_batch(make: Callable[[], Iterable[Any]], repeat: int) -> float:
    """Best seconds from constructing the dataset and loader to the first batch."""
    best = float("inf")
    for _ in range(max(repeat, 1)):
        gc.collect()
        t0 = time.perf_counter()
        it = iter(make())
        next(it)
        best = min(best, time.perf_counter() - t0)
        del it
    return best


# ---------------------------------------------------------------------------------------------------- RSS
def proc_status(pid: int | str = "self") -> dict[str, int]:
    """kB figures of /proc/<pid>/status (VmHWM, VmRSS, RssAnon, RssFile, RssShmem)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[key] = int(rest.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def child_pids() -> list[int]:
    pids: list[int] = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                pids.extend(int(x) for x in f.read().split())
        except FileNotFoundError:
            pass
    return pids


class Poller(threading.Thread):
    """Samples this process's anonymous / file-backed RSS and its children's total RSS every few ms.

    ``ru_maxrss`` is not used: on Linux it survives ``execve`` and so reports the parent's peak in a fresh
    subprocess; VmHWM (the peak of this process image) does not.
    """

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.anon = self.file = self.children = 0

    def run(self) -> None:
        while not self.stop.wait(0.005):
            st = proc_status()
            self.anon = max(self.anon, st.get("RssAnon", 0) + st.get("RssShmem", 0))
            self.file = max(self.file, st.get("RssFile", 0))
            kids = sum(proc_status(pid).get("VmRSS", 0) for pid in child_pids())
            self.children = max(self.children, kids)


def rss_child(lib: str, shape_name: str, url: str, workers: int) -> None:
    """Run in a fresh subprocess: read one epoch, print peak memory figures (kB) as JSON."""
    shape = SHAPES[shape_name]
    torch.set_num_threads(int(os.environ.get("BENCH_TORCH_THREADS", "1")))
    gc.collect()
    base = proc_status()
    poller = Poller()
    poller.start()
    n = 0
    for b in LOADERS[lib](shape, url, workers):
        n += batch_len(b)
    time.sleep(0.02)
    poller.stop.set()
    poller.join()
    end = proc_status()
    print(
        json.dumps(
            {
                "samples": n,
                "base_kb": base["VmHWM"],
                "peak_kb": end["VmHWM"],
                "anon_kb": poller.anon,
                "base_anon_kb": base.get("RssAnon", 0) + base.get("RssShmem", 0),
                "file_kb": poller.file,
                "base_file_kb": base.get("RssFile", 0),
                "children_kb": poller.children,
            }
        )
    )


def measure_rss(lib: str, shape: Shape, url: str, workers: int) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--rss-child", lib, shape.name, url, str(workers)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


# ---------------------------------------------------------------------------------------------------- main
def mb(kb: float) -> str:
    return f"{kb / 1024:,.0f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--workers", nargs="*", type=int, default=[0, 1, 2], help="num_workers values")
    p.add_argument("--repeat", type=int, default=2, help="timed epochs per loader after a warm-up (best is kept)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply sample counts (shard counts stay the same)")
    p.add_argument("--rss-workers", nargs="*", type=int, default=[0], help="num_workers for the RSS runs")
    p.add_argument("--no-rss", action="store_true", help="skip the RSS subprocesses")
    p.add_argument("--dir", default=None, help="where to write shards (default: a temp dir, removed after)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads of the reading process (DataLoader workers always use 1); 1 by default so "
        "that webdataset's torch.stack in the main process does not fight the loader for the cores",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ["BENCH_TORCH_THREADS"] = str(args.threads)  # for the RSS subprocesses
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        os.environ.pop(var, None)  # one process: rank 0 of 1
    root = args.dir or tempfile.mkdtemp(prefix="atdata-bench-loader-")
    os.makedirs(root, exist_ok=True)
    rows: list[dict[str, Any]] = []
    ttfb: list[dict[str, Any]] = []
    rss: list[dict[str, Any]] = []
    try:
        for name in args.shapes:
            shape = scaled(SHAPES[name], args.scale)
            arrays = array_fields(shape)
            t0 = time.perf_counter()
            url = write(shape, root, name, shape.count)
            print(f"[{name}] wrote {shape.count} samples in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
            for k in args.workers:
                r: dict[str, Any] = {"shape": name, "samples": shape.count, "workers": k}
                for lib, make in LOADERS.items():
                    t, n = throughput(partial(make, shape, url, k), arrays, args.repeat)
                    assert n == shape.count, (lib, n, shape.count)
                    r[lib] = t
                    f = first_batch(partial(make, shape, url, k), args.repeat)
                    ttfb.append({"shape": name, "workers": k, "lib": lib, "s": f})
                rows.append(r)
                print(f"[{name}] workers={k}: ours {r['ours']:.3f}s wds {r['wds']:.3f}s", file=sys.stderr)
            if not args.no_rss:
                big = replace(shape, count=4 * shape.count)
                url4 = write(big, root, f"{name}4x", big.count)
                for k in args.rss_workers:
                    for size, u, count in (("1x", url, shape.count), ("4x", url4, big.count)):
                        for lib in LOADERS:
                            m = measure_rss(lib, shape, u, k)
                            assert m["samples"] == count, (lib, m, count)
                            rss.append({"shape": name, "size": size, "samples": count, "workers": k, "lib": lib, **m})
                print(f"[{name}] rss done", file=sys.stderr)
                for f in os.listdir(root):
                    if f.startswith(f"{name}4x"):
                        os.remove(os.path.join(root, f))
        report(rows, ttfb, rss)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def report(rows: list[dict[str, Any]], ttfb: list[dict[str, Any]], rss: list[dict[str, Any]]) -> None:
    print()
    print(
        f"throughput into tensor batches of {BATCH} (samples/s; best epoch, worker start-up included; "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()})"
    )
    print(f"{'shape':<7}{'samples':>9}{'workers':>9}{'atdata_torch':>15}{'webdataset':>13}{'ours/wds':>10}")
    for r in rows:
        n = r["samples"]
        print(
            f"{r['shape']:<7}{n:>9}{r['workers']:>9}{n / r['ours']:>15,.0f}{n / r['wds']:>13,.0f}"
            f"{r['wds'] / r['ours']:>9.2f}x"
        )
    print()
    for shape in dict.fromkeys(r["shape"] for r in rows):
        by_k = {r["workers"]: r for r in rows if r["shape"] == shape}
        if 0 in by_k and 2 in by_k:
            ours = by_k[0]["ours"] / by_k[2]["ours"]
            theirs = by_k[0]["wds"] / by_k[2]["wds"]
            print(f"scaling {shape:<6} 2 workers / 0 workers: atdata_torch {ours:.2f}x   webdataset {theirs:.2f}x")
    print()
    print("time to first batch (ms; dataset + loader construction -> first batch, local shards, warm cache)")
    print(f"{'shape':<7}{'workers':>9}{'atdata_torch':>15}{'webdataset':>13}")
    seen: dict[tuple[str, int], dict[str, float]] = {}
    for t in ttfb:
        seen.setdefault((t["shape"], t["workers"]), {})[t["lib"]] = t["s"]
    for (shape, k), v in seen.items():
        print(f"{shape:<7}{k:>9}{v['ours'] * 1e3:>15,.1f}{v['wds'] * 1e3:>13,.1f}")
    if rss:
        print()
        print("peak memory reading one epoch in a fresh process (MB). peak: VmHWM; growth: peak - peak after imports;")
        print("anon / file: growth of anonymous (heap, shm) and file-backed (mmap, page cache) resident memory;")
        print("workers: peak total RSS of the worker processes")
        print(
            f"{'shape':<7}{'size':>5}{'samples':>9}{'workers':>8}  {'loader':<13}"
            f"{'peak':>8}{'growth':>8}{'anon':>8}{'file':>8}{'workers':>9}"
        )
        for m in rss:
            lib = "atdata_torch" if m["lib"] == "ours" else "webdataset"
            wk = mb(m["children_kb"]) if m["workers"] else "-"
            print(
                f"{m['shape']:<7}{m['size']:>5}{m['samples']:>9}{m['workers']:>8}  {lib:<13}"
                f"{mb(m['peak_kb']):>8}{mb(m['peak_kb'] - m['base_kb']):>8}"
                f"{mb(m['anon_kb'] - m['base_anon_kb']):>8}{mb(m['file_kb'] - m['base_file_kb']):>8}{wk:>9}"
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--rss-child":
        rss_child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        sys.exit(0)
    sys.exit(main())
