"""Cross-library tests: the original atdata (0.7.0b1, in its own Python >= 3.12 virtualenv) reads what we write, and
we read what it writes: samples, arrays, order, length, batches and manifest queries.

One subprocess (about 2 s of imports) does all of the original's side: it reads the shards and manifests we wrote,
then writes its own (``write_samples`` with ``manifest=True``, single and sharded, and the docs' pattern,
``ShardWriter`` + ``sample.as_wds`` with ``sample_{i:06d}`` keys), and reports as JSON.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import atdata_torch as atd
from atdata_torch.errors import ManifestNotFoundError, ShardFormatError
from atdata_torch.manifest import build_manifests

pytestmark = pytest.mark.integration

N = 10


@atd.packable
class Rec:
    label: str
    score: float
    n: int
    tags: list[str]
    img: atd.NDArray
    opt: str | None = None


def make(i: int) -> Rec:
    img = np.arange(6, dtype=np.float32).reshape(2, 3) * i
    return Rec(label=f"c{i % 3}", score=i / 10, n=i, tags=[f"t{i % 2}", "x"], img=img, opt=None if i % 2 else f"o{i}")


def dump(s: Any) -> dict[str, Any]:
    return {
        "label": s.label,
        "score": s.score,
        "n": s.n,
        "tags": list(s.tags),
        "img": s.img.tolist(),
        "dtype": str(s.img.dtype),
        "opt": s.opt,
    }


ORIGINAL_SIDE = r"""
import json, os, sys
import numpy as np
import atdata
import webdataset as wds
from numpy.typing import NDArray
from atdata.manifest import ShardManifest

@atdata.packable
class Rec:
    label: str
    score: float
    n: int
    tags: list[str]
    img: NDArray
    opt: str | None = None

def make(i):
    img = np.arange(6, dtype=np.float32).reshape(2, 3) * i
    return Rec(label=f"c{i % 3}", score=i / 10, n=i, tags=[f"t{i % 2}", "x"], img=img, opt=None if i % 2 else f"o{i}")

def dump(s):
    return {"label": s.label, "score": s.score, "n": s.n, "tags": list(s.tags), "img": s.img.tolist(),
            "dtype": str(s.img.dtype), "opt": s.opt}

def locs(found):
    return [[loc.shard, loc.key, loc.offset] for loc in found]

p = json.load(sys.stdin)
res = {}

# 1. read what atdata_torch wrote
ds = atdata.Dataset[Rec](p["ours_url"])
res["ours_samples"] = [dump(s) for s in ds.ordered()]
res["ours_len"] = len(ds)
res["ours_batches"] = [[list(b.n), list(b.img.shape), b.label] for b in ds.ordered(batch_size=4)]
Q = ds.fields
res["ours_fields"] = repr(Q)
res["ours_query"] = locs(ds.query(where=(Q.label == "c1") & (Q.n > 2)))
res["ours_query_tags"] = locs(ds.query(where=lambda df: df["tags"].apply(lambda t: "t1" in list(t))))
res["ours_query_opt"] = locs(ds.query(where=Q.opt.isin(["o4", "o8"])))
m = ShardManifest.from_files(p["ours_manifest_json"], p["ours_manifest_parquet"])
res["ours_manifest"] = {"shard_id": m.shard_id, "num_samples": m.num_samples, "schema_type": m.schema_type,
                        "columns": list(m.samples.columns), "aggregates": m.aggregates}
single = atdata.Dataset[Rec](p["ours_single"])
res["ours_single"] = [s.n for s in single.ordered()]
res["ours_single_query"] = locs(single.query(where=lambda df: df["score"] > 0.65))

# 2. write with the original
out = p["out"]
samples = [make(i) for i in range(p["n"])]
atdata.write_samples(samples, os.path.join(out, "orig.tar"), manifest=True)
atdata.write_samples(samples, os.path.join(out, "origsh.tar"), manifest=True, maxcount=4)
with wds.writer.ShardWriter(os.path.join(out, "docs-%06d.tar"), maxcount=4, verbose=0) as sink:
    for i, s in enumerate(samples):
        sink.write({**s.as_wds, "__key__": f"sample_{i:06d}"})
