"""atdata_torch against its peers, in one run: throughput, time to first batch, bytes on disk and peak memory.

Every system reads the same samples (bench_read's shapes: small ``f32[16] + int + str``, image ``u8 224x224x3 +
int``, large ``f32 1024x1024``) from its own native format, written once into a cache directory (``--dir``; reused
by later runs of the same scale), into batches of 64 held as torch tensors:

- ours:       ``atd.Dataset[T](url).loader(batch_size=64, shuffle=..., num_workers=k)`` over the atdata tar shards
- webdataset: 1.0 ``WebLoader(WebDataset(url).map(msgpack decode + original atdata array decode).batched(64))``
  over the same shards (shuffled: ``shardshuffle`` and a 1,000-sample ``shuffle`` buffer)
- mosaicml:   streaming 0.13 ``StreamingDataset(local=MDS dir, shuffle=..., batch_size=64)`` in a ``DataLoader``
- litdata:    0.2.76 ``StreamingDataset(optimized chunks, shuffle=...)`` in its ``StreamingDataLoader``
- hf:         datasets 5.0 ``load_from_disk`` (Arrow) ``.with_format("numpy")`` in a ``DataLoader`` (map-style,
  ``shuffle=...``; batches are fetched with ``__getitems__``)

Passes are interleaved (system after system, ``--repeat`` rounds; the best pass of each is kept; each pass makes a
fresh loader, so worker start-up is counted as in training). Then, per cell: time to first batch (construction to
first batch, best of ``--repeat``), bytes on disk per sample, and the peak RSS (``VmHWM``, main process plus its
workers) of a fresh subprocess reading one epoch. Ratios are ours / peer throughput (> 1: we are faster); for time
to first batch, peer / ours (> 1: we are faster).

    uv run --group bench python benchmarks/bench_peers.py                     # full size (bench_read's counts)
    uv run --group bench python benchmarks/bench_peers.py --scale 0.05 --repeat 1 --shapes small --workers 0

Remote columns (``--remote http s3``; ``--no-local`` skips the local table): ours, webdataset, MosaicML (MDS,
``remote=`` + a ``local`` cache dir) and LitData (optimized chunks, ``s3://`` ``input_dir`` + ``cache_dir``) stream
the same samples from one loopback server in a process of its own: bench_remote.py's HTTP server serving every
system's files, or one moto S3 server (fake credentials) holding every system's files in one bucket. Same passes as
locally (interleaved, best of ``--repeat``, time to first batch, peak RSS). Caches cleared before every pass:
MosaicML's ``local`` dir and LitData's ``cache_dir`` are fresh empty dirs for every loader; ours and webdataset keep
none. webdataset reads http:// through its default ``pipe:curl`` and S3 through ``pipe:aws s3 cp``. n/a cells:
MosaicML over HTTP (streaming 0.13 has no http(s) downloader: s3, gs, oci, azure, dbfs, hf, sftp, alipan only) and
LitData over HTTP (0.2.76 streams from s3/gs/azure/hf/r2 only). LitData over moto needs ``allow_http`` set on its
obstore client (no LitData option for it); the benchmark sets it.

    uv run --group bench python benchmarks/bench_peers.py --remote http s3 --no-local --scale 0.02 --repeat 1

Not part of the test run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from typing import Any

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_loader import TensorDecode, array_fields, child_pids, proc_status, scaled
from bench_read import SHAPES, Shape

import atdata_torch as atd

BATCH = 64
SYSTEMS = ("ours", "ours-packed", "webdataset", "mosaicml", "litdata", "hf")
PACK = 256  # ours-packed: the compact layout, samples per tar member (small shape only)


def shape_systems(shape_name: str, systems: Iterable[str]) -> list[str]:
    """The systems a shape runs: ``ours-packed`` (the compact layout, made for small samples) for ``small`` only."""
    return [s for s in systems if s != "ours-packed" or shape_name == "small"]


warnings.filterwarnings("ignore")


# ---------------------------------------------------------------------------------------------------- data
def fields_of(shape: Shape) -> list[tuple[str, str]]:
    """``(field, kind)`` of the shape's sample type."""
    return [(f.name, f.kind) for f in shape.cls.__atdata_fields__]


def as_dict(sample: Any, shape: Shape) -> dict[str, Any]:
    return {name: getattr(sample, name) for name, _ in fields_of(shape)}


