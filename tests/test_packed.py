"""The compact layout (``write_samples(..., pack=N)``, ``atdata_torch._packed``): writing, reading without and with
the sidecar, the sidecar's compact form, staleness and bad input. The loader, random-access, placement, S3 and Ray
tests also run over this layout (their fixtures are parametrized over it)."""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from numpy.typing import NDArray

import atdata_torch as atd
from atdata_torch import _packed
from atdata_torch._sidecar import SIDECAR_SUFFIX, ShardIndex
from atdata_torch._tarwrite import end_of_archive, member_bytes


@atd.packable
class Small:
    x: NDArray
    label: int
    text: str


def smalls(n: int, start: int = 0) -> list[Small]:
    return [Small(x=np.full(16, i, np.float32), label=i, text=f"item-{i}") for i in range(start, start + n)]


def labels(items: Any) -> list[int]:
    return [s.label for s in items]


def shard_of(members: list[tuple[str, bytes]]) -> bytes:
    body = b"".join(member_bytes(name, data) for name, data in members)
    return body + end_of_archive(len(body))


def pairs(keys: list[str], start: int = 0) -> bytes:
    return b"".join(_packed.pair(k, Small(x=np.zeros(16, np.float32), label=start + i, text="t").packed)[0]
                    for i, k in enumerate(keys))  # fmt: skip


# ---------------------------------------------------------------------------------------------------- writing
def test_pack_writes_several_samples_per_member_in_a_valid_tar(tmp_path: Path) -> None:
    ds = atd.write_samples(smalls(10), tmp_path / "p.tar", pack=4, progress=False)
    with tarfile.open(ds.list_shards()[0]) as tf:
        assert tf.getnames() == ["00000000.msgpacks", "00000004.msgpacks", "00000008.msgpacks"]
        data = tf.extractfile("00000004.msgpacks").read()  # type: ignore[union-attr]
    stream = list(msgpack.Unpacker(io.BytesIO(data), raw=False))
    assert [k for k, _ in stream] == ["00000004", "00000005", "00000006", "00000007"]
    assert Small.from_bytes(stream[1][1]).label == 5  # each payload is the default layout's member, as is
    assert labels(ds) == list(range(10)) and len(ds) == 10


def test_webdataset_opens_a_packed_shard_as_one_opaque_field_per_pack(tmp_path: Path, wds_read: Any) -> None:
    ds = atd.write_samples(smalls(5), tmp_path / "p.tar", pack=2, progress=False)
    got = wds_read(ds.list_shards()[0])
    assert [g["__key__"] for g in got] == ["00000000", "00000002", "00000004"]
    assert all(set(g) >= {"msgpacks"} for g in got)


