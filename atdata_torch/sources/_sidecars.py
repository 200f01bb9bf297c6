"""Index sidecars of remote shards: where each one is, one request per sidecar per process (concurrent readers
wait for it), many read at once, and the sha256 a sidecar promises for its shard (what downloads are checked
against)."""

from __future__ import annotations

import io
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..errors import ShardNotFoundError, SourceError
from ._base import ShardSource

__all__ = ["SIDECAR_SUFFIX", "SidecarReads", "digest_of", "sidecar_url"]

log = logging.getLogger("atdata_torch")

SIDECAR_SUFFIX = ".idx.json"


def sidecar_url(shard: str) -> str:
    """The URL of a shard's index sidecar; for HTTP(S) the suffix goes before a query string (signed URLs).

    Example:
        >>> sidecar_url("https://h/a.tar?sig=x"), sidecar_url("s3://b/a?.tar")
        ('https://h/a.tar.idx.json?sig=x', 's3://b/a?.tar.idx.json')
    """
    if not shard.lower().startswith(("http://", "https://")):
        return shard + SIDECAR_SUFFIX
    base, sep, query = shard.partition("?")
    return base + SIDECAR_SUFFIX + sep + query


def digest_of(raw: bytes | None) -> str:
    """The ``sha256`` an index sidecar's JSON promises ("" when none, or when it is not valid).

    Example:
        >>> digest_of(b'{"sha256": "' + b"AB" * 32 + b'"}') == "ab" * 32, digest_of(b"not json")
        (True, '')
    """
    if not raw:
        return ""
    try:
        digest = json.loads(raw).get("sha256")
    except (ValueError, AttributeError, RecursionError):
        return ""
    if isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdefABCDEF" for c in digest):
        return digest.lower()
    return ""


class SidecarReads(ShardSource):
    """The sidecar half of :class:`~._remote.RemoteSource`: reads each shard's sidecar once per process, and knows
    the sha256 it promises. Uses the source's per-process state (``_state()``), its ``download_to`` and its pool."""

    checksums: dict[str, str]
    verify_sidecars: bool
    sidecar_deadline: float | None
    _digests: dict[str, str]

    if TYPE_CHECKING:

        def _state(self) -> dict[str, Any]: ...

        def _display(self, shard: str) -> str: ...

        def _pool(self) -> ThreadPoolExecutor: ...

        def download_to(self, shard: str, sink: Any, *, deadline: float | bool | None = True) -> int: ...

    def _expected_sha256(self, shard: str) -> str | None:
        """The shard's sha256: given in ``checksums``, else from its index sidecar when that was read (in this
        process or, before a fork or pickling, in the parent)."""
        if shard in self.checksums:
            return self.checksums[shard]
        return self._digests.get(shard) or None

    def _checked_sha256(self, shard: str) -> str | None:
        """The sha256 a download of this shard is checked against without a cache (``checksums=``), if any."""
        if shard in self.checksums:
            return self.checksums[shard]
        if not self.verify_sidecars:
            return None
        if shard not in self._digests:
            self.read_sidecar(shard)  # a read-ahead may start before the dataset has read the sidecars
        return self._expected_sha256(shard)

    def _sidecar_url(self, shard: str) -> str | None:
        """Where the shard's index sidecar is (``None``: it has none, and nothing is requested)."""
        return sidecar_url(shard)

    def read_sidecar(self, shard: str) -> bytes | None:
        st = self._state()
        cache: dict[str, bytes | None] = st["sidecars"]
        while shard not in cache:
            with st["lock"]:
                if shard in cache:
                    break
                busy: threading.Event | None = st["sidecar_reads"].get(shard)
                if busy is None:  # this thread reads it (a read already running elsewhere is waited for)
                    busy = st["sidecar_reads"][shard] = threading.Event()
                    mine = True
                else:
                    mine = False
            if not mine:
                busy.wait(1.0)
                continue
            try:
                cache[shard] = self._read_sidecar(shard)
            finally:
                with st["lock"]:
                    cache.setdefault(shard, None)
                    del st["sidecar_reads"][shard]
                busy.set()
        raw = cache[shard]
        self._digests[shard] = digest_of(raw)
        return raw

    def _read_sidecar(self, shard: str) -> bytes | None:
        url = self._sidecar_url(shard)
        if url is None:
            return None
        buf = io.BytesIO()
        try:
            self.download_to(url, buf, deadline=self.sidecar_deadline)
        except ShardNotFoundError:
            return None
        except SourceError as exc:
            # Sidecars are optional: a refused one (S3 answers 403 for a missing key without ListBucket; a
            # signed URL does not cover the sidecar's path) reads as absent. The shard itself still raises.
            refused = "refused" in exc.message
            log.log(
                logging.DEBUG if refused else logging.WARNING,
                "atdata_torch: no index sidecar for %s (%s)%s",
                self._display(shard),
                exc.message,
                "" if refused else "; the shard is scanned instead",
            )
            return None
        return buf.getvalue()

    def read_sidecars(self, shards: list[str]) -> None:
        """Fetch the index sidecars of these shards concurrently (``max_concurrency`` at once) into the cache that
        :meth:`read_sidecar` reads: a dataset of many remote shards learns its length in a few round trips rather
        than one per shard."""
        cached = self._state()["sidecars"]
        todo = [s for s in dict.fromkeys(shards) if s not in cached]
        if len(todo) > 1:
            list(self._pool().map(self.read_sidecar, todo))
