"""A real HTTP file server on 127.0.0.1 for the remote-source tests: ``Range`` support and per-path faults.

:class:`FaultServer` serves a directory with :class:`http.server.ThreadingHTTPServer` (HTTP/1.1, keep-alive),
answers ``Range: bytes=a-b`` / ``bytes=a-`` with ``206`` and ``Content-Range``, records every request (method,
path, headers, start and end time) and injects faults per path, each for the next ``times`` requests of that path
(``times=None``: for ever):

- :meth:`FaultServer.drop`: send the headers (full ``Content-Length``) and ``after`` bytes of the body, then cut
  the connection;
- :meth:`FaultServer.fail`: answer a status (``500``, ``403``, ``429`` with ``Retry-After``...) with a body;
- :meth:`FaultServer.throttle`: ``429`` with ``Retry-After: 0``;
- :meth:`FaultServer.stall`: wait ``seconds`` before answering (longer than the client timeout: a stall; shorter:
  a slow server);
- :meth:`FaultServer.pause`: send ``after`` bytes of the body, then wait until a gate (a ``threading.Event``) opens
  before sending the rest (a transfer caught in the middle);
- :meth:`FaultServer.require_auth`: ``401`` unless the request carries these basic-auth credentials;
- :meth:`FaultServer.hang`: accept the request and never answer (until the server stops);
- :meth:`FaultServer.trickle`: send the headers, then the body one byte every ``every`` seconds (never idle
  long enough for a read timeout);
- :meth:`FaultServer.retry_after`: ``503`` (or another status) with ``Retry-After: <seconds>``;
- :meth:`FaultServer.truncate`: a body shorter than its ``Content-Length`` (``after`` bytes, then the
  connection closes);
- :meth:`FaultServer.stall_body`: send ``after`` bytes of the body, then nothing for ``seconds``.

A fault registered for the path ``"*"`` applies to every path.

Example:
    >>> import tempfile, pathlib, urllib.request
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (root / "a.bin").write_bytes(b"0123456789")
    >>> with FaultServer(root) as srv:
    ...     srv.fail("a.bin", 500, times=1)
    ...     req = urllib.request.Request(srv.url("a.bin"), headers={"Range": "bytes=2-4"})
    ...     try:
    ...         urllib.request.urlopen(req)
    ...     except urllib.error.HTTPError as e:
    ...         e.close(); print(e.code)
    ...     with urllib.request.urlopen(req) as r:
    ...         print(r.status, r.headers["Content-Range"], r.read())
    500
    206 bytes 2-4/10 b'234'
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["Fault", "FaultServer", "Request"]

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass
class Fault:
    """One injected fault; ``times`` is how many more requests it applies to (``None``: all of them)."""

    kind: str  # "drop" | "status" | "stall" | "pause" | "trickle"
    times: int | None
    status: int = 500
    after: int = 0
    seconds: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    range_from: int | None = None  # only requests whose ``Range`` starts at this byte
    gate: threading.Event | None = None  # "pause" (and "drop" with a gate): the rest of the body waits for it
    gate_at: int = 0  # "drop" with a gate: where the body waits for it


@dataclass
class Request:
    """A request the server saw."""

    method: str
    path: str
    headers: dict[str, str]
    start: float
    end: float | None = None
    status: int | None = None
    fault: str | None = None
    broken: bool = False  # the client hung up before the answer was sent

    @property
    def range(self) -> str | None:
        """The ``Range`` header, if any."""
        return self.headers.get("range")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hang up on purpose in these tests (timeouts, dropped transfers): stay quiet.
        pass


class FaultServer:
    """A threaded HTTP server for ``root`` on ``127.0.0.1`` (an ephemeral port), with fault injection."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self._lock = threading.Lock()
        self._faults: dict[str, list[Fault]] = {}
        self._log: list[Request] = []
        self._auth: str | None = None
        self.ranges_supported = True  # False: ignore Range headers and answer 200 with the whole file
        self.send_lengths = True  # False: no Content-Length; the body ends when the server closes the connection
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> FaultServer:
        handler = type("Handler", (_Handler,), {"fault_server": self})
        self._httpd = _Server(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "the server is not running"
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, name: str, *, auth: str | None = None) -> str:
        """The URL of ``name`` (relative to the root); ``auth="user:pass"`` puts credentials in it."""
        host = f"{auth}@127.0.0.1:{self.port}" if auth else f"127.0.0.1:{self.port}"
        return f"http://{host}/{name.lstrip('/')}"

    # ------------------------------------------------------------------------------------------ faults
    @staticmethod
    def _key(path: str) -> str:
        return path if path == "*" else "/" + path.lstrip("/")

    def _add(self, path: str, fault: Fault) -> None:
        with self._lock:
            self._faults.setdefault(self._key(path), []).append(fault)

    def drop(
        self,
        path: str,
        after: int,
        *,
        times: int | None = 1,
        range_from: int | None = None,
        gate: threading.Event | None = None,
        gate_at: int = 0,
    ) -> None:
        """Cut the connection after ``after`` bytes of the body, for the next ``times`` requests (with
        ``range_from``: only requests whose ``Range`` starts at that byte, e.g. one part of a parallel download;
        with ``gate``: the bytes from ``gate_at`` on wait until it is set, as :meth:`pause`)."""
        self._add(path, Fault("drop", times, after=after, range_from=range_from, gate=gate, gate_at=gate_at))

    def fail(
        self,
        path: str,
        status: int = 500,
        *,
        times: int | None = 1,
        headers: dict[str, str] | None = None,
        body: bytes = b"injected failure",
    ) -> None:
        """Answer ``status`` to the next ``times`` requests (``None``: permanently)."""
        self._add(path, Fault("status", times, status=status, headers=dict(headers or {}), body=body))

    def throttle(self, path: str, *, times: int | None = 1) -> None:
        """Answer ``429 Too Many Requests`` with ``Retry-After: 0``."""
        self.fail(path, 429, times=times, headers={"Retry-After": "0"}, body=b"slow down")

    def stall(self, path: str, seconds: float, *, times: int | None = 1) -> None:
        """Wait ``seconds`` before answering (then answer normally, if the client is still there)."""
        self._add(path, Fault("stall", times, seconds=seconds))

    def pause(
        self, path: str, after: int, gate: threading.Event, *, seconds: float = 30.0, times: int | None = 1
    ) -> None:
        """Send ``after`` bytes of the body, then wait until ``gate`` is set (at most ``seconds``) to send the rest."""
        self._add(path, Fault("pause", times, after=after, seconds=seconds, gate=gate))

    def hang(self, path: str, *, times: int | None = None) -> None:
        """Accept the next ``times`` requests and never answer them (the handler waits until the server stops)."""
        self.stall(path, 3600.0, times=times)

    def trickle(self, path: str, every: float, *, times: int | None = None) -> None:
        """Send the headers (full ``Content-Length``), then one byte of the body every ``every`` seconds."""
        self._add(path, Fault("trickle", times, seconds=every))

    def retry_after(self, path: str, seconds: float | str, *, status: int = 503, times: int | None = 1) -> None:
        """Answer ``status`` with ``Retry-After: <seconds>``."""
        self.fail(path, status, times=times, headers={"Retry-After": str(seconds)}, body=b"come back later")

    def truncate(self, path: str, after: int, *, times: int | None = None) -> None:
        """A body cut short: ``after`` bytes of it (the headers announce them all), then the connection closes."""
        self.drop(path, after, times=times)

    def stall_body(self, path: str, after: int, seconds: float = 3600.0, *, times: int | None = None) -> None:
        """Send ``after`` bytes of the body, then nothing for ``seconds`` (or until the server stops), then the rest."""
        self._add(path, Fault("pause", times, after=after, seconds=seconds))

    def require_auth(self, user: str, password: str) -> None:
        """Answer ``401`` to requests without these basic-auth credentials."""
        self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def clear(self) -> None:
        """Forget faults, the auth requirement and the request log."""
        with self._lock:
            self._faults.clear()
            self._log.clear()
            self._auth = None
            self.ranges_supported = True
            self.send_lengths = True

    def _take_fault(self, path: str, rng: str | None = None) -> Fault | None:
        m = _RANGE.match(rng.strip()) if rng else None
        start = int(m.group(1)) if m and m.group(1) else None
        with self._lock:
            for key in (path, "*"):
                for fault in self._faults.get(key, []):
                    if fault.range_from is not None and fault.range_from != start:
                        continue
                    if fault.times is None:
                        return fault
                    if fault.times > 0:
                        fault.times -= 1
                        return fault
        return None

    # ------------------------------------------------------------------------------------------ request log
    def _record(self, req: Request) -> None:
        with self._lock:
            self._log.append(req)

    def requests(self, path: str | None = None, method: str | None = "GET") -> list[Request]:
        """The requests seen (for ``path``, of ``method``), in arrival order."""
        key = None if path is None else self._key(path)
        with self._lock:
            return [r for r in self._log if (key is None or r.path == key) and (method is None or r.method == method)]

    def gets(self, path: str) -> int:
        """How many GETs ``path`` received."""
        return len(self.requests(path))

    def ranges(self, path: str) -> list[str | None]:
        """The ``Range`` header of every GET of ``path`` (``None`` when absent)."""
        return [r.range for r in self.requests(path)]

    def downloads(self, path: str) -> list[str | None]:
        """The ``Range`` of every GET of a shard, less the small read of its end that checks its index sidecar (its
        last sample's header, then the end-of-archive block; see ``Dataset._check_remote``)."""
        return [r for r in self.ranges(path) if not _is_tail_check(r)]

    def max_in_flight(self, paths: list[str] | None = None) -> int:
        """The largest number of GETs (of ``paths``) that were being answered at the same time."""
        keys = None if paths is None else {self._key(p) for p in paths}
        events: list[tuple[float, int]] = []
        for r in self.requests():
            if keys is not None and r.path not in keys:
                continue
            events.append((r.start, 1))
            events.append((r.end if r.end is not None else float("inf"), -1))
        best = cur = 0
        for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
            cur += delta
            best = max(best, cur)
        return best

    def wait_for(self, predicate: Any, timeout: float = 5.0) -> bool:
        """Poll ``predicate()`` until true or ``timeout`` seconds pass; returns its last value."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fault_server: FaultServer  # set on the subclass made by FaultServer.start()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    # ------------------------------------------------------------------------------------------ helpers
    def _send(self, req: Request, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        req.status = status
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve(self, body: bool) -> None:
        srv = self.fault_server
        path = unquote(urlsplit(self.path).path)
        req = Request(self.command, path, {k.lower(): v for k, v in self.headers.items()}, time.monotonic())
        srv._record(req)
        try:
            self._answer(srv, req, path, body)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            req.broken = True
            self.close_connection = True
        finally:
            req.end = time.monotonic()

    def _answer(self, srv: FaultServer, req: Request, path: str, body: bool) -> None:
        if srv._auth is not None and self.headers.get("Authorization") != srv._auth:
            self._send(req, 401, b"unauthorized", {"WWW-Authenticate": 'Basic realm="test"'})
            return
        fault = srv._take_fault(path, self.headers.get("Range"))
        if fault is not None:
            req.fault = fault.kind
            if fault.kind == "status":
                self._send(req, fault.status, fault.body, fault.headers)
                return
            if fault.kind == "stall":
                srv._stopping.wait(fault.seconds)
        target = (srv.root / path.lstrip("/")).resolve()
        if srv.root not in target.parents or not target.is_file():
            self._send(req, 404, b"not found")
            return
        data = target.read_bytes()
        size = len(data)
        status, headers = 200, {"Accept-Ranges": "bytes", "Content-Type": "application/x-tar"}
        rng = self.headers.get("Range") if srv.ranges_supported else None
        if rng:
            m = _RANGE.match(rng.strip())
            if m is None or (not m.group(1) and not m.group(2)):
                self._send(req, 416, b"bad range", {"Content-Range": f"bytes */{size}"})
                return
            if m.group(1):
                lo = int(m.group(1))
                hi = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            else:  # suffix range: the last N bytes
                lo, hi = max(0, size - int(m.group(2))), size - 1
            if lo >= size or hi < lo:
                self._send(req, 416, b"range not satisfiable", {"Content-Range": f"bytes */{size}"})
                return
            data = data[lo : hi + 1]
            status = 206
            headers["Content-Range"] = f"bytes {lo}-{hi}/{size}"
        req.status = status
        if fault is not None and fault.kind == "drop":
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if fault.gate is not None:
                self.wfile.write(data[: fault.gate_at])
                self.wfile.flush()
                fault.gate.wait(30.0)
                self.wfile.write(data[fault.gate_at : fault.after])
            else:
                self.wfile.write(data[: fault.after])
            self.wfile.flush()
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if srv.send_lengths:
            self.send_header("Content-Length", str(len(data)))
        else:  # as an HTTP/1.0-style server or a proxy may answer: the body runs to the connection's end
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if body and fault is not None and fault.kind == "pause":
            self.wfile.write(data[: fault.after])
            self.wfile.flush()
            (fault.gate or srv._stopping).wait(fault.seconds)
            self.wfile.write(data[fault.after :])
        elif body and fault is not None and fault.kind == "trickle":
            for i in range(len(data)):
                if srv._stopping.wait(fault.seconds):
                    break
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
            self.close_connection = True
        elif body:
            self.wfile.write(data)


def _is_tail_check(rng: str | None) -> bool:
    m = re.fullmatch(r"bytes=(\d+)-(\d+)", rng or "")
    return m is not None and (int(m[2]) + 1) % 512 == 0 and int(m[2]) - int(m[1]) < (1 << 16) + 512