@pytest.mark.parametrize("pack", [None, 1])
def test_the_default_layout_is_unchanged(tmp_path: Path, pack: int | None) -> None:
    a = atd.write_samples(smalls(7), tmp_path / "a.tar", progress=False)
    b = atd.write_samples(smalls(7), tmp_path / "b.tar", pack=pack, progress=False)
    for suffix in ("", SIDECAR_SUFFIX):
        assert Path(a.list_shards()[0] + suffix).read_bytes() == Path(b.list_shards()[0] + suffix).read_bytes()


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "4"])
def test_a_bad_pack_is_refused(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(ValueError, match="pack must be an int >= 1"):
        atd.ShardWriter(tmp_path / "x.tar", pack=bad)


def test_shards_roll_over_by_count_and_size_with_packs(tmp_path: Path) -> None:
    by_count = atd.write_samples(smalls(23), tmp_path / "c.tar", maxcount=10, pack=4, progress=False)
    assert [ix.count for ix in by_count.shard_indexes()] == [10, 10, 3]
    assert labels(by_count) == list(range(23))
    by_size = atd.write_samples(smalls(400), tmp_path / "s.tar", maxsize=20_000, pack=50, progress=False)
    assert all(os.path.getsize(p) <= 20_000 for p in by_size.list_shards()) and len(by_size.list_shards()) > 1
    assert labels(by_size) == list(range(400))


def test_dict_samples_custom_keys_and_get_by_key(tmp_path: Path) -> None:
    rows = [atd.DictSample({"n": i, "tag": f"t{i}"}) for i in range(6)]
    ds = atd.write_samples(rows, tmp_path / "d.tar", pack=4, key=lambda s, i: f"row/{s['tag']}", progress=False)
    back = atd.Dataset[atd.DictSample](ds.list_shards())
    assert [s["n"] for s in back] == list(range(6))
    assert back.get("row/t5")["n"] == 5
    assert json.loads(Path(ds.list_shards()[0] + SIDECAR_SUFFIX).read_bytes())["packed"]["keys"][:2] == [
        "row/t0",
        "row/t1",
    ]


def test_index_write_samples_takes_pack(tmp_path: Path) -> None:
    index = atd.Index(path=tmp_path / "index.db", data_dir=tmp_path / "data")
    entry = index.write_samples(smalls(9), name="packed", pack=4, progress=False)
    ds = atd.load_dataset("@local/packed", index=index, split="train")
    assert sorted(labels(ds)) == list(range(9)) and entry.name == "packed"
    with tarfile.open(ds.list_shards()[0]) as tf:
        assert all(n.endswith(".msgpacks") for n in tf.getnames())


# ---------------------------------------------------------------------------------------------------- the sidecar
def test_the_sidecar_is_compact_and_describes_what_a_scan_finds(tmp_path: Path) -> None:
    ds = atd.write_samples(smalls(300), tmp_path / "p.tar", pack=64, progress=False)
    shard = ds.list_shards()[0]
    raw = Path(shard + SIDECAR_SUFFIX).read_bytes()
    doc = json.loads(raw)
    # version 2 (a version-1 reader refuses it: its required per-sample lists are not there)
    assert doc["version"] == 2 and not {"keys", "offsets", "lengths", "payload_offsets"} & set(doc)
    assert doc["packed"]["keys"] == {"start": 0, "width": 8} and doc["packed"]["counts"] == [64, 64, 64, 64, 44]
    assert "payload_offsets" not in doc["packed"]  # they follow from the keys and sizes
    assert len(raw) < 6 * 300  # a few bytes per sample
    scanned = atd.build_index(shard, write=False)[0]
    loaded = ShardIndex.from_json(raw, shard)
    for f in ("count", "keys", "offsets", "lengths", "payload_offsets", "payload_sizes", "size", "sha256", "packed"):
        assert getattr(loaded, f) == getattr(scanned, f), f
    assert json.loads(scanned.to_json())["packed"] == doc["packed"]


def test_the_compact_layout_meets_its_disk_target(tmp_path: Path) -> None:
    # bench_peers' small shape (f32[16] + int + str): <= 150 bytes a sample on disk, shard and sidecar together
    # (the default layout takes a 512-byte header and padding per sample).
    rng = np.random.default_rng(0)
    samples = [Small(x=rng.standard_normal(16, dtype=np.float32), label=i % 10, text=f"item-{i}") for i in range(5000)]
    ds = atd.write_samples(samples, tmp_path / "p.tar", pack=256, progress=False)
    shard = ds.list_shards()[0]
    per_sample = (os.path.getsize(shard) + os.path.getsize(shard + SIDECAR_SUFFIX)) / len(samples)
    assert per_sample <= 150, per_sample
    default = atd.write_samples(samples, tmp_path / "d.tar", progress=False).list_shards()[0]
    assert os.path.getsize(default) / len(samples) > 1000


def test_foreign_packed_members_are_indexed_with_explicit_offsets(tmp_path: Path) -> None:
    # A non-canonical but valid pair stream (a str8 key header), written by another tool: the sidecar stores its
    # payload offsets, as they do not follow from the keys and sizes.
    payload = smalls(1)[0].packed
    odd = b"\x92\xd9\x02k0" + msgpack.packb(payload, use_bin_type=True)
    path = tmp_path / "f.tar"
    path.write_bytes(shard_of([("k0.msgpacks", odd + _packed.pair("k1", payload)[0])]))
    (idx,) = atd.build_index(str(path))
    doc = json.loads(Path(str(path) + SIDECAR_SUFFIX).read_bytes())
    assert idx.packed and idx.keys == ["k0", "k1"] and "payload_offsets" in doc["packed"]
    assert ShardIndex.from_json(idx.to_json(), str(path)).payload_offsets == idx.payload_offsets
    assert [s.label for s in atd.Dataset[Small](str(path))] == [0, 0]


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["packed"].update(counts=[1, 2]),
        lambda d: d["packed"].update(sizes=[1]),
        lambda d: d["packed"].update(keys={"start": -1, "width": 8}),
        lambda d: d["packed"].update(lengths=[512, 512]),
        lambda d: d.update(version=1),
        lambda d: d.pop("packed"),
        lambda d: d["packed"].update(members=[0, 0]),
    ],
)
def test_a_bad_packed_sidecar_is_refused_naming_it(tmp_path: Path, edit: Any) -> None:
    ds = atd.write_samples(smalls(10), tmp_path / "p.tar", pack=4, progress=False)
    shard = ds.list_shards()[0]
    doc = json.loads(Path(shard + SIDECAR_SUFFIX).read_bytes())
    edit(doc)
    with pytest.raises(atd.ShardFormatError, match=r"idx\.json' is not valid") as info:
        ShardIndex.from_json(json.dumps(doc).encode(), shard)
    assert info.value.shard == shard


