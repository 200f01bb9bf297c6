"""An in-memory AT Protocol repo for :class:`~atdata_torch.testing.MockAtmosphere`: records, blobs and a loopback
``getBlob`` server.

:class:`MemoryPDS` holds one account's records (``{collection: {rkey: record}}``) and blobs (``{cid: bytes}``).
:class:`MemoryClient` answers the few SDK calls :class:`~atdata_torch.atmosphere.XrpcRepo` makes
(``client.com.atproto.repo.create_record`` ... ``upload_blob``, ``client.com.atproto.sync.list_repos``), so every
check of the real XRPC layer (own repo only, no floats, record size, paging by 100) runs unchanged. Records go
through a JSON round trip, as on the wire. Blob CIDs are real CIDv1 (raw, sha256) strings. Blob downloads
(``com.atproto.sync.getBlob``, what a :class:`~atdata_torch.atmosphere.BlobSource` reads) are served by
:class:`BlobServer`, a ``ThreadingHTTPServer`` on 127.0.0.1 started on first use.

Example:
    >>> pds = MemoryPDS("did:plc:mock000000000000")
    >>> cid = pds.put_blob(b"hello")
    >>> cid.startswith("bafkrei"), pds.blobs[cid]
    (True, b'hello')
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..errors import PublishError

__all__ = ["BlobServer", "MemoryClient", "MemoryPDS", "NotFound", "blob_cid"]

_TID_CHARS = "234567abcdefghijklmnopqrstuvwxyz"


def blob_cid(data: bytes) -> str:
    """The CIDv1 (raw codec, sha256) of ``data``, as a PDS names a blob.

    Example:
        >>> blob_cid(b"")
        'bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku'
    """
    raw = bytes([0x01, 0x55, 0x12, 0x20]) + hashlib.sha256(data).digest()
    return "b" + base64.b32encode(raw).decode().lower().rstrip("=")


class NotFound(Exception):
    """No such record or blob (the mock's counterpart of the PDS's ``RecordNotFound``)."""


class MemoryPDS:
    """One account's repo in memory.

    Args:
        did: The account's DID.
    """

    def __init__(self, did: str) -> None:
        self.did = did
        self.records: dict[str, dict[str, dict[str, Any]]] = {}
        self.blobs: dict[str, bytes] = {}
        self.call_log: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._clock = itertools.count()

    def tid(self) -> str:
        """A fresh, increasing record key (a TID: microseconds since the epoch, base32-sortable)."""
        n = (int(time.time() * 1_000_000) << 10) | (next(self._clock) & 0x3FF)
        out = ""
        for _ in range(13):
            out = _TID_CHARS[n & 31] + out
            n >>= 5
        return out

    def put(self, collection: str, rkey: str, record: dict[str, Any]) -> str:
        """Store ``record`` (after a JSON round trip); returns its at-uri."""
        try:
            value = json.loads(json.dumps(record))
        except (TypeError, ValueError) as exc:
            raise PublishError(
                f"MockAtmosphere: the {collection} record is not JSON ({exc}); a PDS stores JSON records only"
            ) from None
        uri = f"at://{self.did}/{collection}/{rkey}"
        with self._lock:
            self.records.setdefault(collection, {})[rkey] = value
        self.call_log.append(("create_record", {"collection": collection, "rkey": rkey, "uri": uri}))
        return uri

    def get(self, collection: str, rkey: str) -> dict[str, Any]:
        """A stored record (a copy). Raises :class:`NotFound`."""
        try:
            value = self.records[collection][rkey]
        except KeyError:
            raise NotFound(f"Could not locate record: at://{self.did}/{collection}/{rkey}") from None
        copy: dict[str, Any] = json.loads(json.dumps(value))
        return copy

    def delete(self, collection: str, rkey: str) -> None:
        """Delete a record (no error when it does not exist, as on a PDS)."""
        with self._lock:
            self.records.get(collection, {}).pop(rkey, None)
        self.call_log.append(("delete_record", {"collection": collection, "rkey": rkey}))

    def put_blob(self, data: bytes) -> str:
        """Store a blob; returns its CID."""
        cid = blob_cid(data)
        with self._lock:
            self.blobs[cid] = bytes(data)
        self.call_log.append(("upload_blob", {"ref": cid, "size": len(data)}))
        return cid

    def clear(self) -> None:
        """Forget every record, blob and logged call."""
        with self._lock:
            self.records.clear()
            self.blobs.clear()
            self.call_log.clear()


class _Value:
    """A record value as the SDK returns it (``.to_dict()``)."""

    def __init__(self, value: dict[str, Any]) -> None:
        self._value = value

    def to_dict(self) -> dict[str, Any]:
        return self._value


class _RepoCalls:
    """``client.com.atproto.repo``: the record and blob calls of the SDK, on a :class:`MemoryPDS`."""

    def __init__(self, pds: MemoryPDS) -> None:
        self.pds = pds

    def _own(self, repo: str) -> None:
        if repo != self.pds.did:
            raise NotFound(f"Could not find repo: {repo}")

    def create_record(self, data: dict[str, Any]) -> Any:
        self._own(data["repo"])
        return SimpleNamespace(uri=self.pds.put(data["collection"], self.pds.tid(), data["record"]))

    def put_record(self, data: dict[str, Any]) -> Any:
        self._own(data["repo"])
        return SimpleNamespace(uri=self.pds.put(data["collection"], data["rkey"], data["record"]))

    def get_record(self, params: dict[str, Any]) -> Any:
        self._own(params["repo"])
        return SimpleNamespace(value=_Value(self.pds.get(params["collection"], params["rkey"])))

    def delete_record(self, data: dict[str, Any]) -> None:
        self._own(data["repo"])
        self.pds.delete(data["collection"], data["rkey"])

    def list_records(self, params: dict[str, Any]) -> Any:
        """Newest first (descending rkey, as a PDS lists), ``limit`` per page, ``cursor`` = the last rkey."""
        if params["repo"] != self.pds.did:
            return SimpleNamespace(records=[], cursor=None)
        coll = params["collection"]
        keys = sorted(self.pds.records.get(coll, {}), reverse=True)
        cursor = params.get("cursor")
        if cursor:
            keys = [k for k in keys if k < cursor]
        page = keys[: int(params.get("limit", 50))]
        records = [
            SimpleNamespace(uri=f"at://{self.pds.did}/{coll}/{k}", value=_Value(self.pds.get(coll, k))) for k in page
        ]
        more = len(keys) > len(page)
        return SimpleNamespace(records=records, cursor=page[-1] if page and more else None)

    def upload_blob(self, data: bytes, headers: dict[str, str] | None = None) -> Any:
        cid = self.pds.put_blob(bytes(data))
        return SimpleNamespace(blob=SimpleNamespace(ref=SimpleNamespace(link=cid), size=len(data)))


class MemoryClient:
    """The part of a logged-in ``atproto.Client`` that :class:`~atdata_torch.atmosphere.XrpcRepo` calls."""

    def __init__(self, pds: MemoryPDS) -> None:
        sync = SimpleNamespace(
            list_repos=lambda params: SimpleNamespace(repos=[SimpleNamespace(did=pds.did)], cursor=None)
        )
        self.com = SimpleNamespace(atproto=SimpleNamespace(repo=_RepoCalls(pds), sync=sync))
        self.request = SimpleNamespace(close=lambda: None)

    def export_session_string(self) -> str:
        return "mock-session-string"

    def on_session_change(self, callback: Any) -> None:
        """Sessions never change in memory."""


class BlobServer:
    """Serve a :class:`MemoryPDS`'s blobs over loopback HTTP (``/xrpc/com.atproto.sync.getBlob?did=&cid=``).

    Args:
        pds: The repo whose blobs are served.
    """

    def __init__(self, pds: MemoryPDS) -> None:
        self.pds = pds
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The server's base URL (starts it on first use)."""
        if self._server is None:
            self._server = _QuietServer(("127.0.0.1", 0), _handler(self.pds))
            self._thread = threading.Thread(target=self._server.serve_forever, name="mock-pds-blobs", daemon=True)
            self._thread.start()
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        """Stop the server (a later :attr:`url` starts a new one)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = self._thread = None


class _QuietServer(ThreadingHTTPServer):
    """A reader that hangs up early (a loader that stopped after one batch) is no error worth a traceback."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler(pds: MemoryPDS) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            data = pds.blobs.get(query.get("cid", ""))
            if parts.path != "/xrpc/com.atproto.sync.getBlob" or query.get("did") != pds.did or data is None:
                body = json.dumps({"error": "BlobNotFound", "message": "Blob not found"}).encode()
                self._send(400, body, "application/json")
                return
            start, end, status = 0, len(data), 200
            rng = self.headers.get("Range", "")
            if rng.startswith("bytes=") and "," not in rng:
                a, _, b = rng[len("bytes=") :].partition("-")
                if a.isdigit() and int(a) < len(data):
                    start, end, status = int(a), (min(int(b) + 1, len(data)) if b.isdigit() else len(data)), 206
            extra = {"Content-Range": f"bytes {start}-{end - 1}/{len(data)}"} if status == 206 else {}
            self._send(status, data[start:end], "application/octet-stream", extra)

        def _send(self, status: int, body: bytes, mime: str, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", mime)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: tests read their own output."""

    return Handler
