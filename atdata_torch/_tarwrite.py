"""Writing tar shards: ustar headers, member padding and the end-of-archive marker.

Headers are plain ustar with an integer mtime and no PAX header, which every tar reader accepts.
"""

from __future__ import annotations

import struct

from ._tarheader import BLOCK, RECORD


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
