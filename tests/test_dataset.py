"""Dataset[T]: sources, len, ordered / shuffled iteration, batching, map / filter, inspection, and
iteration through torch's DataLoader (the worker split)."""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from torch.utils.data import DataLoader

import atdata_torch as atd

N = 10
MAXCOUNT = 4  # -> shards of 4, 4 and 2 samples


@atd.packable
class DsRec:
    x: NDArray[np.float32]
    label: int
    name: str


@atd.packable
class DsOther:
    doubled: NDArray[np.float32]
    tag: str


def _recs(n: int = N) -> list[DsRec]:
    return [DsRec(x=np.full(3, i, np.float32), label=i, name=f"n{i}") for i in range(n)]


def _labels(items: object) -> list[int]:
    out: list[int] = []
    for item in items:  # type: ignore[attr-defined]
        if isinstance(item, atd.SampleBatch):
            out.extend(int(v) for v in item.label)
        else:
            out.append(int(item.label))
    return out


@pytest.fixture
def ds(write_dataset: Callable[..., atd.Dataset[DsRec]]) -> atd.Dataset[DsRec]:
    return write_dataset(_recs(), maxcount=MAXCOUNT)


@pytest.fixture
def shard_dir(ds: atd.Dataset[DsRec]) -> Path:
    return Path(ds.list_shards()[0]).parent


def _drop_sidecars(ds: atd.Dataset[object]) -> None:
    for shard in ds.list_shards():
        os.remove(shard + ".idx.json")


# ------------------------------------------------------------------------------------------------
# sources


def test_brace_pattern(shard_dir: Path) -> None:
    ds = atd.Dataset[DsRec](str(shard_dir / "train-{000000..000002}.tar"))
    assert ds.sample_type is DsRec
    assert ds.list_shards() == [str(shard_dir / f"train-00000{i}.tar") for i in range(3)]
    assert ds.shard_list == ds.list_shards()
    assert [s.label for s in ds] == list(range(N))
    assert list(ds) == _recs()


def test_list_of_paths_keeps_its_order(shard_dir: Path) -> None:
    paths = [str(shard_dir / "train-000002.tar"), str(shard_dir / "train-000000.tar")]
    ds = atd.Dataset[DsRec](paths)
    assert ds.list_shards() == paths
    assert [s.label for s in ds] == [8, 9, 0, 1, 2, 3]
    assert len(ds) == 6


def test_path_object(shard_dir: Path) -> None:
    ds = atd.Dataset[DsRec](shard_dir / "train-000001.tar")
    assert [s.label for s in ds] == [4, 5, 6, 7]


def test_memory_source(ds: atd.Dataset[DsRec]) -> None:
    data = {}
    for shard in ds.list_shards():
        name = os.path.basename(shard)
        data[name] = Path(shard).read_bytes()
        data[name + ".idx.json"] = Path(shard + ".idx.json").read_bytes()
    mem = atd.Dataset[DsRec](atd.MemorySource(data))
    assert mem.list_shards() == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    assert len(mem) == N
    assert list(mem) == _recs()
    assert _labels(mem.ordered(batch_size=4)) == list(range(N))
    assert sorted(_labels(mem.shuffled(seed=3))) == list(range(N))


def test_memory_source_without_sidecars(ds: atd.Dataset[DsRec]) -> None:
    data = {os.path.basename(s): Path(s).read_bytes() for s in ds.list_shards()}
    mem = atd.Dataset[DsRec](atd.MemorySource(data))
    assert len(mem) == N
    assert list(mem) == _recs()
    assert sorted(_labels(mem.shuffled(batch_size=3, seed=1))) == list(range(N))


def test_default_sample_type_is_dict_sample(ds: atd.Dataset[DsRec]) -> None:
    raw = atd.Dataset(ds.list_shards())
    assert raw.sample_type is atd.DictSample
    first = next(iter(raw))
    assert isinstance(first, atd.DictSample)
    assert first.label == 0
    assert first.name == "n0"
    np.testing.assert_array_equal(first.x, np.zeros(3, np.float32))


