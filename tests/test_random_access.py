"""Random access (atdata_torch/_random_access.py): ``ds[i]``, slices and lists by global index, local, over HTTP
(tests/http_server.py, its request log showing the coalesced ranges) and S3 (moto); ``as_map()`` under torch
samplers, ``DistributedSampler`` and DataLoader workers; the errors for what cannot be indexed."""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import torch
from http_server import FaultServer
from remote_data import FORK_WITH_THREADS, MOTO_ACCESS_KEY, MOTO_SECRET_KEY, Rec, rows, write_shards
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, RandomSampler

import atdata_torch as atd
from atdata_torch import _random_access

NAMES = [f"data-{i:06d}.tar" for i in range(4)]


@pytest.fixture(params=[None, 2], ids=["default-layout", "packed"])
def shards(http_root: Path, request: pytest.FixtureRequest) -> list[Path]:
    """4 shards of 5 samples (about 4 KiB each, with sidecars) in the directory ``http_server`` serves, in the
    default layout and in the compact one (2 samples per tar member)."""
    return write_shards(http_root, n=20, per_shard=5, width=1024, pack=request.param)


@pytest.fixture
def local(shards: list[Path]) -> atd.Dataset[Rec]:
    return atd.Dataset[Rec]([str(p) for p in shards])


@pytest.fixture
def remote(http_server: FaultServer, shards: list[Path]) -> atd.Dataset[Rec]:
    return atd.Dataset[Rec]([http_server.url(n) for n in NAMES], timeout=2.0, backoff=0.01, retries=2)


def span(idx: Any, k: int) -> tuple[int, int]:
    """The bytes one read of sample ``k`` takes: its tar member(s), or in a packed shard its ``[key, payload]``
    pair (the msgpack array, str and bin headers in front of the payload)."""
    if not idx.packed:
        return idx.offsets[k], idx.offsets[k] + idx.lengths[k]
    size = idx.payload_sizes[k]
    head = len(msgpack.packb([idx.keys[k], bytes(size)], use_bin_type=True)) - size
    return idx.payload_offsets[k] - head, idx.payload_offsets[k] + size


def labels(samples: list[Rec]) -> list[int]:
    return [s.label for s in samples]


# ---------------------------------------------------------------------------------------------------- local
def test_every_index_equals_iteration_order(local: atd.Dataset[Rec]) -> None:
    expected = rows(local.ordered())
    assert [rows([local[i]])[0] for i in range(len(local))] == expected
    assert rows(local[:]) == expected
    assert rows(local[list(range(20))]) == expected


def test_negative_indices_slices_and_lists(local: atd.Dataset[Rec]) -> None:
    assert local[-1].label == 19 and local[-20].label == 0
    assert labels(local[3:12]) == list(range(3, 12))
    assert labels(local[::-3]) == list(range(19, -1, -3))
    assert labels(local[-3:]) == [17, 18, 19]
    assert labels(local[18:40]) == [18, 19] and local[30:] == []
    assert labels(local[[7, 0, 19, 7, -1]]) == [7, 0, 19, 7, 19]  # order kept, duplicates read once, returned twice
    assert labels(local[np.array([4, 2])]) == [4, 2]
    assert labels(local[torch.tensor([5, 6])]) == [5, 6]
    assert local[np.int64(3)].label == 3 and local[torch.tensor(4)].label == 4
    assert local[[]] == []


@pytest.mark.parametrize("bad", [20, -21, 10**12])
def test_out_of_range_raises_index_error(local: atd.Dataset[Rec], bad: int) -> None:
    with pytest.raises(IndexError, match=rf"sample index {bad} is out of range for a dataset of 20 samples"):
        local[bad]
    with pytest.raises(atd.SampleIndexError, match="valid: -20 to 19"):
        local[[0, bad]]


def test_bad_keys_name_what_is_taken(local: atd.Dataset[Rec]) -> None:
    with pytest.raises(atd.SampleIndexError, match=r"ds.get\('k'\)"):
        local["k"]
    with pytest.raises(atd.SampleIndexError, match="1-d sequence of ints"):
        local[[0.5, 1.0]]
    with pytest.raises(atd.SampleIndexError, match="1-d sequence of ints"):
        local[[[0, 1]]]
    with pytest.raises(atd.SampleIndexError, match="an int"):
        local.as_map()[True]


