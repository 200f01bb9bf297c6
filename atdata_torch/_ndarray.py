"""ndarray-bytes and ``.npy``: the array encodings of a sample's NDArray fields, parsed before numpy sees them.

Wire format (``../shared/docs/format.md``): an NDArray value is a ``bin`` holding the "ndarray-bytes 1.0.0"
encoding::

    u8 L | L bytes dtype.str (ASCII) | u8 ndim | ndim x int64 LE shape | raw C-order data

Readers also accept a full ``.npy`` file in place of ndarray-bytes (loaded with ``allow_pickle=False``). Every
header is checked against a closed grammar (dtype, dims, data length) before anything is allocated.
"""

from __future__ import annotations

import re
import struct
from typing import Any

import numpy as np

from .errors import DecodeError, SchemaError

NPY_MAGIC = b"\x93NUMPY"
Buffer = bytes | bytearray | memoryview


def array_to_bytes(x: np.ndarray[Any, Any]) -> bytes:
    """Encode an array as ndarray-bytes (C order, the byte order its dtype names).

    Example:
        >>> import numpy as np
        >>> array_to_bytes(np.zeros(2, np.uint8)).hex()
        '037c75310102000000000000000000'
    """
    dt = x.dtype
    if dt.hasobject:
        raise SchemaError("object-dtype arrays cannot be encoded (they would need pickle); use a concrete dtype")
    if dt.names is not None or dt.subdtype is not None or dt.kind == "V":
        raise SchemaError(
            f"arrays of dtype {dt} cannot be encoded as ndarray-bytes (structured/void dtypes lose their "
            "field layout); store each field as its own NDArray"
        )
    ds = dt.str.encode("ascii")
    return b"".join(
        (
            struct.pack(f"<B{len(ds)}sB{x.ndim}q", len(ds), ds, x.ndim, *x.shape),
            x.tobytes(order="C"),
        )
    )


_MAX_DIMS = 64 if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else 32
"""The most dimensions an array may have (numpy's limit: 64 since numpy 2, 32 before)."""

_MAX_NBYTES = (1 << 63) - 1
"""numpy's largest array (``intp``): also the bound of ``itemsize * product(shape)`` with zero dims counted as 1."""

# The closed grammar of a dtype string: byte order, then a sized kind or a one-letter type code, or a datetime
# with its unit. Nothing else (subarrays "(2,)<f4", structured "f4,i4", object "O", string "T", Python code ...)
# ever reaches ``np.dtype``.
_DTYPE_RE = re.compile(
    r"[<>|=]?(?:[biufcSUV][0-9]{1,9}|[?bBhHiIlLqQpPefdgFDG]|[mM]8(?:\[[0-9]{0,9}(?:Y|M|W|D|h|m|s|ms|us|ns|ps|fs|as)\])?)"
)
_DTYPE_CACHE: dict[str, np.dtype[Any]] = {}


def parse_dtype(text: str, what: str = "ndarray-bytes value") -> np.dtype[Any]:
    """The plain dtype a dtype string names, checked against a closed grammar before numpy sees it.

    Accepted: a byte-order character and a kind with its size (``<f4``, ``|u1``, ``<U8``, ``|S3``), a one-letter
    type code (``f``, ``?``), or a datetime / timedelta with its unit (``<M8[ns]``). Refused: object, structured,
    subarray and variable-width string dtypes, and anything else.

    Raises:
        DecodeError: naming the string found.

    Example:
        >>> parse_dtype(">i2").str
        '>i2'
    """
    dt = _DTYPE_CACHE.get(text)
    if dt is not None:
        return dt
    shown = f"{text[:40]!r}{'...' if len(text) > 40 else ''}"
    if _DTYPE_RE.fullmatch(text) is None:
        if "O" in text:
            why = "an object dtype, which is refused (it would need pickle); write the array with a concrete dtype"
        elif any(c in text for c in "(),[]:"):
            why = (
                "a structured or subarray dtype, which is refused; store each field as its own plain-dtype "
                "array (shape included in the array's shape)"
            )
        else:
            why = "no plain numpy dtype (expected e.g. '<f4', '|u1', '<U8', '<M8[ns]')"
        raise DecodeError(f"{what} names the dtype {shown}: {why}; the payload is corrupt or from another writer")
    try:
        dt = np.dtype(text)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DecodeError(
            f"{what} names the dtype {shown}, which numpy does not know ({exc}); the payload is corrupt"
        ) from exc
    if dt.hasobject or dt.names is not None or dt.subdtype is not None:  # the grammar excludes these; be sure
        raise DecodeError(f"{what} names the dtype {shown}, which is not a plain dtype; the payload is corrupt")
    if dt.itemsize == 0:  # "S0", "U0", "V0": numpy gives such arrays another itemsize, so sizes would not add up
        raise DecodeError(f"{what} names the unsized dtype {shown}; the payload is corrupt or from another writer")
    if len(_DTYPE_CACHE) > 1024:
        _DTYPE_CACHE.clear()
    _DTYPE_CACHE[text] = dt
    return dt


