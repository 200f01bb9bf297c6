"""Records from tars (``_reader``): grouping by key; tars of other writers read via ``Dataset``."""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from webdataset.tariterators import base_plus_ext

import atdata_torch as atd
from atdata_torch import _reader

HYP = settings(max_examples=50, deadline=None, database=None)


@atd.packable
class OrigSample:
    name: str
    embedding: NDArray
    label: int
    note: str | None = None


@atd.packable
class Conventional:
    image: NDArray
    label: int


def npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


def _orig(n: int) -> list[OrigSample]:
    rng = np.random.default_rng(0)
    return [OrigSample(name=f"item-{i:02d}", embedding=rng.random(8, dtype=np.float32), label=i) for i in range(n)]


def members_of(rec: _reader.Record) -> dict[str, bytes]:
    return {k: bytes(v) for k, v in rec.members.items()}


# --------------------------------------------------------------------------------------------------
# keys and grouping

segment = st.from_regex(r"\A[A-Za-z0-9_-][A-Za-z0-9_.-]{0,12}\Z")
member_names = st.lists(segment, min_size=1, max_size=4).map("/".join)


@HYP
@given(member_names)
def test_split_name_matches_webdataset(name: str) -> None:
    base, ext = base_plus_ext(name)
    got = _reader.split_name(name)
    if base is None:
        assert got is None
    else:
        assert got == (base, ext.lower())


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("k0.msgpack", ("k0", "msgpack")),
        ("k0.image.npy", ("k0", "image.npy")),
        ("a/b.c/k.jpg", ("a/b.c/k", "jpg")),
        ("X.JPG", ("X", "jpg")),
        ("README", None),
        ("dir/noext", None),
    ],
)
def test_split_name_examples(name: str, expected: tuple[str, str] | None) -> None:
    assert _reader.split_name(name) == expected


def test_records_group_consecutive_members(
    tar_bytes: Callable[[Sequence[tuple[str, bytes]]], bytes],
) -> None:
    raw = tar_bytes(
        [
            ("a.jpg", b"J" * 600),
            ("a.cls", b"1"),
            ("EMPTY", b""),
            ("b.jpg", b"K"),
            ("b.cls", b"2"),
            ("dir/c.msgpack", b"\x80"),
        ]
    )
    recs = list(_reader.iter_records(raw, "s.tar"))
    assert [r.key for r in recs] == ["a", "b", "dir/c"]
    assert members_of(recs[0]) == {"jpg": b"J" * 600, "cls": b"1"}
    assert members_of(recs[1]) == {"jpg": b"K", "cls": b"2"}
    # A member with data but no extension belongs to no sample: its bytes would be dropped in silence (a renamed or
    # corrupt member name), so it is reported, naming it (an empty one, like EMPTY above, is passed over).
    bad = tar_bytes([("a.jpg", b"J"), ("README", b"not a sample"), ("b.jpg", b"K")])
    with pytest.raises(atd.ShardFormatError, match="'README' has no extension"):
        list(_reader.iter_records(bad, "s.tar"))
    assert members_of(recs[2]) == {"msgpack": b"\x80"}
    # offsets are the first header of each sample; lengths run to the end of its last member
    assert recs[0].offset == 0 and recs[0].length == 512 + 1024 + 512 + 512
    assert recs[1].offset == recs[0].offset + recs[0].length + 512  # the EMPTY member (a header only) passed over
    for r in recs:
        again = _reader.read_record(raw, "s.tar", r.offset, r.length)
        assert again.key == r.key and members_of(again) == members_of(r)
        assert r.shard == "s.tar"
    stream = list(_reader.iter_records_stream(io.BytesIO(raw), "s.tar"))
    assert [(r.key, r.offset, r.length, members_of(r)) for r in stream] == [
        (r.key, r.offset, r.length, members_of(r)) for r in recs
    ]


def test_read_record_refuses_a_member_that_runs_past_its_index_range() -> None:
    # A member whose size field was corrupted upwards swallows the next sample: read by the index's range, the record
    # is refused (counted as one loss), since the next sample is still read from its own range.
    from atdata_torch._tarwrite import end_of_archive, member_bytes, ustar_header

    parts = [member_bytes("a.cls", b"1"), member_bytes("a.json", b"{}"), member_bytes("b.cls", b"2")]
    raw = b"".join(parts) + end_of_archive(sum(map(len, parts)))
    a, b = _reader.iter_records(raw, "s.tar")
    at = len(parts[0])
    bad = raw[:at] + ustar_header("a.json", 1000) + raw[at + 512 :]
    with pytest.raises(atd.ShardFormatError, match=r"sample 'a' run to byte 2560, past the bytes \[0, 2048\)"):
        _reader.read_record(bad, "s.tar", a.offset, a.length)
    assert members_of(_reader.read_record(bad, "s.tar", b.offset, b.length)) == {"cls": b"2"}


