"""``S3DataStore`` (the original's S3 data store, over boto3) against the moto server: shards, sidecars and
manifests uploaded, checksums, an index entry written through it that ``load_dataset`` reads back, credentials from a
``.env`` file, and named errors (never showing the secret) when S3 refuses."""

from __future__ import annotations

import hashlib
import sys
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from remote_data import MOTO_ACCESS_KEY, MOTO_SECRET_KEY, moto_s3_client

import atdata_torch as atd
from atdata_torch.errors import ConfigError, MissingDependencyError, SourceError
from atdata_torch.index import Index, S3DataStore, ShardWriteResult, verify_checksums


@atd.packable
class S3Row:
    """A row for the S3 data store tests."""

    n: int
    label: str


def _rows(n: int) -> list[S3Row]:
    return [S3Row(n=i, label=f"r{i}") for i in range(n)]


def _creds(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": MOTO_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": MOTO_SECRET_KEY,
        "AWS_ENDPOINT": endpoint,
        "AWS_REGION": "us-east-1",
    }


@pytest.fixture
def s3(moto_endpoint: str, aws_env: dict[str, str]) -> Iterator[tuple[Any, str]]:
    """(boto3 client, a fresh empty bucket) on the moto server."""
    client = moto_s3_client(moto_endpoint)
    bucket = f"atd-store-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    yield client, bucket
    client.close()


def _keys(client: Any, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))


@pytest.mark.integration
def test_write_shards_uploads_shards_sidecars_and_checksums(
    moto_endpoint: str, s3: tuple[Any, str], tmp_path: Path
) -> None:
    client, bucket = s3
    ds = atd.write_samples(_rows(5), tmp_path / "src.tar", progress=False)
    store = S3DataStore(_creds(moto_endpoint), bucket=bucket)
    urls = store.write_shards(ds, prefix="rows/v1", maxcount=2)
    assert isinstance(urls, ShardWriteResult) and len(urls) == 3
    assert all(u.startswith(f"s3://{bucket}/rows/v1/data--") and u.endswith(f"--00000{i}.tar") for i, u in
               enumerate(urls))  # fmt: skip
    assert len(urls[0].split("--")[1]) == 36  # the original's full uuid4
    keys = _keys(client, bucket)
    for u in urls:
        key = u[len(f"s3://{bucket}/") :]
        assert key in keys and key + ".idx.json" in keys
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert urls.checksums[u] == hashlib.sha256(body).hexdigest()
    back = atd.Dataset[S3Row](list(urls), endpoint=moto_endpoint)
    assert [s.label for s in back.ordered()] == [f"r{i}" for i in range(5)]
    assert len(back) == 5  # from the uploaded sidecars
    assert store.read_url(urls[0]) == f"{moto_endpoint}/{urls[0][len('s3://') :]}"
    assert store.supports_streaming() and isinstance(store, atd.index.AbstractDataStore)


@pytest.mark.integration
def test_index_entry_through_the_store_loads_back(moto_endpoint: str, s3: tuple[Any, str], tmp_path: Path) -> None:
    _, bucket = s3
    store = S3DataStore(_creds(moto_endpoint), bucket=bucket)
    with Index(provider="sqlite", path=tmp_path / "i.db", data_store=store) as index:
        entry = index.write_samples(_rows(4), name="remote-rows", maxcount=3, progress=False)
        assert all(u.startswith(f"s3://{bucket}/remote-rows/data--") for u in entry.data_urls)
        assert set(entry.metadata["checksums"]) == set(entry.data_urls)
        assert set(verify_checksums(entry).values()) == {"skipped"}  # the original's rule for s3:// URLs
        loaded = atd.load_dataset("@local/remote-rows", index=index, split="train", **store.source_options())
        assert [s.label for s in loaded.ordered()] == [f"r{i}" for i in range(4)]
        local = atd.write_samples(_rows(2), tmp_path / "two.tar", progress=False)
        copied = index.insert_dataset(local, name="copied")  # copied through the index's data store
        assert copied.data_urls[0].startswith(f"s3://{bucket}/copied/")
        again = atd.load_dataset("@local/copied", index=index, split="train", endpoint=moto_endpoint)
        assert [s.n for s in again.ordered()] == [0, 1]


