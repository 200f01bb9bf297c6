"""SampleBatch: stacked numpy columns for arrays that agree, lists for everything else."""

from __future__ import annotations

import copy
import pickle
import struct
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray

import atdata_torch as atd
from atdata_torch._batch import stack_column, stack_encoded

HYP = settings(max_examples=50, deadline=None, database=None)


@atd.packable
class BatchRec:
    x: NDArray[np.float32]
    label: int
    name: str
    extra: dict | None = None


def _recs(n: int) -> list[BatchRec]:
    return [BatchRec(x=np.arange(3, dtype=np.float32) + i, label=i, name=f"r{i}") for i in range(n)]


def test_from_typed_samples_stacks_arrays_and_lists_the_rest() -> None:
    recs = _recs(4)
    keys = [f"k{i}" for i in range(4)]
    b = atd.SampleBatch.from_samples(recs, BatchRec, keys)
    assert len(b) == 4
    assert b.sample_type is BatchRec
    assert b.keys == keys
    assert b.fields == ["x", "label", "name", "extra"]
    assert isinstance(b.x, np.ndarray)
    assert b.x.shape == (4, 3)
    assert b.x.dtype == np.float32
    np.testing.assert_array_equal(b.x, np.stack([r.x for r in recs]))
    assert b.label == [0, 1, 2, 3]
    assert b.name == ["r0", "r1", "r2", "r3"]
    assert b.extra == [None] * 4
    assert b["label"] == b.label
    assert set(b.to_dict()) == {"x", "label", "name", "extra"}


def test_sample_type_is_inferred_from_the_first_sample() -> None:
    b = atd.SampleBatch.from_samples(_recs(2))
    assert b.sample_type is BatchRec
    assert b.keys is None


def test_stacked_column_is_a_writable_copy() -> None:
    recs = _recs(3)
    b = atd.SampleBatch.from_samples(recs)
    assert b.x.flags.writeable
    assert b.x.flags.c_contiguous
    b.x[0, 0] = 100.0
    assert recs[0].x[0] == 0.0  # the sample's array is not shared
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "The given NumPy array is not writable"
        t = torch.from_numpy(b.x)
    assert t.shape == (3, 3)


@pytest.mark.parametrize(
    ("values", "why"),
    [
        ([np.zeros(2, np.float32), np.zeros(3, np.float32)], "ragged shapes"),
        ([np.zeros(2, np.float32), np.zeros(2, np.float64)], "mixed dtypes"),
        ([np.zeros(2, np.float32), None], "a missing array"),
        ([np.zeros(2, np.float32), [0.0, 0.0]], "a list among arrays"),
    ],
)
def test_non_uniform_arrays_stay_a_list(values: list[object], why: str) -> None:
    col = stack_column(values)
    assert isinstance(col, list), why
    assert col[0] is values[0]
    assert len(col) == 2


def test_stack_column_of_empty_and_scalars() -> None:
    assert stack_column([]) == []
    assert stack_column([1, 2]) == [1, 2]
    out = stack_column([np.array(1.5), np.array(2.5)])
    assert isinstance(out, np.ndarray)
    assert out.shape == (2,)


def test_from_dict_samples() -> None:
    samples = [atd.DictSample(x=np.full((2, 2), i, np.uint8), y=f"s{i}", n=i) for i in range(3)]
    b = atd.SampleBatch.from_samples(samples)
    assert b.sample_type is atd.DictSample
    assert b.fields == ["x", "y", "n"]
    assert b.x.shape == (3, 2, 2)
    assert b.x.dtype == np.uint8
    assert b.y == ["s0", "s1", "s2"]
    assert b.n == [0, 1, 2]
    rebuilt = b.samples
    assert all(isinstance(s, atd.DictSample) for s in rebuilt)
    assert rebuilt == samples


