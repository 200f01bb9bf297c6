"""HTTPSource against a real HTTP server on 127.0.0.1 (tests/http_server.py): reads through injected faults,
clear errors for permanent ones (never a hang), credentials that never leak, resume by ``Range`` from the last
byte, read-ahead, and DataLoader workers."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import pickle
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from http_server import FaultServer
from remote_data import FORK_WITH_THREADS, Rec, deadline, rows, write_shards

import atdata_torch as atd
from atdata_torch.sources.http import HTTPSource

SECRET = "s3cret-pa55"
PATTERN = "data-{000000..000003}.tar"
NAMES = [f"data-{i:06d}.tar" for i in range(4)]


@pytest.fixture
def shards(http_root: Path) -> list[Path]:
    """4 shards of 5 samples (about 20 KiB each) with sidecars, served by ``http_server``."""
    return write_shards(http_root, n=20, per_shard=5)


@pytest.fixture
def local(shards: list[Path]) -> atd.Dataset[Rec]:
    return atd.Dataset[Rec]([str(p) for p in shards])


def fast(**kw: object) -> dict[str, object]:
    """Source options for tests: short timeouts and backoff, so that faults cost milliseconds."""
    opts: dict[str, object] = {"timeout": 0.5, "backoff": 0.01, "retries": 4}
    opts.update(kw)
    return opts


# ---------------------------------------------------------------------------------------------------- faults
FAULTS = {
    "drop twice mid-body": lambda s, p: s.drop(p, after=7000, times=2),
    "500 twice": lambda s, p: s.fail(p, 500, times=2),
    "503 once": lambda s, p: s.fail(p, 503, times=1),
    "429 twice": lambda s, p: s.throttle(p, times=2),
    "stall once": lambda s, p: s.stall(p, 3.0, times=1),
}
EXTRA_GETS = {"drop twice mid-body": 2, "500 twice": 2, "503 once": 1, "429 twice": 2, "stall once": 1}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_download_through_fault_is_byte_identical(http_server: FaultServer, shards: list[Path], fault: str) -> None:
    name = NAMES[1]
    FAULTS[fault](http_server, name)
    src = HTTPSource([http_server.url(n) for n in NAMES], **fast())
    with deadline(10):
        data = bytes(src.buffer(http_server.url(name)))
    assert data == shards[1].read_bytes()
    # The fault was really hit, then retried: one GET per injected failure plus the one that succeeded.
    assert http_server.gets(name) == 1 + EXTRA_GETS[fault]
    assert [r.fault for r in http_server.requests(name)][-1] is None


@pytest.mark.parametrize("fault", list(FAULTS))
def test_ranged_read_through_fault(http_server: FaultServer, shards: list[Path], fault: str) -> None:
    name = NAMES[2]
    whole = shards[2].read_bytes()
    lo, hi = 1000, len(whole) - 3000
    FAULTS[fault](http_server, name)
    src = HTTPSource([http_server.url(n) for n in NAMES], **fast())
    with deadline(10):
        assert src.read_range(http_server.url(name), lo, hi) == whole[lo:hi]
    ranges = http_server.ranges(name)
    assert ranges[0] == f"bytes={lo}-{hi - 1}"  # an inclusive HTTP range for the half-open [lo, hi)
    if fault.startswith("drop"):
        # Each retry asks only for what is still missing.
        assert ranges == [f"bytes={lo}-{hi - 1}", f"bytes={lo + 7000}-{hi - 1}", f"bytes={lo + 14000}-{hi - 1}"]
    assert len(ranges) == 1 + EXTRA_GETS[fault]


def test_small_ranged_reads(http_server: FaultServer, shards: list[Path]) -> None:
    whole = shards[0].read_bytes()
    url = http_server.url(NAMES[0])
    src = HTTPSource([url], **fast())
    assert src.read_range(url, 0, 1) == whole[:1]
    assert src.read_range(url, len(whole) - 512, len(whole)) == whole[-512:]
    assert src.read_range(url, 513, 1537) == whole[513:1537]


def test_resume_sends_range_from_the_last_byte(http_server: FaultServer, shards: list[Path]) -> None:
    name = NAMES[0]
    http_server.drop(name, after=5000, times=3)
    src = HTTPSource([http_server.url(name)], **fast())
    assert bytes(src.buffer(http_server.url(name))) == shards[0].read_bytes()
    assert http_server.ranges(name) == [None, "bytes=5000-", "bytes=10000-", "bytes=15000-"]
    assert [r.status for r in http_server.requests(name)] == [200, 206, 206, 206]


def test_resume_when_the_server_ignores_range(http_server: FaultServer, shards: list[Path]) -> None:
    """A server without Range support answers 200 with the whole body: the client skips what it already has."""
    name = NAMES[0]
    http_server.ranges_supported = False
    http_server.drop(name, after=6000, times=1)
    src = HTTPSource([http_server.url(name)], **fast())
    assert bytes(src.buffer(http_server.url(name))) == shards[0].read_bytes()
    assert http_server.ranges(name) == [None, "bytes=6000-"]
    assert [r.status for r in http_server.requests(name)] == [200, 200]


def test_backoff_is_exponential(http_server: FaultServer, shards: list[Path]) -> None:
    name = NAMES[0]
    http_server.fail(name, 500, times=3)
    src = HTTPSource([http_server.url(name)], **fast(backoff=0.1))
    assert bytes(src.buffer(http_server.url(name))) == shards[0].read_bytes()
    starts = [r.start for r in http_server.requests(name)]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(gaps) == 3
    for gap, want in zip(gaps, (0.1, 0.2, 0.4), strict=True):
        assert gap >= want * 0.9, gaps


def test_retry_after_is_honoured(http_server: FaultServer, shards: list[Path]) -> None:
    name = NAMES[0]
    http_server.fail(name, 429, times=1, headers={"Retry-After": "1"})
    src = HTTPSource([http_server.url(name)], **fast(backoff=0.0))
    start = time.monotonic()
    assert bytes(src.buffer(http_server.url(name))) == shards[0].read_bytes()
    assert time.monotonic() - start >= 0.95


@pytest.mark.parametrize("cache", [False, True], ids=["no-cache", "cache"])
def test_dataset_iteration_through_faults(
    http_server: FaultServer, shards: list[Path], local: atd.Dataset[Rec], tmp_path: Path, cache: bool
) -> None:
    # A different fault on every shard, sidecars included.
    http_server.drop(NAMES[0], after=3000, times=1)
    http_server.fail(NAMES[1], 500, times=2)
    http_server.throttle(NAMES[2], times=1)
    http_server.stall(NAMES[3], 3.0, times=1)
    http_server.fail(NAMES[0] + ".idx.json", 502, times=1)
    opts = fast(cache_dir=str(tmp_path / "cache")) if cache else fast()
    ds = atd.Dataset[Rec](f"{http_server.base_url}/{PATTERN}", **opts)
    with deadline(20):
        assert len(ds) == 20
        got = rows(ds.ordered())
        batched = rows(ds.ordered(batch_size=6))
    assert got == rows(local.ordered())
    assert batched == got
    assert all(http_server.requests(n)[0].fault is not None for n in NAMES)  # every fault was hit
    if cache:
        cache_obj = ds.source.cache  # type: ignore[attr-defined]
        assert cache_obj is not None
        for shard, path in zip(ds.list_shards(), shards, strict=True):
            assert cache_obj.path_for(shard).read_bytes() == path.read_bytes()
            assert http_server.gets(path.name) - sum(r.fault is not None for r in http_server.requests(path.name)) == 1


# ---------------------------------------------------------------------------------------------------- failures
def _leaks(exc: BaseException, secret: str) -> bool:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return secret in text or secret in repr(exc) or secret in str(getattr(exc, "shard", ""))


def test_permanent_500_fails_clearly_without_hanging(
    http_server: FaultServer, shards: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    name = NAMES[0]
    http_server.fail(name, 500, times=None)
    url = http_server.url(name, auth=f"user:{SECRET}")
    src = HTTPSource([url], **fast(retries=3))
    with deadline(10), pytest.raises(atd.SourceError) as info:
        src.buffer(url)
    exc = info.value
    assert not isinstance(exc, atd.ShardNotFoundError)
    assert "failed after 4 attempts" in str(exc) and "HTTP 500" in str(exc)
    assert f"127.0.0.1:{http_server.port}/{name}" in str(exc)
    assert http_server.gets(name) == 4
    assert not _leaks(exc, SECRET)
    assert SECRET not in repr(src) and SECRET not in str(src)
    assert "retrying" in caplog.text  # the retries were logged...
    assert SECRET not in caplog.text  # ...without the password


def test_permanent_stall_times_out(http_server: FaultServer, shards: list[Path]) -> None:
    name = NAMES[0]
    http_server.stall(name, 5.0, times=None)
    url = http_server.url(name, auth=f"user:{SECRET}")
    src = HTTPSource([url], timeout=0.3, backoff=0.01, retries=1)
    start = time.monotonic()
    with deadline(4), pytest.raises(atd.SourceError, match="failed after 2 attempts") as info:
        src.buffer(url)
    assert time.monotonic() - start < 2.5
    assert "Timeout" in str(info.value) or "timed out" in str(info.value)
    assert not _leaks(info.value, SECRET)


def test_permanent_drop_fails_after_retries(http_server: FaultServer, shards: list[Path]) -> None:
    name = NAMES[0]
    http_server.drop(name, after=100, times=None)
    src = HTTPSource([http_server.url(name)], **fast(retries=2))
    with deadline(10), pytest.raises(atd.SourceError, match="failed after 3 attempts"):
        src.buffer(http_server.url(name))
    # Every attempt resumed from the last byte received.
    assert http_server.ranges(name) == [None, "bytes=100-", "bytes=200-"]


def test_missing_shard_is_shard_not_found(
    http_server: FaultServer, shards: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = http_server.url("nope-000000.tar", auth=f"user:{SECRET}") + "?sig=TOKEN123"
    src = HTTPSource([url], **fast())
    with deadline(5), pytest.raises(atd.ShardNotFoundError, match="HTTP 404") as info:
        src.buffer(url)
    assert isinstance(info.value, FileNotFoundError)
    assert http_server.gets("nope-000000.tar") == 1  # not retried
    assert "nope-000000.tar" in str(info.value)
    for secret in (SECRET, "TOKEN123"):
        assert not _leaks(info.value, secret)
    assert SECRET not in caplog.text
    # (urllib3's own DEBUG log shows the request line, query included; the library's log must not.)
    assert not [r for r in caplog.records if r.name.startswith("atdata_torch") and "TOKEN123" in r.getMessage()]
    with pytest.raises(atd.ShardNotFoundError):
        atd.Dataset[Rec](url, **fast()).head(1)


def test_damaged_remote_shard_error_hides_credentials(http_server: FaultServer, shards: list[Path]) -> None:
    data = shards[0].read_bytes()
    shards[0].write_bytes(data[: len(data) // 2])  # truncated
    Path(str(shards[0]) + ".idx.json").unlink()
    url = http_server.url(NAMES[0], auth=f"user:{SECRET}")
    with pytest.raises(atd.ShardFormatError) as info:
        atd.Dataset[Rec](url, **fast()).head(1)
    assert not _leaks(info.value, SECRET)


@pytest.mark.parametrize("status", [401, 403])
def test_refused_is_a_source_error(http_server: FaultServer, shards: list[Path], status: int) -> None:
    name = NAMES[0]
    http_server.fail(name, status, times=None)
    url = http_server.url(name, auth=f"user:{SECRET}")
    with deadline(5), pytest.raises(atd.SourceError, match=f"refused \\(HTTP {status}\\)") as info:
        HTTPSource([url], **fast()).buffer(url)
    assert not isinstance(info.value, FileNotFoundError)
    assert http_server.gets(name) == 1  # not retried
    assert not _leaks(info.value, SECRET)


def test_unreachable_server_fails_clearly(shards: list[Path]) -> None:
    with FaultServer(shards[0].parent) as srv:
        url = srv.url(NAMES[0], auth=f"user:{SECRET}")
    # The server is gone: connections are refused.
    with deadline(10), pytest.raises(atd.SourceError, match="failed after 3 attempts") as info:
        HTTPSource([url], **fast(retries=2)).buffer(url)
    assert "reachable" in str(info.value)
    assert not _leaks(info.value, SECRET)


def test_basic_auth_from_url_credentials(http_server: FaultServer, shards: list[Path], local: atd.Dataset[Rec]) -> None:
    http_server.require_auth("user", SECRET)
    ds = atd.Dataset[Rec](f"http://user:{SECRET}@127.0.0.1:{http_server.port}/{PATTERN}", **fast())
    assert rows(ds.ordered()) == rows(local.ordered())
    assert SECRET not in repr(ds) and SECRET not in repr(ds.source)
    assert all(r.headers.get("authorization", "").startswith("Basic ") for r in http_server.requests())
    # Without credentials the server refuses: a SourceError, not a silent empty dataset.
    with pytest.raises(atd.SourceError, match="HTTP 401"):
        atd.Dataset[Rec](f"{http_server.base_url}/{PATTERN}", **fast()).head(1)


def test_headers_option_is_sent_and_not_shown(
    http_server: FaultServer, shards: list[Path], local: atd.Dataset[Rec]
) -> None:
    ds = atd.Dataset[Rec](f"{http_server.base_url}/{PATTERN}", headers={"Authorization": "Bearer TOK-42"}, **fast())
    assert rows(ds.ordered()) == rows(local.ordered())
    assert {r.headers.get("authorization") for r in http_server.requests()} == {"Bearer TOK-42"}
    assert "TOK-42" not in repr(ds)


def test_signed_url_query_goes_after_the_sidecar_suffix(
    http_server: FaultServer, shards: list[Path], local: atd.Dataset[Rec]
) -> None:
    """BUG (fixed): the sidecar of ``.../a.tar?sig=x`` was fetched as ``.../a.tar?sig=x.idx.json``, i.e. the shard
    itself, and the dataset failed with "the index sidecar ... is not valid"."""
    ds = atd.Dataset[Rec]([http_server.url(n) + "?sig=abc" for n in NAMES], **fast())
    assert rows(ds.ordered()) == rows(local.ordered())
    sidecar_gets = http_server.requests(NAMES[0] + ".idx.json")
    assert len(sidecar_gets) == 1 and sidecar_gets[0].status == 200


def test_refused_sidecar_reads_as_absent(http_server: FaultServer, shards: list[Path], local: atd.Dataset[Rec]) -> None:
    """BUG (fixed): sidecars are optional, but a refused one (S3 answers 403 for a missing key when the caller may
    not list the bucket; a signed URL does not cover the sidecar) made the whole dataset fail."""
    for n in NAMES:
        http_server.fail(n + ".idx.json", 403, times=None)
    ds = atd.Dataset[Rec](f"{http_server.base_url}/{PATTERN}", **fast())
    assert len(ds) == 20  # counted by scanning the shards
    assert rows(ds.ordered()) == rows(local.ordered())
    # ...while a refused shard still fails loudly.
    http_server.fail(NAMES[0], 403, times=None)
    with pytest.raises(atd.SourceError, match="HTTP 403"):
        atd.Dataset[Rec](f"{http_server.base_url}/{PATTERN}", **fast()).head(1)


# ---------------------------------------------------------------------------------------------------- read-ahead
def test_readahead_downloads_the_next_shards_concurrently(http_server: FaultServer, shards: list[Path]) -> None:
    for n in NAMES:
        http_server.stall(n, 0.3, times=1)  # slow enough to observe downloads overlapping
    urls = [http_server.url(n) for n in NAMES]
    src = HTTPSource(urls, **fast(timeout=5.0, readahead=2, max_concurrency=4))
    src.prefetch(urls)
    # Announcing the plan starts the first two downloads before anything is consumed...
    assert http_server.wait_for(lambda: http_server.gets(NAMES[0]) and http_server.gets(NAMES[1]))
    assert http_server.gets(NAMES[2]) == 0  # ...and no more than readahead=2
    assert bytes(src.buffer(urls[0])) == shards[0].read_bytes()
    # Consuming shard 0 moves the window: shard 2 is requested before anyone asks for it.
    assert http_server.wait_for(lambda: http_server.gets(NAMES[2]) == 1)
    assert http_server.gets(NAMES[3]) == 0
    for url, path in zip(urls[1:], shards[1:], strict=True):
        assert bytes(src.buffer(url)) == path.read_bytes()
    assert [http_server.gets(n) for n in NAMES] == [1, 1, 1, 1]  # read-ahead results were used, not refetched
    assert http_server.max_in_flight(NAMES) >= 2


def test_no_readahead_without_prefetch_window(http_server: FaultServer, shards: list[Path]) -> None:
    urls = [http_server.url(n) for n in NAMES]
    src = HTTPSource(urls, **fast(readahead=0))
    src.prefetch(urls)
    time.sleep(0.3)
    assert http_server.requests() == []
    assert bytes(src.buffer(urls[0])) == shards[0].read_bytes()
    time.sleep(0.2)
    assert [http_server.gets(n) for n in NAMES] == [1, 0, 0, 0]


# ---------------------------------------------------------------------------------------------------- workers
def test_source_pickles_without_its_connections(http_server: FaultServer, shards: list[Path]) -> None:
    url = http_server.url(NAMES[0], auth=f"user:{SECRET}")
    src = HTTPSource([url], **fast())
    src.buffer(url)  # builds the connection pool
    assert "http" in src._state()
    copy = pickle.loads(pickle.dumps(src))
    assert copy._local == {}
    assert bytes(copy.buffer(url)) == shards[0].read_bytes()


@FORK_WITH_THREADS
@pytest.mark.parametrize("cache", [False, True], ids=["no-cache", "cache"])
def test_dataloader_with_two_workers(
    http_server: FaultServer, shards: list[Path], local: atd.Dataset[Rec], tmp_path: Path, cache: bool
) -> None:
    http_server.fail(NAMES[3], 503, times=1)
    opts = fast(cache_dir=str(tmp_path / "cache")) if cache else fast()
    ds = atd.Dataset[Rec](f"{http_server.base_url}/{PATTERN}", **opts)
    with deadline(30):
        got = rows(ds.loader(batch_size=4, shuffle=False, num_workers=2, multiprocessing_context="fork"))
    assert sorted(got) == sorted(rows(local.ordered()))
    assert len(got) == 20
    if cache:
        # The main process indexed (and cached) every shard; the workers read them from the cache.
        assert [http_server.gets(n) for n in NAMES] == [1, 1, 1, 2]


# ---------------------------------------------------------------------------------------------------- ranged parts
def _spans(ranges: list[str | None], size: int) -> list[tuple[int, int]]:
    """The half-open byte spans that ``Range`` headers asked for (an open range runs to ``size``)."""
    out = []
    for r in ranges:
        assert r is not None and r.startswith("bytes=")
        a, _, b = r[len("bytes=") :].partition("-")
        out.append((int(a), int(b) + 1 if b else size))
    return out


def test_parallel_ranged_download_is_identical_and_asks_each_byte_once(
    http_server: FaultServer, shards: list[Path]
) -> None:
    name = NAMES[1]
    whole = shards[1].read_bytes()
    src = HTTPSource([http_server.url(n) for n in NAMES], **fast(chunk_size=4096, parallel=3))
    with deadline(10):
        assert bytes(src.buffer(http_server.url(name))) == whole
    ranges = http_server.ranges(name)
    assert ranges[0] == "bytes=0-4095"  # the first part also tells the size
    spans = sorted(_spans(ranges, len(whole)))
    # One download of the shard: parts of chunk_size that tile it exactly, no byte asked for twice.
    assert spans == [(lo, min(lo + 4096, len(whole))) for lo in range(0, len(whole), 4096)]
    assert all(r.status == 206 for r in http_server.requests(name))


def test_parallel_parts_are_in_flight_together(http_server: FaultServer, shards: list[Path]) -> None:
    name = NAMES[0]
    http_server.stall(name, 0.2, times=None)  # every part is slow: they overlap when run in parallel
    src = HTTPSource([http_server.url(name)], **fast(timeout=5.0, chunk_size=4096, parallel=4, max_concurrency=4))
    with deadline(10):
        assert bytes(src.buffer(http_server.url(name))) == shards[0].read_bytes()
    assert http_server.max_in_flight([name]) >= 2
    assert http_server.gets(name) == -(-shards[0].stat().st_size // 4096)


def test_a_broken_part_is_resumed_on_its_own(http_server: FaultServer, shards: list[Path]) -> None:
    name = NAMES[2]
    whole = shards[2].read_bytes()
    http_server.drop(name, after=1000, times=1, range_from=8192)  # the third part breaks...
    http_server.drop(name, after=1000, times=1, range_from=9192)  # ...and its resumption too
    src = HTTPSource([http_server.url(name)], **fast(chunk_size=4096, parallel=2))
    with deadline(10):
        assert bytes(src.buffer(http_server.url(name))) == whole
    ranges = http_server.ranges(name)
    # The broken part asked again only for what it was still missing, twice; the other parts once each.
    assert [r for r in ranges if r and r.startswith(("bytes=8192-", "bytes=9192-", "bytes=10192-"))] == [
        "bytes=8192-12287",
        "bytes=9192-12287",
        "bytes=10192-12287",
    ]
    assert len(ranges) == -(-len(whole) // 4096) + 2


def test_a_part_that_keeps_failing_fails_the_shard_clearly(http_server: FaultServer, shards: list[Path]) -> None:
    name = NAMES[0]
    for start in (4096, 4106, 4116):  # the second part breaks after 10 bytes, and so does every resumption
        http_server.drop(name, after=10, times=None, range_from=start)
    url = http_server.url(name, auth=f"user:{SECRET}")
    src = HTTPSource([url], **fast(chunk_size=4096, retries=2))
    with deadline(10), pytest.raises(atd.SourceError, match="failed after 3 attempts") as info:
        src.buffer(url)
    assert not _leaks(info.value, SECRET)
    # ...and the source still works for the other shards afterwards.
    http_server.clear()
    assert bytes(src.buffer(url)) == shards[0].read_bytes()


def test_ranged_parts_when_the_server_ignores_range(http_server: FaultServer, shards: list[Path]) -> None:
    """A server without Range support answers 200 to the first part: the whole shard comes in that one stream."""
    name = NAMES[0]
    http_server.ranges_supported = False
    src = HTTPSource([http_server.url(name)], **fast(chunk_size=4096, parallel=4))
    assert bytes(src.buffer(http_server.url(name))) == shards[0].read_bytes()
    assert http_server.ranges(name) == ["bytes=0-4095"]
    assert [r.status for r in http_server.requests(name)] == [200]
    # A broken single stream still resumes (the server skips nothing: the client skips what it has).
    http_server.drop(name, after=6000, times=1)
    src = HTTPSource([http_server.url(name)], **fast(chunk_size=4096))
    assert bytes(src.buffer(http_server.url(name))) == shards[0].read_bytes()
    assert http_server.ranges(name)[-2:] == ["bytes=0-4095", "bytes=6000-"]


def test_ranged_parts_of_an_empty_shard(http_server: FaultServer, shards: list[Path]) -> None:
    (http_server.root / "empty.tar").write_bytes(b"")
    url = http_server.url("empty.tar")
    src = HTTPSource([url], **fast(chunk_size=4096))
    assert bytes(src.buffer(url)) == b""
    assert [r.status for r in http_server.requests("empty.tar")] == [416, 200]  # no byte 0: asked again whole


def test_ranged_parts_shard_smaller_than_a_part(http_server: FaultServer, shards: list[Path]) -> None:
    name = NAMES[3]
    src = HTTPSource([http_server.url(name)], **fast(chunk_size=1 << 20))
    assert bytes(src.buffer(http_server.url(name))) == shards[3].read_bytes()
    assert http_server.ranges(name) == ["bytes=0-1048575"]


@pytest.mark.parametrize("cache", [False, True], ids=["no-cache", "cache"])
def test_dataset_with_ranged_parts_downloads_each_shard_once(
    http_server: FaultServer, shards: list[Path], local: atd.Dataset[Rec], tmp_path: Path, cache: bool
) -> None:
    http_server.drop(NAMES[1], after=500, times=1, range_from=4096)
    opts = fast(chunk_size=4096, parallel=3, readahead=2)
    if cache:
        opts["cache_dir"] = str(tmp_path / "cache")
    ds = atd.Dataset[Rec](f"{http_server.base_url}/{PATTERN}", **opts)
    with deadline(20):
        assert rows(ds.ordered(batch_size=6)) == rows(local.ordered(batch_size=6))
        if cache:
            assert rows(ds.ordered()) == rows(local.ordered())  # a second pass reads the cache
    for path in shards:
        size = path.stat().st_size
        spans = sorted(_spans(http_server.ranges(path.name), size))
        tiles = [(lo, min(lo + 4096, size)) for lo in range(0, size, 4096)]
        if path.name == NAMES[1]:
            # The broken part asked again only for what it was missing: from its last byte received.
            tiles = sorted([*tiles, (4096 + 500, 8192)])
        # One download of each shard (the cache's second pass asked for nothing): parts tiling it exactly.
        assert spans == tiles


@pytest.mark.parametrize("ranges", [True, False])
def test_checksums_hold_across_resumed_transfers(http_server: FaultServer, shards: list[Path], ranges: bool) -> None:
    """The sha256 is computed as bytes arrive; a broken and resumed transfer (with or without Range) still checks."""
    import hashlib

    name = NAMES[0]
    url = http_server.url(name)
    data = shards[0].read_bytes()
    http_server.ranges_supported = ranges
    http_server.drop(name, after=5000, times=2)
    src = HTTPSource([url], checksums={url: hashlib.sha256(data).hexdigest().upper()}, **fast())
    assert bytes(src.buffer(url)) == data
    http_server.drop(name, after=7000, times=1)
    bad = HTTPSource([url], checksums={url: "0" * 64}, **fast())
    with pytest.raises(atd.ChecksumError, match="record says 0000000000000000") as ei:
        bad.buffer(url)
    assert ei.value.shard == url


def test_checksums_with_parallel_parts(http_server: FaultServer, shards: list[Path]) -> None:
    import hashlib

    name = NAMES[1]
    url = http_server.url(name)
    data = shards[1].read_bytes()
    src = HTTPSource([url], checksums={url: hashlib.sha256(data).hexdigest()}, chunk_size=4096, parallel=3, **fast())
    assert bytes(src.buffer(url)) == data
    bad = HTTPSource([url], checksums={url: "1" * 64}, chunk_size=4096, **fast())
    with pytest.raises(atd.ChecksumError):
        bad.buffer(url)


# ---------------------------------------------------------------------------------------------------- streaming
def _downloads(server: FaultServer, name: str) -> list[str | None]:
    """The Range of every GET of a shard, less the sidecar's tail check."""
    return server.downloads(name)


