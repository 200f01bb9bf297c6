"""The original atdata's index spelling: ``Index(provider=..., path=..., redis=..., data_store=...)``,
``LocalDiskStore`` / ``ShardWriteResult`` / ``AbstractDataStore``, ``verify_checksums``, ``generate_cid`` /
``verify_cid``, ``Repository`` / ``create_repository``, ``get_default_index`` / ``set_default_index``, and the
alias modules ``atdata_torch.local`` / ``.stores`` / ``.repository`` / ``.promote``.

The original atdata itself (the ``original_atdata`` fixture) reads what we wrote."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_index import redis_server  # noqa: F401  (the session's real redis-server)

import atdata_torch as atd
from atdata_torch.errors import IndexStoreError, SourceError
from atdata_torch.index import (
    AbstractDataStore,
    Index,
    LocalDiskStore,
    RedisStore,
    Repository,
    ShardWriteResult,
    SqliteStore,
    create_repository,
    generate_cid,
    generate_cid_from_bytes,
    get_default_index,
    set_default_index,
    verify_checksums,
    verify_cid,
)


@atd.packable
class IdxRow:
    """A row for the index compatibility tests."""

    x: atd.NDArray
    label: str


def _rows(n: int) -> list[IdxRow]:
    return [IdxRow(np.arange(3.0) + i, f"r{i}") for i in range(n)]


# ------------------------------------------------------------------------------------------------------ Index()
def test_index_accepts_the_originals_sqlite_spelling(tmp_path: Path) -> None:
    for i, make in enumerate(
        [
            lambda p: Index(provider="sqlite", path=p),
            lambda p: Index("sqlite", path=p),
            lambda p: Index(path=p),
            lambda p: Index(p),  # ours, unchanged
            lambda p: Index(create_repository("sqlite", path=p)),
        ]
    ):
        p = tmp_path / f"i{i}.db"
        with make(p) as index:
            assert isinstance(index.store, SqliteStore) and index.store.path == p
            assert index.data_store is None and index.atmosphere is None


def test_index_refuses_what_it_cannot_do_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(IndexStoreError, match="no PostgreSQL"):
        Index(provider="postgres")
    with pytest.raises(IndexStoreError, match="no PostgreSQL"):
        Index(provider="postgres", dsn="postgresql://u@h/db")
    with pytest.raises(IndexStoreError, match=r"repos=.*open each repository"):
        Index(path=tmp_path / "a.db", repos={"lab": create_repository("sqlite", path=tmp_path / "lab.db")})
    with pytest.raises(IndexStoreError, match="expected 'sqlite', 'redis'"):
        Index(provider="mysql")
    with pytest.raises(IndexStoreError, match="not both"):
        Index(tmp_path / "a.db", provider="sqlite")


@pytest.mark.integration
def test_index_accepts_the_originals_redis_spelling(redis_server: str) -> None:  # noqa: F811
    import redis

    client = redis.Redis.from_url(redis_server)
    port = int(redis_server.rsplit(":", 1)[1].split("/")[0])
    for index in (
        Index(redis=client),
        Index("redis", host="127.0.0.1", port=port, db=0),
        Index(provider="redis", redis=redis_server),
    ):
        assert isinstance(index.store, RedisStore)
        entry = index.insert_dataset(["/d/a.tar"], name="redis-compat", sample_type=IdxRow)
        assert index.get_entry(entry.cid).name == "redis-compat"
    repo = create_repository("redis", redis=client)
    assert isinstance(repo, Repository) and isinstance(repo.provider, RedisStore)
    client.close()


# ------------------------------------------------------------------------------------------------------ stores
def test_local_disk_store_writes_the_originals_layout(tmp_path: Path) -> None:
    ds = atd.write_samples(_rows(5), tmp_path / "src.tar", progress=False)
    store = LocalDiskStore(root=tmp_path / "store")
    assert isinstance(store, AbstractDataStore) and store.supports_streaming() and store.read_url("x") == "x"
    urls = store.write_shards(ds, prefix="rows/v1", maxcount=2, cache_local=True)
    assert isinstance(urls, ShardWriteResult) and isinstance(urls, list) and len(urls) == 3
    pat = re.compile(re.escape(str(store.root / "rows" / "v1")) + r"/data--[0-9a-f]{8}--00000[0-2]\.tar$")
    assert all(pat.match(u) for u in urls), urls
    assert set(urls.checksums) == set(urls)
    back = atd.Dataset(list(urls), sample_type=IdxRow)
    assert [s.label for s in back.ordered()] == ["r0", "r1", "r2", "r3", "r4"]
    empty = atd.Dataset(list(urls), sample_type=IdxRow).filter(lambda s: False)
    with pytest.raises(SourceError, match="no samples"):
        store.write_shards(empty, prefix="none")


def test_write_samples_through_a_local_disk_store_and_verify_checksums(tmp_path: Path) -> None:
    store = LocalDiskStore(root=tmp_path / "store")
    with Index(provider="sqlite", path=tmp_path / "i.db", data_store=store) as index:
        entry = index.write_samples(_rows(5), name="rows", maxcount=2, manifest=False, force=False, progress=False)
        assert all(u.startswith(str(store.root / "rows") + "/data--") for u in entry.data_urls)
        assert verify_checksums(entry) == {u: "ok" for u in entry.data_urls}
        with open(entry.data_urls[0], "r+b") as f:  # flip a byte of the first shard
            f.seek(600)
            byte = f.read(1)
            f.seek(600)
            f.write(bytes([byte[0] ^ 0xFF]))
        os.unlink(entry.data_urls[1])
        report = verify_checksums(entry)
        assert report[entry.data_urls[0]] == "mismatch" and report[entry.data_urls[2]] == "ok"
        assert report[entry.data_urls[1]].startswith("error:")
        remote = index.insert_dataset(["https://h/a.tar", "/nowhere.tar"], name="remote", sample_type=IdxRow)
        assert verify_checksums(remote) == {"https://h/a.tar": "skipped", "/nowhere.tar": "skipped"}


def test_insert_dataset_copies_through_the_data_store(tmp_path: Path) -> None:
    ds = atd.write_samples(_rows(3), tmp_path / "src.tar", progress=False)
    store = LocalDiskStore(root=tmp_path / "store")
    with Index(path=tmp_path / "i.db") as index:
        plain = index.insert_dataset(ds, name="plain", force=True, copy=False)
        assert plain.data_urls == [str(tmp_path / "src.tar")]
        copied = index.insert_dataset(ds, name="copied", data_store=store)
        assert copied.data_urls[0].startswith(str(store.root / "copied") + "/data--")
        assert verify_checksums(copied) == {copied.data_urls[0]: "ok"}
        loaded = index.load("copied", split="train")
        assert [s.label for s in loaded.ordered()] == ["r0", "r1", "r2"]


class _ListStore:
    """A third-party store: copies shards into its own directory and returns a plain list (no checksums)."""

    def __init__(self, root: Path) -> None:
        self.inner = LocalDiskStore(root)
        self.calls: list[str] = []

    def write_shards(self, ds: Any, *, prefix: str, **kwargs: Any) -> list[str]:
        self.calls.append(prefix)
        return list(self.inner.write_shards(ds, prefix=prefix))

    def read_url(self, url: str) -> str:
        return url

    def supports_streaming(self) -> bool:
        return True


def test_write_samples_through_another_store(tmp_path: Path) -> None:
    store = _ListStore(tmp_path / "third")
    with Index(path=tmp_path / "i.db", data_store=store) as index:
        entry = index.write_samples(_rows(4), name="third", version="1.0.0", tags=["t"], progress=False)
        assert store.calls == ["third"]
        assert entry.data_urls[0].startswith(str(tmp_path / "third" / "third"))
        assert entry.tags == ["t"] and "checksums" not in (entry.metadata or {})
        assert index.get_dataset("third@1.0.0").cid == entry.cid
        assert len(index.load("third@1.0.0", split="train")) == 4


# ------------------------------------------------------------------------------------------------------ default
def test_default_index_is_what_load_dataset_reads(tmp_path: Path) -> None:  # conftest resets the default
    index = Index(path=tmp_path / "default.db")
    index.write_samples(_rows(2), name="dflt", progress=False)
    set_default_index(index)
    assert get_default_index() is index
    assert [s.label for s in atd.load_dataset("@local/dflt", split="train").ordered()] == ["r0", "r1"]
    index.close()


# ------------------------------------------------------------------------------------------------------ cids
def test_cids_are_the_originals() -> None:
    # values computed by atdata 0.7.0b1's generate_cid / generate_cid_from_bytes
    assert generate_cid({"name": "test", "value": 42}) == "bafyreidnzhwcbncg3avwjjao5o6wx4zhnksmxhdo6w5iaqupexnmzdlb54"
    assert generate_cid_from_bytes(b"abc") == "bafyreif2pall7dybz7vecqka3zo24irdwabwdi4wc55jznaq75q7eaavvu"
    cid = generate_cid({"name": "test"})
    assert verify_cid(cid, {"name": "test"}) and not verify_cid(cid, {"name": "other"})
    with pytest.raises(ValueError, match="DAG-CBOR"):
        generate_cid({"x": math.nan})


def test_alias_modules_have_the_originals_names() -> None:
    import atdata_torch.local as local
    import atdata_torch.promote as promote
    import atdata_torch.repository as repository
    import atdata_torch.stores as stores

    assert local.Index is Index and local.LocalDiskStore is LocalDiskStore
    assert local.LocalDatasetEntry is local.BasicIndexEntry is atd.index.IndexEntry
    assert (local.REDIS_KEY_DATASET_ENTRY, local.REDIS_KEY_SCHEMA) == ("LocalDatasetEntry", "LocalSchema")
    assert stores.LocalDiskStore is LocalDiskStore and stores.ShardWriteResult is ShardWriteResult
    assert repository.create_repository is create_repository and repository.Repository is Repository
    assert promote.promote_to_atmosphere is atd.index.promote_to_atmosphere


# ------------------------------------------------------------------------------------------------------ original
@pytest.mark.integration
def test_the_original_reads_an_index_written_through_a_data_store(tmp_path: Path, original_atdata: Any) -> None:
    store = LocalDiskStore(root=tmp_path / "store")
    with Index(provider="sqlite", path=tmp_path / "i.db", data_store=store) as index:
        entry = index.write_samples(_rows(3), name="cross", maxcount=2, progress=False)
    script = f"""
