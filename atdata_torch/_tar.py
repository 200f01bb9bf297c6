"""Tar member iteration without ``tarfile`` on the hot path, over a buffer or over a sequential stream.

A buffer is bytes, an mmap or a segmented download; a stream an HTTP body or a pipe. Reads ustar, GNU and PAX tars
(``x`` and ``g`` headers, a ``path=``/``size=`` in a PAX header, GNU ``L`` long names); the header fields, PAX records
and errors are in :mod:`._tarheader`, the writing side in :mod:`._tarwrite`. Every structural problem (truncation,
a bad header checksum, a bad size field, a missing end-of-archive marker) raises
:class:`~atdata_torch.errors.ShardFormatError` naming the shard and byte offset.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

import numpy as np

from ._tarheader import (
    _META,
    _REGULAR,
    BLOCK,
    ZERO_BLOCK,
    Member,
    Sliceable,
    _after_end,
    _check_checksum,
    _first_nonzero,
    _key_of,
    _link_target,
    _long_name,
    _name_of,
    _not_regular,
    _octal,
    _orphan_header,
    _parse_pax,
)
from .errors import ShardFormatError


def hidden_members(data: bytes | memoryview, shard: str, key: str) -> tuple[int, list[str]] | None:
    """Tar headers inside a member's data, when its size field was corrupted upwards and swallowed later members.

    Called on the error path only (a member that failed to decode): ``data`` starts at a block boundary, so later
    members' headers lie at multiples of 512 in it. Returns the offset (in ``data``) of the first valid header and
    the keys of the samples whose members lie in ``data`` (other than ``key``), or ``None`` when there is no header.
    """
    n = len(data) // BLOCK
    if n < 2:
        return None
    blocks = np.frombuffer(data, dtype=np.uint8, count=n * BLOCK).reshape(n, BLOCK)
    candidates = np.flatnonzero((blocks[:, 257:262] == np.frombuffer(b"ustar", np.uint8)).all(axis=1))
    for c in candidates.tolist():
        at = c * BLOCK
        try:
            _check_checksum(bytes(data[at : at + BLOCK]), shard, at)
        except ShardFormatError:
            continue
        keys: list[str] = []
        try:
            for m in iter_members(data, shard, at, len(data)):
                k = _key_of(m.name)
                if k != key and k not in keys:
                    keys.append(k)
        except ShardFormatError:
            pass  # the swallowed region ends inside a member: the keys seen so far are what it holds
        return at, keys
    return None


def iter_members(buf: Sliceable, shard: str, start: int = 0, end: int | None = None) -> Iterator[Member]:
    """Yield the regular-file members of a tar held in a buffer (bytes or mmap), in archive order.

    Every header moves the walk strictly forward. A member that is not a regular file raises, except a directory
    entry or volume label that carries no data (passed over: it belongs to no sample); so does an end-of-archive
    marker followed by anything but zero padding.

    Args:
        buf: The whole shard (or a buffer covering ``[start, end)``).
        shard: Its name, for error messages.
        start: Byte offset to start at (a header boundary).
        end: Stop at this offset (exclusive) without requiring an end-of-archive marker; ``None`` reads to the
            end-of-archive marker and raises if it is missing.

    Raises:
        ShardFormatError: naming the shard, the offset and, where known, the member.
    """
    total = len(buf)
    limit = total if end is None else min(end, total)
    pos = start
    pax: dict[str, str] = {}
    long_name: str | None = None
    first_header = pos
    while True:
        if not (pax or long_name):
            first_header = pos
        if pos >= limit:
            _check_limit(pos, end, shard)
            return
        if pos + BLOCK > total:
            raise ShardFormatError(
                f"tar header at byte {pos} is cut off ({total - pos} of 512 bytes): the shard is truncated",
                shard=shard,
                offset=pos,
            )
        hdr = bytes(buf[pos : pos + BLOCK])
        if hdr == ZERO_BLOCK:
            _check_end(buf, shard, pos, total, start, end, pax, long_name, first_header)
            return
        _check_checksum(hdr, shard, pos)
        size = _octal(hdr[124:136], "size", shard, pos)
        typeflag = hdr[156:157]
        data_offset = pos + BLOCK
        if "size" in pax:
            size = int(pax["size"])  # digits only (checked by _parse_pax)
        next_pos = data_offset + ((size + BLOCK - 1) // BLOCK) * BLOCK
        if data_offset + size > total:
            raise _cut_member(hdr, pax, long_name, shard, pos, size, total - data_offset)
        if typeflag in _META:
            payload = bytes(buf[data_offset : data_offset + size])
            if typeflag == b"x":
                pax = _parse_pax(payload, shard, pos)
            elif typeflag == b"g":
                _parse_pax(payload, shard, pos)  # checked; global keys are not used
            elif typeflag == b"L":
                long_name = _long_name(payload, shard, pos)
            else:  # b"K": the long target of a link, and links are no sample data
                raise _link_target(_name_of(hdr), shard, pos)
            pos = next_pos
            continue
        name = pax.get("path") or long_name or _name_of(hdr)
        if typeflag in _REGULAR:
            yield Member(name, first_header, data_offset, size)
        else:
            err = _not_regular(typeflag, size, name, shard, pos)
            if err is not None:
                raise err
        pax = {}
        long_name = None
        pos = next_pos


def read_member_stream(fileobj: IO[bytes], shard: str) -> Iterator[tuple[Member, bytes]]:
    """Yield ``(member, data)`` from a sequential stream (HTTP body, pipe), reading each member once.

    Checks what :func:`iter_members` checks (non-regular members, data after the end-of-archive marker).
    """
    pos = 0
    pax: dict[str, str] = {}
    long_name: str | None = None
    first_header = 0
    while True:
        if not (pax or long_name):
            first_header = pos
        hdr = _read_exact(fileobj, BLOCK)
        if len(hdr) == 0:
            raise ShardFormatError(
                f"tar stream ends at byte {pos} without an end-of-archive marker: the shard is truncated",
                shard=shard,
                offset=pos,
            )
        if len(hdr) < BLOCK:
            raise ShardFormatError(
                f"tar header at byte {pos} is cut off ({len(hdr)} of 512 bytes): the shard is truncated",
                shard=shard,
                offset=pos,
            )
        if hdr == ZERO_BLOCK:
            _check_stream_end(fileobj, shard, pos, pax, long_name, first_header)
            return
        _check_checksum(hdr, shard, pos)
        size = _octal(hdr[124:136], "size", shard, pos)
        if "size" in pax:
            size = int(pax["size"])  # digits only (checked by _parse_pax)
        padded = ((size + BLOCK - 1) // BLOCK) * BLOCK
        data = _read_exact(fileobj, padded)
        if len(data) < size:
            raise _cut_member(hdr, pax, long_name, shard, pos, size, len(data), stream=True)
        typeflag = hdr[156:157]
        header_at = pos
        data_offset = pos + BLOCK
        pos = data_offset + padded
        if typeflag in _META:
            if typeflag == b"x":
                pax = _parse_pax(data[:size], shard, header_at)
            elif typeflag == b"g":
                _parse_pax(data[:size], shard, header_at)
            elif typeflag == b"L":
                long_name = _long_name(data[:size], shard, header_at)
            else:  # b"K": the long target of a link, and links are no sample data
                raise _link_target(_name_of(hdr), shard, header_at)
            continue
        name = pax.get("path") or long_name or _name_of(hdr)
        if typeflag in _REGULAR:
            yield Member(name, first_header, data_offset, size), data[:size]
        else:
            err = _not_regular(typeflag, size, name, shard, header_at)
            if err is not None:
                raise err
        pax = {}
        long_name = None


def _read_exact(fileobj: IO[bytes], n: int) -> bytes:
    chunks = []
    remaining = n
    while remaining > 0:
        chunk = fileobj.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


# The walkers' rare paths (the end of a walk, a cut-off member), out of their per-member loops.


def _check_limit(pos: int, end: int | None, shard: str) -> None:
    """At the buffer walk's limit: the end of the range asked for, or (raised) a tar cut off before its end."""
    if end is not None and pos >= end:
        return
    raise ShardFormatError(
        f"tar ends at byte {pos} without an end-of-archive marker: the shard is truncated (re-write or re-download it)",
        shard=shard,
        offset=pos,
    )