def test_records_of_original_pax_shard(wds_tar_factory: Callable[..., Path]) -> None:
    samples = _orig(5)
    keys = [str(uuid.uuid1(node=0, clock_seq=0)) for _ in samples]
    path = wds_tar_factory(
        "orig.tar",
        [{"__key__": k, "msgpack": s.packed} for k, s in zip(keys, samples, strict=True)],
    )
    raw = path.read_bytes()
    recs = list(_reader.iter_records(raw, str(path)))
    assert [r.key for r in recs] == keys
    assert [members_of(r) for r in recs] == [{"msgpack": s.packed} for s in samples]
    for r in recs:
        assert raw[r.offset : r.offset + 14] == b"././@PaxHeader"  # the sample starts at its PAX header
        assert _reader.read_record(raw, str(path), r.offset, r.length).key == r.key
    assert sum(r.length for r in recs) == recs[-1].offset + recs[-1].length
    stream = list(_reader.iter_records_stream(io.BytesIO(raw), str(path)))
    assert [(r.key, r.offset, r.length) for r in stream] == [(r.key, r.offset, r.length) for r in recs]


# --------------------------------------------------------------------------------------------------
# shards written the original's way (webdataset.TarWriter, uuid1 keys, PAX headers)


def test_original_shards_decode_typed(wds_tar_factory: Callable[..., Path]) -> None:
    samples = _orig(6)
    keys = [str(uuid.uuid1(node=0, clock_seq=0)) for _ in samples]
    p0 = wds_tar_factory(
        "orig-000000.tar",
        [{"__key__": k, "msgpack": s.packed} for k, s in zip(keys[:4], samples[:4], strict=True)],
    )
    p1 = wds_tar_factory(
        "orig-000001.tar",
        [{"__key__": k, "msgpack": s.packed} for k, s in zip(keys[4:], samples[4:], strict=True)],
    )
    ds = atd.Dataset[OrigSample]([str(p0), str(p1)])
    got = list(ds)
    assert got == samples
    assert all(type(s) is OrigSample for s in got)
    assert len(ds) == 6
    assert ds.get(keys[5]) == samples[5]
    untyped = list(atd.Dataset(str(p0)))
    assert isinstance(untyped[0], atd.DictSample)
    np.testing.assert_array_equal(untyped[0].embedding, samples[0].embedding)
    assert untyped[0].embedding.dtype == np.float32


def test_original_shard_with_manifest_sidecars_ignored(
    wds_tar_factory: Callable[..., Path],
) -> None:
    samples = _orig(2)
    path = wds_tar_factory("train.tar", [{"__key__": f"k{i}", "msgpack": s.packed} for i, s in enumerate(samples)])
    (path.parent / "train.manifest.json").write_text(json.dumps({"bogus": True}))
    assert list(atd.Dataset[OrigSample](str(path))) == samples


def test_extra_keys_and_missing_optional_keys(wds_tar_factory: Callable[..., Path]) -> None:
    emb = np.ones(8, np.float32)
    newer = msgpack.packb(
        {
            "name": "n",
            "embedding": atd.array_to_bytes(emb),
            "label": 1,
            "note": "x",
            "added_later": {"a": 1},
        }
    )
    older = msgpack.packb({"name": "o", "embedding": atd.array_to_bytes(emb), "label": 2})
    path = wds_tar_factory("mixed.tar", [{"__key__": "a", "msgpack": newer}, {"__key__": "b", "msgpack": older}])
    got = list(atd.Dataset[OrigSample](str(path)))
    assert got == [
        OrigSample(name="n", embedding=emb, label=1, note="x"),
        OrigSample(name="o", embedding=emb, label=2, note=None),
    ]
    untyped = list(atd.Dataset(str(path)))
    assert untyped[0].added_later == {"a": 1}
    assert "note" not in untyped[1]


def test_mp_extension_is_msgpack(tar_factory: Callable[..., Path]) -> None:
    s = _orig(1)[0]
    path = tar_factory("mp.tar", [("k.mp", s.packed)])
    assert list(atd.Dataset[OrigSample](str(path))) == [s]


# --------------------------------------------------------------------------------------------------
# plain webdataset tars


def _plain_members(i: int) -> list[tuple[str, bytes]]:
    return [
        (f"x{i}.jpg", b"\xff\xd8\xff\xe0" + bytes([i])),
        (f"x{i}.cls", str(i + 3).encode()),
        (f"x{i}.json", json.dumps({"i": i, "tags": ["a", "b"]}).encode()),
        (f"x{i}.txt", f"caption {i} é".encode()),
        (f"x{i}.npy", npy(np.arange(6, dtype=np.int16).reshape(2, 3) + i)),
    ]


