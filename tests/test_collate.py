"""Batches to tensors: ``atd.collate``, ``atd.to_tensor`` and ``TensorBatch`` (dtypes, shared memory, byte
order, unsupported dtypes, DataLoader collate_fn, pinning, ``.to()``, pickling)."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from torch.utils.data import DataLoader
from torch.utils.data._utils.pin_memory import pin_memory as torch_pin_memory

import atdata_torch as atd

# numpy dtype -> the torch dtype collate must give
DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "float32": torch.float32,
    "float64": torch.float64,
    "bool": torch.bool,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "uint8": torch.uint8,
    "uint16": torch.uint16,
    "uint32": torch.uint32,
    "uint64": torch.uint64,
    "complex64": torch.complex64,
}


@atd.packable
class CollateAllDtypes:
    f16: NDArray[np.float16]
    f32: NDArray[np.float32]
    f64: NDArray[np.float64]
    b: NDArray[np.bool_]
    i8: NDArray[np.int8]
    i16: NDArray[np.int16]
    i32: NDArray[np.int32]
    i64: NDArray[np.int64]
    u8: NDArray[np.uint8]
    u16: NDArray[np.uint16]
    u32: NDArray[np.uint32]
    u64: NDArray[np.uint64]
    c64: NDArray[np.complex64]
    label: int
    name: str


ALL_FIELDS = {
    "f16": "float16",
    "f32": "float32",
    "f64": "float64",
    "b": "bool",
    "i8": "int8",
    "i16": "int16",
    "i32": "int32",
    "i64": "int64",
    "u8": "uint8",
    "u16": "uint16",
    "u32": "uint32",
    "u64": "uint64",
    "c64": "complex64",
}


@atd.packable
class CollateRec:
    x: NDArray[np.float32]
    label: int


def _arr(dtype: str, i: int) -> np.ndarray:
    return (np.arange(6).reshape(2, 3) + i).astype(dtype)


def _all_dtypes(i: int) -> CollateAllDtypes:
    return CollateAllDtypes(**{f: _arr(dt, i) for f, dt in ALL_FIELDS.items()}, label=i, name=f"n{i}")


def _poke(t: torch.Tensor) -> None:
    """Write a distinctive value into element [0, 0, 0] of a tensor of any supported dtype."""
    t[0, 0, 0] = True if t.dtype == torch.bool else 7


def _assert_shared(arr: np.ndarray, t: torch.Tensor) -> None:
    """Mutating either side shows in the other."""
    _poke(t)
    assert arr[0, 0, 0] == (True if arr.dtype == np.bool_ else 7)
    arr[1, 1, 2] = 0
    assert t[1, 1, 2].item() == 0


@pytest.fixture
def no_warnings() -> Any:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        yield record
    assert [str(w.message) for w in record] == []


# ------------------------------------------------------------------------------------------------
# dtypes, shapes, shared memory


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_sample_batch_column_to_tensor(dtype: str, no_warnings: Any) -> None:
    batch = atd.SampleBatch.from_samples([atd.DictSample(x=_arr(dtype, i), tag=f"t{i}") for i in range(4)])
    tb = atd.collate(batch)
    assert isinstance(tb, atd.TensorBatch)
    assert isinstance(tb.x, torch.Tensor)
    assert tb.x.dtype == DTYPES[dtype]
    assert tuple(tb.x.shape) == (4, 2, 3)
    assert tb.tag == ["t0", "t1", "t2", "t3"]
    np.testing.assert_array_equal(tb.x.numpy(), batch.x)
    _assert_shared(batch.x, tb.x)


def test_batches_read_from_shards_collate_to_shared_tensors(tmp_path: Path, no_warnings: Any) -> None:
    ds = atd.write_samples([_all_dtypes(i) for i in range(10)], tmp_path / "all.tar", progress=False)
    for batch in ds.ordered(4):
        tb = atd.collate(batch)
        assert tb.keys == batch.keys
        assert tb.sample_type is CollateAllDtypes
        assert tb.label == batch.label and tb.name == batch.name
        for field, dtype in ALL_FIELDS.items():
            col = batch[field]
            assert col.flags.writeable  # decoded once into fresh memory: no "not writable" warning possible
            t = tb[field]
            assert t.dtype == DTYPES[dtype], field
            assert tuple(t.shape) == (len(batch), 2, 3)
            np.testing.assert_array_equal(t.numpy(), col)
            _assert_shared(col, t)


def test_read_only_arrays_are_copied_without_a_warning(no_warnings: Any) -> None:
    arr = np.arange(6, dtype=np.float32)
    arr.flags.writeable = False
    t = atd.to_tensor(arr)
    assert torch.equal(t, torch.arange(6, dtype=torch.float32))
    t[0] = 5  # a copy: the read-only array is untouched
    assert arr[0] == 0


@pytest.mark.parametrize("dtype", [">f4", ">f8", ">i2", ">i4", ">i8", ">u2", ">c8"])
def test_big_endian_arrays_become_native(dtype: str, no_warnings: Any) -> None:
    arr = (
        (np.arange(12).reshape(3, 4) - 5).astype(dtype)
        if "u" not in dtype
        else np.arange(12).reshape(3, 4).astype(dtype)
    )
    t = atd.to_tensor(arr, "x")
    assert t.dtype == DTYPES[np.dtype(dtype).newbyteorder("=").name]
    np.testing.assert_array_equal(t.numpy(), arr)
    batch = atd.SampleBatch({"x": arr, "y": ["a", "b", "c"]}, 3)
    tb = atd.collate(batch)
    np.testing.assert_array_equal(tb.x.numpy(), arr.astype(np.dtype(dtype).newbyteorder("=")))


def test_big_endian_arrays_from_shards(tmp_path: Path, no_warnings: Any) -> None:
    samples = [atd.DictSample(x=np.arange(4, dtype=">i4") * (i + 1)) for i in range(5)]
    ds = atd.write_samples(samples, tmp_path / "be.tar", progress=False)
    tb = atd.collate(next(iter(ds.ordered(5))))
    assert tb.x.dtype == torch.int32
    assert tb.x.tolist() == [[0, k, 2 * k, 3 * k] for k in range(1, 6)]


def test_strided_views(no_warnings: Any) -> None:
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    view = base[:, ::2]  # positive strides: shared
    t = atd.to_tensor(view)
    np.testing.assert_array_equal(t.numpy(), view)
    t[0, 1] = -1
    assert base[0, 2] == -1
    rev = base[::-1]  # negative strides: torch refuses them, so a copy
    np.testing.assert_array_equal(atd.to_tensor(rev).numpy(), rev)


@pytest.mark.parametrize(
    "arr",
    [
        np.array(["2020-01-01", "2021-06-30"], dtype="datetime64[D]"),
        np.array([1, 2], dtype="timedelta64[s]"),
        np.array(["a", "bc"]),
        np.array([b"a", b"bc"]),
        np.array([{"a": 1}, None], dtype=object),
    ],
    ids=["datetime64", "timedelta64", "str", "bytes", "object"],
)
def test_unsupported_dtypes_raise_schema_error_naming_the_field(arr: np.ndarray) -> None:
    batch = atd.SampleBatch({"ok": np.zeros((2, 1), np.float32), "when": arr}, 2)
    with pytest.raises(atd.SchemaError, match="'when'") as info:
        atd.collate(batch)
    assert info.value.field == "when"
    assert str(arr.dtype) in str(info.value)
    with pytest.raises(atd.SchemaError, match="array"):
        atd.to_tensor(arr)


@pytest.mark.skipif(np.dtype(np.longdouble).itemsize != 16, reason="no 16-byte long double here")
def test_long_double_is_refused() -> None:
    with pytest.raises(atd.SchemaError, match="'q'"):
        atd.to_tensor(np.zeros(2, np.longdouble), "q")


def test_collate_a_list_of_samples() -> None:
    samples = [CollateRec(x=np.full(3, i, np.float32), label=i) for i in range(3)]
    tb = atd.collate(samples)
    assert tb.sample_type is CollateRec
    assert tb.x.dtype == torch.float32 and tuple(tb.x.shape) == (3, 3)
    assert tb.label == [0, 1, 2]
    assert tb.keys is None
    assert len(tb) == 3


def test_ragged_arrays_stay_lists() -> None:
    tb = atd.collate([atd.DictSample(x=np.zeros(2)), atd.DictSample(x=np.zeros(3))])
    assert isinstance(tb.x, list) and len(tb.x) == 2


# ------------------------------------------------------------------------------------------------
# TensorBatch


def _tensor_batch() -> atd.TensorBatch:
    samples = [CollateRec(x=np.full(3, i, np.float32), label=i) for i in range(4)]
    return atd.TensorBatch.from_batch(atd.SampleBatch.from_samples(samples, CollateRec, [f"k{i}" for i in range(4)]))


def test_tensor_batch_accessors() -> None:
    tb = _tensor_batch()
    assert tb.fields == ["x", "label"]
    assert list(tb) == ["x", "label"]
    assert "x" in tb and "nope" not in tb
    assert tb["label"] is tb.label
    assert set(tb.to_dict()) == {"x", "label"}
    assert tb.keys == ["k0", "k1", "k2", "k3"]
    with pytest.raises(AttributeError, match="fields are"):
        _ = tb.nope
    assert repr(tb) == "TensorBatch(size=4; x: Tensor(4, 3) float32, label: list[4])"


def test_pin_memory_is_called_by_torch_pin_memory_utility(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, ...]] = []

    def fake_pin(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(tuple(self.shape))
        return self.clone()

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    tb = _tensor_batch()
    pinned = torch_pin_memory(tb)
    assert isinstance(pinned, atd.TensorBatch)
    assert calls == [(4, 3)]  # each tensor field once; list fields pass through
    assert torch.equal(pinned.x, tb.x) and pinned.x.data_ptr() != tb.x.data_ptr()
    assert pinned.label == tb.label and pinned.keys == tb.keys and pinned.sample_type is CollateRec
    assert len(pinned) == 4
    # with a device argument too
    calls.clear()
    tb.pin_memory("cuda")
    assert calls == [(4, 3)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="real pinning needs a GPU")
def test_real_pinning_and_non_blocking_copy() -> None:
    tb = _tensor_batch()
    pinned = tb.pin_memory()
    assert pinned.x.is_pinned()
    on_gpu = pinned.to("cuda", non_blocking=True)
    torch.cuda.synchronize()
    assert on_gpu.x.is_cuda and torch.equal(on_gpu.x.cpu(), tb.x)
    assert on_gpu.label == tb.label
    loader = DataLoader([tb], batch_size=None, pin_memory=True)
    assert next(iter(loader)).x.is_pinned()


def test_to_cpu() -> None:
    tb = _tensor_batch()
    for device in ("cpu", torch.device("cpu")):
        moved = tb.to(device, non_blocking=True)
        assert isinstance(moved, atd.TensorBatch)
        assert moved.x.device.type == "cpu"
        assert torch.equal(moved.x, tb.x)
        assert moved.label == tb.label and moved.keys == tb.keys and len(moved) == 4


def test_tensor_batch_pickles() -> None:
    tb = _tensor_batch()
    back = pickle.loads(pickle.dumps(tb))
    assert isinstance(back, atd.TensorBatch)
    assert torch.equal(back.x, tb.x)
    assert back.label == tb.label and back.keys == tb.keys and back.sample_type is CollateRec
    assert len(back) == 4 and back.fields == tb.fields


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.arange(12, dtype=torch.float32).reshape(3, 4).bfloat16(),  # numpy has no bfloat16
        lambda: torch.ones(3, 2, dtype=torch.complex64).conj(),  # a lazy conjugate view
        lambda: torch.arange(6.0).reshape(3, 2).t(),  # a non-contiguous view
        lambda: torch.ones(3, 2, requires_grad=True),
        lambda: torch.arange(3 * 300_000, dtype=torch.float32).reshape(3, -1),  # large: through shared memory
    ],
    ids=["bfloat16", "conj", "transposed", "requires-grad", "large"],
)
def test_tensor_batches_of_any_tensor_pickle(make: Any) -> None:
    t = make()
    back = pickle.loads(pickle.dumps(atd.TensorBatch({"x": t, "y": [1, 2, 3]}, 3)))
    assert back.x.dtype == t.dtype and back.x.shape == t.shape
    assert torch.equal(back.x.detach().resolve_conj(), t.detach().resolve_conj())
    assert back.y == [1, 2, 3]


def collate_to_bfloat16(samples: list[Any]) -> atd.TensorBatch:
    """A mixed-precision collate_fn: the batch leaves the worker in bfloat16."""
    tb = atd.collate(samples)
    return atd.TensorBatch({"x": tb.x.bfloat16(), "label": tb.label}, len(tb), tb.keys, tb.sample_type)


# ------------------------------------------------------------------------------------------------
# collate as a DataLoader collate_fn


@pytest.fixture
def rec_ds(tmp_path: Path) -> atd.Dataset[CollateRec]:
    samples = [CollateRec(x=np.full(3, i, np.float32), label=i) for i in range(10)]
    return atd.write_samples(samples, tmp_path / "rec.tar", maxcount=4, progress=False)  # type: ignore[no-any-return]


@pytest.mark.parametrize("workers", [0, 2])
def test_collate_fn_over_a_per_sample_pipeline(rec_ds: atd.Dataset[CollateRec], workers: int, no_warnings: Any) -> None:
    loader = DataLoader(rec_ds.ordered(), batch_size=4, collate_fn=atd.collate, num_workers=workers)
    batches = list(loader)
    # with workers, each worker batches its own samples (positions w, w + 2, ...)
    assert [len(b) for b in batches] == ([4, 4, 2] if workers == 0 else [4, 4, 1, 1])
    labels = sorted(v for b in batches for v in b.label)
    assert labels == list(range(10))
    for b in batches:
        assert isinstance(b, atd.TensorBatch)
        assert b.x.dtype == torch.float32 and tuple(b.x.shape) == (len(b), 3)
        assert b.x[:, 0].tolist() == [float(v) for v in b.label]


def test_collate_fn_over_a_batched_pipeline_crosses_workers(rec_ds: atd.Dataset[CollateRec]) -> None:
    loader = DataLoader(rec_ds.ordered(3), batch_size=None, collate_fn=atd.collate, num_workers=2)
    batches = list(loader)
    assert all(isinstance(b, atd.TensorBatch) for b in batches)
    assert [k for b in batches for k in b.keys] == [f"{i:08d}" for i in range(10)]
    assert torch.cat([b.x for b in batches])[:, 0].tolist() == [float(i) for i in range(10)]


def test_bfloat16_batches_cross_worker_boundaries(rec_ds: atd.Dataset[CollateRec]) -> None:
    loader = DataLoader(rec_ds.ordered(), batch_size=5, collate_fn=collate_to_bfloat16, num_workers=2)
    batches = list(loader)
    assert all(b.x.dtype == torch.bfloat16 for b in batches)
    assert sorted(v for b in batches for v in b.label) == list(range(10))
