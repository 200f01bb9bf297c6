"""``@packable``, field specs, schema errors, ``DictSample`` and ``schema_id``."""

import dataclasses
import pickle
from pathlib import Path
from typing import Any, Optional

import msgpack
import numpy as np
import pytest
from numpy.typing import NDArray

import atdata_torch as atd

try:
    import _future_types as fut
except ImportError:  # tests/ is a package
    from tests import _future_types as fut  # type: ignore[no-redef]


def make_class(annotations: dict[str, Any], name: str = "Made", **defaults: Any) -> type:
    ns: dict[str, Any] = {"__annotations__": annotations, **defaults}
    return atd.packable(type(name, (), ns))


# --------------------------------------------------------------------------------------------------
# accepted annotations

ACCEPTED = [
    # annotation, kind, optional, dtype
    (NDArray, "ndarray", False, None),
    (np.ndarray, "ndarray", False, None),
    (NDArray[np.uint8], "ndarray", False, np.dtype(np.uint8)),
    (NDArray[np.float32], "ndarray", False, np.dtype(np.float32)),
    (Optional[NDArray], "ndarray", True, None),  # noqa: UP045
    (NDArray | None, "ndarray", True, None),
    (NDArray[np.int16] | None, "ndarray", True, np.dtype(np.int16)),
    (str, "str", False, None),
    (int, "int", False, None),
    (float, "float", False, None),
    (bool, "bool", False, None),
    (bytes, "bytes", False, None),
    (str | None, "str", True, None),
    (Optional[int], "int", True, None),  # noqa: UP045
    (list, "list", False, None),
    (list[int], "list", False, None),
    (list[str] | None, "list", True, None),
    (list[list[float]], "list", False, None),
    (tuple[int, ...], "list", False, None),
    (dict, "dict", False, None),
    (dict | None, "dict", True, None),
    (dict[str, int], "dict", False, None),
    (Any, "any", True, None),
]


@pytest.mark.parametrize(("ann", "kind", "optional", "dtype"), ACCEPTED, ids=lambda v: repr(v)[:40])
def test_accepted_annotations(ann: Any, kind: str, optional: bool, dtype: Any) -> None:
    cls = make_class({"f": ann})
    (spec,) = cls.fields_spec()
    assert spec.name == "f"
    assert spec.kind == kind
    assert spec.optional is optional
    assert spec.dtype == dtype
    assert dataclasses.is_dataclass(cls)
    assert issubclass(cls, atd.PackableSample)


def test_list_item_specs() -> None:
    cls = make_class({"a": list[int], "b": list[list[str]], "c": list})
    a, b, c = cls.fields_spec()
    assert a.items is not None and a.items.kind == "int"
    assert b.items is not None and b.items.kind == "list"
    assert b.items.items is not None and b.items.items.kind == "str"
    assert c.items is None


@atd.packable
class Everything:
    image: NDArray
    raw: np.ndarray
    mask: NDArray[np.uint8]
    maybe: Optional[NDArray]  # noqa: UP045
    maybe2: NDArray | None
    name: str
    count: int
    score: float
    flag: bool
    blob: bytes
    tags: list[str]
    meta: dict
    extra: dict | None = None


def _everything(**over: Any) -> Everything:
    kw: dict[str, Any] = dict(
        image=np.arange(12, dtype=np.float32).reshape(3, 4),
        raw=np.array([1, 2, 3], dtype=">i8"),
        mask=np.array([[0, 255]], dtype=np.uint8),
        maybe=None,
        maybe2=np.zeros((0, 2), dtype=np.complex64),
        name="héllo",
        count=-(2**40),
        score=1.25,
        flag=True,
        blob=b"\x00\x01\xff",
        tags=["a", "b"],
        meta={"k": [1, 2, {"z": None}], "s": "x"},
    )
    kw.update(over)
    return Everything(**kw)