BIG = [f"big-{i:06d}.tar" for i in range(2)]


@pytest.fixture
def big_shards(http_root: Path) -> list[Path]:
    """2 shards of 12 samples of 1 MiB each: larger than one read (4 MiB), so a shard arrives in several."""
    return write_shards(http_root, "big", n=24, per_shard=12, width=1 << 18)


def test_decoding_starts_before_the_shard_has_arrived(http_server: FaultServer, big_shards: list[Path]) -> None:
    gate = threading.Event()
    http_server.pause(BIG[0], after=6 << 20, gate=gate)  # half the shard, then wait for the test
    ds = atd.Dataset[Rec](f"{http_server.base_url}/big-{{000000..000001}}.tar", **fast(timeout=20.0))
    local = atd.Dataset[Rec]([str(p) for p in big_shards])
    it = iter(ds.ordered(batch_size=2))
    side = json.loads(Path(str(big_shards[0]) + ".idx.json").read_bytes())
    tail = f"bytes={side['offsets'][-1] + side['lengths'][-1]}-{side['offsets'][-1] + side['lengths'][-1] + 511}"
    with deadline(10):
        first = next(it)  # the first batch decodes from the first bytes...
    # One download of the shard, and one 512-byte ranged read of its tail (its sidecar is checked against it)
    [req] = [r for r in http_server.requests(BIG[0]) if r.range != tail]
    assert req.end is None and not gate.is_set()  # ...while the rest of the shard is still held back
    gate.set()
    with deadline(20):
        got = rows([first, *it])
    assert got == rows(local.ordered())
    assert http_server.ranges(BIG[0]).count(tail) == 1 and len(_downloads(http_server, BIG[0])) == 1


