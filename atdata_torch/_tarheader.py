"""POSIX tar headers: the fields, PAX records and names a walker reads, and the errors it raises.

Reads ustar, GNU and PAX headers (``x`` and ``g`` headers, a ``path=``/``size=`` in a PAX header, GNU ``L`` long
names). Every structural problem raises :class:`~atdata_torch.errors.ShardFormatError` naming the shard and byte
offset. The walkers over a buffer or a stream are in :mod:`._tar`, the writing side in :mod:`._tarwrite`.
"""

from __future__ import annotations

import re
import zlib
from typing import NamedTuple, Protocol

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


def verify_headers(buf: bytes | memoryview, header_offsets: list[int], sizes: list[int], shard: str) -> None:
    """Check, for a whole shard at once, that a regular-file header with a valid checksum and the expected size
    sits at each offset (vectorized; used when an index sidecar lets readers skip per-sample header parsing).

    Raises:
        ShardFormatError: naming the first bad header's offset.
    """

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
