"""atdata_torch.testing: the original atdata's test helpers, each used for real (no service, no network)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import atdata_torch as atd
from atdata_torch.atmosphere import (
    Atmosphere,
    DatasetLoader,
    DatasetPublisher,
    LabelLoader,
    LabelPublisher,
    SchemaLoader,
    SchemaPublisher,
)
from atdata_torch.errors import ChecksumError, EmptyDatasetError, PublishError, RecordNotFoundError, SchemaError
from atdata_torch.testing import (  # the three fixtures are used by name, directly
    MockAtmosphere,
    MockAtmosphereClient,
    make_dataset,
    make_samples,
    mock_atmosphere,  # noqa: F401
    mock_index,
    tmp_dataset,  # noqa: F401
    tmp_index,  # noqa: F401
)

pytest_plugins = ["pytester"]


@atd.packable
class Every:
    name: str
    count: int
    score: float
    flag: bool
    raw: bytes
    image: atd.NDArray
    tags: list[str]
    note: str | None = None


@atd.packable
class Pair:
    label: str
    value: int


# ---- make_samples


def test_make_samples_follows_the_originals_rules_and_draws() -> None:
    samples = make_samples(Every, n=3, seed=42)
    assert len(samples) == 3 and all(type(s) is Every for s in samples)
    assert [s.name for s in samples] == ["name_0", "name_1", "name_2"]
    assert [s.count for s in samples] == [0, 1, 2]
    assert [s.flag for s in samples] == [True, False, True]
    assert samples[1].tags == ["tags_1_0", "tags_1_1", "tags_1_2"]
    assert all(s.note is None for s in samples)  # optional: its default
    # numpy's default_rng(seed), drawn in field order per sample: what the original draws, so the same values
    rng = np.random.default_rng(42)
    for s in samples:
        assert s.score == float(rng.random())
        assert s.raw == rng.bytes(16)
        np.testing.assert_array_equal(s.image, rng.standard_normal((4, 4)).astype(np.float32))
    assert samples[0].score == 0.7739560485559633  # the value the original atdata 0.7 gives for seed=42
    assert samples[0].image.shape == (4, 4) and samples[0].image.dtype == np.float32


def test_make_samples_is_reproducible_by_seed() -> None:
    a, b, c = (make_samples(Every, n=4, seed=s) for s in (7, 7, 8))
    assert [x.raw for x in a] == [x.raw for x in b]
    assert [x.score for x in a] == [x.score for x in b] != [x.score for x in c]
    assert make_samples(Pair, n=0) == []


def test_make_samples_refuses_a_non_packable_type() -> None:
    with pytest.raises(SchemaError, match="expected a @packable class"):
        make_samples(dict, n=1)  # type: ignore[type-var]


# ---- make_dataset


def test_make_dataset_writes_a_shard_that_dataset_reads_back(tmp_path: Path) -> None:
    samples = make_samples(Every, n=5, seed=1)
    ds = make_dataset(tmp_path / "out", samples, name="every")
    assert (tmp_path / "out" / "every-000000.tar").is_file()
    assert ds.sample_type is Every and ds.shard_list == [str(tmp_path / "out" / "every-000000.tar")]
    again = atd.Dataset[Every](url=str(tmp_path / "out" / "every-000000.tar"))
    for got, want in zip(again.ordered(), samples, strict=True):
        assert (got.name, got.count, got.score, got.raw, got.tags) == (
            want.name,
            want.count,
            want.score,
            want.raw,
            want.tags,
        )
        np.testing.assert_array_equal(got.image, want.image)


def test_make_dataset_refuses_no_samples(tmp_path: Path) -> None:
    with pytest.raises(EmptyDatasetError, match="samples is empty") as err:
        make_dataset(tmp_path, [])
    assert isinstance(err.value, ValueError)  # as the original raised
    assert not list(tmp_path.iterdir())


# ---- mock_index


def test_mock_index_round_trips_an_entry(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path, make_samples(Pair, n=4, seed=0))
    index = mock_index(tmp_path)
    try:
        assert (tmp_path / "test_index.db").is_file()
        ref = index.publish_schema(Pair, version="1.0.0")
        entry = index.insert_dataset(ds, name="pairs", schema_ref=ref)
        got = index.get_dataset("pairs")
        assert got.cid == entry.cid and got.data_urls == ds.shard_list and got.schema_ref == ref
        assert [s.value for s in atd.Dataset(got.data_urls, sample_type=index.get_schema_type(ref)).ordered()] == [
            0,
            1,
            2,
            3,
        ]
    finally:
        index.close()
    index = mock_index(tmp_path)  # the same file: the entry persisted
    try:
        assert index.get_dataset("pairs").cid == entry.cid
    finally:
        index.close()


def test_mock_index_without_a_path_uses_a_fresh_directory() -> None:
    a, b = mock_index(), mock_index()
    try:
        a.insert_dataset(["/data/a.tar"], name="only-in-a", sample_type=Pair)
        assert [e.name for e in a.list_datasets()] == ["only-in-a"] and b.list_datasets() == []
    finally:
        a.close()
        b.close()


# ---- MockAtmosphere


def test_mock_atmosphere_publishes_and_loads_through_the_publisher_and_loader_classes(tmp_path: Path) -> None:
    samples = make_samples(Pair, n=6, seed=3)
    ds = make_dataset(tmp_path, samples, name="train")
    with MockAtmosphere() as atmo:
        assert isinstance(atmo, Atmosphere) and MockAtmosphereClient is MockAtmosphere
        schema_uri = SchemaPublisher(atmo).publish(Pair, version="1.0.0")
        assert schema_uri.collection == "science.alt.dataset.schema" and schema_uri.authority == atmo.did
        assert SchemaLoader(atmo).get(schema_uri)["name"] == "Pair"
        entry_uri = DatasetPublisher(atmo).publish(ds, name="pairs", schema_uri=str(schema_uri))
        loader = DatasetLoader(atmo)
        assert loader.get(entry_uri)["name"] == "pairs" and loader.get_storage_type(entry_uri) == "blobs"
        back = loader.to_dataset(entry_uri, Pair)  # downloaded from the loopback getBlob server, sha256 checked
        assert [(s.label, s.value) for s in back.ordered()] == [(s.label, s.value) for s in samples]
        label_uri = LabelPublisher(atmo).publish("pairs", entry_uri, version="1.0.0")
        assert LabelLoader(atmo).resolve("test.mock.social", "pairs", "1.0.0") == str(entry_uri)
        assert label_uri.collection == "science.alt.dataset.label"
        loaded = atmo.load("@test.mock.social/pairs@1.0.0", split="train")  # the schema is rebuilt from its record
        assert [s.value for s in loaded.ordered()] == [s.value for s in samples]
        calls = [c for c, _ in atmo._call_log]
        assert calls.count("upload_blob") >= 1 and calls.count("create_record") == 3


def test_mock_atmosphere_checks_blobs_as_a_real_download_would(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path, make_samples(Pair, n=3, seed=0))
    with MockAtmosphere() as atmo:
        entry = atmo.publish_dataset(ds, name="pairs")
        shard = Path(ds.shard_list[0]).read_bytes()
        (cid,) = [c for c, data in atmo._blobs.items() if data == shard]  # the shard (not its index sidecar)
        atmo._blobs[cid] = shard[:600] + bytes([shard[600] ^ 0xFF]) + shard[601:]  # change it behind the record
        with pytest.raises(ChecksumError):
            list(atmo.load(entry, Pair, split="test").ordered())  # "test-000000.tar"


def test_mock_atmosphere_keeps_the_original_mocks_api() -> None:
    atmo = MockAtmosphere(did="did:plc:alice", handle="alice.test")
    try:
        assert not atmo.is_authenticated and atmo.export_session_string() == "mock-session-string"
        assert atmo.login("alice.test", "pw") == {"did": "did:plc:alice", "handle": "alice.test"}
        assert atmo.is_authenticated and not atmo.has_appview
        assert atmo.resolve_did("anyone.test") == "did:plc:alice" and atmo.resolve_did("did:plc:bob") == "did:plc:bob"
        uri = atmo.create_record("science.alt.dataset.lens", {"name": "l"}, rkey="mylens")
        assert uri == "at://did:plc:alice/science.alt.dataset.lens/mylens"
        assert atmo.get_record(uri) == (uri, {"name": "l"}) and atmo.list_lenses() == [{"name": "l"}]
        assert atmo._records == {uri: {"name": "l"}}
        ref = atmo.upload_blob(b"payload")
        assert ref["ref"]["$link"].startswith("bafkrei") and ref["size"] == 7
        assert atmo.get_blob("did:plc:alice", ref["ref"]["$link"]) == b"payload"
        with pytest.raises(RecordNotFoundError):
            atmo.get_blob("did:plc:alice", "bafkreinothere")
        atmo.delete_record(uri)
        atmo.delete_record(uri)  # no error, as on a PDS
        with pytest.raises(RecordNotFoundError, match="mylens"):
            atmo.get_record(uri)
        atmo.reset()
        assert atmo._call_log == [] and atmo._blobs == {} and not atmo.is_authenticated
    finally:
        atmo.close()


def test_mock_atmosphere_runs_the_real_xrpc_checks() -> None:
    with MockAtmosphere() as atmo:
        with pytest.raises(PublishError, match="float"):
            atmo.create_record("science.alt.dataset.entry", {"metadata": {"lr": 0.1}})
        uris = [atmo.create_record("science.alt.dataset.label", {"n": i}) for i in range(205)]
        listed = [u for u, _ in atmo.list_records("science.alt.dataset.label")]  # three pages of 100
        assert sorted(listed) == sorted(uris) and listed == sorted(listed, reverse=True)
        with pytest.raises(atd.AuthError):  # another account's repo
            atmo.create_record("science.alt.dataset.label", {"n": 0}, repo="did:plc:someoneelse")


# ---- fixtures


def test_fixtures_used_directly(mock_atmosphere: MockAtmosphere, tmp_dataset: Any, tmp_index: Any) -> None:  # noqa: F811
    assert mock_atmosphere.is_authenticated and mock_atmosphere.handle == "test.mock.social"
    assert [(s.name, s.value) for s in tmp_dataset.ordered()][:2] == [("s0", 0), ("s1", 1)]
    assert len(list(tmp_dataset.ordered())) == 10
    entry = tmp_index.insert_dataset(tmp_dataset, name="tmp")
    assert tmp_index.get_dataset("tmp").cid == entry.cid


def test_fixtures_load_as_a_pytest_plugin(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["atdata_torch.testing"]\n')
    pytester.makepyfile(
        """
        from atdata_torch.atmosphere import SchemaPublisher

        def test_uses_all(mock_atmosphere, tmp_dataset, tmp_index):
            uri = SchemaPublisher(mock_atmosphere).publish(tmp_dataset.sample_type, version="1.0.0")
            assert uri.authority == mock_atmosphere.did
            assert sum(1 for _ in tmp_dataset.ordered()) == 10
            tmp_index.insert_dataset(tmp_dataset, name="x")
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_testing_imports_without_pytest() -> None:
    code = (
        "import sys\n"
        "sys.modules['pytest'] = None\n"  # import pytest now fails and find_spec finds none: as if not installed
        "import atdata_torch.testing as t\n"
        "assert not hasattr(t, 'mock_atmosphere') and callable(t.make_samples)\n"
        "print('ok')\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(atd.__file__).parent.parent), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_mock_atmosphere_backs_the_blob_store_and_the_atmosphere_index(tmp_path: Path) -> None:
    from atdata_torch.atmosphere import AtmosphereIndex, PDSBlobStore

    samples = make_samples(Pair, n=4, seed=5)
    ds = make_dataset(tmp_path, samples, name="train")
    with MockAtmosphere() as atmo:
        up = PDSBlobStore(atmo).write_shards(ds)  # the shard file, byte for byte
        assert [atmo.get_blob(atmo.did, ref["ref"]["$link"]) for ref in up.blob_refs] == [
            Path(ds.shard_list[0]).read_bytes()
        ]
        index = AtmosphereIndex(atmo)
        entry = index.insert_dataset(ds, name="pairs", schema_ref=index.publish_schema(Pair))
        assert index.get_dataset(str(entry.uri)).name == "pairs" and [e.name for e in index.list_datasets()] == [
            "pairs"
        ]
        back = atd.Dataset(index.get_dataset(str(entry.uri)).data_urls, sample_type=Pair)
        assert [s.label for s in back.ordered()] == [s.label for s in samples]


def test_an_aggregator_skips_a_mock_without_an_appview(tmp_index: Any) -> None:  # noqa: F811
    tmp_index.insert_dataset(["/data/mnist.tar"], name="mnist", sample_type=Pair)
    with MockAtmosphere() as atmo:
        search = atd.SearchAggregator([atd.AppViewSearchBackend(atmo), atd.LocalSearchBackend(tmp_index)])
        assert [(r.name, r.source) for r in search.search(text="mni").items] == [("mnist", "local")]


def test_an_index_promotes_to_a_mock_atmosphere(tmp_path: Path) -> None:
    samples = make_samples(Pair, n=3, seed=2)
    ds = make_dataset(tmp_path, samples)
    with MockAtmosphere() as atmo:
        index = mock_index(tmp_path, atmosphere=atmo)
        try:
            index.insert_dataset(ds, name="pairs", version="1.0.0")
            uri = index.promote("pairs")
        finally:
            index.close()
        assert [s.value for s in atmo.load(uri, Pair, split="test").ordered()] == [s.value for s in samples]
        assert atmo.get_dataset("@test.mock.social/pairs@1.0.0").uri == uri  # the version label came along