def test_a_stream_broken_mid_shard_resumes_behind_the_reader(
    http_server: FaultServer, big_shards: list[Path], local_big: atd.Dataset[Rec]
) -> None:
    http_server.drop(BIG[0], after=5 << 20, times=1)
    ds = atd.Dataset[Rec](f"{http_server.base_url}/big-{{000000..000001}}.tar", **fast(timeout=20.0))
    with deadline(20):
        assert rows(ds.ordered(batch_size=5)) == rows(local_big.ordered())
    assert _downloads(http_server, BIG[0]) == [None, f"bytes={5 << 20}-"]


def test_a_stream_that_keeps_failing_raises_after_the_samples_it_had(
    http_server: FaultServer, big_shards: list[Path], local_big: atd.Dataset[Rec]
) -> None:
    http_server.drop(BIG[0], after=5 << 20, times=1)
    http_server.drop(BIG[0], after=0, times=None, range_from=5 << 20)  # every resume breaks at once
    ds = atd.Dataset[Rec](f"{http_server.base_url}/big-{{000000..000001}}.tar", **fast(retries=2, timeout=20.0))
    got: list[Any] = []
    with deadline(20), pytest.raises(atd.SourceError, match="failed after 3 attempts") as info:
        for batch in ds.ordered(batch_size=1):
            got.append(batch)
    assert BIG[0] in str(info.value)
    assert len(got) == 4  # the samples that arrived whole were read, in order; then it raised (nothing dropped)
    assert rows(got) == rows(local_big.ordered())[:4]


