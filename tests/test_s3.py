"""S3Source against moto in server mode on 127.0.0.1 (a real S3 API over HTTP), driven through boto3, S3Source,
``Dataset`` and DataLoader workers; credential errors against moto with IAM authentication switched on, and
S3 error translation / resume against the fault-injecting HTTP server posing as an S3 endpoint."""

from __future__ import annotations

import json
import logging
import os
import pickle
import sys
import time
import traceback
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from http_server import FaultServer
from remote_data import (
    FORK_WITH_THREADS,
    MOTO_ACCESS_KEY,
    MOTO_SECRET_KEY,
    Rec,
    deadline,
    moto_s3_client,
    rows,
    write_shards,
)

import atdata_torch as atd
from atdata_torch.sources.s3 import S3Source

# Every test here but the policy check needs moto (or the fault server posing as S3); tests that need moto skip
# when it cannot start, and fail instead under ATDATA_TORCH_REQUIRE_SERVICES=1 (conftest.require_service).
PATTERN = "train-{000000..000003}.tar"


@pytest.fixture(params=[None, 2], ids=["default-layout", "packed"])
def shards(tmp_path: Path, request: pytest.FixtureRequest) -> list[Path]:
    """4 shards of 5 samples, in the default layout and in the compact one (2 samples per tar member)."""
    return write_shards(tmp_path / "local", "train", n=20, per_shard=5, pack=request.param)


@pytest.fixture
def local(shards: list[Path]) -> atd.Dataset[Rec]:
    return atd.Dataset[Rec]([str(p) for p in shards])


@pytest.fixture
def bucket(s3_upload: Callable[..., str], shards: list[Path]) -> str:
    """A fresh bucket with the shards (and sidecars) under ``ds/``, plus objects that are not shards."""
    name = s3_upload(shards, prefix="ds/")
    s3_upload([shards[0]], prefix="other/", bucket=name)
    return name


def creds(endpoint: str, **kw: Any) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "endpoint": endpoint,
        "access_key": MOTO_ACCESS_KEY,
        "secret_key": MOTO_SECRET_KEY,
        "region": "us-east-1",
        "backoff": 0.01,
        "retries": 1,
    }
    opts.update(kw)
    return opts


def _text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)) + repr(exc)


