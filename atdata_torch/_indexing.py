"""The shard indexes of a dataset: sidecars checked against their shards, or one scan of each shard (cached).

A :class:`ShardIndexes` is shared by a dataset and the datasets derived from it (same shards and source). A
sidecar is trusted once checked: locally against the shard's bytes when it is read, and for a remote shard (not
downloaded for this) when a pass first opens the shard (:meth:`ShardIndexes.stream_buffer`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ._reader import Buffer
from ._sidecar import ShardIndex, scan, stale_error
from ._tarheader import BLOCK
from .errors import AtdataError, ShardFormatError
from .sources import DataSource, LocalSource
from .sources._base import Filling
from .sources._capabilities import Buffered, RangeReading, SidecarBatching, Streaming

__all__ = ["ShardIndexes"]

log = logging.getLogger("atdata_torch")


class _LocalRanges:
    """A local shard read by ranges, for a sidecar's O(1) checks (:meth:`ShardIndex.stale`): only the few blocks they
    look at are read, not the whole shard (what ``len(ds)`` needs)."""

    def __init__(self, source: LocalSource, shard: str) -> None:
        self.source, self.shard = source, shard
        self.size = os.stat(shard).st_size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, sl: slice, /) -> bytes:
        start, stop, _ = sl.indices(self.size)
        return self.source.read_range(self.shard, start, stop)


class ShardIndexes:
    """A source's shard indexes and sidecars, cached (shared by a dataset and the datasets derived from it).

    Attributes:
        source: The shard source.
        indexes: The index of each shard read so far (whole shards, before any range).
        sidecars: Each shard's usable sidecar (``None``: none, or a stale one).
        unchecked: Remote shards whose index is a sidecar not yet checked against the bytes.
    """

    def __init__(self, source: DataSource) -> None:
        self.source = source
        self.indexes: dict[str, ShardIndex] = {}
        self.sidecars: dict[str, ShardIndex | None] = {}
        self.unchecked: set[str] = set()
        # Local sidecars believed on their O(1) checks, for a pass's order; their tar headers are checked when a pass
        # opens the shard (check_opened) or a caller needs the index itself (shard_index): so the first batch waits
        # for one shard's check, not for every shard's (see shard_index's ``defer``).
        self.deferred: dict[str, ShardIndex] = {}
        self.stale_deferred: dict[int, ShardIndex] = {}  # id -> a deferred index whose headers did not match

    def buffer_or_none(self, shard: str) -> Buffer | None:
        """The whole shard in memory, when the source can give it (``None``: read the stream instead)."""
        return self.source.buffer(shard) if isinstance(self.source, Buffered) else None

    def buffer(self, shard: str) -> Buffer:
        """The whole shard in memory (read from its stream when the source has no buffer)."""
        buf = self.buffer_or_none(shard)
        if buf is None:
            with self.source.open_shard(shard) as f:
                buf = f.read()
        return buf

    def stream_buffer(self, shard: str, owner: Any = None) -> Buffer | Filling:
        """The shard for a pass: a :class:`~atdata_torch.sources.Filling` when a remote source streams it (readers
        wait for the bytes they need), else the whole buffer. ``owner``: the pass's placement, if it places bytes
        (see ``atdata_torch._placement``)."""
        source = self.source
        got: Buffer | Filling | None = None
        if isinstance(source, Streaming):
            got = source.stream_buffer(shard, owner) if owner is not None else source.stream_buffer(shard)
        if got is None:
            got = self.buffer(shard)
        if shard in self.unchecked:
            self.check_remote(shard, got)
        return got

    def check_remote(self, shard: str, got: Buffer | Filling) -> None:
        """Check a remote shard's sidecar index against the shard's bytes, now that a pass has them (see
        :meth:`ShardIndex.stale`; the bytes after the last sample are read by one ranged request while a streamed
        download has not reached them). A stale sidecar is forgotten (the next pass scans the shard) and the pass
        stops with a stale-sidecar :class:`ShardFormatError`: its order was laid out from the sidecar's count."""
        idx = self.indexes.get(shard)
        self.unchecked.discard(shard)
        if idx is None:
            return
        if len(got) < idx.size:
            return  # a shard cut short: the pass reports each sample past its end (see past_end), and reads the rest
        tail = last_header = None
        read_range = self.source.read_range if isinstance(self.source, RangeReading) else None
        end = idx.end
        if (
            isinstance(got, Filling)
            and got.filled < end + BLOCK
            and read_range is not None
            and len(got) == idx.size
            and end + BLOCK <= idx.size
        ):
            last = idx.offsets[-1] if idx.count else end
            if end - last <= 1 << 16:  # one small ranged read: the last sample's header and the marker after it
                got_tail = bytes(read_range(shard, last, end + BLOCK))
                tail, last_header = got_tail[-BLOCK:], (got_tail[:BLOCK] if idx.count else None)
            else:
                tail = bytes(read_range(shard, end, end + BLOCK))
        why = idx.stale(got, tail, last_header)
        if why is None:
            return
        del self.indexes[shard]
        self.sidecars[shard] = None
        raise stale_error(
            shard,
            f"{why}; the pass stops here, as its order was laid out from the sidecar; the next pass scans the shard",
        )

    def warm(self, shards: list[str]) -> None:
        """Let a remote source fetch the sidecars not read yet all at once (see ``RemoteSource.read_sidecars``)."""
        if isinstance(self.source, SidecarBatching):
            known, sidecars = self.indexes, self.sidecars
            self.source.read_sidecars([s for s in shards if s not in known and s not in sidecars])

    def sidecar(self, shard: str, buf: Buffer | None = None) -> ShardIndex | None:
        """The shard's index sidecar, validated against its schema (see :meth:`ShardIndex.from_json`), and, for a
        shard whose bytes are at hand (not remote), against the shard (O(1), see :meth:`ShardIndex.stale`): a
        stale sidecar is logged and reads as absent, so that the shard is scanned instead. ``None``: no usable
        sidecar. ``buf``: the shard's bytes, when the caller read them already (they are not read again)."""
        cache = self.sidecars
        if shard not in cache:
            read = getattr(self.source, "read_sidecar", None)
            raw = read(shard) if read is not None else None
            idx = ShardIndex.from_json(raw, shard) if raw is not None else None
            if idx is not None and not getattr(self.source, "remote", False):
                view: Buffer | _LocalRanges | None = buf
                try:
                    if view is None:
                        src = self.source
                        view = _LocalRanges(src, shard) if isinstance(src, LocalSource) else self.buffer_or_none(shard)
                except (AtdataError, OSError):
                    view = None  # an unreadable shard raises when it is read
                if view is not None and not self.current(idx, view, shard):
                    idx = None
            cache[shard] = idx
        return cache[shard]

    @staticmethod
    def current(idx: ShardIndex, buf: Buffer | _LocalRanges, shard: str, headers: bool = False) -> bool:
        """Whether a sidecar describes ``buf`` (O(1); with ``headers``, also every payload's tar header, in one
        vectorized pass); logs a warning when it does not."""
        why = idx.stale(buf)
        if why is None and headers and idx.payload_offsets is not None and isinstance(buf, (bytes, memoryview)):
            try:
                idx.verify(buf, shard)
            except ShardFormatError as exc:
                why = exc.message
        if why is None:
            return True
        log.warning(
            "atdata_torch: the index sidecar of %s is stale (%s); the shard is scanned instead; rebuild the "
            "sidecar with atd.build_index()",
            shard,
            why,
        )
        return False

    def shard_index(self, shard: str, buf: Buffer | None = None, *, defer: bool = False) -> ShardIndex:
        """The index of one shard: from its sidecar when present and current, else built by one scan (cached).

        With ``defer`` (a pass's order: ``Dataset.shard_indexes``), a local sidecar that passes the O(1) checks is
        used at once and its headers are checked when a pass opens the shard (:meth:`check_opened`).

        A sidecar is checked against the shard once per process before it is trusted: its size, that the tar
        ends right after its last sample, and every header it points at (one vectorized pass). A stale one is
        logged and the index rebuilt by a scan. A remote shard is not downloaded for this: its sidecar is checked
        when a pass first opens the shard (see :meth:`stream_buffer`).
        """
        cached = self.indexes.get(shard)
        if cached is not None:
            if not defer and self.deferred.get(shard) is cached:
                self._check_deferred(shard, self.buffer(shard), cached)
                return self.indexes[shard] if shard in self.indexes else self.shard_index(shard)
            return cached
        remote = getattr(self.source, "remote", False)
        deferred = self._deferred_index(shard) if defer and buf is None and not remote else None
        if deferred is not None:
            return deferred
        if buf is None and not remote:
            buf = self.buffer(shard)  # once: for the sidecar's check, its headers' check and a scan
        idx = self.sidecar(shard, buf)
        if idx is not None and idx.count and buf is None and remote:
            # A remote shard is not downloaded just to check its sidecar: the pass that reads it checks it (the
            # cache also verifies the sidecar's sha256; decoding checks every payload). A sidecar of no samples is
            # checked now: no pass would open its shard.
            self.indexes[shard] = idx
            self.unchecked.add(shard)
            return idx
        if buf is None:
            buf = self.buffer(shard)
        if idx is None or not self.current(idx, buf, shard, headers=True):
            idx = scan(buf, shard)
        self.indexes[shard] = idx
        self.unchecked.discard(shard)
        return idx

    def _deferred_index(self, shard: str) -> ShardIndex | None:
        """A local shard's sidecar index on its O(1) checks (the few blocks they read), its headers left for the pass
        that opens the shard (:meth:`check_opened`); ``None`` when there is no usable one."""
        if not isinstance(self.source, LocalSource):
            return None
        idx = self.sidecar(shard)
        if idx is None or not idx.count or idx.payload_offsets is None:
            return None
        self.indexes[shard] = self.deferred[shard] = idx
        return idx

    def check_opened(self, shard: str, got: Buffer | Filling, idx: ShardIndex) -> ShardIndex | None:
        """A pass opened ``shard`` (its bytes ``got``) with the order laid out from ``idx``: check a deferred sidecar's
        headers now. A stale one is forgotten and the shard scanned (a damaged shard raises the scan's error, naming
        where); when the scan finds as many samples and the pass read the shard whole (no bytes routed to batch
        rows), the pass goes on with the scanned index (returned), as it would have had the headers been checked
        before the order was laid out; else it stops with a stale-sidecar :class:`ShardFormatError`, as for a remote
        shard, and the next pass uses the scan. ``None``: nothing to change."""
        why: str | None
        if id(idx) in self.stale_deferred and self.stale_deferred[id(idx)] is idx:
            why = "its tar headers do not match the sidecar (found when the shard was first read)"
        elif self.deferred.get(shard) is idx:
            why = self._check_deferred(shard, got, idx)
        else:
            return None
        if why is None:
            return None
        if shard not in self.indexes:
            # The scan a non-deferred read would have made: a damaged shard raises its own error (naming where).
            self.indexes[shard] = scan(self.buffer(shard), shard)
        fresh = self.indexes[shard]
        if fresh.count == idx.count and not isinstance(got, Filling):
            return fresh
        raise stale_error(
            shard, f"{why}; the pass stops here, as its order was laid out from the sidecar; the next one scans"
        )

    def _check_deferred(self, shard: str, got: Buffer | Filling, idx: ShardIndex) -> str | None:
        """Check a deferred sidecar's headers against the shard's bytes: ``None`` when they match, else why not (the
        index is then forgotten)."""
        del self.deferred[shard]
        buf = got.view if isinstance(got, Filling) else got
        if not isinstance(buf, (bytes, memoryview)) or self.current(idx, buf, shard, headers=True):
            return None
        self.stale_deferred[id(idx)] = idx
        self.indexes.pop(shard, None)
        self.sidecars[shard] = None
        return "its tar headers do not match the sidecar"
