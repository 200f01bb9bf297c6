"""Writing shards: naming, splitting, reproducibility, sidecars, layout, atomicity, build_index."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from http_server import FaultServer
from numpy.typing import NDArray
from remote_data import write_shards

import atdata_torch as atd
from atdata_torch._sidecar import SIDECAR_SUFFIX, ShardIndex
from atdata_torch.sources.http import HTTPSource


@atd.packable
class Small:
    x: NDArray
    label: int
    name: str


@atd.packable
class Other:
    v: int


def small(i: int) -> Small:
    return Small(x=np.full(16, i, dtype=np.float32), label=i, name=f"s{i}")


def smalls(n: int) -> list[Small]:
    return [small(i) for i in range(n)]


def files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def tars(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".tar"))


def n_members(path: str | Path) -> int:
    with tarfile.open(path) as tf:
        return len(tf.getmembers())


def read_back(paths: list[str]) -> list[Small]:
    return list(atd.Dataset[Small](paths))


# --------------------------------------------------------------------------------------------------
# naming and splitting


def test_single_shard_keeps_path(tmp_path: Path) -> None:
    ds = atd.write_samples(smalls(5), tmp_path / "out" / "train.tar", progress=False)
    assert ds.list_shards() == [str(tmp_path / "out" / "train.tar")]
    assert files(tmp_path / "out") == ["train.tar", "train.tar" + SIDECAR_SUFFIX]
    assert read_back(ds.list_shards()) == smalls(5)
    assert ds.sample_type is Small


def test_maxcount_original_naming(tmp_path: Path) -> None:
    ds = atd.write_samples(smalls(10), tmp_path / "out" / "train.tar", maxcount=4, progress=False)
    names = ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    assert [os.path.basename(p) for p in ds.list_shards()] == names
    assert tars(tmp_path / "out") == names
    counts = [n_members(p) for p in ds.list_shards()]
    assert counts == [4, 4, 2]
    assert read_back(ds.list_shards()) == smalls(10)
    assert len(ds) == 10


def test_maxcount_exact_multiple(tmp_path: Path) -> None:
    ds = atd.write_samples(smalls(6), tmp_path / "t.tar", maxcount=3, progress=False)
    assert [os.path.basename(p) for p in ds.list_shards()] == ["t-000000.tar", "t-000001.tar"]
    assert tars(tmp_path) == ["t-000000.tar", "t-000001.tar"]  # no empty third shard


def test_percent_pattern(tmp_path: Path) -> None:
    ds = atd.write_samples(smalls(7), tmp_path / "shard-%06d.tar", maxcount=3, progress=False)
    names = ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert [os.path.basename(p) for p in ds.list_shards()] == names
    assert read_back(ds.list_shards()) == smalls(7)
    ds2 = atd.write_samples(smalls(2), tmp_path / "one" / "p-%03d.tar", progress=False)
    assert [os.path.basename(p) for p in ds2.list_shards()] == ["p-000.tar"]


def test_maxsize_splitting(tmp_path: Path) -> None:
    maxsize = 20480
    samples = smalls(60)
    ds = atd.write_samples(samples, tmp_path / "m.tar", maxsize=maxsize, progress=False)
    shards = ds.list_shards()
    assert len(shards) > 1
    assert [os.path.basename(p) for p in shards] == [f"m-{i:06d}.tar" for i in range(len(shards))]
    for p in shards:
        assert os.path.getsize(p) <= maxsize
    assert read_back(shards) == samples


@pytest.mark.parametrize("maxsize", [4096, 15000, 30000])
def test_maxsize_is_respected_after_record_padding(tmp_path: Path, maxsize: int) -> None:
    """A shard with more than one sample never exceeds ``maxsize``, record padding included."""
    samples = smalls(40)
    ds = atd.write_samples(samples, tmp_path / "m.tar", maxsize=maxsize, progress=False)
    for p in ds.list_shards():
        n = n_members(p)
        assert n == 1 or os.path.getsize(p) <= maxsize, (p, n, os.path.getsize(p))
    assert read_back(ds.list_shards()) == samples


def test_maxsize_with_big_sample_gets_own_shard(tmp_path: Path) -> None:
    big = Small(x=np.zeros(10000, np.float32), label=0, name="big")
    ds = atd.write_samples([small(1), big, small(2)], tmp_path / "b.tar", maxsize=20480, progress=False)
    counts = [n_members(p) for p in ds.list_shards()]
    assert sum(counts) == 3
    assert read_back(ds.list_shards()) == [small(1), big, small(2)]


def test_maxcount_and_maxsize_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        atd.ShardWriter(tmp_path / "a.tar", maxcount=0)
    with pytest.raises(ValueError, match="maxsize must be >= 1"):
        atd.ShardWriter(tmp_path / "a.tar", maxsize=0)


# --------------------------------------------------------------------------------------------------
# reproducibility, layout, size


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_writing_twice_is_byte_identical(tmp_path: Path) -> None:
    samples = smalls(9)
    atd.write_samples(samples, tmp_path / "a" / "t.tar", maxcount=4, progress=False)
    first = _snapshot(tmp_path / "a")
    atd.write_samples(samples, tmp_path / "a" / "t.tar", maxcount=4, progress=False)
    assert _snapshot(tmp_path / "a") == first
    atd.write_samples(samples, tmp_path / "b" / "t.tar", maxcount=4, progress=False)
    assert _snapshot(tmp_path / "b") == first
    assert len(first) == 6  # 3 shards + 3 sidecars, nothing else
    # a different sample changes the bytes
    atd.write_samples([*samples[:-1], small(99)], tmp_path / "c" / "t.tar", maxcount=4, progress=False)
    assert _snapshot(tmp_path / "c") != first


def test_tar_layout_plain_ustar_padded(tmp_path: Path) -> None:
    ds = atd.write_samples(smalls(13), tmp_path / "l.tar", maxcount=5, progress=False)
    for p in ds.list_shards():
        raw = Path(p).read_bytes()
        assert len(raw) % 10240 == 0
        assert b"PaxHeader" not in raw and b"LongLink" not in raw
        with tarfile.open(p) as tf:
            members = tf.getmembers()
            for m in members:
                assert m.isreg() and m.type == tarfile.REGTYPE
                assert m.pax_headers == {}
                assert m.mtime == 0
                assert m.name.endswith(".msgpack") and "." not in m.name[: -len(".msgpack")]
                assert raw[m.offset + 156 : m.offset + 157] == b"0"
                assert raw[m.offset + 257 : m.offset + 263] == b"ustar\0"
        # exactly one member per sample, no directory entries
        assert all("/" not in m.name for m in members)


@pytest.mark.parametrize("n", [200, 1000])
def test_disk_bytes_per_small_sample(tmp_path: Path, n: int) -> None:
    """float32[16] + int + short str: one 512-byte header + one 512-byte data block, little else."""
    ds = atd.write_samples(smalls(n), tmp_path / "s.tar", progress=False)
    (shard,) = ds.list_shards()
    shard_bytes = os.path.getsize(shard)
    assert shard_bytes / n <= 1100
    if n >= 1000:  # with the record padding amortized, the index sidecar fits in the budget too
        sidecar_bytes = os.path.getsize(shard + SIDECAR_SUFFIX)
        assert (shard_bytes + sidecar_bytes) / n <= 1100


def test_payload_bytes_are_sample_packed(tmp_path: Path) -> None:
    samples = smalls(4)
    ds = atd.write_samples(samples, tmp_path / "p.tar", progress=False)
    with tarfile.open(ds.list_shards()[0]) as tf:
        payloads = [tf.extractfile(m).read() for m in tf.getmembers()]  # type: ignore[union-attr]
    assert payloads == [s.packed for s in samples]


# --------------------------------------------------------------------------------------------------
# sidecars


def test_sidecar_contents(tmp_path: Path) -> None:
    ds = atd.write_samples(smalls(7), tmp_path / "side.tar", maxcount=4, progress=False)
    for shard in ds.list_shards():
        raw = Path(shard).read_bytes()
        side = json.loads(Path(shard + SIDECAR_SUFFIX).read_text())
        assert side["format"] == "atdata-torch-shard-index" and side["version"] == 1
        assert side["size"] == len(raw)
        assert side["sha256"] == hashlib.sha256(raw).hexdigest()
        assert side["schema_id"] == atd.schema_id(Small)
        with tarfile.open(shard) as tf:
            members = tf.getmembers()
        assert side["count"] == len(members)
        assert side["keys"] == [m.name[: -len(".msgpack")] for m in members]
        assert side["offsets"] == [m.offset for m in members]
        for m, off, length in zip(members, side["offsets"], side["lengths"], strict=True):
            assert length == 512 + ((m.size + 511) // 512) * 512
            assert m.offset_data == off + 512
        idx = ShardIndex.from_json(Path(shard + SIDECAR_SUFFIX).read_bytes(), shard)
        assert idx.count == side["count"] and idx.keys == side["keys"] and idx.sha256 == side["sha256"]
    first = json.loads(Path(ds.list_shards()[0] + SIDECAR_SUFFIX).read_text())
    second = json.loads(Path(ds.list_shards()[1] + SIDECAR_SUFFIX).read_text())
    assert first["keys"] == ["00000000", "00000001", "00000002", "00000003"]
    assert second["keys"] == ["00000004", "00000005", "00000006"]  # keys are global indexes


def test_sidecar_matches_scan(tmp_path: Path) -> None:
    ds = atd.write_samples(smalls(5), tmp_path / "sc.tar", progress=False)
    (shard,) = ds.list_shards()
    (scanned,) = atd.build_index(shard, write=False, progress=False)
    written = ShardIndex.from_json(Path(shard + SIDECAR_SUFFIX).read_bytes(), shard)
    assert (scanned.keys, scanned.offsets, scanned.lengths, scanned.size, scanned.sha256) == (
        written.keys,
        written.offsets,
        written.lengths,
        written.size,
        written.sha256,
    )


def test_sidecar_disabled(tmp_path: Path) -> None:
    ds = atd.write_samples(smalls(3), tmp_path / "n.tar", sidecar=False, progress=False)
    assert files(tmp_path) == ["n.tar"]
    assert read_back(ds.list_shards()) == smalls(3)


def test_dict_samples_have_no_schema_id(tmp_path: Path) -> None:
    rows = [{"x": np.arange(3), "label": i} for i in range(3)]
    ds = atd.write_samples(rows, tmp_path / "d.tar", progress=False)
    side = json.loads((tmp_path / ("d.tar" + SIDECAR_SUFFIX)).read_text())
    assert side["schema_id"] is None
    assert ds.sample_type is atd.DictSample
    got = list(ds)
    assert [g.label for g in got] == [0, 1, 2]
    np.testing.assert_array_equal(got[2].x, np.arange(3))
    atd.write_samples([atd.DictSample(r) for r in rows], tmp_path / "e.tar", progress=False)
    assert (tmp_path / "e.tar").read_bytes() == (tmp_path / "d.tar").read_bytes()


# --------------------------------------------------------------------------------------------------
# atomicity


def failing_after(n: int) -> Iterator[Small]:
    for i in range(n):
        yield small(i)
    raise RuntimeError("source failed")


def test_generator_raising_leaves_no_partial_shard(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="source failed"):
        atd.write_samples(failing_after(5), out / "train.tar", maxcount=2, progress=False)
    # shards 0 and 1 (samples 0-3) were complete; shard 2 (sample 4) must not exist
    assert files(out) == [
        "train-000000.tar",
        "train-000000.tar" + SIDECAR_SUFFIX,
        "train-000001.tar",
        "train-000001.tar" + SIDECAR_SUFFIX,
    ]
    assert read_back([str(out / "train-000000.tar"), str(out / "train-000001.tar")]) == smalls(4)


def test_generator_raising_single_shard_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        atd.write_samples(failing_after(5), tmp_path / "train.tar", progress=False)
    assert files(tmp_path) == []


def test_encode_failure_leaves_no_partial_shard(tmp_path: Path) -> None:
    bad = Small(x=np.zeros(2, np.float32), label=None, name="bad")  # type: ignore[arg-type]
    samples = [*smalls(3), bad, small(4)]
    with pytest.raises(atd.SchemaError) as ei:
        atd.write_samples(samples, tmp_path / "e.tar", maxcount=2, progress=False)
    assert ei.value.field == "label"
    assert tars(tmp_path) == ["e-000000.tar"]
    assert not [f for f in files(tmp_path) if ".tmp" in f or f.endswith(".part")]


def test_failed_rewrite_keeps_previous_shard(tmp_path: Path) -> None:
    path = tmp_path / "keep.tar"
    atd.write_samples(smalls(3), path, progress=False)
    before = _snapshot(tmp_path)
    with pytest.raises(RuntimeError):
        atd.write_samples(failing_after(2), path, progress=False)
    assert _snapshot(tmp_path) == before


def test_shard_writer_context_manager(tmp_path: Path) -> None:
    with atd.ShardWriter(tmp_path / "cm.tar", maxcount=2) as w:
        keys = [w.write(s) for s in smalls(3)]
        assert w.count == 3
        # the current shard is still a temp file
        assert tars(tmp_path) == ["cm-000000.tar"]
    assert keys == ["00000000", "00000001", "00000002"]
    assert [os.path.basename(p) for p in w.shards] == ["cm-000000.tar", "cm-000001.tar"]
    assert not [f for f in files(tmp_path) if f.startswith(".tmp")]
    assert read_back(w.shards) == smalls(3)
    assert "cm.tar" in repr(w)


def test_shard_writer_exception_aborts_current_shard(tmp_path: Path) -> None:
    with pytest.raises(KeyError), atd.ShardWriter(tmp_path / "x.tar", maxcount=2) as w:
        for s in smalls(3):
            w.write(s)
        raise KeyError("boom")
    assert [os.path.basename(p) for p in w.shards] == ["x-000000.tar"]
    assert files(tmp_path) == ["x-000000.tar", "x-000000.tar" + SIDECAR_SUFFIX]


def test_shard_writer_custom_keys(tmp_path: Path) -> None:
    with atd.ShardWriter(tmp_path / "k.tar", key=lambda s, i: f"{s.name}_{i}") as w:
        for s in smalls(2):
            w.write(s)
        w.write(small(7), key="explicit")
    with tarfile.open(tmp_path / "k.tar") as tf:
        assert tf.getnames() == ["s0_0.msgpack", "s1_1.msgpack", "explicit.msgpack"]
    with pytest.raises(ValueError), atd.ShardWriter(tmp_path / "bad.tar") as w2:
        w2.write(small(0), key="has.dot")
    assert not (tmp_path / "bad.tar").exists()


def test_shard_writer_no_fsync_same_bytes(tmp_path: Path) -> None:
    for sub, fsync in (("a", True), ("b", False)):
        with atd.ShardWriter(tmp_path / sub / "f.tar", fsync=fsync) as w:
            for s in smalls(3):
                w.write(s)
    assert _snapshot(tmp_path / "a") == _snapshot(tmp_path / "b")


# --------------------------------------------------------------------------------------------------
# bad calls


def test_write_samples_empty_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no samples"):
        atd.write_samples([], tmp_path / "e.tar", progress=False)
    with pytest.raises(ValueError):
        atd.write_samples(iter(()), tmp_path / "e.tar", maxcount=3, progress=False)
    assert files(tmp_path) == []


def test_mixing_sample_types_raises(tmp_path: Path) -> None:
    with pytest.raises(atd.SchemaError, match="Other"):
        atd.write_samples([small(0), Other(v=1)], tmp_path / "mix.tar", progress=False)
    assert files(tmp_path) == []
    with pytest.raises(atd.SchemaError):
        atd.write_samples([small(0), {"x": 1}], tmp_path / "mix2.tar", progress=False)
    assert files(tmp_path) == []


def test_same_name_different_schema_raises(tmp_path: Path) -> None:
    def make(ann: object) -> type:
        return atd.packable(type("Twin", (), {"__annotations__": {"v": ann}}))

    a, b = make(int), make(str)
    with pytest.raises(atd.SchemaError), atd.ShardWriter(tmp_path / "tw.tar") as w:
        w.write(a(v=1))
        w.write(b(v="x"))


def test_unwritable_object_raises(tmp_path: Path) -> None:
    with pytest.raises(atd.SchemaError), atd.ShardWriter(tmp_path / "u.tar") as w:
        w.write(object())


# --------------------------------------------------------------------------------------------------
# build_index on plain tars


def test_build_index_plain_tars(tmp_path: Path, tar_factory: Callable[..., Path]) -> None:
    p0 = tar_factory(
        "plain-000000.tar",
        [("a.jpg", b"J" * 700), ("a.cls", b"1"), ("b.jpg", b"K"), ("b.cls", b"2")],
        tarfile.PAX_FORMAT,
    )
    p1 = tar_factory("plain-000001.tar", [("c.txt", b"hello")], tarfile.GNU_FORMAT)
    idxs = atd.build_index(str(tmp_path / "plain-{000000..000001}.tar"), progress=False)
    assert [i.count for i in idxs] == [2, 1]
    assert idxs[0].keys == ["a", "b"] and idxs[1].keys == ["c"]
    for p, idx in zip((p0, p1), idxs, strict=True):
        raw = p.read_bytes()
        side = json.loads(Path(str(p) + SIDECAR_SUFFIX).read_text())
        assert side["keys"] == idx.keys and side["count"] == idx.count
        assert side["size"] == len(raw)
        assert side["sha256"] == hashlib.sha256(raw).hexdigest()
        with tarfile.open(p) as tf:
            first_offsets: dict[str, int] = {}
            for m in tf.getmembers():
                first_offsets.setdefault(m.name.split(".", 1)[0], m.offset)
        assert side["offsets"] == [first_offsets[k] for k in idx.keys]
    # a sample's length covers all of its members
    assert idxs[0].offsets[1] == idxs[0].offsets[0] + idxs[0].lengths[0]
    ds = atd.Dataset([str(p0), str(p1)])
    assert len(ds) == 3
    assert ds.get("b").cls == 2


def test_build_index_original_shard(wds_tar_factory: Callable[..., Path]) -> None:
    samples = smalls(3)
    p = wds_tar_factory("orig.tar", [{"__key__": f"key{i}", "msgpack": s.packed} for i, s in enumerate(samples)])
    (idx,) = atd.build_index(str(p), progress=False)
    assert idx.keys == ["key0", "key1", "key2"]
    raw = p.read_bytes()
    for off in idx.offsets:
        assert raw[off : off + 14] == b"././@PaxHeader"
    assert Path(str(p) + SIDECAR_SUFFIX).exists()
    assert read_back([str(p)]) == samples


def test_build_index_write_false(tmp_path: Path, tar_factory: Callable[..., Path]) -> None:
    p = tar_factory("w.tar", [("a.txt", b"1")])
    (idx,) = atd.build_index([str(p)], write=False, progress=False)
    assert idx.count == 1
    assert files(tmp_path) == ["w.tar"]


def test_build_index_over_remote_shards(
    http_server: FaultServer, http_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shards = write_shards(http_root, n=12, per_shard=4, sidecars=False)
    local = atd.build_index([str(p) for p in shards], write=False, progress=False)
    url = f"{http_server.base_url}/data-{{000000..000002}}.tar"
    got = atd.build_index(url, write=False, progress=True)
    assert [(i.count, i.keys, i.offsets, i.sha256) for i in got] == [
        (i.count, i.keys, i.offsets, i.sha256) for i in local
    ]
    err = capsys.readouterr().err
    assert "indexing" in err and "0/3" in err  # one bar over the 3 shards (its later frames depend on timing)
    # A source works too (here with a cache: its fills have their own bars, per its progress=), and by default
    # (stderr is not a terminal here) nothing is shown.
    src = HTTPSource([f"{http_server.base_url}/{p.name}" for p in shards], cache=str(tmp_path / "cache"))
    assert [i.sha256 for i in atd.build_index(src, write=False)] == [i.sha256 for i in local]
    assert src.cache is not None and src.cache.downloads == 3
    assert capsys.readouterr().err == ""
    with pytest.raises(TypeError, match="write=False"):
        atd.build_index(url)  # sidecars cannot be written next to remote shards
    assert not list(http_root.glob("*.idx.json"))


def test_written_shard_readable_as_bytes(tmp_path: Path) -> None:
    ds = atd.write_samples(smalls(2), tmp_path / "r.tar", progress=False)
    raw = Path(ds.list_shards()[0]).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        assert tf.getnames() == ["00000000.msgpack", "00000001.msgpack"]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_shards_and_sidecars_respect_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    # mkstemp's 0600 must not survive the rename: a dataset written for a team is readable by it.
    old = os.umask(umask)
    try:
        samples = [Small(np.zeros(2, np.float32), i, "t") for i in range(4)]
        atd.write_samples(samples, tmp_path / "m-%06d.tar", maxcount=2)
        with atd.ShardWriter(str(tmp_path / "single.tar")) as w:
            w.write(Small(np.zeros(2, np.float32), 0, "t"))
    finally:
        os.umask(old)
    written = sorted(tmp_path.iterdir())
    assert len(written) == 6 and all(not p.name.startswith(".tmp-") for p in written)
    assert {p.name: p.stat().st_mode & 0o777 for p in written} == {p.name: mode for p in written}


# --------------------------------------------------------------------------------------------------
# the original atdata's write_samples (issue 17): content_metadata, the smallest maxsize, defaults, errors


def test_write_samples_content_metadata_and_url(tmp_path: Path) -> None:
    meta = {"instrument": "Zeiss"}
    ds = atd.write_samples(smalls(5), tmp_path / "c.tar", maxcount=2, content_metadata=meta, progress=False)
    assert ds.content_metadata == meta
    assert ds.url == str(tmp_path / "c-00000{0,1,2}.tar")  # the original's brace url of absolute paths
    assert tars(tmp_path) == ["c-000000.tar", "c-000001.tar", "c-000002.tar"]
    typed = atd.write_samples([Other(v=1)], tmp_path / "t.tar", content_metadata=Other(v=9), progress=False)
    assert typed.content_metadata == Other(v=9) and typed.url == str(tmp_path / "t.tar")


def test_write_samples_bad_content_metadata_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="content_metadata must be"):
        atd.write_samples(smalls(2), tmp_path / "x.tar", content_metadata=[1, 2], progress=False)
    assert files(tmp_path) == []


@pytest.mark.parametrize("maxsize", [1, 100, 1e3])
def test_maxsize_as_small_as_the_original_accepts(tmp_path: Path, maxsize: float) -> None:
    """Any maxsize from 1 byte: a shard smaller than one sample holds that one sample."""
    ds = atd.write_samples(smalls(3), tmp_path / "m.tar", maxsize=maxsize, progress=False)
    assert tars(tmp_path) == ["m-000000.tar", "m-000001.tar", "m-000002.tar"]
    assert read_back(ds.list_shards()) == smalls(3)


def test_maxsize_float_and_default_maxcount(tmp_path: Path) -> None:
    ds = atd.write_samples(smalls(5), tmp_path / "f.tar", maxsize=3e9, progress=False)
    assert tars(tmp_path) == ["f-000000.tar"] and len(ds) == 5


def test_write_samples_empty_is_empty_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(atd.EmptyDatasetError, match="no samples") as info:
        atd.write_samples([], tmp_path / "e.tar", maxcount=2, progress=False)
    assert isinstance(info.value, ValueError)  # what the original raised
    assert files(tmp_path) == []  # the original left an empty e-000000.tar behind
