"""POSIX tar headers: parse and write, and member iteration without ``tarfile`` on the hot path.

Reads ustar, GNU and PAX tars (``x`` and ``g`` headers, a ``path=``/``size=`` in a PAX header, GNU ``L`` long
names). Writes plain ustar headers with an integer mtime and no PAX header, which every tar reader accepts.
Every structural problem (truncation, a bad header checksum, a bad size field, a missing end-of-archive marker)
raises :class:`~atdata_torch.errors.ShardFormatError` naming the shard and byte offset.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from typing import IO, NamedTuple, Protocol

import numpy as np

from .errors import ShardFormatError

BLOCK = 512
RECORD = 10240  # tarfile's record size; shards are padded to a multiple of it, like the original writes
ZERO_BLOCK = bytes(BLOCK)
MAX_OFFSET = 1 << 50  # 1 PiB: no shard is larger; bounds every offset read from a sidecar (no int64 overflow)
_ADLER_MOD = 65521


class Sliceable(Protocol):
    """What the buffer walkers read: bytes, a memoryview, an mmap, or a segmented download
    (:class:`~atdata_torch.sources.Filling`)."""

    def __len__(self) -> int: ...

    def __getitem__(self, sl: slice, /) -> bytes | memoryview: ...


class Member(NamedTuple):
    """One regular file in a tar: its name, where its header starts and where its data lies."""

    name: str
    header_offset: int
    data_offset: int
    size: int


def _octal(field: bytes, what: str, shard: str, offset: int) -> int:
    if field and field[0] & 0x80:  # GNU base-256 for large values
        value = field[0] & 0x7F
        for b in field[1:]:
            value = (value << 8) | b
        return value
    digits = field.split(b"\0", 1)[0].strip(b" ")
    if not digits:
        return 0
    if digits.isdigit():  # ASCII digits only: int() would also take a sign, "0o", "_" and spaces
        try:
            return int(digits, 8)
        except ValueError:
            pass
    raise ShardFormatError(
        f"tar header has an invalid {what} field {field!r} (expected octal digits); the shard is corrupt "
        "(re-write or re-download it)",
        shard=shard,
        offset=offset,
    )


def _check_checksum(hdr: bytes, shard: str, offset: int) -> None:
    stored = _octal(hdr[148:156], "checksum", shard, offset)
    # The checksum is the byte sum with the checksum field read as 8 spaces. adler32's low half is
    # (1 + byte sum) mod 65521: one C call instead of a Python sum over 512 bytes.
    field_sum = sum(hdr[148:156])
    computed_mod = ((zlib.adler32(hdr) & 0xFFFF) - 1 - field_sum + 8 * 32) % _ADLER_MOD
    if computed_mod != stored % _ADLER_MOD:
        raise ShardFormatError(
            "tar header checksum mismatch: the shard is corrupt (re-write or re-download it)",
            shard=shard,
            offset=offset,
        )


_FIX = "re-write the shard (atd.write_samples writes regular files only) or re-download it"
_PAX_DIGITS = re.compile(rb"[0-9]{1,20}")
# Typeflags of regular files, of metadata headers that describe the next member, and of members that carry no
# data and belong to no sample (a directory entry such as "./" or "dir/" made by `tar`, a volume label).
_REGULAR = (b"0", b"\0", b"7")
_META = (b"x", b"g", b"L", b"K")
_IGNORABLE = (b"5", b"V")
_SAMPLE_NAME = re.compile(r"^(?:.*/|)[^./]+[.][^/]*$")  # a name with an extension (see _reader.split_name)
_KINDS = {
    b"1": "hard link",
    b"2": "symbolic link",
    b"3": "character device",
    b"4": "block device",
    b"5": "directory",
    b"6": "FIFO",
    b"S": "GNU sparse file",
    b"D": "GNU dump directory",
    b"M": "GNU multi-volume continuation",
    b"N": "GNU old long name",
    b"V": "volume label",
    b"K": "GNU long link target (of a link)",
}


def _parse_pax(data: bytes, shard: str, offset: int) -> dict[str, str]:
    """Parse the ``"<length> <key>=<value>\\n"`` records of a PAX header; every malformed record raises."""
    out: dict[str, str] = {}
    pos = 0
    n = len(data)
    while pos < n:
        if data[pos] == 0:  # some writers pad the records with NULs
            if data[pos:].strip(b"\0"):
                raise ShardFormatError(
                    f"PAX header has data after its NUL padding at record byte {pos}; {_FIX}",
                    shard=shard,
                    offset=offset,
                )
            break
        sp = data.find(b" ", pos, pos + 21)
        m = _PAX_DIGITS.fullmatch(data, pos, sp) if sp > pos else None
        length = int(m.group()) if m is not None else 0
        if m is None or length <= sp - pos + 1 or pos + length > n or data[pos + length - 1] != 0x0A:
            raise ShardFormatError(
                f"malformed PAX header record at record byte {pos} (expected '<length> <key>=<value>\\n' "
                f"within the header's {n} bytes); {_FIX}",
                shard=shard,
                offset=offset,
            )
        k, eq, v = data[sp + 1 : pos + length - 1].partition(b"=")
        if not eq or not k:
            raise ShardFormatError(
                f"malformed PAX header record at record byte {pos} (no '<key>='); {_FIX}",
                shard=shard,
                offset=offset,
            )
        try:
            out[k.decode("utf-8")] = v.decode("utf-8")
        except UnicodeDecodeError:
            raise ShardFormatError(
                f"PAX header record {k[:40]!r} at record byte {pos} is not UTF-8 (PAX names are UTF-8); {_FIX}",
                shard=shard,
                offset=offset,
            ) from None
        pos += length
    if "size" in out and not _PAX_DIGITS.fullmatch(out["size"].encode()):
        raise ShardFormatError(
            f"PAX header has an invalid size {out['size'][:40]!r} (expected decimal digits); {_FIX}",
            shard=shard,
            offset=offset,
        )
    if any(key.startswith("GNU.sparse.") for key in out):
        raise ShardFormatError(
            f"the PAX header describes a GNU sparse file, which cannot be read as sample data; {_FIX}",
            shard=shard,
            offset=offset,
        )
    return out


def _name_of(hdr: bytes) -> str:
    name = hdr[0:100].split(b"\0", 1)[0]
    if hdr[257:262] == b"ustar":
        prefix = hdr[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode("utf-8", "surrogateescape")


def _key_of(name: str) -> str:
    head, _, base = name.rpartition("/")
    key = base.split(".", 1)[0]
    return f"{head}/{key}" if head else key


def _not_regular(typeflag: bytes, size: int, name: str, shard: str, pos: int) -> ShardFormatError | None:
    """The error for a member that is not a regular file, or ``None`` when it can be passed over: one that carries
    no data and could belong to no sample (a directory entry such as ``./`` or ``dir/`` made by ``tar``, a volume
    label, or a link or device whose name has no extension, which webdataset would not read as a sample member
    either)."""
    if size == 0 and (typeflag in _IGNORABLE or _SAMPLE_NAME.match(name) is None):
        return None
    kind = _KINDS.get(typeflag, f"member of unknown type {typeflag!r}")
    return ShardFormatError(
        f"tar member {name[:200]!r} at byte {pos} is a {kind} (typeflag {typeflag!r}), not a regular file: its "
        f"data cannot be read as a sample; {_FIX} (dereference links: tar --dereference --hard-dereference)",
        shard=shard,
        key=_key_of(name),
        offset=pos,
    )


def _long_name(payload: bytes, shard: str, pos: int) -> str:
    """The name a GNU long-name (``L``) header gives the next member; control characters mean it is corrupt (a
    header whose typeflag was damaged makes the next member's name out of its data)."""
    raw = payload.split(b"\0", 1)[0]
    if not raw or any(b < 0x20 or b == 0x7F for b in raw):
        raise ShardFormatError(
            f"the GNU long-name header at byte {pos} holds no valid name ({raw[:40]!r}); {_FIX}",
            shard=shard,
            offset=pos,
        )
    return raw.decode("utf-8", "surrogateescape")


def _link_target(name: str, shard: str, pos: int) -> ShardFormatError:
    err = _not_regular(b"K", 1, name, shard, pos)
    assert err is not None  # a member with data is never passed over
    return err


def _orphan_header(at: int, zero_at: int, shard: str) -> ShardFormatError:
    return ShardFormatError(
        f"the tar has a PAX or long-name header at byte {at} for no member (a zero block follows it at byte "
        f"{zero_at}); {_FIX}",
        shard=shard,
        offset=at,
    )


def _after_end(tail_nonzero: int, shard: str, eoa: int) -> ShardFormatError:
    return ShardFormatError(
        f"the tar has an end-of-archive marker (a zero block) at byte {eoa}, followed by more data at byte "
        f"{tail_nonzero}: a zeroed header, or shards concatenated; the members after it would be lost; {_FIX}",
        shard=shard,
        offset=eoa,
    )


def _first_nonzero(buf: Sliceable, start: int, stop: int) -> int:
    """The offset of the first non-zero byte of ``buf[start:stop]``, or -1 (read in 1 MiB pieces)."""
    step = 1 << 20
    for lo in range(start, stop, step):
        piece = bytes(buf[lo : min(stop, lo + step)])
        stripped = piece.lstrip(b"\0")
        if stripped:
            return lo + len(piece) - len(stripped)
    return -1


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
            if end is not None and pos >= end:
                return
            raise ShardFormatError(
                f"tar ends at byte {pos} without an end-of-archive marker: the shard is truncated "
                "(re-write or re-download it)",
                shard=shard,
                offset=pos,
            )
        if pos + BLOCK > total:
            raise ShardFormatError(
                f"tar header at byte {pos} is cut off ({total - pos} of 512 bytes): the shard is truncated",
                shard=shard,
                offset=pos,
            )
        hdr = bytes(buf[pos : pos + BLOCK])
        if hdr == ZERO_BLOCK:
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
            return
        _check_checksum(hdr, shard, pos)
        size = _octal(hdr[124:136], "size", shard, pos)
        typeflag = hdr[156:157]
        data_offset = pos + BLOCK
        if "size" in pax:
            size = int(pax["size"])  # digits only (checked by _parse_pax)
        next_pos = data_offset + ((size + BLOCK - 1) // BLOCK) * BLOCK
        if data_offset + size > total:
            name = pax.get("path") or long_name or _name_of(hdr)
            raise ShardFormatError(
                f"tar member {name[:200]!r} at byte {pos} declares {size} bytes but the shard ends after "
                f"{total - data_offset}: the shard is truncated (re-write or re-download it)",
                shard=shard,
                key=_key_of(name),
                offset=pos,
            )
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
            if pax or long_name:
                raise _orphan_header(first_header, pos, shard)
            at = pos + BLOCK
            while chunk := fileobj.read(1 << 20):
                rest = chunk.lstrip(b"\0")
                if rest:
                    raise _after_end(at + len(chunk) - len(rest), shard, pos)
                at += len(chunk)
            return
        _check_checksum(hdr, shard, pos)
        size = _octal(hdr[124:136], "size", shard, pos)
        if "size" in pax:
            size = int(pax["size"])  # digits only (checked by _parse_pax)
        padded = ((size + BLOCK - 1) // BLOCK) * BLOCK
        data = _read_exact(fileobj, padded)
        if len(data) < size:
            name = pax.get("path") or long_name or _name_of(hdr)
            raise ShardFormatError(
                f"tar member {name[:200]!r} at byte {pos} declares {size} bytes but the stream ended after "
                f"{len(data)}: the shard is truncated",
                shard=shard,
                key=_key_of(name),
                offset=pos,
            )
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


# ----------------------------------------------------------------------------------------------------------------
# writing


def ustar_header(name: str, size: int, mtime: int = 0, mode: int = 0o644) -> bytes:
    """A ustar header for a regular file (no PAX). Names longer than 100 bytes use the ustar prefix field.

    Example:
        >>> h = ustar_header("k.msgpack", 5)
        >>> len(h), h[257:263]
        (512, b'ustar\\x00')
    """
    raw = name.encode("utf-8")
    prefix = b""
    if len(raw) > 100:
        cut = raw.rfind(b"/", 0, 156)
        if cut <= 0 or len(raw) - cut - 1 > 100:
            raise ValueError(f"tar member name too long for ustar (max 100 bytes, or 255 with a '/'): {name!r}")
        prefix, raw = raw[:cut], raw[cut + 1 :]
    if size >= 8**11:
        raise ValueError(f"member {name!r} of {size} bytes is too large for a ustar header (max 8 GiB)")
    hdr = struct.pack(
        "100s8s8s8s12s12s8sc100s6s2s32s32s8s8s155s12x",
        raw,
        b"%07o\0" % mode,
        b"0000000\0",
        b"0000000\0",
        b"%011o\0" % size,
        b"%011o\0" % mtime,
        b" " * 8,
        b"0",
        b"",
        b"ustar\0",
        b"00",
        b"",
        b"",
        b"0000000\0",
        b"0000000\0",
        prefix,
    )
    chksum = sum(hdr)
    return hdr[:148] + b"%06o\0 " % chksum + hdr[156:]


def member_bytes(name: str, data: bytes, mtime: int = 0) -> bytes:
    """Header + data + zero padding to the next 512-byte boundary."""
    pad = (-len(data)) % BLOCK
    return b"".join((ustar_header(name, len(data), mtime), data, bytes(pad)))


def end_of_archive(position: int) -> bytes:
    """Two zero blocks, then zero padding to a multiple of the 10240-byte record size (as tarfile writes)."""
    end = position + 2 * BLOCK
    return bytes(2 * BLOCK + (-end) % RECORD)


def verify_headers(buf: bytes | memoryview, header_offsets: list[int], sizes: list[int], shard: str) -> None:
    """Check, for a whole shard at once, that a regular-file header with a valid checksum and the expected size
    sits at each offset (vectorized; used when an index sidecar lets readers skip per-sample header parsing).

    Raises:
        ShardFormatError: naming the first bad header's offset.
    """
    import numpy as np

    n = len(header_offsets)
    if n == 0:
        return
    arr = np.frombuffer(buf, dtype=np.uint8)
    try:
        offs = np.asarray(header_offsets, dtype=np.int64)
        expected = np.asarray(sizes, dtype=np.int64)
    except (OverflowError, TypeError, ValueError):
        offs = expected = np.full(1, -1, dtype=np.int64)
    if (
        offs.shape != (n,)
        or expected.shape != (n,)
        or min(int(offs.min()), int(expected.min())) < 0
        or max(int(offs.max()), int(expected.max())) > MAX_OFFSET
    ):
        raise ShardFormatError(
            "the index sidecar locates samples at invalid offsets or sizes (negative, or not integers): the "
            "sidecar is corrupt; delete it or rebuild it with atd.build_index()",
            shard=shard,
        )
    if int(offs.max()) + BLOCK > len(arr) or int((offs + BLOCK + expected).max()) > len(arr):
        bad_at = int(offs[np.argmax((offs + BLOCK + expected) > len(arr))])
        raise ShardFormatError(
            "a sample lies past the end of the shard: the shard is truncated (re-write or re-download it)",
            shard=shard,
            offset=bad_at,
        )
    weights_ck = 8 ** np.arange(5, -1, -1, dtype=np.int64)
    weights_sz = 8 ** np.arange(10, -1, -1, dtype=np.int64)
    step = 8192
    for lo in range(0, n, step):
        o = offs[lo : lo + step]
        if len(o) > 1 and np.all(np.diff(o) == o[1] - o[0]) and o[1] > o[0]:
            rows = np.lib.stride_tricks.as_strided(
                arr[int(o[0]) :],
                shape=(len(o), BLOCK),
                strides=(int(o[1] - o[0]), 1),
                writeable=False,
            )
        else:
            rows = arr[o[:, None] + np.arange(BLOCK)]
        total = rows.sum(axis=1, dtype=np.int64) - rows[:, 148:156].sum(axis=1, dtype=np.int64) + 8 * 32
        ck = rows[:, 148:154].astype(np.int64) - 48
        sz = rows[:, 124:135].astype(np.int64) - 48
        fine = (
            ((ck >= 0) & (ck <= 7)).all(axis=1)
            & ((sz >= 0) & (sz <= 7)).all(axis=1)
            & (ck @ weights_ck == total)
            & (sz @ weights_sz == expected[lo : lo + step])
            & np.isin(rows[:, 156], (ord("0"), 0, ord("7")))
        )
        for i in np.flatnonzero(~fine).tolist():
            # Slow path: other number formats are legal; check them one by one, and raise on a real problem.
            at = int(o[i])
            hdr = bytes(buf[at : at + BLOCK])
            _check_checksum(hdr, shard, at)
            if _octal(hdr[124:136], "size", shard, at) != int(expected[lo + i]) or hdr[156:157] not in (
                b"0",
                b"\0",
                b"7",
            ):
                raise ShardFormatError(
                    "the tar header does not match the index sidecar (stale sidecar or a replaced shard); "
                    "rebuild it with atd.build_index()",
                    shard=shard,
                    offset=at,
                )
