"""The XRPC repository layer: records (create, put, get, list, delete) and blobs on AT Protocol repos.

One :class:`XrpcRepo` holds the account (a logged-in ``atproto.Client``, or none for anonymous reads) and one
reader client per other PDS. Every call goes through :meth:`XrpcRepo.call`, which refreshes an expired session once
and turns the SDK's errors into the library's (:class:`~atdata_torch.errors.AuthError`,
:class:`~atdata_torch.errors.RecordNotFoundError`, :class:`~atdata_torch.errors.BlobLimitError`,
:class:`~atdata_torch.errors.PublishError`). Reads of another repo go to the PDS its DID document names; lists page
through ``listRecords`` 100 records at a time. Nothing here knows the ``science.alt.dataset.*`` record kinds.

Example (needs a PDS; ``tests/test_atmosphere_xrpc.py`` runs one on loopback)::

    xrpc = Atmosphere.login("alice.test", "alice-pass", pds="http://localhost:2583").xrpc
    uri = xrpc.put_record("science.alt.dataset.label", "digits", {"$type": ..., "name": "digits", ...})
    xrpc.get_record(uri)
    xrpc.delete_record(uri)
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Generic, Protocol, TypeVar, cast, overload

from ..errors import AuthError, BlobLimitError, IdentityError, PublishError, RecordNotFoundError
from ._identity import Identity, _atproto, is_did
from ._lex_base import AtUri, check_no_floats

__all__ = ["MAX_RECORD_BYTES", "PAGE", "XrpcAttr", "XrpcRepo", "error_status", "upload_blob"]

T = TypeVar("T")
V = TypeVar("V")

#: A record body a 0.4 PDS accepts is at most 150 KiB; stay clear of it.
MAX_RECORD_BYTES = 140_000
PAGE = 100


def error_status(exc: Exception) -> tuple[int | None, str, str]:
    """``(HTTP status, XRPC error name, message)`` of an SDK exception (``None`` / ``""`` where it has none).

    Example:
        >>> error_status(ValueError("no response"))
        (None, '', '')
    """
    resp = getattr(exc, "response", None)
    status = getattr(resp, "status_code", None)
    content = getattr(resp, "content", None)
    error = str(getattr(content, "error", "") or "")
    message = str(getattr(content, "message", "") or "")
    return status, error, message


def upload_blob(client: Any, data: bytes, mime: str) -> Any:
    """``com.atproto.repo.uploadBlob`` on a logged-in SDK client; the SDK's answer (``.blob.ref.link``, ...)."""
    # The SDK hands bytes to httpx as data=, which httpx deprecates (not ours to fix): keep that warning out.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Use 'content=<...>'", category=DeprecationWarning)
        return client.com.atproto.repo.upload_blob(data, headers={"Content-Type": mime})


