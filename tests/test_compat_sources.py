"""Sources through the original atdata's spelling (issue 17): ``URLSource(url)`` with one string, ``S3Source``'s
constructors and attributes, ``BlobSource(blob_refs=..., pds_endpoint=...)`` against a real PDS, ``.shards`` as
``(id, stream)`` pairs, and a ``DataSource`` written for the original."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

import atdata_torch as atdata
from atdata_torch import _sources
from atdata_torch.sources import DataSource, HTTPSource, LocalSource


@atdata.packable
class SrcRec:
    n: int


def _write(path: Path, n: int = 6, maxcount: int = 3) -> list[str]:
    ds = atdata.write_samples([SrcRec(n=i) for i in range(n)], str(path), maxcount=maxcount, progress=False)
    return ds.list_shards()


# ------------------------------------------------------------------------------------------------ URLSource
def test_url_source_takes_one_path_string(tmp_path: Path) -> None:
    shards = _write(tmp_path / "u.tar")
    pattern = str(tmp_path / "u-{000000..000001}.tar")
    src = atdata.URLSource(pattern)  # once iterated the characters and opened '/', 't', ...
    assert src.list_shards() == shards and src.url == pattern
    assert [s.n for s in atdata.Dataset[SrcRec](src).ordered()] == list(range(6))
    single = atdata.URLSource(shards[0])
    assert single.list_shards() == [shards[0]]
    with single.open_shard(shards[0]) as f:
        assert f.read() == Path(shards[0]).read_bytes()
    assert atdata.URLSource(Path(shards[0])).list_shards() == [shards[0]]
    assert _sources.URLSource is atdata.URLSource


def test_no_source_iterates_a_strings_characters(tmp_path: Path) -> None:
    shards = _write(tmp_path / "c.tar")
    assert LocalSource(shards[0]).list_shards() == [shards[0]]
    assert HTTPSource("http://127.0.0.1:9/a-{0..1}.tar").list_shards() == [
        "http://127.0.0.1:9/a-0.tar",
        "http://127.0.0.1:9/a-1.tar",
    ]
    with pytest.raises(TypeError, match="bytes"):
        atdata.URLSource(b"/a.tar")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="int"):
        atdata.URLSource([1, 2])  # type: ignore[list-item]


def test_shards_yields_id_and_stream_pairs(tmp_path: Path) -> None:
    shards = _write(tmp_path / "p.tar")
    src = atdata.Dataset[SrcRec](str(tmp_path / "p-{000000..000001}.tar")).source
    got = []
    for shard_id, stream in src.shards:
        with stream:
            got.append((shard_id, stream.read()))
    assert got == [(s, Path(s).read_bytes()) for s in shards]


def test_dataset_source_is_url_source_compatible(tmp_path: Path) -> None:
    shards = _write(tmp_path / "d.tar")
    src = atdata.Dataset[SrcRec](str(tmp_path / "d-{000000..000001}.tar")).source
    assert isinstance(src, DataSource)
    assert src.list_shards() == shards
    with src.open_shard(shards[1]) as f:
        assert f.read(512)[:8] == Path(shards[1]).read_bytes()[:8]


class OriginalStyleSource:
    """A source written against the original's protocol: shards, list_shards, open_shard."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    @property
    def shards(self) -> Iterator[tuple[str, IO[bytes]]]:
        for p in self.paths:
            yield p, self.open_shard(p)

    def list_shards(self) -> list[str]:
        return list(self.paths)

    def open_shard(self, shard_id: str) -> IO[bytes]:
        if shard_id not in self.paths:
            raise KeyError(f"Shard not found: {shard_id}")
        return open(shard_id, "rb")


def test_a_data_source_written_for_the_original_reads(tmp_path: Path) -> None:
    shards = _write(tmp_path / "o.tar")
    src = OriginalStyleSource(shards)
    assert isinstance(src, DataSource)
    assert [s.n for s in atdata.Dataset[SrcRec](src).ordered()] == list(range(6))


# ------------------------------------------------------------------------------------------------ S3Source
def test_s3_source_attributes_and_from_credentials_without_a_network() -> None:
    pytest.importorskip("boto3")
    creds = {
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "very-secret-value",
        "AWS_ENDPOINT": "http://127.0.0.1:9",
        "AWS_REGION": "eu-west-1",
    }
    src = atdata.S3Source.from_credentials(creds, "bucket", ["a.tar", "b.tar"])
    assert (src.bucket, src.keys, src.endpoint, src.region) == (
        "bucket",
        ["a.tar", "b.tar"],
        creds["AWS_ENDPOINT"],
        "eu-west-1",
    )
    assert src.access_key == "AKIAEXAMPLE" and src.secret_key == "very-secret-value"
    assert "very-secret-value" not in repr(src) and "very-secret-value" not in str(src)
    positional = atdata.S3Source("bucket", "one.tar", "http://127.0.0.1:9", "AK", "SK", "us-east-1")
    assert positional.keys == ["one.tar"] and positional.access_key == "AK" and positional.region == "us-east-1"
    via_urls = atdata.S3Source.from_urls(["s3://b/x/1.tar", "s3://b/x/2.tar"], endpoint="http://e", access_key="AK")
    assert (via_urls.bucket, via_urls.keys, via_urls.access_key) == ("b", ["x/1.tar", "x/2.tar"], "AK")
    assert atdata.S3Source.from_urls("s3://b/d-{0..1}.tar").keys == ["d-0.tar", "d-1.tar"]
    with pytest.raises(ValueError, match="one bucket"):
        atdata.S3Source.from_urls(["s3://b1/a.tar", "s3://b2/a.tar"])
    with pytest.raises(ValueError, match="at least one"):
        atdata.S3Source.from_urls([])
    with pytest.raises(ValueError):
        atdata.S3Source.from_urls(["http://b/a.tar"])


