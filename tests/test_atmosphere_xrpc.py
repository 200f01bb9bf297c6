"""The XRPC repository layer (``atmosphere/_xrpc.py``) against the loopback PDS: records and blobs, as an account
and anonymously."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from atdata_torch.atmosphere import Atmosphere, XrpcRepo
from atdata_torch.atmosphere._identity import Identity
from atdata_torch.atmosphere._xrpc import MAX_RECORD_BYTES, error_status
from atdata_torch.errors import AuthError, PublishError, RecordNotFoundError

pytestmark = pytest.mark.integration

Net = dict[str, Any]
LABEL = "science.alt.dataset.label"


@pytest.fixture(scope="module")
def alice(atproto_net: Net) -> Iterator[Atmosphere]:
    with Atmosphere.login("alice.test", "alice-pass", pds=atproto_net["pdsUrl"], plc=atproto_net["plcUrl"]) as a:
        yield a


def _label(name: str) -> dict[str, Any]:
    return {"$type": LABEL, "name": name, "datasetUri": "at://did:plc:x/science.alt.dataset.entry/k"}


def test_the_facade_shares_its_state_with_the_repository_layer(alice: Atmosphere) -> None:
    assert isinstance(alice.xrpc, XrpcRepo)
    assert (alice.did, alice.handle, alice.pds) == (alice.xrpc.did, alice.xrpc.handle, alice.xrpc.pds)
    before = alice.max_blob_bytes
    alice.max_blob_bytes = 123
    try:
        assert alice.xrpc.max_blob_bytes == 123
    finally:
        alice.max_blob_bytes = before


def test_put_get_list_delete_a_record(alice: Atmosphere) -> None:
    xrpc = alice.xrpc
    rkey = uuid.uuid4().hex[:12]
    uri = xrpc.put_record(LABEL, rkey, _label("first"))
    assert uri == f"at://{alice.did}/{LABEL}/{rkey}"
    assert xrpc.get_record(uri)[1]["name"] == "first"
    assert xrpc.put_record(LABEL, rkey, _label("second")) == uri  # the same rkey: replaced
    got_uri, value = xrpc.get_record(f"at://alice.test/{LABEL}/{rkey}")  # a handle resolves to the DID
    assert (got_uri, value["name"]) == (uri, "second")
    assert uri in {u for u, _ in xrpc.list_records(LABEL)}
    xrpc.delete_record(uri)
    with pytest.raises(RecordNotFoundError):
        xrpc.get_record(uri)
    assert uri not in {u for u, _ in xrpc.list_records(LABEL)}
    xrpc.delete_record(uri)  # deleting what is gone is no error


def test_create_record_gets_a_fresh_rkey(alice: Atmosphere) -> None:
    a = alice.xrpc.create_record(LABEL, _label("a"))
    b = alice.xrpc.create_record(LABEL, _label("a"))
    assert a != b
    for uri in (a, b):
        alice.xrpc.delete_record(uri)


def test_writes_are_checked_before_they_are_sent(alice: Atmosphere) -> None:
    with pytest.raises(PublishError, match="float"):
        alice.xrpc.put_record(LABEL, "floaty", {**_label("x"), "score": 0.5})
    with pytest.raises(PublishError, match="150 KB"):
        alice.xrpc.put_record(LABEL, "big", {**_label("x"), "description": "x" * MAX_RECORD_BYTES})
    with pytest.raises(AuthError, match=r"cannot write to the repo of bob\.test"):
        alice.xrpc.put_record(LABEL, "x", _label("x"), repo="bob.test")
    with pytest.raises(AuthError, match=r"cannot write to the repo of bob\.test"):
        alice.xrpc.delete_record(f"at://bob.test/{LABEL}/x")
    with pytest.raises(RecordNotFoundError, match="names a repo"):
        alice.xrpc.delete_record("at://alice.test")


def test_upload_blob_returns_the_reference_a_record_holds(alice: Atmosphere) -> None:
    ref = alice.xrpc.upload_blob(b"hello blob", "application/octet-stream", what="a test blob")
    assert ref["$type"] == "blob" and ref["mimeType"] == "application/octet-stream" and ref["size"] == 10
    assert ref["ref"]["$link"].startswith("baf")


def test_anonymous_reads_but_does_not_write(atproto_net: Net, alice: Atmosphere) -> None:
    uri = alice.xrpc.put_record(LABEL, uuid.uuid4().hex[:12], _label("public"))
    anon = XrpcRepo(Identity(plc=atproto_net["plcUrl"], pds=atproto_net["pdsUrl"]))
    try:
        assert anon.get_record(uri)[1]["name"] == "public"
        assert alice.did in anon.list_repos()
        for write in (
            lambda: anon.put_record(LABEL, "x", _label("x")),
            lambda: anon.create_record(LABEL, _label("x")),
            lambda: anon.delete_record(uri),
            lambda: anon.upload_blob(b"x", "text/plain"),
        ):
            with pytest.raises(AuthError, match="anonymous"):
                write()
    finally:
        anon.close()
        alice.xrpc.delete_record(uri)


def test_error_status_of_a_non_sdk_exception() -> None:
    assert error_status(RuntimeError("boom")) == (None, "", "")
