"""The shard index sidecar: ``<shard>.idx.json`` next to each shard.

It records the sample count, each sample's key, byte offset and length (headers included), the shard's size and
sha256, and the schema id, so that readers know ``len()`` and can seek without scanning. Readers never need it:
:func:`scan` builds the same index from the shard in one pass.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

import msgspec
import numpy as np

from . import _packed
from ._reader import Buffer, iter_records, split_name
from ._tar import iter_members
from ._tarheader import (
    BLOCK,
    MAX_OFFSET,
    ZERO_BLOCK,
    Sliceable,
    _check_checksum,
    _first_nonzero,
    _name_of,
    verify_headers,
)
from .errors import ShardFormatError

SIDECAR_SUFFIX = ".idx.json"
FORMAT = "atdata-torch-shard-index"
VERSION = 1
PACKED_VERSION = 2  # a packed shard's sidecar (its per-sample lists in compact form): version-1 readers refuse it
_Offset = Annotated[int, msgspec.Meta(ge=0, le=MAX_OFFSET)]
_Wait = Callable[[int], object]  # a segmented download's wait(end): blocks until bytes [0, end) are in


@dataclass
class ShardIndex:
    """Where each sample of one shard lies.

    Attributes:
        count: Number of samples.
        keys: Sample keys, in tar order.
        offsets: Byte offset of each sample's first header.
        lengths: Bytes from that header to the end of the sample's last member (padding included).
        size: Size of the shard in bytes.
        sha256: Hex sha256 of the shard ("" when unknown).
        schema_id: The schema id of the samples, if known.
        payload_ext: When every sample is one member with this extension (``"msgpack"`` for atdata shards),
            the extension; ``payload_offsets`` / ``payload_sizes`` then locate each member's data, so that
            readers need not parse tar headers per sample.
        packed: The shard is in the compact layout (``write_samples(..., pack=N)``, see ``atdata_torch._packed``):
            a sample's ``offsets`` / ``lengths`` are those of the packed member holding it, and its payload
            (``payload_ext`` ``"msgpack"``) lies inside that member.
    """

    count: int
    keys: list[str]
    offsets: list[int]
    lengths: list[int]
    size: int
    sha256: str = ""
    schema_id: str | None = None
    payload_ext: str | None = None
    payload_offsets: list[int] | None = None
    payload_sizes: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    packed: bool = False

    def slice(self, lo: int, hi: int) -> ShardIndex:
        """The index of samples ``[lo, hi)`` of this shard (same shard size and digest)."""
        lo, hi = max(0, lo), min(self.count, hi)
        hi = max(lo, hi)
        return ShardIndex(
            count=hi - lo,
            keys=self.keys[lo:hi],
            offsets=self.offsets[lo:hi],
            lengths=self.lengths[lo:hi],
            size=self.size,
            sha256=self.sha256,
            schema_id=self.schema_id,
            payload_ext=self.payload_ext,
            payload_offsets=self.payload_offsets[lo:hi] if self.payload_offsets is not None else None,
            payload_sizes=self.payload_sizes[lo:hi] if self.payload_sizes is not None else None,
            extra=self.extra,
            packed=self.packed,
        )

    def pair_span(self, i: int) -> tuple[int, int]:
        """The bytes of sample ``i``'s ``[key, payload]`` pair in a packed shard (its payload and the header before)."""
        assert self.payload_offsets is not None and self.payload_sizes is not None
        key, p, size = self.keys[i], self.payload_offsets[i], self.payload_sizes[i]
        return p - _packed.header_length(len(key.encode("utf-8")), size), p + size

    def to_json(self) -> bytes:
        """Serialize (compact JSON; a packed shard's per-sample lists in compact form, as sidecar version 2)."""
        d = {"format": FORMAT, "version": VERSION, **asdict(self)}
        del d["packed"]
        if self.packed:
            d.update(version=PACKED_VERSION, packed=self._compact())
            for name in ("keys", "offsets", "lengths", "payload_offsets", "payload_sizes"):
                del d[name]
        return json.dumps(d, separators=(",", ":")).encode()

    def _compact(self) -> dict[str, Any]:
        """The per-sample lists of a packed index, stored compactly: member offsets and sample counts, the keys as a
        range when they are the writer's default ones, the payload sizes; payload offsets and member lengths are
        left out when they follow from those (our writer's layout), else stored."""
        starts, counts = _packed.members(self.offsets)
        rng = _packed.key_range(self.keys)
        doc: dict[str, Any] = {"members": starts, "counts": counts, "sizes": self.payload_sizes}
        doc["keys"] = {"start": rng[0], "width": rng[1]} if rng is not None else self.keys
        if self.count:
            _, lens, poffs = _packed.derive(starts, counts, self.keys, self.payload_sizes or [])
            if lens.tolist() != self.lengths or poffs.tolist() != self.payload_offsets:
                doc.update(lengths=self.lengths, payload_offsets=self.payload_offsets)
        return doc

    @classmethod
    def from_json(cls, data: bytes, shard: str) -> ShardIndex:
        """Parse and validate a sidecar against its schema (types, bounds, lists that agree with each other).

        Raises:
            ShardFormatError: naming the sidecar, when it is not a valid one (it is never partly believed).
        """
        try:
            doc = msgspec.json.decode(data, type=_SidecarDoc)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
            raise _invalid(shard, str(exc)) from None
        if doc.format != FORMAT:
            raise _invalid(shard, f"its format is {doc.format[:60]!r}, expected {FORMAT!r}")
        if doc.version > PACKED_VERSION or (doc.version > VERSION) != (doc.packed is not None):
            raise _invalid(shard, f"its version {doc.version} is newer than this atdata_torch understands")
        if doc.packed is not None:
            idx = _expand(doc, shard)
        else:
            idx = cls(
                count=doc.count,
                keys=doc.keys,
                offsets=doc.offsets,
                lengths=doc.lengths,
                size=doc.size,
                sha256=doc.sha256,
                schema_id=doc.schema_id,
                payload_ext=doc.payload_ext,
                payload_offsets=doc.payload_offsets if doc.payload_ext is not None else None,
                payload_sizes=doc.payload_sizes if doc.payload_ext is not None else None,
                extra=doc.extra,
            )
        problem = idx.problem()
        if problem is not None:
            raise _invalid(shard, problem)
        return idx

    def problem(self) -> str | None:
        """What makes this index inconsistent in itself (``None``: nothing), checked in a few vectorized passes.

        Lists agree with ``count``; keys are unique; samples lie on 512-byte boundaries, in increasing order,
        without overlap, and end at least one block before ``size`` (the end-of-archive marker); each payload lies
        inside its sample, after its header.
        """
        why = self._lists_problem()
        if why is not None or self.count == 0:
            return why
        return self._layout_problem()

    def _lists_problem(self) -> str | None:
        """What makes the counts, keys, size, digest and payload fields disagree (``None``: nothing)."""
        n = self.count
        if not (n == len(self.keys) == len(self.offsets) == len(self.lengths)):
            return (
                f"it has count {n} but {len(self.keys)} keys, {len(self.offsets)} offsets and "
                f"{len(self.lengths)} lengths"
            )
        if len(set(self.keys)) != n:
            return "its keys are not unique"
        if self.size < BLOCK or self.size > MAX_OFFSET:
            return f"its shard size {self.size} is not that of a tar (at least one 512-byte block)"
        if self.sha256 and (len(self.sha256) != 64 or self.sha256.strip("0123456789abcdef")):
            return "its sha256 is not 64 lowercase hex digits"
        has_payload = self.payload_ext is not None
        if has_payload != (self.payload_offsets is not None and self.payload_sizes is not None):
            return "payload_ext, payload_offsets and payload_sizes must be given together"
        if has_payload and not (n == len(self.payload_offsets or ()) == len(self.payload_sizes or ())):
            return f"it has count {n} but its payload lists have other lengths"
        if has_payload and not self.payload_ext:
            return "its payload_ext is empty"
        if self.packed and self.payload_ext != _packed.PAYLOAD_EXT:
            return f"it is packed, but its payloads are not .{_packed.PAYLOAD_EXT} ones"
        return None

    def _layout_problem(self) -> str | None:
        """Where the samples and payloads of a non-empty index do not lie as a tar's would (``None``: they do)."""
        offs = np.asarray(self.offsets, dtype=np.int64)
        lens = np.asarray(self.lengths, dtype=np.int64)
        ends = offs + lens
        if ((offs | lens) % BLOCK).any() or (lens < BLOCK).any():
            return "its offsets and lengths are not whole 512-byte tar blocks"
        if self.packed:
            poffs = np.asarray(self.payload_offsets, dtype=np.int64)
            psizes = np.asarray(self.payload_sizes, dtype=np.int64)
            why = _packed.layout_problem(offs, lens, poffs, psizes)
            if why is not None:
                return why
        elif (offs[1:] < ends[:-1]).any():
            return "its samples are not in increasing order without overlap"
        if int(ends[-1]) + BLOCK > self.size:
            return (
                f"its last sample ends at byte {int(ends[-1])}, past the end-of-archive marker of a "
                f"{self.size}-byte shard"
            )
        if self.payload_ext is not None and not self.packed:
            poffs = np.asarray(self.payload_offsets, dtype=np.int64)
            psizes = np.asarray(self.payload_sizes, dtype=np.int64)
            if (poffs % BLOCK).any() or (poffs < offs + BLOCK).any() or (poffs + psizes > ends).any():
                return "its payload ranges do not lie inside their samples, after a header"
        return None

    @property
    def end(self) -> int:
        """Where the last sample ends: the tar's end-of-archive marker starts there (0 for an empty shard)."""
        return self.offsets[-1] + self.lengths[-1] if self.count else 0

    def stale(self, buf: Sliceable, tail: bytes | None = None, last_header: bytes | None = None) -> str | None:
        """Why this index does not describe the shard in ``buf`` (``None``: it does), in O(1).

        Checks the shard's size, that the block right after the last sample (block 0 when there is none) is the
        end-of-archive zero block, and that no sample member comes before the first sample. A
        :class:`~atdata_torch.sources.Filling` is waited on for the bytes looked at.

        Args:
            buf: The shard.
            tail: The 512 bytes at :attr:`end`, when the caller read them otherwise (a remote shard's ranged read,
                so as not to wait for the end of its download).
            last_header: Likewise, the 512 bytes where the last sample starts (its first header); when neither
                given nor in ``buf`` yet, that header is not looked at.
        """
        if len(buf) != self.size:
            return f"it describes a {self.size}-byte shard, the shard has {len(buf)} bytes"
        end = self.end
        if end + BLOCK > self.size:
            return f"its samples end at byte {end}, with no room for the end-of-archive marker"
        wait = getattr(buf, "wait", None)
        why = self._end_stale(buf, end, wait, tail)
        if why is not None:
            return why
        if self.count and (last_header is not None or wait is None or getattr(buf, "filled", 0) >= end):
            why = self._last_sample_stale(buf, end, wait, last_header)
            if why is not None:
                return why
        return self._lead_stale(buf, wait)

    def _end_stale(self, buf: Sliceable, end: int, wait: _Wait | None, tail: bytes | None) -> str | None:
        """Why the end-of-archive marker and the padding after it are not where this index says (see :meth:`stale`)."""
        if tail is None:
            if wait is not None:
                wait(end + BLOCK)
            tail = bytes(buf[end : end + BLOCK])
        if tail != ZERO_BLOCK:
            return (
                f"the tar goes on after its last sample (at byte {end}, where the end-of-archive marker should "
                "be): it does not list every sample"
            )
        whole = wait is None or getattr(buf, "filled", 0) >= self.size
        if whole and end + BLOCK < self.size and _first_nonzero(buf, end + BLOCK, self.size) >= 0:
            # Only zero padding may follow the end-of-archive marker (O(padding): tar pads to 10240-byte records).
            return f"there is data after the end-of-archive marker at byte {end} that it does not describe"
        return None

    def _last_sample_stale(self, buf: Sliceable, end: int, wait: _Wait | None, last_header: bytes | None) -> str | None:
        """Why the last sample's header (and payload member) is not what this index says (see :meth:`stale`)."""
        at = self.offsets[-1]
        hdr = last_header if last_header is not None else bytes(buf[at : at + BLOCK])
        try:
            _check_checksum(hdr, "", at)
            fine = hdr != ZERO_BLOCK
        except ShardFormatError:
            fine = False
        if not fine:
            return f"there is no tar header where its last sample starts (byte {at})"
        if self.payload_ext is not None:
            return self._payload_stale(buf, end, wait, at, hdr, self.payload_ext)
        return None

    def _payload_stale(
        self, buf: Sliceable, end: int, wait: _Wait | None, at: int, hdr: bytes, payload_ext: str
    ) -> str | None:
        """Why the last sample's payload member is not a ``.payload_ext`` one (see :meth:`stale`)."""
        name: str | None = None
        if wait is None or getattr(buf, "filled", 0) >= end:
            # The last sample's few headers (a PAX or long-name header may come first): O(1) in samples.
            try:
                members = list(iter_members(buf, "", at, at + self.lengths[-1]))
            except ShardFormatError:
                return f"there are no valid tar headers where its last sample lies (byte {at})"
            assert self.payload_offsets is not None
            p = self.payload_offsets[-1]
            if self.packed:  # the payload lies inside its member's data
                name = next((m.name for m in members if m.data_offset <= p < m.data_offset + max(m.size, 1)), "")
            else:
                name = next((m.name for m in members if m.data_offset == p), "")
        elif hdr[156:157] in (b"0", b"\0"):
            name = _name_of(hdr)
        ext = _packed.PACKED_EXT if self.packed else payload_ext
        parts = split_name(name) if name is not None else None
        if name is not None and (parts is None or parts[1] != ext):
            return f"its payloads are .{ext[:20]} members, the shard's last one is not"
        return None

    def verify(self, buf: bytes | memoryview, shard: str) -> None:
        """Check every header this index points at against the shard's bytes (one vectorized pass): each payload's
        tar header, or, for a packed shard, each member's tar header and the msgpack header before each payload.

        Raises:
            ShardFormatError: naming the first one that does not match.
        """
        if self.packed:
            _packed.verify(buf, self, shard)
        elif self.payload_offsets is not None and self.payload_sizes is not None:
            verify_headers(buf, [o - BLOCK for o in self.payload_offsets], self.payload_sizes, shard)

    def _lead_stale(self, buf: Sliceable, wait: _Wait | None) -> str | None:
        """Whether sample members come before the first sample (see :meth:`stale`)."""
        first = self.offsets[0] if self.count else 0
        if first:
            if wait is not None:
                wait(first)
            try:
                lead = [m.name for m in iter_members(buf, "", 0, first)]
            except ShardFormatError:
                lead = ["?.?"]
            if any(split_name(name) is not None for name in lead):
                return f"the tar has sample members before its first sample (at byte {first})"
        return None

    def check_against(self, buf: Sliceable, shard: str) -> None:
        """Raise a stale-sidecar :class:`ShardFormatError` when this index does not describe ``buf`` (see
        :meth:`stale`)."""
        why = self.stale(buf)
        if why is not None:
            raise stale_error(shard, why)