def test_everything_roundtrip() -> None:
    s = _everything()
    back = Everything.from_bytes(s.packed)
    assert back == s
    assert back.raw.dtype.str == ">i8"
    assert back.mask.dtype == np.uint8
    assert back.maybe is None and back.extra is None
    assert back.maybe2.shape == (0, 2) and back.maybe2.dtype == np.complex64
    assert isinstance(back.blob, bytes) and back.blob == b"\x00\x01\xff"
    assert back.meta == {"k": [1, 2, {"z": None}], "s": "x"}
    assert back.image.flags.writeable


def test_equality_is_real() -> None:
    s = _everything()
    assert s != _everything(count=1)
    assert s != _everything(image=np.arange(12, dtype=np.float64).reshape(3, 4))  # dtype differs
    assert s != _everything(image=np.arange(12, dtype=np.float32).reshape(4, 3))  # shape differs
    assert s != _everything(maybe=np.zeros(1))
    # arrays holding NaN compare equal (NaN-aware), so decoded float arrays equal their originals
    assert _everything(image=np.full(2, np.nan, np.float32)) == _everything(image=np.full(2, np.nan, np.float32))


def test_future_annotations_module() -> None:
    specs = {f.name: f for f in fut.FutureSample.fields_spec()}
    assert specs["image"].kind == "ndarray" and not specs["image"].optional
    assert specs["raw"].kind == "ndarray"
    assert specs["mask"].dtype == np.dtype(np.uint8)
    assert specs["maybe"].optional and specs["maybe"].kind == "ndarray"
    assert specs["maybe2"].optional and specs["maybe2"].kind == "ndarray"
    assert [specs[k].kind for k in ("name", "count", "score", "flag", "blob", "tags", "meta")] == [
        "str",
        "int",
        "float",
        "bool",
        "bytes",
        "list",
        "dict",
    ]
    assert specs["extra"].kind == "dict" and specs["extra"].optional
    assert specs["anything"].kind == "any"
    s = fut.FutureSample(
        image=np.ones((2, 2), np.float32),
        raw=np.arange(3),
        mask=np.zeros(4, np.uint8),
        maybe=None,
        maybe2=np.ones(1),
        name="n",
        count=1,
        score=2.0,
        flag=False,
        blob=b"b",
        tags=["t"],
        meta={"a": 1},
    )
    assert fut.FutureSample.from_bytes(s.packed) == s


def test_future_annotations_local_alias() -> None:
    cls = fut.make_local_class()
    (x, n) = cls.fields_spec()
    assert x.kind == "ndarray" and x.dtype == np.dtype(np.float32)
    assert n.kind == "int" and n.optional
    s = cls(x=np.ones(3, np.float32))
    assert cls.from_bytes(s.packed) == s


def test_local_class_with_local_type_reference() -> None:
    Alias = list[int]

    @atd.packable
    class WithAlias:
        xs: Alias  # type: ignore[valid-type]

    assert WithAlias.fields_spec()[0].kind == "list"


def test_defaults_and_factories() -> None:
    @atd.packable
    class D:
        x: int
        tags: list[str] = dataclasses.field(default_factory=list)
        note: str = "n/a"

    s = D(x=1)
    assert s.tags == [] and s.note == "n/a"
    specs = {f.name: f for f in D.fields_spec()}
    assert specs["tags"].has_default and specs["note"].has_default and not specs["x"].has_default
    # A missing key with a default decodes to the default (older writer).
    back = D.from_bytes(msgpack.packb({"x": 3}))
    assert back == D(x=3) and back.tags == []


def test_post_init_runs_on_decode() -> None:
    @atd.packable
    class P:
        x: int

        def __post_init__(self) -> None:
            self.doubled = self.x * 2

    back = P.from_bytes(P(x=4).packed)
    assert back.doubled == 8


def test_subclass_of_packable_sample() -> None:
    @atd.packable
    class Sub(atd.PackableSample):
        v: NDArray

    s = Sub(v=np.arange(3))
    assert Sub.from_bytes(s.packed) == s
    assert Sub.__mro__.count(atd.PackableSample) == 1


