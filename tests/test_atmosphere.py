"""The AT Protocol against a real network on loopback: a PLC directory and an ``@atproto/pds`` (``tests/pds``).

Alice publishes; bob (and anonymous readers) load. Every test uses its own dataset names, since the network lives
for the whole session.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _atmo_lenses import AtmoFull, AtmoLabel, label_only

import atdata_torch as atd
from atdata_torch.atmosphere import Atmosphere, CodeRef
from atdata_torch.errors import (
    AuthError,
    BlobLimitError,
    ChecksumError,
    LensNotFoundError,
    PublishError,
    RecordNotFoundError,
    SchemaError,
)

pytestmark = pytest.mark.integration

Net = dict[str, Any]


def _uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def alice(atproto_net: Net) -> Iterator[Atmosphere]:
    with Atmosphere.login("alice.test", "alice-pass", pds=atproto_net["pdsUrl"], plc=atproto_net["plcUrl"]) as a:
        yield a


@pytest.fixture
def net_env(atproto_net: Net, monkeypatch: pytest.MonkeyPatch) -> Net:
    """Anonymous readers find the network through the environment, as the original reads it."""
    monkeypatch.setenv("ATDATA_PLC_URL", atproto_net["plcUrl"])
    monkeypatch.setenv("ATDATA_PDS_URL", atproto_net["pdsUrl"])
    return atproto_net


def _samples(n: int, seed: int = 0) -> list[AtmoFull]:
    rng = np.random.default_rng(seed)
    return [AtmoFull(rng.integers(0, 255, (4, 4), dtype=np.uint8), i, f"n{i}") for i in range(n)]


@pytest.fixture
def digits(tmp_path: Path) -> Path:
    """train (2 shards, 6 samples) and test (1 shard, 3 samples) in the original's naming."""
    d = tmp_path / "digits"
    atd.write_samples(_samples(6), d / "train.tar", maxcount=3, progress=False)
    atd.write_samples(_samples(3, seed=1), d / "test.tar", maxcount=3, progress=False)
    return d


def _same(a: list[AtmoFull], b: list[Any]) -> None:
    assert [s.label for s in a] == [s.label for s in b]
    assert [s.note for s in a] == [s.note for s in b]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.image, y.image)


# ------------------------------------------------------------------------------------------------------ storage
def test_blobs_publish_and_load_back_anonymously(alice: Atmosphere, digits: Path, net_env: Net) -> None:
    name = _uid("digits")
    ds = atd.Dataset[AtmoFull](str(digits / "train-{000000..000001}.tar"))
    test = atd.Dataset[AtmoFull](str(digits / "test-000000.tar"))
    uri = alice.publish_dataset(atd.Dataset.concat([ds, test]), name=name, storage="blobs", tags=["vision"])
    assert uri.startswith(f"at://{alice.did}/science.alt.dataset.entry/")
    _, rec = alice.get_record(uri)
    assert rec["storage"]["$type"] == "science.alt.dataset.storageBlobs"
    blob = rec["storage"]["blobs"][0]
    assert blob["blob"]["mimeType"] == "application/x-tar"
    local = (digits / "train-000000.tar").read_bytes()
    assert blob["checksum"] == {"algorithm": "sha256", "digest": hashlib.sha256(local).hexdigest()}
    assert blob["blob"]["size"] == len(local)
    assert rec["size"] == {"samples": 9, "bytes": sum(b["blob"]["size"] for b in rec["storage"]["blobs"]), "shards": 3}
    assert "/tmp" not in json.dumps(rec)  # never a local path

    splits = atd.load_dataset(uri)  # anonymous: the PDS comes from alice's DID document
    assert sorted(splits) == ["test", "train"]
    train = atd.load_dataset(uri, split="train")
    assert len(train) == 6  # from the index blobs, before any shard is read
    _same(_samples(6), list(train.ordered()))
    _same(_samples(3, seed=1), list(splits["test"].ordered()))
    typed = atd.load_dataset(uri, AtmoFull, split="test[:2]")
    assert [s.label for s in typed.ordered()] == [0, 1]


