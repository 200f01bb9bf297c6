"""HTTP(S) shards, streamed in-process with urllib3 (no ``curl`` subprocesses).

Example:
    >>> src = HTTPSource(["https://user:secret@example.org/data-000000.tar"])
    >>> src
    HTTPSource(1 shards, first='https://***@example.org/data-000000.tar')
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import socket
import time
from typing import IO, Any, Literal
from urllib.parse import unquote

from ..errors import ShardNotFoundError, SourceError
from ._base import as_shard_list
from ._policy import Pace, TransientError, request_deadline
from ._remote import RemoteSource
from .url import redact

__all__ = ["HTTPSource"]

_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
LOOPBACK_RECV_BUFFER = 4 << 20  # SO_RCVBUF of connections to this machine (recv_buffer="loopback")


class HTTPSource(RemoteSource):
    """Shards served over HTTP(S): streaming GETs with large reads, ``Range`` requests for random access and to
    resume a broken transfer, retries with exponential backoff on connection errors, timeouts, 5xx and 429
    (honouring ``Retry-After``), bounded concurrency and read-ahead, and an optional shard cache.

    Args:
        urls: Shard URLs (``user:password@`` in a URL becomes basic auth and never appears in messages).
        headers: Extra request headers (e.g. ``{"Authorization": "Bearer ..."}``; never logged).
        timeout: Connect and read timeout in seconds (a stalled server counts as a transient failure); also the
            window over which a body must average ``min_rate`` bytes/s. A request as a whole, retries included,
            is bounded by ``deadline`` (see RemoteSource).
        recv_buffer: The socket receive buffer (``SO_RCVBUF``). ``"loopback"`` (default): 4 MiB on connections to
            this machine (a local object store, a sidecar proxy), where the round trip is microseconds and a
            fixed buffer costs nothing, and the kernel's autotuning elsewhere. A number of bytes: that buffer on
            every connection (the kernel caps it at ``net.core.rmem_max``, and a fixed buffer turns autotuning off:
            on long, fast links it can be slower). ``None``: autotuning everywhere. Measured on loopback (image
            shape, 2 cores): 4 MiB instead of autotuning took a single stream from 1.1 to 1.75 GB/s.
        **kwargs: ``cache``, ``retries``, ``backoff``, ``max_concurrency``, ``readahead``, ``chunk_size``,
            ``parallel``, ``checksums``, ``deadline``, ``sidecar_deadline``, ``min_rate``, ``max_retry_after``
            (see RemoteSource). With ``chunk_size`` a shard is fetched as ``Range`` requests of that
            many bytes, ``parallel`` of them at once; a server that answers ``200`` to a range request (no
            ``Range`` support) gets one streaming GET per shard instead.
    """

    def __init__(
        self,
        urls: str | list[str],
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
        recv_buffer: int | Literal["loopback"] | None = "loopback",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._urls = as_shard_list(urls, "HTTPSource")
        self._headers = dict(headers or {})
        self.timeout = timeout
        if recv_buffer is not None and recv_buffer != "loopback" and not isinstance(recv_buffer, int):
            raise TypeError(f'recv_buffer is a number of bytes, "loopback" or None; got {recv_buffer!r}')
        self.recv_buffer = recv_buffer

    @classmethod
    def from_urls(cls, urls: list[str], **kwargs: Any) -> HTTPSource:
        """Build from ``http(s)://`` URLs."""
        return cls(urls, **kwargs)

    def list_shards(self) -> list[str]:
        return list(self._urls)

    def _display(self, shard: str) -> str:
        return redact(shard)

    def _http(self) -> Any:
        return self._per_process("http", self._new_http)

    def _new_http(self) -> Any:
        import urllib3

        # Status-based retries are ours (to resume from the right byte); urllib3 only retries connecting.
        retry = urllib3.Retry(total=None, connect=0, read=0, status=0, redirect=5, raise_on_status=False)
        manager = urllib3.PoolManager(
            num_pools=16,
            maxsize=self.max_concurrency + 2,
            retries=retry,
            timeout=urllib3.Timeout(connect=self.timeout, read=self.timeout),
        )
        if self.recv_buffer:  # (one set of pool classes per setting, made once)
            manager.pool_classes_by_scheme = dict(_tuned_pools(self.recv_buffer))
        return manager

    def _request_parts(self, url: str) -> tuple[str, dict[str, str]]:
        import urllib3

        headers = dict(self._headers)
        scheme, rest = url.split("://", 1)
        host, sep, path = rest.partition("/")
        if "@" in host:
            userinfo, host = host.rsplit("@", 1)
            headers.update(urllib3.make_headers(basic_auth=unquote(userinfo)))
            url = f"{scheme}://{host}{sep}{path}"
        return url, headers

    def _open_range(self, shard: str, start: int, end: int | None = None) -> tuple[IO[bytes], int | None]:
        import urllib3

        url, headers = self._request_parts(shard)
        if start or end is not None:
            headers["Range"] = f"bytes={start}-" + ("" if end is None else str(end - 1))
        until = request_deadline()
        kw = self._timeout_until(until)
        try:
            resp = self._http().request("GET", url, headers=headers, preload_content=False, decode_content=False, **kw)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        status = resp.status
        if status == 416 and start == 0 and end is not None:
            # An empty shard has no byte 0 to range over: ask for the whole (empty) body.
            resp.drain_conn()
            resp.release_conn()
            return self._open_range(shard, 0, None)
        if status not in (200, 206):
            raise _status_error(resp, redact(shard))
        if start and status == 200:
            _skip(resp, start)  # the server ignored Range: skip what we already have
        total = _total_size(resp, start)
        pace = Pace(until, self.min_rate, self.timeout, redact(shard)) if until is not None or self.min_rate else None
        body = _Body(resp, ranged=status == 206 or not (start or end is not None), pace=pace)
        return body, total  # type: ignore[return-value]

    def _timeout_until(self, until: float | None) -> dict[str, Any]:
        """The request's ``timeout=`` keyword: a server that never answers is given no longer than the request's
        deadline (``until``, a ``time.monotonic()`` value); none when the source's ``timeout`` is sooner."""
        import urllib3

        if until is None:
            return {}
        left = until - time.monotonic()
        if left <= 0:
            raise TransientError("the request's deadline passed before it was sent")
        return {"timeout": urllib3.Timeout(connect=left, read=left)} if left < self.timeout else {}

    def __repr__(self) -> str:  # (never the headers: they may carry tokens)
        n = len(self._urls)
        first = f", first={redact(self._urls[0])!r}" if n else ""
        return f"HTTPSource({n} shards{first})"


