"""AppView support (``appview=``, ``from_env``, ``xrpc_query`` / ``xrpc_procedure``, search, publishing routed
through ``science.alt.dataset.publish*``). There is no real AppView here: the XRPC plumbing is tested against the
real local PDS standing in as the "AppView" URL (a real query it implements succeeds; its real refusals of the
``science.alt.dataset.*`` methods must become ``AppViewUnavailableError`` naming the fix)."""

from __future__ import annotations

from typing import Any

import pytest

from atdata_torch.atmosphere import PUBLISH_PROCEDURES, Atmosphere, SchemaPublisher, VerificationPublisher
from atdata_torch.atmosphere._appview import did_web_to_url, url_to_did_web
from atdata_torch.errors import AppViewRequiredError, AppViewUnavailableError, AuthError, ConfigError


def test_appview_values_and_the_required_error() -> None:
    assert did_web_to_url("did:web:datasets.atdata.blue") == "https://datasets.atdata.blue"
    assert url_to_did_web("http://localhost:8000/") == "did:web:localhost%3A8000"
    anon = Atmosphere.anonymous(pds="http://127.0.0.1:9", plc="http://127.0.0.1:9")
    assert not anon.has_appview and anon.appview_url is None
    for call in (lambda: anon.xrpc_query("x.y"), lambda: anon.search_datasets("q"), lambda: anon.search_lenses()):
        with pytest.raises(AppViewRequiredError, match="appview="):
            call()
    with pytest.raises(ConfigError, match="did:web"):
        anon.configure_appview("datasets.atdata.blue")
    anon.configure_appview("did:web:datasets.atdata.blue")
    assert (anon.appview_url, anon.appview_did) == ("https://datasets.atdata.blue", "did:web:datasets.atdata.blue")
    with pytest.raises(ConfigError, match="at most 25"):
        anon.get_entries([f"at://did:plc:a/c/{i}" for i in range(26)])
    with pytest.raises(AuthError):
        anon.xrpc_procedure("science.alt.dataset.publishSchema", {})
    assert PUBLISH_PROCEDURES["science.alt.dataset.entry"] == "science.alt.dataset.publishDataset"
    anon.close()


def test_from_env_needs_the_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATDATA_HANDLE", raising=False)
    monkeypatch.delenv("ATDATA_PASSWORD", raising=False)
    with pytest.raises(EnvironmentError, match="ATDATA_HANDLE and ATDATA_PASSWORD"):
        Atmosphere.from_env()


@pytest.mark.integration
def test_xrpc_against_the_real_pds(atproto_net: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    pds, plc = atproto_net["pdsUrl"], atproto_net["plcUrl"]
    monkeypatch.setenv("ATDATA_HANDLE", "carol.test")
    monkeypatch.setenv("ATDATA_PASSWORD", "carol-pass")
    monkeypatch.setenv("ATDATA_PDS_URL", pds)
    monkeypatch.setenv("ATDATA_PLC_URL", plc)
    monkeypatch.setenv("ATDATA_APPVIEW", pds)
    with Atmosphere.from_env() as carol:
        assert carol.has_appview and carol.appview_url == pds.rstrip("/")
        got = carol.xrpc_query("com.atproto.repo.describeRepo", {"repo": carol.did})
        assert got["did"] == carol.did and got["handle"] == "carol.test"
        # the PDS does not implement the AppView's methods: its real answer (401 AuthMissing) is mapped
        with pytest.raises(AppViewUnavailableError, match=r"searchDatasets answered HTTP 401.*drop appview="):
            carol.search_datasets("digits")
        with pytest.raises(AppViewUnavailableError, match="getEntryStats"):
            carol.get_entry_stats("at://did:plc:a/science.alt.dataset.entry/x")
        # publishing prefers the AppView procedure, as the original does; the PDS cannot resolve the proxy DID
        # (did:web:localhost...) and says so: an error, never a silent fallback to createRecord
        before = len(carol.list_schemas())
        with pytest.raises(AppViewUnavailableError, match=r"publishLensVerification answered HTTP 400.*proxy"):
            VerificationPublisher(carol).publish(lens_uri="at://x/y/z", lens_commit="c", verification_method="m")
        with pytest.raises(AppViewUnavailableError, match="publishSchema"):
            SchemaPublisher(carol).publish(_Sample, version="9.9.9")
        assert len(carol.list_schemas()) == before
        carol.configure_appview(None)  # without it, records go straight to the PDS
        assert not carol.has_appview
        uri = VerificationPublisher(carol).publish(lens_uri="at://x/y/z", lens_commit="c", verification_method="m")
        assert uri.authority == carol.did
    with (
        Atmosphere.login("carol.test", "carol-pass", pds=pds, plc=plc, appview="http://127.0.0.1:9") as c2,
        pytest.raises(AppViewUnavailableError, match="ConnectError"),
    ):
        c2.xrpc_query("com.atproto.repo.describeRepo", {"repo": c2.did})


import atdata_torch as atd  # noqa: E402


@atd.packable
class _Sample:
    """A sample whose schema is never published here."""

    label: int