def test_http_storage_records_urls_and_loads_back(
    alice: Atmosphere, digits: Path, http_server: Any, http_root: Path, net_env: Net
) -> None:
    for p in digits.iterdir():
        shutil.copy(p, http_root / p.name)
    ds = atd.Dataset[AtmoFull](http_server.url("train-{000000..000001}.tar"))
    uri = alice.publish_dataset(ds, name=_uid("web"))
    _, rec = alice.get_record(uri)
    assert rec["storage"]["$type"] == "science.alt.dataset.storageHttp"
    urls = [s["url"] for s in rec["storage"]["shards"]]
    assert urls == ds.list_shards()
    sha = hashlib.sha256((digits / "train-000000.tar").read_bytes()).hexdigest()
    assert rec["storage"]["shards"][0]["checksum"] == {"algorithm": "sha256", "digest": sha}
    assert rec["size"]["samples"] == 6
    back = atd.load_dataset(uri, split="train")
    _same(_samples(6), list(back.ordered()))


def test_s3_storage_records_bucket_and_endpoint_without_credentials(
    alice: Atmosphere, digits: Path, s3_upload: Callable[..., str], moto_endpoint: str, net_env: Net
) -> None:
    bucket = s3_upload(sorted(digits.glob("train-*.tar")), prefix="d/")
    ds = atd.Dataset[AtmoFull](f"s3://{bucket}/d/train-{{000000..000001}}.tar", endpoint=moto_endpoint)
    uri = alice.publish_dataset(ds, name=_uid("s3"), storage="s3")
    _, rec = alice.get_record(uri)
    st = rec["storage"]
    assert st["$type"] == "science.alt.dataset.storageS3"
    assert st["bucket"] == bucket and st["endpoint"] == moto_endpoint
    assert [s["key"] for s in st["shards"]] == ["d/train-000000.tar", "d/train-000001.tar"]
    text = json.dumps(rec)
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in text and os.environ["AWS_ACCESS_KEY_ID"] not in text
    back = atd.load_dataset(uri, split="train")  # endpoint from the record, credentials from the environment
    _same(_samples(6), list(back.ordered()))


def test_local_paths_are_refused_for_url_storage(alice: Atmosphere, digits: Path) -> None:
    ds = atd.Dataset[AtmoFull](str(digits / "train-000000.tar"))
    with pytest.raises(PublishError, match=r"local file.*storage='blobs'"):
        alice.publish_dataset(ds, name=_uid("local"), storage="http")
    with pytest.raises(PublishError, match="local file"):
        alice.publish_dataset(ds, name=_uid("local"), storage="s3")


def test_blob_limit_is_checked_before_upload_and_a_413_is_explained(
    atproto_net: Net, alice: Atmosphere, tmp_path: Path
) -> None:
    ds = atd.write_samples(_samples(4), tmp_path / "a.tar", progress=False)
    small = Atmosphere.login(
        "alice.test", "alice-pass", pds=atproto_net["pdsUrl"], plc=atproto_net["plcUrl"], max_blob_bytes=1024
    )
    try:
        with pytest.raises(BlobLimitError, match=r"limit is 1,024 bytes.*storage='http'"):
            small.publish_dataset(ds, name=_uid("big"))
    finally:
        small.close()
    # A real 413: the test PDS accepts 16 MiB blobs.
    big = atd.write_samples(
        [AtmoFull(np.zeros((4200, 1024), np.uint8), i, "x") for i in range(4)], tmp_path / "b.tar", progress=False
    )
    assert os.path.getsize(tmp_path / "b.tar") > 16 << 20
    with pytest.raises(BlobLimitError, match=r"413.*PDS_BLOB_UPLOAD_LIMIT.*maxsize"):
        alice.publish_dataset(big, name=_uid("big"))


def test_floats_in_metadata_are_refused(alice: Atmosphere, digits: Path) -> None:
    ds = atd.Dataset[AtmoFull](str(digits / "test-000000.tar"))
    with pytest.raises(PublishError, match="float"):
        alice.publish_dataset(ds, name=_uid("f"), metadata={"lr": 0.5})


