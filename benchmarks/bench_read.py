"""Read throughput: atdata_torch against webdataset, in the same run, on the same machine.

Three shapes are generated (small, image-like, large). Each is read into batches of 64 three ways:

(a) atdata_torch: ``Dataset[T](url).ordered(batch_size=64)``
(b) the original atdata's pipeline as webdataset runs it, over the *same* shards:
    ``webdataset.WebDataset(url).map(msgpack + ndarray-bytes decode).batched(64)``
(c) webdataset's conventional layout (one member per field: ``.npy``/``.cls``/``.txt``), ``.decode().batched(64)``

Prints samples/s, MB/s, the ratios a/b and a/c, and bytes on disk per sample. Not part of the test run.

    uv run python benchmarks/bench_read.py                 # all shapes
    uv run python benchmarks/bench_read.py --shapes small --repeat 5
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import webdataset as wds
from numpy.typing import NDArray

import atdata_torch as atd


@atd.packable
class Small:
    x: NDArray
    label: int
    text: str


@atd.packable
class Image:
    image: NDArray
    label: int


@atd.packable
class Large:
    data: NDArray


@dataclass
class Shape:
    name: str
    cls: type
    count: int
    maxcount: int
    make: Callable[[np.random.Generator, int], Any]
    payload_bytes: int  # array bytes per sample, for MB/s


SHAPES = {
    "small": Shape(
        "small",
        Small,
        100_000,
        10_000,
        lambda r, i: Small(x=r.standard_normal(16, dtype=np.float32), label=i % 10, text=f"item-{i}"),
        64,
    ),
    "image": Shape(
        "image",
        Image,
        2_000,
        500,
        lambda r, i: Image(image=r.integers(0, 255, (224, 224, 3), dtype=np.uint8), label=i % 1000),
        224 * 224 * 3,
    ),
    "large": Shape(
        "large",
        Large,
        96,
        24,
        lambda r, i: Large(data=r.standard_normal((1024, 1024), dtype=np.float32)),
        1024 * 1024 * 4,
    ),
}


# ---------------------------------------------------------------------------------------------------- baselines
def original_bytes_to_array(b: bytes) -> np.ndarray:
    """The original atdata's ``bytes_to_array`` (atdata 0.7.0b1, ``_helpers.py``)."""
    dlen = b[0]
    dtype = np.dtype(b[1 : 1 + dlen].decode())
    ndim = b[1 + dlen]
    offset = 2 + dlen
    shape = struct.unpack_from(f"<{ndim}q", b, offset)
    offset += ndim * 8
    return np.frombuffer(b, dtype=dtype, offset=offset).reshape(shape).copy()


def original_decode(array_fields: tuple[str, ...]) -> Callable[[dict], dict]:
    def decode(sample: dict) -> dict:
        d = msgpack.unpackb(sample["msgpack"])
        for f in array_fields:
            d[f] = original_bytes_to_array(d[f])
        return d

    return decode