def test_sample_type_must_be_packable(shard_dir: Path) -> None:
    with pytest.raises(TypeError, match="must be a @packable class or DictSample"):
        atd.Dataset[int](str(shard_dir / "train-000000.tar"))


def test_bad_source_type() -> None:
    with pytest.raises(TypeError, match="URL string, a list of URLs, or a DataSource"):
        atd.Dataset(42)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# len


def _garble(paths: list[str]) -> None:
    """Replace each shard by junk of the same size (a new file: live mmaps keep the old bytes)."""
    for path in paths:
        size = os.path.getsize(path)
        Path(path + ".junk").write_bytes(b"\xff" * size)
        os.replace(path + ".junk", path)


def _garble_samples(paths: list[str]) -> None:
    """Replace each shard's samples but the last by junk, keeping its size, its last sample and its end-of-archive
    marker (what a sidecar is checked against in O(1))."""
    for path in paths:
        raw = Path(path).read_bytes()
        side = json.loads(Path(path + ".idx.json").read_bytes())
        end = side["offsets"][-1]  # the last sample's header and the end-of-archive marker stay
        Path(path + ".junk").write_bytes(b"\xff" * end + raw[end:])
        os.replace(path + ".junk", path)


def test_len_from_sidecars_does_not_read_the_shards(ds: atd.Dataset[DsRec]) -> None:
    fresh = atd.Dataset[DsRec](ds.list_shards())
    _garble_samples(fresh.list_shards())  # a scan would now fail with ShardFormatError
    assert len(fresh) == N
    assert len(fresh.ordered()) == N
    assert len(fresh.ordered(batch_size=4)) == 3
    assert len(fresh.ordered(batch_size=4, drop_last=True)) == 2
    assert len(fresh.shuffled(batch_size=5)) == 2
    with pytest.raises(atd.ShardFormatError):
        for _ in fresh:
            pass


def test_len_without_sidecars_scans_the_shards(ds: atd.Dataset[DsRec]) -> None:
    _drop_sidecars(ds)
    fresh = atd.Dataset[DsRec](ds.list_shards())
    assert len(fresh) == N
    assert list(fresh) == _recs()
    garbled = atd.Dataset[DsRec](ds.list_shards())
    _garble(garbled.list_shards())
    with pytest.raises(atd.ShardFormatError):
        len(garbled)


def test_len_without_sidecars_is_cached(ds: atd.Dataset[DsRec]) -> None:
    _drop_sidecars(ds)
    fresh = atd.Dataset[DsRec](ds.list_shards())
    assert len(fresh) == N
    _garble(fresh.list_shards())
    # Scanned once: neither the dataset nor the datasets derived from it scan again.
    assert len(fresh) == N
    assert len(fresh.map(lambda s: s)) == N
    assert len(fresh.shuffled(batch_size=3)) == 4


def test_len_after_filter_is_a_type_error(ds: atd.Dataset[DsRec]) -> None:
    kept = ds.filter(lambda s: s.label < 3)
    with pytest.raises(TypeError, match="filter"):
        len(kept)
    with pytest.raises(TypeError, match="filter"):
        len(kept.ordered())
    with pytest.raises(TypeError):
        len(kept.map(lambda s: s))
    assert sum(1 for _ in kept) == 3
    assert len(ds.map(lambda s: s)) == N


# ------------------------------------------------------------------------------------------------
# ordered


def test_ordered_is_shard_order_then_tar_order(ds: atd.Dataset[DsRec]) -> None:
    samples = list(ds.ordered())
    assert samples == _recs()
    assert [type(s) for s in samples] == [DsRec] * N
    # Iterating again gives the same order (ordered ignores epochs).
    pipe = ds.ordered()
    assert _labels(pipe) == _labels(pipe) == list(range(N))
    assert list(ds) == samples