# ------------------------------------------------------------------------------------------------------ names
def test_bob_loads_alices_labels_by_handle(atproto_net: Net, alice: Atmosphere, digits: Path, net_env: Net) -> None:
    name = _uid("labels")
    v1 = alice.publish_dataset(atd.Dataset[AtmoFull](str(digits / "test-000000.tar")), name=name, version="1.0.0")
    time.sleep(0.01)
    v2 = alice.publish_dataset(atd.Dataset[AtmoFull](str(digits / "train-000000.tar")), name=name)
    alice.label(name, v2, version="2.0.0")
    with Atmosphere.login("bob.test", "bob-pass", pds=atproto_net["pdsUrl"], plc=atproto_net["plcUrl"]) as bob:
        assert bob.get_dataset(f"@alice.test/{name}@1.0.0").uri == v1
        assert bob.get_dataset(f"@alice.test/{name}").uri == v2  # the newest label
        _same(_samples(3, seed=1), list(bob.load(f"@alice.test/{name}@1.0.0", split="test").ordered()))
    assert len(atd.load_dataset(f"@alice.test/{name}@2.0.0", split="train")) == 3
    with pytest.raises(RecordNotFoundError, match=r"no version '3.0.0'.*\['1.0.0', '2.0.0'\]"):
        atd.load_dataset(f"@alice.test/{name}@3.0.0", split="train")
    with pytest.raises(RecordNotFoundError, match="has no dataset named"):
        atd.load_dataset("@alice.test/no-such-dataset", split="train")
    label_uri = next(lb.uri for lb in alice.list_labels() if lb.name == name and lb.version == "1.0.0")
    assert alice.get_dataset(label_uri).uri == v1  # a label's at-uri loads its entry


def test_schema_is_reused_and_versions_bump(alice: Atmosphere) -> None:
    @atd.packable
    class Reused:
        x: int

    first = alice.publish_schema(Reused)
    assert alice.publish_schema(Reused) == first
    before = len(alice.list_schemas())

    @atd.packable
    class Reused:  # type: ignore[no-redef]  # same name, new fields
        x: int
        y: str

    second = alice.publish_schema(Reused)
    assert second != first and alice.get_schema(second).version == "1.0.1"
    assert len(alice.list_schemas()) == before + 1
    with pytest.raises(SchemaError, match=r"Reused@1.0.0 is already published.*version='1.0.1'"):
        alice.publish_schema(Reused, version="1.0.0")
    assert alice.schema_type(second).__name__ == "Reused"


def test_listing_pages_past_100_records(atproto_net: Net, digits: Path) -> None:
    with Atmosphere.login("carol.test", "carol-pass", pds=atproto_net["pdsUrl"], plc=atproto_net["plcUrl"]) as carol:
        uri = carol.publish_dataset(atd.Dataset[AtmoFull](str(digits / "test-000000.tar")), name="many")
        for i in range(130):
            carol.create_record(
                "science.alt.dataset.label",
                {
                    "name": "many",
                    "datasetUri": uri,
                    "version": f"0.0.{i}",
                    "createdAt": f"2025-01-01T00:00:{i // 60:02d}.{i:06d}Z",
                },
            )
        labels = carol.list_labels()
        assert len({lb.version for lb in labels if lb.name == "many"}) == 130
        assert carol.get_dataset("@carol.test/many@0.0.129").uri == uri


def test_search_across_the_pds(alice: Atmosphere, atproto_net: Net, digits: Path) -> None:
    name = _uid("findme")
    alice.publish_dataset(
        atd.Dataset[AtmoFull](str(digits / "test-000000.tar")),
        name=name,
        tags=["rare-tag"],
        description="handwritten digits",
    )
    anon = Atmosphere.anonymous(pds=atproto_net["pdsUrl"], plc=atproto_net["plcUrl"])
    try:
        hits = anon.search(name)
        assert [h.name for h in hits] == [name] and hits[0].repo == alice.did
        assert name in [h.name for h in anon.search("handwritten", tags=["rare-tag"])]
        assert anon.search(name, repos=["bob.test"]) == []
        assert name in [d.name for d in anon.list_datasets("alice.test")]
    finally:
        anon.close()


# ------------------------------------------------------------------------------------------------------ lenses
def test_lens_publish_find_and_load_only_allowed_code(alice: Atmosphere, atproto_net: Net) -> None:
    code = CodeRef(repository="https://example.org/lenses.git", commit="0" * 40, path="_atmo_lenses:label_only")
    uri = alice.publish_lens(label_only, code=code, description="keep the label")
    found = alice.find_lenses(source=AtmoFull, target=AtmoLabel)
    assert uri in [f.uri for f in found]
    rec = next(f for f in found if f.uri == uri)
    assert rec.getter == code
    with Atmosphere.anonymous(pds=atproto_net["pdsUrl"], plc=atproto_net["plcUrl"]) as bob:
        with pytest.raises(AuthError, match=r"allow=\['_atmo_lenses'\]"):
            bob.load_lens(uri)
        lens = bob.load_lens(uri, allow=["_atmo_lenses"])
        assert lens(_samples(1)[0]) == AtmoLabel(label=0)
        ghost = CodeRef(repository="https://example.org/x.git", commit="1" * 40, path="not_installed_pkg:lens")
        ghost_uri = alice.publish_lens(label_only, code=ghost, name="ghost")
        with pytest.raises(LensNotFoundError, match="not installed"):
            bob.load_lens(ghost_uri, allow=["not_installed_pkg"])