def samples_of(shape: Shape) -> Iterator[Any]:
    rng = np.random.default_rng(0)
    return (shape.make(rng, i) for i in range(shape.count))


def write_ours(shape: Shape, out: str, pack: int | None = None) -> str:
    ds = atd.write_samples(
        samples_of(shape), os.path.join(out, "s.tar"), maxcount=shape.maxcount, progress=False, pack=pack
    )
    n = len(ds.list_shards())
    return os.path.join(out, f"s-{{000000..{n - 1:06d}}}.tar")


def _mds_columns(shape: Shape) -> dict[str, str]:
    first = as_dict(next(samples_of(shape)), shape)
    cols = {}
    for name, kind in fields_of(shape):
        if kind == "ndarray":
            v = first[name]
            cols[name] = f"ndarray:{v.dtype.name}:{','.join(map(str, v.shape))}"
        else:
            cols[name] = kind
    return cols


def write_mds(shape: Shape, out: str) -> str:
    from streaming import MDSWriter

    with MDSWriter(out=out, columns=_mds_columns(shape), size_limit=1 << 26) as w:
        for s in samples_of(shape):
            w.write(as_dict(s, shape))
    return out


def write_litdata(shape: Shape, out: str) -> str:
    from litdata.streaming.writer import BinaryWriter

    w = BinaryWriter(out, chunk_bytes="64MB")
    for i, s in enumerate(samples_of(shape)):
        w[i] = as_dict(s, shape)
    w.done()
    w.merge()
    return out


def write_hf(shape: Shape, out: str) -> str:
    import datasets

    datasets.disable_progress_bars()
    feats: dict[str, Any] = {}
    first = as_dict(next(samples_of(shape)), shape)
    for name, kind in fields_of(shape):
        if kind == "ndarray":
            v = first[name]
            feats[name] = (
                datasets.Sequence(datasets.Value(v.dtype.name), length=v.shape[0])
                if v.ndim == 1
                else getattr(datasets, f"Array{v.ndim}D")(shape=v.shape, dtype=v.dtype.name)
            )
        else:
            feats[name] = datasets.Value({"int": "int64", "str": "string"}[kind])

    def gen() -> Iterator[dict[str, Any]]:
        for s in samples_of(shape):
            yield as_dict(s, shape)

    ds = datasets.Dataset.from_generator(gen, features=datasets.Features(feats), cache_dir=out + ".cache")
    ds.save_to_disk(out)
    shutil.rmtree(out + ".cache", ignore_errors=True)
    return out


WRITERS: dict[str, Callable[[Shape, str], str]] = {
    "ours": write_ours,
    "ours-packed": partial(write_ours, pack=PACK),
    "mosaicml": write_mds,
    "litdata": write_litdata,
    "hf": write_hf,
}


def prepare(shape: Shape, root: str) -> dict[str, str]:
    """Each system's data for the shape, written once under ``root`` (reused when already there)."""
    where: dict[str, str] = {}
    for system, write in WRITERS.items():
        if system not in shape_systems(shape.name, WRITERS):
            continue
        out = os.path.join(root, f"{shape.name}-{shape.count}", system)
        done = out + ".done"
        if not os.path.exists(done):
            shutil.rmtree(out, ignore_errors=True)
            os.makedirs(out, exist_ok=True)
            t0 = time.perf_counter()
            loc = write(shape, out)
            with open(done, "w") as f:
                f.write(loc)
            print(f"  wrote {system:<10} {shape.name} in {time.perf_counter() - t0:.1f}s", flush=True)
        with open(done) as f:
            where[system] = f.read()
    where["webdataset"] = where["ours"]  # the same tar shards
    return where


def disk_bytes(system: str, where: str) -> int:
    """The bytes a system reads from: every file of its data (ours: shards and their index sidecars; webdataset
    reads the same shards and no sidecar)."""
    if system.startswith("ours") or system == "webdataset":
        d = os.path.dirname(where)
        ends = (".tar",) if system == "webdataset" else (".tar", ".idx.json")
        return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(ends))
    total = 0
    for dirpath, _, files in os.walk(where):
        total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return total


# ---------------------------------------------------------------------------------------------------- loaders
def make_ours(shape: Shape, where: str, workers: int, shuffle: bool) -> Iterable[Any]:
    return atd.Dataset[shape.cls](where).loader(batch_size=BATCH, shuffle=shuffle, seed=0, num_workers=workers)