def _check_end(
    buf: Sliceable,
    shard: str,
    pos: int,
    total: int,
    start: int,
    end: int | None,
    pax: dict[str, str],
    long_name: str | None,
    first_header: int,
) -> None:
    """At a zero block of a buffer: raise unless it is the end-of-archive marker, followed by zero padding only."""
    if pax or long_name:
        raise _orphan_header(first_header, pos, shard)
    if end is not None:
        raise ShardFormatError(
            f"the shard index points at bytes [{start}, {end}) but the tar has an end-of-archive marker "
            f"at byte {pos}: the index sidecar is stale; rebuild it with atd.build_index()",
            shard=shard,
            offset=pos,
        )
    after = _first_nonzero(buf, pos + BLOCK, total)
    if after >= 0:
        raise _after_end(after, shard, pos)


def _cut_member(
    hdr: bytes,
    pax: dict[str, str],
    long_name: str | None,
    shard: str,
    pos: int,
    size: int,
    have: int,
    *,
    stream: bool = False,
) -> ShardFormatError:
    """The error for a member that declares more bytes (``size``) than the shard (or ``stream``) has after it."""
    name = pax.get("path") or long_name or _name_of(hdr)
    ended = "the stream ended after" if stream else "the shard ends after"
    fix = "" if stream else " (re-write or re-download it)"
    return ShardFormatError(
        f"tar member {name[:200]!r} at byte {pos} declares {size} bytes but {ended} {have}: "
        f"the shard is truncated{fix}",
        shard=shard,
        key=_key_of(name),
        offset=pos,
    )


def _check_stream_end(
    fileobj: IO[bytes], shard: str, pos: int, pax: dict[str, str], long_name: str | None, first_header: int
) -> None:
    """At a zero block of a stream: raise unless it is the end-of-archive marker, followed by zero padding only
    (the rest of the stream is read to know)."""
    if pax or long_name:
        raise _orphan_header(first_header, pos, shard)
    at = pos + BLOCK
    while chunk := fileobj.read(1 << 20):
        rest = chunk.lstrip(b"\0")
        if rest:
            raise _after_end(at + len(chunk) - len(rest), shard, pos)
        at += len(chunk)