# ------------------------------------------------------------------------------------------------------ index
def test_promote_from_the_sqlite_index(alice: Atmosphere, tmp_path: Path, net_env: Net) -> None:
    index = atd.Index(tmp_path / "index.db")
    name = _uid("promoted")
    index.write_samples(
        {"train": _samples(5), "test": _samples(2, seed=3)},
        name=name,
        version="1.0.0",
        tags=["t"],
        maxcount=2,
        progress=False,
    )
    uri = index.promote(name, to=alice)
    index.close()
    _, rec = alice.get_record(uri)
    assert rec["tags"] == ["t"] and len(rec["storage"]["blobs"]) == 4
    dd = atd.load_dataset(f"@alice.test/{name}@1.0.0")
    assert sorted(dd) == ["test", "train"]
    _same(_samples(5), list(dd["train"].ordered()))
    assert type(dd["train"].head(1)[0]).__name__ == "AtmoFull"  # the type rebuilt from the published schema


# ------------------------------------------------------------------------------------------------------ integrity
def test_blob_checksum_mismatch_is_an_error(alice: Atmosphere, digits: Path, tmp_path: Path, net_env: Net) -> None:
    uri = alice.publish_dataset(atd.Dataset[AtmoFull](str(digits / "test-000000.tar")), name=_uid("ok"))
    _, rec = alice.get_record(uri)
    rec["storage"]["blobs"][0]["checksum"]["digest"] = "0" * 64
    rec["storage"]["blobs"][0]["atdataTorch"].pop("index")  # no sidecar: nothing to compare but the bytes
    rec["name"] = _uid("forged")
    forged = alice.create_record("science.alt.dataset.entry", rec)
    with pytest.raises(ChecksumError, match="record says 0000000000000000"):
        list(atd.load_dataset(forged, split="test").ordered())
    with pytest.raises(ChecksumError):
        list(atd.load_dataset(forged, split="test", cache_dir=tmp_path / "cache").ordered())


def test_records_in_the_originals_exact_shapes(alice: Atmosphere, digits: Path, net_env: Net) -> None:
    """Records built by hand from docs/format.md, as the original writes them (both namespaces)."""
    client, did = alice.xrpc.account()
    shard = (digits / "test-000000.tar").read_bytes()
    from atdata_torch.atmosphere._xrpc import upload_blob

    up = upload_blob(client, shard, "application/x-tar")
    schema = {
        "$type": "science.alt.dataset.schema",
        "name": "AtmoFull",
        "version": "1.0.0",
        "schemaType": "jsonSchema",
        "createdAt": "2025-06-01T00:00:00+00:00",
        "atdataSchemaVersion": 1,
        "schema": {
            "$type": "science.alt.dataset.schema#jsonSchemaFormat",
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {
                "image": {"$ref": "https://alt.science/schemas/atdata-ndarray-bytes/1.0.0#/$defs/ndarray"},
                "label": {"type": "integer"},
                "note": {"type": "string"},
            },
            "required": ["image", "label", "note"],
            "arrayFormatVersions": {"ndarrayBytes": "1.0.0"},
        },
    }
    schema_uri = alice.create_record("science.alt.dataset.schema", schema)
    name = _uid("orig")
    entry = {
        "$type": "science.alt.dataset.entry",
        "name": name,
        "schemaRef": schema_uri,
        "createdAt": "2025-06-01T00:00:00+00:00",
        "tags": [],
        "storage": {
            "$type": "science.alt.dataset.storageBlobs",
            "blobs": [
                {
                    "blob": {
                        "$type": "blob",
                        "ref": {"$link": str(up.blob.ref.link)},
                        "mimeType": "application/x-tar",
                        "size": len(shard),
                    },
                    "checksum": {"algorithm": "sha256", "digest": hashlib.sha256(shard).hexdigest()},
                }
            ],
        },
    }
    entry_uri = alice.create_record("science.alt.dataset.entry", entry)
    alice.create_record(
        "science.alt.dataset.label",
        {
            "$type": "science.alt.dataset.label",
            "name": name,
            "datasetUri": entry_uri,
            "version": "1.0.0",
            "createdAt": "2025-06-01T00:00:00+00:00",
        },
    )
    ds = atd.load_dataset(f"@alice.test/{name}@1.0.0", split="train")
    got = list(ds.ordered())
    assert type(got[0]).__name__ == "AtmoFull"
    _same(_samples(3, seed=1), got)

    # The older namespace: ac.foundation.dataset.record with external URLs.
    legacy_name = _uid("legacy")
    legacy = {
        "$type": "ac.foundation.dataset.record",
        "name": legacy_name,
        "schemaRef": schema_uri,
        "createdAt": "2024-06-01T00:00:00+00:00",
        "storage": {"$type": "ac.foundation.dataset.storageExternal", "urls": [str(digits / "train-000000.tar")]},
    }
    client.com.atproto.repo.create_record({"repo": did, "collection": "ac.foundation.dataset.record", "record": legacy})
    back = atd.load_dataset(f"@alice.test/{legacy_name}", split="train")
    _same(_samples(3), list(back.ordered()))


