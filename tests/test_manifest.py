"""Per-shard manifests and queries (atdata_torch.manifest): fields, aggregates, files beside the shards, queries,
and the errors for missing or broken manifests. The cross-library checks are in test_original_interop.py."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pytest

import atdata_torch as atd
from atdata_torch.errors import (
    ManifestNotFoundError,
    MissingDependencyError,
    SchemaError,
    ShardFormatError,
)
from atdata_torch.manifest import (
    F,
    ManifestBuilder,
    ManifestField,
    ManifestWriter,
    NumericAggregate,
    Predicate,
    QueryExecutor,
    SampleLocation,
    ShardManifest,
    build_manifests,
    create_aggregate,
    manifest_paths,
    query_fields,
    resolve_manifest_fields,
)


@atd.packable
class Row:
    label: str
    score: float
    n: int
    flag: bool
    tags: list[str]
    img: atd.NDArray
    blob: bytes = b""
    opt: str | None = None


def rows(n: int = 10) -> list[Row]:
    return [
        Row(f"c{i % 3}", i / 10, i, i % 2 == 0, [f"t{i % 2}", "x"], np.full(3, i, np.int16), opt=None if i % 2 else "o")
        for i in range(n)
    ]


HEADER_KEYS = [
    "manifest_version",
    "shard_id",
    "schema_type",
    "schema_version",
    "num_samples",
    "size_bytes",
    "created_at",
    "aggregates",
]


# ------------------------------------------------------------------------------------------------ fields


def test_fields_are_inferred_marked_and_excluded() -> None:
    @atd.packable
    class Local:  # string annotations of a function-local class (from __future__ import annotations)
        a: Annotated[str, ManifestField("categorical", exclude=True)]
        b: Annotated[int, ManifestField("categorical")]
        c: float
        d: bool
        e: list[int]
        f: atd.NDArray
        g: bytes
        h: dict[str, int]
        i: int | None = None

    got = {k: v.aggregate for k, v in resolve_manifest_fields(Local).items()}
    assert got == {"b": "categorical", "c": "numeric", "d": "categorical", "e": "set", "i": "numeric"}
    assert list(resolve_manifest_fields(Row)) == ["label", "score", "n", "flag", "tags", "opt"]


def test_fields_need_a_typed_sample_class() -> None:
    with pytest.raises(SchemaError, match="typed sample class") as e:
        resolve_manifest_fields(atd.DictSample)
    assert isinstance(e.value, TypeError)  # as the original raised
    with pytest.raises(ValueError, match="expected one of categorical, numeric, set"):
        ManifestField("mean")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ aggregates


def test_aggregates() -> None:
    num = NumericAggregate()
    assert num.to_dict() == {"type": "numeric", "min": None, "max": None, "mean": 0.0, "count": 0}
    for v in [2, math.nan, -1.5]:
        num.add(v)
    assert num.to_dict() == {"type": "numeric", "min": -1.5, "max": 2.0, "mean": 0.25, "count": 2}
    cat = create_aggregate("categorical")
    for v in [True, False, True]:
        cat.add(v)
    assert cat.to_dict() == {"type": "categorical", "cardinality": 2, "value_counts": {"True": 2, "False": 1}}
    with pytest.raises(ValueError, match="unknown aggregate kind"):
        create_aggregate("median")


# ------------------------------------------------------------------------------------------------ writing


def test_write_samples_writes_a_manifest_beside_each_shard(tmp_path: Path) -> None:
    ds = atd.write_samples(rows(), tmp_path / "train.tar", maxcount=4, manifest=True, progress=False)
    shards = ds.list_shards()
    assert [os.path.basename(s) for s in shards] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]
    total = 0
    for shard in shards:
        j, p = manifest_paths(shard)
        header = json.loads(Path(j).read_text())
        assert list(header) == HEADER_KEYS
        assert header["shard_id"] == Path(shard).stem and header["schema_type"] == "Row"
        m = ShardManifest.from_files(j, p)
        idx = ds.shard_index(shard)
        assert list(m.samples["__key__"]) == idx.keys
        assert list(m.samples["__offset__"]) == idx.offsets  # where each member's tar header starts
        assert list(m.samples["__size__"]) == idx.payload_sizes
        assert m.size_bytes == sum(idx.payload_sizes) and m.num_samples == idx.count
        assert list(m.samples.columns) == [
            "__key__",
            "__offset__",
            "__size__",
            "label",
            "score",
            "n",
            "flag",
            "tags",
            "opt",
        ]
        assert all(isinstance(t, list) for t in m.samples["tags"])
        total += m.num_samples
    assert total == 10
    last = ShardManifest.from_files(*manifest_paths(shards[2]))
    assert last.aggregates["opt"] == {"type": "categorical", "cardinality": 1, "value_counts": {"o": 1}}
    assert last.aggregates["n"] == {"type": "numeric", "min": 8.0, "max": 9.0, "mean": 8.5, "count": 2}


def test_shard_writer_manifest_and_abort(tmp_path: Path) -> None:
    with atd.ShardWriter(tmp_path / "a.tar", manifest=True) as w:
        for r in rows(3):
            w.write(r)
    assert os.path.exists(tmp_path / "a.manifest.json") and os.path.exists(tmp_path / "a.manifest.parquet")
    assert (os.stat(tmp_path / "a.manifest.json").st_mode & 0o777) == (0o666 & ~_umask())
    with pytest.raises(RuntimeError, match="boom"), atd.ShardWriter(tmp_path / "b.tar", manifest=True) as w:
        w.write(rows(1)[0])
        raise RuntimeError("boom")
    assert sorted(p for p in os.listdir(tmp_path) if p.startswith("b")) == []


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_untyped_samples_cannot_have_manifests(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="typed sample class"):
        atd.write_samples([{"a": 1}], tmp_path / "d.tar", manifest=True, progress=False)
    assert os.listdir(tmp_path) == []


def test_missing_arrow_extra_fails_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(MissingDependencyError, match=r"atdata-torch\[arrow\]"):
        atd.write_samples(rows(2), tmp_path / "x.tar", manifest=True, progress=False)
    assert os.listdir(tmp_path) == []


def test_manifest_writer_is_all_or_nothing(tmp_path: Path) -> None:
    b = ManifestBuilder(Row, "s", source_job_id="job-1", parent_shards=["p-0"])
    for i, r in enumerate(rows(2)):
        b.add_sample(key=f"k{i}", offset=1024 * i, size=50, sample=r)
    m = b.build()
    j, p = ManifestWriter(tmp_path / "s.tar").write(m)
    assert (j.name, p.name) == ("s.manifest.json", "s.manifest.parquet")
    assert json.loads(j.read_text())["provenance"] == {"source_job_id": "job-1", "parent_shards": ["p-0"]}
    m.aggregates["score"]["mean"] = math.nan
    with pytest.raises(SchemaError, match="no NaN"):
        ManifestWriter(tmp_path / "t").write(m)
    assert sorted(os.listdir(tmp_path)) == ["s.manifest.json", "s.manifest.parquet"]


# ------------------------------------------------------------------------------------------------ queries


@pytest.fixture
def ds(tmp_path: Path) -> Any:
    return atd.write_samples(rows(), tmp_path / "q.tar", maxcount=4, manifest=True, progress=False)


def test_query_with_predicates_and_functions(ds: Any) -> None:
    Q = ds.fields
    assert repr(Q) == "RowFields(label, score, n, flag, tags, opt)"
    keys = lambda where: [loc.key for loc in ds.query(where=where)]  # noqa: E731
    assert keys((Q.label == "c1") & (Q.n > 2)) == ["00000004", "00000007"]
    assert keys(Q.score.between(0.3, 0.5)) == ["00000003", "00000004", "00000005"]
    assert keys(~(Q.n > 1) | (Q.n == 9)) == ["00000000", "00000001", "00000009"]
    assert keys(Q.flag == False) == ["00000001", "00000003", "00000005", "00000007", "00000009"]  # noqa: E712
    assert keys(F.label.isin(["c2"]) & (Q.n != 5)) == ["00000002", "00000008"]
    assert keys(lambda df: df["tags"].apply(lambda t: "t1" in t) & (df["n"] < 4)) == ["00000001", "00000003"]
    assert keys(Q.opt == "o") == ["00000000", "00000002", "00000004", "00000006", "00000008"]
    loc = ds.query(where=Q.n == 5)[0]
    assert loc == SampleLocation(ds.list_shards()[1], "00000005", 1024)
    assert ds.get(loc.key).n == 5


def test_query_errors(ds: Any) -> None:
    with pytest.raises(SchemaError, match=r"reads \['nope'\]") as e:
        ds.query(where=F.nope > 1)
    assert e.value.field == "nope"
    with pytest.raises(SchemaError, match="one boolean per manifest row"):
        ds.query(where=lambda df: df["n"])


def test_query_without_manifests_names_the_fix(tmp_path: Path, ds: Any) -> None:
    plain = atd.write_samples(rows(3), tmp_path / "plain.tar", progress=False)
    with pytest.raises(ManifestNotFoundError, match=r"manifest=True") as e:
        plain.query(where=F.n > 0)
    assert isinstance(e.value, FileNotFoundError) and e.value.shard == plain.list_shards()[0]
    os.unlink(manifest_paths(ds.list_shards()[1])[1])
    with pytest.raises(ManifestNotFoundError, match="1 of 3 shard"):
        ds.query(where=F.n > 0)


def test_executor_from_directory_and_header_only(ds: Any) -> None:
    d = os.path.dirname(ds.list_shards()[0])
    ex = QueryExecutor.from_directory(d)
    assert [m.shard_id for m in ex.manifests] == ["q-000000", "q-000001", "q-000002"]
    assert [(loc.shard, loc.key) for loc in ex.query(F.n >= 8)] == [("q-000002", "00000008"), ("q-000002", "00000009")]
    only = ShardManifest.from_json_only(manifest_paths(ds.list_shards()[0])[0])
    assert only.num_samples == 4 and len(only.samples) == 0
    with pytest.raises(ManifestNotFoundError, match=r"without its \.manifest\.parquet"):
        QueryExecutor([only]).query(F.n > 0)
    with pytest.raises(ManifestNotFoundError):
        QueryExecutor.from_directory(os.path.join(d, "missing"))


def test_a_manifest_for_another_shard_is_refused_then_rebuilt(tmp_path: Path) -> None:
    atd.write_samples(rows(4), tmp_path / "a.tar", manifest=True, progress=False)
    for name in ("a.tar", "a.manifest.json", "a.manifest.parquet"):
        os.rename(tmp_path / name, tmp_path / name.replace("a.", "b."))
    ds = atd.Dataset[Row](tmp_path / "b.tar")
    with pytest.raises(ShardFormatError, match=r"written for shard 'a'.*build_manifests"):
        ds.query(where=F.n > 1)
    (m,) = build_manifests(ds, write=False)
    assert m.shard_id == "b" and m.num_samples == 4
    with pytest.raises(ShardFormatError):
        ds.query(where=F.n > 1)  # write=False wrote nothing
    build_manifests(ds)
    assert [loc.key for loc in ds.query(where=F.n > 1)] == ["00000002", "00000003"]


def test_broken_manifests(tmp_path: Path, ds: Any) -> None:
    j, p = manifest_paths(ds.list_shards()[0])
    Path(j).write_text("{not json")
    with pytest.raises(ShardFormatError, match="not valid JSON") as e:
        ShardManifest.from_files(j, p)
    assert isinstance(e.value, ValueError)
    Path(j).write_text(json.dumps({"shard_id": "x"}))
    with pytest.raises(ShardFormatError, match="lacks"):
        ShardManifest.from_files(j, p)
    Path(p).write_bytes(b"PAR1 nope")
    with pytest.raises(ShardFormatError, match="not a readable parquet"):
        ShardManifest.from_files(manifest_paths(ds.list_shards()[1])[0], p)


def test_reads_the_originals_parquet_layout(tmp_path: Path) -> None:
    """fastparquet (the original) stores list fields as JSON text, and an empty shard as a frame without columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not hasattr(pa, "json_"):
        pytest.skip("this pyarrow has no JSON extension type to write the original's layout with")
    table = pa.table(
        {
            "__key__": ["a", "b"],
            "__offset__": pa.array([0, 101], pa.int64()),
            "__size__": pa.array([101, 101], pa.int64()),
            "tags": pa.array(['["t0", "x"]', None], type=pa.json_()),
        }
    )
    pq.write_table(table, tmp_path / "o.parquet")
    header = {k: None for k in HEADER_KEYS} | {
        "manifest_version": "1.0.0",
        "shard_id": "o",
        "schema_type": "Row",
        "schema_version": "1.0.0",
        "num_samples": 2,
        "size_bytes": 202,
        "created_at": "2026-01-01T00:00:00+00:00",
        "aggregates": {},
    }
    (tmp_path / "o.json").write_text(json.dumps(header))
    m = ShardManifest.from_files(tmp_path / "o.json", tmp_path / "o.parquet")
    assert list(m.samples["tags"]) == [["t0", "x"], None]
    assert [loc.key for loc in QueryExecutor([m]).query(lambda df: df["tags"].notna())] == ["a"]
    pq.write_table(pa.table({}), tmp_path / "e.parquet")
    assert len(ShardManifest.from_files(tmp_path / "o.json", tmp_path / "e.parquet").samples) == 0