def test_ordered_batches_stack_arrays_and_list_the_rest(ds: atd.Dataset[DsRec]) -> None:
    batches = list(ds.ordered(batch_size=4))
    assert [len(b) for b in batches] == [4, 4, 2]
    for b, start in zip(batches, (0, 4, 8), strict=True):
        n = len(b)
        assert isinstance(b, atd.SampleBatch)
        assert b.sample_type is DsRec
        assert isinstance(b.x, np.ndarray)
        assert b.x.shape == (n, 3)
        assert b.x.dtype == np.float32
        expected = np.repeat(np.arange(start, start + n, dtype=np.float32)[:, None], 3, axis=1)
        np.testing.assert_array_equal(b.x, expected)
        assert b.label == list(range(start, start + n))
        assert b.name == [f"n{i}" for i in range(start, start + n)]
        assert b.keys == [f"{i:08d}" for i in range(start, start + n)]
    assert batches[0].samples == _recs()[:4]


def test_ordered_drop_last(ds: atd.Dataset[DsRec]) -> None:
    batches = list(ds.ordered(batch_size=4, drop_last=True))
    assert [len(b) for b in batches] == [4, 4]
    assert _labels(batches) == list(range(8))
    assert [len(b) for b in ds.ordered(batch_size=5, drop_last=True)] == [5, 5]
    assert [len(b) for b in ds.ordered(batch_size=11, drop_last=True)] == []
    assert [len(b) for b in ds.ordered(batch_size=11)] == [10]


