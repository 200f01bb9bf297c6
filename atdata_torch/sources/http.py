"""HTTP(S) shards, streamed in-process with urllib3 (no ``curl`` subprocesses).

Example:
    >>> src = HTTPSource(["https://user:secret@example.org/data-000000.tar"])
    >>> src
    HTTPSource(1 shards, first='https://***@example.org/data-000000.tar')
"""

from __future__ import annotations

import http.client
from typing import IO, Any
from urllib.parse import unquote

from ..errors import ShardNotFoundError, SourceError
from ._remote import RemoteSource, TransientError
from .url import redact

__all__ = ["HTTPSource"]

_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class HTTPSource(RemoteSource):
    """Shards served over HTTP(S): streaming GETs with large reads, ``Range`` requests for random access and to
    resume a broken transfer, retries with exponential backoff on connection errors, timeouts, 5xx and 429
    (honouring ``Retry-After``), bounded concurrency and read-ahead, and an optional shard cache.

    Args:
        urls: Shard URLs (``user:password@`` in a URL becomes basic auth and never appears in messages).
        headers: Extra request headers (e.g. ``{"Authorization": "Bearer ..."}``; never logged).
        timeout: Connect and read timeout in seconds (a stalled server counts as a transient failure).
        **kwargs: ``cache``, ``retries``, ``backoff``, ``max_concurrency``, ``readahead``, ``chunk_size``,
            ``parallel`` (see RemoteSource). With ``chunk_size`` a shard is fetched as ``Range`` requests of that
            many bytes, ``parallel`` of them at once; a server that answers ``200`` to a range request (no
            ``Range`` support) gets one streaming GET per shard instead.
    """

    def __init__(
        self,
        urls: list[str],
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._urls = list(urls)
        self._headers = dict(headers or {})
        self.timeout = timeout

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
        return urllib3.PoolManager(
            num_pools=16,
            maxsize=self.max_concurrency + 2,
            retries=retry,
            timeout=urllib3.Timeout(connect=self.timeout, read=self.timeout),
        )

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
        try:
            resp = self._http().request("GET", url, headers=headers, preload_content=False, decode_content=False)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        status = resp.status
        if status == 416 and start == 0 and end is not None:
            # An empty shard has no byte 0 to range over: ask for the whole (empty) body.
            resp.drain_conn()
            resp.release_conn()
            return self._open_range(shard, 0, None)
        if status in (200, 206):
            if start and status == 200:
                # The server ignored Range: skip what we already have.
                skipped = 0
                while skipped < start:
                    chunk = resp.read(min(1 << 20, start - skipped))
                    if not chunk:
                        break
                    skipped += len(chunk)
            total = _total_size(resp, start)
            return _Body(resp, ranged=status == 206 or not (start or end is not None)), total  # type: ignore[return-value]
        body = resp.read(512)
        resp.release_conn()
        shown = redact(shard)
        if status == 404:
            raise ShardNotFoundError(
                f"{shown!r} does not exist (HTTP 404); check the URL and the brace pattern", shard=shown
            )
        if status in (401, 403):
            raise SourceError(
                f"access to {shown!r} was refused (HTTP {status}); check the credentials or headers= for this server",
                shard=shown,
            )
        if status in _TRANSIENT_STATUS:
            retry_after = resp.headers.get("Retry-After")
            if retry_after and retry_after.isdigit():
                import time

                time.sleep(min(float(retry_after), 30.0))
            raise TransientError(f"HTTP {status}")
        raise SourceError(f"GET {shown!r} answered HTTP {status} ({body[:200]!r}); expected 200 or 206", shard=shown)

    def __repr__(self) -> str:
        n = len(self._urls)
        first = f", first={redact(self._urls[0])!r}" if n else ""
        return f"HTTPSource({n} shards{first})"


class _Body:
    """A response body: ``readinto`` straight into the caller's buffer (no intermediate ``bytes``), and the
    connection back to the pool once the body was read to its end (closed otherwise).

    ``ranged`` is false when the server answered ``200`` to a range request (it does not support ``Range``)."""

    def __init__(self, resp: Any, *, ranged: bool) -> None:
        self._resp = resp
        fp = getattr(resp, "_fp", None)
        # Raw http.client bodies only (no content decoding asked, HTTP/1.1): anything else goes through urllib3.
        self._fp = fp if isinstance(fp, http.client.HTTPResponse) and not resp.headers.get("Content-Encoding") else None
        self.ranged = ranged

    def read(self, n: int = -1) -> bytes:
        if self._fp is not None:
            return self._fp.read(None if n < 0 else n)
        return self._resp.read(n)  # type: ignore[no-any-return]

    def readinto(self, b: memoryview) -> int:
        if self._fp is not None:
            return self._fp.readinto(b)
        data = self._resp.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if self._fp is not None and self._fp.isclosed():
            self._resp.release_conn()  # the whole body was read: keep the connection
        else:
            self._resp.close()


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