def test_predicate_repr_and_query_fields() -> None:
    pred = ((F.a > 1) & (F.b <= 2) & (F.c >= 0)) | ~(F.d < 3)
    assert isinstance(pred, Predicate)
    assert repr(pred) == "((Predicate('a' > 1) & Predicate('b' <= 2) & Predicate('c' >= 0)) | ~Predicate('d' < 3))"
    assert pred.fields() == {"a", "b", "c", "d"}
    assert repr(query_fields(Row).tags) == "FieldProxy('tags')"
    with pytest.raises(AttributeError):
        F._private  # noqa: B018


# ------------------------------------------------------------------------------------------------ remote shards (c17d)
def _names(d: Path) -> list[str]:
    return sorted(p.name for p in d.glob("*.tar"))


@pytest.mark.integration
def test_query_over_http_fetches_the_manifests_through_the_source(http_server: Any, http_root: Path) -> None:
    local = atd.write_samples(rows(10), http_root / "h.tar", maxcount=4, manifest=True, progress=False)
    urls = [http_server.url(n) for n in _names(http_root)]
    ds = atd.Dataset[Row](urls, headers={"X-Atd-Test": "c17d"}, retries=0)
    assert repr(ds.fields) == repr(local.fields)
    got = ds.query(where=(F.n >= 3) & (F.label == "c0"))
    want = local.query(where=(F.n >= 3) & (F.label == "c0"))
    assert [(g.key, g.offset) for g in got] == [(w.key, w.offset) for w in want] and len(got) == 3
    assert [g.shard for g in got] == urls  # n = 3, 6, 9: one per shard, named as listed
    reqs = http_server.requests("/h-000001.manifest.parquet")
    assert reqs and reqs[0].headers.get("x-atd-test") == "c17d"  # the dataset's own source and options
    os.unlink(http_root / "h-000002.manifest.json")
    with pytest.raises(ManifestNotFoundError, match=r"h-000002\.manifest\.json") as e:
        ds.query(where=F.n > 0)
    assert e.value.shard == urls[2] and "manifest=True" in str(e.value)
    (http_root / "h-000002.manifest.json").write_text("{not json")
    with pytest.raises(ShardFormatError, match=r"h-000002\.manifest\.json.*not valid JSON"):
        QueryExecutor.from_shard_urls(urls).query(F.n > 0)  # no source given: one with the default options


