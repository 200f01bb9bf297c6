"""ShardCache: one download per shard across many processes and DataLoader workers, corruption detection,
LRU eviction that only touches the cache's own files, atomic writes (no temporary file left behind), and
digest checks. Downloads come from the real HTTP server of tests/http_server.py."""

from __future__ import annotations

import hashlib
import io
import logging
import multiprocessing
import os
import pickle
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from http_server import FaultServer
from remote_data import FORK_WITH_THREADS, Rec, deadline, rows, write_shards

import atdata_torch as atd
from atdata_torch._sidecar import ShardIndex
from atdata_torch.sources.http import HTTPSource

NAMES = [f"data-{i:06d}.tar" for i in range(4)]
PATTERN = "data-{000000..000003}.tar"


@pytest.fixture
def shards(http_root: Path) -> list[Path]:
    return write_shards(http_root, n=20, per_shard=5)


@pytest.fixture
def local(shards: list[Path]) -> atd.Dataset[Rec]:
    return atd.Dataset[Rec]([str(p) for p in shards])


def leftovers(root: Path) -> list[str]:
    """Temporary files in a cache directory (there must never be any once a call returns)."""
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".tmp-") or p.name.endswith(".part"))


# ---------------------------------------------------------------------------------------------------- processes
def _reader(pattern: str, cache_dir: str, out: str, barrier: object) -> None:
    barrier.wait(30)  # type: ignore[attr-defined]
    ds = atd.Dataset[Rec](pattern, cache_dir=cache_dir, timeout=10.0, retries=2, backoff=0.05)
    got = rows(ds.loader(batch_size=5, shuffle=False, num_workers=2, multiprocessing_context="fork"))
    with open(out, "wb") as f:
        pickle.dump(got, f)


@FORK_WITH_THREADS
def test_processes_and_workers_share_one_download_per_shard(
    http_server: FaultServer, shards: list[Path], local: atd.Dataset[Rec], tmp_path: Path
) -> None:
    for n in NAMES:
        http_server.stall(n, 0.2, times=None)  # slow downloads: every process arrives while one is in progress
    cache_dir = tmp_path / "cache"
    ctx = multiprocessing.get_context("fork")
    n_proc = 8
    barrier = ctx.Barrier(n_proc)
    outs = [tmp_path / f"out-{i}.pkl" for i in range(n_proc)]
    procs = [
        ctx.Process(target=_reader, args=(f"{http_server.base_url}/{PATTERN}", str(cache_dir), str(o), barrier))
        for o in outs
    ]
    with deadline(60):
        for p in procs:
            p.start()
        for p in procs:
            p.join(50)
    assert [p.exitcode for p in procs] == [0] * n_proc
    want = rows(local.ordered())
    for o in outs:
        with open(o, "rb") as f:
            assert pickle.load(f) == want  # every process, through its workers, read exactly the local samples
    shard_gets = {n: http_server.gets(n) for n in NAMES}
    assert shard_gets == dict.fromkeys(NAMES, 1), shard_gets  # 8 processes x 2 workers: one download each
    cache = atd.ShardCache(cache_dir)
    assert len(cache.entries()) == 4
    assert leftovers(cache_dir) == []


# ---------------------------------------------------------------------------------------------------- integrity
def _flip_byte(path: Path, at: int) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0xFF]))