def test_views_and_ranges_apply(local: atd.Dataset[Rec]) -> None:
    doubled = local.map(lambda s: s.label * 2)
    assert doubled[3] == 6 and doubled[[1, -1]] == [2, 38]
    as_dict = atd.Dataset([str(p) for p in local.list_shards()]).as_type(Rec)
    assert as_dict[9].label == 9
    part = local.select_range(7, 13)
    assert len(part) == 6 and labels(part[:]) == list(range(7, 13)) and part[-1].label == 12
    paths = [str(p) for p in local.list_shards()]
    both = atd.Dataset.concat([atd.Dataset[Rec](paths[:1]), atd.Dataset[Rec](paths[2:]).select_range(5, 10)])
    assert len(both) == 10 and labels(both[[4, 5, -1]]) == [4, 15, 19]


def test_sample_rng_in_a_stage_matches_the_first_ordered_pass(local: atd.Dataset[Rec]) -> None:
    noisy = local.map(lambda s: (s.label, float(atd.sample_rng().random())))
    assert [noisy[i] for i in range(20)] == list(noisy.ordered())


def test_one_pread_per_sample_on_a_kept_descriptor(local: atd.Dataset[Rec], monkeypatch: pytest.MonkeyPatch) -> None:
    local[0]  # opens the first shard
    idx = local.shard_index(local.list_shards()[0])
    calls: list[tuple[int, int]] = []
    real = os.pread

    def counting(fd: int, n: int, offset: int) -> bytes:
        calls.append((n, offset))
        return real(fd, n, offset)

    monkeypatch.setattr(os, "pread", counting)
    opened: list[str] = []
    real_open = atd.LocalSource.open_shard
    monkeypatch.setattr(atd.LocalSource, "open_shard", lambda self, s: opened.append(s) or real_open(self, s))
    assert local[2].label == 2
    lo, hi = span(idx, 2)
    assert calls == [(hi - lo, lo)] and opened == []
    calls.clear()
    assert labels(local[0:5]) == [0, 1, 2, 3, 4]  # one shard, adjacent samples: one read
    assert len(calls) == 1
    calls.clear()
    assert labels(local[[4, 9, 14]]) == [4, 9, 14]  # three shards: one read each
    assert len(calls) == 3 and len(opened) == 2


def test_few_descriptors_stay_open_and_threads_share_them(
    local: atd.Dataset[Rec], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_random_access, "_MAX_FDS", 1)
    expected = rows(local.ordered())
    order = np.random.default_rng(0).permutation(200) % 20

    def read(part: np.ndarray) -> list[tuple[int, str, bytes]]:
        return [rows([local[int(i)]])[0] for i in part]

    with ThreadPoolExecutor(4) as pool:  # evictions while other threads read: no read of a closed descriptor
        got = list(pool.map(read, np.array_split(order, 4)))
    assert [r for part in got for r in part] == [expected[i] for i in order]
    assert len(_random_access.random_access(local).fetcher.fds) == 1


def test_a_stale_sidecar_is_reported_not_misread(tmp_path: Path) -> None:
    (a,) = write_shards(tmp_path, "x", n=5, per_shard=5)
    side = Path(str(a) + ".idx.json")
    doc = json.loads(side.read_text())
    doc["keys"][2] = "not-the-key"  # passes the sidecar's O(1) checks; only the header at its offset tells
    side.write_text(json.dumps(doc))
    ds = atd.Dataset[Rec](str(a))
    assert ds[1].label == 1
    with pytest.raises(atd.ShardFormatError, match=r"holds .* there: the index sidecar is stale.*build_index") as info:
        ds[2]
    assert (info.value.shard, info.value.key) == (str(a), "not-the-key")


def test_an_unreadable_shard_raises_naming_it(local: atd.Dataset[Rec], shards: list[Path]) -> None:
    local[0]
    fresh = atd.Dataset[Rec]([str(p) for p in shards])
    len(fresh)
    shards[2].unlink()
    with pytest.raises(atd.ShardNotFoundError) as info:
        fresh[11]
    assert info.value.shard == str(shards[2])