def test_packable_keeps_methods_and_name() -> None:
    @atd.packable
    class M:
        """Docs."""

        x: int

        def twice(self) -> int:
            return 2 * self.x

    assert M.__name__ == "M" and M.__doc__ == "Docs."
    assert M(x=3).twice() == 6
    assert repr(M(x=3)) == "M(x=3)"


def test_packable_instances_pickle() -> None:
    # (native byte order: numpy's pickle does not keep a '>' byte order on every version)
    s = _everything(raw=np.array([1, 2, 3], dtype="<i8"))
    back = pickle.loads(pickle.dumps(s))
    assert type(back) is Everything and back == s


# --------------------------------------------------------------------------------------------------
# schema errors name the class and the field


@pytest.mark.parametrize(
    "ann",
    [
        set[int],
        int | str,
        Optional[int | str],  # noqa: UP045
        frozenset,
        complex,
        list[NDArray],
        list[list[NDArray]],
        list[np.ndarray],
        dict[str, NDArray],
        NDArray[np.object_],
        tuple[NDArray, ...],
        list[set[int]],
    ],
    ids=repr,
)
def test_unsupported_annotation_names_class_and_field(ann: Any) -> None:
    with pytest.raises(atd.SchemaError) as ei:
        make_class({"ok": int, "bad_field": ann}, name="OffendingClass")
    msg = str(ei.value)
    assert "OffendingClass" in msg
    assert "bad_field" in msg
    assert ei.value.field == "bad_field"


def test_list_of_ndarray_message_explains() -> None:
    with pytest.raises(atd.SchemaError, match="list") as ei:
        make_class({"frames": list[NDArray]}, name="Video")
    assert "Video" in str(ei.value) and "frames" in str(ei.value)


def test_object_dtype_annotation_refused() -> None:
    with pytest.raises(atd.SchemaError, match="object") as ei:
        make_class({"objs": NDArray[np.object_]}, name="Objs")
    assert "Objs" in str(ei.value) and "objs" in str(ei.value)


def test_unresolvable_forward_reference_is_schema_error() -> None:
    with pytest.raises(atd.SchemaError, match="Broken"):
        make_class({"x": "DoesNotExist"}, name="Broken")


def test_object_array_value_at_pack_time() -> None:
    @atd.packable
    class Holder:
        arr: NDArray

    s = Holder(arr=np.array([1, "a", None], dtype=object))
    with pytest.raises(atd.SchemaError, match="object") as ei:
        _ = s.packed
    assert "Holder" in str(ei.value) and "arr" in str(ei.value) and ei.value.field == "arr"


def test_object_array_value_at_write_time(tmp_path: Path) -> None:
    @atd.packable
    class Holder2:
        arr: NDArray

    with pytest.raises(atd.SchemaError) as ei:
        atd.write_samples([Holder2(arr=np.array([{}], dtype=object))], tmp_path / "o.tar", progress=False)
    assert "Holder2" in str(ei.value) and "arr" in str(ei.value)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("container", ["list", "dict", "list_nested"])
def test_ndarray_value_nested_in_container(container: str, tmp_path: Path) -> None:
    @atd.packable
    class Nest:
        name: str
        stuff: list | None = None
        info: dict | None = None

    arr = np.zeros(3)
    if container == "list":
        s = Nest(name="a", stuff=[1, arr])
        field = "stuff"
    elif container == "list_nested":
        s = Nest(name="a", stuff=[[arr]])
        field = "stuff"
    else:
        s = Nest(name="a", info={"k": arr})
        field = "info"
    with pytest.raises(atd.SchemaError) as ei:
        _ = s.packed
    assert "Nest" in str(ei.value) and field in str(ei.value) and ei.value.field == field
    with pytest.raises(atd.SchemaError) as ei2:
        atd.write_samples([s], tmp_path / "n.tar", progress=False)
    assert field in str(ei2.value)


