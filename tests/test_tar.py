"""The tar walker (``_tar``) against Python's ``tarfile`` and ``webdataset``."""

from __future__ import annotations

import io
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

import atdata_torch as atd
from atdata_torch import _tar, _tarheader, _tarwrite

HYP = settings(max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@atd.packable
class TarSample:
    name: str
    embedding: NDArray
    label: int


def _samples(n: int) -> list[TarSample]:
    return [TarSample(name=f"item-{i:02d}", embedding=np.arange(8, dtype=np.float32) + i, label=i) for i in range(n)]


def walk(raw: bytes, shard: str = "t.tar") -> list[tuple[str, bytes]]:
    return [(m.name, raw[m.data_offset : m.data_offset + m.size]) for m in _tar.iter_members(raw, shard)]


def walk_stream(raw: bytes, shard: str = "t.tar") -> list[tuple[str, bytes]]:
    return [(m.name, data) for m, data in _tar.read_member_stream(io.BytesIO(raw), shard)]


def tarfile_regular(path: Path | bytes) -> list[tuple[str, bytes]]:
    src = {"fileobj": io.BytesIO(path)} if isinstance(path, bytes) else {"name": path}
    with tarfile.open(**src) as tf:
        out = []
        for m in tf.getmembers():
            if m.isreg():
                ef = tf.extractfile(m)
                assert ef is not None
                out.append((m.name, ef.read()))
        return out


# --------------------------------------------------------------------------------------------------
# shards we write


def test_our_shards_read_by_tarfile(tmp_path: Path) -> None:
    samples = _samples(7)
    ds = atd.write_samples(samples, tmp_path / "ours.tar", progress=False)
    (shard,) = ds.list_shards()
    with tarfile.open(shard) as tf:
        members = tf.getmembers()
        assert [m.name for m in members] == [f"{i:08d}.msgpack" for i in range(7)]
        for m, s in zip(members, samples, strict=True):
            assert m.isreg() and m.type == tarfile.REGTYPE
            assert m.pax_headers == {}
            assert m.mtime == 0 and isinstance(m.mtime, int)
            ef = tf.extractfile(m)
            assert ef is not None and ef.read() == s.packed
    raw = Path(shard).read_bytes()
    assert walk(raw) == tarfile_regular(Path(shard))
    assert walk_stream(raw) == walk(raw)
    assert b"PaxHeader" not in raw
    assert len(raw) % 10240 == 0


def test_our_shards_read_by_webdataset(tmp_path: Path, wds_read: Callable[[str], list[dict]]) -> None:
    samples = _samples(5)
    ds = atd.write_samples(samples, tmp_path / "w.tar", maxcount=2, progress=False)
    assert len(ds.list_shards()) == 3
    got = [item for shard in ds.list_shards() for item in wds_read(shard)]
    assert [g["__key__"] for g in got] == [f"{i:08d}" for i in range(5)]
    for g, s in zip(got, samples, strict=True):
        assert set(g) >= {"__key__", "msgpack"}
        assert g["msgpack"] == s.packed
        assert TarSample.from_bytes(g["msgpack"]) == s


def test_our_shards_read_by_webdataset_brace_url(tmp_path: Path, wds_read: Callable[[str], list[dict]]) -> None:
    samples = _samples(6)
    atd.write_samples(samples, tmp_path / "b.tar", maxcount=3, progress=False)
    got = [g["msgpack"] for g in wds_read(str(tmp_path / "b-{000000..000001}.tar"))]
    assert got == [s.packed for s in samples]


def test_ustar_header_parsed_by_tarfile() -> None:
    hdr = _tarwrite.ustar_header("abc.msgpack", 1234, mtime=77)
    assert len(hdr) == 512
    info = tarfile.TarInfo.frombuf(hdr, "utf-8", "surrogateescape")
    assert info.name == "abc.msgpack" and info.size == 1234 and info.mtime == 77 and info.isreg()
    assert hdr[257:265] == b"ustar\x0000"


def test_ustar_header_long_name_uses_prefix() -> None:
    name = "d" * 120 + "/" + "k" * 90 + ".msgpack"
    data = b"payload"
    raw = _tarwrite.member_bytes(name, data) + _tarwrite.end_of_archive(512 + 512)
    assert len(raw) % 10240 == 0
    assert tarfile_regular(raw) == [(name, data)]
    assert walk(raw) == [(name, data)]


def test_ustar_header_too_long_raises() -> None:
    with pytest.raises(ValueError):
        _tarwrite.ustar_header("x" * 101 + ".msgpack", 1)  # no '/' to split at
    with pytest.raises(ValueError):
        _tarwrite.ustar_header("a/" + "x" * 120, 1)  # basename > 100


def test_member_bytes_padding_and_end_of_archive() -> None:
    for n in (0, 1, 511, 512, 513, 5000):
        mb = _tarwrite.member_bytes("k.bin", b"x" * n)
        assert len(mb) == 512 + ((n + 511) // 512) * 512
    for pos in (0, 512, 9216, 10240, 12345 - 12345 % 512):
        end = _tarwrite.end_of_archive(pos)
        assert (pos + len(end)) % 10240 == 0
        assert len(end) >= 1024 and set(end) <= {0}


# --------------------------------------------------------------------------------------------------
# tars written by tarfile in every format


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tarfile_formats(fmt: int, tar_factory: Callable[..., Path]) -> None:
    members = [
        ("a.txt", b"hello"),
        ("b.bin", bytes(range(256)) * 3),
        ("dir/c.msgpack", b""),
        ("d" * 40 + "/" + "e" * 50 + ".cls", b"7"),
    ]
    path = tar_factory("f.tar", members, fmt)
    raw = path.read_bytes()
    assert walk(raw) == tarfile_regular(path) == members
    assert walk_stream(raw) == members


def test_gnu_long_names(tar_factory: Callable[..., Path]) -> None:
    long1 = "sample_" + "x" * 150 + ".image.npy"
    long2 = "nested/" * 30 + "k0.label.cls"
    members = [(long1, b"abc"), (long2, b"3"), ("short.txt", b"s")]
    path = tar_factory("gnu.tar", members, tarfile.GNU_FORMAT)
    raw = path.read_bytes()
    assert b"././@LongLink" in raw  # GNU 'L' headers were written
    assert any(raw[off + 156 : off + 157] == b"L" for off in range(0, len(raw), 512))
    assert walk(raw) == tarfile_regular(path) == members
    assert walk_stream(raw) == members
    # the header offset of a long-named member is the offset of its 'L' header
    first = next(_tar.iter_members(raw, "gnu.tar"))
    assert first.header_offset == 0 and raw[156:157] == b"L"


def test_pax_long_and_unicode_names(tar_factory: Callable[..., Path]) -> None:
    members = [("p" * 130 + ".txt", b"long"), ("ünïcödé.txt", "é".encode()), ("plain.txt", b"p")]
    path = tar_factory("pax.tar", members, tarfile.PAX_FORMAT)
    raw = path.read_bytes()
    assert any(raw[off + 156 : off + 157] == b"x" for off in range(0, len(raw), 512))
    assert walk(raw) == tarfile_regular(path) == members
    assert walk_stream(raw) == members


def test_pax_path_overrides_ustar_name(tar_factory: Callable[..., Path]) -> None:
    path = tar_factory(
        "override.tar",
        [("ustar-name.txt", b"data"), ("second.txt", b"two")],
        tarfile.PAX_FORMAT,
        pax_headers={"ustar-name.txt": {"path": "real/pax-name.txt"}},
    )
    raw = path.read_bytes()
    assert b"ustar-name.txt" in raw  # the ustar field holds the other name
    expected = [("real/pax-name.txt", b"data"), ("second.txt", b"two")]
    assert tarfile_regular(path) == expected
    assert walk(raw) == expected
    assert walk_stream(raw) == expected


def _fix_checksum(raw: bytearray, off: int) -> None:
    hdr = raw[off : off + 512]
    hdr[148:156] = b" " * 8
    raw[off + 148 : off + 156] = b"%06o\0 " % sum(hdr)


def test_pax_size_overrides_ustar_size(tar_factory: Callable[..., Path]) -> None:
    data = b"z" * 700
    path = tar_factory(
        "size.tar",
        [("big.bin", data), ("next.txt", b"n")],
        tarfile.PAX_FORMAT,
        pax_headers={"big.bin": {"size": str(len(data))}},
    )
    raw = bytearray(path.read_bytes())
    # Find the real header of big.bin (after its PAX header) and zero its ustar size field.
    offs = [m.header_offset for m in _tar.iter_members(bytes(raw), "size.tar")]
    assert raw[offs[0] + 156 : offs[0] + 157] == b"x"
    pax_size = int(raw[offs[0] + 124 : offs[0] + 136].strip(b"\0 "), 8)
    real = offs[0] + 512 + ((pax_size + 511) // 512) * 512
    assert raw[real : real + 7] == b"big.bin"
    raw[real + 124 : real + 136] = b"00000000000\0"
    _fix_checksum(raw, real)
    expected = [("big.bin", data), ("next.txt", b"n")]
    assert tarfile_regular(bytes(raw)) == expected
    assert walk(bytes(raw)) == expected
    assert walk_stream(bytes(raw)) == expected


def test_global_pax_header_skipped(tar_factory: Callable[..., Path]) -> None:
    members = [("a.txt", b"1"), ("b.txt", b"22")]
    path = tar_factory("g.tar", members, tarfile.PAX_FORMAT, global_pax={"comment": "hello"})
    raw = path.read_bytes()
    assert raw[156:157] == b"g"
    assert walk(raw) == tarfile_regular(path) == members
    assert walk_stream(raw) == members


def test_directories_and_extensionless_links_are_not_members(tmp_path: Path) -> None:
    path = tmp_path / "mixed.tar"
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        d = tarfile.TarInfo("dir")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        f = tarfile.TarInfo("dir/a.txt")
        f.size = 3
        tf.addfile(f, io.BytesIO(b"abc"))
        ln = tarfile.TarInfo("dir/LINK")  # no extension: it could belong to no sample
        ln.type = tarfile.SYMTYPE
        ln.linkname = "a.txt"
        tf.addfile(ln)
        g = tarfile.TarInfo("dir/b.txt")
        g.size = 1
        tf.addfile(g, io.BytesIO(b"b"))
    raw = path.read_bytes()
    assert walk(raw) == walk_stream(raw) == tarfile_regular(path) == [("dir/a.txt", b"abc"), ("dir/b.txt", b"b")]


def test_old_v7_style_typeflag_nul(tmp_path: Path) -> None:
    # typeflag '\0' (pre-POSIX regular file) is a regular member too
    hdr = bytearray(_tarwrite.ustar_header("old.txt", 2))
    hdr[156:157] = b"\0"
    _fix_checksum(hdr, 0)
    raw = bytes(hdr) + b"hi" + bytes(510) + _tarwrite.end_of_archive(1024)
    assert walk(raw) == tarfile_regular(raw) == [("old.txt", b"hi")]


# --------------------------------------------------------------------------------------------------
# tars written by webdataset.TarWriter (the original atdata's writer): PAX headers, float mtime


def test_webdataset_tarwriter_pax_members(wds_tar_factory: Callable[..., Path]) -> None:
    samples = _samples(4)
    keys = [str(uuid.uuid1(node=0, clock_seq=0)) for _ in samples]
    path = wds_tar_factory(
        "orig.tar",
        [{"__key__": k, "msgpack": s.packed} for k, s in zip(keys, samples, strict=True)],
    )
    raw = path.read_bytes()
    assert raw[:14] == b"././@PaxHeader" and raw[156:157] == b"x"
    with tarfile.open(path) as tf:
        assert all("mtime" in m.pax_headers for m in tf.getmembers())
    members = list(_tar.iter_members(raw, "orig.tar"))
    assert [m.name for m in members] == [f"{k}.msgpack" for k in keys]
    assert walk(raw) == tarfile_regular(path)
    assert [d for _, d in walk(raw)] == [s.packed for s in samples]
    assert walk_stream(raw) == walk(raw)
    # each member's header offset is that of its PAX header, which precedes the real header
    for m in members:
        assert raw[m.header_offset + 156 : m.header_offset + 157] == b"x"
        assert raw[m.data_offset - 512 + 156 : m.data_offset - 512 + 157] == b"0"
    assert len(raw) % 10240 == 0


# --------------------------------------------------------------------------------------------------
# property: our walker agrees with tarfile


name_segment = st.from_regex(r"\A[a-z0-9_][a-z0-9_.-]{0,20}\Z")
names = st.lists(name_segment, min_size=1, max_size=8).map("/".join)


@HYP
@given(
    st.lists(st.tuples(names, st.binary(max_size=1500)), min_size=0, max_size=6, unique_by=lambda t: t[0]),
    st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]),
)
def test_walker_agrees_with_tarfile(members: list[tuple[str, bytes]], fmt: int) -> None:
    buf = io.BytesIO()
    try:
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    except ValueError:
        return  # USTAR cannot hold this name; nothing to compare
    raw = buf.getvalue()
    expected = tarfile_regular(raw)
    assert expected == members
    assert walk(raw) == expected
    assert walk_stream(raw) == expected


@HYP
@given(st.lists(st.binary(max_size=2000), min_size=1, max_size=6))
def test_our_writer_agrees_with_tarfile(payloads: list[bytes]) -> None:
    parts = []
    pos = 0
    for i, p in enumerate(payloads):
        mb = _tarwrite.member_bytes(f"{i:04d}.bin", p)
        parts.append(mb)
        pos += len(mb)
    parts.append(_tarwrite.end_of_archive(pos))
    raw = b"".join(parts)
    assert len(raw) % 10240 == 0
    expected = [(f"{i:04d}.bin", p) for i, p in enumerate(payloads)]
    assert tarfile_regular(raw) == expected
    assert walk(raw) == expected


# ------------------------------------------------------------------------------------ hardening (issue 15)
def _pax_member(records: bytes, name: str = "k0.txt", data: bytes = b"abc") -> bytes:
    """A PAX header with ``records`` (no record is length-checked here), then a regular member."""
    pax = bytearray(_tarwrite.ustar_header("././@PaxHeader", len(records)))
    pax[156:157] = b"x"
    _fix_checksum(pax, 0)
    return bytes(pax) + records + bytes((-len(records)) % 512) + _tarwrite.member_bytes(name, data)


def _both_walkers(raw: bytes) -> list[Callable[[], object]]:
    return [lambda: walk(raw), lambda: walk_stream(raw)]


@pytest.mark.parametrize(
    "records",
    [b"16 size=-99999\n", b"11 size=-1\n", b"12 size=+10\n", b"13 size= 100\n", b"99 path=x\n", b"5 a\n", b"x"],
    ids=["negative", "minus-one", "plus", "space", "overlong", "no-eq", "junk"],
)
def test_a_bad_pax_record_raises_and_never_loops(records: bytes) -> None:
    raw = _tarwrite.member_bytes("a.txt", b"1") + _pax_member(records) + _tarwrite.end_of_archive(0)
    for run in _both_walkers(raw):
        with pytest.raises(atd.ShardFormatError, match="PAX") as info:
            run()
        assert info.value.shard == "t.tar" and info.value.offset == 1024


def test_a_pax_path_that_is_not_utf8_raises() -> None:
    raw = _pax_member(b"17 path=k\xff\xfe0.txt\n") + _tarwrite.end_of_archive(0)
    for run in _both_walkers(raw):
        with pytest.raises(atd.ShardFormatError, match="not UTF-8"):
            run()


def test_a_negative_octal_size_raises() -> None:
    hdr = bytearray(_tarwrite.ustar_header("k.txt", 0))
    hdr[124:136] = b"-0000001000\0"
    _fix_checksum(hdr, 0)
    raw = bytes(hdr) + _tarwrite.end_of_archive(512)
    for run in _both_walkers(raw):
        with pytest.raises(atd.ShardFormatError, match="invalid size"):
            run()


@pytest.mark.parametrize("flag", [b"1", b"2", b"3", b"4", b"6", b"S", b"Z"])
def test_a_non_regular_sample_member_raises(flag: bytes) -> None:
    hdr = bytearray(_tarwrite.ustar_header("k1.txt", 0))
    hdr[156:157] = flag
    _fix_checksum(hdr, 0)
    raw = _tarwrite.member_bytes("k0.txt", b"a") + bytes(hdr) + _tarwrite.member_bytes("k2.txt", b"c")
    raw += _tarwrite.end_of_archive(len(raw))
    for run in _both_walkers(raw):
        with pytest.raises(atd.ShardFormatError, match="not a regular file") as info:
            run()
        assert info.value.key == "k1" and info.value.offset == 1024


def test_a_directory_with_data_raises_and_an_empty_one_is_passed_over() -> None:
    d = bytearray(_tarwrite.ustar_header("dir/", 0))
    d[156:157] = b"5"
    _fix_checksum(d, 0)
    raw = bytes(d) + _tarwrite.member_bytes("dir/k0.txt", b"a")
    assert walk(raw + _tarwrite.end_of_archive(len(raw))) == [("dir/k0.txt", b"a")]
    d[124:136] = b"%011o\0" % 3
    _fix_checksum(d, 0)
    raw = bytes(d) + b"abc" + bytes(509) + _tarwrite.member_bytes("dir/k0.txt", b"a")
    with pytest.raises(atd.ShardFormatError, match="directory"):
        walk(raw + _tarwrite.end_of_archive(len(raw)))


def test_data_after_the_end_of_archive_marker_raises_padding_does_not() -> None:
    first = _tarwrite.member_bytes("k0.txt", b"a")
    raw = first + bytes(512) + _tarwrite.member_bytes("k1.txt", b"b") + _tarwrite.end_of_archive(2048)
    for run in _both_walkers(raw):
        with pytest.raises(atd.ShardFormatError, match="end-of-archive marker") as info:
            run()
        assert info.value.offset == 1024
    padded = first + _tarwrite.end_of_archive(len(first)) + bytes(10240)
    assert walk(padded) == walk_stream(padded) == [("k0.txt", b"a")]
    # scan(salvage=) keeps the intact samples before the damage and reports it
    errors: list[atd.ShardFormatError] = []
    from atdata_torch._sidecar import scan

    assert scan(raw, "t.tar", salvage=errors).keys == ["k0"] and len(errors) == 1


def test_verify_headers_raises_no_foreign_exception() -> None:
    raw = _tarwrite.member_bytes("k0.txt", b"a") + _tarwrite.end_of_archive(1024)
    for offs, sizes in [([2**70], [1]), ([-512], [1]), ([0], [-1]), ([0], [2**62]), ([0], [2])]:
        with pytest.raises(atd.ShardFormatError):
            _tarheader.verify_headers(raw, offs, sizes, "t.tar")
