"""Hugging Face ``datasets`` interop (atdata_torch/integrations/hf.py): typed samples with arrays through
``Dataset.to_hf()`` and ``Dataset.from_hf()`` and back, HF-native datasets read into typed samples, column errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

import atdata_torch as atd

datasets = pytest.importorskip("datasets")


@atd.packable
class Rich:
    image: NDArray[np.uint8]
    tokens: NDArray[np.int16]
    embedding: atd.NDArray
    label: int
    score: float
    name: str
    raw: bytes
    flag: bool
    note: str | None = None


def rich(n: int) -> list[Rich]:
    rng = np.random.default_rng(0)
    return [
        Rich(
            image=rng.integers(0, 255, (4, 3, 2), dtype=np.uint8),
            tokens=np.arange(i + 1, dtype=np.int16),  # ragged
            embedding=rng.standard_normal(5).astype(np.float32),
            label=i,
            score=i / 3,
            name=f"n{i}",
            raw=bytes([i]) * i,
            flag=i % 2 == 0,
            note=None if i % 3 else f"note {i}",
        )
        for i in range(n)
    ]


def same(a: Rich, b: Rich) -> None:
    for f in ("image", "tokens", "embedding"):
        x, y = getattr(a, f), getattr(b, f)
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), f
    assert (a.label, a.score, a.name, a.raw, a.flag, a.note) == (b.label, b.score, b.name, b.raw, b.flag, b.note)


def test_round_trip_of_typed_samples_with_arrays(tmp_path: Path) -> None:
    samples = rich(7)
    ds = atd.write_samples(samples, tmp_path / "a.tar", maxcount=3, progress=False)
    hf = ds.to_hf()
    assert hf.num_rows == 7 and hf.column_names == [s.name for s in Rich.__atdata_fields__]
    assert hf.features["image"] == datasets.List(datasets.List(datasets.List(datasets.Value("uint8"))))
    assert hf.features["tokens"] == datasets.List(datasets.Value("int16"))
    assert hf.features["raw"] == datasets.Value("binary") and hf.features["note"] == datasets.Value("string")
    back = atd.Dataset.from_hf(hf, Rich, tmp_path / "b.tar", maxcount=4)
    assert back.sample_type is Rich and len(back.list_shards()) == 2 and len(back) == 7
    for a, b in zip(samples, back.ordered(), strict=True):
        same(a, b)
    assert back.to_hf().to_list() == hf.to_list()


def test_limit_and_empty(tmp_path: Path) -> None:
    ds = atd.write_samples(rich(5), tmp_path / "a.tar", progress=False)
    assert ds.to_hf(limit=2)["label"] == [0, 1]
    empty = ds.to_hf(limit=0)
    assert empty.num_rows == 0 and "label" in empty.column_names
    with pytest.raises(ValueError, match="got no samples"):
        atd.Dataset.from_hf(empty, Rich, tmp_path / "e.tar")


def test_hf_native_lists_become_arrays_of_the_field_dtype(tmp_path: Path) -> None:
    @atd.packable
    class Vec:
        x: NDArray[np.float32]
        y: atd.NDArray
        label: int

    hf = datasets.Dataset.from_dict(
        {"x": [[1.0, 2.0], [3.0, 4.0]], "y": [[1, 2, 3], [4]], "label": [0, 1]},
        features=datasets.Features(
            {"x": datasets.List(datasets.Value("float64")), "y": datasets.List(datasets.Value("int32")),
             "label": datasets.Value("int64")}
        ),
    )  # fmt: skip
    ds = atd.Dataset.from_hf(hf, Vec, tmp_path / "v.tar")
    a, b = ds[0], ds[1]
    assert a.x.dtype == np.float32 and a.x.tolist() == [1.0, 2.0]  # the field's dtype
    assert b.y.dtype == np.int32 and b.y.tolist() == [4]  # the HF feature's dtype
    assert a.label == 0


def test_iterable_hf_dataset_and_dict_samples(tmp_path: Path) -> None:
    hf = datasets.Dataset.from_dict({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    ds = atd.Dataset.from_hf(hf.to_iterable_dataset(), atd.DictSample, tmp_path / "d.tar")
    assert [s["b"] for s in ds] == ["x", "y", "z"]
    assert ds.to_hf().to_dict() == {"a": [1, 2, 3], "b": ["x", "y", "z"]}


def test_columns_that_do_not_match_the_type(tmp_path: Path) -> None:
    hf = datasets.Dataset.from_dict({"image": [b""], "extra": [1]})
    with pytest.raises(
        atd.SchemaError, match=r"missing: \['embedding', .*not in the type: \['extra'\].*select_columns"
    ):
        atd.Dataset.from_hf(hf, Rich, tmp_path / "x.tar")
    assert not (tmp_path / "x.tar").exists()


def test_mapped_samples_of_no_schema_are_refused(tmp_path: Path) -> None:
    ds = atd.write_samples(rich(2), tmp_path / "a.tar", progress=False).map(lambda s: (s.label, s.name))
    with pytest.raises(atd.SchemaError, match="@packable samples and DictSamples, got tuple"):
        ds.to_hf()


def test_without_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ds = atd.write_samples(rich(1), tmp_path / "a.tar", progress=False)
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(atd.MissingDependencyError, match=r"pip install 'atdata-torch\[hf\]'"):
        ds.to_hf()
