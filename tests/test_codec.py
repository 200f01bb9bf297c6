"""The wire codec: ndarray-bytes, msgpack payloads, and round trips over generated schemas."""

from __future__ import annotations

import dataclasses
import io
import keyword
import struct
import tempfile
from pathlib import Path
from typing import Any, Optional

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray

import atdata_torch as atd
from atdata_torch import _codec

HYP = settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# The dtypes format.md lists, every fixed-size integer / float / complex, and big-endian variants.
FORMAT_DTYPES = ["<f4", "<f2", "<f8", "<i8", "|u1", "|b1", ">i2", "<c8", "<c16", "<U2", "<M8[D]"]
INT_DTYPES = ["|i1", "<i2", "<i4", "<i8", "|u1", "<u2", "<u4", "<u8", "|b1"]
BIG_ENDIAN = [
    ">i2",
    ">i4",
    ">i8",
    ">u2",
    ">u4",
    ">u8",
    ">f2",
    ">f4",
    ">f8",
    ">c8",
    ">c16",
    ">U2",
    ">M8[D]",
]
ALL_DTYPES = sorted(set(FORMAT_DTYPES + INT_DTYPES + BIG_ENDIAN))

dtypes = st.sampled_from(ALL_DTYPES).map(np.dtype)
shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)
any_arrays = hnp.arrays(dtype=dtypes, shape=shapes)


# --------------------------------------------------------------------------------------------------
# an independent reference encoder (what the original atdata writes)


def ref_array_bytes(x: np.ndarray) -> bytes:
    """ndarray-bytes 1.0.0 as format.md describes it, written independently of the library."""
    ds = x.dtype.str.encode("ascii")
    shape = b"".join(int(s).to_bytes(8, "little", signed=True) for s in x.shape)
    return bytes([len(ds)]) + ds + bytes([x.ndim]) + shape + x.tobytes(order="C")


def ref_value(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return ref_array_bytes(v)
    if isinstance(v, np.generic):
        return v.item()
    return v


def ref_packb(sample: Any) -> bytes:
    """``msgpack.packb({field: value})`` in dataclass field order, as the original builds it."""
    return msgpack.packb({f.name: ref_value(getattr(sample, f.name)) for f in dataclasses.fields(sample)})


def same(a: Any, b: Any) -> bool:
    """Strict equality of an original value ``a`` and its decoded form ``b``.

    Arrays: same dtype string (byte order included), shape and bytes; other values: same type.
    """
    if isinstance(a, np.ndarray):
        return (
            isinstance(b, np.ndarray)
            and a.dtype.str == b.dtype.str
            and a.shape == b.shape
            and a.tobytes() == b.tobytes()
        )
    if isinstance(a, np.generic):
        return same(a.item(), b)
    if isinstance(a, (list, tuple)):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def assert_array_roundtrip(x: np.ndarray) -> None:
    enc = atd.array_to_bytes(x)
    assert enc == ref_array_bytes(x)
    y = atd.bytes_to_array(enc)
    assert y.dtype.str == x.dtype.str
    assert y.dtype.byteorder == x.dtype.byteorder
    assert y.shape == x.shape
    assert y.tobytes() == x.tobytes()
    if x.dtype.kind in "fc":
        assert np.array_equal(x, y, equal_nan=True)
    elif x.dtype.kind != "M":  # NaT compares unequal to itself; the bytes check above covers it
        assert np.array_equal(x, y)
    assert y.flags.writeable


# --------------------------------------------------------------------------------------------------
# ndarray-bytes


@HYP
@given(any_arrays)
def test_ndarray_bytes_roundtrip_all_dtypes(x: np.ndarray) -> None:
    assert_array_roundtrip(x)


@pytest.mark.parametrize("dt", ALL_DTYPES)
def test_ndarray_bytes_each_dtype_keeps_dtype_str(dt: str) -> None:
    x = np.zeros((2, 3), dtype=dt)
    enc = atd.array_to_bytes(x)
    assert enc[0] == len(dt)
    assert enc[1 : 1 + len(dt)] == dt.encode()
    assert_array_roundtrip(x)


@pytest.mark.parametrize("dt", ALL_DTYPES)
def test_zero_d_arrays(dt: str) -> None:
    x = np.zeros((), dtype=dt)
    enc = atd.array_to_bytes(x)
    dlen = enc[0]
    assert enc[1 + dlen] == 0  # ndim 0, no shape entries
    assert len(enc) == 2 + dlen + x.dtype.itemsize
    y = atd.bytes_to_array(enc)
    assert y.shape == () and y.ndim == 0 and y.dtype.str == dt


@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 4, 2), (2, 3, 0, 1)])
@pytest.mark.parametrize("dt", ["<f4", ">i2", "<U2", "<M8[D]", "|b1"])
def test_empty_arrays(shape: tuple[int, ...], dt: str) -> None:
    x = np.zeros(shape, dtype=dt)
    enc = atd.array_to_bytes(x)
    dlen = enc[0]
    assert len(enc) == 2 + dlen + 8 * len(shape)
    y = atd.bytes_to_array(enc)
    assert y.shape == shape and y.dtype.str == dt and y.size == 0