class XrpcRepo:
    """XRPC calls on AT Protocol repos, as one account (writes to its own repo) or anonymously (reads anyone's).

    Args:
        identity: Resolves handles and DIDs (PLC / did:web / a PDS).
        client: A logged-in ``atproto.Client``, or ``None`` for read-only use.
        did: The logged-in account's DID.
        handle: The logged-in account's handle.
        pds: The logged-in account's PDS endpoint (default: the identity's PDS).
        max_blob_bytes: The PDS's blob size limit when known (checked before anything is uploaded).
        timeout: Seconds per request.
    """

    def __init__(
        self,
        identity: Identity,
        client: Any = None,
        *,
        did: str | None = None,
        handle: str | None = None,
        pds: str | None = None,
        max_blob_bytes: int | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.identity = identity
        self.client = client
        self.did = did
        self.handle = handle
        self.pds = pds.rstrip("/") if pds else identity.pds_url
        self.max_blob_bytes = max_blob_bytes
        self.timeout = timeout
        self._readers: dict[str, Any] = {}
        #: Set by ``Atmosphere(appview=...)``: publishes a record through the AppView (``None``: not routed).
        self.route: Callable[[str, dict[str, Any]], str | None] | None = None

    def close(self) -> None:
        """Close the HTTP connections (the readers', the account's and the identity resolver's)."""
        for reader in self._readers.values():
            reader.request.close()
        self._readers.clear()
        if self.client is not None:
            self.client.request.close()
        self.identity.close()

    # ================================================================================================ plumbing
    def account(self) -> tuple[Any, str]:
        """``(logged-in SDK client, DID)``.

        Raises:
            AuthError: anonymous (read-only).
        """
        if self.client is None or self.did is None:
            raise AuthError("this Atmosphere is anonymous (read-only); log in with Atmosphere.login() to publish")
        return self.client, self.did

    def call(self, what: str, fn: Callable[[], T], *, where: str | None = None) -> T:
        """Run one XRPC call; refresh an expired session once, and raise the library's errors.

        Args:
            what: What the call does, for messages (``"writing a ... record"``).
            fn: The call.
            where: The PDS it goes to, for messages.

        Raises:
            AuthError: refused (401/403), or the session expired and could not be refreshed.
            BlobLimitError: the PDS answered 413.
            RecordNotFoundError: no such record, repo or blob.
            PublishError: any other failure.
        """
        atproto = _atproto()
        for attempt in (0, 1):
            try:
                return fn()
            except atproto.exceptions.AtProtocolError as exc:
                status, error, message = error_status(exc)
                if attempt == 0 and error in ("ExpiredToken", "InvalidToken") and self.client is not None:
                    try:
                        self.client._refresh_and_set_session()
                    except atproto.exceptions.AtProtocolError:
                        raise AuthError(
                            f"{what}: the session expired and could not be refreshed; log in again"
                        ) from None
                    continue
                place = f" ({where})" if where else ""
                if status == 413:
                    raise BlobLimitError(
                        f"{what}{place}: the PDS refused the request as too large (HTTP 413)"
                    ) from None
                if status in (401, 403):
                    raise AuthError(
                        f"{what}{place} was refused: {message or error} (HTTP {status}); an account can only write to "
                        "its own repo, and a session may have been revoked (log in again)"
                    ) from None
                if error in ("RecordNotFound", "RepoNotFound", "BlobNotFound", "InvalidRequest") and status == 400:
                    raise RecordNotFoundError(f"{what}{place}: {message or error}") from None
                detail = f"{message or error or type(exc).__name__}"
                raise PublishError(f"{what}{place} failed: {detail} (HTTP {status})") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def reader(self, endpoint: str) -> Any:
        """An SDK client for reads on a PDS (the account's own client for its own PDS)."""
        endpoint = endpoint.rstrip("/")
        if self.client is not None and endpoint == self.pds:
            return self.client
        r = self._readers.get(endpoint)
        if r is None:
            atproto = _atproto()
            r = self._readers[endpoint] = atproto.Client(
                base_url=endpoint, request=atproto.Request(timeout=self.timeout)
            )
        return r

    def resolve(self, repo: str | None) -> str:
        """The DID of a repo given as handle or DID (``None``: the logged-in account).

        Raises:
            IdentityError: it does not resolve.
        """
        if repo is None:
            if self.did is None:
                raise IdentityError("no repo given, and this Atmosphere is anonymous; pass repo='handle' or a DID")
            return self.did
        if self.handle and not is_did(repo) and repo.lstrip("@").lower() == self.handle.lower() and self.did:
            return self.did
        return self.identity.resolve_handle(repo, pds=self.pds)

    def pds_of(self, did: str) -> str:
        """The PDS endpoint that hosts a DID's repo (from its DID document; the account's own without a lookup)."""
        if did == self.did and self.pds:
            return self.pds
        return self.identity.pds_of(did)

    def check_own(self, repo: str | None) -> tuple[Any, str]:
        """:meth:`account`, also checking that ``repo`` (when given) is the account's own.

        Raises:
            AuthError: anonymous, or ``repo`` is another account's.
        """
        client, did = self.account()
        if repo is not None and self.resolve(repo) != did:
            raise AuthError(
                f"logged in as {self.handle} ({did}), which cannot write to the repo of {repo}; log in as that "
                "account to publish there"
            )
        return client, did

    # ================================================================================================ records
    def create_record(self, collection: str, record: dict[str, Any], *, repo: str | None = None) -> str:
        """Write a record (a fresh rkey) to the logged-in account's repo; returns its at-uri.

        Raises:
            AuthError: anonymous, or ``repo`` is another account's.
            PublishError: the PDS refused the record (e.g. floats, too large).
        """
        client, did = self.check_own(repo)
        _check_body(collection, record)
        routed = self.route(collection, record) if self.route is not None else None
        if routed is not None:
            return routed
        out = self.call(
            f"writing a {collection} record",
            lambda: client.com.atproto.repo.create_record({"repo": did, "collection": collection, "record": record}),
            where=self.pds,
        )
        return str(out.uri)

    def put_record(self, collection: str, rkey: str, record: dict[str, Any], *, repo: str | None = None) -> str:
        """Write a record under a chosen rkey (created, or replaced when it exists); returns its at-uri.

        Raises:
            AuthError: anonymous, or ``repo`` is another account's.
            PublishError: the PDS refused the record (e.g. floats, too large, a malformed rkey).
        """
        client, did = self.check_own(repo)
        _check_body(collection, record)
        body = {"repo": did, "collection": collection, "rkey": rkey, "record": record}
        out = self.call(
            f"writing the {collection} record {rkey}",
            lambda: client.com.atproto.repo.put_record(body),
            where=self.pds,
        )
        return str(out.uri)

    def get_record(self, uri: str) -> tuple[str, dict[str, Any]]:
        """``(uri with a DID, record)`` of an at-uri (its repo may be a handle).

        Raises:
            RecordNotFoundError: no such record.
        """
        at = AtUri.parse(uri)
        if not at.collection or not at.rkey:
            raise RecordNotFoundError(f"{uri} names a repo, not a record (expected at://repo/collection/rkey)")
        did = self.resolve(at.repo)
        endpoint = self.pds_of(did)
        reader = self.reader(endpoint)
        got = self.call(
            f"reading {uri}",
            lambda: reader.com.atproto.repo.get_record({"repo": did, "collection": at.collection, "rkey": at.rkey}),
            where=endpoint,
        )
        return str(AtUri(did, at.collection, at.rkey)), got.value.to_dict()

    def list_records(self, collection: str, *, repo: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every record of a collection in a repo, paging through ``listRecords`` (100 per page)."""
        did = self.resolve(repo)
        endpoint = self.pds_of(did)
        reader = self.reader(endpoint)
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"repo": did, "collection": collection, "limit": PAGE}
            if cursor:
                params["cursor"] = cursor
            page = self.call(
                f"listing {collection} of {repo or did}",
                functools.partial(reader.com.atproto.repo.list_records, params),
                where=endpoint,
            )
            for rec in page.records:
                yield str(rec.uri), rec.value.to_dict()
            cursor = page.cursor
            if not page.records or not cursor:
                return

    def delete_record(self, uri: str) -> None:
        """Delete a record of the logged-in account's repo (deleting one that does not exist is no error).

        Raises:
            AuthError: anonymous, or the record is in another account's repo.
            RecordNotFoundError: ``uri`` names a repo, not a record.
        """
        at = AtUri.parse(uri)
        if not at.collection or not at.rkey:
            raise RecordNotFoundError(f"{uri} names a repo, not a record (expected at://repo/collection/rkey)")
        client, did = self.check_own(at.repo)
        body = {"repo": did, "collection": at.collection, "rkey": at.rkey}
        self.call(f"deleting {uri}", lambda: client.com.atproto.repo.delete_record(body), where=self.pds)

    # ================================================================================================ blobs
    def upload_blob(self, data: bytes | memoryview, mime: str, *, what: str = "a blob") -> dict[str, Any]:
        """Upload a blob to the account's repo; returns the blob reference a record holds.

        Raises:
            AuthError: anonymous.
            BlobLimitError: the PDS refused it as too large (HTTP 413).
        """
        client, _ = self.account()
        up = self.call(f"uploading {what}", lambda: upload_blob(client, bytes(data), mime), where=self.pds)
        return {"$type": "blob", "ref": {"$link": str(up.blob.ref.link)}, "mimeType": mime, "size": int(up.blob.size)}

    # ================================================================================================ repos
    def list_repos(self, pds: str | None = None, *, limit: int = 10_000) -> list[str]:
        """The DIDs of the repos a PDS hosts (``com.atproto.sync.listRepos``, paged)."""
        endpoint = (pds or self.pds or "").rstrip("/")
        if not endpoint:
            raise PublishError("list_repos needs a PDS: pass pds=, log in, or set ATDATA_PDS_URL")
        reader = self.reader(endpoint)
        out: list[str] = []
        cursor: str | None = None
        while len(out) < limit:
            params: dict[str, Any] = {"limit": min(1000, limit - len(out))}
            if cursor:
                params["cursor"] = cursor
            page = self.call(
                "listing repos",
                functools.partial(reader.com.atproto.sync.list_repos, params),
                where=endpoint,
            )
            out.extend(str(r.did) for r in page.repos)
            cursor = page.cursor
            if not page.repos or not cursor:
                break
        return out


def _check_body(collection: str, record: dict[str, Any]) -> None:
    check_no_floats(record)
    body = json.dumps(record, default=str)
    if len(body) > MAX_RECORD_BYTES:
        raise PublishError(
            f"the {collection} record is {len(body):,} bytes; a PDS accepts about 150 KB per record. For a "
            "dataset, write fewer, larger shards (maxsize= / maxcount=) or publish with storage='http'/'s3'"
        )


class _HasXrpc(Protocol):
    xrpc: XrpcRepo


class XrpcAttr(Generic[V]):
    """An attribute of a facade that lives on its ``xrpc`` (:class:`XrpcRepo`), read and written through.

    Example:
        >>> class Facade:
        ...     did: XrpcAttr[str | None] = XrpcAttr()
        ...     def __init__(self, xrpc: XrpcRepo) -> None:
        ...         self.xrpc = xrpc
        >>> f = Facade(XrpcRepo(Identity(pds="http://pds"), did="did:plc:x"))
        >>> f.did = "did:plc:y"
        >>> f.did, f.xrpc.did
        ('did:plc:y', 'did:plc:y')
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> XrpcAttr[V]: ...
    @overload
    def __get__(self, obj: _HasXrpc, owner: type | None = None) -> V: ...
    def __get__(self, obj: _HasXrpc | None, owner: type | None = None) -> V | XrpcAttr[V]:
        if obj is None:
            return self
        return cast(V, getattr(obj.xrpc, self.name))

    def __set__(self, obj: _HasXrpc, value: V) -> None:
        setattr(obj.xrpc, self.name, value)