import json, atdata
index = atdata.Index(provider="sqlite", path={str(tmp_path / "i.db")!r}, atmosphere=None)
e = index.get_dataset("cross")
ds = atdata.Dataset[atdata.DictSample](e.data_urls[0])
print(json.dumps({{"cid": e.cid, "urls": e.data_urls, "verify": atdata.verify_checksums(e),
                   "cid_ok": atdata.verify_cid(e.cid, {{"schema_ref": e.schema_ref, "data_urls": e.data_urls}}),
                   "labels": [s["label"] for s in ds.ordered()]}}))
"""
    got = original_atdata.run(script, {})
    assert got["cid"] == entry.cid and got["urls"] == entry.data_urls and got["cid_ok"]
    assert got["verify"] == {u: "ok" for u in entry.data_urls}
    assert got["labels"] == ["r0", "r1"]


def test_the_originals_local_name_prefixes_and_handle_names(tmp_path: Path) -> None:
    with Index(path=tmp_path / "i.db") as index:
        a = index.write_samples(_rows(1), name="@local/prefixed", progress=False)
        b = index.insert_dataset(a.data_urls, name="local/other", sample_type=IdxRow)
        assert (a.name, b.name) == ("prefixed", "other")
        assert index.get_dataset("@local/prefixed").cid == a.cid and index.get_dataset("other").cid == b.cid
        with pytest.raises(IndexStoreError, match=r"promote_to_atmosphere\(entry, index, atmosphere\)"):
            index.write_samples(_rows(1), name="@alice.test/remote", progress=False)
        with pytest.raises(IndexStoreError, match=r"needs an Atmosphere"):
            index.promote("prefixed")


def test_index_write_samples_with_manifest_true_writes_queryable_manifests(tmp_path: Path) -> None:
    with Index(path=tmp_path / "i.db", data_dir=tmp_path / "data") as index:
        entry = index.write_samples(_rows(5), name="withman", maxcount=2, progress=False, manifest=True)
        ds = atd.load_dataset("@local/withman", index=index, split="train")
    assert all(Path(u[: -len(".tar")] + ".manifest.json").exists() for u in entry.data_urls)
    assert len(ds.query(where=lambda df: df["label"] >= "r0")) == 5


def test_a_failed_index_write_with_manifest_true_leaves_no_manifest(tmp_path: Path) -> None:
    def rows() -> Iterator[IdxRow]:
        yield from _rows(3)
        raise RuntimeError("source broke")

    with (
        Index(path=tmp_path / "i.db", data_dir=tmp_path / "data") as index,
        pytest.raises(RuntimeError, match="source broke"),
    ):
        index.write_samples(rows(), name="broken", maxcount=2, progress=False, manifest=True)
    assert not list((tmp_path / "data").rglob("*.manifest.*")) and not list((tmp_path / "data").rglob("*.tar"))


# ------------------------------------------------------------------------------------------------------ c17d: CIDs
def test_insert_dataset_stores_the_brace_pattern_and_loads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    atd.write_samples(_rows(8), tmp_path / "dir" / "train.tar", maxcount=2, progress=False)
    monkeypatch.chdir(tmp_path)
    pattern = str(tmp_path / "dir" / "train-{000000..000003}.tar")
    with Index(path=tmp_path / "i.db") as index:
        rel = index.insert_dataset(atd.Dataset[IdxRow]("dir/train-{000000..000003}.tar"), name="rel")
        assert rel.data_urls == [pattern]  # one URL, as the original stores ds.url; local paths made absolute
        assert rel.cid == generate_cid({"schema_ref": rel.schema_ref, "data_urls": [pattern]})
        listed = index.insert_dataset(atd.Dataset[IdxRow]("dir/*.tar"), name="glob")  # not a brace pattern
        assert len(listed.data_urls) == 4 and listed.data_urls[0].endswith("train-000000.tar")
        loaded = atd.load_dataset("@local/rel", index=index, split="train")
        assert [s.label for s in loaded.ordered()] == [f"r{i}" for i in range(8)]


@pytest.mark.integration
def test_insert_dataset_gives_the_originals_cid(tmp_path: Path, original_atdata: Any) -> None:
    atd.write_samples(_rows(8), tmp_path / "dir" / "train.tar", maxcount=2, progress=False)
    pattern = str(tmp_path / "dir" / "train-{000000..000003}.tar")
    written = atd.write_samples(_rows(4), tmp_path / "w" / "part.tar", maxcount=2, progress=False)
    with Index(provider="sqlite", path=tmp_path / "ours.db") as index:
        ours = index.insert_dataset(atd.Dataset[IdxRow](pattern), name="pat")
        ours_written = index.insert_dataset(written, name="written")
    script = f"""
import json, sys, atdata
from numpy.typing import NDArray
@atdata.packable
class IdxRow:
    x: NDArray
    label: str
p = json.load(sys.stdin)
theirs = atdata.Index(provider="sqlite", path={str(tmp_path / "theirs.db")!r}, atmosphere=None)
a = theirs.insert_dataset(atdata.Dataset[IdxRow](p["pattern"]), name="pat")
b = theirs.insert_dataset(atdata.Dataset[IdxRow](p["written"]), name="written")
ours = atdata.Index(provider="sqlite", path={str(tmp_path / "ours.db")!r}, atmosphere=None)
e = ours.get_dataset("pat")
labels = [s.label for s in atdata.Dataset[IdxRow](e.data_urls[0]).ordered()]
print(json.dumps({{"cid": a.cid, "urls": a.data_urls, "written": b.cid, "labels": labels}}))
"""
    got = original_atdata.run(script, {"pattern": pattern, "written": written.url})
    assert got["urls"] == ours.data_urls == [pattern]
    assert got["cid"] == ours.cid and got["written"] == ours_written.cid
    assert got["labels"] == [f"r{i}" for i in range(8)]
