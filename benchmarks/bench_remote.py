"""Remote reads over loopback: atdata_torch against webdataset reading the same URLs, in the same run.

- HTTP: a threaded static server on 127.0.0.1 (``sendfile``, ``Range``), in a process of its own, as a real server
  would be (in the reader's process, its Python threads would share the reader's GIL). atdata_torch streams
  in-process (urllib3, read-ahead, no cache); webdataset opens ``http://`` URLs as webdataset users do, through its
  default ``pipe:curl`` opener. atdata_torch is timed twice: as it comes (``recv_buffer="loopback"``: a 4 MiB
  socket receive buffer, since the server is on this machine) and with ``recv_buffer=None`` (the kernel's
  autotuning, as over a real network), so that the loopback-only part of the figure shows.
- S3: moto's server mode on 127.0.0.1. atdata_torch reads ``s3://`` URLs through boto3; webdataset reads
  ``pipe:aws s3 cp --endpoint-url ... s3://... -`` (the AWS CLI), as its docs suggest.

Both decode the image shape (uint8 224x224x3 + int) into batches of 64, webdataset with the original atdata's decode
(as in ``bench_read.py`` (b)). Also reports remote throughput as a fraction of local throughput (no cache).
Every reader is timed as the best of ``--repeat`` + 1 passes (default 5): the remote path's buffer pools fill
during its first two or three passes in a process.

    uv run python benchmarks/bench_remote.py [--scale 0.5] [--repeat 4]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import webdataset as wds

sys.path.insert(0, os.path.dirname(__file__))
import bench_read as br

import atdata_torch as atd


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files with Range support and sendfile."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return
        size = os.path.getsize(path)
        start, end = 0, size
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            start = int(a or 0)
            end = int(b) + 1 if b else size
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Content-Type", "application/x-tar")
        self.end_headers()
        with open(path, "rb") as f:
            self.wfile.flush()
            self.connection.sendfile(f, offset=start, count=end - start)


def start_http(root: str) -> tuple[http.server.ThreadingHTTPServer, str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=root))
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_port}"


@contextmanager
def http_server_process(root: str) -> Iterator[str]:
    """The static server of :func:`start_http` in a child process; yields its base URL."""
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve", root], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        base = proc.stdout.readline().strip()
        if not base.startswith("http://"):
            raise SystemExit(f"the benchmark's HTTP server did not start (it printed {base!r})")
        yield base
    finally:
        proc.kill()
        proc.wait()


def serve(root: str) -> int:
    _srv, base = start_http(root)  # keep the server referenced while this process lives
    print(base, flush=True)
    threading.Event().wait()  # until the parent kills this process
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--repeat", type=int, default=4)
    p.add_argument("--no-s3", action="store_true")
    p.add_argument("--serve", metavar="ROOT", help=argparse.SUPPRESS)  # the HTTP server's child process
    args = p.parse_args(argv)
    if args.serve:
        return serve(args.serve)
    root = tempfile.mkdtemp(prefix="atdata-bench-remote-")
    shape, ds = br.write_image_shards(root, args.scale)
    n = len(ds.list_shards())
    names = [f"image-{i:06d}.tar" for i in range(n)]
    pattern = f"image-{{000000..{n - 1:06d}}}.tar"
    decode = br.original_decode(("image",))
    rows: list[tuple[str, float, float]] = []
    try:
        with http_server_process(root) as base:
            t_local, _ = br.timed(
                lambda: atd.Dataset[br.Image](os.path.join(root, pattern)).ordered(batch_size=64), args.repeat
            )
            url = f"{base}/{pattern}"
            t_http, _ = br.timed(lambda: atd.Dataset[br.Image](url).ordered(batch_size=64), args.repeat)
            t_tuned_off, _ = br.timed(
                lambda: atd.Dataset[br.Image](url, recv_buffer=None).ordered(batch_size=64), args.repeat
            )
            t_http_wds, _ = br.timed(
                lambda: wds.WebDataset(url, shardshuffle=False).map(decode).batched(64), args.repeat
            )
        rows.append(("http", t_http, t_http_wds))
        if not args.no_s3:
            rows.append(run_s3(root, names, decode, args.repeat))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    mb = shape.count * shape.payload_bytes / 1e6
    print()
    print(f"image shape, {shape.count} samples, {mb:,.0f} MB of arrays, batches of 64, no cache")
    readers = [("atdata_torch local", t_local)]
    for name, ours, theirs in rows:
        baseline = "webdataset " + ("(pipe:curl)" if name == "http" else "(pipe:aws s3 cp)")
        readers += [("atdata_torch " + name, ours), (baseline, theirs)]
        if name == "http":
            readers.insert(-1, ("atdata_torch http, recv_buffer=None", t_tuned_off))
    br.print_readers(shape.count, mb, readers)
    print()
    for name, ours, theirs in rows:
        print(
            f"ratio {name:<5} atdata_torch / webdataset = {theirs / ours:.2f}x   remote / local = {t_local / ours:.0%}"
        )
        if name == "http":
            off = f"{theirs / t_tuned_off:.2f}x webdataset, {t_local / t_tuned_off:.0%} of local"
            print(f"      (recv_buffer=None: {off})")
    return 0


def run_s3(root: str, names: list[str], decode: Any, repeat: int) -> tuple[str, float, float]:
    import boto3
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request otherwise
    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    try:
        host, port = srv.get_host_and_port()
        ep = f"http://{host}:{port}"
        client = boto3.client("s3", endpoint_url=ep)
        client.create_bucket(Bucket="bench")
        for name in names:
            client.upload_file(os.path.join(root, name), "bench", f"data/{name}")
            client.upload_file(os.path.join(root, name + ".idx.json"), "bench", f"data/{name}.idx.json")
        urls = [f"s3://bench/data/{name}" for name in names]
        t_ours, _ = br.timed(lambda: atd.Dataset[br.Image](urls, endpoint=ep).ordered(batch_size=64), repeat)
        aws = shutil.which("aws")
        if aws is None:
            raise SystemExit("the AWS CLI is needed for the webdataset S3 baseline (pip install awscli)")
        pipes = [f"pipe:{aws} s3 cp --quiet --endpoint-url {ep} {u} -" for u in urls]
        t_wds, _ = br.timed(lambda: wds.WebDataset(pipes, shardshuffle=False).map(decode).batched(64), repeat)
        return "s3", t_ours, t_wds
    finally:
        srv.stop()


if __name__ == "__main__":
    sys.exit(main())