def test_a_shard_shorter_than_its_sidecar_is_a_format_error(
    http_server: FaultServer, big_shards: list[Path], local_big: atd.Dataset[Rec]
) -> None:
    want = rows(local_big.ordered())
    data = big_shards[0].read_bytes()
    big_shards[0].write_bytes(data[: 7 << 20])  # the sidecar still describes the whole shard
    url = f"{http_server.base_url}/big-{{000000..000001}}.tar"
    with deadline(20), pytest.raises(atd.ShardFormatError, match="stale") as info:
        list(atd.Dataset[Rec](url, **fast()).ordered())
    assert info.value.shard is not None and BIG[0] in info.value.shard
    assert info.value.key == "00000006" and "build_index" in str(info.value)
    with deadline(20), pytest.warns(atd.SkippedSamplesWarning, match="6 undecodable"):
        got = rows(atd.Dataset[Rec](url, **fast()).ordered(on_error="skip"))
    assert got == want[:6] + want[12:]  # samples 0-5 end within the first 7 MiB; 6-11 are reported, not dropped


def test_streaming_only_where_nothing_is_checked_first(http_server: FaultServer, big_shards: list[Path]) -> None:
    from atdata_torch.sources import Filling

    url = http_server.url(BIG[0])
    assert isinstance(HTTPSource([url], **fast()).stream_buffer(url), Filling)
    digest = hashlib.sha256(big_shards[0].read_bytes()).hexdigest()
    for opts in ({"checksums": {url: digest}}, {"chunk_size": 1 << 20}):
        got = HTTPSource([url], **fast(**opts)).stream_buffer(url)
        assert not isinstance(got, Filling) and bytes(got) == big_shards[0].read_bytes()