def write_conventional(shape: Shape, samples: list[Any], out: str) -> str:
    pattern = os.path.join(out, f"{shape.name}-conv-%06d.tar")
    with wds.ShardWriter(pattern, maxcount=shape.maxcount, verbose=0) as sink:
        for i, s in enumerate(samples):
            d: dict[str, Any] = {"__key__": f"{i:08d}"}
            for f in s.__atdata_fields__:
                v = getattr(s, f.name)
                if isinstance(v, np.ndarray):
                    d[f"{f.name}.npy"] = v
                elif isinstance(v, int):
                    d[f"{f.name}.cls"] = v
                else:
                    d[f"{f.name}.txt"] = v
            sink.write(d)
    n = -(-len(samples) // shape.maxcount)
    return os.path.join(out, f"{shape.name}-conv-{{000000..{n - 1:06d}}}.tar")


def disk_per_sample(pattern: str, count: int) -> float:
    from atdata_torch._shards import expand_urls

    return sum(os.path.getsize(p) for p in expand_urls(pattern)) / count


# ---------------------------------------------------------------------------------------------------- timing
def consume(it: Iterable[Any]) -> int:
    n = 0
    for b in it:
        n += len(b["__key__"]) if isinstance(b, dict) and "__key__" in b else len(b)
    return n


def batch_len(b: Any) -> int:
    if isinstance(b, dict):
        return len(next(iter(b.values())))
    return len(b)


def write_image_shards(root: str, scale: float) -> tuple[Shape, Any]:
    """The image shape scaled by ``scale``, written as ``<root>/image-%06d.tar``: ``(shape, Dataset)``."""
    base = SHAPES["image"]
    shape = Shape(**{**base.__dict__, "count": max(64, int(base.count * scale))})
    rng = np.random.default_rng(0)
    samples = [shape.make(rng, i) for i in range(shape.count)]
    ds = atd.write_samples(samples, os.path.join(root, "image.tar"), maxcount=shape.maxcount, progress=False)
    return shape, ds


def print_readers(count: int, mb: float, readers: list[tuple[str, float]]) -> None:
    """A table of readers, ``(name, seconds for count samples)``: samples/s and MB/s (the remote benchmarks)."""
    print(f"{'reader':<44}{'samples/s':>12}{'MB/s':>10}")
    for name, t in readers:
        print(f"{name:<44}{count / t:>12,.0f}{mb / t:>10,.0f}")


def timed(make_iter: Callable[[], Iterable[Any]], repeat: int) -> tuple[float, int]:
    best = float("inf")
    n = 0
    for _ in range(repeat + 1):  # first pass warms the page cache
        gc.collect()
        t0 = time.perf_counter()
        n = sum(batch_len(b) for b in make_iter())
        dt = time.perf_counter() - t0
        best = min(best, dt)
    return best, n


def run_shape(shape: Shape, root: str, repeat: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    samples = [shape.make(rng, i) for i in range(shape.count)]
    ours = atd.write_samples(samples, os.path.join(root, f"{shape.name}.tar"), maxcount=shape.maxcount, progress=False)
    n_shards = len(ours.list_shards())
    url = os.path.join(root, f"{shape.name}-{{000000..{n_shards - 1:06d}}}.tar")
    conv_url = write_conventional(shape, samples, root)
    del samples
    arrays = tuple(f.name for f in shape.cls.__atdata_fields__ if f.kind == "ndarray")

    ds = atd.Dataset[shape.cls](url)  # type: ignore[index]
    t_a, n_a = timed(lambda: ds.ordered(batch_size=64), repeat)
    t_b, n_b = timed(
        lambda: wds.WebDataset(url, shardshuffle=False).map(original_decode(arrays)).batched(64),
        repeat,
    )
    t_c, n_c = timed(lambda: wds.WebDataset(conv_url, shardshuffle=False).decode().batched(64), repeat)
    assert n_a == n_b == n_c == shape.count, (n_a, n_b, n_c)
    return {
        "shape": shape.name,
        "samples": shape.count,
        "a": t_a,
        "b": t_b,
        "c": t_c,
        "mb": shape.count * shape.payload_bytes / 1e6,
        "disk_ours": disk_per_sample(url, shape.count),
        "disk_conv": disk_per_sample(conv_url, shape.count),
    }


def original_layout_disk(root: str) -> float:
    """Bytes per small sample when written the original's way (webdataset.TarWriter: PAX header per member)."""
    rng = np.random.default_rng(0)
    path = os.path.join(root, "orig-small.tar")
    n = 1000
    with wds.TarWriter(path) as sink:
        for i in range(n):
            s = SHAPES["small"].make(rng, i)
            sink.write({"__key__": f"{i:08d}", "msgpack": s.packed})
    return os.path.getsize(path) / n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--repeat", type=int, default=3, help="timed passes per reader (best is kept)")
    p.add_argument("--dir", default=None, help="where to write shards (default: a temp dir, removed after)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply sample counts")
    args = p.parse_args(argv)
    root = args.dir or tempfile.mkdtemp(prefix="atdata-bench-")
    os.makedirs(root, exist_ok=True)
    try:
        rows = []
        for name in args.shapes:
            shape = SHAPES[name]
            if args.scale != 1.0:
                shape = Shape(**{**shape.__dict__, "count": max(64, int(shape.count * args.scale))})
            rows.append(run_shape(shape, root, args.repeat))
            r = rows[-1]
            print(f"[{name}] done: a={r['a']:.3f}s b={r['b']:.3f}s c={r['c']:.3f}s", file=sys.stderr)
        print()
        print(f"{'shape':<7}{'samples':>9}  {'reader':<34}{'samples/s':>12}{'MB/s':>10}{'ratio a/x':>11}")
        labels = {
            "a": "a atdata_torch ordered(64)",
            "b": "b webdataset + original decode",
            "c": "c webdataset conventional .decode()",
        }
        for r in rows:
            for k in "abc":
                t = r[k]
                ratio = r[k] / r["a"]
                print(
                    f"{r['shape']:<7}{r['samples']:>9}  {labels[k]:<34}{r['samples'] / t:>12,.0f}"
                    f"{r['mb'] / t:>10,.0f}{ratio:>10.2f}x"
                )
        print()
        for r in rows:
            print(f"ratio {r['shape']:<6} a/b = {r['b'] / r['a']:.2f}x   a/c = {r['c'] / r['a']:.2f}x")
        print()
        for r in rows:
            print(
                f"disk per sample {r['shape']:<6} atdata_torch {r['disk_ours']:,.0f} B   "
                f"conventional {r['disk_conv']:,.0f} B"
            )
        if "small" in args.shapes:
            orig = original_layout_disk(root)
            print(f"disk per sample small  original layout (PAX, webdataset.TarWriter) {orig:,.0f} B")
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
