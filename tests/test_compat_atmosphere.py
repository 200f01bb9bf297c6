"""The original atdata's atmosphere spelling: publisher / loader classes, ``AtmosphereIndex``, ``AtUri.authority``,
the ``Lex*`` record types. The PDS tests run against the real local PDS (``atproto_net``) and are few on purpose."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import atdata_torch as atd
import atdata_torch.atmosphere as atmo_mod
from atdata_torch.atmosphere import (
    LEXICON_NAMESPACE,
    Atmosphere,
    AtmosphereIndex,
    AtmosphereIndexEntry,
    AtUri,
    DatasetLoader,
    DatasetPublisher,
    LabelLoader,
    LabelPublisher,
    LensLoader,
    LensPublisher,
    LexDatasetEntry,
    LexLabelRecord,
    LexLensRecord,
    LexSchemaRecord,
    SchemaLoader,
    SchemaPublisher,
)
from atdata_torch.errors import PublishError, RecordNotFoundError

Net = dict[str, Any]


@atd.packable
class CompatDigit:
    """A digit for the compatibility tests."""

    image: atd.NDArray
    label: int


def _samples(n: int) -> list[CompatDigit]:
    return [CompatDigit(np.full((2, 2), i, np.uint8), i) for i in range(n)]


# ------------------------------------------------------------------------------------------------------ offline
def test_at_uri_has_the_originals_authority() -> None:
    u = AtUri.parse("at://did:plc:abc123/science.alt.dataset.schema/xyz")
    assert (u.authority, u.collection, u.rkey) == ("did:plc:abc123", "science.alt.dataset.schema", "xyz")
    assert str(u) == "at://did:plc:abc123/science.alt.dataset.schema/xyz"
    assert LEXICON_NAMESPACE == "science.alt.dataset"
    assert atmo_mod.AtmosphereClient is Atmosphere


def test_lex_records_round_trip_and_name_missing_fields() -> None:
    schema = LexSchemaRecord(name="A", version="1.0.0", schema_type="jsonSchema", schema={"type": "object"})
    rec = schema.to_record()
    assert rec["$type"] == f"{LEXICON_NAMESPACE}.schema" and rec["schemaType"] == "jsonSchema"
    assert LexSchemaRecord.from_record(rec) == schema
    entry = LexDatasetEntry(name="d", schema_ref="at://x/s/1", storage={"$type": "x.storageHttp", "shards": []})
    assert LexDatasetEntry.from_record(entry.to_record()) == entry
    label = LexLabelRecord(name="d", dataset_uri="at://x/e/1", version="2.0.0")
    assert LexLabelRecord.from_record(label.to_record()) == label
    lens = {
        "name": "l",
        "sourceSchema": "a",
        "targetSchema": "b",
        "createdAt": "2024-01-01T00:00:00Z",
        "getterCode": {"repository": "r", "commit": "c", "path": "m:f"},
    }
    parsed = LexLensRecord.from_record(lens)
    assert parsed.putter_code == parsed.getter_code and parsed.getter_code.path == "m:f"
    with pytest.raises(PublishError, match="'schemaRef' is missing"):
        LexDatasetEntry.from_record({"name": "d", "storage": {}})


def test_index_entry_reads_http_and_s3_records() -> None:
    http = {
        "name": "d",
        "schemaRef": "at://s",
        "storage": {
            "$type": f"{LEXICON_NAMESPACE}.storageHttp",
            "shards": [{"url": "https://h/a.tar", "checksum": {"algorithm": "sha256", "digest": "00"}}],
        },
        "metadata": {"split": "train"},
    }
    e = AtmosphereIndexEntry("at://did:plc:x/science.alt.dataset.entry/1", http)
    assert (e.name, e.schema_ref, e.data_urls, e.metadata) == ("d", "at://s", ["https://h/a.tar"], {"split": "train"})
    s3 = {"name": "d", "schemaRef": "s", "storage": {"bucket": "b", "shards": [{"key": "k/a.tar"}]}}
    assert AtmosphereIndexEntry("at://did:plc:x/c/1", s3).data_urls == ["s3://b/k/a.tar"]


def test_rkey_and_foreign_names_are_refused_with_the_fix() -> None:
    client: Any = object()  # refused before the client is used
    with pytest.raises(PublishError, match="drop rkey"):
        SchemaPublisher(client).publish(CompatDigit, rkey="abc")
    with pytest.raises(PublishError, match="class name"):
        SchemaPublisher(client).publish(CompatDigit, name="Other")
    with pytest.raises(PublishError, match="only 'license' and 'tags'"):
        SchemaPublisher(client).publish(CompatDigit, metadata={"owner": "me"})
    with pytest.raises(PublishError, match="auto_publish_schema=False"):
        DatasetPublisher(client).publish(object(), name="x", auto_publish_schema=False)


# ------------------------------------------------------------------------------------------------------ PDS
@pytest.fixture(scope="module")
def alice(atproto_net: Net) -> Iterator[Atmosphere]:
    with Atmosphere.login("alice.test", "alice-pass", pds=atproto_net["pdsUrl"], plc=atproto_net["plcUrl"]) as a:
        yield a


@pytest.mark.integration
def test_publish_and_load_with_the_originals_classes(
    alice: Atmosphere, atproto_net: Net, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATDATA_PLC_URL", atproto_net["plcUrl"])
    monkeypatch.setenv("ATDATA_PDS_URL", atproto_net["pdsUrl"])
    name = f"compat-{uuid.uuid4().hex[:8]}"
    ds = atd.write_samples(_samples(5), tmp_path / "train.tar", maxcount=3, progress=False)

    schema_uri = SchemaPublisher(alice).publish(CompatDigit, version="1.0.0")
    assert isinstance(schema_uri, AtUri) and schema_uri.authority == alice.did
    assert SchemaPublisher(alice).publish(CompatDigit, version="1.0.0") == schema_uri  # identical: reused
    uri = DatasetPublisher(alice).publish(ds, name=name, schema_uri=str(schema_uri), tags=["compat"])
    label_uri = LabelPublisher(alice).publish(name, uri, version="1.0.0")
    assert label_uri.collection == f"{LEXICON_NAMESPACE}.label"

    anon = Atmosphere.anonymous(pds=atproto_net["pdsUrl"], plc=atproto_net["plcUrl"])
    schema = SchemaLoader(anon).get(schema_uri)
    assert (schema["name"], schema["version"]) == ("CompatDigit", "1.0.0")
    assert SchemaLoader(anon).get("@alice.test/CompatDigit@1.0.0") == schema
    assert SchemaLoader(anon).get_typed(str(schema_uri)).name == "CompatDigit"
    loader = DatasetLoader(anon)
    record = loader.get(uri)
    assert record["name"] == name and record["tags"] == ["compat"]
    assert "/tmp" not in json.dumps(record)  # deviation: local shards become blobs, never file paths
    assert loader.get_storage_type(uri) == "blobs" and len(loader.get_blobs(uri)) == 2
    assert loader.get_urls(uri) == loader.get_blob_urls(uri) and len(loader.get_urls(uri)) == 2
    assert loader.get_typed(uri).schema_ref == str(schema_uri)
    back = loader.to_dataset(uri, CompatDigit)
    assert [s.label for s in back.ordered()] == [0, 1, 2, 3, 4]
    with pytest.raises(RecordNotFoundError, match=r"not a science\.alt\.dataset\.entry record"):
        loader.get(schema_uri)

    assert LabelLoader(anon).resolve("alice.test", name) == str(uri)
    assert [s.label for s in atd.load_dataset(f"@alice.test/{name}@1.0.0", split="train").ordered()] == list(range(5))

    index = AtmosphereIndex(anon)
    entry = index.get_dataset(str(uri))
    assert entry.uri == str(uri) and entry.name == name and len(entry.data_urls) == 2
    assert any(e.uri == str(uri) for e in index.list_datasets("alice.test"))
    assert index.get_schema_type(str(schema_uri)).__name__ == "CompatDigit"
    anon.close()


@pytest.mark.integration
def test_lens_publisher_and_loader(alice: Atmosphere) -> None:
    src = SchemaPublisher(alice).publish(CompatDigit, version="1.0.0")
    dst = f"at://{alice.did}/{LEXICON_NAMESPACE}.schema/{uuid.uuid4().hex[:12]}"
    uri = LensPublisher(alice).publish(
        name="digit-to-x",
        source_schema_uri=str(src),
        target_schema_uri=dst,
        code_repository="https://github.com/example/lenses",
        code_commit="a" * 40,
        getter_path="lenses.digits:get",
        putter_path="lenses.digits:put",
    )
    found = LensLoader(alice).find_by_schemas(str(src), dst)
    assert [f["getterCode"]["path"] for f in found] == ["lenses.digits:get"]
    typed = LensLoader(alice).get_typed(uri)
    assert (typed.putter_code.path, typed.target_schema) == ("lenses.digits:put", dst)


@pytest.mark.integration
def test_promote_to_atmosphere_uploads_local_shards(
    alice: Atmosphere, atproto_net: Net, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATDATA_PLC_URL", atproto_net["plcUrl"])
    monkeypatch.setenv("ATDATA_PDS_URL", atproto_net["pdsUrl"])
    from atdata_torch.index import Index, promote_to_atmosphere

    name = f"promoted-{uuid.uuid4().hex[:8]}"
    with Index(provider="sqlite", path=tmp_path / "i.db", atmosphere=alice) as index:
        entry = index.write_samples(_samples(3), name=name, description="three digits", progress=False)
        uri = promote_to_atmosphere(entry, index, alice, tags=["promoted"])
        again = index.promote(name)  # Index(atmosphere=...) is the default target
    assert alice.get_dataset(again).name == name
    _, rec = alice.get_record(uri)
    assert rec["storage"]["$type"] == f"{LEXICON_NAMESPACE}.storageBlobs"  # not the local paths (the original's)
    assert (rec["description"], rec["tags"]) == ("three digits", ["promoted"])
    assert [s.label for s in atd.load_dataset(uri, split="train").ordered()] == [0, 1, 2]


@pytest.mark.integration
def test_publish_with_urls_and_with_blobs(
    alice: Atmosphere, atproto_net: Net, tmp_path: Path, http_root: Path, http_server: Any
) -> None:
    ds = atd.write_samples(_samples(4), http_root / "train.tar", maxcount=2, progress=False)
    schema_uri = str(SchemaPublisher(alice).publish(CompatDigit, version="1.0.0"))
    urls = [http_server.url(os.path.basename(s)) for s in ds.list_shards()]
    publisher = DatasetPublisher(alice)
    by_url = publisher.publish_with_urls(urls, schema_uri, name="by-url", description="served", tags=["u"])
    by_blob = publisher.publish_with_blobs([Path(s).read_bytes() for s in ds.list_shards()], schema_uri, name="blobs")
    with pytest.raises(PublishError, match="drop rkey"):
        publisher.publish_with_s3("bucket", ["k.tar"], schema_uri, name="s3", rkey="abc")

    anon = Atmosphere.anonymous(pds=atproto_net["pdsUrl"], plc=atproto_net["plcUrl"])
    loader = DatasetLoader(anon)
    assert loader.get_storage_type(by_url) == "http" and loader.get_urls(by_url) == urls
    assert loader.get(by_url)["description"] == "served" and loader.get(by_url)["tags"] == ["u"]
    assert loader.get_storage_type(by_blob) == "blobs" and len(loader.get_blobs(by_blob)) == 2
    for uri in (by_url, by_blob):
        assert [s.label for s in loader.to_dataset(uri, CompatDigit).ordered()] == [0, 1, 2, 3]
    anon.close()