@pytest.mark.integration
def test_manifests_are_uploaded_and_queryable_after_download(
    moto_endpoint: str, s3: tuple[Any, str], tmp_path: Path
) -> None:
    pytest.importorskip("pyarrow")
    client, bucket = s3
    store = S3DataStore(_creds(moto_endpoint), bucket=bucket)
    urls = store.write_shards(_rows(4), prefix="m", maxcount=2, manifest=True)
    keys = _keys(client, bucket)
    for u in urls:
        stem = u[len(f"s3://{bucket}/") : -len(".tar")]
        assert stem + ".manifest.json" in keys and stem + ".manifest.parquet" in keys


@pytest.mark.integration
def test_a_failing_upload_is_a_named_error_without_the_secret(moto_endpoint: str, aws_env: dict[str, str]) -> None:
    store = S3DataStore(_creds(moto_endpoint), bucket="no-such-bucket-c17d")
    with pytest.raises(SourceError, match="no-such-bucket-c17d") as info:
        store.write_shards(_rows(2), prefix="p")
    text = "".join(traceback.format_exception(info.value)) + repr(store) + str(store)
    assert "NoSuchBucket" in str(info.value) and "check that bucket" in str(info.value)
    assert MOTO_SECRET_KEY not in text


@pytest.mark.integration
def test_an_empty_dataset_writes_nothing(moto_endpoint: str, s3: tuple[Any, str]) -> None:
    client, bucket = s3
    with pytest.raises(SourceError, match="no samples"):
        S3DataStore(_creds(moto_endpoint), bucket=bucket).write_shards([], prefix="e")
    assert _keys(client, bucket) == []


def test_credentials_from_an_env_file_and_their_errors(tmp_path: Path) -> None:
    env = tmp_path / "s3.env"
    env.write_text(
        "# lab bucket\nexport AWS_ACCESS_KEY_ID=AKIA1\nAWS_SECRET_ACCESS_KEY='s3cr3t'\n"
        "AWS_ENDPOINT=http://127.0.0.1:9 # minio\n"
    )
    store = S3DataStore(env, bucket="lab")
    assert store.credentials["AWS_SECRET_ACCESS_KEY"] == "s3cr3t" and store.endpoint == "http://127.0.0.1:9"
    assert repr(store) == "S3DataStore(bucket='lab', endpoint='http://127.0.0.1:9')"
    assert store.source_options() == {"endpoint": "http://127.0.0.1:9", "access_key": "AKIA1", "secret_key": "s3cr3t"}
    (tmp_path / "bad.env").write_text("AWS_ACCESS_KEY_ID=AKIA1\n")
    with pytest.raises(ConfigError, match="lacks AWS_SECRET_ACCESS_KEY"):
        S3DataStore(tmp_path / "bad.env", bucket="lab")
    with pytest.raises(ConfigError, match="cannot read"):
        S3DataStore(tmp_path / "missing.env", bucket="lab")
    with pytest.raises(ConfigError, match="got only AWS_SECRET_ACCESS_KEY") as info:
        S3DataStore({"AWS_SECRET_ACCESS_KEY": "s3cr3t"}, bucket="lab")
    assert "s3cr3t" not in str(info.value)
    with pytest.raises(ConfigError, match="bucket name"):
        S3DataStore({}, bucket="lab/x")
    from atdata_torch.local import S3DataStore as FromLocal
    from atdata_torch.stores import S3DataStore as FromStores

    assert FromStores is S3DataStore and FromLocal is S3DataStore


def test_missing_boto3_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(MissingDependencyError, match="s3"):
        S3DataStore({}, bucket="lab")
