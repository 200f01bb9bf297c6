"""Identity: handle syntax, the PLC / PDS settings and their environment variables (the network tests are in
test_atmosphere.py)."""

from __future__ import annotations

import pytest

from atdata_torch.atmosphere._identity import DEFAULT_PLC, Identity, is_did, normalize_handle
from atdata_torch.errors import IdentityError


def test_plc_and_pds_come_from_arguments_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATDATA_PLC_URL", raising=False)
    monkeypatch.delenv("ATDATA_PDS_URL", raising=False)
    ids = Identity()
    assert ids.plc_url == DEFAULT_PLC and ids.pds_url is None
    monkeypatch.setenv("ATDATA_PLC_URL", "http://plc.example:1/")
    monkeypatch.setenv("ATDATA_PDS_URL", "http://pds.example:2")
    ids = Identity()
    assert ids.plc_url == "http://plc.example:1" and ids.pds_url == "http://pds.example:2"
    ids = Identity(plc="http://other", pds="http://p")
    assert ids.plc_url == "http://other" and ids.pds_url == "http://p"
    ids.close()


def test_handles_and_dids() -> None:
    assert normalize_handle("@Alice.Bsky.Social") == "alice.bsky.social"
    assert is_did("did:web:example.com") and not is_did("example.com")
    for bad in ("alice", "no spaces.test", "-x.test", ""):
        with pytest.raises(IdentityError, match="is not a handle"):
            normalize_handle(bad)


def test_unreachable_directory_is_a_clear_error() -> None:
    ids = Identity(plc="http://127.0.0.1:9", pds=None, timeout=2)
    try:
        with pytest.raises(IdentityError, match=r"could not resolve did:plc:abc through http://127\.0\.0\.1:9"):
            ids.did_document("did:plc:abc")
    finally:
        ids.close()
