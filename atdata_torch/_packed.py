"""The compact layout: many samples in one tar member (``write_samples(..., pack=N)``).

A packed member is named ``<first key>.msgpacks``; its data is a msgpack stream of ``[key, payload]`` pairs (a
2-element array of a str and a bin), one per sample, where each payload is exactly the bytes the default layout
stores as ``<key>.msgpack``. The shard stays a POSIX tar (``tarfile`` and webdataset open it and see one member per
pack), every sample's key is in the shard itself, and the index sidecar locates each payload inside its member, so
that readers fetch one sample without touching its neighbours.

This module owns the bytes of that layout: writing a pair, splitting a member into its samples, the header length in
front of each payload (from which a sidecar derives payload offsets instead of storing them), and the checks of a
packed index against its shard. It imports nothing of the tar reader's, so that the reader and the sidecar both use it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import msgpack
import numpy as np

from .errors import ShardFormatError

if TYPE_CHECKING:
    from ._sidecar import ShardIndex

PACKED_EXT = "msgpacks"
PAYLOAD_EXT = "msgpack"
BLOCK = 512
_FIX = "rebuild the shard with atd.write_samples(..., pack=N) (or restore it from its source)"


def pair(key: str, payload: bytes) -> tuple[bytes, int]:
    """One sample of a packed member, and the length of its header (the bytes in front of the payload).

    Example:
        >>> raw, head = pair("k0", b"xyz")
        >>> raw[head:], head == header_length(2, 3)
        (b'xyz', True)
    """
    raw = msgpack.packb([key, payload], use_bin_type=True)
    return raw, len(raw) - len(payload)


def header_length(key_bytes: int, size: int) -> int:
    """The bytes of a pair in front of its payload, as :func:`pair` writes them (the smallest msgpack headers)."""
    return 1 + _str_head(key_bytes) + key_bytes + _bin_head(size)


def header_lengths(key_bytes: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """:func:`header_length` of many pairs at once (int64 arrays)."""
    strh = np.where(key_bytes < 32, 1, np.where(key_bytes < 256, 2, np.where(key_bytes < 65536, 3, 5)))
    out: np.ndarray = 1 + strh + key_bytes + _bin_heads(sizes)
    return out


def _bin_heads(sizes: np.ndarray) -> np.ndarray:
    """The bytes of the smallest msgpack bin header for each size (bin8, bin16, bin32)."""
    out: np.ndarray = np.where(sizes < 256, 2, np.where(sizes < 65536, 3, 5))
    return out


def _str_head(n: int) -> int:
    return 1 if n < 32 else 2 if n < 256 else 3 if n < 65536 else 5


def _bin_head(n: int) -> int:
    return 2 if n < 256 else 3 if n < 65536 else 5


def _length(data: memoryview, at: int, width: int) -> int:
    return int.from_bytes(data[at : at + width], "big")


def _parse_str(data: memoryview, at: int) -> tuple[int, int] | None:
    """(start, end) of the msgpack str at ``at``, or ``None`` when no str starts there."""
    b = data[at]
    if 0xA0 <= b <= 0xBF:
        start, n = at + 1, b & 0x1F
    elif b in (0xD9, 0xDA, 0xDB):
        width = 1 << (b - 0xD9)
        start, n = at + 1 + width, _length(data, at + 1, width)
    else:
        return None
    return start, start + n


def _parse_bin(data: memoryview, at: int) -> tuple[int, int] | None:
    """(start, end) of the msgpack bin at ``at``, or ``None`` when no bin starts there."""
    b = data[at]
    if b not in (0xC4, 0xC5, 0xC6):
        return None
    width = 1 << (b - 0xC4)
    start = at + 1 + width
    return start, start + _length(data, at + 1, width)


def split(data: memoryview, shard: str, member_key: str, data_offset: int) -> Iterator[tuple[str, int, memoryview]]:
    """The samples of one packed member: ``(key, payload offset in the shard, payload)``, in order.

    Raises:
        ShardFormatError: naming the shard, the member, the byte and the fix, when the member is not a stream of
            ``[str, bin]`` pairs (truncated, corrupt, a payload that overruns the member, a key with a ``'.'``), or
            its first key is not the member's name. The samples before the damage are yielded first.
    """
    n, at, first = len(data), 0, True
    while at < n:
        where, key = data_offset + at, None
        try:
            if data[at] == 0x92:
                s = _parse_str(data, at + 1)
                if s is not None and s[1] <= n:
                    key = bytes(data[s[0] : s[1]]).decode("utf-8")
                    b = _parse_bin(data, s[1]) if s[1] < n else None
                    if b is not None and b[1] <= n:
                        yield _checked(key, shard, member_key, where, first), data_offset + b[0], data[b[0] : b[1]]
                        at, first = b[1], False
                        continue
        except (IndexError, UnicodeDecodeError):
            pass
        raise _bad(shard, member_key, where, key, n - at)
    if first:
        raise ShardFormatError(
            f"packed member {member_key[:200]!r}.{PACKED_EXT} holds no sample (its data is empty); {_FIX}",
            shard=shard,
            key=member_key[:200],
            offset=data_offset,
        )


def _checked(key: str, shard: str, member_key: str, where: int, first: bool) -> str:
    last = key.rsplit("/", 1)[-1]
    if not last or "." in last or (first and key != member_key):
        why = (
            f"its first sample's key {key[:200]!r} is not the member's name"
            if key and "." not in last and first
            else f"sample key {key[:200]!r} is empty or has a '.' in its last path segment"
        )
        raise ShardFormatError(
            f"packed member {member_key[:200]!r}.{PACKED_EXT} is not valid at byte {where}: {why}; {_FIX}",
            shard=shard,
            key=key[:200] or member_key[:200],
            offset=where,
        )
    return key


def _bad(shard: str, member_key: str, where: int, key: str | None, left: int) -> ShardFormatError:
    what = (
        f"sample {key[:200]!r}'s payload is not a msgpack bin that ends inside the member"
        if key is not None
        else "no [key, payload] pair (a msgpack array of a str and a bin) starts there"
    )
    return ShardFormatError(
        f"packed member {member_key[:200]!r}.{PACKED_EXT} is truncated or corrupt at byte {where} ({left} bytes "
        f"before the member's end): {what}; {_FIX}",
        shard=shard,
        key=(key or member_key)[:200],
        offset=where,
    )


def read_pair(data: memoryview, shard: str, key: str, at: int) -> memoryview:
    """The payload of the pair in ``data`` (the pair's bytes, from shard offset ``at``), checked to be ``key``'s.

    Raises:
        ShardFormatError: when the bytes are not that sample's pair (a stale index sidecar, or a damaged shard).
    """
    s = _parse_str(data, 1) if len(data) > 1 and data[0] == 0x92 else None
    got = None
    if s is not None and s[1] < len(data):
        got = bytes(data[s[0] : s[1]]).decode("utf-8", "replace")
        b = _parse_bin(data, s[1])
        if got == key and b is not None and b[1] == len(data):
            return data[b[0] : b[1]]
    raise ShardFormatError(
        f"the shard's index says sample {key[:200]!r} lies in a packed member at byte {at}, but the bytes there are "
        f"{'sample ' + repr(got[:200]) + chr(39) + 's' if got else 'not a [key, payload] pair'}: the index sidecar "
        "is stale, or the shard is damaged; rebuild the sidecar with atd.build_index() (or restore the shard)",
        shard=shard,
        key=key,
        offset=at,
    )


# ---------------------------------------------------------------------------------------------------- the index
def key_bytes(keys: Sequence[str]) -> np.ndarray:
    """The UTF-8 length of each key (int64)."""
    if "".join(keys).isascii():
        return np.fromiter(map(len, keys), dtype=np.int64, count=len(keys))
    return np.fromiter((len(k.encode("utf-8")) for k in keys), dtype=np.int64, count=len(keys))


def derive(
    member_offsets: Sequence[int], counts: Sequence[int], keys: Sequence[str], sizes: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sample: member offset, member length and payload offset, as our writer lays a packed shard out (ustar
    headers, pairs with the smallest msgpack headers, zero padding to 512 bytes)."""
    cnt = np.asarray(counts, dtype=np.int64)
    sz = np.asarray(sizes, dtype=np.int64)
    pair_bytes = header_lengths(key_bytes(keys), sz) + sz
    member_of = np.repeat(np.arange(len(cnt)), cnt)
    ends = np.cumsum(pair_bytes)
    firsts = np.concatenate(([0], np.cumsum(cnt)[:-1])).astype(np.int64)
    base = np.concatenate(([0], ends))[firsts]  # bytes of the pairs before each member
    inner_end = ends - base[member_of]
    data_sizes = np.zeros(len(cnt), dtype=np.int64)
    np.maximum.at(data_sizes, member_of, inner_end)
    moffs = np.asarray(member_offsets, dtype=np.int64)
    lengths = BLOCK + (data_sizes + BLOCK - 1) // BLOCK * BLOCK
    poffs = moffs[member_of] + BLOCK + inner_end - sz
    return moffs[member_of], lengths[member_of], poffs


def members(offsets: Sequence[int]) -> tuple[list[int], list[int]]:
    """The distinct member offsets of a packed index, and how many samples each member holds."""
    offs = np.asarray(offsets, dtype=np.int64)
    if not len(offs):
        return [], []
    starts = np.flatnonzero(np.concatenate(([True], offs[1:] != offs[:-1])))
    counts = np.diff(np.concatenate((starts, [len(offs)])))
    return offs[starts].tolist(), counts.tolist()


def key_range(keys: Sequence[str]) -> tuple[int, int] | None:
    """``(start, width)`` when the keys are ``f"{start + i:0{width}d}"`` (the writer's default keys), else ``None``."""
    if not keys or not keys[0].isdigit() or not keys[0].isascii():
        return None
    start, width = int(keys[0]), len(keys[0])
    return (start, width) if list(keys) == range_keys(start, width, len(keys)) else None


def range_keys(start: int, width: int, count: int) -> list[str]:
    """The keys of :func:`key_range`."""
    return [f"{i:0{width}d}" for i in range(start, start + count)]


def layout_problem(offs: np.ndarray, lens: np.ndarray, poffs: np.ndarray, psizes: np.ndarray) -> str | None:
    """Where the samples of a packed index do not lie as packed members would (``None``: they do): samples of one
    member share its offset and length, members follow each other without overlap, payloads lie inside their member
    after its header, in order."""
    ends = offs + lens
    same = offs[1:] == offs[:-1]
    if (same & (lens[1:] != lens[:-1])).any() or (~same & (offs[1:] < ends[:-1])).any():
        return "its members are not in increasing order without overlap"
    pends = poffs + psizes
    if (poffs < offs + BLOCK).any() or (pends > ends).any() or (same & (poffs[1:] < pends[:-1])).any():
        return "its payload ranges do not lie inside their packed members, after a header, in order"
    return None


def verify(buf: bytes | memoryview, idx: ShardIndex, shard: str) -> None:
    """Check a packed index against its shard's bytes in a few vectorized passes: each member's tar header (checksum,
    size) and the msgpack bin header in front of each payload, which holds the payload's size.

    Raises:
        ShardFormatError: naming the first sample that does not match.
    """
    from ._tarheader import verify_headers

    keys = idx.keys
    starts, counts = members(idx.offsets)
    if not starts:
        return
    poffs = np.asarray(idx.payload_offsets, dtype=np.int64)
    sz = np.asarray(idx.payload_sizes, dtype=np.int64)
    last = np.cumsum(counts) - 1
    verify_headers(buf, starts, (poffs[last] + sz[last] - np.asarray(starts) - BLOCK).tolist(), shard)
    arr = np.frombuffer(buf, dtype=np.uint8)
    heads = _bin_heads(sz)
    at = poffs - heads
    if (at < 0).any():
        bad = int(np.argmax(at < 0))
        raise _mismatch(shard, keys[bad], int(poffs[bad]))
    tag = arr[at].astype(np.int64)
    got = np.zeros(len(sz), dtype=np.int64)
    for width, code in ((1, 0xC4), (2, 0xC5), (4, 0xC6)):
        pick = heads == width + 1
        if pick.any():
            n = np.zeros(int(pick.sum()), dtype=np.int64)
            for j in range(width):
                n = n * 256 + arr[at[pick] + 1 + j]
            got[pick] = np.where(tag[pick] == code, n, -1)
    wrong = got != sz
    if wrong.any():
        bad = int(np.argmax(wrong))
        raise _mismatch(shard, keys[bad], int(poffs[bad]))


def _mismatch(shard: str, key: str, at: int) -> ShardFormatError:
    return ShardFormatError(
        f"the index sidecar says sample {key[:200]!r}'s payload starts at byte {at} of a packed member, but no msgpack "
        "bin of its size ends there: the sidecar is stale or the shard damaged; rebuild the sidecar with "
        "atd.build_index() (or restore the shard)",
        shard=shard,
        key=key[:200],
        offset=at,
    )