def test_batches_convert_to_tensors_without_warnings(ds: atd.Dataset[DsRec]) -> None:
    batch = next(iter(ds.ordered(batch_size=4)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "The given NumPy array is not writable"
        t = torch.from_numpy(batch.x)
    assert t.shape == (4, 3)
    assert t.dtype == torch.float32


def test_batches_over_dict_samples(ds: atd.Dataset[DsRec]) -> None:
    raw = atd.Dataset(ds.list_shards())
    batches = list(raw.ordered(batch_size=4))
    assert [len(b) for b in batches] == [4, 4, 2]
    b = batches[0]
    assert b.sample_type is atd.DictSample
    assert set(b.fields) == {"x", "label", "name"}
    assert isinstance(b.x, np.ndarray)
    assert b.x.shape == (4, 3)
    assert b.x.dtype == np.float32
    assert b.label == [0, 1, 2, 3]
    assert b.name == ["n0", "n1", "n2", "n3"]
    assert all(isinstance(s, atd.DictSample) for s in b.samples)
    assert sorted(_labels(raw.shuffled(batch_size=3, seed=2))) == list(range(N))


def test_invalid_pipeline_arguments(ds: atd.Dataset[DsRec]) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        ds.ordered(batch_size=0)
    with pytest.raises(ValueError, match="on_error"):
        ds.shuffled(on_error="ignore")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# shuffled


@pytest.fixture
def big(write_dataset: Callable[..., atd.Dataset[DsRec]]) -> atd.Dataset[DsRec]:
    return write_dataset(_recs(60), "big.tar", maxcount=16)


SHUFFLE_SETTINGS = [
    pytest.param({}, id="defaults"),
    pytest.param({"block_size": 4, "window": 2}, id="small-blocks"),
    pytest.param({"block_size": 1, "window": 1}, id="one-sample-blocks"),
]


@pytest.mark.parametrize("kw", SHUFFLE_SETTINGS)
@pytest.mark.parametrize("batch_size", [None, 7])
def test_shuffled_same_seed_same_order(big: atd.Dataset[DsRec], kw: dict[str, int], batch_size: int | None) -> None:
    a = _labels(big.shuffled(batch_size, seed=11, **kw))
    b = _labels(big.shuffled(batch_size, seed=11, **kw))
    fresh = atd.Dataset[DsRec](big.list_shards())
    c = _labels(fresh.shuffled(batch_size, seed=11, **kw))
    assert a == b == c
    assert sorted(a) == list(range(60))
    assert a != list(range(60))


@pytest.mark.parametrize("kw", SHUFFLE_SETTINGS)
def test_shuffled_differs_across_seeds(big: atd.Dataset[DsRec], kw: dict[str, int]) -> None:
    orders = {tuple(_labels(big.shuffled(seed=s, **kw))) for s in range(5)}
    assert len(orders) == 5


@pytest.mark.parametrize("kw", SHUFFLE_SETTINGS)
@pytest.mark.parametrize("batch_size", [None, 8])
def test_shuffled_epochs(big: atd.Dataset[DsRec], kw: dict[str, int], batch_size: int | None) -> None:
    pipe = big.shuffled(batch_size, seed=4, **kw)
    assert pipe.epoch == 0
    epochs = [_labels(pipe) for _ in range(4)]
    assert pipe.epoch == 4
    # Every sample exactly once per epoch, and each epoch is a different permutation.
    for order in epochs:
        assert Counter(order) == Counter(range(60))
    assert len({tuple(o) for o in epochs}) == 4
    # set_epoch(e) reproduces epoch e, then advances by itself.
    pipe.set_epoch(2)
    assert _labels(pipe) == epochs[2]
    assert _labels(pipe) == epochs[3]
    other = big.shuffled(batch_size, seed=4, **kw)
    other.set_epoch(1)
    assert _labels(other) == epochs[1]


def test_shuffled_batches_are_full_but_the_last(big: atd.Dataset[DsRec]) -> None:
    batches = list(big.shuffled(batch_size=7, seed=0))
    assert [len(b) for b in batches] == [7] * 8 + [4]
    assert all(b.x.shape == (len(b), 3) for b in batches)
    for b in batches:
        np.testing.assert_array_equal(b.x[:, 0], np.asarray(b.label, np.float32))
    dropped = list(big.shuffled(batch_size=7, seed=0, drop_last=True))
    assert [len(b) for b in dropped] == [7] * 8
    assert _labels(dropped) == _labels(batches)[:56]


# ------------------------------------------------------------------------------------------------
# map / filter


def _double(s: DsRec) -> DsOther:
    return DsOther(doubled=s.x * 2, tag=s.name.upper())


def test_map_unbatched(ds: atd.Dataset[DsRec]) -> None:
    mapped = ds.map(_double)
    out = list(mapped)
    assert [type(o) for o in out] == [DsOther] * N
    assert [o.tag for o in out] == [f"N{i}" for i in range(N)]
    np.testing.assert_array_equal(out[3].doubled, np.full(3, 6, np.float32))
    assert "map" in repr(mapped)
    assert list(ds) == _recs()  # the source dataset is unchanged


def test_map_batched(ds: atd.Dataset[DsRec]) -> None:
    batches = list(ds.map(_double).ordered(batch_size=4))
    assert [len(b) for b in batches] == [4, 4, 2]
    b = batches[1]
    assert b.sample_type is DsOther
    assert b.doubled.shape == (4, 3)
    np.testing.assert_array_equal(b.doubled[:, 0], [8, 10, 12, 14])
    assert b.tag == ["N4", "N5", "N6", "N7"]
    shuffled = list(ds.map(_double).shuffled(batch_size=3, seed=1))
    assert sorted(t for b in shuffled for t in b.tag) == sorted(f"N{i}" for i in range(N))


def test_map_to_dicts_batched(ds: atd.Dataset[DsRec]) -> None:
    batches = list(ds.map(lambda s: {"v": s.label * 10}).ordered(batch_size=5))
    assert [b.v for b in batches] == [[0, 10, 20, 30, 40], [50, 60, 70, 80, 90]]


def test_filter_unbatched_and_batched(ds: atd.Dataset[DsRec]) -> None:
    odd = ds.filter(lambda s: s.label % 2 == 1)
    assert _labels(odd) == [1, 3, 5, 7, 9]
    assert _labels(odd.ordered(batch_size=2)) == [1, 3, 5, 7, 9]
    # A batch is what survives of its slice of the global order (so resume and rank splits stay exact):
    # the 10 positions give 5 slices of 2, each holding one odd label.
    assert [len(b) for b in odd.ordered(batch_size=2)] == [1, 1, 1, 1, 1]
    assert [len(b) for b in odd.ordered(batch_size=4)] == [2, 2, 1]
    assert [len(b) for b in odd.ordered(batch_size=4, drop_last=True)] == [2, 2]
    assert sorted(_labels(odd.shuffled(seed=0))) == [1, 3, 5, 7, 9]
    assert sorted(_labels(odd.shuffled(batch_size=2, seed=0))) == [1, 3, 5, 7, 9]
    assert _labels(ds.filter(lambda s: False)) == []
    assert [len(b) for b in ds.filter(lambda s: False).ordered(batch_size=2)] == [0] * 5


def test_map_and_filter_compose_in_order(ds: atd.Dataset[DsRec]) -> None:
    chained = ds.filter(lambda s: s.label >= 5).map(_double).filter(lambda o: o.tag != "N7")
    assert [o.tag for o in chained] == ["N5", "N6", "N8", "N9"]
    batches = list(chained.ordered(batch_size=3))
    # Batches are the survivors of the position slices [0..2], [3..5], [6..8], [9]: one batch per slice, even
    # an empty one (so steps stay aligned across ranks and workers).
    assert [b.tag for b in batches] == [[], ["N5"], ["N6", "N8"], ["N9"]]


# ------------------------------------------------------------------------------------------------
# inspection


def test_head(ds: atd.Dataset[DsRec]) -> None:
    assert ds.head(5) == _recs()[:5]
    assert ds.head() == _recs()[:5]
    assert ds.head(100) == _recs()
    assert ds.head(0) == []
    assert [o.tag for o in ds.map(_double).head(2)] == ["N0", "N1"]


def test_summary(ds: atd.Dataset[DsRec]) -> None:
    d = ds.summary()
    assert d["sample_type"] == "DsRec"
    assert d["schema_id"] == atd.schema_id(DsRec)
    assert [f["name"] for f in d["fields"]] == ["x", "label", "name"]
    assert d["fields"][0]["kind"] == "ndarray"
    assert d["fields"][0]["dtype"] == "<f4"
    assert d["shards"] == 3
    assert d["samples"] == N
    assert d["bytes"] == sum(os.path.getsize(s) for s in ds.list_shards())
    assert d["stages"] == []
    assert "LocalSource" in d["source"]
    staged = ds.filter(lambda s: True).map(lambda s: s).summary()
    assert staged["stages"] == ["filter", "map"]


def test_summary_without_sidecars(ds: atd.Dataset[DsRec]) -> None:
    _drop_sidecars(ds)
    d = atd.Dataset[DsRec](ds.list_shards()).summary()
    assert d["shards"] == 3
    assert d["samples"] is None
    assert d["bytes"] is None


def test_summary_dict_sample(ds: atd.Dataset[DsRec]) -> None:
    d = atd.Dataset(ds.list_shards()).summary()
    assert d["sample_type"] == "DictSample"
    assert d["schema_id"] is None
    assert d["fields"] is None


@pytest.mark.parametrize("sidecars", [True, False])
def test_get_by_key(ds: atd.Dataset[DsRec], sidecars: bool) -> None:
    if not sidecars:
        _drop_sidecars(ds)
    fresh = atd.Dataset[DsRec](ds.list_shards())
    assert fresh.get("00000006") == _recs()[6]
    assert fresh.get("00000000") == _recs()[0]
    assert fresh.get("00000009") == _recs()[9]
    with pytest.raises(KeyError):
        fresh.get("nope")
    assert fresh.map(_double).get("00000002").tag == "N2"
    assert fresh.filter(lambda s: s.label == 2).get("00000002").label == 2
    with pytest.raises(KeyError):
        fresh.filter(lambda s: s.label == 2).get("00000003")
    raw = atd.Dataset(ds.list_shards()).get("00000005")
    assert isinstance(raw, atd.DictSample)
    assert raw.label == 5


def test_repr(ds: atd.Dataset[DsRec]) -> None:
    r = repr(ds)
    assert r.startswith("Dataset[DsRec](LocalSource(3 shards, first=")
    assert "train-000000.tar" in r
    assert repr(ds.filter(bool).map(_double)).endswith(".filter(...).map(...)")
    assert repr(atd.Dataset[DsRec]) == "Dataset[DsRec]"


def test_dataset_is_an_iterable_dataset(ds: atd.Dataset[DsRec]) -> None:
    assert isinstance(ds, torch.utils.data.IterableDataset)
    assert isinstance(ds.ordered(), torch.utils.data.IterableDataset)
    assert [s.label for s in ds] == list(range(N))


# ------------------------------------------------------------------------------------------------
# DataLoader and the worker split


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("mode", ["ordered", "shuffled"])
@pytest.mark.parametrize("batch_size", [None, 3])
def test_dataloader_yields_every_sample_once(
    ds: atd.Dataset[DsRec], num_workers: int, mode: str, batch_size: int | None
) -> None:
    pipe = getattr(ds, mode)(batch_size)
    loader = DataLoader(pipe, batch_size=None, num_workers=num_workers, timeout=60 if num_workers else 0)
    items = list(loader)
    kind = DsRec if batch_size is None else atd.SampleBatch
    assert all(type(i) is kind for i in items)
    labels = _labels(items)
    assert Counter(labels) == Counter(range(N))
    if batch_size is not None:
        for b in items:
            np.testing.assert_array_equal(np.asarray(b.x)[:, 0], np.asarray(b.label, np.float32))
    if num_workers == 0:  # (an unseeded shuffled() draws its seed: the same seed gives the same order)
        again = ds.ordered(batch_size) if mode == "ordered" else ds.shuffled(batch_size, seed=pipe.seed)
        assert labels == _labels(again)


def test_dataloader_shuffled_workers_keep_the_seeded_order(ds: atd.Dataset[DsRec]) -> None:
    """The worker split takes every n-th sample of the global order: with round-robin fetching,
    two workers reproduce the single-process order."""
    single = _labels(ds.shuffled(seed=9))
    loader = DataLoader(ds.shuffled(seed=9), batch_size=None, num_workers=2, timeout=60)
    assert _labels(loader) == single


def test_dataloader_with_workers_reshuffles_each_epoch(ds: atd.Dataset[DsRec]) -> None:
    pipe = ds.shuffled(seed=9)
    loader = DataLoader(pipe, batch_size=None, num_workers=2, timeout=60)
    first = _labels(loader)
    second = _labels(loader)
    assert Counter(first) == Counter(second) == Counter(range(N))
    assert first != second


def test_dataloader_with_workers_and_set_epoch(ds: atd.Dataset[DsRec]) -> None:
    """The explicit contract (as with DistributedSampler): set_epoch before each epoch."""
    pipe = ds.shuffled(seed=9)
    loader = DataLoader(pipe, batch_size=None, num_workers=2, timeout=60)
    orders = []
    for epoch in range(3):
        pipe.set_epoch(epoch)
        orders.append(_labels(loader))
    assert len({tuple(o) for o in orders}) == 3
    reference = ds.shuffled(seed=9)
    reference.set_epoch(2)
    assert orders[2] == _labels(reference)


# ------------------------------------------------------------------------------------------- sidecars vs shard
def _mutate_sidecar(shard: str, how: str, other: str) -> None:
    """Make the sidecar of ``shard`` lie in one way (the shard is left intact)."""
    side = json.loads(Path(shard + ".idx.json").read_bytes())
    lists = ("keys", "offsets", "lengths", "payload_offsets", "payload_sizes")
    if how == "count-0":
        side.update(count=0, **{k: [] for k in lists})
    elif how == "omits-last":
        side.update(count=side["count"] - 1, **{k: side[k][:-1] for k in lists})
    elif how == "offsets-shifted":
        side.update(
            offsets=[o + 512 for o in side["offsets"]], payload_offsets=[o + 512 for o in side["payload_offsets"]]
        )
    elif how == "size-wrong":
        side["size"] += 10240
    elif how == "other-shard":
        side = json.loads(Path(other + ".idx.json").read_bytes())
    Path(shard + ".idx.json").write_text(json.dumps(side))


STALE = ["count-0", "omits-last", "offsets-shifted", "size-wrong", "other-shard"]


@pytest.mark.parametrize("how", STALE)
def test_a_stale_local_sidecar_is_rebuilt_from_the_shard(
    ds: atd.Dataset[DsRec], how: str, caplog: pytest.LogCaptureFixture
) -> None:
    shards = ds.list_shards()
    _mutate_sidecar(shards[0], how, shards[2])
    fresh = atd.Dataset[DsRec](shards)
    assert len(fresh) == N
    assert _labels(fresh.ordered()) == list(range(N))
    assert sorted(_labels(fresh.shuffled(batch_size=3))) == list(range(N))
    assert sorted(_labels(atd.Dataset[DsRec](shards).shuffled(batch_size=3, on_error="skip"))) == list(range(N))
    assert "is stale" in caplog.text and "build_index" in caplog.text


def test_a_sidecar_naming_another_payload_extension_is_stale_behind_pax_headers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Each sample's first header is a PAX header (a long name): the payload member's name is checked all the same
    # (the fuzzer found a sidecar with payload_ext "3" believed for such a shard, its samples read as {"3": bytes}).
    import io
    import tarfile

    import msgpack

    shard = tmp_path / "pax.tar"
    with tarfile.open(shard, "w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(3):
            data = msgpack.packb({"label": i})
            info = tarfile.TarInfo(f"{'d' * 120}/k{i}.msgpack")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    atd.build_index(str(shard))
    side = json.loads(Path(f"{shard}.idx.json").read_bytes())
    assert side["payload_ext"] == "msgpack"
    Path(f"{shard}.idx.json").write_text(json.dumps({**side, "payload_ext": "3"}))
    got = list(atd.Dataset(str(shard)).ordered())
    assert [s.label for s in got] == [0, 1, 2]
    assert "is stale" in caplog.text and "payloads are .3 members" in caplog.text


@pytest.mark.parametrize(
    "raw",
    [b"null", b"[]", b"5", b'"x"', b"[" * 5000 + b"]" * 5000, b"{}", b"\xff\xfe"],
    ids=["null", "list", "int", "str", "deep", "empty", "binary"],
)
def test_a_sidecar_that_is_not_one_is_a_format_error(raw: bytes) -> None:
    with pytest.raises(atd.ShardFormatError, match=r"not valid.*build_index"):
        atd.ShardIndex.from_json(raw, "s.tar")


@pytest.mark.parametrize(
    "edit",
    [
        {"payload_ext": 5},
        {"offsets": [2**70, 1024]},
        {"offsets": [-512, 1024]},
        {"offsets": ["0", 1024]},
        {"offsets": [1024, 0]},
        {"keys": ["a", "a"]},
        {"keys": ["a", 3]},
        {"count": 3},
        {"lengths": [512, 512]},
        {"payload_offsets": [0, 1536]},
        {"payload_sizes": [10**9, 3]},
        {"size": 1024},
        {"extra": {"deep": [[[[[[]]]]]] * 3}, "sha256": "zz"},
        {"format": "other"},
        {"version": 99},
    ],
)
def test_a_sidecar_that_breaks_its_schema_is_a_format_error(edit: dict[str, object]) -> None:
    good = {
        "format": "atdata-torch-shard-index",
        "version": 1,
        "count": 2,
        "keys": ["a", "b"],
        "offsets": [0, 1024],
        "lengths": [1024, 1024],
        "size": 10240,
        "payload_ext": "msgpack",
        "payload_offsets": [512, 1536],
        "payload_sizes": [3, 3],
    }
    atd.ShardIndex.from_json(json.dumps(good).encode(), "s.tar")
    with pytest.raises(atd.ShardFormatError, match=r"not valid.*build_index") as info:
        atd.ShardIndex.from_json(json.dumps({**good, **edit}).encode(), "s.tar")
    assert len(str(info.value)) < 600  # the sidecar's content is never echoed unbounded


@pytest.mark.parametrize("cache", [False, True], ids=["stream", "cache"])
@pytest.mark.parametrize("how", STALE)
def test_a_stale_remote_sidecar_is_never_believed(
    ds: atd.Dataset[DsRec], http_server: object, http_root: Path, tmp_path: Path, how: str, cache: bool
) -> None:
    import shutil

    for shard in ds.list_shards():
        for path in (shard, shard + ".idx.json"):
            shutil.copy(path, http_root / os.path.basename(path))
    names = [str(http_root / os.path.basename(s)) for s in ds.list_shards()]
    _mutate_sidecar(names[0], how, names[2])
    url = f"{http_server.base_url}/train-{{000000..000002}}.tar"  # type: ignore[attr-defined]
    opts: dict[str, object] = {"timeout": 5.0, "backoff": 0.01, "retries": 2}
    if cache:
        opts["cache_dir"] = str(tmp_path / "cache")
    for mode in ("ordered", "shuffled", "skip"):
        remote = atd.Dataset[DsRec](url, **opts)
        kwargs = {"ordered": {}, "shuffled": {"batch_size": 3}, "skip": {"batch_size": 4, "on_error": "skip"}}[mode]
        read = remote.shuffled if mode == "shuffled" else remote.ordered
        try:
            try:
                got = sorted(_labels(read(**kwargs)))  # type: ignore[arg-type]
            except atd.ShardFormatError as exc:
                assert exc.shard is not None and "train-000000.tar" in exc.shard
                assert "stale" in str(exc) and "build_index" in str(exc)
                got = sorted(_labels(read(**kwargs)))  # type: ignore[arg-type]  # the next pass scans the shard
        except atd.ChecksumError as exc:  # the cache checks the shard against the sha256 of another shard's sidecar
            assert how == "other-shard" and cache and exc.shard is not None and "train-000000.tar" in exc.shard
            continue
        assert got == list(range(N)), (mode, got)


def test_len_checks_local_sidecars_without_reading_whole_shards(
    ds: atd.Dataset[DsRec], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A sidecar's checks against its shard look at a few blocks: len() reads those, not every shard whole.
    shards = ds.list_shards()
    reads: list[str] = []
    whole = atd.sources.LocalSource.buffer
    monkeypatch.setattr(atd.sources.LocalSource, "buffer", lambda self, s: reads.append(s) or whole(self, s))
    fresh = atd.Dataset[DsRec](shards)
    assert len(fresh) == N and reads == []
    assert _labels(fresh.ordered()) == list(range(N))
    # A pass checks every payload header once, on the bytes it reads the shard into: no whole read of its own.
    assert reads == []


def test_the_first_batch_waits_for_one_shard_header_check(
    ds: atd.Dataset[DsRec], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pass's order needs every shard's count (from the sidecars, O(1) checks each); the headers of a shard are
    # checked when the pass opens it, so the first batch waits for the first shard's check only.
    from atdata_torch._sidecar import ShardIndex

    checked: list[int] = []
    real = ShardIndex.verify
    monkeypatch.setattr(ShardIndex, "verify", lambda self, buf, *a: checked.append(len(buf)) or real(self, buf, *a))
    it = iter(atd.Dataset[DsRec](ds.list_shards()).loader(batch_size=2, shuffle=False))
    next(it)
    assert len(checked) == 1
    assert len(list(it)) == N // 2 - 1 and len(checked) == 3  # each shard checked once, as the pass reached it


@pytest.mark.parametrize("placed", [False, True])
def test_a_sidecar_whose_headers_are_stale_is_found_when_its_shard_is_opened(
    ds: atd.Dataset[DsRec], caplog: pytest.LogCaptureFixture, placed: bool
) -> None:
    # Sizes that lie for a middle sample pass the O(1) checks (size, end marker, last header); the header check
    # when the pass opens the shard finds them and scans the shard: the same count, and the pass read the shard
    # whole, so it goes on with the scan. Had its bytes gone to batch rows by the sidecar's offsets (a placed pass,
    # arrays of 64 KiB and up), the pass stops with an error naming the shard, and the next one uses the scan.
    shards = ds.list_shards()
    if placed:
        big = [DsRec(x=np.full(20000, i, np.float32), label=i, name=f"n{i}") for i in range(N)]
        shards = atd.write_samples(big, str(Path(shards[0]).parent / "big.tar"), maxcount=4, progress=False)
        shards = shards.list_shards()
    side = json.loads(Path(shards[1] + ".idx.json").read_bytes())
    side["payload_sizes"][1] += 1
    Path(shards[1] + ".idx.json").write_text(json.dumps(side))
    fresh = atd.Dataset[DsRec](shards)
    assert len(fresh) == N
    if placed:
        with pytest.raises(atd.ShardFormatError, match="does not match its shard") as info:
            _labels(fresh.ordered(batch_size=2))
        assert info.value.shard == shards[1]
    assert _labels(fresh.ordered(batch_size=2)) == list(range(N))
    assert _labels(atd.Dataset[DsRec](shards).shuffled(batch_size=3, on_error="skip")) != []  # skip: checked first
    assert "is stale" in caplog.text