def test_wrong_value_types_at_pack_time() -> None:
    @atd.packable
    class W:
        arr: NDArray[np.uint8]
        n: int

    with pytest.raises(atd.SchemaError, match="dtype") as ei:
        _ = W(arr=np.zeros(2, np.float32), n=1).packed
    assert ei.value.field == "arr"
    with pytest.raises(atd.SchemaError) as ei:
        _ = W(arr=[1, 2], n=1).packed  # type: ignore[arg-type]
    assert ei.value.field == "arr" and "W" in str(ei.value)
    with pytest.raises(atd.SchemaError) as ei:
        _ = W(arr=np.zeros(2, np.uint8), n=None).packed  # type: ignore[arg-type]
    assert ei.value.field == "n"
    with pytest.raises(atd.SchemaError) as ei:
        _ = W(arr=np.zeros(2, np.uint8), n=object()).packed  # type: ignore[arg-type]
    assert ei.value.field == "n"


def test_schema_error_is_type_error_or_value_error() -> None:
    with pytest.raises((TypeError, ValueError)):
        make_class({"x": set[int]})


# --------------------------------------------------------------------------------------------------
# schema ids


def test_schema_id_stable_and_sensitive() -> None:
    a1 = make_class({"x": int, "y": NDArray}, name="Same")
    a2 = make_class({"x": int, "y": NDArray}, name="Same")
    b = make_class({"x": int, "y": NDArray | None}, name="Same")
    c = make_class({"x": int, "z": NDArray}, name="Same")
    d = make_class({"x": int, "y": NDArray[np.uint8]}, name="Same")
    e = make_class({"x": int, "y": NDArray}, name="Other")
    sid = atd.schema_id(a1)
    assert sid is not None and sid.startswith("Same@") and len(sid.split("@")[1]) == 12
    assert atd.schema_id(a2) == sid
    assert len({sid, atd.schema_id(b), atd.schema_id(c), atd.schema_id(d), atd.schema_id(e)}) == 5
    assert a1.__atdata_schema_id__ == sid
    assert atd.schema_id(atd.DictSample) is None


# --------------------------------------------------------------------------------------------------
# DictSample


def test_dict_sample_api() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    s = atd.DictSample({"x": x, "label": "cat"}, n=3, blob=b"abc")
    assert s["x"] is x and s.x is x
    assert s["label"] == "cat" and s.label == "cat"
    assert list(s.keys()) == ["x", "label", "n", "blob"]
    assert list(s.values())[1:] == ["cat", 3, b"abc"]
    assert [k for k, _ in s.items()] == ["x", "label", "n", "blob"]
    assert s.get("n") == 3 and s.get("missing") is None and s.get("missing", 7) == 7
    assert "x" in s and "nope" not in s
    assert len(s) == 4 and list(s) == ["x", "label", "n", "blob"]
    d = s.to_dict()
    assert d.keys() == {"x", "label", "n", "blob"}
    d["label"] = "dog"
    assert s.label == "cat"  # to_dict is a copy
    with pytest.raises(AttributeError, match="label"):
        _ = s.nope
    with pytest.raises(KeyError):
        _ = s["nope"]
    s.extra = 1
    s["other"] = 2
    assert s.extra == 1 and s["other"] == 2


def test_dict_sample_repr() -> None:
    s = atd.DictSample({"x": np.zeros((2, 3), np.float32), "blob": b"abcd", "label": "cat", "long": "y" * 100})
    r = repr(s)
    assert r.startswith("DictSample(")
    assert "x=ndarray(shape=(2, 3), dtype=float32)" in r
    assert "blob=<4 bytes>" in r
    assert "label='cat'" in r
    assert "y" * 100 not in r and "..." in r


def test_dict_sample_equality_and_bytes_roundtrip() -> None:
    s = atd.DictSample({"x": np.arange(4, dtype=">u2"), "label": "a", "meta": {"k": [1, 2]}})
    back = atd.DictSample.from_bytes(s.packed)
    assert back == s
    assert back["x"].dtype.str == ">u2"
    assert back != atd.DictSample({"x": np.arange(4, dtype="<u2"), "label": "a", "meta": {"k": [1, 2]}})
    assert back != atd.DictSample({"x": np.arange(4, dtype=">u2"), "label": "b", "meta": {"k": [1, 2]}})


