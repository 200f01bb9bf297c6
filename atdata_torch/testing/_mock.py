"""``MockAtmosphere``: a real :class:`~atdata_torch.atmosphere.Atmosphere` over an in-memory repo (no PDS, no
network, no ``atproto`` package).

Every publisher, loader and ``Atmosphere`` method runs its own code unchanged; only the transport is replaced
(:mod:`._memory`): records and blobs live in memory, blob downloads come from a loopback HTTP server started on first
use. One account: every handle resolves to it (as in the original's mock).

Example:
    >>> import numpy as np, tempfile, os
    >>> import atdata_torch as atd
    >>> from atdata_torch.atmosphere import DatasetLoader, SchemaPublisher
    >>> @atd.packable
    ... class Mocked:
    ...     x: int
    >>> with MockAtmosphere() as atmo:
    ...     uri = SchemaPublisher(atmo).publish(Mocked, version="1.0.0")
    ...     ds = atd.write_samples([Mocked(x=i) for i in range(3)], os.path.join(tempfile.mkdtemp(), "m.tar"),
    ...                            progress=False)
    ...     entry = atmo.publish_dataset(ds, name="mocked", schema_uri=str(uri))
    ...     [s.x for s in DatasetLoader(atmo).to_dataset(entry, Mocked).ordered()]
    [0, 1, 2]
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from ..atmosphere import COLLECTIONS, Atmosphere, AtUri, Identity, XrpcRepo
from ..errors import RecordNotFoundError
from ._memory import BlobServer, MemoryClient, MemoryPDS, NotFound

__all__ = ["MockAtmosphere", "MockAtmosphereClient"]

T = TypeVar("T")


class _MemoryRepo(XrpcRepo):
    """:class:`XrpcRepo` whose SDK client is a :class:`MemoryClient` (every check of the XRPC layer still runs)."""

    def __init__(self, pds: MemoryPDS, handle: str, server: BlobServer) -> None:
        self.memory, self.server = pds, server
        super().__init__(Identity(pds="http://mock.pds.invalid"), MemoryClient(pds), did=pds.did, handle=handle)
        self.pds = "mock-pds"  # where messages say a call went; blob URLs come from pds_of (the loopback server)

    def call(self, what: str, fn: Callable[[], T], *, where: str | None = None) -> T:
        try:
            return fn()
        except NotFound as exc:
            raise RecordNotFoundError(f"{what} (MockAtmosphere): {exc}") from None

    def reader(self, endpoint: str) -> Any:
        return self.client

    def resolve(self, repo: str | None) -> str:
        """Any DID is itself; any handle (and ``None``) is this mock's one account, as in the original's mock."""
        if repo is not None and repo.startswith("did:"):
            return repo
        assert self.did is not None
        return self.did

    def pds_of(self, did: str) -> str:
        return self.server.url

    def close(self) -> None:
        self.server.close()
        self.identity.close()


class MockAtmosphere(Atmosphere):
    """In-memory stand-in for :class:`~atdata_torch.atmosphere.Atmosphere` (the original's ``atdata.testing`` name).

    Accepted wherever an ``Atmosphere`` is (``SchemaPublisher(mock)``, ``DatasetLoader(mock).to_dataset(...)``,
    ``Index(atmosphere=mock).promote(...)``, ``PDSBlobStore(mock)``); it *is* one, with the original mock's extras
    (:meth:`login` as an instance method, :meth:`reset`, :meth:`get_blob`, ...). Records and blobs are kept in
    memory; blob-stored datasets are read back through a loopback HTTP server (127.0.0.1) started on first use and
    stopped by :meth:`close` (or ``with MockAtmosphere() as atmo:``).

    Args:
        did: The mock account's DID.
        handle: Its handle.
        max_blob_bytes: A blob size limit to enforce (``None``: none), to test :class:`BlobLimitError` paths.
    """

    def __init__(
        self,
        did: str = "did:plc:mock000000000000",
        handle: str = "test.mock.social",
        *,
        max_blob_bytes: int | None = None,
    ) -> None:
        super().__init__(Identity(pds="http://mock.pds.invalid"), None)
        self._pds = MemoryPDS(did)
        server = BlobServer(self._pds)
        self.xrpc = _MemoryRepo(self._pds, handle, server)
        self.max_blob_bytes = max_blob_bytes
        self.configure_appview(None)
        self._logged_in = False
        weakref.finalize(self, server.close)  # a mock nobody closed still stops its server when collected

    def __repr__(self) -> str:
        return f"MockAtmosphere(handle={self.handle!r}, did={self.did!r})"

    # ---------------------------------------------------------------------------------- the original mock's API
    def login(self, handle: str, password: str) -> dict[str, Any]:  # type: ignore[override]
        """Simulate a login (always succeeds; the password is ignored). Returns ``{"did", "handle"}``."""
        self._logged_in = True
        self.handle = handle
        self._pds.call_log.append(("login", {"handle": handle}))
        return {"did": self.did, "handle": self.handle}

    @property
    def is_authenticated(self) -> bool:
        """Whether :meth:`login` was called (writes work either way, as in the original's mock)."""
        return self._logged_in

    def export_session_string(self) -> str:
        """A fixed placeholder session string."""
        return "mock-session-string"

    def create_record(
        self,
        collection: str,
        record: dict[str, Any],
        rkey: str | None = None,
        validate: bool = False,
        *,
        repo: str | None = None,
    ) -> str:
        """Write a record (under ``rkey`` when given, else a fresh TID); returns its at-uri. ``validate`` is
        accepted and ignored (a PDS does not validate ``science.alt.dataset.*`` records)."""
        if rkey is not None:
            return self.xrpc.put_record(collection, rkey, record, repo=repo)
        return self.xrpc.create_record(collection, record, repo=repo)

    def delete_record(self, uri: str) -> None:
        """Delete a record (deleting one that does not exist is no error)."""
        self.xrpc.delete_record(str(uri))

    def resolve_did(self, handle_or_did: str) -> str:
        """A DID unchanged; any handle: this mock's DID."""
        return self.xrpc.resolve(handle_or_did)

    def list_lenses(self, repo: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The lens record values (at most ``limit``), newest first."""
        out = [v for _, v in self.xrpc.list_records(COLLECTIONS["lens"], repo=repo)]
        return out[:limit]

    def upload_blob(self, data: bytes, mime_type: str = "application/octet-stream") -> dict[str, Any]:
        """Store a blob; returns its blob ref ``{"$type": "blob", "ref": {"$link": cid}, "mimeType", "size"}``."""
        return self.xrpc.upload_blob(data, mime_type)

    def get_blob(self, did: str, cid: str) -> bytes:
        """A stored blob's bytes.

        Raises:
            RecordNotFoundError: no such blob (also a ``LookupError``; the original's mock raised ``KeyError``).
        """
        data = self._pds.blobs.get(cid)
        if data is None or self.xrpc.resolve(did) != self.did:
            raise RecordNotFoundError(f"MockAtmosphere: no blob {cid} in the repo of {did}")
        return data

    def reset(self) -> None:
        """Forget every record, blob and logged call, and the login."""
        self._pds.clear()
        self._logged_in = False

    @property
    def _records(self) -> dict[str, dict[str, Any]]:
        """``{at-uri: record}`` of everything stored (the original mock's attribute; a snapshot)."""
        return {
            str(AtUri(self._pds.did, coll, rkey)): rec
            for coll, recs in self._pds.records.items()
            for rkey, rec in recs.items()
        }

    @property
    def _blobs(self) -> dict[str, bytes]:
        """``{cid: bytes}`` of the stored blobs (the original mock's attribute)."""
        return self._pds.blobs

    @property
    def _call_log(self) -> list[tuple[str, dict[str, Any]]]:
        """``(call, details)`` of each login, record write/delete and blob upload (the original mock's log)."""
        return self._pds.call_log


#: The original's older (deprecated there) name.
MockAtmosphereClient = MockAtmosphere