class _SidecarDoc(msgspec.Struct):
    """The sidecar's JSON schema (unknown fields are ignored, for forward compatibility)."""

    format: str
    count: _Offset
    size: _Offset
    keys: list[str] = msgspec.field(default_factory=list)
    offsets: list[_Offset] = msgspec.field(default_factory=list)
    lengths: list[_Offset] = msgspec.field(default_factory=list)
    version: Annotated[int, msgspec.Meta(ge=0, le=1 << 30)] = 0
    sha256: str = ""
    schema_id: str | None = None
    payload_ext: str | None = None
    payload_offsets: list[_Offset] | None = None
    payload_sizes: list[_Offset] | None = None
    extra: dict[str, Any] = msgspec.field(default_factory=dict)
    packed: _PackedDoc | None = None


class _KeyRange(msgspec.Struct):
    """Keys ``f"{start + i:0{width}d}"`` (the writer's default keys)."""

    start: _Offset
    width: Annotated[int, msgspec.Meta(ge=1, le=64)]


class _PackedDoc(msgspec.Struct):
    """A packed shard's per-sample lists (see :meth:`ShardIndex._compact`)."""

    members: list[_Offset]
    counts: list[Annotated[int, msgspec.Meta(ge=1, le=MAX_OFFSET)]]
    sizes: list[_Offset]
    keys: list[str] | _KeyRange
    lengths: list[_Offset] | None = None
    payload_offsets: list[_Offset] | None = None