def test_dict_sample_pickles() -> None:
    s = atd.DictSample({"x": np.arange(3), "y": "z"})
    assert pickle.loads(pickle.dumps(s)) == s


def test_dict_sample_from_typed_payload_decodes_arrays() -> None:
    s = _everything()
    d = atd.DictSample.from_bytes(s.packed)
    assert isinstance(d.image, np.ndarray) and d.image.dtype == np.float32 and d.image.shape == (3, 4)
    np.testing.assert_array_equal(d.image, s.image)
    assert d.raw.dtype.str == ">i8"
    assert d.maybe is None
    assert d.name == "héllo" and d.count == -(2**40) and d.flag is True and d.blob == b"\x00\x01\xff"
    assert d.tags == ["a", "b"]


def test_dict_sample_read_from_shards(tmp_path: Path) -> None:
    samples = [_everything(count=i, name=f"s{i}") for i in range(5)]
    atd.write_samples(samples, tmp_path / "e.tar", progress=False)
    got = list(atd.Dataset(str(tmp_path / "e.tar")))
    assert len(got) == 5
    for s, d in zip(samples, got, strict=True):
        assert isinstance(d, atd.DictSample)
        assert list(d.keys()) == [f.name for f in dataclasses.fields(Everything)]
        assert isinstance(d.image, np.ndarray) and d.image.dtype == np.float32
        np.testing.assert_array_equal(d.image, s.image)
        assert isinstance(d["mask"], np.ndarray) and d["mask"].dtype == np.uint8
        assert d.count == s.count and d.name == s.name
        assert d.image.flags.writeable


# --------------------------------------------------------------------------------------------------
# DictSample -> packable lens, from_bytes round trip


def test_every_packable_has_dict_lens() -> None:
    cls = make_class({"x": NDArray, "label": str}, name="LensTarget")
    lens = atd.lens_registry.find(atd.DictSample, cls)
    d = atd.DictSample({"x": np.arange(3), "label": "a", "ignored": 1})
    out = lens(d)
    assert isinstance(out, cls)
    assert out == cls(x=np.arange(3), label="a")
    # and from an ndarray-bytes payload decoded schema-free
    out2 = lens(atd.DictSample.from_bytes(cls(x=np.ones(2, np.int8), label="b").packed))
    assert out2 == cls(x=np.ones(2, np.int8), label="b")


def test_future_class_has_dict_lens() -> None:
    lens = atd.lens_registry.find(atd.DictSample, fut.FutureSample)
    assert lens is not None


@pytest.mark.parametrize(
    "sample",
    [
        _everything(),
        _everything(maybe=np.eye(3), extra={"x": [None, True, 1.5]}),
        _everything(image=np.zeros((), np.float32), tags=[], meta={}),
    ],
)
def test_from_bytes_of_packed(sample: Everything) -> None:
    assert Everything.from_bytes(sample.packed) == sample
    assert Everything.from_bytes(bytearray(sample.packed)) == sample


def test_missing_optional_keys_and_extra_keys() -> None:
    payload = msgpack.packb(
        {
            "image": atd.array_to_bytes(np.zeros(2, np.float32)),
            "raw": atd.array_to_bytes(np.zeros(1)),
            "mask": atd.array_to_bytes(np.zeros(1, np.uint8)),
            "name": "n",
            "count": 1,
            "score": 2,
            "flag": False,
            "blob": b"",
            "tags": [],
            "meta": {},
            "newer_field": [1, 2, 3],
        }
    )
    s = Everything.from_bytes(payload)
    assert s.maybe is None and s.maybe2 is None and s.extra is None
    assert s.score == 2.0 and isinstance(s.score, float)
    assert not hasattr(s, "newer_field")


def test_missing_required_key_names_field() -> None:
    @atd.packable
    class Req:
        a: int
        b: str

    with pytest.raises(atd.DecodeError) as ei:
        Req.from_bytes(msgpack.packb({"a": 1}))
    assert ei.value.field == "b"


