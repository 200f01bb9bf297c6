"""Tests for atdata_torch._arrow: batches and datasets as pyarrow Tables, and back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from numpy.typing import NDArray

import atdata_torch as atd
from atdata_torch._arrow import RAGGED_KEY, columns_to_samples, concat_tables, table_to_columns
from atdata_torch.errors import SchemaError


@atd.packable
class Mixed:
    x: NDArray[np.float32]
    r: NDArray[np.int16]
    o: NDArray[np.float64] | None
    s: str
    n: int
    f: float | None
    b: bytes


def _samples(n: int = 10) -> list[Mixed]:
    return [
        Mixed(
            x=np.full((2, 3), i, np.float32),
            r=np.arange(i % 4 + 1, dtype=np.int16),
            o=None if i % 2 else np.ones(2) * i,
            s=f"s{i}",
            n=i,
            f=None if i == 3 else i / 2,
            b=bytes([i]),
        )
        for i in range(n)
    ]


def test_batch_columns_have_tensor_and_plain_types() -> None:
    t = atd.SampleBatch.from_samples(_samples()).to_arrow()
    assert isinstance(t.schema.field("x").type, pa.FixedShapeTensorType)
    assert t.schema.field("x").type.shape == [2, 3]
    assert t.schema.field("r").metadata == {RAGGED_KEY: b"variable_shape"}
    assert t.schema.field("o").type.shape == [2] and t.column("o").null_count == 5
    assert (str(t.schema.field("s").type), str(t.schema.field("n").type)) == ("string", "int64")
    assert (str(t.schema.field("f").type), str(t.schema.field("b").type)) == ("double", "binary")
    assert t.column("f").null_count == 1
    np.testing.assert_array_equal(t.column("x").combine_chunks().to_numpy_ndarray()[4], np.full((2, 3), 4))


def test_dataset_to_arrow_round_trips_and_limits(tmp_path: Path) -> None:
    samples = _samples(10)
    ds = atd.write_samples(samples, str(tmp_path / "t.tar"), maxcount=4, progress=False)
    table = ds.to_arrow()
    assert table.num_rows == 10 and ds.to_arrow(limit=5).num_rows == 5 and ds.to_arrow(limit=0).num_rows == 0
    back = columns_to_samples(table_to_columns(table), table.num_rows, Mixed)
    assert back == samples
    with pytest.raises(ValueError, match="limit"):
        ds.to_arrow(limit=-1)


def test_concat_unifies_fixed_ragged_and_null_batches() -> None:
    a = atd.SampleBatch.from_samples([atd.DictSample(v=np.zeros(2))]).to_arrow()
    b = atd.SampleBatch.from_samples([atd.DictSample(v=np.zeros(3))]).to_arrow()
    c = atd.SampleBatch.from_samples([atd.DictSample(v=None)]).to_arrow()
    t = concat_tables([a, b, c])
    assert t.schema.field("v").metadata == {RAGGED_KEY: b"variable_shape"}
    assert [None if v is None else v.shape for v in table_to_columns(t)["v"]] == [(2,), (3,), None]


def test_unsupported_values_raise_schema_errors() -> None:
    with pytest.raises(SchemaError, match=r"'z'.*complex"):
        atd.SampleBatch.from_samples([atd.DictSample(z=np.zeros(2, np.complex64))]).to_arrow()
    with pytest.raises(SchemaError, match="'m'"):
        atd.SampleBatch.from_samples([atd.DictSample(m=1), atd.DictSample(m="a")]).to_arrow()
    with pytest.raises(SchemaError, match=r"missing.*unknown"):
        columns_to_samples({"q": [1]}, 1, Mixed)


def test_big_endian_and_zero_dim_arrays() -> None:
    t = atd.SampleBatch.from_samples([atd.DictSample(v=np.array(1.5, ">f8")), atd.DictSample(v=np.array(2.0))])
    out = table_to_columns(t.to_arrow())["v"]
    assert [(v.shape, float(v)) for v in out] == [((), 1.5), ((), 2.0)]  # mixed byte orders: ragged, native