@st.composite
def non_contiguous(draw: st.DrawFn) -> np.ndarray:
    base = draw(hnp.arrays(dtype=dtypes, shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6)))
    how = draw(st.sampled_from(["step", "transpose", "fortran", "reverse", "step_all"]))
    if how == "step":
        step = draw(st.integers(2, 3))
        return base[::step]
    if how == "transpose":
        return base.T
    if how == "fortran":
        return np.asfortranarray(base)
    if how == "reverse":
        return base[..., ::-1]
    return base[tuple(slice(None, None, 2) for _ in range(base.ndim))]


@HYP
@given(non_contiguous())
def test_non_contiguous_arrays_written_in_c_order(x: np.ndarray) -> None:
    enc = atd.array_to_bytes(x)
    assert enc == atd.array_to_bytes(np.ascontiguousarray(x))
    assert_array_roundtrip(x)


def test_fortran_and_strided_arrays_explicitly() -> None:
    base = np.arange(24, dtype=">i4").reshape(4, 6)
    for x in (base.T, np.asfortranarray(base), base[::2, 1::3], base[:, ::-1]):
        assert not x.flags.c_contiguous
        y = atd.bytes_to_array(atd.array_to_bytes(x))
        assert y.dtype.str == ">i4"
        np.testing.assert_array_equal(y, x)
        assert y.flags.c_contiguous


def test_header_bytes_match_format_example() -> None:
    x = np.linspace(0, 1, 8, dtype=np.float32)
    enc = atd.array_to_bytes(x)
    assert enc[:13] == bytes.fromhex("03 3c 66 34 01 08 00 00 00 00 00 00 00")
    assert len(enc) == 45
    assert enc[13:] == x.tobytes()


def test_header_multi_dim_big_endian() -> None:
    x = np.arange(6, dtype=">i2").reshape(2, 3)
    enc = atd.array_to_bytes(x)
    assert enc[:4] == b"\x03>i2"
    assert enc[4] == 2
    assert struct.unpack_from("<2q", enc, 5) == (2, 3)
    assert enc[21:] == b"\x00\x00\x00\x01\x00\x02\x00\x03\x00\x04\x00\x05"  # big-endian data kept


def test_uint8_doc_example() -> None:
    assert atd.array_to_bytes(np.zeros(2, np.uint8)).hex() == "037c75310102000000000000000000"


def test_packed_sample_matches_format_example() -> None:
    @atd.packable
    class MixedSample:
        name: str
        embedding: NDArray
        label: int
        score: float
        tags: list[str]
        raw: bytes
        flag: bool

    emb = np.linspace(0.3, 1.0, 8, dtype=np.float32)
    s = MixedSample(name="item-00", embedding=emb, label=3, score=0.5, tags=["a"], raw=b"x", flag=True)
    p = s.packed
    expected_prefix = (
        bytes.fromhex("87")
        + bytes.fromhex("a4")
        + b"name"
        + bytes.fromhex("a7")
        + b"item-00"
        + bytes.fromhex("a9")
        + b"embedding"
        + bytes.fromhex("c4 2d")
        + bytes.fromhex("03 3c 66 34 01 08 00 00 00 00 00 00 00")
    )
    assert p.startswith(expected_prefix)
    assert p[len(expected_prefix) : len(expected_prefix) + 32] == emb.tobytes()
    assert p == ref_packb(s)