def _check_plain(got: list[atd.DictSample]) -> None:
    assert len(got) == 2
    for i, s in enumerate(got):
        assert isinstance(s, atd.DictSample)
        assert set(s.keys()) == {"jpg", "cls", "json", "txt", "npy"}
        assert s.cls == i + 3 and type(s.cls) is int
        assert s.json == {"i": i, "tags": ["a", "b"]}
        assert s.txt == f"caption {i} é"
        assert isinstance(s.npy, np.ndarray) and s.npy.dtype == np.int16 and s.npy.shape == (2, 3)
        np.testing.assert_array_equal(s.npy, np.arange(6, dtype=np.int16).reshape(2, 3) + i)
        assert s.jpg == b"\xff\xd8\xff\xe0" + bytes([i]) and isinstance(s.jpg, bytes)


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_plain_webdataset_tar_as_dict_samples(fmt: int, tar_factory: Callable[..., Path]) -> None:
    path = tar_factory("plain.tar", _plain_members(0) + _plain_members(1), fmt)
    _check_plain(list(atd.Dataset(str(path))))


def test_plain_tar_written_by_webdataset(wds_tar_factory: Callable[..., Path]) -> None:
    samples = [
        {
            "__key__": f"x{i}",
            "jpg": b"\xff\xd8\xff\xe0" + bytes([i]),
            "cls": i + 3,
            "json": {"i": i, "tags": ["a", "b"]},
            "txt": f"caption {i} é",
            "npy": np.arange(6, dtype=np.int16).reshape(2, 3) + i,
        }
        for i in range(2)
    ]
    path = wds_tar_factory("wplain.tar", samples)
    _check_plain(list(atd.Dataset(str(path))))


def test_conventional_layout(tar_factory: Callable[..., Path]) -> None:
    imgs = [np.full((2, 2), i, dtype=np.uint8) for i in range(3)]
    members = []
    for i, img in enumerate(imgs):
        members += [(f"k{i}.image.npy", npy(img)), (f"k{i}.label.cls", str(i).encode())]
    path = tar_factory("conv.tar", members, tarfile.GNU_FORMAT)
    untyped = list(atd.Dataset(str(path)))
    assert [sorted(s.keys()) for s in untyped] == [["image", "label"]] * 3
    for i, s in enumerate(untyped):
        np.testing.assert_array_equal(s.image, imgs[i])
        assert s.label == i
    typed = list(atd.Dataset[Conventional](str(path)))
    assert typed == [Conventional(image=img, label=i) for i, img in enumerate(imgs)]
    assert typed[0].image.dtype == np.uint8


def test_long_and_pax_named_samples(tar_factory: Callable[..., Path]) -> None:
    s = _orig(3)
    long_key = "deep/" * 25 + "k0"
    path = tar_factory(
        "names.tar",
        [
            (f"{long_key}.msgpack", s[0].packed),
            ("ustar-name.msgpack", s[1].packed),
            ("ü.msgpack", s[2].packed),
        ],
        tarfile.PAX_FORMAT,
        pax_headers={"ustar-name.msgpack": {"path": "pax-key.msgpack"}},
    )
    recs = list(_reader.iter_records(path.read_bytes(), str(path)))
    assert [r.key for r in recs] == [long_key, "pax-key", "ü"]
    assert list(atd.Dataset[OrigSample](str(path))) == s


def test_gnu_long_named_samples(tar_factory: Callable[..., Path]) -> None:
    s = _orig(2)
    keys = ["x" * 150, "y/" * 60 + "z"]
    path = tar_factory(
        "gnu.tar",
        [(f"{k}.msgpack", v.packed) for k, v in zip(keys, s, strict=True)],
        tarfile.GNU_FORMAT,
    )
    assert [r.key for r in _reader.iter_records(path.read_bytes(), str(path))] == keys
    assert list(atd.Dataset[OrigSample](str(path))) == s


def test_our_shards_have_same_records_as_webdataset_sees(tmp_path: Path, wds_read: Callable[[str], list[dict]]) -> None:
    samples = _orig(4)
    atd.write_samples(samples, tmp_path / "o.tar", progress=False)
    raw = (tmp_path / "o.tar").read_bytes()
    ours = [(r.key, members_of(r)) for r in _reader.iter_records(raw, "o.tar")]
    theirs = [
        (str(x["__key__"]), {k: v for k, v in x.items() if not k.startswith("__")})
        for x in wds_read(str(tmp_path / "o.tar"))
    ]
    assert ours == theirs