def test_require_service_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import require_service

    monkeypatch.delenv("ATDATA_TORCH_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="moto is unavailable: port busy"):
        require_service("moto", "port busy")
    monkeypatch.setenv("ATDATA_TORCH_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="ATDATA_TORCH_REQUIRE_SERVICES=1 makes this a failure"):
        require_service("moto", "port busy")


# ---------------------------------------------------------------------------------------------------- reading
@pytest.mark.integration
def test_boto3_and_s3source_agree(moto_endpoint: str, bucket: str, shards: list[Path]) -> None:
    client = moto_s3_client(moto_endpoint)
    try:
        body = client.get_object(Bucket=bucket, Key="ds/train-000001.tar")["Body"]
        via_boto3 = body.read()
        body.close()
    finally:
        client.close()
    src = S3Source.from_urls([f"s3://{bucket}/ds/{p.name}" for p in shards], **creds(moto_endpoint))
    assert src.list_shards() == [f"s3://{bucket}/ds/{p.name}" for p in shards]
    assert via_boto3 == shards[1].read_bytes() == bytes(src.buffer(src.list_shards()[1]))
    with src.open_shard(src.list_shards()[2]) as f:
        assert f.read() == shards[2].read_bytes()
    assert src.read_sidecar(src.list_shards()[0]) == Path(str(shards[0]) + ".idx.json").read_bytes()


@pytest.mark.integration
def test_dataset_with_credentials_from_the_environment(
    moto_endpoint: str, bucket: str, local: atd.Dataset[Rec], aws_env: dict[str, str]
) -> None:
    ds = atd.Dataset[Rec](f"s3://{bucket}/ds/{PATTERN}", endpoint=moto_endpoint)
    assert isinstance(ds.source, S3Source)
    assert len(ds) == 20
    assert rows(ds.ordered()) == rows(local.ordered())
    assert rows(ds.ordered(batch_size=7)) == rows(local.ordered())


@pytest.mark.integration
def test_dataset_with_credentials_from_arguments(
    moto_endpoint: str, bucket: str, local: atd.Dataset[Rec], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    # With no credentials anywhere, boto3 cannot sign: a clear SourceError, not a crash in botocore.
    with pytest.raises(atd.SourceError, match="NoCredentialsError"):
        atd.Dataset[Rec](f"s3://{bucket}/ds/{PATTERN}", endpoint=moto_endpoint, retries=0).head(1)
    ds = atd.Dataset[Rec](
        f"s3://{bucket}/ds/{PATTERN}",
        endpoint=moto_endpoint,
        access_key=MOTO_ACCESS_KEY,
        secret_key=MOTO_SECRET_KEY,
        region="us-east-1",
    )
    assert rows(ds.ordered()) == rows(local.ordered())


@pytest.mark.integration
def test_from_prefix_lists_only_shards_in_order(moto_endpoint: str, bucket: str, shards: list[Path]) -> None:
    src = S3Source.from_prefix(bucket, "ds/", **creds(moto_endpoint))
    assert src.keys == [f"ds/{p.name}" for p in shards]  # sorted, sidecars and other/ left out
    assert src.list_prefix("other/") == ["other/train-000000.tar"]
    assert src.list_prefix("ds/", suffix=".idx.json") == [f"ds/{p.name}.idx.json" for p in shards]
    assert src.list_prefix("nothing-here/") == []
    ds = atd.Dataset[Rec](src)
    assert [r[0] for r in rows(ds.ordered())] == list(range(20))


@pytest.mark.integration
def test_ranged_reads(moto_endpoint: str, bucket: str, shards: list[Path]) -> None:
    src = S3Source.from_urls([f"s3://{bucket}/ds/{p.name}" for p in shards], **creds(moto_endpoint))
    url = src.list_shards()[3]
    whole = shards[3].read_bytes()
    for lo, hi in [(0, 1), (0, 512), (777, 9001), (len(whole) - 1024, len(whole))]:
        assert src.read_range(url, lo, hi) == whole[lo:hi]


@pytest.mark.integration
def test_parallel_ranged_parts_over_s3(moto_endpoint: str, bucket: str, local: atd.Dataset[Rec]) -> None:
    src = S3Source.from_prefix(bucket, "ds/", chunk_size=4096, parallel=3, **creds(moto_endpoint))
    ds = atd.Dataset[Rec](src)
    assert rows(ds.ordered(batch_size=5)) == rows(local.ordered(batch_size=5))


@pytest.mark.integration
def test_cache_over_s3(moto_endpoint: str, bucket: str, local: atd.Dataset[Rec], tmp_path: Path) -> None:
    ds = atd.Dataset[Rec](f"s3://{bucket}/ds/{PATTERN}", cache_dir=str(tmp_path / "c"), **creds(moto_endpoint))
    assert rows(ds.ordered()) == rows(local.ordered())
    cache = ds.source.cache  # type: ignore[attr-defined]
    assert cache is not None and len(cache.entries()) == 4
    assert cache.downloads == 4  # the index pass downloaded each shard once; iteration read the cache


@pytest.mark.integration
def test_timeout_option_reaches_the_client(moto_endpoint: str, bucket: str) -> None:
    """BUG (fixed): ``timeout=`` is documented for every remote URL, but ``Dataset("s3://...", timeout=...)``
    raised TypeError, and S3 reads could stall for 60 s per attempt."""
    ds = atd.Dataset[Rec](f"s3://{bucket}/ds/{PATTERN}", timeout=7.5, **creds(moto_endpoint))
    cfg = ds.source._client().meta.config  # type: ignore[attr-defined]
    assert (cfg.connect_timeout, cfg.read_timeout) == (7.5, 7.5)


# ---------------------------------------------------------------------------------------------------- errors
@pytest.mark.integration
def test_missing_key_is_shard_not_found(moto_endpoint: str, bucket: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"s3://{bucket}/ds/train-000099.tar"
    src = S3Source.from_urls([url], **creds(moto_endpoint))
    with deadline(10), pytest.raises(atd.ShardNotFoundError, match="NoSuchKey") as info:
        src.buffer(url)
    assert isinstance(info.value, FileNotFoundError)
    assert url in str(info.value)
    assert MOTO_SECRET_KEY not in _text(info.value)
    assert src.read_sidecar(url) is None  # an absent sidecar is not an error
    with pytest.raises(atd.ShardNotFoundError):
        atd.Dataset[Rec](url, **creds(moto_endpoint)).head(1)
    assert MOTO_SECRET_KEY not in caplog.text  # botocore's DEBUG log included


@pytest.mark.integration
def test_missing_bucket_fails_clearly(moto_endpoint: str, bucket: str) -> None:
    url = "s3://no-such-bucket-atd/ds/train-000000.tar"
    src = S3Source.from_urls([url], **creds(moto_endpoint))
    with deadline(10), pytest.raises(atd.ShardNotFoundError, match="NoSuchBucket") as info:
        src.buffer(url)
    assert "no-such-bucket-atd" in str(info.value)
    with pytest.raises(atd.ShardNotFoundError, match="NoSuchBucket"):
        S3Source.from_prefix("no-such-bucket-atd", "ds/", **creds(moto_endpoint))


@pytest.mark.integration
def test_secret_never_shown(moto_endpoint: str, bucket: str) -> None:
    src = S3Source.from_urls([f"s3://{bucket}/ds/train-000000.tar"], **creds(moto_endpoint, session_token="TOKEN-77"))
    ds = atd.Dataset[Rec](src)
    shown = [repr(src), str(src), repr(ds), str(ds.describe()), str(ds.summary())]
    for text in shown:
        for secret in (MOTO_SECRET_KEY, "TOKEN-77", MOTO_ACCESS_KEY):
            assert secret not in text
    assert "S3Source(bucket=" in repr(src) and moto_endpoint in repr(src)


def test_missing_boto3_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # `import boto3` now raises ImportError
    with pytest.raises(atd.MissingDependencyError, match=r"atdata-torch\[s3\]") as info:
        S3Source("bucket", ["k.tar"])
    assert isinstance(info.value, ImportError)
    assert "boto3" in str(info.value)
    with pytest.raises(atd.MissingDependencyError, match=r"pip install 'atdata-torch\[s3\]'"):
        atd.Dataset("s3://bucket/k-{000000..000001}.tar")


# ---------------------------------------------------------------------------------------------------- credentials
@pytest.fixture
def moto_auth(moto_endpoint: str, aws_env: dict[str, str]) -> Iterator[tuple[str, str]]:
    """Turn on moto's IAM authentication and yield the (access key, secret) of an IAM user allowed ``s3:*``.
    Everything else is refused (InvalidAccessKeyId / SignatureDoesNotMatch, HTTP 403)."""
    import boto3

    iam = boto3.client("iam", endpoint_url=moto_endpoint, region_name="us-east-1")
    user = f"reader-{os.getpid()}-{time.monotonic_ns()}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName=user, PolicyName="read", PolicyDocument=json.dumps(policy))
    iam.close()

    def set_auth_after(count: str) -> None:
        req = urllib.request.Request(
            f"{moto_endpoint}/moto-api/reset-auth",
            data=count.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200

    set_auth_after("0")  # authenticate every request from now on
    try:
        yield key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        set_auth_after("inf")


@pytest.mark.integration
def test_credentials_under_authentication(
    moto_endpoint: str,
    bucket: str,
    local: atd.Dataset[Rec],
    moto_auth: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    access, secret = moto_auth
    url = f"s3://{bucket}/ds/{PATTERN}"
    # Right credentials, from arguments and from the environment.
    ds = atd.Dataset[Rec](url, **creds(moto_endpoint, access_key=access, secret_key=secret))
    assert rows(ds.ordered()) == rows(local.ordered())
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", access)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    assert rows(atd.Dataset[Rec](url, endpoint=moto_endpoint).ordered()) == rows(local.ordered())

    caplog.set_level(logging.DEBUG)
    # A wrong secret and an unknown key id: refused, a SourceError (not "not found"), no secret in sight.
    for wrong_access, wrong_secret, code in [
        (access, "WRONG-SECRET-123", "SignatureDoesNotMatch"),
        ("AKIAUNKNOWN0000000", "WRONG-SECRET-123", "InvalidAccessKeyId"),
    ]:
        bad = atd.Dataset[Rec](url, **creds(moto_endpoint, access_key=wrong_access, secret_key=wrong_secret))
        with deadline(10), pytest.raises(atd.SourceError, match=f"refused by S3 \\({code}\\)") as info:
            bad.head(1)
        assert not isinstance(info.value, FileNotFoundError)
        assert "check the credentials" in str(info.value)
        for s in (wrong_secret, secret):
            assert s not in _text(info.value)
            assert s not in repr(bad)
    assert "WRONG-SECRET-123" not in caplog.text and secret not in caplog.text


# ---------------------------------------------------------------------------------------------------- a fake S3
@pytest.fixture
def fake_s3(tmp_path: Path, shards: list[Path]) -> Iterator[FaultServer]:
    """The fault-injecting HTTP server posing as a path-style S3 endpoint for bucket ``bkt`` (GetObject works:
    ``GET /bkt/<key>`` with ranges)."""
    (tmp_path / "www" / "bkt").mkdir(parents=True)
    for p in shards:
        (tmp_path / "www" / "bkt" / p.name).write_bytes(p.read_bytes())
    with FaultServer(tmp_path / "www") as srv:
        yield srv


def _fake_source(srv: FaultServer, **kw: Any) -> S3Source:
    return S3Source("bkt", [f"train-{i:06d}.tar" for i in range(4)], **creds(srv.base_url, **kw))


_ACCESS_DENIED = b"<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"


@pytest.mark.parametrize("body", [_ACCESS_DENIED, b""], ids=["AccessDenied", "bare-403"])
def test_403_from_the_endpoint_is_refused(fake_s3: FaultServer, aws_env: dict[str, str], body: bytes) -> None:
    fake_s3.fail("*", 403, times=None, body=body)
    src = _fake_source(fake_s3)
    with deadline(10), pytest.raises(atd.SourceError, match="refused by S3") as info:
        src.buffer("s3://bkt/train-000000.tar")
    assert MOTO_SECRET_KEY not in _text(info.value)
    assert len(fake_s3.requests()) == 1  # not retried


def test_s3_resumes_a_broken_transfer_with_range(
    fake_s3: FaultServer, aws_env: dict[str, str], shards: list[Path]
) -> None:
    fake_s3.drop("bkt/train-000001.tar", after=6000, times=2)
    src = _fake_source(fake_s3, retries=3)
    assert bytes(src.buffer("s3://bkt/train-000001.tar")) == shards[1].read_bytes()
    assert fake_s3.ranges("bkt/train-000001.tar") == [None, "bytes=6000-", "bytes=12000-"]


def test_s3_ranged_parts_resume_on_their_own(fake_s3: FaultServer, aws_env: dict[str, str], shards: list[Path]) -> None:
    fake_s3.drop("bkt/train-000001.tar", after=1000, times=1, range_from=4096)
    src = _fake_source(fake_s3, chunk_size=4096, parallel=2, retries=3)
    whole = shards[1].read_bytes()
    assert bytes(src.buffer("s3://bkt/train-000001.tar")) == whole
    ranges = fake_s3.ranges("bkt/train-000001.tar")
    assert ranges[0] == "bytes=0-4095" and "bytes=5096-8191" in ranges
    assert len(ranges) == -(-len(whole) // 4096) + 1


def test_s3_permanent_500_and_stall_fail_without_hanging(fake_s3: FaultServer, aws_env: dict[str, str]) -> None:
    fake_s3.fail("*", 500, times=None)
    with deadline(15), pytest.raises(atd.SourceError, match="failed after 2 attempts"):
        _fake_source(fake_s3, retries=1).buffer("s3://bkt/train-000000.tar")
    fake_s3.clear()
    fake_s3.stall("*", 5.0, times=None)
    with deadline(15), pytest.raises(atd.SourceError, match="failed after 1 attempts") as info:
        _fake_source(fake_s3, retries=0, timeout=0.3).buffer("s3://bkt/train-000000.tar")
    assert "Timeout" in str(info.value)


# ---------------------------------------------------------------------------------------------------- workers
class _Probe(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Reads shard ``i`` in a DataLoader worker and reports which boto3 client did it."""

    def __init__(self, src: S3Source, parent_client_id: int) -> None:
        self.src = src
        self.parent_client_id = parent_client_id
        self.inherited: Any = "unset"

    def __len__(self) -> int:
        return len(self.src.keys)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self.inherited == "unset":  # first item in this worker: what fork copied from the parent (kept alive)
            self.inherited = self.src._local.get("s3")
        data = bytes(self.src.buffer(self.src.list_shards()[i]))
        client = self.src._local["s3"]
        return {
            "pid": os.getpid(),
            "state_pid": self.src._state()["pid"],
            "inherited_parent_client": self.inherited is not None and id(self.inherited) == self.parent_client_id,
            "new_client": client is not self.inherited,
            "data": data,
        }


@pytest.mark.integration
@FORK_WITH_THREADS
def test_one_client_per_worker_process(moto_endpoint: str, bucket: str, shards: list[Path]) -> None:
    src = S3Source.from_urls([f"s3://{bucket}/ds/{p.name}" for p in shards], **creds(moto_endpoint))
    parent_client = src._client()  # built in the parent before the workers fork
    loader = torch.utils.data.DataLoader(
        _Probe(src, id(parent_client)), batch_size=None, num_workers=2, multiprocessing_context="fork"
    )
    with deadline(30):
        items = list(loader)
    assert [it["data"] for it in items] == [p.read_bytes() for p in shards]
    pids = {it["pid"] for it in items}
    assert len(pids) == 2 and os.getpid() not in pids
    assert all(it["state_pid"] == it["pid"] for it in items)  # the state was rebuilt in each worker
    assert all(it["new_client"] for it in items)  # ...and replaced it with its own
    assert all(it["inherited_parent_client"] for it in items)  # each worker started from the parent's copy...
    assert src._client() is parent_client  # the parent's own client is untouched


@pytest.mark.integration
def test_pickled_source_rebuilds_its_client(moto_endpoint: str, bucket: str, shards: list[Path]) -> None:
    src = S3Source.from_urls([f"s3://{bucket}/ds/{p.name}" for p in shards], **creds(moto_endpoint))
    src._client()
    copy = pickle.loads(pickle.dumps(src))  # what a spawn / forkserver worker receives
    assert copy._local == {}
    assert bytes(copy.buffer(copy.list_shards()[0])) == shards[0].read_bytes()
    assert copy._client() is not src._client()


@pytest.mark.integration
@FORK_WITH_THREADS
def test_dataset_loader_with_workers(moto_endpoint: str, bucket: str, local: atd.Dataset[Rec]) -> None:
    ds = atd.Dataset[Rec](f"s3://{bucket}/ds/{PATTERN}", **creds(moto_endpoint))
    with deadline(30):
        got = rows(ds.loader(batch_size=4, shuffle=True, seed=3, num_workers=2, multiprocessing_context="fork"))
    assert sorted(got) == sorted(rows(local.ordered()))
    assert len(got) == 20