def _expand(doc: _SidecarDoc, shard: str) -> ShardIndex:
    """The index a packed sidecar describes (validated by the caller)."""
    p = doc.packed
    assert p is not None
    n = doc.count
    if len(p.members) != len(p.counts) or sum(p.counts) != n or len(p.sizes) != n:
        raise _invalid(shard, f"its packed members, counts and sizes do not add up to its {n} samples")
    keys = p.keys if isinstance(p.keys, list) else _packed.range_keys(p.keys.start, p.keys.width, n)
    if len(keys) != n or (p.lengths is not None and len(p.lengths) != n):
        raise _invalid(shard, f"its packed lists do not have one entry per sample ({n})")
    if p.payload_offsets is not None and len(p.payload_offsets) != n:
        raise _invalid(shard, f"its packed payload offsets do not have one entry per sample ({n})")
    offs, lens, poffs = _packed.derive(p.members, p.counts, keys, p.sizes)
    return ShardIndex(
        count=n,
        keys=keys,
        offsets=offs.tolist(),
        lengths=p.lengths if p.lengths is not None else lens.tolist(),
        size=doc.size,
        sha256=doc.sha256,
        schema_id=doc.schema_id,
        payload_ext=doc.payload_ext,
        payload_offsets=p.payload_offsets if p.payload_offsets is not None else poffs.tolist(),
        payload_sizes=p.sizes,
        extra=doc.extra,
        packed=True,
    )