def test_concurrent_sidecar_reads(http_server: FaultServer, shards: list[Path], local: atd.Dataset[Rec]) -> None:
    sidecars = [n + ".idx.json" for n in NAMES]
    for name in sidecars:
        http_server.stall(name, 0.2, times=1)
    ds = atd.Dataset[Rec](f"{http_server.base_url}/{PATTERN}", **fast(timeout=5.0, max_concurrency=4))
    with deadline(10):
        assert len(ds) == 20
    assert [http_server.gets(n) for n in sidecars] == [1, 1, 1, 1]
    assert http_server.max_in_flight(sidecars) >= 2  # fetched together, not one round trip after another
    assert all(http_server.gets(n) == 0 for n in NAMES)  # len() downloads no shard
    assert rows(ds.ordered()) == rows(local.ordered())


# ---------------------------------------------------------------------------------------------------- buffers
def test_buffers_are_reused_only_once_nothing_refers_to_them() -> None:
    from atdata_torch.sources._buffers import _BufferPool

    pool = _BufferPool(keep=2)
    a = pool.get(1000)
    b = pool.get(1000)
    assert not np.shares_memory(a, b)
    c = pool.get(1000)  # the pool is full and both buffers are held: a fresh, unpooled one
    assert not np.shares_memory(c, a) and not np.shares_memory(c, b) and len(pool) == 2
    held = memoryview(a)[10:20]  # a view of a view keeps the buffer
    del a
    assert not np.shares_memory(pool.get(1000), held)
    base = np.frombuffer(held, np.uint8).ctypes.data - 10
    del held
    reused = pool.get(900)  # free again: the same memory, for a size that fits
    assert reused.ctypes.data == base and len(reused) == 900
    assert not np.shares_memory(pool.get(3000), reused)  # too small for 3000 bytes
    del reused, b
    pool.release(idle=60.0)
    assert len(pool) == 2  # freed just now: kept for the next shard
    pool.release()
    assert len(pool) == 0


def test_samples_kept_from_one_pass_survive_the_next(
    http_server: FaultServer, big_shards: list[Path], local_big: atd.Dataset[Rec]
) -> None:
    url = f"{http_server.base_url}/big-{{000000..000001}}.tar"
    with deadline(30):
        kept = list(atd.Dataset[Rec](url, **fast()).ordered())  # arrays may alias the downloaded shard...
        for _ in range(2):  # ...which later passes must not overwrite
            assert rows(atd.Dataset[Rec](url, **fast()).ordered(batch_size=7)) == rows(local_big.ordered())
    assert rows(kept) == rows(local_big.ordered())