od = atdata.Dataset[Rec](os.path.join(out, "orig.tar"))
Q = od.fields
res["orig_query"] = locs(od.query(where=(Q.label == "c1") & (Q.n > 2)))
res["orig_query_tags"] = locs(od.query(where=lambda df: df["tags"].apply(lambda t: "t1" in list(t))))
print(json.dumps(res))
"""


@pytest.fixture(scope="module")
def exchange(original_atdata: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Our shards (sharded and single, with manifests), the original's report on them, and the original's shards."""
    ours = tmp_path_factory.mktemp("ours")
    theirs = tmp_path_factory.mktemp("theirs")
    samples = [make(i) for i in range(N)]
    ds = atd.write_samples(samples, ours / "train.tar", maxcount=4, manifest=True, progress=False)
    atd.write_samples(samples, ours / "one.tar", manifest=True, progress=False)
    payload = {
        "ours_url": str(ours / "train-{000000..000002}.tar"),
        "ours_single": str(ours / "one.tar"),
        "ours_manifest_json": str(ours / "train-000001.manifest.json"),
        "ours_manifest_parquet": str(ours / "train-000001.manifest.parquet"),
        "out": str(theirs),
        "n": N,
    }
    report = original_atdata.run(ORIGINAL_SIDE, payload)
    return {"ours": ours, "theirs": theirs, "ds": ds, "report": report}


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


# ---------------------------------------------------------------------------------------------- the original reads ours


def test_original_reads_our_shards_in_order(exchange: dict[str, Any]) -> None:
    r = exchange["report"]
    assert r["ours_samples"] == [dump(make(i)) for i in range(N)]
    assert r["ours_len"] == N
    assert r["ours_single"] == list(range(N))
    assert r["ours_batches"] == [
        [[0, 1, 2, 3], [4, 2, 3], ["c0", "c1", "c2", "c0"]],
        [[4, 5, 6, 7], [4, 2, 3], ["c1", "c2", "c0", "c1"]],
        [[8, 9], [2, 2, 3], ["c2", "c0"]],
    ]


def test_original_queries_our_manifests(exchange: dict[str, Any]) -> None:
    r, ds = exchange["report"], exchange["ds"]
    Q = ds.fields
    assert r["ours_fields"] == repr(Q) == "RecFields(label, score, n, tags, opt)"
    for theirs, where in [
        (r["ours_query"], (Q.label == "c1") & (Q.n > 2)),
        (r["ours_query_tags"], lambda df: df["tags"].apply(lambda t: "t1" in list(t))),
        (r["ours_query_opt"], Q.opt.isin(["o4", "o8"])),
    ]:
        mine = ds.query(where=where)
        # the original names a shard by its stem; we give the shard as the dataset lists it
        assert theirs == [[_stem(loc.shard), loc.key, loc.offset] for loc in mine]
    assert [k for _, k, _ in r["ours_query"]] == ["00000004", "00000007"]
    assert [k for _, k, _ in r["ours_query_opt"]] == ["00000004", "00000008"]
    assert len(r["ours_query_tags"]) == 5
    assert [k for _, k, _ in r["ours_single_query"]] == ["00000007", "00000008", "00000009"]
    m = r["ours_manifest"]
    assert m["shard_id"] == "train-000001" and m["num_samples"] == 4 and m["schema_type"] == "Rec"
    assert m["columns"] == ["__key__", "__offset__", "__size__", "label", "score", "n", "tags", "opt"]
    assert m["aggregates"]["label"] == {
        "type": "categorical",
        "cardinality": 3,
        "value_counts": {"c1": 2, "c2": 1, "c0": 1},
    }
    assert m["aggregates"]["n"] == {"type": "numeric", "min": 4.0, "max": 7.0, "mean": 5.5, "count": 4}
    assert m["aggregates"]["tags"] == {"type": "set", "all_values": ["t0", "t1", "x"]}