def test_local_shards_without_sidecars_are_scanned(tmp_path: Path) -> None:
    paths = write_shards(tmp_path, "plain", n=8, per_shard=3, sidecars=False)
    ds = atd.Dataset[Rec]([str(p) for p in paths])
    assert labels(ds[[7, 0, 4]]) == [7, 0, 4]


def test_a_filter_stage_has_no_index(local: atd.Dataset[Rec]) -> None:
    odd = local.filter(lambda s: s.label % 2 == 1)
    with pytest.raises(atd.RandomAccessError, match=r"filter\(\) stage.*index the dataset before filter\(\)"):
        odd[0]
    with pytest.raises(TypeError, match="write_samples"):
        odd.as_map()


def test_iterable_dataloader_handling_is_unchanged(local: atd.Dataset[Rec]) -> None:
    # DataLoader picks iterable-style by isinstance(IterableDataset): __getitem__ does not turn a Dataset map-style.
    assert isinstance(local, IterableDataset)
    got = list(DataLoader(local, batch_size=None))
    assert rows(got) == rows(local.ordered())
    assert not isinstance(local.as_map(), IterableDataset)


# ---------------------------------------------------------------------------------------------------- as_map
def test_as_map_with_samplers_and_collate(local: atd.Dataset[Rec]) -> None:
    view = local.as_map()
    assert len(view) == 20 and view[5].label == 5 and labels(view.__getitems__([3, 1])) == [3, 1]
    loader = DataLoader(view, batch_size=6, sampler=RandomSampler(view, generator=torch.Generator().manual_seed(0)),
                        collate_fn=atd.collate)  # fmt: skip
    batches = list(loader)
    assert [len(b) for b in batches] == [6, 6, 6, 2]
    seen = sorted(int(x) for b in batches for x in b.label)
    assert seen == list(range(20))
    b = batches[0]
    assert isinstance(b.x, torch.Tensor) and b.x.shape == (6, 1024)
    first = int(b.label[0])
    assert torch.equal(b.x[0], torch.from_numpy(local[first].x))


def test_distributed_sampler_covers_every_index_exactly_once(local: atd.Dataset[Rec]) -> None:
    view = local.as_map()
    seen: list[int] = []
    for rank in range(2):
        sampler = DistributedSampler(view, num_replicas=2, rank=rank, shuffle=True, seed=3)
        sampler.set_epoch(1)
        loader = DataLoader(view, batch_size=4, sampler=sampler, collate_fn=atd.collate)
        mine = [int(x) for b in loader for x in b.label]
        assert mine == list(sampler) and len(mine) == 10
        seen += mine
    assert sorted(seen) == list(range(20))


def test_as_map_pickles_without_handles(local: atd.Dataset[Rec]) -> None:
    view = local.as_map()
    view[0]
    view.__getitems__([1, 7])
    fetcher = view.access._fetcher
    assert fetcher is not None and fetcher.fds
    copy = pickle.loads(pickle.dumps(view))
    assert copy.access._fetcher is None  # reopened lazily in the process that unpickles it
    assert labels(copy.__getitems__([19, 2])) == [19, 2]
    fetcher.close()


@FORK_WITH_THREADS
def test_dataloader_workers_over_as_map(local: atd.Dataset[Rec]) -> None:
    # (spawned workers unpickle the view: test_as_map_pickles_without_handles; a spawn run costs 10-20 s here)
    view = local.as_map()
    view[0]  # the parent opened descriptors: the workers open their own
    loader = DataLoader(view, batch_size=3, num_workers=2, collate_fn=atd.collate, multiprocessing_context="fork")
    got = [int(x) for b in loader for x in b.label]
    assert got == list(range(20))


# ---------------------------------------------------------------------------------------------------- remote
def test_http_random_access_matches_local(remote: atd.Dataset[Rec], local: atd.Dataset[Rec]) -> None:
    assert rows([remote[7], remote[-1]]) == rows([local[7], local[-1]])
    assert rows(remote[[13, 2, 19, 8]]) == rows(local[[13, 2, 19, 8]])
    assert rows(remote.as_map().__getitems__(list(range(20)))) == rows(local.ordered())


