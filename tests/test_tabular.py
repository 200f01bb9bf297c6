"""``Dataset.to_dict()`` / ``to_pandas()`` / ``to_parquet()`` (``_tabular``), as ``import atdata_torch as atdata``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numpy.typing import NDArray

import atdata_torch as atdata
from atdata_torch import _tabular


@atdata.packable
class Cell:
    x: NDArray
    n: int
    name: str


def _cells(n: int = 10) -> list[Cell]:
    return [Cell(x=np.full(3, i, np.float32), n=i, name=f"c{i}") for i in range(n)]


@pytest.fixture
def ds(tmp_path: Path) -> atdata.Dataset[Cell]:
    return atdata.write_samples(_cells(), tmp_path / "t.tar", maxcount=4, progress=False)


def test_to_dict(ds: atdata.Dataset[Cell]) -> None:
    d = ds.to_dict(limit=3)
    assert list(d) == ["x", "n", "name"]
    assert d["n"] == [0, 1, 2] and d["name"] == ["c0", "c1", "c2"]
    assert all(isinstance(v, np.ndarray) for v in d["x"])
    assert len(ds.to_dict()["n"]) == 10
    assert ds.to_dict(limit=0) == {}
    assert ds.filter(lambda c: False).to_dict() == {}


def test_to_dict_of_dict_samples_and_mapped_dicts(ds: atdata.Dataset[Cell]) -> None:
    untyped = atdata.Dataset(ds.url)
    assert untyped.to_dict(limit=2)["n"] == [0, 1]
    assert ds.map(lambda c: {"double": c.n * 2}).to_dict(limit=3) == {"double": [0, 2, 4]}


def test_to_dict_ragged_and_unconvertible() -> None:
    with pytest.raises(atdata.SchemaError, match="no field 'b'"):
        _tabular.columns([atdata.DictSample(a=1, b=2), atdata.DictSample(a=3)])
    with pytest.raises(TypeError, match="table row"):
        _tabular.row(42)


def test_to_pandas(ds: atdata.Dataset[Cell]) -> None:
    df = ds.to_pandas(limit=5)
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["x", "n", "name"]
    assert df["n"].tolist() == [0, 1, 2, 3, 4]
    assert df["x"][2].tolist() == [2.0, 2.0, 2.0]
    assert len(ds.to_pandas()) == 10
    with pytest.raises(ValueError, match="limit"):
        ds.to_pandas(limit=-1)


def test_to_parquet_one_file(ds: atdata.Dataset[Cell], tmp_path: Path) -> None:
    out = tmp_path / "all.parquet"
    assert ds.to_parquet(out) == [str(out)]
    back = pd.read_parquet(out)
    assert back["n"].tolist() == list(range(10))
    assert back["x"][3].tolist() == [3.0, 3.0, 3.0]  # 1-d arrays become parquet lists


def test_to_parquet_segments_are_named_as_the_original(ds: atdata.Dataset[Cell], tmp_path: Path) -> None:
    paths = ds.to_parquet(tmp_path / "seg" / "part.parquet", maxcount=4, sample_map=lambda c: {"n": c.n})
    assert [Path(p).name for p in paths] == ["part-000000.parquet", "part-000001.parquet", "part-000002.parquet"]
    assert [len(pd.read_parquet(p)) for p in paths] == [4, 4, 2]
    assert pd.read_parquet(paths[2]).columns.tolist() == ["n"]


def test_to_parquet_of_dict_samples_and_kwargs(ds: atdata.Dataset[Cell], tmp_path: Path) -> None:
    """The original's default ``asdict`` fails on DictSample; ours writes their fields. kwargs reach pandas."""
    out = tmp_path / "d.parquet"
    atdata.Dataset(ds.url).to_parquet(out, compression="gzip")
    import pyarrow.parquet as pq

    assert pq.ParquetFile(out).metadata.row_group(0).column(0).compression == "GZIP"
    assert pd.read_parquet(out)["name"].tolist() == [f"c{i}" for i in range(10)]


def test_to_parquet_errors(tmp_path: Path) -> None:
    @atdata.packable
    class Image:
        img: NDArray

    ds = atdata.write_samples([Image(img=np.zeros((2, 2), np.uint8))], tmp_path / "i.tar", progress=False)
    with pytest.raises(atdata.SchemaError, match="sample_map="):
        ds.to_parquet(tmp_path / "i.parquet")  # pyarrow stores 1-d arrays only
    assert ds.to_parquet(tmp_path / "ok.parquet", sample_map=lambda s: {"img": s.img.tobytes()})
    with pytest.raises(ValueError, match="maxcount"):
        ds.to_parquet(tmp_path / "x.parquet", maxcount=0)


def test_missing_pandas_names_the_extra(ds: atdata.Dataset[Cell], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # what an environment without pandas imports
    with pytest.raises(atdata.MissingDependencyError, match=r"atdata-torch\[arrow\]"):
        ds.to_pandas(limit=1)
    with pytest.raises(ImportError, match="arrow"):
        ds.to_parquet("never.parquet")