def check_shape(dtype: np.dtype[Any], shape: tuple[int, ...], what: str = "ndarray-bytes value") -> int:
    """The number of data bytes an array of ``dtype`` and ``shape`` needs, after checking ndim and every dim.

    Computed with Python ints, so no product can overflow; an array numpy could not even describe (more than
    ``2**63`` bytes with zero dims counted as 1) is refused.

    Raises:
        DecodeError: for too many dims, a negative dim, or an impossible size.
    """
    if len(shape) > _MAX_DIMS:
        raise DecodeError(
            f"{what} has {len(shape)} dimensions; numpy allows at most {_MAX_DIMS}: the payload is corrupt"
        )
    nbytes = dtype.itemsize
    virtual = max(nbytes, 1)
    for s in shape:
        if s < 0:
            raise DecodeError(f"{what} has a negative dimension in shape {shape}: the payload is corrupt")
        nbytes *= s
        virtual *= max(s, 1)
    if virtual > _MAX_NBYTES:
        raise DecodeError(
            f"{what} has shape {shape} of dtype {dtype.str}, larger than any array numpy can hold: the payload "
            "is corrupt"
        )
    return nbytes


# header bytes -> ((dtype, shape, data offset), data bytes needed)
_HEADER_CACHE: dict[bytes, tuple[tuple[np.dtype[Any], tuple[int, ...], int], int]] = {}


def parse_array_header(buf: Buffer) -> tuple[np.dtype[Any], tuple[int, ...], int]:
    """Parse an ndarray-bytes header: ``(dtype, shape, data_offset)``. Validates the data length.

    The dtype string must be a plain dtype (see :func:`parse_dtype`), the shape must have at most numpy's number
    of dims, none negative, and ``itemsize * product(shape)`` must equal the data bytes present; all of it is
    checked before numpy allocates anything. Each distinct header is parsed once (cached).

    Raises:
        DecodeError: when the buffer is too short, the dtype is not a plain dtype, the shape is impossible, or
            the length does not match.
    """
    n = len(buf)
    if n < 2:
        raise DecodeError(f"ndarray-bytes value too short ({n} bytes); expected at least 2")
    dlen = buf[0]
    if n < dlen + 2:
        raise DecodeError(f"ndarray-bytes value too short ({n} bytes) for a {dlen}-byte dtype string")
    ndim = buf[dlen + 1]
    hdr_len = dlen + 2 + 8 * ndim
    if n < hdr_len:
        raise DecodeError(f"ndarray-bytes value too short ({n} bytes) for a {ndim}-d shape")
    key = bytes(buf[:hdr_len])
    hit = _HEADER_CACHE.get(key)
    if hit is None:
        try:
            text = key[1 : 1 + dlen].decode("ascii")
        except UnicodeDecodeError as exc:
            raise DecodeError(
                f"ndarray-bytes value names a dtype that is not ASCII ({key[1 : 1 + dlen][:40]!r}); the payload "
                "is corrupt"
            ) from exc
        dtype = parse_dtype(text)
        shape: tuple[int, ...] = struct.unpack_from(f"<{ndim}q", key, dlen + 2)
        nbytes = check_shape(dtype, shape)
        if len(_HEADER_CACHE) > 4096:
            _HEADER_CACHE.clear()
        hit = ((dtype, shape, hdr_len), nbytes)
        _HEADER_CACHE[key] = hit
    parsed, expected = hit
    if n - hdr_len != expected:
        raise DecodeError(
            f"ndarray-bytes value holds {n - hdr_len} data bytes but dtype {parsed[0].str} and shape {parsed[1]} "
            f"need {expected}; the payload is truncated or corrupt"
        )
    return parsed