def test_dict_samples_with_different_keys_fill_none() -> None:
    samples = [atd.DictSample(a=1), atd.DictSample(b=2), {"a": 3, "c": np.zeros(1)}]
    b = atd.SampleBatch.from_samples(samples, atd.DictSample)
    assert b.fields == ["a", "b", "c"]
    assert b.a == [1, None, 3]
    assert b.b == [None, 2, None]
    assert isinstance(b.c, list)
    assert b.c[:2] == [None, None]


def test_from_plain_objects() -> None:
    class Plain:
        def __init__(self, v: int) -> None:
            self.v = v
            self._private = "hidden"

    b = atd.SampleBatch.from_samples([Plain(1), Plain(2)])
    assert b.fields == ["v"]
    assert b.v == [1, 2]


def test_empty_batch() -> None:
    b = atd.SampleBatch.from_samples([])
    assert len(b) == 0
    assert b.sample_type is atd.DictSample
    assert b.fields == []
    assert b.samples == []
    assert list(b) == []


def test_missing_field_errors_name_the_fields() -> None:
    b = atd.SampleBatch.from_samples(_recs(2))
    with pytest.raises(AttributeError, match=r"no field 'nope'; fields are \['x', 'label', 'name'"):
        _ = b.nope
    with pytest.raises(KeyError):
        _ = b["nope"]
    assert not hasattr(b, "nope")


def test_samples_rebuild_typed_instances() -> None:
    recs = _recs(3)
    b = atd.SampleBatch.from_samples(recs)
    rebuilt = b.samples
    assert [type(s) for s in rebuilt] == [BatchRec] * 3
    assert rebuilt == recs
    assert list(b) == recs


def test_repr() -> None:
    b = atd.SampleBatch.from_samples(_recs(2))
    assert repr(b) == (
        "SampleBatch[BatchRec](size=2; x: ndarray(2, 3) float32, label: list[2], name: list[2], extra: list[2])"
    )


def test_to_dict_is_a_copy() -> None:
    b = atd.SampleBatch.from_samples(_recs(2))
    d = b.to_dict()
    d["label"] = "replaced"
    del d["x"]
    assert b.label == [0, 1]
    assert b.fields == ["x", "label", "name", "extra"]


@pytest.mark.parametrize("dup", [pickle.loads, copy.copy, copy.deepcopy])
def test_batches_pickle_and_copy(dup: object) -> None:
    """Batches cross DataLoader worker boundaries (pickled), so they must survive pickling."""
    b = atd.SampleBatch.from_samples(_recs(3), BatchRec, ["a", "b", "c"])
    again = dup(pickle.dumps(b)) if dup is pickle.loads else dup(b)  # type: ignore[operator]
    assert type(again) is atd.SampleBatch
    assert len(again) == 3
    assert again.sample_type is BatchRec
    assert again.keys == ["a", "b", "c"]
    assert again.fields == b.fields
    np.testing.assert_array_equal(again.x, b.x)
    assert again.name == b.name
    assert again.samples == b.samples


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((2, 3), "<i2"), ((0, 3), "<f4"), ((), ">f8"), ((64, 80), "<f4")],  # last: >16 KiB rows
)
def test_stack_encoded_matches_decoding_each(shape: tuple[int, ...], dtype: str) -> None:
    size = int(np.prod(shape))
    arrays = [(np.arange(size) + i).astype(dtype).reshape(shape) for i in range(4)]
    out = stack_encoded([atd.array_to_bytes(a) for a in arrays])
    assert out.shape == (4, *shape)
    assert out.dtype == np.dtype(dtype)
    assert out.flags.writeable
    np.testing.assert_array_equal(out, np.stack(arrays))


def test_stack_encoded_mismatch_is_none_and_corrupt_is_an_error() -> None:
    a = atd.array_to_bytes(np.zeros(3, np.float32))
    assert stack_encoded([a, atd.array_to_bytes(np.zeros(4, np.float32))]) is None
    assert stack_encoded([a, atd.array_to_bytes(np.zeros(3, np.float64))]) is None
    with pytest.raises(atd.DecodeError, match="truncated or corrupt"):
        stack_encoded([a, a[:-1]])


