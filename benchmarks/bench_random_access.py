"""Random access: ``ds[i]`` for random ``i``, atdata_torch against MosaicML streaming and LitData, in one run.

The same samples (uint8 ``--shape`` images and an int label; ``--n`` of them, ``--per-shard`` per shard) are written
three ways: atdata_torch tar shards with index sidecars, MosaicML MDS shards (``MDSWriter``, ``ndarray`` + ``int``
columns) and LitData chunks (``litdata.optimize``). Each reader then fetches the same ``--lookups`` random indices one
at a time (``ds[i]``, decoded to numpy), after a warm-up pass over other indices; the best of ``--repeat`` runs is
reported, with each peer's time as a multiple of atdata_torch's. Also timed: atdata_torch's batched fetch of the same
indices (``ds[[i, j, ...]]`` in lists of 64, the DataLoader's ``__getitems__``), and ``ds[i]`` over HTTP (a static
server with ``Range`` in a process of its own, one ranged GET per sample, no cache).

The peers read their local directories; neither reads a plain HTTP(S) URL (their remote streams are object stores,
downloaded a whole shard or chunk into a local cache before the first sample of it is read), so the HTTP row has no
peer: it is compared with atdata_torch's local figure.

    uv run --group bench python benchmarks/bench_random_access.py [--n 20000] [--lookups 5000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import bench_remote as brem

import atdata_torch as atd


@atd.packable
class Item:
    image: atd.NDArray
    label: int


def images(n: int, shape: tuple[int, ...]) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, shape, dtype=np.uint8) for _ in range(n)]


def write_all(root: str, imgs: list[np.ndarray], per_shard: int) -> dict[str, Any]:
    """The samples as atdata_torch shards, MDS shards and LitData chunks under ``root``; returns the readers."""
    n = len(imgs)
    ds = atd.write_samples(
        (Item(image=im, label=i) for i, im in enumerate(imgs)),
        os.path.join(root, "atd", "data.tar"),
        maxcount=per_shard,
        progress=False,
    )
    readers: dict[str, Any] = {"atdata_torch": ds}
    shard_bytes = imgs[0].nbytes * per_shard + 1024 * per_shard
    try:
        from streaming import MDSWriter, StreamingDataset

        mds = os.path.join(root, "mds")
        cols = {"image": f"ndarray:uint8:{','.join(map(str, imgs[0].shape))}", "label": "int"}
        with MDSWriter(out=mds, columns=cols, size_limit=shard_bytes) as w:
            for i, im in enumerate(imgs):
                w.write({"image": im, "label": i})
        readers["mosaicml"] = StreamingDataset(local=mds, batch_size=1)
    except ImportError as exc:  # pragma: no cover - the bench group installs it
        print(f"(MosaicML streaming not installed: {exc})")
    try:
        import litdata

        lit = os.path.join(root, "litdata")
        litdata.optimize(
            fn=_lit_item,
            inputs=[(i, im) for i, im in enumerate(imgs)],
            output_dir=lit,
            chunk_bytes=shard_bytes,
            num_workers=1,
            verbose=False,
        )
        readers["litdata"] = litdata.StreamingDataset(lit)
    except ImportError as exc:  # pragma: no cover
        print(f"(LitData not installed: {exc})")
    for name, r in readers.items():
        assert len(r) == n, (name, len(r))
    return readers


def _lit_item(arg: tuple[int, np.ndarray]) -> dict[str, Any]:
    return {"image": arg[1], "label": arg[0]}


def label_of(sample: Any) -> int:
    return int(sample["label"] if isinstance(sample, dict) else sample.label)


def timed(fn: Callable[[], None], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def one_by_one(reader: Any, idx: list[int]) -> Callable[[], None]:
    def run() -> None:
        for i in idx:
            reader[i]

    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--per-shard", type=int, default=1000)
    p.add_argument("--shape", default="64,64,3")
    p.add_argument("--lookups", type=int, default=5000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    shape = tuple(int(x) for x in args.shape.split(","))
    root = tempfile.mkdtemp(prefix="atdata-bench-random-")
    try:
        imgs = images(args.n, shape)
        readers = write_all(root, imgs, args.per_shard)
        rng = np.random.default_rng(1)
        idx = rng.integers(0, args.n, args.lookups).tolist()
        warm = rng.integers(0, args.n, min(args.lookups, 1000)).tolist()
        for name, r in readers.items():  # same samples, same indices
            got = r[idx[0]]
            image = got["image"] if isinstance(got, dict) else got.image
            assert label_of(got) == idx[0] and np.array_equal(np.asarray(image), imgs[idx[0]]), name
            one_by_one(r, warm)()
        rows: list[tuple[str, float]] = []
        for name, r in readers.items():
            rows.append((f"{name} ds[i]", timed(one_by_one(r, idx), args.repeat)))
        ds = readers["atdata_torch"]
        batches = [idx[k : k + 64] for k in range(0, len(idx), 64)]
        rows.append(("atdata_torch ds[[...64]]", timed(lambda: [ds[b] for b in batches], args.repeat)))
        pattern = f"data-{{000000..{len(ds.list_shards()) - 1:06d}}}.tar"
        with brem.http_server_process(os.path.join(root, "atd")) as base:
            remote = atd.Dataset[Item](f"{base}/{pattern}")
            one_by_one(remote, warm[:200])()
            http_idx = idx[: max(1, len(idx) // 5)]  # a round trip each: fewer lookups
            t = timed(one_by_one(remote, http_idx), args.repeat) * len(idx) / len(http_idx)
            rows.append(("atdata_torch HTTP ds[i]", t))
            t = timed(lambda: [remote[b] for b in batches], args.repeat)
            rows.append(("atdata_torch HTTP ds[[...64]]", t))
        base_t = rows[0][1]
        print(f"n={args.n} per_shard={args.per_shard} shape={shape} lookups={args.lookups} (best of {args.repeat})")
        print(f"{'reader':32s} {'samples/s':>12s} {'us/sample':>10s} {'time / atdata_torch ds[i]':>26s}")
        for name, t in rows:
            print(f"{name:32s} {len(idx) / t:12.0f} {t / len(idx) * 1e6:10.1f} {t / base_t:26.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":  # bench_remote's server child process re-runs its own file
        raise SystemExit(brem.serve(sys.argv[2]))
    raise SystemExit(main())