def bytes_to_array(buf: Buffer, *, writable: bool = True) -> np.ndarray[Any, Any]:
    """Decode ndarray-bytes (or a legacy ``.npy`` file) into an array.

    With ``writable=True`` (the default) the result owns writable memory (a copy when ``buf`` is read-only),
    so ``torch.from_numpy`` can share it without warnings.

    Raises:
        DecodeError: when the header lies (see :func:`parse_array_header`, :func:`parse_npy_header`).

    Example:
        >>> import numpy as np
        >>> bytes_to_array(array_to_bytes(np.arange(3, dtype=">i2"))).dtype.str
        '>i2'
    """
    if buf[:6] == NPY_MAGIC:
        return load_npy(buf, writable=writable)
    dtype, shape, off = parse_array_header(buf)
    if dtype.itemsize:
        arr = np.frombuffer(buf, dtype=dtype, count=(len(buf) - off) // dtype.itemsize, offset=off).reshape(shape)
    else:
        arr = np.empty(shape, dtype)
    if writable and not arr.flags.writeable:
        arr = arr.copy()
    return arr


_NPY_ENTRY = re.compile(
    r"""\s*(?P<q>['"])(?P<key>[a-z_]{1,16})(?P=q)\s*:\s*"""
    r"""(?:(?P<sq>['"])(?P<descr>[^'"]{0,64})(?P=sq)|(?P<bool>True|False)|\((?P<shape>[0-9,\s]{0,2048})\))"""
    r"""\s*(?:,|(?=\}))"""
)
_NPY_CACHE: dict[bytes, tuple[np.dtype[Any], tuple[int, ...], bool, int, int]] = {}


def parse_npy_header(buf: Buffer) -> tuple[np.dtype[Any], tuple[int, ...], bool, int]:
    """Parse and check a ``.npy`` file's header: ``(dtype, shape, fortran_order, data_offset)``.

    The header dict is read by a small parser of its own (never ``eval`` / ``literal_eval``): exactly the keys
    ``descr`` (a plain dtype, see :func:`parse_dtype`), ``fortran_order`` and ``shape``; the data must be exactly
    the bytes the dtype and shape need. Object (pickled) and structured arrays are refused.

    Raises:
        DecodeError: naming what was found.
    """
    n = len(buf)
    if n < 10 or buf[:6] != NPY_MAGIC:
        raise DecodeError(f"value is not a .npy file ({n} bytes, no complete '\\x93NUMPY' header)")
    major = buf[6]
    if major == 1:
        start, hlen = 10, int.from_bytes(buf[8:10], "little")
    elif major in (2, 3):
        if n < 12:
            raise DecodeError(f".npy file too short ({n} bytes) for a version {major} header")
        start, hlen = 12, int.from_bytes(buf[8:12], "little")
    else:
        raise DecodeError(f".npy file has format version {major}.{buf[7]}; expected 1.0, 2.0 or 3.0")
    off = start + hlen
    if n < off:
        raise DecodeError(f".npy file too short ({n} bytes) for its {hlen}-byte header")
    key = bytes(buf[:off])
    hit = _NPY_CACHE.get(key)
    if hit is None:
        hit = _parse_npy_dict(key[start:off].decode("latin-1"), off)
        if len(_NPY_CACHE) > 1024:
            _NPY_CACHE.clear()
        _NPY_CACHE[key] = hit
    dtype, shape, fortran, off, expected = hit
    if n - off != expected:
        raise DecodeError(
            f".npy file holds {n - off} data bytes but dtype {dtype.str} and shape {shape} need {expected}; "
            "the file is truncated or corrupt"
        )
    return dtype, shape, fortran, off


def _parse_npy_dict(text: str, off: int) -> tuple[np.dtype[Any], tuple[int, ...], bool, int, int]:
    body = text.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise DecodeError(f".npy header is not a dict literal ({body[:60]!r}); the file is corrupt")
    entries = _npy_entries(body[1:-1])
    if set(entries) != {"descr", "fortran_order", "shape"}:
        raise DecodeError(
            f".npy header has the keys {sorted(entries)}; expected exactly 'descr', 'fortran_order' and 'shape'"
        )
    dtype = parse_dtype(entries["descr"], ".npy header")
    items = [s.strip() for s in entries["shape"].split(",")]
    if items and items[-1] == "":
        items.pop()  # "(3,)": the trailing comma
    if any(not s.isdigit() for s in items):
        raise DecodeError(f".npy header has the shape ({entries['shape'][:60]}), which is not a tuple of ints")
    shape = tuple(int(s) for s in items)
    return dtype, shape, entries["fortran_order"] == "True", off, check_shape(dtype, shape, ".npy header")


def _npy_entries(inner: str) -> dict[str, str]:
    """The ``key: value`` entries of a ``.npy`` header dict (``inner``: between its braces), each value as text."""
    closed = inner + "}"  # the lookahead of the last entry
    entries: dict[str, str] = {}
    pos = 0
    while pos < len(inner) and not inner[pos:].isspace():
        m = _NPY_ENTRY.match(closed, pos)
        if m is None:
            snippet = inner[pos : pos + 60]
            if "descr" in inner and ("[" in inner or "O" in inner):
                raise DecodeError(
                    f".npy header describes a structured or object array ({snippet!r}), which is refused (no "
                    "pickle); save each field as its own plain-dtype array"
                )
            raise DecodeError(f".npy header has an entry that is not understood ({snippet!r}); the file is corrupt")
        k = m.group("key")
        if k in entries:
            raise DecodeError(f".npy header names {k!r} twice; the file is corrupt")
        value = m.group("descr") if m.group("descr") is not None else m.group("bool") or m.group("shape")
        if (k == "descr") != (m.group("descr") is not None) or (k == "fortran_order") != (m.group("bool") is not None):
            raise DecodeError(f".npy header gives {k!r} a value of the wrong type ({m.group(0).strip()[:60]!r})")
        entries[k] = value if value is not None else ""
        pos = m.end()
    return entries


def load_npy(buf: Buffer, *, writable: bool = True) -> np.ndarray[Any, Any]:
    """Load a ``.npy`` file's bytes, checking its header first and refusing pickled (object) arrays.

    Never allocates more than the bytes present (the header's dtype and shape must account for exactly the data).

    Raises:
        DecodeError: when the header is not a valid plain-dtype ``.npy`` header or the data does not match it.
    """
    dtype, shape, fortran, off = parse_npy_header(buf)
    if dtype.itemsize == 0:
        arr = np.empty(shape, dtype, order="F" if fortran else "C")
    else:
        flat = np.frombuffer(buf, dtype=dtype, count=(len(buf) - off) // dtype.itemsize, offset=off)
        arr = flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)
    if writable and not arr.flags.writeable:
        arr = arr.copy(order="K")
    return arr


def is_array_bytes(buf: Buffer) -> bool:
    """Whether a ``bin`` value is an encoded array: a ``.npy`` file or ndarray-bytes, valid as a whole.

    A value that merely starts like one (the ``.npy`` magic, a plausible dtype-length byte) but does not parse,
    or whose length does not match its header, is no array.
    """
    n = len(buf)
    if n < 4:
        return False
    try:
        if buf[:6] == NPY_MAGIC:
            parse_npy_header(buf)
            return True
        dlen = buf[0]
        if not 2 <= dlen <= 32 or n < dlen + 2 or buf[1] not in b"<>|=":
            return False
        parse_array_header(buf)
    except DecodeError:
        return False
    return True