@pytest.fixture
def local_big(big_shards: list[Path]) -> atd.Dataset[Rec]:
    return atd.Dataset[Rec]([str(p) for p in big_shards])


def test_an_ordered_pass_starts_downloading_while_the_sidecars_are_read(
    http_server: FaultServer, shards: list[Path], local: atd.Dataset[Rec]
) -> None:
    sidecars = [n + ".idx.json" for n in NAMES]
    for name in sidecars:
        http_server.stall(name, 0.3, times=1)
    ds = atd.Dataset[Rec](f"{http_server.base_url}/{PATTERN}", **fast(timeout=5.0))
    with deadline(10):
        assert rows(ds.ordered()) == rows(local.ordered())
    first_get = http_server.requests(NAMES[0])[0].start
    sidecars_done = max(r.end or 0.0 for n in sidecars for r in http_server.requests(n))
    assert first_get < sidecars_done  # shard 0 was on its way before the index was complete
    assert [len(_downloads(http_server, n)) for n in NAMES] == [1, 1, 1, 1]  # and nothing was fetched twice


@FORK_WITH_THREADS
def test_a_forked_worker_starts_its_own_buffer_pool() -> None:
    import os

    from atdata_torch.sources import _buffers

    held = _buffers._buffer_pool(2).get(1000)
    with _buffers._POOL_LOCK:  # as a download thread of the parent might hold it at the fork
        pid = os.fork()
        if pid == 0:  # the child: a fresh, empty pool behind a lock nobody holds
            ok = _buffers._POOLS == {} and len(_buffers._buffer_pool(2).get(10)) == 10
            os._exit(0 if ok else 1)
    end = time.monotonic() + 10
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < end:
        time.sleep(0.01)
    if done[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung on the buffer pool's lock")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert len(_buffers._buffer_pool(2)) >= 1 and held is not None


# ---------------------------------------------------------------------------------------------------- segments
def test_an_ordered_pass_reads_a_shard_in_segments(http_server: FaultServer, big_shards: list[Path]) -> None:
    from atdata_torch.sources import Filling
    from atdata_torch.sources._sinks import SEGMENT

    url = http_server.url(BIG[0])
    got = HTTPSource([url], **fast()).stream_buffer(url)
    assert isinstance(got, Filling) and got.segment == SEGMENT and got.view is None
    got.wait(len(got))
    assert bytes(got.contiguous()) == big_shards[0].read_bytes()  # samples cross segment ends (1 MiB each)


def test_a_reader_in_order_lets_go_of_the_segments_behind_it(
    http_server: FaultServer, big_shards: list[Path], local_big: atd.Dataset[Rec]
) -> None:
    import gc

    from atdata_torch.sources import _buffers, _sinks

    pool = _buffers._buffer_pool(0, "segment")
    gc.collect()
    base = pool.in_use()
    held: list[int] = []
    got: list[Any] = []
    with deadline(20):
        for batch in atd.Dataset[Rec](http_server.url(BIG[0]), **fast()).ordered(batch_size=1):
            got.append(batch)
            gc.collect()
            held.append(pool.in_use() - base)
    assert rows(got) == rows(local_big.ordered())[:12]
    ix = local_big.shard_indexes()[0]
    size = big_shards[0].stat().st_size
    segments = -(-size // _sinks.SEGMENT)
    # At the last sample, only the segments from the one it starts in to the shard's end are still held.
    assert held[-1] == segments - ix.offsets[-1] // _sinks.SEGMENT < segments
    gc.collect()
    assert pool.in_use() == base  # and after the pass, none


def test_a_padded_last_batch_wraps_around_a_segmented_shard(
    http_server: FaultServer, big_shards: list[Path], local_big: atd.Dataset[Rec]
) -> None:
    # Padding reads the shard's first samples again after its last: its segments must still be there.
    ds = atd.Dataset[Rec](http_server.url(BIG[0]), **fast())
    local = atd.Dataset[Rec](str(big_shards[0]))
    with deadline(20):
        got = rows(ds.ordered(batch_size=5, last_batch="pad"))
    assert got == rows(local.ordered(batch_size=5, last_batch="pad")) and len(got) == 15
    assert len(_downloads(http_server, BIG[0])) == 1


def test_plain_webdataset_samples_across_segment_ends(http_server: FaultServer, http_root: Path) -> None:
    import webdataset as wds

    rng = np.random.default_rng(7)
    path = http_root / "plain-000000.tar"
    with wds.TarWriter(str(path)) as w:  # two members per sample: read through the tar headers, not the index
        for i in range(14):
            w.write({"__key__": f"k{i:03d}", "bin": rng.bytes(700_000 + 977 * i), "cls": str(i).encode()})
    atd.build_index(str(path), progress=False)

    def plain(ds: atd.Dataset[Any]) -> list[tuple[bytes, Any]]:
        return [(bytes(s["bin"]), s["cls"]) for s in ds.ordered()]

    with deadline(20):
        got = plain(atd.Dataset(http_server.url(path.name), **fast()))
    assert got == plain(atd.Dataset(str(path))) and len(got) == 14


def test_a_shard_read_ahead_in_segments_is_also_served_whole(http_server: FaultServer, big_shards: list[Path]) -> None:
    url = http_server.url(BIG[0])
    src = HTTPSource([url], **fast())
    src.prefetch([url])  # starts the download as an ordered pass would, in segments
    assert http_server.wait_for(lambda: http_server.gets(BIG[0]) == 1)
    with deadline(20):
        assert bytes(src.buffer(url)) == big_shards[0].read_bytes()  # joined for a caller that wants one buffer
    assert http_server.gets(BIG[0]) == 1


def test_a_response_without_content_length_is_read_to_its_end(
    http_server: FaultServer, big_shards: list[Path], local_big: atd.Dataset[Rec]
) -> None:
    http_server.send_lengths = False
    ds = atd.Dataset[Rec](f"{http_server.base_url}/big-{{000000..000001}}.tar", **fast(timeout=20.0))
    with deadline(20):
        assert rows(ds.ordered(batch_size=5)) == rows(local_big.ordered())
    assert http_server.gets(BIG[0]) == 1


# ---------------------------------------------------------------------------------------------------- receive buffer
def _rcvbuf(sock: Any) -> int:
    import socket

    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))