def test_s3_source_from_credentials_reads_from_moto(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    pytest.importorskip("boto3")
    from remote_data import MOTO_ACCESS_KEY, MOTO_SECRET_KEY

    endpoint = request.getfixturevalue("moto_endpoint")
    files = [Path(s) for s in _write(tmp_path / "s.tar")]
    bucket = request.getfixturevalue("s3_upload")(files, prefix="p/")
    creds = {"AWS_ACCESS_KEY_ID": MOTO_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": MOTO_SECRET_KEY, "AWS_ENDPOINT": endpoint}
    src = atdata.S3Source.from_credentials(creds, bucket, [f"p/{f.name}" for f in files], retries=1, backoff=0.01)
    assert [s.n for s in atdata.Dataset[SrcRec](src).ordered()] == list(range(6))
    pairs = list(src.shards)
    assert [p[0] for p in pairs] == [f"s3://{bucket}/p/{f.name}" for f in files]
    assert pairs[0][1].read() == files[0].read_bytes()
    with pytest.raises(KeyError):
        src.open_shard(f"s3://{bucket}/p/missing.tar")


# ------------------------------------------------------------------------------------------------ BlobSource
def test_blob_source_refs_and_errors() -> None:
    refs = [{"did": "did:plc:abc", "cid": "bafy1"}, {"did": "did:plc:abc", "cid": "bafy2"}]
    src = atdata.BlobSource(blob_refs=refs, pds_endpoint="http://127.0.0.1:9/")
    assert src.list_shards() == ["at://did:plc:abc/blob/bafy1", "at://did:plc:abc/blob/bafy2"]
    assert src.blob_refs == refs and src.pds_endpoint == "http://127.0.0.1:9"
    assert src.blob_url(src.list_shards()[1]) == (
        "http://127.0.0.1:9/xrpc/com.atproto.sync.getBlob?did=did:plc:abc&cid=bafy2"
    )
    assert atdata.BlobSource.from_refs(refs, pds_endpoint="http://h").list_shards() == src.list_shards()
    assert _sources.BlobSource is atdata.BlobSource
    with pytest.raises(ValueError, match="at least one"):
        atdata.BlobSource.from_refs([])
    with pytest.raises(ValueError, match="names no DID"):
        atdata.BlobSource.from_refs([{"$type": "blob", "ref": {"$link": "bafy"}}])
    with pytest.raises(ValueError, match="'did' and 'cid'"):
        atdata.BlobSource([{"cid": "bafy"}])
    with pytest.raises(TypeError):
        atdata.BlobSource("did:plc:abc")  # type: ignore[arg-type]
    with pytest.raises(atdata.IdentityError, match="pds_endpoint"):
        atdata.BlobSource([{"did": "did:key:z6Mk", "cid": "bafy"}]).blob_url("at://did:key:z6Mk/blob/bafy")


def test_blob_source_reads_through_the_http_machinery(http_server: Any, http_root: Path, tmp_path: Path) -> None:
    (shard,) = _write(tmp_path / "b.tar", n=3, maxcount=10)
    target = http_root / "xrpc" / "com.atproto.sync.getBlob"  # the file server ignores the query
    target.parent.mkdir()
    target.write_bytes(Path(shard).read_bytes())
    src = atdata.BlobSource([{"did": "did:plc:abc", "cid": "bafy1"}], pds_endpoint=http_server.base_url, retries=0)
    assert [s.n for s in atdata.Dataset[SrcRec](src).ordered()] == [0, 1, 2]
    (req, *_) = http_server.requests("/xrpc/com.atproto.sync.getBlob")
    assert req.headers.get("accept-encoding") == "identity"


@pytest.fixture
def published(atproto_net: dict[str, Any], tmp_path: Path) -> Iterator[tuple[list[dict[str, str]], str, str]]:
    from atdata_torch.atmosphere import Atmosphere

    shards = _write(tmp_path / "pds.tar")
    with Atmosphere.login("alice.test", "alice-pass", pds=atproto_net["pdsUrl"], plc=atproto_net["plcUrl"]) as alice:
        uri = alice.publish_dataset(atdata.Dataset[SrcRec](shards), name=f"compat-{uuid.uuid4().hex[:8]}")
        _, rec = alice.get_record(uri)
        did = str(alice.did)
    refs = [{"did": did, "cid": b["blob"]["ref"]["$link"]} for b in rec["storage"]["blobs"]]
    yield refs, str(atproto_net["pdsUrl"]), str(atproto_net["plcUrl"])


def test_blob_source_reads_blobs_from_a_real_pds(
    published: tuple[list[dict[str, str]], str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    refs, pds, plc = published
    src = atdata.BlobSource(blob_refs=refs, pds_endpoint=pds)
    assert src.list_shards() == [f"at://{r['did']}/blob/{r['cid']}" for r in refs]
    assert [s.n for s in atdata.Dataset[SrcRec](src).ordered()] == list(range(6))
    # Without pds_endpoint, the PDS comes from the DID document (the PLC directory named by the environment).
    monkeypatch.setenv("ATDATA_PLC_URL", plc)
    resolved = atdata.BlobSource.from_refs(refs)
    assert [s.n for s in atdata.Dataset[SrcRec](resolved).ordered()] == list(range(6))
    for _shard_id, stream in resolved.shards:
        with stream:
            assert len(stream.read()) > 0
    assert os.environ["ATDATA_PLC_URL"] == plc