@HYP
@given(
    arrays=st.integers(min_value=1, max_value=6).flatmap(
        lambda n: hnp.array_shapes(min_dims=0, max_dims=3, max_side=4).flatmap(
            lambda shape: st.lists(hnp.arrays(np.int32, shape), min_size=n, max_size=n)
        )
    ),
    names=st.lists(st.text(max_size=5), min_size=6, max_size=6),
)
def test_round_trip_through_columns(arrays: list[np.ndarray], names: list[str]) -> None:
    recs = [BatchRec(x=a.astype(np.float32), label=i, name=names[i]) for i, a in enumerate(arrays)]
    b = atd.SampleBatch.from_samples(recs)
    assert isinstance(b.x, np.ndarray)
    assert b.x.shape == (len(recs), *arrays[0].shape)
    assert b.samples == recs
    encoded = stack_encoded([atd.array_to_bytes(r.x) for r in recs])
    np.testing.assert_array_equal(encoded, b.x)


def _nd(dtype: str, shape: tuple[int, ...], data: bytes) -> bytes:
    ds = dtype.encode()
    return bytes([len(ds)]) + ds + bytes([len(shape)]) + struct.pack(f"<{len(shape)}q", *shape) + data


# Headers that lie about their array; in a column, first or after a good value, each is a DecodeError.
LYING = {
    "subarray dtype": _nd("(2,)<f4", (3,), bytes(24)),
    "object dtype": _nd("|O", (3,), bytes(24)),
    "structured dtype": _nd("<f4,<f4", (3,), bytes(24)),
    "python code": _nd("__import__('os')", (3,), bytes(24)),
    "ndim 65": _nd("<f4", (1,) * 65, bytes(4)),
    "negative dims": _nd("<f4", (-2, -3), bytes(24)),
    "product overflows": _nd("<f8", (2**62, 2**62), bytes(24)),
    "a TiB claimed": _nd("<f4", (2**38,), bytes(24)),
    "short data": _nd("<f8", (3,), bytes(23)),
}


@pytest.mark.parametrize("bad", LYING.values(), ids=LYING.keys())
@pytest.mark.parametrize("where", [0, 1, 3])
def test_stack_encoded_lying_header_is_decode_error(bad: bytes, where: int) -> None:
    good = atd.array_to_bytes(np.zeros(3, np.float64))
    col: list[bytes | memoryview] = [good] * 4
    col[where] = memoryview(bad) if where == 3 else bad
    with pytest.raises(atd.DecodeError):
        stack_encoded(col)


def test_stack_encoded_of_empty_arrays_numpy_cannot_describe() -> None:
    empty = _nd("<f4", (0, 2**30, 2**30), b"")
    assert stack_encoded([empty]).shape == (1, 0, 2**30, 2**30)
    with pytest.raises(atd.DecodeError, match="larger than any array"):
        stack_encoded([empty] * 4)


def test_large_batch_arrays_are_reused_only_once_the_last_batch_is_gone() -> None:
    # Batches of 4 MiB or more come from a pool (no fresh pages to fault in and zero per batch); a batch that is
    # still referred to (its tensor, a view) keeps its memory.
    rows = [atd.array_to_bytes(np.full((512, 512), i, np.float32)) for i in range(4)]  # 1 MiB each
    first = stack_encoded(rows)
    ptr = first.ctypes.data
    held = torch.from_numpy(first[1:])
    del first
    second = stack_encoded(rows[::-1])
    assert second.ctypes.data != ptr  # the first batch's memory is still held (by a tensor of a view)
    assert float(held[0, 0, 0]) == 1.0 and float(second[0, 0, 0]) == 3.0
    del held
    third = stack_encoded(rows)
    assert third.ctypes.data == ptr  # now reused
    assert [float(third[i, 7, 7]) for i in range(4)] == [0.0, 1.0, 2.0, 3.0]
    assert third.flags.writeable and third.flags.c_contiguous