def test_http_one_ranged_get_per_sample(http_server: FaultServer, remote: atd.Dataset[Rec], shards: list[Path]) -> None:
    len(remote)
    assert all(http_server.gets(n) == 0 for n in NAMES)  # the sidecars are enough
    idx = remote.shard_index(remote.list_shards()[1])
    assert remote[6].label == 6
    lo, hi = span(idx, 1)
    assert http_server.ranges(NAMES[1]) == [f"bytes={lo}-{hi - 1}"]


def test_http_nearby_ranges_are_coalesced(http_server: FaultServer, remote: atd.Dataset[Rec]) -> None:
    len(remote)
    idx = remote.shard_index(remote.list_shards()[2])
    assert labels(remote[[14, 10, 12]]) == [14, 10, 12]
    lo, hi = span(idx, 0)[0], span(idx, 4)[1]
    assert http_server.ranges(NAMES[2]) == [f"bytes={lo}-{hi - 1}"]  # one GET for three samples of one shard
    assert labels(remote[[0, 5, 11]]) == [0, 5, 11]  # three shards: three GETs (in parallel)
    assert [http_server.gets(n) for n in NAMES] == [1, 1, 2, 0]


def test_http_gap_limit_splits_far_ranges(
    http_server: FaultServer, remote: atd.Dataset[Rec], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_random_access, "REMOTE_GAP", 0)
    assert labels(remote[[10, 11, 13]]) == [10, 11, 13]  # 10 and 11 touch; 13 is one sample further
    assert len(http_server.ranges(NAMES[2])) == 2


def test_http_retries_a_failed_range(http_server: FaultServer, remote: atd.Dataset[Rec]) -> None:
    len(remote)
    http_server.fail(NAMES[0], 503, times=1)
    assert remote[3].label == 3
    assert http_server.gets(NAMES[0]) == 2


def test_remote_shards_without_sidecars_name_build_index(http_server: FaultServer, http_root: Path) -> None:
    write_shards(http_root, "bare", n=4, per_shard=2, sidecars=False)
    ds = atd.Dataset[Rec]([http_server.url(f"bare-{i:06d}.tar") for i in range(2)], timeout=2.0, retries=0)
    with pytest.raises(atd.RandomAccessError, match=r"2 of 2 remote shards have none.*atd.build_index") as info:
        ds[0]
    assert info.value.shard is not None and info.value.shard.endswith("bare-000000.tar")
    assert http_server.gets("bare-000000.tar") == 0  # nothing downloaded to find out


@FORK_WITH_THREADS
def test_http_dataloader_workers(remote: atd.Dataset[Rec], local: atd.Dataset[Rec]) -> None:
    view = remote.as_map()
    loader = DataLoader(view, batch_size=4, num_workers=2, collate_fn=atd.collate, multiprocessing_context="fork")
    assert rows(loader) == rows(local.ordered())


def test_s3_random_access(
    s3_upload: Callable[..., str], moto_endpoint: str, shards: list[Path], local: atd.Dataset[Rec]
) -> None:
    bucket = s3_upload(shards, prefix="ds/")
    ds = atd.Dataset[Rec](
        f"s3://{bucket}/ds/data-{{000000..000003}}.tar",
        endpoint=moto_endpoint,
        access_key=MOTO_ACCESS_KEY,
        secret_key=MOTO_SECRET_KEY,
        region="us-east-1",
        retries=1,
        backoff=0.01,
    )
    assert rows([ds[17]]) == rows([local[17]])
    assert rows(ds[[-1, 0, 6, 7]]) == rows(local[[-1, 0, 6, 7]])


def test_in_memory_shards(shards: list[Path]) -> None:
    src = atd.MemorySource({p.name: p.read_bytes() for p in shards})
    ds = atd.Dataset[Rec](src)
    assert labels(ds[[19, 0, 6]]) == [19, 0, 6] and ds[-2].label == 18