def test_a_shard_rewritten_under_its_sidecar_is_found_stale(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Same size (tar pads to 10240 bytes) and the same members, other payload sizes: the header checks find it
    # and the shard is scanned instead of misread.
    a = atd.write_samples(smalls(10), tmp_path / "a.tar", pack=4, progress=False).list_shards()[0]
    other = [Small(x=np.full(16, i, np.float32), label=i, text="a much longer text " * 2) for i in range(10)]
    b = atd.write_samples(other, tmp_path / "b.tar", pack=4, progress=False).list_shards()[0]
    assert os.path.getsize(a) == os.path.getsize(b)
    os.replace(b, a)  # a's sidecar now lies about the shard
    with caplog.at_level(logging.WARNING, logger="atdata_torch"):
        got = list(atd.Dataset[Small](a))
    assert [s.text for s in got] == [o.text for o in other]
    assert "stale" in caplog.text


def test_a_pair_that_is_not_the_index_s_sample_is_a_stale_sidecar(tmp_path: Path) -> None:
    a = atd.write_samples(smalls(6), tmp_path / "a.tar", pack=3, key=lambda s, i: f"a{i}", progress=False)
    shard = a.list_shards()[0]
    side = Path(shard + SIDECAR_SUFFIX).read_bytes()
    atd.write_samples(smalls(6), tmp_path / "a.tar", pack=3, key=lambda s, i: f"b{i}", progress=False)
    Path(shard + SIDECAR_SUFFIX).write_bytes(side)  # same layout, other keys
    with pytest.raises(atd.ShardFormatError, match="stale") as info:
        atd.Dataset[Small](shard)[4]
    assert info.value.key == "a4"


# ---------------------------------------------------------------------------------------------------- bad input
def _bad_member(tmp_path: Path, data: bytes, name: str = "k0.msgpacks") -> str:
    path = tmp_path / "bad.tar"
    path.write_bytes(shard_of([("g0.msgpack", smalls(1)[0].packed), (name, data)]))
    return str(path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (pairs(["k0", "k1"])[:-7], "truncated or corrupt"),  # cut inside the last payload
        (pairs(["k0"]) + b"\x93\xa2k1\xc4\x00\x01", "no \\[key, payload\\] pair"),  # a 3-element array
        (pairs(["k0"]) + msgpack.packb([5, b"x"]), "no \\[key, payload\\] pair"),  # a key that is not a str
        (pairs(["k0", "k.1"]), "has a '.'"),
        (pairs(["k0"]) + b"\x92\xa2k1\xc4\xff" + bytes(50), "payload is not a msgpack bin"),  # overruns the member
        (pairs(["zz", "k1"]), "is not the member's name"),
        (b"", "holds no sample"),
        (pairs(["k0"]) + b"\x92\xa2k1\xa1x", "payload is not a msgpack bin"),  # a str payload
    ],
)
@pytest.mark.parametrize("sidecar", [False, True])
def test_a_damaged_packed_member_is_a_named_error(tmp_path: Path, data: bytes, message: str, sidecar: bool) -> None:
    path = _bad_member(tmp_path, data)
    if sidecar:  # a sidecar written for the shard's intact form: stale now, so the shard is scanned
        (tmp_path / "good").mkdir()
        good = _bad_member(tmp_path / "good", pairs(["k0", "k1"]))
        atd.build_index(good)
        os.replace(good + SIDECAR_SUFFIX, path + SIDECAR_SUFFIX)
    with pytest.raises(atd.ShardFormatError, match=message) as info:
        list(atd.Dataset[Small](path))
    assert info.value.shard == path and info.value.offset is not None and "pack=N" in str(info.value)


def test_a_packed_member_beside_other_members_of_its_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mixed.tar"
    path.write_bytes(shard_of([("k0.msgpacks", pairs(["k0"])), ("k0.json", b"{}")]))
    with pytest.raises(atd.ShardFormatError, match="stands alone") as info:
        list(atd.Dataset[atd.DictSample](str(path)))
    assert info.value.key == "k0"


def test_skipping_a_damaged_member_reports_its_loss_and_keeps_the_rest(tmp_path: Path) -> None:
    # The intact pairs before the damage are read; the loss is reported, not silent.
    path = _bad_member(tmp_path, pairs(["k0", "k1", "k2"])[:-5])
    with pytest.warns(atd.SkippedSamplesWarning):
        got = list(atd.Dataset[Small](path).ordered(on_error="skip"))
    assert len(got) == 3  # g0, k0, k1


# ---------------------------------------------------------------------------------------------------- reading
def test_views_ranges_shuffles_and_random_access_read_packed_shards_exactly(tmp_path: Path) -> None:
    ds = atd.write_samples(smalls(50), tmp_path / "p.tar", maxcount=20, pack=6, progress=False)
    again = atd.Dataset[Small](ds.list_shards())
    assert sorted(labels(again.shuffled(seed=3))) == list(range(50))
    assert labels(again.select_range(15, 33)) == list(range(15, 33))  # ranges inside packed members
    assert labels(again[[49, 0, 25, 7]]) == [49, 0, 25, 7] and again[-1].label == 49
    assert labels(again.select([3, 31])) == [3, 31]
    batches = list(again.loader(batch_size=8, shuffle=False, num_workers=2))
    assert [int(v) for b in batches for v in b.label] == list(range(50))


def test_manifests_of_packed_shards_answer_queries(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    ds = atd.write_samples(smalls(12), tmp_path / "m.tar", pack=5, manifest=True, progress=False)
    hits = ds.query(where=lambda df: df["label"] >= 10)
    assert sorted(h.key for h in hits) == ["00000010", "00000011"]