# --------------------------------------------------------------------------------------------------
# the original atdata's inheritance syntax: a plain @dataclass subclass of PackableSample (issue 15)


@dataclasses.dataclass
class PlainSub(atd.PackableSample):
    image: NDArray
    label: str
    count: int = 0
    tags: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class PlainSubSub(PlainSub):
    extra: float | None = None


def test_plain_dataclass_subclass_packs_its_fields() -> None:
    s = PlainSub(image=np.arange(4, dtype=np.float32), label="cat", count=3, tags=["a"])
    assert [f.name for f in PlainSub.fields_spec()] == ["image", "label", "count", "tags"]
    assert set(msgpack.unpackb(s.packed)) == {"image", "label", "count", "tags"}
    assert s.packed != b"\x80"
    back = PlainSub.from_bytes(s.packed)
    assert back == s and isinstance(back, PlainSub)
    assert PlainSub.from_data(msgpack.unpackb(s.packed)) == s
    assert atd.schema_id(PlainSub) == PlainSub.__atdata_schema_id__ != ""
    assert back != PlainSub(image=np.arange(4, dtype=np.float32), label="dog", count=3, tags=["a"])
    # the same wire bytes as the @packable spelling of the class
    packed_twin = make_class({"image": NDArray, "label": str, "count": int, "tags": list[str]}, name="PlainSub")
    assert packed_twin(image=s.image, label="cat", count=3, tags=["a"]).packed == s.packed


def test_plain_dataclass_subclass_of_it_adds_its_fields() -> None:
    s = PlainSubSub(image=np.zeros(2), label="x", extra=1.5)
    assert [f.name for f in PlainSubSub.fields_spec()] == ["image", "label", "count", "tags", "extra"]
    assert PlainSubSub.from_bytes(s.packed) == s
    assert PlainSub.fields_spec() != PlainSubSub.fields_spec()


def test_plain_dataclass_subclass_reads_back_from_shards(tmp_path: Path) -> None:
    samples = [PlainSub(image=np.full(3, i, np.float32), label=f"s{i}", count=i) for i in range(5)]
    atd.write_samples(samples, tmp_path / "p.tar", progress=False)
    typed = list(atd.Dataset[PlainSub](str(tmp_path / "p.tar")).ordered())
    assert typed == samples
    untyped = list(atd.Dataset(str(tmp_path / "p.tar")).ordered())
    assert [d.label for d in untyped] == [s.label for s in samples]
    batches = list(atd.Dataset[PlainSub](str(tmp_path / "p.tar")).ordered(batch_size=5))
    assert batches[0].image.shape == (5, 3) and batches[0].label == [s.label for s in samples]


def test_plain_dataclass_subclass_in_a_function() -> None:
    Local = np.ndarray  # a local name in a string annotation: resolved where the class was written

    @dataclasses.dataclass
    class InFunc(atd.PackableSample):
        v: "Local"
        name: str

    s = InFunc(v=np.arange(2), name="n")
    assert InFunc.from_bytes(s.packed) == s


def test_subclass_with_fields_but_no_dataclass_is_refused() -> None:
    class NotADataclass(atd.PackableSample):
        x: int

    with pytest.raises(atd.SchemaError, match="dataclass"):
        NotADataclass.fields_spec()
    with pytest.raises(atd.SchemaError, match=r"@atd\.packable"):
        atd.write_samples([NotADataclass()], "/nonexistent/never-written.tar", progress=False)


def test_plain_dataclass_subclass_with_bad_annotation_names_the_field() -> None:
    @dataclasses.dataclass
    class Bad(atd.PackableSample):
        ok: int
        when: complex

    with pytest.raises(atd.SchemaError, match="'when' of Bad"):
        Bad(ok=1, when=1j).packed  # noqa: B018


def test_dict_sample_missing_attribute_with_non_str_keys() -> None:
    d = atd.DictSample({1: "a", "b": 2})  # type: ignore[dict-item]
    with pytest.raises(AttributeError, match="no field 'zz'"):
        d.zz  # noqa: B018