# --------------------------------------------------------------------------------------------------
# legacy .npy and refused object arrays


@HYP
@given(
    hnp.arrays(
        dtype=st.sampled_from(["<f4", ">i2", "|u1", "<c16", "|b1", "<U2", "<i8"]).map(np.dtype),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
    )
)
def test_legacy_npy_payload_accepted(x: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, x)
    raw = buf.getvalue()
    assert raw.startswith(b"\x93NUMPY")
    y = atd.bytes_to_array(raw)
    assert y.dtype.str == x.dtype.str and y.shape == x.shape and y.tobytes() == x.tobytes()


def test_legacy_npy_inside_a_sample_payload() -> None:
    @atd.packable
    class Old:
        image: NDArray
        label: int

    img = np.arange(12, dtype=np.uint16).reshape(3, 4)
    buf = io.BytesIO()
    np.save(buf, img)
    payload = msgpack.packb({"image": buf.getvalue(), "label": 4})
    s = Old.from_bytes(payload)
    assert s.image.dtype == np.uint16 and s.image.shape == (3, 4)
    np.testing.assert_array_equal(s.image, img)
    d = atd.DictSample.from_bytes(payload)
    assert isinstance(d["image"], np.ndarray)
    np.testing.assert_array_equal(d["image"], img)


def test_fortran_npy_payload_accepted() -> None:
    x = np.asfortranarray(np.arange(6, dtype="<f8").reshape(2, 3))
    buf = io.BytesIO()
    np.save(buf, x)
    y = atd.bytes_to_array(buf.getvalue())
    np.testing.assert_array_equal(y, x)


def test_pickled_npy_refused() -> None:
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(atd.DecodeError):
        atd.bytes_to_array(buf.getvalue())


def test_object_arrays_refused_on_encode() -> None:
    with pytest.raises(atd.SchemaError, match="object"):
        atd.array_to_bytes(np.array([1, "a"], dtype=object))


def test_object_dtype_refused_on_decode() -> None:
    # A hand-made ndarray-bytes value naming the object dtype '|O' with 8 bytes of "data".
    raw = b"\x02|O" + b"\x01" + struct.pack("<q", 1) + bytes(8)
    with pytest.raises(atd.DecodeError, match="object"):
        atd.bytes_to_array(raw)


def test_structured_dtype_refused() -> None:
    x = np.zeros(3, dtype=[("a", "<i4"), ("b", "<f4")])
    with pytest.raises(atd.SchemaError):
        atd.array_to_bytes(x)


def test_decoded_from_readonly_buffer_is_writable() -> None:
    enc = atd.array_to_bytes(np.arange(4, dtype=np.int32))
    y = atd.bytes_to_array(memoryview(enc))
    assert y.flags.writeable
    y[0] = 99  # must not raise


# --------------------------------------------------------------------------------------------------
# msgpack payloads are byte-identical to the original's


@atd.packable
class Fixed:
    zeta: str
    arr: NDArray
    alpha: int
    mid: float
    blob: bytes
    opt: NDArray | None
    tags: list[int]
    meta: dict | None = None


fixed_samples = st.builds(
    Fixed,
    zeta=st.text(max_size=20),
    arr=any_arrays,
    alpha=st.integers(-(2**63), 2**64 - 1),
    mid=st.floats(allow_nan=False),
    blob=st.binary(max_size=30),
    opt=st.none() | any_arrays,
    tags=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=5),
    meta=st.none()
    | st.dictionaries(st.text(max_size=5), st.integers(-(2**63), 2**64 - 1) | st.text(max_size=5), max_size=3),
)


@HYP
@given(fixed_samples)
def test_packed_is_byte_identical_to_reference(s: Fixed) -> None:
    assert s.packed == ref_packb(s)


def test_field_order_is_dataclass_order() -> None:
    s = Fixed(zeta="z", arr=np.zeros(1), alpha=1, mid=1.0, blob=b"", opt=None, tags=[])
    assert list(msgpack.unpackb(s.packed)) == [
        "zeta",
        "arr",
        "alpha",
        "mid",
        "blob",
        "opt",
        "tags",
        "meta",
    ]


