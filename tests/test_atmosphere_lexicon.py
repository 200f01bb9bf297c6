"""Record shapes (docs/format.md) built and parsed without a network: schema, entry, storage kinds, label, lens."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import atdata_torch as atd
from atdata_torch.atmosphere import _lexicon as lex
from atdata_torch.errors import PublishError


@atd.packable
class Mixed:
    name: str
    embedding: atd.NDArray[np.float32]
    label: int
    score: float
    flag: bool
    raw: bytes
    tags: list[str]
    mask: atd.NDArray | None = None
    extra: int | None = None


def test_schema_record_has_the_originals_shape() -> None:
    rec = lex.schema_record(Mixed, version="1.2.3", description="d", license="MIT", tags=["t"])
    assert rec["$type"] == "science.alt.dataset.schema"
    assert {k for k in rec if k != "description"} == {
        "$type",
        "name",
        "version",
        "schemaType",
        "schema",
        "createdAt",
        "atdataSchemaVersion",
        "metadata",
    }
    assert rec["schemaType"] == "jsonSchema" and rec["atdataSchemaVersion"] == 1
    assert rec["metadata"] == {"license": "MIT", "tags": ["t"]}
    body = rec["schema"]
    assert body["$type"] == "science.alt.dataset.schema#jsonSchemaFormat"
    assert body["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert body["type"] == "object"
    assert body["arrayFormatVersions"] == {"ndarrayBytes": "1.0.0"}
    p = body["properties"]
    assert p["name"] == {"type": "string"}
    assert p["label"] == {"type": "integer"}
    assert p["score"] == {"type": "number"}
    assert p["flag"] == {"type": "boolean"}
    assert p["raw"] == {"type": "string", "format": "byte", "contentEncoding": "base64"}
    assert p["tags"] == {"type": "array", "items": {"type": "string"}}
    assert p["embedding"]["$ref"] == lex.NDARRAY_REF
    assert p["embedding"]["dtype"] == "float32"
    assert sorted(body["required"]) == ["embedding", "flag", "label", "name", "raw", "score", "tags"]
    lex.check_no_floats(rec)  # a PDS refuses floats


def test_schema_record_rebuilds_the_type_whatever_the_key_order() -> None:
    rec = lex.schema_record(Mixed, version="1.0.0")
    # A PDS stores DAG-CBOR: keys come back sorted by length, then bytes.
    props = rec["schema"]["properties"]
    rec["schema"]["properties"] = {k: props[k] for k in sorted(props, key=lambda k: (len(k), k))}
    T = lex.schema_type(rec)
    assert T.__name__ == "Mixed"
    s = Mixed("a", np.ones(3, np.float32), 1, 0.5, True, b"x", ["t"])
    back = T.from_bytes(s.packed)
    assert back.name == "a" and back.embedding.dtype == np.float32 and back.extra is None
    assert lex.signature(rec) == lex.signature(lex.schema_record(Mixed, version="9.9.9"))


def test_floats_are_refused_with_the_path() -> None:
    with pytest.raises(PublishError, match=r"record\.metadata\.lr is the float 0\.1"):
        lex.entry_record(name="d", schema_uri="at://x/s/1", storage={}, metadata={"lr": 0.1})


def _original_entry(storage: dict[str, Any]) -> dict[str, Any]:
    return {
        "$type": "science.alt.dataset.entry",
        "name": "mnist",
        "schemaRef": "at://did:plc:abc/science.alt.dataset.schema/3k",
        "storage": storage,
        "createdAt": "2025-01-01T00:00:00.000000+00:00",
        "tags": ["vision"],
        "size": {"samples": 10, "bytes": 100, "shards": 1},
    }


def test_parse_every_storage_kind() -> None:
    uri = "at://did:plc:abc/science.alt.dataset.entry/3k"
    http = lex.parse_entry(
        uri,
        _original_entry(
            {
                "$type": "science.alt.dataset.storageHttp",
                "shards": [{"url": "https://h/train-000000.tar", "checksum": {"algorithm": "sha256", "digest": "AB"}}],
            }
        ),
    )
    assert http.storage == "http" and http.urls == ["https://h/train-000000.tar"] and http.shards[0].sha256 == "ab"
    s3 = lex.parse_entry(
        uri,
        _original_entry(
            {
                "$type": "science.alt.dataset.storageS3",
                "bucket": "b",
                "endpoint": "http://127.0.0.1:9000",
                "shards": [{"key": "d/a.tar", "checksum": {"algorithm": "none", "digest": ""}}],
            }
        ),
    )
    assert s3.storage == "s3" and s3.urls == ["s3://b/d/a.tar"] and s3.shards[0].sha256 is None
    assert s3.s3 == {"bucket": "b", "endpoint": "http://127.0.0.1:9000"}
    blob = {"$type": "blob", "ref": {"$link": "bafkreiabc"}, "mimeType": "application/x-tar", "size": 10}
    blobs = lex.parse_entry(
        uri,
        _original_entry(
            {
                "$type": "science.alt.dataset.storageBlobs",
                "blobs": [{"blob": blob, "checksum": {"algorithm": "sha256", "digest": "ff"}}],
            }
        ),
        pds="http://pds:1/",
    )
    assert blobs.urls == ["http://pds:1/xrpc/com.atproto.sync.getBlob?did=did:plc:abc&cid=bafkreiabc"]
    ext = lex.parse_entry(
        uri, _original_entry({"$type": "science.alt.dataset.storageExternal", "urls": ["https://h/a.tar"]})
    )
    assert ext.storage == "external" and ext.urls == ["https://h/a.tar"]
    with pytest.raises(PublishError, match="blob storage needs"):
        lex.parse_entry(uri, _original_entry({"$type": "science.alt.dataset.storageBlobs", "blobs": []}))
    with pytest.raises(PublishError, match="unknown storage kind"):
        lex.parse_entry(uri, _original_entry({"$type": "x.y.z"}))


def test_label_and_lens_records() -> None:
    lab = lex.label_record(name="mnist", dataset_uri="at://d/science.alt.dataset.entry/1", version="1.0.0")
    assert set(lab) == {"$type", "name", "datasetUri", "createdAt", "version"}
    parsed = lex.parse_label("at://d/science.alt.dataset.label/2", lab)
    assert parsed.version == "1.0.0" and parsed.dataset_uri.endswith("/1")
    code = lex.CodeRef(repository="https://github.com/me/p", commit="c" * 40, path="p.lenses:gray", branch="main")
    rec = lex.lens_record(name="gray", source_schema="at://a", target_schema="at://b", getter=code, putter=code)
    assert rec["getterCode"] == {
        "repository": "https://github.com/me/p",
        "commit": "c" * 40,
        "path": "p.lenses:gray",
        "branch": "main",
        "language": "python",
    }
    back = lex.parse_lens("at://d/science.alt.dataset.lens/3", rec)
    assert back.getter == code and back.source_schema == "at://a"
    with pytest.raises(ValueError, match="module:qualname"):
        lex.CodeRef(repository="r", commit="c", path="no_colon")


def test_collections_of_both_namespaces() -> None:
    assert lex.kind_of("science.alt.dataset.entry") == "entry"
    assert lex.kind_of("ac.foundation.dataset.record") == "entry"
    assert lex.kind_of("ac.foundation.dataset.schema") == "schema"
    with pytest.raises(ValueError):
        lex.AtUri.parse("https://x")
