"""The original atdata's lens verification records (``science.alt.dataset.lensVerification``): an account attests
that it reviewed, tested or proved a lens. The verifier is the DID of the repo the record is in.

Example (needs a PDS; the tests run one on loopback)::

    uri = VerificationPublisher(atmo).publish(lens_uri=str(lens_uri), lens_commit=cid, verification_method="codeReview")
    VerificationLoader(anon).list_for_lens(str(lens_uri), repo="alice.test")
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import RecordNotFoundError
from ._client import Atmosphere
from ._compat import _no_rkey
from ._compat_lex import LexCodeReference
from ._lex_base import NS, AtUri, now_iso

__all__ = [
    "VERIFICATION_COLLECTION",
    "LexCodeHash",
    "LexLensVerification",
    "VerificationLoader",
    "VerificationPublisher",
]

VERIFICATION_COLLECTION = f"{NS}.lensVerification"


@dataclass
class LexCodeHash:
    """``lensVerification#codeHash``: a hash of the code at the verified commit.

    Example:
        >>> LexCodeHash("sha256", "ab").to_record()
        {'algorithm': 'sha256', 'digest': 'ab'}
    """

    algorithm: str
    digest: str

    def to_record(self) -> dict[str, str]:
        """The record dict."""
        return {"algorithm": self.algorithm, "digest": self.digest}

    @classmethod
    def from_record(cls, d: Mapping[str, Any]) -> LexCodeHash:
        """Read a code hash."""
        return cls(algorithm=str(d["algorithm"]), digest=str(d["digest"]))


@dataclass
class LexLensVerification:
    """A ``science.alt.dataset.lensVerification`` record (``created_at`` is an RFC 3339 string here)."""

    lens: str
    lens_commit: str
    verification_method: str
    created_at: str = field(default_factory=now_iso)
    code_hash: LexCodeHash | None = None
    proof_ref: LexCodeReference | None = None
    description: str | None = None

    def to_record(self) -> dict[str, Any]:
        """The record dict."""
        d: dict[str, Any] = {
            "$type": VERIFICATION_COLLECTION,
            "lens": self.lens,
            "lensCommit": self.lens_commit,
            "verificationMethod": self.verification_method,
            "createdAt": self.created_at,
        }
        if self.code_hash is not None:
            d["codeHash"] = self.code_hash.to_record()
        if self.proof_ref is not None:
            d["proofRef"] = self.proof_ref.to_record()
        if self.description is not None:
            d["description"] = self.description
        return d

    @classmethod
    def from_record(cls, d: Mapping[str, Any]) -> LexLensVerification:
        """Read a record.

        Raises:
            RecordNotFoundError: a required field is missing.
        """
        missing = [k for k in ("lens", "lensCommit", "verificationMethod") if k not in d]
        if missing:
            raise RecordNotFoundError(f"a {VERIFICATION_COLLECTION} record lacks {missing}; it has {sorted(d)}")
        return cls(
            lens=str(d["lens"]),
            lens_commit=str(d["lensCommit"]),
            verification_method=str(d["verificationMethod"]),
            created_at=str(d.get("createdAt") or ""),
            code_hash=LexCodeHash.from_record(d["codeHash"]) if "codeHash" in d else None,
            proof_ref=LexCodeReference.from_record(d["proofRef"]) if "proofRef" in d else None,
            description=d.get("description"),
        )


class VerificationPublisher:
    """Publish lens verification records (through ``publishLensVerification`` when an AppView is set).

    Args:
        client: A logged-in :class:`Atmosphere`.
    """

    def __init__(self, client: Atmosphere) -> None:
        self.client = client

    def publish(
        self,
        *,
        lens_uri: str,
        lens_commit: str,
        verification_method: str,
        code_hash: LexCodeHash | None = None,
        proof_ref: LexCodeReference | None = None,
        description: str | None = None,
        rkey: str | None = None,
    ) -> AtUri:
        """Attest ``lens_uri`` at ``lens_commit`` (``"codeReview"``, ``"formalProof"``, ``"signedHash"``, ...).

        Raises:
            PublishError: ``rkey`` (the PDS picks keys), or the PDS refused the record.
        """
        _no_rkey(rkey, "VerificationPublisher.publish")
        rec = LexLensVerification(
            lens=lens_uri,
            lens_commit=lens_commit,
            verification_method=verification_method,
            code_hash=code_hash,
            proof_ref=proof_ref,
            description=description,
        )
        return AtUri.parse(self.client.create_record(VERIFICATION_COLLECTION, rec.to_record()))


class VerificationLoader:
    """Read lens verification records from any repo (no login needed).

    Args:
        client: An :class:`Atmosphere` (anonymous is enough).
    """

    def __init__(self, client: Atmosphere) -> None:
        self.client = client

    def get(self, uri: str | AtUri) -> dict[str, Any]:
        """The record at ``uri``.

        Raises:
            RecordNotFoundError: no such record, or not a verification record.
        """
        _, value = self.client.get_record(str(uri))
        if value.get("$type") != VERIFICATION_COLLECTION:
            raise RecordNotFoundError(f"{uri} is not a {VERIFICATION_COLLECTION} record (it is {value.get('$type')!r})")
        return value

    def get_typed(self, uri: str | AtUri) -> LexLensVerification:
        """The record as a :class:`LexLensVerification`."""
        return LexLensVerification.from_record(self.get(uri))

    def _matching(self, key: str, want: str, repo: str | None, limit: int) -> list[dict[str, Any]]:
        out = []
        for _uri, value in self.client.list_records(VERIFICATION_COLLECTION, repo=repo):
            if value.get(key) == want:
                out.append(value)
                if len(out) >= limit:
                    break
        return out

    def list_for_lens(self, lens_uri: str, repo: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The verification records of ``lens_uri`` in ``repo`` (default: the logged-in account's)."""
        return self._matching("lens", lens_uri, repo, limit)

    def find_by_method(self, method: str, repo: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The verification records with ``verificationMethod == method`` in ``repo``."""
        return self._matching("verificationMethod", method, repo, limit)
