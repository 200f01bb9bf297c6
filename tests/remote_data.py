"""Test data for the remote-source tests: one sample type, shards written to a directory, comparable samples."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

import atdata_torch as atd

__all__ = [
    "FORK_WITH_THREADS",
    "MOTO_ACCESS_KEY",
    "MOTO_SECRET_KEY",
    "Rec",
    "deadline",
    "moto_s3_client",
    "records",
    "rows",
    "write_shards",
]

# The credentials the S3 tests give moto (which accepts any unless its IAM authentication is switched on).
MOTO_ACCESS_KEY = "testing-access-key"
MOTO_SECRET_KEY = "testing-secret-key-do-not-leak"

# DataLoader workers are forked from a test process that runs server threads (the HTTP fault server, moto); Python
# >= 3.12 warns about fork() in a multi-threaded process. The children only talk to the servers over sockets.
FORK_WITH_THREADS = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded, use of fork\\(\\) may lead to deadlocks:DeprecationWarning"
)


def moto_s3_client(endpoint: str) -> Any:
    """A boto3 S3 client for the moto server, with the tests' credentials."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=MOTO_ACCESS_KEY,
        aws_secret_access_key=MOTO_SECRET_KEY,
    )


@atd.packable
class Rec:
    """The sample type of the remote tests (``x`` is large enough that a shard is tens of kilobytes)."""

    x: NDArray[np.float32]
    label: int
    name: str


def records(n: int, *, start: int = 0, width: int = 1024) -> list[Rec]:
    """``n`` distinct samples: ``label`` ``start..start+n-1``, ``x`` filled from a seeded generator."""
    rng = np.random.default_rng(start)
    return [
        Rec(x=rng.standard_normal(width).astype(np.float32), label=start + i, name=f"s{start + i:04d}")
        for i in range(n)
    ]


def write_shards(
    directory: Path,
    stem: str = "data",
    *,
    n: int = 20,
    per_shard: int = 5,
    start: int = 0,
    width: int = 1024,
    sidecars: bool = True,
    pack: int | None = None,
) -> list[Path]:
    """Write ``n`` samples as ``directory/<stem>-000000.tar``... (``per_shard`` each) and return the shard paths
    (``pack``: in the compact layout, that many samples per tar member)."""
    directory.mkdir(parents=True, exist_ok=True)
    ds = atd.write_samples(
        records(n, start=start, width=width),
        directory / f"{stem}.tar",
        maxcount=per_shard,
        sidecar=sidecars,
        progress=False,
        pack=pack,
    )
    return [Path(s) for s in ds.list_shards()]


def rows(items: Iterable[Any]) -> list[tuple[int, str, bytes]]:
    """Samples, ``SampleBatch`` es or ``TensorBatch`` es as comparable ``(label, name, x bytes)`` rows."""
    out: list[tuple[int, str, bytes]] = []
    for item in items:
        if isinstance(item, (atd.SampleBatch, atd.TensorBatch)):
            xs = np.asarray(item.x)
            out.extend(
                (int(lab), str(nm), xs[i].tobytes())
                for i, (lab, nm) in enumerate(zip(item.label, item.name, strict=True))
            )
        elif isinstance(item, atd.DictSample):
            out.append((int(item["label"]), str(item["name"]), np.asarray(item["x"]).tobytes()))
        else:
            out.append((int(item.label), str(item.name), np.asarray(item.x).tobytes()))
    return out


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail (instead of hanging) when the block runs longer than ``seconds`` (``SIGALRM``; main thread only)."""

    def on_alarm(signum: int, frame: object) -> None:
        raise TimeoutError(f"the block ran for more than {seconds}s: a hang?")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    start = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    elapsed = time.monotonic() - start
    assert elapsed < seconds, f"took {elapsed:.1f}s (limit {seconds}s)"
