"""Datasets stored as PDS blobs: atdata_torch against webdataset reading the same getBlob URLs, in the same run.

Starts the test suite's local PLC + PDS (``tests/pds``, needs node/npm; installed on first use), publishes the image
shape (uint8 224x224x3 + int) with ``storage="blobs"``, then reads it back:

- atdata_torch: a dataset from ``load_dataset("at://...")`` (resolved once, timed apart), read per epoch: the blobs
  downloaded again each pass (no cache, identity encoding) and checked against their sha256, batches of 64;
- webdataset: ``WebDataset`` over the same ``com.atproto.sync.getBlob`` URLs (its default ``pipe:curl`` opener),
  decoded with the original atdata's decode, batches of 64 (the original atdata cannot load blob datasets back);
- atdata_torch local: the same shards from disk, for the remote / local ratio.

Also reports the upload rate of ``publish_dataset``.

    uv run python benchmarks/bench_atmosphere.py [--scale 0.5] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import webdataset as wds

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import bench_read as br
from local_pds import LocalPDS, default_prefix, ensure_installed

import atdata_torch as atd
from atdata_torch.atmosphere import Atmosphere


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=0.5)
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args(argv)
    root = tempfile.mkdtemp(prefix="atdata-bench-atmo-")
    shape, ds = br.write_image_shards(root, args.scale)
    biggest = max(os.path.getsize(s) for s in ds.list_shards())
    decode = br.original_decode(("image",))
    prefix = default_prefix()
    ensure_installed(prefix)
    try:
        with LocalPDS(seed_accounts=["bench"], blob_upload_limit=biggest + (1 << 20), prefix=prefix) as net:
            info = net.info
            with Atmosphere.login("bench.test", "bench-pass", pds=info["pdsUrl"], plc=info["plcUrl"]) as atmo:
                t0 = time.perf_counter()
                uri = atmo.publish_dataset(ds, name="bench", storage="blobs", progress=False)
                t_upload = time.perf_counter() - t0
                urls = atmo.get_dataset(uri).urls
            t_local, _ = br.timed(lambda: atd.Dataset[br.Image](ds.list_shards()).ordered(batch_size=64), args.repeat)
            t0 = time.perf_counter()
            loaded = atd.load_dataset(uri, br.Image, split="train", plc=info["plcUrl"])
            n_loaded = len(loaded)  # from the index blobs
            t_resolve = time.perf_counter() - t0
            assert n_loaded == shape.count
            # Per epoch: every pass downloads the blobs again (no cache) and checks their sha256.
            t_ours, _ = br.timed(lambda: loaded.ordered(batch_size=64), args.repeat)
            t_wds, _ = br.timed(lambda: wds.WebDataset(urls, shardshuffle=False).map(decode).batched(64), args.repeat)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    mb = shape.count * shape.payload_bytes / 1e6
    print()
    print(f"image shape, {shape.count} samples in {len(urls)} blobs, {mb:,.0f} MB of arrays, batches of 64, no cache")
    print(f"publish_dataset (upload + records): {t_upload:.2f} s, {mb / t_upload:,.0f} MB/s")
    print(f"load_dataset(at://...) and len() (identity, records, schema, index blobs): {t_resolve * 1000:.0f} ms")
    readers = [
        ("atdata_torch local", t_local),
        ("atdata_torch at:// (PDS blobs)", t_ours),
        ("webdataset (pipe:curl getBlob)", t_wds),
    ]
    br.print_readers(shape.count, mb, readers)
    print()
    print(f"ratio blobs atdata_torch / webdataset = {t_wds / t_ours:.2f}x   remote / local = {t_local / t_ours:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