def test_our_offsets_point_at_the_members(exchange: dict[str, Any]) -> None:
    """Our ``__offset__`` is where the sample's tar header starts (the original's is a running sum of payload sizes)."""
    shard = exchange["ours"] / "train-000001.tar"
    data = shard.read_bytes()
    for loc in exchange["ds"].query(where=lambda df: df["n"] >= 0):
        if loc.shard == str(shard):
            assert data[loc.offset : loc.offset + 100].rstrip(b"\0") == f"{loc.key}.msgpack".encode()


# ---------------------------------------------------------------------------------------------- we read the original's


def test_we_read_original_write_samples(exchange: dict[str, Any]) -> None:
    theirs: Path = exchange["theirs"]
    for url in [theirs / "orig.tar", str(theirs / "origsh-{000000..000002}.tar")]:
        ds = atd.Dataset[Rec](url)
        got = list(ds.ordered())
        assert [dump(s) for s in got] == [dump(make(i)) for i in range(N)]
        assert all(isinstance(s, Rec) and s.img.dtype == np.float32 for s in got)
        assert len(ds) == N
        batches = list(ds.ordered(batch_size=4))
        assert [b.img.shape for b in batches] == [(4, 2, 3), (4, 2, 3), (2, 2, 3)]


def test_we_query_the_originals_manifests(exchange: dict[str, Any]) -> None:
    r, theirs = exchange["report"], exchange["theirs"]
    ds = atd.Dataset[Rec](theirs / "orig.tar")
    Q = ds.fields
    for expected, where in [
        (r["orig_query"], (Q.label == "c1") & (Q.n > 2)),
        (r["orig_query_tags"], lambda df: df["tags"].apply(lambda t: "t1" in t)),  # the original's JSON lists
    ]:
        assert [[_stem(loc.shard), loc.key, loc.offset] for loc in ds.query(where=where)] == expected
    assert len(r["orig_query"]) == 2 and len(r["orig_query_tags"]) == 5
    assert all(loc.shard == str(theirs / "orig.tar") for loc in ds.query(where=Q.n >= 0))


def test_we_read_the_docs_pattern(exchange: dict[str, Any]) -> None:
    theirs: Path = exchange["theirs"]
    ds = atd.Dataset[Rec](str(theirs / "docs-{000000..000002}.tar"))
    assert [dump(s) for s in ds] == [dump(make(i)) for i in range(N)]
    assert len(ds) == N
    assert ds.get("sample_000007").n == 7
    with pytest.raises(ManifestNotFoundError, match=r"manifest=True"):
        ds.query(where=ds.fields.n > 3)
    assert [m.num_samples for m in build_manifests(ds)] == [4, 4, 2]
    assert [loc.key for loc in ds.query(where=ds.fields.n > 6)] == ["sample_000007", "sample_000008", "sample_000009"]


def test_the_originals_sharded_manifests_are_refused_then_rebuilt(exchange: dict[str, Any], tmp_path: Path) -> None:
    """The original's write_samples(maxcount=) labels each manifest with the previous shard and leaves the last one
    empty (samples 8 and 9 would be missing from every answer): we refuse them, and build_manifests rewrites them."""
    for f in exchange["theirs"].glob("origsh-*"):
        shutil.copy(f, tmp_path / f.name)
    ds = atd.Dataset[Rec](str(tmp_path / "origsh-{000000..000002}.tar"))
    with pytest.raises(ShardFormatError, match="build_manifests"):
        ds.query(where=ds.fields.n > 6)
    build_manifests(ds)
    assert [loc.shard for loc in ds.query(where=ds.fields.n > 6)] == [
        str(tmp_path / f"origsh-00000{i}.tar") for i in (1, 2, 2)
    ]