def make_wds(shape: Shape, where: str, workers: int, shuffle: bool) -> Iterable[Any]:
    import webdataset as wds

    pipe = wds.WebDataset(where, shardshuffle=100 if shuffle else False, empty_check=False)
    if shuffle:
        pipe = pipe.shuffle(1000)
    pipe = pipe.map(TensorDecode(array_fields(shape))).batched(BATCH)
    return wds.WebLoader(pipe, batch_size=None, num_workers=workers)


def make_mosaic(shape: Shape, where: str, workers: int, shuffle: bool) -> Iterable[Any]:
    from streaming import StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()
    ds = StreamingDataset(local=where, shuffle=shuffle, batch_size=BATCH, shuffle_seed=0)
    return torch.utils.data.DataLoader(ds, batch_size=BATCH, num_workers=workers)


def make_litdata(shape: Shape, where: str, workers: int, shuffle: bool) -> Iterable[Any]:
    import litdata

    ds = litdata.StreamingDataset(where, shuffle=shuffle, seed=0)
    return litdata.StreamingDataLoader(ds, batch_size=BATCH, num_workers=workers)


def make_hf(shape: Shape, where: str, workers: int, shuffle: bool) -> Iterable[Any]:
    import datasets

    ds = datasets.load_from_disk(where).with_format("numpy")
    return torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=shuffle, num_workers=workers)


LOADERS: dict[str, Callable[[Shape, str, int, bool], Iterable[Any]]] = {
    "ours": make_ours,
    "ours-packed": make_ours,
    "webdataset": make_wds,
    "mosaicml": make_mosaic,
    "litdata": make_litdata,
    "hf": make_hf,
}


def batch_len(b: Any) -> int:
    if isinstance(b, dict):
        v = next(iter(b.values()))
        return int(v.shape[0]) if isinstance(v, torch.Tensor | np.ndarray) else len(v)
    return len(b)


def check(b: Any, shape: Shape) -> None:
    for name in array_fields(shape):
        v = b[name]
        assert isinstance(v, torch.Tensor) and v.shape[0] == batch_len(b), (name, type(v))


def one_pass(make: Callable[[], Iterable[Any]], shape: Shape) -> tuple[float, int]:
    loader = make()
    gc.collect()
    t0 = time.perf_counter()
    n = 0
    for b in loader:
        if n == 0:
            check(b, shape)
        n += batch_len(b)
    dt = time.perf_counter() - t0
    del loader
    return dt, n


