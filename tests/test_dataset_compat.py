"""The original atdata's ``Dataset`` surface (``_dataset_compat``), written as a migrating user writes it:
``import atdata_torch as atdata``. The last tests check against the original itself (the ``original_atdata``
fixture: atdata 0.7.0b1 in its own Python >= 3.12 environment; integration tests, required in CI)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from numpy.typing import NDArray

import atdata_torch as atdata
from atdata_torch._dataset_compat import default_limits, shards_to_url


@atdata.packable
class Row:
    x: NDArray
    n: int
    name: str


def _rows(n: int = 10) -> list[Row]:
    return [Row(x=np.full(2, i, np.float32), n=i, name=f"r{i}") for i in range(n)]


@pytest.fixture
def ds(tmp_path: Path) -> atdata.Dataset[Row]:
    return atdata.write_samples(_rows(), tmp_path / "train.tar", maxcount=4, progress=False)  # 4, 4, 2


# ------------------------------------------------------------------------------------------------ construction
def test_url_keyword_and_positional_metadata_url(ds: atdata.Dataset[Row], tmp_path: Path) -> None:
    meta = tmp_path / "meta.msgpack"
    meta.write_bytes(msgpack.packb({"license": "CC0", "n": 3}))
    by_kw = atdata.Dataset[Row](url=ds.url, metadata_url=str(meta))
    assert by_kw.list_shards() == ds.list_shards()
    assert by_kw.url == ds.url
    positional = atdata.Dataset[Row](ds.url, str(meta))
    assert positional.metadata_url == str(meta)
    assert positional.metadata == {"license": "CC0", "n": 3}
    assert [r.n for r in by_kw] == list(range(10))


def test_source_and_url_both_or_neither_raise(ds: atdata.Dataset[Row]) -> None:
    with pytest.raises(TypeError, match="both source and url"):
        atdata.Dataset[Row](ds.url, url=ds.url)
    with pytest.raises(TypeError, match="'source' or 'url'"):
        atdata.Dataset[Row]()


def test_url_forms(ds: atdata.Dataset[Row]) -> None:
    shards = ds.list_shards()
    assert ds.url == shards[0][: -len("0.tar")] + "{0,1,2}.tar"  # the original's brace form, absolute paths
    assert atdata.Dataset[Row](ds.url).list_shards() == shards
    assert atdata.Dataset[Row](shards).url == ds.url
    src = atdata.LocalSource(shards)
    assert atdata.Dataset[Row](src).url == shards[0]  # a source: its first shard, as the original
    assert atdata.Dataset[Row](Path(shards[1])).url == shards[1]


def test_shards_shard_list_list_shards(ds: atdata.Dataset[Row]) -> None:
    shards = ds.list_shards()
    it = ds.shards
    assert not isinstance(it, list) and list(it) == shards
    assert ds.shard_list == shards


@pytest.mark.parametrize(
    ("shards", "url"),
    [
        (["a.tar"], "a.tar"),
        (["d/t-000000.tar", "d/t-000001.tar", "d/t-000010.tar"], "d/t-0000{00,01,10}.tar"),
        (["x/a.tar", "x/ab.tar"], "{x/a.tar,x/ab.tar}"),  # an empty middle: every name in the braces
        ([], ""),
    ],
)
def test_shards_to_url(shards: list[str], url: str) -> None:
    assert shards_to_url(shards) == url
    if len(shards) > 1:
        assert atdata.Dataset(url).list_shards() == shards


def test_default_limits_are_the_originals() -> None:
    assert default_limits(None, None) == (None, None)
    assert default_limits(5, None) == (5, 3e9)
    assert default_limits(None, 1000) == (100_000, 1000)
    assert default_limits(5, 10) == (5, 10)


# ------------------------------------------------------------------------------------------------ metadata
def test_metadata_is_fetched_lazily_once(ds: atdata.Dataset[Row], tmp_path: Path) -> None:
    meta = tmp_path / "later.msgpack"
    d = atdata.Dataset[Row](ds.url, metadata_url=f"file://{meta}")  # does not exist yet: nothing read at init
    meta.write_bytes(msgpack.packb({"k": [1, 2]}))
    assert d.metadata == {"k": [1, 2]}
    meta.unlink()
    assert d.metadata == {"k": [1, 2]}  # cached
    assert atdata.Dataset[Row](ds.url).metadata is None


def test_metadata_over_http(ds: atdata.Dataset[Row], http_server: Any, http_root: Path) -> None:
    (http_root / "meta.msgpack").write_bytes(msgpack.packb({"source": "http"}))
    d = atdata.Dataset[Row](ds.url, metadata_url=http_server.url("meta.msgpack"))
    assert d.metadata == {"source": "http"}
    assert d.describe()["metadata"] == {"source": "http"}


def test_metadata_errors(ds: atdata.Dataset[Row], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        _ = atdata.Dataset[Row](ds.url, metadata_url=str(tmp_path / "missing.msgpack")).metadata
    bad = tmp_path / "bad.msgpack"
    bad.write_bytes(b"\xc1")  # never valid msgpack
    with pytest.raises(atdata.DecodeError, match="is not msgpack"):
        _ = atdata.Dataset[Row](ds.url, metadata_url=str(bad)).metadata
    lst = tmp_path / "list.msgpack"
    lst.write_bytes(msgpack.packb([1, 2]))
    with pytest.raises(atdata.DecodeError, match="expected a map"):
        _ = atdata.Dataset[Row](ds.url, metadata_url=str(lst)).metadata
    with pytest.raises(TypeError, match="metadata_url"):
        atdata.Dataset[Row](ds.url, metadata_url=3)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ description
def test_content_metadata(tmp_path: Path) -> None:
    meta = {"instrument": "Zeiss LSM 880"}
    ds = atdata.write_samples(_rows(2), tmp_path / "c.tar", content_metadata=meta, progress=False)
    assert ds.content_metadata == meta
    assert ds.filter(lambda r: True).content_metadata == meta  # derived datasets keep it
    assert atdata.Dataset[Row](ds.url).content_metadata is None
    ds.content_metadata = Row(x=np.zeros(1), n=0, name="m")
    assert isinstance(ds.content_metadata, Row)
    with pytest.raises(TypeError, match="content_metadata"):
        ds.content_metadata = 5


def test_schema_column_names_batch_type(ds: atdata.Dataset[Row]) -> None:
    assert ds.schema == {"x": NDArray, "n": int, "name": str}
    assert ds.column_names == ["x", "n", "name"]
    assert ds.batch_type == atdata.SampleBatch[Row]
    untyped = atdata.Dataset(ds.url)
    assert untyped.schema == {"_data": dict}
    assert untyped.column_names == []
    assert untyped.batch_type == atdata.SampleBatch[atdata.DictSample]


def test_describe_is_the_originals_and_summary_ours(ds: atdata.Dataset[Row]) -> None:
    d = ds.describe()
    assert d == {
        "sample_type": "Row",
        "fields": {"x": NDArray, "n": int, "name": str},
        "num_shards": 3,
        "shards": ds.list_shards(),
        "url": ds.url,
        "metadata": None,
    }
    s = ds.summary()
    assert s["shards"] == 3 and s["samples"] == 10 and s["schema_id"] == atdata.schema_id(Row)


# ------------------------------------------------------------------------------------------------ select
def test_select_order_repeats_and_shards(ds: atdata.Dataset[Row]) -> None:
    got = ds.select([9, 0, 4, 4, 3])
    assert [r.n for r in got] == [9, 0, 4, 4, 3]
    assert got[0] == _rows()[9]
    assert ds.select([]) == []


def test_select_applies_map_and_filter(ds: atdata.Dataset[Row]) -> None:
    assert ds.map(lambda r: r.n * 10).select([2, 7]) == [20, 70]
    evens = ds.filter(lambda r: r.n % 2 == 0)
    assert [r.n for r in evens.select([0, 4, 1])] == [0, 8, 2]  # positions after the filter, as the original
    with pytest.raises(atdata.SampleIndexError, match="5 samples"):
        evens.select([5])


def test_select_after_select_range(ds: atdata.Dataset[Row]) -> None:
    part = ds.select_range(3, 7)
    assert [r.n for r in part.select([0, 3])] == [3, 6]


@pytest.mark.parametrize("bad", [[10], [-1], [0, 99]])
def test_select_missing_positions_raise_index_error(ds: atdata.Dataset[Row], bad: list[int]) -> None:
    with pytest.raises(IndexError, match="has 10 samples"):
        ds.select(bad)


def test_select_rejects_non_int_positions(ds: atdata.Dataset[Row]) -> None:
    with pytest.raises(TypeError):
        ds.select([1.0])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        ds.select([True])
    assert [r.n for r in ds.select([np.int64(2)])] == [2]  # type: ignore[list-item]


# ------------------------------------------------------------------------------------------------ process_shards
def test_process_shards_results(ds: atdata.Dataset[Row]) -> None:
    out = ds.process_shards(lambda rows: [r.n for r in rows])
    assert out == dict(zip(ds.list_shards(), [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]], strict=True))
    mapped = ds.map(lambda r: r.n).filter(lambda n: n % 2 == 1)
    assert list(mapped.process_shards(sum).values()) == [1 + 3, 5 + 7, 9]  # the stages apply


def test_process_shards_partial_failure_and_retry(ds: atdata.Dataset[Row]) -> None:
    shards = ds.list_shards()
    calls: list[tuple[str, str]] = []

    def fn(rows: list[Row]) -> int:
        if rows[0].n == 4:
            raise RuntimeError("boom on shard 1")
        return len(rows)

    with pytest.raises(atdata.PartialFailureError) as info:
        ds.process_shards(fn, on_shard_error=lambda s, e: calls.append((s, str(e))))
    e = info.value
    assert isinstance(e, atdata.AtdataError)
    assert e.succeeded_shards == [shards[0], shards[2]]
    assert e.failed_shards == [shards[1]]
    assert e.results == {shards[0]: 4, shards[2]: 2}
    assert isinstance(e.errors[shards[1]], RuntimeError)
    assert calls == [(shards[1], "boom on shard 1")]
    assert str(e).startswith("1/3 shards failed during processing")
    assert ds.process_shards(len, shards=e.failed_shards) == {shards[1]: 4}
    assert ds.process_shards(len, shards=[]) == {}


def test_process_shards_unknown_shard_is_a_failed_shard(ds: atdata.Dataset[Row], tmp_path: Path) -> None:
    other = str(tmp_path / "elsewhere.tar")
    with pytest.raises(atdata.PartialFailureError) as info:
        ds.process_shards(len, shards=[ds.list_shards()[0], other])
    assert info.value.failed_shards == [other]
    assert isinstance(info.value.errors[other], atdata.ShardNotFoundError)
    assert info.value.results == {ds.list_shards()[0]: 4}


def test_process_shards_checkpoint(ds: atdata.Dataset[Row], tmp_path: Path) -> None:
    shards = ds.list_shards()
    ck = tmp_path / "progress.txt"
    seen: list[int] = []

    def flaky(rows: list[Row]) -> int:
        seen.append(rows[0].n)
        if rows[0].n == 8:
            raise OSError("transient")
        return len(rows)

    with pytest.raises(atdata.PartialFailureError):
        ds.process_shards(flaky, checkpoint=ck)
    assert ck.read_text().splitlines() == shards[:2]  # the successes, for resume
    seen.clear()
    assert ds.process_shards(len, checkpoint=str(ck)) == {shards[2]: 2}  # the done ones are skipped
    assert not ck.exists()  # removed once everything succeeded
    ck.write_text("\n".join(shards) + "\n")
    assert ds.process_shards(len, checkpoint=ck) == {}


def test_partial_failure_error_message_and_pickle() -> None:
    import pickle

    errors: dict[str, Exception] = {f"s{i}": ValueError(f"bad {i}") for i in range(7)}
    e = atdata.PartialFailureError(["ok"], list(errors), errors, {"ok": 1})
    lines = str(e).splitlines()
    assert lines[0] == "7/8 shards failed during processing"
    assert lines[1:6] == [f"  s{i}: bad {i}" for i in range(5)]
    assert lines[6] == "  ... and 2 more"
    assert lines[-1] == "Access .succeeded_shards (1) and .failed_shards (7) to inspect or retry."
    back = pickle.loads(pickle.dumps(e))
    assert back.failed_shards == e.failed_shards and back.results == {"ok": 1} and str(back) == str(e)


# ------------------------------------------------------------------------------------------------ the original
def _original(original_atdata: Any, code: str) -> Any:
    """Run ``code`` under the original atdata (the ``original_atdata`` fixture's environment)."""
    return original_atdata.run(textwrap.dedent(code), {})


@pytest.mark.integration
def test_original_write_samples_reads_here_and_describes_alike(tmp_path: Path, original_atdata: Any) -> None:
    got = _original(
        original_atdata,
        f"""
        import json, atdata, numpy as np
        from numpy.typing import NDArray
        @atdata.packable
        class Row:
            x: NDArray
            n: int
            name: str
        ds = atdata.write_samples([Row(x=np.full(2, i, np.float32), n=i, name=f"r{{i}}") for i in range(10)],
                                  "{tmp_path}/o/train.tar", maxcount=4)
        d = ds.describe()
        print(json.dumps({{"url": ds.url, "shards": d["shards"], "num": d["num_shards"], "cols": ds.column_names,
                          "sel": [r.n for r in ds.select([9, 0, 4])]}}))
        """,
    )
    ours = atdata.Dataset[Row](got["url"])
    assert ours.list_shards() == got["shards"]
    assert ours.describe()["num_shards"] == got["num"] and ours.column_names == got["cols"]
    assert [r.n for r in ours.select([9, 0, 4])] == got["sel"]
    mine = atdata.write_samples(_rows(), tmp_path / "m" / "train.tar", maxcount=4, progress=False)
    assert mine.url.replace("/m/", "/o/") == got["url"]  # the same names and the same brace url


@pytest.mark.integration
def test_as_wds_written_here_reads_in_the_original(tmp_path: Path, original_atdata: Any) -> None:
    import webdataset as wds

    with wds.TarWriter(str(tmp_path / "w.tar")) as sink:
        for r in _rows(3):
            sink.write(r.as_wds)
    got = _original(
        original_atdata,
        f"""
        import json, atdata
        from numpy.typing import NDArray
        @atdata.packable
        class Row:
            x: NDArray
            n: int
            name: str
        print(json.dumps({{"rows": [[r.n, r.name, r.x.tolist()] for r in atdata.Dataset[Row]("{tmp_path}/w.tar")]}}))
        """,
    )
    assert got["rows"] == [[i, f"r{i}", [float(i)] * 2] for i in range(3)]