def _probe(size: int | None) -> int:
    """What this kernel reports for a socket whose SO_RCVBUF was set to ``size`` (or left alone)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        if size is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        return _rcvbuf(s)


def test_the_receive_buffer_is_fixed_only_towards_this_machine() -> None:
    import socket

    from atdata_torch.sources.http import LOOPBACK_RECV_BUFFER, _tune_receive_buffer

    tuned = _probe(LOOPBACK_RECV_BUFFER)
    assert tuned != _probe(None)  # the setting is visible on this kernel
    for peer, expect_tuned in [("127.0.0.1", True), ("10.255.255.1", False)]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((peer, 9))  # a datagram socket only records its peer: nothing is sent
            before = _rcvbuf(s)
            _tune_receive_buffer(s, "loopback")
            assert _rcvbuf(s) == (tuned if expect_tuned else before), peer
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("10.255.255.1", 9))
        _tune_receive_buffer(s, 1 << 20)  # a number: on every connection
        assert _rcvbuf(s) == _probe(1 << 20)


@pytest.mark.parametrize("recv_buffer", ["loopback", None, 1 << 20])
def test_connections_get_the_receive_buffer_asked_for(
    http_server: FaultServer,
    shards: list[Path],
    local: atd.Dataset[Rec],
    monkeypatch: pytest.MonkeyPatch,
    recv_buffer: Any,
) -> None:
    from atdata_torch.sources import http as http_module
    from atdata_torch.sources.http import LOOPBACK_RECV_BUFFER

    seen: list[int] = []
    real = http_module._tune_receive_buffer

    def spy(sock: Any, value: Any) -> None:
        real(sock, value)
        seen.append(_rcvbuf(sock))

    monkeypatch.setattr(http_module, "_tune_receive_buffer", spy)
    ds = atd.Dataset[Rec](f"{http_server.base_url}/{PATTERN}", **fast(recv_buffer=recv_buffer))
    assert rows(ds.ordered()) == rows(local.ordered())
    if recv_buffer is None:
        assert seen == []  # the kernel's autotuning
    else:
        want = _probe(LOOPBACK_RECV_BUFFER if recv_buffer == "loopback" else recv_buffer)
        assert seen and all(v == want for v in seen)


def test_a_wrong_receive_buffer_is_refused() -> None:
    with pytest.raises(TypeError, match="recv_buffer"):
        HTTPSource(["http://127.0.0.1/a.tar"], recv_buffer="big")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------- slow servers
def _retry_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "atdata_torch" and r.levelno == logging.WARNING and "retrying in" in r.getMessage()
    ]


def test_a_server_that_never_answers_hits_the_deadline(
    http_server: FaultServer, shards: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    name = NAMES[0]
    http_server.hang(name)
    url = http_server.url(name, auth=f"user:{SECRET}") + "?sig=TOKEN123"
    src = HTTPSource([url], timeout=0.3, backoff=0.01, retries=100, deadline=1.2)
    start = time.monotonic()
    with deadline(5), pytest.raises(atd.SourceError, match=r"deadline of 1\.2s") as info:
        src.buffer(url)
    assert time.monotonic() - start < 1.2 + 0.5  # the deadline, plus at most one read timeout
    assert "raise deadline=" in str(info.value) and name in str(info.value)
    warned = _retry_warnings(caplog)
    assert len(warned) >= 2 and "attempt 1 of 101" in warned[0] and name in warned[0]
    assert "imeout" in warned[0] or "timed out" in warned[0]  # the reason
    for secret in (SECRET, "TOKEN123"):
        assert not _leaks(info.value, secret) and secret not in caplog.text


def test_a_trickle_is_broken_off_by_the_minimum_rate(
    http_server: FaultServer, shards: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    """BUG (fixed): a byte every 0.5 s never tripped a 2 s read timeout: a read took as long as the server liked."""
    name = NAMES[0]
    http_server.trickle(name, every=0.02)  # 50 bytes/s, never idle for the 0.3 s read timeout
    url = http_server.url(name)
    src = HTTPSource([url], timeout=0.3, backoff=0.01, retries=2, min_rate=1000)
    start = time.monotonic()
    with deadline(5), pytest.raises(atd.SourceError, match="failed after 3 attempts") as info:
        src.buffer(url)
    assert time.monotonic() - start < 2.5
    assert "below min_rate=1000" in str(info.value)
    assert len(_retry_warnings(caplog)) == 2
    assert http_server.gets(name) == 3 and http_server.ranges(name)[1] is not None  # resumed from the last byte


def test_a_trickle_cannot_outlast_the_deadline(http_server: FaultServer, shards: list[Path]) -> None:
    name = NAMES[0]
    http_server.trickle(name, every=0.02)
    url = http_server.url(name)
    src = HTTPSource([url], timeout=0.3, backoff=0.01, retries=5, min_rate=0, deadline=1.0)
    start = time.monotonic()
    with deadline(5), pytest.raises(atd.SourceError, match="deadline of 1s"):
        src.buffer(url)
    assert time.monotonic() - start < 1.5


def test_a_long_retry_after_is_capped_with_a_warning(
    http_server: FaultServer, shards: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    """BUG (fixed): ``Retry-After: 100`` was honoured for 60 s in silence."""
    name = NAMES[0]
    http_server.retry_after(name, 100)
    url = http_server.url(name)
    src = HTTPSource([url], **fast(max_retry_after=0.3))
    start = time.monotonic()
    with deadline(5):
        assert bytes(src.buffer(url)) == shards[0].read_bytes()
    assert 0.25 < time.monotonic() - start < 2.0
    [warned] = _retry_warnings(caplog)
    assert "HTTP 503" in warned and "Retry-After" in warned and "max_retry_after=0.3" in warned


def test_a_retry_after_past_the_deadline_fails_at_once(http_server: FaultServer, shards: list[Path]) -> None:
    name = NAMES[0]
    http_server.retry_after(name, 100)
    url = http_server.url(name)
    src = HTTPSource([url], **fast(deadline=5.0))  # max_retry_after=30 by default: the wait would pass 5 s
    start = time.monotonic()
    with deadline(5), pytest.raises(atd.SourceError, match="deadline of 5s"):
        src.buffer(url)
    assert time.monotonic() - start < 1.0  # it did not sleep first


def test_a_truncated_body_is_retried_then_named(http_server: FaultServer, shards: list[Path]) -> None:
    name = NAMES[0]
    http_server.truncate(name, after=0)  # every attempt: headers, no body
    src = HTTPSource([http_server.url(name)], **fast(retries=2))
    with deadline(5), pytest.raises(atd.SourceError, match="failed after 3 attempts") as info:
        src.buffer(http_server.url(name))
    assert "connection closed after 0 of" in str(info.value) and info.value.shard is not None


def test_a_body_that_stalls_midway_reaches_the_reader(http_server: FaultServer, shards: list[Path]) -> None:
    """The download runs in a thread that fills the shard as the reader decodes it: its error must reach the reader
    (no wait for ever on the bytes that never come)."""
    http_server.stall_body(NAMES[0], after=8000)
    ds = atd.Dataset[Rec](http_server.url(NAMES[0]), timeout=0.3, backoff=0.01, retries=50, deadline=1.2)
    start = time.monotonic()
    with deadline(5), pytest.raises(atd.SourceError, match=r"deadline of 1\.2s") as info:
        list(ds.ordered())
    assert time.monotonic() - start < 1.2 + 1.0
    assert NAMES[0] in str(info.value)


def test_the_sidecar_has_its_own_deadline(
    http_server: FaultServer, shards: list[Path], local: atd.Dataset[Rec], caplog: pytest.LogCaptureFixture
) -> None:
    http_server.hang(NAMES[0] + ".idx.json")
    ds = atd.Dataset[Rec](http_server.url(NAMES[0]), **fast(timeout=0.3, retries=50, sidecar_deadline=0.8))
    with deadline(5):
        assert rows(ds.ordered()) == rows(local.ordered())[:5]  # the shard was scanned instead
    assert "no index sidecar" in caplog.text and "deadline of 0.8s" in caplog.text


# ---------------------------------------------------------------------------------------------------- secrets
LEAKY = ("SECRET", "s3cret")


def _signed(srv: FaultServer, name: str) -> str:
    return srv.url(name, auth="user:SECRETpw") + "?X-Amz-Signature=SECRET&sig=SECRET"


def _all_text(exc: BaseException) -> str:
    parts = [str(exc), repr(exc), "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))]
    seen = exc.__cause__ or exc.__context__
    while seen is not None:  # our messages along the chain (a foreign cause's text is its own)
        if isinstance(seen, atd.AtdataError):
            parts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


def test_the_sidecar_error_message_redacts_the_url(http_server: FaultServer, shards: list[Path]) -> None:
    """BUG (fixed): ``ShardFormatError: the index sidecar 'http://user:secret@host/...?sig=...' is not valid``
    carried the URL whole in its message text (only ``shard=`` was redacted)."""
    Path(str(shards[0]) + ".idx.json").write_bytes(b"{not json")
    url = _signed(http_server, NAMES[0])
    with pytest.raises(atd.AtdataError) as info:
        atd.Dataset[Rec](url, **fast()).head(1)
    assert "SECRET" not in _all_text(info.value)


def test_error_text_is_redacted_wherever_the_url_appears() -> None:
    exc = atd.ShardFormatError(
        "the index sidecar 'https://u:SECRET@h/a.tar.idx.json?sig=SECRET' is not valid; urllib3 said: Max retries "
        "exceeded with url: /a.tar?X-Amz-Signature=SECRET (Authorization: Bearer SECRET)",
        shard="https://u:SECRET@h/a.tar?sig=SECRET",
    )
    for text in (str(exc), repr(exc), exc.message, str(pickle.loads(pickle.dumps(exc)))):
        assert "SECRET" not in text, text
    assert "https://***@h/a.tar.idx.json" in str(exc) and "url: /a.tar " in str(exc)


@pytest.mark.parametrize("cache", [False, True], ids=["no-cache", "cache"])
def test_no_secret_in_any_error_log_or_repr(
    http_server: FaultServer, shards: list[Path], caplog: pytest.LogCaptureFixture, tmp_path: Path, cache: bool
) -> None:
    caplog.set_level(logging.DEBUG, logger="atdata_torch")
    texts: list[str] = []
    opts = fast(retries=1, timeout=0.3, headers={"Authorization": "Bearer SECRET-token"})
    if cache:
        opts["cache_dir"] = str(tmp_path / "cache")

    def provoke(name: str, setup: Any, **kw: Any) -> None:
        http_server.clear()
        setup()
        url = _signed(http_server, name)
        ds = atd.Dataset[Rec](url, **{**opts, **kw})
        texts.extend([repr(ds), str(ds), repr(ds.source)])
        with deadline(10), pytest.raises(atd.AtdataError) as info:
            list(ds.ordered())
        texts.append(_all_text(info.value))

    provoke("nope-000000.tar", lambda: None)  # 404
    provoke(NAMES[0], lambda: http_server.fail(NAMES[0], 500, times=None))  # 500, retried
    provoke(NAMES[0], lambda: http_server.fail(NAMES[0], 403, times=None))  # refused
    provoke(NAMES[1], lambda: http_server.truncate(NAMES[1], after=100))  # truncated body
    provoke(NAMES[2], lambda: http_server.hang(NAMES[2]), deadline=0.8, retries=20)  # slow server
    provoke(NAMES[2], lambda: http_server.trickle(NAMES[2], 0.05), min_rate=1000)  # trickle
    http_server.clear()
    Path(str(shards[3]) + ".idx.json").write_bytes(b"[1, 2")  # bad sidecar JSON
    provoke(NAMES[3], lambda: None)
    with FaultServer(shards[0].parent) as gone:  # a dead server
        dead = gone.url(NAMES[0], auth="user:SECRETpw") + "?sig=SECRET"
    with deadline(10), pytest.raises(atd.SourceError) as info:
        HTTPSource([dead], **{k: v for k, v in opts.items() if k != "cache_dir"}).buffer(dead)
    texts.append(_all_text(info.value))
    if cache:  # a corrupt shard behind a correct sidecar
        data = bytearray(shards[0].read_bytes())
        data[3000] ^= 0xFF
        shards[0].write_bytes(bytes(data))
        provoke(NAMES[0], lambda: None)
        assert "ChecksumError" in texts[-1]
    texts.append(caplog.text)
    texts.extend(r.getMessage() for r in caplog.records)
    joined = "\n".join(texts)
    assert "retrying" in joined and "deadline" in joined and "min_rate" in joined  # every path was reached
    for secret in LEAKY:
        assert secret not in joined


# ---------------------------------------------------------------------------------------------------- checksums
@FORK_WITH_THREADS
@pytest.mark.parametrize("corrupt", [1, 3])
def test_a_corrupt_shard_behind_a_correct_sidecar_fails_with_workers_too(
    http_server: FaultServer, shards: list[Path], tmp_path: Path, corrupt: int
) -> None:
    """BUG (fixed): with a cache, the sidecar's sha256 was known only to the process that read the sidecar: two
    DataLoader workers read a corrupt shard in silence (and so did a read-ahead started before the sidecars were
    read: shard 1)."""
    data = bytearray(shards[corrupt].read_bytes())
    data[3000] ^= 0xFF  # a payload byte: the tar and the msgpack stay valid
    shards[corrupt].write_bytes(bytes(data))
    http_server.stall(NAMES[corrupt] + ".idx.json", 0.3, times=None)  # downloads start before the sidecar is in
    url = f"{http_server.base_url}/{PATTERN}"
    for workers, sub in ((0, "a"), (2, "b")):
        ds = atd.Dataset[Rec](url, **fast(cache_dir=str(tmp_path / sub)))
        with deadline(20), pytest.raises(atd.ChecksumError) as info:
            if workers:
                list(ds.loader(batch_size=4, shuffle=False, num_workers=2, multiprocessing_context="fork"))
            else:
                list(ds.ordered())
        assert NAMES[corrupt] in str(info.value)
