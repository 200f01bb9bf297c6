"""``PDSBlobStore`` and ``DatasetPublisher.publish_with_blob_refs`` (the original's spelling), on the real local PDS."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import atdata_torch as atd
from atdata_torch.atmosphere import (
    Atmosphere,
    DatasetLoader,
    DatasetPublisher,
    PDSBlobStore,
    SchemaPublisher,
    ShardUploadResult,
)
from atdata_torch.atmosphere._blobstore import blob_entry_record, parse_blob_url
from atdata_torch.errors import AuthError, PublishError


@atd.packable
class StoreDigit:
    """A digit for the blob store tests."""

    image: atd.NDArray
    label: int


def test_blob_urls_and_refs_are_checked() -> None:
    assert parse_blob_url("at://did:plc:abc/blob/bafkreia") == ("did:plc:abc", "bafkreia")
    with pytest.raises(PublishError, match="at://<did>/blob/<cid>"):
        parse_blob_url("at://did:plc:abc/science.alt.dataset.entry/x")
    ref = {"$type": "blob", "ref": {"$link": "bafkreia"}, "mimeType": "application/x-tar", "size": 3}
    rec = blob_entry_record([ref], "at://did:plc:a/science.alt.dataset.schema/s", name="n", checksums=["ab"])
    assert rec["storage"]["blobs"] == [{"blob": ref, "checksum": {"algorithm": "sha256", "digest": "ab"}}]
    with pytest.raises(PublishError, match="1 checksums for 2 blob refs"):
        blob_entry_record([ref, ref], "at://x", name="n", checksums=["ab"])
    with pytest.raises(PublishError, match=r"blob_refs\[0\] is not a blob ref"):
        blob_entry_record([{"did": "did:plc:a", "cid": "b"}], "at://x", name="n")


@pytest.fixture
def alice(atproto_net: dict[str, Any]) -> Iterator[Atmosphere]:
    with Atmosphere.login("alice.test", "alice-pass", pds=atproto_net["pdsUrl"], plc=atproto_net["plcUrl"]) as a:
        yield a


@pytest.mark.integration
def test_write_shards_uploads_the_files_byte_for_byte(
    alice: Atmosphere, atproto_net: dict[str, Any], tmp_path: Path
) -> None:
    samples = [StoreDigit(np.full((2, 2), i, np.uint8), i) for i in range(5)]
    ds = atd.write_samples(samples, tmp_path / "train.tar", maxcount=3, progress=False)
    store = PDSBlobStore(alice)
    urls = store.write_shards(ds, prefix="ignored")
    assert isinstance(urls, ShardUploadResult) and isinstance(urls, list) and len(urls) == 2
    for url, ref, shard in zip(urls, urls.blob_refs, ds.list_shards(), strict=True):
        data = Path(shard).read_bytes()
        assert url == f"at://{alice.did}/blob/{ref['ref']['$link']}"
        assert ref["mimeType"] == "application/x-tar" and ref["size"] == len(data)
        assert urls.checksums[url] == hashlib.sha256(data).hexdigest()

    schema_uri = str(SchemaPublisher(alice).publish(StoreDigit, version="1.0.0"))
    pub = DatasetPublisher(alice)
    uri = pub.publish_with_blob_refs(
        urls.blob_refs, schema_uri, name="refs", content_metadata={"source": "test"}, metadata_schema_ref=schema_uri
    )
    # a PDS serves a blob only once a record references it
    import httpx

    for url, shard in zip(urls, ds.list_shards(), strict=True):
        got = httpx.get(store.read_url(url), headers={"Accept-Encoding": "identity"}).content
        assert got == Path(shard).read_bytes()  # byte for byte
    assert store.supports_streaming() and store.read_url("https://x/y.tar") == "https://x/y.tar"
    src = store.create_source(urls)
    assert src.list_shards() == list(urls)
    assert [s.label for s in atd.Dataset(src, sample_type=StoreDigit).ordered()] == [0, 1, 2, 3, 4]
    anon = Atmosphere.anonymous(pds=atproto_net["pdsUrl"], plc=atproto_net["plcUrl"])
    loader = DatasetLoader(anon)
    assert loader.get_blobs(uri) == urls.blob_refs
    assert loader.get_content_metadata(uri) == {"source": "test"}
    assert loader.get_metadata_schema_ref(uri) == schema_uri and loader.get_metadata_typed(uri) is None
    assert [s.label for s in loader.to_dataset(uri, StoreDigit).ordered()] == [0, 1, 2, 3, 4]
    # a ShardUploadResult carries its sha256 sums into the record
    uri2 = pub.publish_with_blob_refs(urls, schema_uri, name="refs2")
    digests = [b["checksum"]["digest"] for b in loader.get(uri2)["storage"]["blobs"]]
    assert digests == [urls.checksums[u] for u in urls]
    with pytest.raises(AuthError):
        PDSBlobStore(anon).write_shards(ds)
    anon.close()
