"""Handles, DIDs and PDS endpoints, with no hard-wired host.

- A handle resolves through a PDS (``com.atproto.identity.resolveHandle`` on the ``pds=`` given, else on
  ``$ATDATA_PDS_URL``), then through DNS (``_atproto.<handle>`` TXT) and HTTPS (``/.well-known/atproto-did``).
- A DID resolves through the PLC directory (``plc=``, else ``$ATDATA_PLC_URL``, else https://plc.directory) or,
  for ``did:web``, its own host. The PDS endpoint comes from the DID document.
- A handle is trusted only when the DID document names it back (``alsoKnownAs``).

Example:
    >>> ids = Identity(plc="http://127.0.0.1:1", pds=None)
    >>> ids.plc_url
    'http://127.0.0.1:1'
    >>> ids.close()
"""

from __future__ import annotations

import os
import re
from typing import Any

from ..errors import IdentityError, MissingDependencyError

__all__ = ["DEFAULT_PLC", "Identity", "is_did", "normalize_handle"]

DEFAULT_PLC = "https://plc.directory"
_HANDLE = re.compile(r"^([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$")


def is_did(text: str) -> bool:
    """``did:plc:...`` / ``did:web:...``.

    Example:
        >>> is_did("did:plc:abc"), is_did("alice.test")
        (True, False)
    """
    return text.startswith("did:")


def normalize_handle(handle: str) -> str:
    """Strip ``@`` and lower-case; raise on something that is not a handle.

    Raises:
        IdentityError: not a syntactically valid handle.

    Example:
        >>> normalize_handle("@Alice.Test")
        'alice.test'
    """
    h = handle.strip().lstrip("@").lower()
    if not _HANDLE.match(h):
        raise IdentityError(f"{handle!r} is not a handle (expected a domain name such as alice.bsky.social) or a DID")
    return h


def _atproto() -> Any:
    try:
        import atproto
        import atproto.exceptions
    except ImportError as exc:
        raise MissingDependencyError.for_extra("atproto", "atmosphere", "The AT Protocol (atmosphere)") from exc
    return atproto


def close_http_clients(obj: Any, _depth: int = 0) -> None:
    """Close the httpx clients an atproto resolver holds (they are never closed otherwise)."""
    import httpx

    if _depth > 3 or obj is None:
        return
    for value in list(getattr(obj, "__dict__", {}).values()):
        if isinstance(value, httpx.Client):
            value.close()
        elif isinstance(value, dict):
            for v in value.values():
                close_http_clients(v, _depth + 1)
        elif hasattr(value, "__dict__") and type(value).__module__.startswith("atproto"):
            close_http_clients(value, _depth + 1)