# ------------------------------------------------------------------------------------------------------ auth
def test_wrong_password_is_a_clear_error_without_the_password(
    atproto_net: Net, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthError, match=r"login as alice.test .*failed.*HTTP 401") as ei:
        Atmosphere.login("alice.test", "hunter2-wrong", pds=atproto_net["pdsUrl"], plc=atproto_net["plcUrl"])
    err = ei.value
    text = f"{err} {err!r} {err.__cause__!r} {err.__context__!r} {caplog.text}"
    assert "hunter2-wrong" not in text


def test_writing_to_another_accounts_repo_fails(alice: Atmosphere) -> None:
    with pytest.raises(AuthError, match=r"cannot write to the repo of bob.test"):
        alice.create_record("science.alt.dataset.label", {"name": "x", "datasetUri": "at://x"}, repo="bob.test")
    with pytest.raises(AuthError, match="anonymous"):
        Atmosphere.anonymous(pds="http://127.0.0.1:1", plc="http://127.0.0.1:1").publish_schema(AtmoLabel)


def _expire(session_string: str) -> str:
    """The SDK's session string with its access token's ``exp`` moved into the past."""
    parts = session_string.split(":::")
    access = next(i for i, p in enumerate(parts) if p.count(".") == 2 and p.startswith("ey"))
    head, payload, sig = parts[access].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["exp"] = int(time.time()) - 3600
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    parts[access] = f"{head}.{payload}.{sig}"
    return ":::".join(parts)


