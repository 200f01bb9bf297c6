"""Lens verification records (``VerificationPublisher`` / ``VerificationLoader``), on the real local PDS."""

from __future__ import annotations

from typing import Any

import pytest

from atdata_torch.atmosphere import (
    Atmosphere,
    LexCodeHash,
    LexCodeReference,
    LexLensVerification,
    VerificationLoader,
    VerificationPublisher,
)
from atdata_torch.errors import PublishError, RecordNotFoundError


def test_record_round_trip_and_missing_fields() -> None:
    rec = LexLensVerification(
        "at://did:plc:a/science.alt.dataset.lens/x",
        "bafyc",
        "codeReview",
        code_hash=LexCodeHash("sha256", "ab"),
        proof_ref=LexCodeReference("https://github.com/o/r", "abc", "m:f"),
        description="ok",
    )
    d = rec.to_record()
    assert d["$type"] == "science.alt.dataset.lensVerification" and d["lensCommit"] == "bafyc"
    assert LexLensVerification.from_record(d) == rec
    with pytest.raises(RecordNotFoundError, match="lacks"):
        LexLensVerification.from_record({"lens": "x"})


@pytest.mark.integration
def test_publish_list_and_find(atproto_net: dict[str, Any]) -> None:
    pds, plc = atproto_net["pdsUrl"], atproto_net["plcUrl"]
    with Atmosphere.login("bob.test", "bob-pass", pds=pds, plc=plc) as bob:
        pub = VerificationPublisher(bob)
        lens = f"at://{bob.did}/science.alt.dataset.lens/abc"
        uri = pub.publish(lens_uri=lens, lens_commit="bafyc", verification_method="formalProof", description="lean")
        other = pub.publish(lens_uri=lens + "z", lens_commit="bafyd", verification_method="codeReview")
        with pytest.raises(PublishError, match="drop rkey"):
            pub.publish(lens_uri=lens, lens_commit="c", verification_method="codeReview", rkey="k")
        foreign = bob.create_record("science.alt.dataset.note", {"$type": "science.alt.dataset.note", "text": "x"})
    anon = Atmosphere.anonymous(pds=pds, plc=plc)
    loader = VerificationLoader(anon)
    assert loader.get(uri)["description"] == "lean"
    assert loader.get_typed(uri).verification_method == "formalProof"
    assert [r["lensCommit"] for r in loader.list_for_lens(lens, repo="bob.test")][-1] == "bafyc"
    assert all(r["verificationMethod"] == "codeReview" for r in loader.find_by_method("codeReview", repo="bob.test"))
    assert loader.find_by_method("codeReview", repo="bob.test", limit=1) and str(other)
    with pytest.raises(RecordNotFoundError, match=r"not a science\.alt\.dataset\.lensVerification"):
        loader.get(foreign)
    anon.close()