class Identity:
    """Resolves handles and DIDs; caches answers for its lifetime.

    Args:
        plc: The PLC directory URL (``None``: ``$ATDATA_PLC_URL``, else https://plc.directory).
        pds: A PDS to ask for handle resolution first (``None``: ``$ATDATA_PDS_URL`` when set).
        timeout: Seconds per request.
    """

    def __init__(self, *, plc: str | None = None, pds: str | None = None, timeout: float = 10.0) -> None:
        self.plc_url = (plc or os.environ.get("ATDATA_PLC_URL") or DEFAULT_PLC).rstrip("/")
        env_pds = os.environ.get("ATDATA_PDS_URL")
        self.pds_url = (pds or env_pds or "").rstrip("/") or None
        self.timeout = timeout
        self._dids: dict[str, str] = {}
        self._docs: dict[str, Any] = {}
        self._resolver: Any = None
        self._http: Any = None

    def __repr__(self) -> str:
        return f"Identity(plc={self.plc_url!r}, pds={self.pds_url!r})"

    def _id_resolver(self) -> Any:
        if self._resolver is None:
            self._resolver = _atproto().IdResolver(plc_url=self.plc_url, timeout=self.timeout)
        return self._resolver

    def _client(self) -> Any:
        if self._http is None:
            import httpx

            self._http = httpx.Client(timeout=self.timeout, follow_redirects=True)
        return self._http

    def close(self) -> None:
        """Close the HTTP connections."""
        if self._resolver is not None:
            close_http_clients(self._resolver._handle)
            close_http_clients(self._resolver._did)
            self._resolver = None
        if self._http is not None:
            self._http.close()
            self._http = None

    # ---------------------------------------------------------------------------------------------------- handles
    def _via_pds(self, pds: str, handle: str) -> str | None:
        import httpx

        try:
            r = self._client().get(
                f"{pds}/xrpc/com.atproto.identity.resolveHandle", params={"handle": handle}, timeout=self.timeout
            )
        except httpx.HTTPError:
            return None
        if r.status_code != 200:
            return None
        did = r.json().get("did")
        return did if isinstance(did, str) and is_did(did) else None

    def resolve_handle(self, handle_or_did: str, *, pds: str | None = None) -> str:
        """The DID of a handle (a DID is returned as is).

        Raises:
            IdentityError: nothing resolves it, or its DID document does not name the handle back.
        """
        if is_did(handle_or_did):
            return handle_or_did
        handle = normalize_handle(handle_or_did)
        hit = self._dids.get(handle)
        if hit is not None:
            return hit
        tried = []
        did = None
        for p in dict.fromkeys(x for x in (pds, self.pds_url) if x):
            tried.append(f"resolveHandle on {p}")
            did = self._via_pds(p.rstrip("/"), handle)
            if did:
                break
        if did is None:
            tried.append("DNS TXT _atproto." + handle)
            tried.append(f"https://{handle}/.well-known/atproto-did")
            did = self._id_resolver().handle.resolve(handle)
        if not did:
            raise IdentityError(
                f"could not resolve the handle {handle!r} (tried: {'; '.join(tried)}); check the spelling, pass "
                "pds= (or set ATDATA_PDS_URL) to ask the PDS that hosts it, or use the DID"
            )
        doc_handle = self.handle_of(did)
        if doc_handle != handle:
            raise IdentityError(
                f"the handle {handle!r} resolves to {did}, but that DID's document names {doc_handle!r}: the "
                "handle is not verified, so it is not trusted"
            )
        self._dids[handle] = did
        return str(did)

    # ---------------------------------------------------------------------------------------------------- DIDs
    def did_document(self, did: str) -> Any:
        """The DID document (``did:plc`` through the PLC directory, ``did:web`` from its host).

        Raises:
            IdentityError: it cannot be fetched or is invalid.
        """
        doc = self._docs.get(did)
        if doc is not None:
            return doc
        where = self.plc_url if did.startswith("did:plc:") else did
        try:
            doc = self._id_resolver().did.resolve(did)
        except Exception as exc:  # atproto raises its own tree; keep ours
            raise IdentityError(f"could not resolve {did} through {where} ({type(exc).__name__}: {exc})") from exc
        if doc is None:
            raise IdentityError(
                f"{did} is not known to {where}; check the DID, or pass plc= / set ATDATA_PLC_URL to the directory "
                "that holds it"
            )
        self._docs[did] = doc
        return doc

    def pds_of(self, did: str) -> str:
        """The PDS endpoint in the DID's document.

        Raises:
            IdentityError: the document names no PDS.
        """
        endpoint = self.did_document(did).get_pds_endpoint()
        if not endpoint:
            raise IdentityError(f"the DID document of {did} names no PDS (#atproto_pds service)")
        return str(endpoint).rstrip("/")

    def handle_of(self, did: str) -> str | None:
        """The handle the DID document claims (``alsoKnownAs: at://<handle>``), if any."""
        for aka in self.did_document(did).also_known_as or []:
            if aka.startswith("at://"):
                return str(aka[5:]).lower()
        return None
