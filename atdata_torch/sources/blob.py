"""Shards stored as AT Protocol PDS blobs, named by ``(did, cid)``: the original atdata's ``BlobSource``.

Each blob is read with ``GET {pds}/xrpc/com.atproto.sync.getBlob?did=...&cid=...`` (no login needed) through the
HTTP source (retries, resume, read-ahead, the shard cache); shard identifiers are ``at://{did}/blob/{cid}``.

Example:
    >>> src = BlobSource(blob_refs=[{"did": "did:plc:abc", "cid": "bafkreia"}], pds_endpoint="http://pds.test")
    >>> src.list_shards()
    ['at://did:plc:abc/blob/bafkreia']
    >>> src.blob_url("at://did:plc:abc/blob/bafkreia")
    'http://pds.test/xrpc/com.atproto.sync.getBlob?did=did:plc:abc&cid=bafkreia'
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from ..errors import IdentityError, ShardNotFoundError
from .http import HTTPSource
from .url import redact

__all__ = ["BlobSource"]

_DEFAULT_PLC = "https://plc.directory"


def _refs(refs: Sequence[Mapping[str, Any]], what: str) -> list[dict[str, str]]:
    if isinstance(refs, (str, bytes, Mapping)):
        raise TypeError(f"{what}: expected a list of {{'did': ..., 'cid': ...}} dicts, got {type(refs).__name__}")
    out: list[dict[str, str]] = []
    for i, ref in enumerate(refs):
        if not isinstance(ref, Mapping):
            raise TypeError(f"{what}[{i}]: expected a {{'did': ..., 'cid': ...}} dict, got {type(ref).__name__}")
        if "did" in ref and "cid" in ref:
            did, cid = ref["did"], ref["cid"]
            if not (isinstance(did, str) and did.startswith("did:") and isinstance(cid, str) and cid):
                raise ValueError(f"{what}[{i}]: expected a DID ('did:...') and a CID string, got {did!r}, {cid!r}")
            out.append({"did": did, "cid": cid})
        elif isinstance(ref.get("ref"), Mapping) and "$link" in ref["ref"]:
            raise ValueError(
                f"{what}[{i}] is an AT Protocol blob ({{'$type': 'blob', 'ref': {{'$link': ...}}}}), which names no "
                "DID; pass {'did': <the record's repo DID>, 'cid': ref['$link']}"
            )
        else:
            raise ValueError(f"{what}[{i}]: expected the keys 'did' and 'cid', got {sorted(ref)}")
    return out


class BlobSource(HTTPSource):
    """PDS blobs as shards.

    Args:
        blob_refs: ``[{"did": ..., "cid": ...}]``, one per shard, in order.
        pds_endpoint: The PDS serving every blob (``https://pds.example``). ``None``: each DID's PDS is read from
            its DID document (``did:plc`` from ``$ATDATA_PLC_URL`` or https://plc.directory, ``did:web`` from its
            host), once per DID.
        **kwargs: :class:`~atdata_torch.sources.HTTPSource` options (``cache``, ``retries``, ``checksums``
            keyed by shard id, ...).

    Raises:
        TypeError, ValueError: for malformed references (an AT Protocol blob ref without a DID included).
    """

    def __init__(self, blob_refs: Sequence[Mapping[str, Any]], pds_endpoint: str | None = None, **kwargs: Any) -> None:
        self.blob_refs = _refs(blob_refs, "BlobSource blob_refs")
        self.pds_endpoint = pds_endpoint.rstrip("/") if pds_endpoint else None
        headers = {"Accept-Encoding": "identity", **dict(kwargs.pop("headers", None) or {})}
        ids = [f"at://{r['did']}/blob/{r['cid']}" for r in self.blob_refs]
        super().__init__(ids, headers=headers, **kwargs)
        self._endpoints: dict[str, str] = {}  # did -> PDS (a race resolves a DID twice, harmlessly)

    @classmethod
    def from_refs(
        cls, refs: Sequence[Mapping[str, Any]], *, pds_endpoint: str | None = None, **kwargs: Any
    ) -> BlobSource:
        """Build from ``{"did", "cid"}`` dicts (the original's ``BlobSource.from_refs``).

        Raises:
            ValueError: for an empty list, or an AT Protocol blob ref (it names no DID).
        """
        if not refs:
            raise ValueError("BlobSource.from_refs needs at least one {'did': ..., 'cid': ...} reference, got none")
        return cls(refs, pds_endpoint=pds_endpoint, **kwargs)

    @classmethod
    def from_urls(cls, urls: list[str], **kwargs: Any) -> BlobSource:  # pragma: no cover - at:// is not a scheme
        raise TypeError("BlobSource is built from blob references (BlobSource(blob_refs=[{'did', 'cid'}]))")

    def blob_url(self, shard: str) -> str:
        """The getBlob URL of a shard id ``at://{did}/blob/{cid}``.

        Raises:
            ShardNotFoundError: for an id this source does not list (also a ``KeyError``, as in the original).
        """
        did, sep, cid = shard[len("at://") :].partition("/blob/") if shard.startswith("at://") else ("", "", "")
        if not sep or {"did": did, "cid": cid} not in self.blob_refs:
            raise ShardNotFoundError(
                f"shard {shard!r} is not one of this BlobSource's blobs (expected at://<did>/blob/<cid>, one of "
                f"{self.list_shards()[:3]})",
                shard=shard,
            )
        return f"{self._endpoint(did)}/xrpc/com.atproto.sync.getBlob?did={quote(did, safe=':')}&cid={quote(cid)}"

    def _endpoint(self, did: str) -> str:
        if self.pds_endpoint:
            return self.pds_endpoint
        got = self._endpoints.get(did)
        if got is None:
            got = self._endpoints[did] = self._resolve(did)
        return got

    def _resolve(self, did: str) -> str:
        """The PDS of ``did``, from its DID document."""
        if did.startswith("did:plc:"):
            url = f"{os.environ.get('ATDATA_PLC_URL', _DEFAULT_PLC).rstrip('/')}/{did}"
        elif did.startswith("did:web:"):
            url = f"https://{did[len('did:web:') :]}/.well-known/did.json"
        else:
            raise IdentityError(f"cannot find the PDS of {did!r}: only did:plc and did:web resolve; pass pds_endpoint=")
        resp = self._http().request("GET", url, timeout=self.timeout, retries=2)
        try:
            doc = json.loads(resp.data) if resp.status == 200 else {}
        except ValueError:
            doc = {}
        for service in doc.get("service", []) if isinstance(doc, dict) else []:
            if isinstance(service, dict) and service.get("type") == "AtprotoPersonalDataServer":
                return str(service.get("serviceEndpoint", "")).rstrip("/")
        raise IdentityError(
            f"the DID document of {did!r} ({url}, HTTP {resp.status}) names no AtprotoPersonalDataServer; pass "
            "pds_endpoint="
        )

    def _request_parts(self, url: str) -> tuple[str, dict[str, str]]:
        return super()._request_parts(self.blob_url(url) if url.startswith("at://") else url)

    def _sidecar_url(self, shard: str) -> str | None:
        return None  # a getBlob URL has no .idx.json neighbour: the shard is scanned once (its index is cached)

    def __repr__(self) -> str:
        where = f", pds_endpoint={redact(self.pds_endpoint)!r}" if self.pds_endpoint else ""
        return f"BlobSource({len(self.blob_refs)} blobs{where})"