def first_batch(make: Callable[[], Iterable[Any]]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    it = iter(make())
    next(it)
    dt = time.perf_counter() - t0
    del it
    return dt


# ---------------------------------------------------------------------------------------------------- RSS
def rss_child(system: str, shape_name: str, scale: float, where: str, workers: int) -> None:
    shape = scaled(SHAPES[shape_name], scale)
    peak_children = 0
    n = 0
    for b in LOADERS[system](shape, where, workers, False):
        n += batch_len(b)
        kids = sum(proc_status(p).get("VmRSS", 0) for p in child_pids())
        peak_children = max(peak_children, kids)
    print(json.dumps({"hwm_kb": proc_status().get("VmHWM", 0), "workers_kb": peak_children, "n": n}))


def measure_rss(system: str, shape: Shape, scale: float, where: str, workers: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--rss-child", system, shape.name, str(scale), where, str(workers)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        return {"error": (out.stderr or out.stdout).strip().splitlines()[-1:]}
    return json.loads(lines[-1])  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------------- remote (--remote)
# Remote columns: every system streams the same samples from one server on loopback, the HTTP server of
# bench_remote.py (its own process) serving every system's files, or one moto S3 server (its own process) holding
# every system's files in one bucket. Caches are cleared before every pass: MosaicML's ``local`` dir and LitData's
# ``cache_dir`` are fresh empty directories for each loader (the previous ones are removed); ours and webdataset
# keep no cache.
REMOTE_SYSTEMS = ("ours", "webdataset", "mosaicml", "litdata")
BUCKET = "bench"
REMOTE_NA = {
    ("mosaicml", "http"): "streaming 0.13 has no http(s) downloader (its remote schemes: s3, gs, oci, azure, "
    "azure-dl, dbfs, hf, sftp, alipan: streaming/base/storage/download.py DOWNLOADER_MAPPINGS)",
    ("litdata", "http"): "litdata 0.2.76 streams from s3://, gs://, azure://, hf://, r2:// only "
    "(litdata/streaming/downloader.py _DOWNLOADERS); any other input_dir is read as a local path",
}


def _fresh_cache(root: str) -> str:
    """A new empty cache dir under ``root``, after removing the ones earlier loaders used."""
    os.makedirs(root, exist_ok=True)
    for old in os.listdir(root):
        shutil.rmtree(os.path.join(root, old), ignore_errors=True)
    return tempfile.mkdtemp(dir=root)


def make_remote(system: str, shape: Shape, spec: dict[str, Any], workers: int, shuffle: bool) -> Iterable[Any]:
    """A loader for ``system`` over the remote ``spec`` (see :func:`remote_specs`)."""
    if system.startswith("ours"):
        kw = {"endpoint": spec["endpoint"]} if spec.get("endpoint") else {}
        ds = atd.Dataset[shape.cls](spec["urls"], **kw)
        return ds.loader(batch_size=BATCH, shuffle=shuffle, seed=0, num_workers=workers)
    if system == "webdataset":
        return make_wds(shape, spec["urls"], workers, shuffle)
    cache = _fresh_cache(spec["cache"])
    if system == "mosaicml":
        from streaming import StreamingDataset
        from streaming.base.util import clean_stale_shared_memory

        clean_stale_shared_memory()  # reads its S3 endpoint from S3_ENDPOINT_URL
        ds = StreamingDataset(remote=spec["remote"], local=cache, shuffle=shuffle, batch_size=BATCH, shuffle_seed=0)
        return torch.utils.data.DataLoader(ds, batch_size=BATCH, num_workers=workers)
    if system == "litdata":
        import litdata
        from litdata.streaming import downloader

        # LitData fetches chunks with obstore, whose client refuses http:// endpoints unless ``allow_http`` is set,
        # and LitData 0.2.76 has no option for it: without this, every chunk GET from the moto server fails
        # ("builder error"). Over https (real S3) LitData runs the same code without the patch.
        downloader._OBSTORE_CLIENT_OPTIONS = {**downloader._OBSTORE_CLIENT_OPTIONS, "allow_http": True}
        opts = {"endpoint_url": spec["endpoint"]}
        lds = litdata.StreamingDataset(spec["remote"], cache_dir=cache, storage_options=opts, shuffle=shuffle, seed=0)
        return litdata.StreamingDataLoader(lds, batch_size=BATCH, num_workers=workers)
    raise SystemExit(f"no remote loader for {system!r}")


def remote_specs(
    transport: str, base: str, root: str, where: dict[str, str], systems: list[str], cache: str
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Per system, what :func:`make_remote` needs to stream ``where``'s data (relative to ``root``) from ``base``
    (the HTTP server's URL, or the S3 endpoint); and per system that cannot, why."""
    specs: dict[str, dict[str, Any]] = {}
    na: dict[str, str] = {}
    for s in systems:
        if (s, transport) in REMOTE_NA:
            na[s] = REMOTE_NA[s, transport]
            continue
        rel = os.path.relpath(where[s], root)
        if s.startswith("ours") or s == "webdataset":
            d = os.path.dirname(rel)
            tars = sorted(f for f in os.listdir(os.path.join(root, d)) if f.endswith(".tar"))
            if transport == "http":
                urls = [f"{base}/{d}/{t}" for t in tars]  # webdataset opens http:// through pipe:curl
            else:
                urls = [f"s3://{BUCKET}/{d}/{t}" for t in tars]
            if s == "webdataset" and transport == "s3":
                aws = shutil.which("aws")
                if aws is None:
                    na[s] = "webdataset reads S3 through `pipe:aws s3 cp`, and the AWS CLI is not installed"
                    continue
                urls = [f"pipe:{aws} s3 cp --quiet --endpoint-url {base} {u} -" for u in urls]
            specs[s] = {"urls": urls, "endpoint": base if transport == "s3" else None}
        else:
            specs[s] = {"remote": f"s3://{BUCKET}/{rel}", "endpoint": base, "cache": os.path.join(cache, s)}
    return specs, na


@contextmanager
def moto_server_process() -> Iterator[str]:
    """moto's S3 server in a process of its own on 127.0.0.1 (fake credentials); yields its endpoint URL."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for k, v in (
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(k, v)
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ep = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise SystemExit("moto's S3 server exited at start (pip install 'moto[server]')") from None
                time.sleep(0.05)
        os.environ["S3_ENDPOINT_URL"] = ep  # MosaicML streaming's S3 endpoint setting
        yield ep
    finally:
        proc.kill()
        proc.wait()


def upload_tree(endpoint: str, root: str, sub: str) -> None:
    """Every file under ``root/sub`` into the bucket, keyed by its path relative to ``root``."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    with suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=BUCKET)
    for dirpath, _, files in os.walk(os.path.join(root, sub)):
        for f in files:
            path = os.path.join(dirpath, f)
            client.upload_file(path, BUCKET, os.path.relpath(path, root))


def run_remote(args: argparse.Namespace, root: str, results: dict[str, Any]) -> None:
    """The remote columns: every ``--remote`` transport x shape x workers x order, interleaved, best of --repeat."""
    from bench_remote import http_server_process

    systems = [s for s in args.systems if s in REMOTE_SYSTEMS or s.startswith("ours")]
    cache = tempfile.mkdtemp(prefix="bench_peers-cache-")
    try:
        for transport in args.remote:
            server = http_server_process(root) if transport == "http" else moto_server_process()
            with server as base:
                for name in args.shapes:
                    shape = scaled(SHAPES[name], args.scale)
                    where = prepare(shape, root)
                    if transport == "s3":
                        t0 = time.perf_counter()
                        upload_tree(base, root, f"{shape.name}-{shape.count}")
                        print(f"  uploaded {name} to S3 in {time.perf_counter() - t0:.1f}s", flush=True)
                    specs, na = remote_specs(transport, base, root, where, shape_systems(name, systems), cache)
                    for s, why in na.items():
                        results["remote_na"][f"{s} over {transport}"] = why
                    remote_cells(args, transport, shape, specs, results)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def remote_cells(
    args: argparse.Namespace, transport: str, shape: Shape, specs: dict[str, dict[str, Any]], results: dict[str, Any]
) -> None:
    live = list(specs)
    for workers in args.workers:
        for order in args.orders:
            shuffle = order == "shuffled"
            makers = {s: partial(make_remote, s, shape, specs[s], workers, shuffle) for s in live}
            best = dict.fromkeys(live, float("inf"))
            ttfb = dict.fromkeys(live, float("inf"))
            counts: dict[str, int] = {}
            for s in live:  # a warm-up pass each (imports, connections); caches are cleared before every pass
                one_pass(makers[s], shape)
            for _ in range(max(args.repeat, 1)):
                for s in live:
                    dt, n = one_pass(makers[s], shape)
                    best[s], counts[s] = min(best[s], dt), n
                    ttfb[s] = min(ttfb[s], first_batch(makers[s]))
            short = {s: n for s, n in counts.items() if n != shape.count}
            if short:
                raise SystemExit(f"{transport} {shape.name}: expected {shape.count} samples, read {short}")
            row = {"transport": transport, "shape": shape.name, "workers": workers, "order": order}
            results["remote_throughput"].append({**row, **{s: counts[s] / best[s] for s in live}})
            results["remote_ttfb"].append({**row, **{s: ttfb[s] for s in live}})
            print("  ", transport, _row(results["remote_throughput"][-1], live), flush=True)
    if not args.no_rss:
        for workers in args.workers:
            for s in live:
                spec = {"system": s, "shape": shape.name, "scale": args.scale, "spec": specs[s], "workers": workers}
                cmd = [sys.executable, __file__, "--rss-remote-child", json.dumps(spec)]
                got = _rss_run(cmd)
                results["remote_rss"].append(
                    {"transport": transport, "shape": shape.name, "workers": workers, "system": s, **got}
                )


def _rss_run(cmd: list[str]) -> dict[str, Any]:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        return {"error": (out.stderr or out.stdout).strip().splitlines()[-1:]}
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def rss_remote_child(spec_json: str) -> None:
    """One ordered epoch of a remote loader; prints the peak RSS as :func:`rss_child` does."""
    a = json.loads(spec_json)
    shape = scaled(SHAPES[a["shape"]], a["scale"])
    peak_children = 0
    n = 0
    for b in make_remote(a["system"], shape, a["spec"], a["workers"], False):
        n += batch_len(b)
        peak_children = max(peak_children, sum(proc_status(p).get("VmRSS", 0) for p in child_pids()))
    print(json.dumps({"hwm_kb": proc_status().get("VmHWM", 0), "workers_kb": peak_children, "n": n}))


def report_remote(results: dict[str, Any], systems: list[str]) -> None:
    rows = results["remote_throughput"]
    peers = [s for s in REMOTE_SYSTEMS if s in systems and s != "ours"]
    na = results["remote_na"]
    print("\nRemote (loopback) throughput, ours / peer (> 1: ours faster); ours in samples/s; caches cleared each pass")
    print("| transport | shape | workers | order | " + " | ".join(peers) + " | ours, samples/s |")
    print("|---|---|---|---|" + "---|" * len(peers) + "---|")
    for r in rows:
        ours = r.get("ours")
        cells = ["n/a" if s not in r else (f"{ours / r[s]:.2f}x" if ours else f"{r[s]:,.0f}/s") for s in peers]
        print(
            f"| {r['transport']} | {r['shape']} | {r['workers']} | {r['order']} | "
            + " | ".join(cells)
            + f" | {ours or 0:,.0f} |"
        )
    print("\nRemote time to first batch, ms (peer / ours in brackets: > 1: ours faster)")
    cols = ["ours", *peers]
    print("| transport | shape | workers | order | " + " | ".join(cols) + " |")
    print("|---|---|---|---|" + "---|" * len(cols))
    for r in results["remote_ttfb"]:
        cells = ttfb_cells(r, cols)
        print(f"| {r['transport']} | {r['shape']} | {r['workers']} | {r['order']} | " + " | ".join(cells) + " |")
    for what, why in na.items():
        print(f"  n/a: {what}: {why}")
    if results["remote_rss"]:
        print("\nRemote peak RSS of one epoch (fresh subprocess, ordered): main VmHWM + children's peak RSS, MB")
        for r in results["remote_rss"]:
            head = f"  {r['transport']:<4} {r['shape']:<6} w={r['workers']} {r['system']:<10}"
            if "error" in r:
                print(f"{head} error: {r['error']}")
            else:
                print(f"{head} {r['hwm_kb'] / 1024:,.0f} + {r['workers_kb'] / 1024:,.0f}")


# ---------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--systems", nargs="*", default=list(SYSTEMS), choices=list(SYSTEMS))
    p.add_argument("--workers", nargs="*", type=int, default=[0, 2], help="num_workers values")
    p.add_argument("--orders", nargs="*", default=["ordered", "shuffled"], choices=["ordered", "shuffled"])
    p.add_argument("--repeat", type=int, default=3, help="interleaved timed passes per cell (best is kept)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply sample counts (shard counts stay the same)")
    p.add_argument("--dir", default=None, help="cache dir for every system's data (default: a temp dir, removed)")
    p.add_argument("--no-rss", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--threads", type=int, default=1, help="torch threads in the main process")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--rss-child", nargs=5, help=argparse.SUPPRESS)
    # remote columns (see run_remote)
    p.add_argument("--remote", nargs="*", default=[], choices=["http", "s3"], help="also stream over loopback")
    p.add_argument("--no-local", action="store_true", help="only the --remote columns")
    p.add_argument("--rss-remote-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.rss_child:
        system, shape_name, scale, where, workers = args.rss_child
        rss_child(system, shape_name, float(scale), where, int(workers))
        return 0
    if args.rss_remote_child:
        rss_remote_child(args.rss_remote_child)
        return 0
    root = args.dir or tempfile.mkdtemp(prefix="bench_peers-")
    results: dict[str, Any] = {"throughput": [], "ttfb": [], "disk": [], "rss": []}
    results.update(remote_throughput=[], remote_ttfb=[], remote_rss=[], remote_na={})
    try:
        for name in [] if args.no_local else args.shapes:
            shape = scaled(SHAPES[name], args.scale)
            print(f"== {name}: {shape.count} samples", flush=True)
            where = prepare(shape, root)
            systems = shape_systems(name, args.systems)
            for system in systems:
                results["disk"].append(
                    {"shape": name, "system": system, "per_sample": disk_bytes(system, where[system]) / shape.count}
                )
            for workers in args.workers:
                for order in args.orders:
                    shuffle = order == "shuffled"
                    makers = {s: partial(LOADERS[s], shape, where[s], workers, shuffle) for s in systems}
                    best = dict.fromkeys(systems, float("inf"))
                    ttfb = dict.fromkeys(systems, float("inf"))
                    counts: dict[str, int] = {}
                    for s in systems:  # a warm-up pass each (page cache, imports)
                        one_pass(makers[s], shape)
                    for _ in range(max(args.repeat, 1)):
                        for s in systems:  # interleaved: system after system, round after round
                            dt, n = one_pass(makers[s], shape)
                            best[s], counts[s] = min(best[s], dt), n
                            ttfb[s] = min(ttfb[s], first_batch(makers[s]))
                    row = {"shape": name, "workers": workers, "order": order}
                    results["throughput"].append({**row, **{s: counts[s] / best[s] for s in systems}})
                    results["ttfb"].append({**row, **{s: ttfb[s] for s in systems}})
                    print("  ", _row(results["throughput"][-1], args.systems), flush=True)
            if not args.no_rss:
                for workers in args.workers:
                    for s in systems:
                        got = measure_rss(s, shape, args.scale, where[s], workers)
                        results["rss"].append({"shape": name, "workers": workers, "system": s, **got})
        if args.remote:
            run_remote(args, root, results)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    if not args.no_local:
        report(results, args.systems)
    if args.remote:
        report_remote(results, args.systems)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


def ttfb_cells(r: dict[str, Any], systems: list[str]) -> list[str]:
    """A time-to-first-batch row's cells: ms, and peer / ours in brackets (n/a where a system did not run)."""
    ours = r.get("ours")
    return [
        "n/a" if s not in r else f"{r[s] * 1e3:.1f}" + (f" ({r[s] / ours:.2f}x)" if ours and s != "ours" else "")
        for s in systems
    ]


def _row(r: dict[str, Any], systems: list[str]) -> str:
    return f"{r['shape']:<6} w={r['workers']} {r['order']:<8} " + " ".join(
        f"{s}={r[s]:,.0f}/s" for s in systems if s in r
    )


def report(results: dict[str, Any], systems: list[str]) -> None:
    peers = [s for s in systems if not s.startswith("ours")]
    packed = "ours-packed" in systems
    print("\nThroughput, ours / peer (> 1: ours faster); ours in samples/s")
    extra = " | ours-packed, samples/s (/ fastest peer)" if packed else ""
    print("| shape | workers | order | " + " | ".join(peers) + " | ours, samples/s" + extra + " |")
    print("|---|---|---|" + "---|" * len(peers) + "---|" + ("---|" if packed else ""))
    for r in results["throughput"]:
        ours = r.get("ours")
        cells = [("n/a" if s not in r else f"{ours / r[s]:.2f}x" if ours else f"{r[s]:,.0f}/s") for s in peers]
        if packed:
            fastest = max((r[s] for s in peers if s in r), default=0.0)
            p = r.get("ours-packed")
            tail = f" | {p:,.0f} ({p / fastest:.2f}x)" if p and fastest else (f" | {p:,.0f}" if p else " | n/a")
        else:
            tail = ""
        print(f"| {r['shape']} | {r['workers']} | {r['order']} | " + " | ".join(cells) + f" | {ours or 0:,.0f}{tail} |")
    print("\nTime to first batch, ms (peer / ours in brackets: > 1: ours faster)")
    print("| shape | workers | order | " + " | ".join(systems) + " |")
    print("|---|---|---|" + "---|" * len(systems))
    for r in results["ttfb"]:
        cells = ttfb_cells(r, systems)
        print(f"| {r['shape']} | {r['workers']} | {r['order']} | " + " | ".join(cells) + " |")
    print("\nBytes on disk per sample")
    for r in results["disk"]:
        print(f"  {r['shape']:<6} {r['system']:<10} {r['per_sample']:,.0f} B")
    if results["rss"]:
        print("\nPeak RSS of one epoch (fresh subprocess, ordered): main VmHWM + workers' peak RSS, MB")
        for r in results["rss"]:
            if "error" in r:
                print(f"  {r['shape']:<6} w={r['workers']} {r['system']:<10} error: {r['error']}")
            else:
                print(
                    f"  {r['shape']:<6} w={r['workers']} {r['system']:<10} {r['hwm_kb'] / 1024:,.0f} + "
                    f"{r['workers_kb'] / 1024:,.0f}"
                )


if __name__ == "__main__":
    raise SystemExit(main())
