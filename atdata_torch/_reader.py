"""Source + tar walker -> records that carry (shard, key, offset), so every later error can name them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import IO, Any, NamedTuple

from ._packed import PACKED_EXT, PAYLOAD_EXT, read_pair, split
from ._tar import iter_members, read_member_stream
from ._tarheader import Sliceable
from .errors import ShardFormatError

Buffer = bytes | memoryview

# webdataset's base_plus_ext: key = directory + name up to the first dot of the basename; ext = the rest.
_KEY_RE = re.compile(r"^((?:.*/|)[^./]+)[.]([^/]*)$")


class Record(NamedTuple):
    """One sample as stored: the members of one key, with where they came from."""

    shard: str
    key: str
    offset: int
    length: int
    members: dict[str, Buffer]
    data_offset: int = 0  # where the last member's data starts (the payload, for one-member samples)
    packed: bool = False  # a sample of a packed member (``<key>.msgpacks``): offset and length are the member's


def split_name(name: str) -> tuple[str, str] | None:
    """``"dir/k0.image.npy"`` -> ``("dir/k0", "image.npy")``; ``None`` for names without an extension.

    Example:
        >>> split_name("a/x.jpg"), split_name("README")
        (('a/x', 'jpg'), None)
    """
    m = _KEY_RE.match(name)
    if m is None:
        return None
    return m.group(1), m.group(2).lower()


def _group(members: Iterator[tuple[str, int, int, Buffer]], shard: str) -> Iterator[Record]:
    """Group consecutive members by key; each item is (name, header offset, data offset, data)."""
    key: str | None = None
    offset = end = data_at = 0
    group: dict[str, Buffer] = {}
    try:
        for item in members:
            name, header_offset, data_offset, data = item
            parts = split_name(name)
            if parts is None:
                if len(data) == 0:
                    continue  # webdataset semantics: members without an extension belong to no sample
                raise ShardFormatError(
                    f"tar member {name[:200]!r} has no extension, so it belongs to no sample and its "
                    f"{len(data)} bytes would be dropped (a corrupt or renamed member name); re-write the shard "
                    "with names <key>.<ext>",
                    shard=shard,
                    key=name[:200] or None,
                    offset=header_offset,
                )
            k, ext = parts
            if k != key:
                if key is not None:
                    if PACKED_EXT in group:
                        done = (key, offset, end - offset, group, data_at)
                        key, offset, group = k, header_offset, {}  # not yielded again if it raises
                        yield from _unpack(shard, *done)
                    else:
                        yield Record(shard, key, offset, end - offset, group, data_at)
                key, offset, group = k, header_offset, {}
            elif ext in group:
                raise ShardFormatError(
                    f"sample {k!r} has two members with extension .{ext}; keys must be unique per member "
                    "(rewrite the shard with distinct keys)",
                    shard=shard,
                    key=k,
                    offset=header_offset,
                )
            group[ext] = data
            data_at = data_offset
            end = data_offset + _padded(len(data))
    except ShardFormatError:
        # The samples before the damage are intact: hand over the pending one before the error.
        if key is not None and group:
            yield from _unpack(shard, key, offset, end - offset, group, data_at)
        raise
    if key is not None:
        yield from _unpack(shard, key, offset, end - offset, group, data_at)


def _unpack(shard: str, key: str, offset: int, length: int, group: dict[str, Buffer], data_at: int) -> Iterator[Record]:
    """The record of one group of members, or, for a packed member, one record per sample it holds (see
    ``atdata_torch._packed``): each with the member's offset and length, its payload as the ``msgpack`` member."""
    data = group.get(PACKED_EXT)
    if data is None:
        yield Record(shard, key, offset, length, group, data_at)
        return
    if len(group) != 1:
        others = ", ".join(sorted("." + e for e in group if e != PACKED_EXT))[:200]
        raise ShardFormatError(
            f"sample {key[:200]!r} has a packed .{PACKED_EXT} member and other members ({others}): a packed member "
            "holds whole samples and stands alone; re-write the shard with atd.write_samples(..., pack=N)",
            shard=shard,
            key=key[:200],
            offset=offset,
        )
    for k, at, payload in split(memoryview(data), shard, key, data_at):
        yield Record(shard, k, offset, length, {PAYLOAD_EXT: payload}, at, True)


def iter_records(buf: Sliceable, shard: str, start: int = 0, end: int | None = None) -> Iterator[Record]:
    """Group the members of a buffered tar into records, as webdataset's ``group_by_keys`` does."""
    try:
        view: Sliceable = memoryview(buf)  # type: ignore[arg-type]
    except TypeError:  # no buffer protocol (a segmented Filling): sliced as it is
        view = buf
    return _group(
        (
            (m.name, m.header_offset, m.data_offset, view[m.data_offset : m.data_offset + m.size])
            for m in iter_members(buf, shard, start, end)
        ),
        shard,
    )


def read_record(buf: Sliceable, shard: str, offset: int, length: int) -> Record:
    """Read the one record stored in ``[offset, offset + length)`` (a range taken from a shard index).

    The headers in that range are parsed and checked (a packed member holds many: see :func:`read_indexed`).
    """
    recs = list(iter_records(buf, shard, offset, offset + length))
    if len(recs) != 1:
        raise ShardFormatError(
            f"the shard index points at {len(recs)} samples in bytes [{offset}, {offset + length}) instead of 1: "
            "the index sidecar is stale; rebuild it with atd.build_index()",
            shard=shard,
            offset=offset,
        )
    rec = recs[0]
    if rec.offset + rec.length > offset + length:  # a member ran past the range (iter_members stops after it)
        raise ShardFormatError(
            f"the members of sample {rec.key[:200]!r} run to byte {rec.offset + rec.length}, past the bytes "
            f"[{offset}, {offset + length}) the shard index gives it: a member's size field is corrupt (it swallows "
            "later samples), or the index sidecar is stale; rebuild it with atd.build_index()",
            shard=shard,
            key=rec.key,
            offset=offset,
        )
    return rec


def read_indexed(buf: Sliceable, shard: str, ix: Any, i: int) -> Record:
    """Sample ``i`` of a shard by its index ``ix`` (a ``ShardIndex``): the bytes of its packed pair (checked to be
    its key's) in a packed shard, else its record's range (headers checked, see :func:`read_record`)."""
    if not ix.packed:
        return read_record(buf, shard, ix.offsets[i], ix.lengths[i])
    lo, hi = ix.pair_span(i)
    if hi > len(buf):
        raise ShardFormatError(
            f"sample {ix.keys[i][:200]!r} lies in bytes [{lo}, {hi}) by the shard's index, but the shard has "
            f"{len(buf)} bytes: the shard is truncated or its index sidecar is stale; rebuild the sidecar with "
            "atd.build_index() (or restore the shard)",
            shard=shard,
            key=ix.keys[i][:200],
            offset=lo,
        )
    payload = read_pair(memoryview(buf[lo:hi]), shard, ix.keys[i], lo)
    return Record(shard, ix.keys[i], ix.offsets[i], ix.lengths[i], {PAYLOAD_EXT: payload}, hi - len(payload), True)


def iter_records_stream(fileobj: IO[bytes], shard: str) -> Iterator[Record]:
    """Group the members of a sequential tar stream into records."""
    return _group(
        ((m.name, m.header_offset, m.data_offset, data) for m, data in read_member_stream(fileobj, shard)),
        shard,
    )


def _padded(size: int) -> int:
    return (size + 511) & ~511