@functools.cache
def _tuned_pools(recv_buffer: int | str) -> dict[str, Any]:
    """urllib3 pool classes whose new connections get their receive buffer from :func:`_tune_receive_buffer`
    (decided per connection, from the address it reached: redirects and host names resolving to this machine
    included)."""
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    def tuned(base: type) -> type:
        def _new_conn(self: Any) -> socket.socket:
            sock: socket.socket = base._new_conn(self)  # type: ignore[attr-defined]
            _tune_receive_buffer(sock, recv_buffer)
            return sock

        return type(f"Tuned{base.__name__}", (base,), {"_new_conn": _new_conn})

    return {
        "http": type("TunedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": tuned(HTTPConnection)}),
        "https": type("TunedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": tuned(HTTPSConnection)}),
    }


def _tune_receive_buffer(sock: socket.socket, recv_buffer: int | str) -> None:
    """Set ``SO_RCVBUF``: ``recv_buffer`` bytes, or for ``"loopback"`` :data:`LOOPBACK_RECV_BUFFER` when the peer
    is this machine (best effort: a socket that refuses keeps the kernel's default)."""
    try:
        if recv_buffer == "loopback":
            if not _is_loopback(sock.getpeername()[0]):
                return
            size = LOOPBACK_RECV_BUFFER
        else:
            size = int(recv_buffer)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    except (OSError, ValueError, IndexError):
        pass