def _invalid(shard: str, why: str) -> ShardFormatError:
    return ShardFormatError(
        f"the index sidecar {shard + SIDECAR_SUFFIX!r} is not valid ({why[:200]}); delete it or rebuild it with "
        "atd.build_index()",
        shard=shard,
    )


def stale_error(shard: str, why: str) -> ShardFormatError:
    """The error for a sidecar that does not describe its shard (``why``: what differs)."""
    return ShardFormatError(
        f"the index sidecar {shard + SIDECAR_SUFFIX!r} does not match its shard ({why}): it is stale, or the "
        "shard was replaced; rebuild it with atd.build_index() (or delete it)",
        shard=shard,
    )


def scan(
    buf: Buffer,
    shard: str,
    *,
    with_sha256: bool = False,
    schema_id: str | None = None,
    salvage: list[ShardFormatError] | None = None,
) -> ShardIndex:
    """Build the index of a shard by one pass over its headers (and its bytes, for the sha256).

    With ``salvage`` (a list), a damaged shard gives the index of its intact samples before the damage, and the
    error is appended to the list instead of raised.
    """
    keys: list[str] = []
    offsets: list[int] = []
    lengths: list[int] = []
    poffs: list[int] = []
    psizes: list[int] = []
    exts: set[str] = set()
    single = True
    packed = False
    records = iter_records(buf, shard)
    while True:
        try:
            rec = next(records)
        except StopIteration:
            break
        except ShardFormatError as exc:
            if salvage is None:
                raise
            salvage.append(exc)
            break
        keys.append(rec.key)
        packed = packed or rec.packed
        offsets.append(rec.offset)
        lengths.append(rec.length)
        if single:
            if len(rec.members) != 1:
                single = False
            else:
                ((ext, data),) = rec.members.items()
                exts.add(ext)
                poffs.append(rec.data_offset)
                psizes.append(len(data))
                single = len(exts) == 1
    uniform = single and len(exts) == 1
    if packed and not uniform:
        raise ShardFormatError(
            f"the shard holds packed .{_packed.PACKED_EXT} members beside samples of other members: a shard is "
            "packed whole or not at all; re-write it with atd.write_samples(..., pack=N)",
            shard=shard,
        )
    return ShardIndex(
        count=len(keys),
        keys=keys,
        offsets=offsets,
        lengths=lengths,
        size=len(buf),
        sha256=hashlib.sha256(buf).hexdigest() if with_sha256 else "",
        schema_id=schema_id,
        payload_ext=exts.pop() if uniform else None,
        payload_offsets=poffs if uniform else None,
        payload_sizes=psizes if uniform else None,
        packed=packed,
    )