@pytest.mark.integration
def test_query_over_s3_shards_written_by_the_s3_data_store(
    moto_endpoint: str, aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import uuid

    from remote_data import moto_s3_client

    from atdata_torch.index import S3DataStore

    bucket = f"atd-man-{uuid.uuid4().hex[:10]}"
    moto_s3_client(moto_endpoint).create_bucket(Bucket=bucket)
    store = S3DataStore({**aws_env, "AWS_ENDPOINT": moto_endpoint}, bucket=bucket)
    urls = store.write_shards(rows(10), prefix="q", maxcount=4, manifest=True)
    local = atd.write_samples(rows(10), tmp_path / "l.tar", maxcount=4, manifest=True, progress=False)
    ds = atd.Dataset[Row](list(urls), endpoint=moto_endpoint, retries=0)
    got = ds.query(where=F.score > 0.75)
    assert [(g.shard, g.key) for g in got] == [(urls[2], "00000008"), (urls[2], "00000009")]
    assert [g.offset for g in got] == [w.offset for w in local.query(where=F.score > 0.75)]
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)  # the default options: boto3's environment
    assert len(QueryExecutor.from_shard_urls(list(urls)).query(lambda df: df["n"] % 2 == 0)) == 5
    missing = f"s3://{bucket}/q/nothing-000000.tar"
    with pytest.raises(ManifestNotFoundError, match="nothing-000000"):
        atd.Dataset[Row]([missing], endpoint=moto_endpoint, retries=0).query(where=F.n > 0)