def _is_loopback(address: str) -> bool:
    """``127.0.0.0/8``, ``::1`` and IPv4-mapped loopback addresses.

    Example:
        >>> _is_loopback("127.0.0.1"), _is_loopback("::ffff:127.0.0.1"), _is_loopback("10.0.0.1")
        (True, True, False)
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


class _Body:
    """A response body: ``readinto`` straight into the caller's buffer (no intermediate ``bytes``), and the
    connection back to the pool once the body was read to its end (closed otherwise).

    ``ranged`` is false when the server answered ``200`` to a range request (it does not support ``Range``)."""

    def __init__(self, resp: Any, *, ranged: bool, pace: Pace | None = None) -> None:
        self._resp = resp
        self._pace = pace  # the deadline and the minimum rate, checked after every receive
        self._broken: TransientError | None = None  # raised by the next read (the bytes before it were returned)
        fp = getattr(resp, "_fp", None)
        # Raw http.client bodies only (no content decoding asked, HTTP/1.1): anything else goes through urllib3.
        self._fp = fp if isinstance(fp, http.client.HTTPResponse) and not resp.headers.get("Content-Encoding") else None
        self.ranged = ranged
        self._sock: Any = None  # the plain socket readinto_many receives from (False: it cannot), found on first use
        self._drained = False

    def read(self, n: int = -1) -> bytes:
        if self._pace is not None and n > 0:
            buf = memoryview(bytearray(n))
            return bytes(buf[: self.readinto(buf)])
        if self._fp is not None:
            return self._fp.read(None if n < 0 else n)
        return self._resp.read(n)  # type: ignore[no-any-return]

    def readinto(self, b: memoryview) -> int:
        fp = self._fp
        pace = self._pace
        if pace is None:
            if fp is not None:
                return fp.readinto(b)
            data = self._resp.read(len(b))
            b[: len(data)] = data
            return len(data)
        if fp is None or fp.chunked or fp.fp is None:
            # One receive at a time (read1), so that a trickle is seen as it arrives.
            read1 = getattr(fp if fp is not None else self._resp, "read1", None)
            data = read1(len(b)) if read1 is not None else self._resp.read(len(b))
            b[: len(data)] = data
            pace.got(len(data))
            return len(data)
        if self._broken is not None:
            raise self._broken
        return self._readinto_paced(fp, b, pace)

    def _readinto_paced(self, fp: http.client.HTTPResponse, b: memoryview, pace: Pace) -> int:
        """``fp.readinto(b)``, as one receive system call after another (each into ``b`` directly, as the buffered
        reader does for large reads), checking the deadline and the rate between them. When a limit is hit after
        some bytes came in, those are returned and the next call raises (a retry resumes after them)."""
        view = memoryview(b)
        if fp.length is not None and len(view) > fp.length:
            view = view[: fp.length]
        want = len(view)
        got = 0
        reader: Any = fp.fp
        while got < want:
            n = reader.readinto1(view[got:])
            if not n:
                fp._close_conn()  # type: ignore[attr-defined]
                break
            got += n
            done = False
            if fp.length is not None:
                fp.length -= n
                if not fp.length:
                    fp._close_conn()  # type: ignore[attr-defined]
                    done = True
            try:
                pace.got(n)
            except TransientError as exc:
                if not done:  # (a body that arrived whole is not broken off)
                    self._broken = exc
                break
            if done:
                break
        return got

    @property
    def scatters(self) -> bool:
        """Whether :meth:`readinto_many` receives in one call (a plain-TCP body of known length)."""
        if self._sock is None:
            fp = self._fp
            raw = getattr(getattr(fp, "fp", None), "raw", None)
            sock = getattr(raw, "_sock", None)
            ok = (
                fp is not None
                and not fp.chunked
                and fp.length is not None
                and type(sock) is socket.socket  # not TLS: ssl sockets have no recvmsg_into
                and hasattr(sock, "recvmsg_into")
            )
            self._sock = sock if ok else False
        return self._sock is not False

    def readinto_many(self, bufs: list[memoryview]) -> int:
        """Receive into ``bufs`` in order, in one ``recvmsg_into`` (one system call, the GIL let go once); returns
        the bytes received (0 at the end of the body). Only for a body that :attr:`scatters`.

        Used to receive a placed shard (see ``atdata_torch._placement``): its array ranges go straight to batch
        rows and the bytes between them to the download's segments, a few dozen buffers per call."""
        fp = self._fp
        if fp is None or not self.scatters:
            raise TypeError("this response body cannot receive into many buffers (check .scatters first)")
        left: int = fp.length or 0
        if left <= 0:
            fp.readinto(memoryview(bytearray(0)))  # lets http.client end the response (the connection is reused)
            return 0
        if not self._drained:
            # Bytes that the response's buffered reader read along with the headers come first, through it.
            self._drained = True
            held = min(len(fp.fp.peek(1)), left)
            if held:
                return sum(fp.readinto(b) for b in _first(bufs, held))
        n = int(self._sock.recvmsg_into(_first(bufs, left))[0])
        fp.length = left - n
        if n and left == n:
            fp.readinto(memoryview(bytearray(0)))
        if self._pace is not None:
            self._pace.got(n)
        return n

    def close(self) -> None:
        if self._fp is not None and self._fp.isclosed():
            self._resp.release_conn()  # the whole body was read: keep the connection
        else:
            self._resp.close()


def _first(bufs: list[memoryview], n: int) -> list[memoryview]:
    """The first ``n`` bytes of ``bufs`` (the buffers, the last one cut short)."""
    out: list[memoryview] = []
    for b in bufs:
        if n <= 0:
            break
        out.append(b[:n])
        n -= len(out[-1])
    return out


def _skip(resp: Any, n: int) -> None:
    """Read and drop the first ``n`` bytes of a body (fewer when it ends first)."""
    skipped = 0
    while skipped < n:
        chunk = resp.read(min(1 << 20, n - skipped))
        if not chunk:
            break
        skipped += len(chunk)


def _status_error(resp: Any, shown: str) -> Exception:
    """The error for a response that is neither ``200`` nor ``206`` (its connection goes back to the pool)."""
    status = resp.status
    body = resp.read(512)
    resp.release_conn()
    if status == 404:
        return ShardNotFoundError(
            f"{shown!r} does not exist (HTTP 404); check the URL and the brace pattern", shard=shown
        )
    if status in (401, 403):
        return SourceError(
            f"access to {shown!r} was refused (HTTP {status}); check the credentials or headers= for this server",
            shard=shown,
        )
    if status in _TRANSIENT_STATUS:
        retry_after = resp.headers.get("Retry-After", "").strip()
        wait = float(retry_after) if retry_after.isdigit() else None  # (the waiting is done by _with_retries)
        return TransientError(f"HTTP {status}", retry_after=wait)
    return SourceError(f"GET {shown!r} answered HTTP {status} ({body[:200]!r}); expected 200 or 206", shard=shown)


def _total_size(resp: Any, start: int) -> int | None:
    cr = resp.headers.get("Content-Range")
    if cr and "/" in cr:
        tail = cr.rsplit("/", 1)[1]
        if tail.isdigit():
            return int(tail)
    cl = resp.headers.get("Content-Length")
    if cl and cl.isdigit():
        return int(cl) + (start if resp.status == 206 else 0)
    return None