def test_corrupted_entry_is_detected_and_refetched(
    http_server: FaultServer, shards: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = http_server.url(NAMES[0])
    data = shards[0].read_bytes()
    cache_dir = tmp_path / "cache"
    assert bytes(HTTPSource([url], cache=str(cache_dir)).buffer(url)) == data
    entry = atd.ShardCache(cache_dir).path_for(url)
    assert entry.name.endswith(".shard") and entry.read_bytes() == data
    _flip_byte(entry, len(data) // 2)
    assert entry.read_bytes() != data
    # A process that has not verified the entry yet (a fresh source and cache object) detects the damage.
    caplog.set_level(logging.WARNING, logger="atdata_torch")
    fresh = HTTPSource([url], cache=str(cache_dir))
    assert bytes(fresh.buffer(url)) == data
    assert http_server.gets(NAMES[0]) == 2
    assert "does not match its checksum" in caplog.text
    assert entry.read_bytes() == data
    # Verified once per process: reading it again costs no download.
    assert bytes(fresh.buffer(url)) == data
    assert http_server.gets(NAMES[0]) == 2


def test_corrupted_entry_is_refetched_by_a_dataset(
    http_server: FaultServer, shards: list[Path], local: atd.Dataset[Rec], tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    pattern = f"{http_server.base_url}/{PATTERN}"
    assert rows(atd.Dataset[Rec](pattern, cache_dir=str(cache_dir)).ordered()) == rows(local.ordered())
    cache = atd.ShardCache(cache_dir)
    _flip_byte(cache.path_for(http_server.url(NAMES[2])), 3000)
    # Truncated entry and lost checksum record: both read as "not a finished download".
    with open(cache.path_for(http_server.url(NAMES[1])), "r+b") as f:
        f.truncate(1000)
    (cache_dir / (cache.path_for(http_server.url(NAMES[3])).name + ".sha256")).unlink()
    ds = atd.Dataset[Rec](pattern, cache_dir=str(cache_dir))
    assert rows(ds.ordered()) == rows(local.ordered())
    # Shard 3 lost its checksum record, but its content matches the digest in the shard's index sidecar: kept.
    assert [http_server.gets(n) for n in NAMES] == [1, 2, 2, 1]


def test_digest_mismatch_raises_and_leaves_nothing(
    http_server: FaultServer, shards: list[Path], tmp_path: Path
) -> None:
    url = http_server.url(NAMES[0], auth="user:s3cret-pa55")
    src = HTTPSource([url], timeout=2.0)
    cache = atd.ShardCache(tmp_path / "cache")
    with pytest.raises(atd.SourceError, match="sha256") as info:
        cache.get(url, lambda f: src.download_to(url, f), sha256="0" * 64)
    assert "s3cret-pa55" not in str(info.value)
    assert not cache.path_for(url).exists()
    assert cache.entries() == [] and leftovers(cache.root) == []
    # The digest the sidecar records is the right one.
    sidecar = Path(str(shards[0]) + ".idx.json").read_bytes()
    digest = ShardIndex.from_json(sidecar, str(shards[0])).sha256
    assert digest == hashlib.sha256(shards[0].read_bytes()).hexdigest()
    path = cache.get(url, lambda f: src.download_to(url, f), sha256=digest)
    assert path.read_bytes() == shards[0].read_bytes()
    assert (path.parent / (path.name + ".sha256")).read_text() == digest


def test_failed_downloads_leave_no_temporary_files(
    http_server: FaultServer, shards: list[Path], tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    http_server.drop(NAMES[0], after=4000, times=None)
    url = http_server.url(NAMES[0])
    src = HTTPSource([url], cache=str(cache_dir), timeout=1.0, retries=1, backoff=0.01)
    with deadline(10), pytest.raises(atd.SourceError, match="failed after 2 attempts"):
        src.buffer(url)
    assert leftovers(cache_dir) == [] and src.cache is not None and src.cache.entries() == []
    cache = atd.ShardCache(cache_dir)

    def interrupted(f: object) -> None:
        f.write(b"partial")  # type: ignore[attr-defined]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.get("k", interrupted)
    assert leftovers(cache_dir) == [] and cache.entries() == []
    # ...and a later download of the same shard succeeds.
    http_server.clear()
    assert bytes(src.buffer(url)) == shards[0].read_bytes()
    assert leftovers(cache_dir) == []


# ---------------------------------------------------------------------------------------------------- eviction
def _put(cache: atd.ShardCache, key: str, size: int = 1000) -> Path:
    path = cache.get(key, lambda f: f.write(key.encode()[:1] * size))
    time.sleep(0.03)  # file times tick coarsely: keep the access order unambiguous
    return path


def test_lru_eviction_spares_foreign_files(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    root.mkdir()
    # Files the cache did not write: never evicted, never counted.
    foreign = {
        "notes.txt": b"n" * 5000,
        "user-data.tar": b"u" * 5000,
        "abc.shard": b"a" * 5000,  # looks like an entry, but not one of its names
        ("0" * 39) + ".shard": b"z" * 5000,
    }
    for name, body in foreign.items():
        (root / name).write_bytes(body)
        os.utime(root / name, (1, 1))  # "least recently used" of all
    (root / "sub").mkdir()
    (root / "sub" / "inner.tar").write_bytes(b"i" * 5000)
    cache = atd.ShardCache(root, max_bytes=3500)
    a, b, c = _put(cache, "a"), _put(cache, "b"), _put(cache, "c")
    assert cache.size() == 3000
    assert _put(cache, "a") == a  # a hit refreshes "a"
    d = _put(cache, "d")  # 4000 > 3500: the least recently used entry (b) goes
    assert [p.exists() for p in (a, b, c, d)] == [True, False, True, True]
    assert not (root / (b.name + ".sha256")).exists()
    assert cache.size() == 3000
    for name, body in foreign.items():
        assert (root / name).read_bytes() == body
    assert (root / "sub" / "inner.tar").exists()


def test_eviction_skips_entries_being_written_and_keeps_the_newest(tmp_path: Path) -> None:
    cache = atd.ShardCache(tmp_path / "cache", max_bytes=2500)
    a, b = _put(cache, "a"), _put(cache, "b")
    with cache._lock("a"):  # "a" is being (re)downloaded by someone: not evicted
        c = _put(cache, "c")
    assert [p.exists() for p in (a, b, c)] == [True, False, True]
    # An entry larger than the whole budget is still returned (and everything older is evicted).
    big = cache.get("big", lambda f: f.write(b"B" * 10_000))
    assert big.exists() and big.stat().st_size == 10_000
    assert [p.exists() for p in (a, c)] == [False, False]


def test_dataset_with_a_small_cache_still_reads_everything(
    http_server: FaultServer, shards: list[Path], local: atd.Dataset[Rec], tmp_path: Path
) -> None:
    budget = shards[0].stat().st_size * 2 + 100  # room for two of the four shards
    cache_dir = tmp_path / "cache"
    ds = atd.Dataset[Rec](f"{http_server.base_url}/{PATTERN}", cache_dir=str(cache_dir), cache_max_bytes=budget)
    assert rows(ds.ordered()) == rows(local.ordered())
    cache = atd.ShardCache(cache_dir)
    assert len(cache.entries()) == 2 and cache.size() <= budget
    assert leftovers(cache_dir) == []


# ---------------------------------------------------------------------------------------------------- progress
class _TTY(io.StringIO):
    """A stream that says it is a terminal (tqdm shows a bar on it when ``disable=None``)."""

    def isatty(self) -> bool:
        return True


class _BarInWorker(torch.utils.data.IterableDataset[bool]):
    def __iter__(self) -> Iterator[bool]:
        from atdata_torch import _progress

        yield _progress.bar(None, file=_TTY()) is None


def test_cache_fills_show_a_byte_progress_bar_when_asked(
    http_server: FaultServer,
    shards: list[Path],
    local: atd.Dataset[Rec],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"{http_server.base_url}/{PATTERN}"
    ds = atd.Dataset[Rec](url, cache_dir=str(tmp_path / "shown"), progress=True)
    assert rows(ds.ordered()) == rows(local.ordered())
    err = capsys.readouterr().err
    for name in NAMES:
        assert f"downloading {name}" in err  # one bar per shard downloaded into the cache
    assert "kB" in err or "B/s" in err  # counted in bytes
    cache = ds.source.cache  # type: ignore[attr-defined]
    assert (cache.downloads, cache.hits) == (4, 0)
    assert rows(ds.ordered()) == rows(local.ordered())
    assert (cache.downloads, cache.hits) == (4, 4)  # the second pass: all from the cache, and no bar
    assert "downloading" not in capsys.readouterr().err

    # progress=None (the default): stderr is not a terminal here, so no bar; progress=False: never.
    for kwargs in ({}, {"progress": False}):
        quiet = atd.Dataset[Rec](url, cache_dir=str(tmp_path / f"quiet{len(kwargs)}"), **kwargs)
        assert rows(quiet.ordered()) == rows(local.ordered())
        assert quiet.source.cache.downloads == 4  # type: ignore[attr-defined]
        assert capsys.readouterr().err == ""


@FORK_WITH_THREADS
def test_progress_bars_stay_hidden_in_dataloader_workers_by_default() -> None:
    from atdata_torch import _progress

    shown = _progress.bar(None, file=_TTY())
    assert shown is not None  # on a terminal, in the main process: shown
    shown.close()
    loader = torch.utils.data.DataLoader(_BarInWorker(), batch_size=None, num_workers=1, multiprocessing_context="fork")
    assert list(loader) == [True]  # the same call in a worker (which inherits the terminal): hidden
    assert _progress.bar(False, file=_TTY()) is None