def test_numpy_scalars_written_via_item() -> None:
    a = Fixed(
        zeta="z",
        arr=np.zeros(1),
        alpha=np.int64(7),
        mid=np.float32(0.1),
        blob=b"",
        opt=None,
        tags=[],
    )
    b = Fixed(zeta="z", arr=np.zeros(1), alpha=7, mid=float(np.float32(0.1)), blob=b"", opt=None, tags=[])
    assert a.packed == b.packed == ref_packb(a)
    d = msgpack.unpackb(a.packed)
    assert type(d["alpha"]) is int and d["alpha"] == 7
    assert type(d["mid"]) is float and d["mid"] == float(np.float32(0.1))


def test_float_is_float64_and_int_smallest_encoding() -> None:
    @atd.packable
    class N:
        i: int
        f: float

    p = N(i=5, f=1.5).packed
    assert p == b"\x82\xa1i\x05\xa1f\xcb" + struct.pack(">d", 1.5)


def test_tuple_reads_back_as_list() -> None:
    @atd.packable
    class T:
        xs: tuple[int, ...]

    s = T(xs=(1, 2, 3))
    back = T.from_bytes(s.packed)
    assert back.xs == [1, 2, 3]
    assert s.packed == msgpack.packb({"xs": [1, 2, 3]})


def test_dict_sample_packed_matches_reference() -> None:
    x = np.arange(5, dtype=">f8")
    d = atd.DictSample({"b": x, "a": 3, "s": np.int16(2)})
    assert d.packed == msgpack.packb({"b": ref_array_bytes(x), "a": 3, "s": 2})