def test_saved_session_is_private_and_refreshes_when_expired(
    atproto_net: Net, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "cfg" / "session.json"
    a = Atmosphere.login(
        "alice.test", "alice-pass", pds=atproto_net["pdsUrl"], plc=atproto_net["plcUrl"], session_file=path
    )
    assert "alice-pass" not in repr(a) and "ey" not in repr(a)
    a.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    data = json.loads(path.read_text())
    assert "alice-pass" not in path.read_text()
    data["session"] = _expire(data["session"])
    path.write_text(json.dumps(data))
    expired = data["session"]
    with Atmosphere.from_session(path) as b:
        assert b.did == a.did
        b.publish_schema(AtmoLabel)  # a write: the SDK refreshes the expired access token first
    assert json.loads(path.read_text())["session"] != expired  # the refreshed tokens were saved
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    tokens = [p for p in data["session"].split(":::") if p.startswith("ey")]
    assert len(tokens) == 2 and not any(t in caplog.text for t in tokens)
    path.chmod(0o644)
    with pytest.raises(AuthError, match="readable by other users"):
        Atmosphere.from_session(path)


def test_handle_resolution_uses_the_did_document(atproto_net: Net, net_env: Net) -> None:
    from atdata_torch.atmosphere import Identity
    from atdata_torch.errors import IdentityError

    ids = Identity()  # ATDATA_PLC_URL / ATDATA_PDS_URL from the environment
    try:
        did = ids.resolve_handle("bob.test")
        assert did == next(a["did"] for a in atproto_net["accounts"] if a["handle"] == "bob.test")
        assert ids.pds_of(did) == atproto_net["pdsUrl"]
        assert ids.handle_of(did) == "bob.test"
        with pytest.raises(IdentityError, match=r"could not resolve the handle 'nobody-here.test'"):
            ids.resolve_handle("nobody-here.test")
    finally:
        ids.close()


def test_readme_atmosphere_block_runs(alice: Atmosphere, net_env: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = re.findall(r"```python atmosphere\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1
    import sys
    import types

    module = types.ModuleType("readme_atmosphere")
    monkeypatch.setitem(sys.modules, "readme_atmosphere", module)
    exec(compile(blocks[0], "README.md", "exec"), module.__dict__)
    assert len(module.train) == 20


def test_a_bare_pds_without_an_app_view(tmp_path: Path, atproto_net: Net) -> None:
    """No Bluesky app view at all (app.bsky.* answers 400): login, publish and anonymous reads still work."""
    from local_pds import LocalPDS, default_prefix

    with LocalPDS(seed_accounts=["dave"], prefix=default_prefix(), env={"PDS_STUB_APPVIEW": "0"}) as bare:
        info = bare.info
        assert info["appviewStubUrl"] is None
        ds = atd.write_samples(_samples(3), tmp_path / "train.tar", progress=False)
        with Atmosphere.login("dave.test", "dave-pass", pds=info["pdsUrl"], plc=info["plcUrl"]) as dave:
            uri = dave.publish_dataset(ds, name="bare", version="1.0.0")
        back = atd.load_dataset("@dave.test/bare@1.0.0", split="train", pds=info["pdsUrl"], plc=info["plcUrl"])
        _same(_samples(3), list(back.ordered()))
        assert atd.load_dataset(uri, split="train", plc=info["plcUrl"]).list_shards()[0].startswith(info["pdsUrl"])


def test_blob_dataset_in_dataloader_workers(alice: Atmosphere, digits: Path, net_env: Net) -> None:
    uri = alice.publish_dataset(atd.Dataset[AtmoFull](str(digits / "train-{000000..000001}.tar")), name=_uid("w"))
    ds = atd.load_dataset(uri, split="train")
    labels = []
    for batch in ds.loader(batch_size=2, num_workers=2):
        labels.extend(int(x) for x in batch.label)
    assert sorted(labels) == list(range(6))


def test_blob_source_asks_for_the_identity_encoding(http_server: Any, http_root: Path) -> None:
    from atdata_torch.atmosphere import BlobSource

    (http_root / "a.tar").write_bytes(b"x")
    (http_root / "a.tar.idx.json").write_bytes(b"{}")  # would be found if the source looked next to the URL
    src = BlobSource([http_server.url("a.tar")], headers={"X-A": "1"})
    assert src._headers == {"Accept-Encoding": "identity", "X-A": "1"}
    assert src.read_sidecar(src.list_shards()[0]) is None  # no index blob recorded: no request at all
    assert http_server.requests("a.tar.idx.json") == []


def test_a_token_the_pds_rejects_is_refreshed_once(atproto_net: Net, tmp_path: Path) -> None:
    """An access token the PDS refuses (here: a forged one that has not expired by its own clock) is refreshed with
    the refresh token and the call retried once; the new tokens are saved."""
    path = tmp_path / "session.json"
    Atmosphere.login(
        "alice.test", "alice-pass", pds=atproto_net["pdsUrl"], plc=atproto_net["plcUrl"], session_file=path
    ).close()
    data = json.loads(path.read_text())
    parts = data["session"].split(":::")
    access = next(i for i, p in enumerate(parts) if p.count(".") == 2 and p.startswith("ey"))
    head, payload, _sig = parts[access].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["exp"] = int(time.time()) + 36_000
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    parts[access] = f"{head}.{forged_payload}.{base64.urlsafe_b64encode(b'x' * 64).rstrip(b'=').decode()}"
    data["session"] = ":::".join(parts)
    path.write_text(json.dumps(data))
    path.chmod(0o600)

    @atd.packable
    class TokenProbe:  # a schema not yet in the repo, so a write (which needs a valid token) happens
        n: int

    with Atmosphere.from_session(path) as a:
        assert a.publish_schema(TokenProbe).startswith("at://")
    assert json.loads(path.read_text())["session"] != data["session"]