# --------------------------------------------------------------------------------------------------
# round trips over generated schemas

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
nested = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=8,
)
small_arrays = hnp.arrays(dtype=dtypes, shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
i64 = st.integers(-(2**63), 2**64 - 1)


def _f32_any_order(draw_order: str) -> Any:
    return hnp.arrays(
        dtype=np.dtype(draw_order + "f4"),
        shape=hnp.array_shapes(min_dims=1, max_dims=2, max_side=4),
    )


# kind -> (annotation, value strategy)
FIELD_KINDS: dict[str, tuple[Any, st.SearchStrategy[Any]]] = {
    "ndarray": (NDArray, small_arrays),
    "np.ndarray": (np.ndarray, small_arrays),
    "ndarray_u8": (
        NDArray[np.uint8],
        hnp.arrays(np.uint8, hnp.array_shapes(min_dims=0, max_dims=3)),
    ),
    "ndarray_f32": (NDArray[np.float32], _f32_any_order("<") | _f32_any_order(">")),
    "opt_ndarray": (NDArray | None, st.none() | small_arrays),
    "optional_ndarray": (Optional[NDArray], st.none() | small_arrays),  # noqa: UP045
    "str": (str, st.text(max_size=20)),
    "int": (int, i64),
    "np_int": (int, st.integers(-(2**63), 2**63 - 1).map(np.int64)),
    "float": (float, st.floats(allow_nan=False)),
    "np_float": (float, st.floats(allow_nan=False, width=32).map(np.float32)),
    "bool": (bool, st.booleans()),
    "bytes": (bytes, st.binary(max_size=30)),
    "opt_str": (str | None, st.none() | st.text(max_size=5)),
    "opt_int": (Optional[int], st.none() | i64),  # noqa: UP045
    "list_int": (list[int], st.lists(i64, max_size=5)),
    "list_str": (list[str], st.lists(st.text(max_size=5), max_size=5)),
    "list_float": (list[float], st.lists(st.floats(allow_nan=False), max_size=5)),
    "list_list": (list[list[int]], st.lists(st.lists(i64, max_size=3), max_size=3)),
    "list": (list, st.lists(nested, max_size=4)),
    "tuple": (tuple[int, ...], st.lists(i64, max_size=4).map(tuple)),
    "dict": (dict, st.dictionaries(st.text(max_size=5), nested, max_size=4)),
    "opt_dict": (dict | None, st.none() | st.dictionaries(st.text(max_size=5), nested, max_size=3)),
    "dict_str_int": (dict[str, int], st.dictionaries(st.text(max_size=5), i64, max_size=3)),
    "any": (Any, nested),
}

_RESERVED = set(dir(atd.PackableSample)) | {"self", "cls"}
field_names = st.from_regex(r"\A[a-z][a-z0-9_]{0,10}\Z").filter(
    lambda n: not keyword.iskeyword(n) and n not in _RESERVED
)


@st.composite
def generated_schema(draw: st.DrawFn) -> tuple[type, list[str], list[dict[str, Any]]]:
    names = draw(st.lists(field_names, min_size=1, max_size=7, unique=True))
    kinds = [draw(st.sampled_from(sorted(FIELD_KINDS))) for _ in names]
    annotations = {n: FIELD_KINDS[k][0] for n, k in zip(names, kinds, strict=True)}
    cls_name = draw(st.from_regex(r"\A[A-Z][A-Za-z0-9]{0,10}\Z"))
    cls = atd.packable(type(cls_name, (), {"__annotations__": annotations}))
    n_samples = draw(st.integers(1, 6))
    rows = [{n: draw(FIELD_KINDS[k][1]) for n, k in zip(names, kinds, strict=True)} for _ in range(n_samples)]
    return cls, kinds, rows


def _check_generated(cls: type, original: Any, back: Any) -> None:
    assert type(back) is cls
    assert back == original
    for f in dataclasses.fields(cls):
        assert same(getattr(original, f.name), getattr(back, f.name)), f.name


@HYP
@given(generated_schema())
def test_generated_schema_bytes_roundtrip(
    schema: tuple[type, list[str], list[dict[str, Any]]],
) -> None:
    cls, _kinds, rows = schema
    assert [f.name for f in cls.fields_spec()] == list(rows[0])
    for row in rows:
        s = cls(**row)
        assert s.packed == ref_packb(s)
        _check_generated(cls, s, cls.from_bytes(s.packed))


@HYP
@given(generated_schema(), st.integers(1, 4))
def test_generated_schema_shard_roundtrip(schema: tuple[type, list[str], list[dict[str, Any]]], maxcount: int) -> None:
    cls, _kinds, rows = schema
    samples = [cls(**row) for row in rows]
    with tempfile.TemporaryDirectory() as d:
        ds = atd.write_samples(samples, Path(d) / "gen.tar", maxcount=maxcount, progress=False)
        assert len(ds.list_shards()) == -(-len(samples) // maxcount)
        back = list(ds.ordered())
        assert len(back) == len(samples)
        for a, b in zip(samples, back, strict=True):
            _check_generated(cls, a, b)
        typed = atd.Dataset[cls](ds.list_shards())
        assert list(typed.ordered()) == samples


def test_generated_class_field_specs() -> None:
    for kind, (ann, _) in FIELD_KINDS.items():
        cls = atd.packable(type("K", (), {"__annotations__": {"v": ann}}))
        (spec,) = cls.fields_spec()
        expected = {
            "ndarray": "ndarray",
            "np.ndarray": "ndarray",
            "ndarray_u8": "ndarray",
            "ndarray_f32": "ndarray",
            "opt_ndarray": "ndarray",
            "optional_ndarray": "ndarray",
            "str": "str",
            "int": "int",
            "np_int": "int",
            "float": "float",
            "np_float": "float",
            "bool": "bool",
            "bytes": "bytes",
            "opt_str": "str",
            "opt_int": "int",
            "list_int": "list",
            "list_str": "list",
            "list_float": "list",
            "list_list": "list",
            "list": "list",
            "tuple": "list",
            "dict": "dict",
            "opt_dict": "dict",
            "dict_str_int": "dict",
            "any": "any",
        }[kind]
        assert spec.kind == expected, kind
        assert spec.optional == (kind.startswith("opt") or kind == "any"), kind


def test_member_decoders() -> None:
    assert _codec.decode_member("cls", b" 12\n") == 12
    assert _codec.decode_member("json", b'{"a": [1, 2]}') == {"a": [1, 2]}
    assert _codec.decode_member("txt", "héllo".encode()) == "héllo"
    assert _codec.decode_member("jpg", b"\xff\xd8\xff") == b"\xff\xd8\xff"
    buf = io.BytesIO()
    np.save(buf, np.arange(3, dtype=np.int16))
    arr = _codec.decode_member("image.npy", buf.getvalue())
    assert arr.dtype == np.int16 and arr.tolist() == [0, 1, 2]
    assert _codec.field_name("image.npy") == "image"
    assert _codec.field_name("jpg") == "jpg"
