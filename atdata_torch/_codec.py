"""The one place where bytes become samples and samples become bytes.

Wire format (``../shared/docs/format.md``): a sample is ``msgpack.packb({field: value})`` with msgpack-python
defaults; an NDArray value is a ``bin`` holding the "ndarray-bytes 1.0.0" encoding::

    u8 L | L bytes dtype.str (ASCII) | u8 ndim | ndim x int64 LE shape | raw C-order data

Readers also accept a full ``.npy`` file in place of ndarray-bytes (loaded with ``allow_pickle=False``).
"""

from __future__ import annotations

import dataclasses
import json
import re
import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np

from .errors import DecodeError, SchemaError

if TYPE_CHECKING:
    from .schema import FieldSpec

NPY_MAGIC = b"\x93NUMPY"
Buffer = bytes | bytearray | memoryview

# --------------------------------------------------------------------------------------------------------------
# ndarray-bytes


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
    inner = body[1:-1]
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


# --------------------------------------------------------------------------------------------------------------
# msgpack


def _default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        raise SchemaError(
            "an ndarray nested inside a list or dict cannot be encoded: only top-level NDArray fields are; "
            "stack the arrays into one NDArray field"
        )
    raise TypeError(f"cannot encode a value of type {type(obj).__name__}")


_packer_default = _default


SKIM_THRESHOLD = 32 * 1024
"""Payloads at least this large are decoded by :func:`skim_map`: their ``bin`` values stay views (no copy)."""

_FIXED_SIZES = {
    0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,
    0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8, 0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17,
}  # fmt: skip
_LEN_PREFIX = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}  # bin8/16/32, str8/16/32
_EXT_PREFIX = {0xC7: 1, 0xC8: 2, 0xC9: 4}


def _skip(buf: memoryview, pos: int) -> int:
    """The position just after the msgpack object starting at ``pos`` (iterative: no recursion on nesting).

    Every object read moves ``pos`` forward, so a lying length or count ends in an ``IndexError`` at the end
    of ``buf`` (or a position past it, which callers check), never in a loop.
    """
    b = buf[pos]  # scalars (keys, most values) first, as cheaply as possible
    if b <= 0x7F or b >= 0xE0:
        return pos + 1
    if 0xA0 <= b <= 0xBF:
        return pos + 1 + (b & 0x1F)
    if b in _LEN_PREFIX:
        w = _LEN_PREFIX[b]
        return pos + 1 + w + int.from_bytes(buf[pos + 1 : pos + 1 + w], "big")
    if b in _FIXED_SIZES:
        return pos + 1 + _FIXED_SIZES[b]
    todo = 1
    while todo:
        todo -= 1
        b = buf[pos]
        if b <= 0x7F or b >= 0xE0:
            pos += 1
        elif 0xA0 <= b <= 0xBF:
            pos += 1 + (b & 0x1F)
        elif 0x80 <= b <= 0x9F:
            todo += (b & 0x0F) * (2 if b <= 0x8F else 1)
            pos += 1
        elif b in _FIXED_SIZES:
            pos += 1 + _FIXED_SIZES[b]
        elif b in _LEN_PREFIX:
            w = _LEN_PREFIX[b]
            pos += 1 + w + int.from_bytes(buf[pos + 1 : pos + 1 + w], "big")
        elif b in _EXT_PREFIX:
            w = _EXT_PREFIX[b]
            pos += 2 + w + int.from_bytes(buf[pos + 1 : pos + 1 + w], "big")
        elif b in (0xDC, 0xDD, 0xDE, 0xDF):
            w = 2 if b in (0xDC, 0xDE) else 4
            todo += int.from_bytes(buf[pos + 1 : pos + 1 + w], "big") * (2 if b >= 0xDE else 1)
            pos += 1 + w
        else:
            raise ValueError(f"invalid msgpack type byte 0x{b:02x}")
    return pos


def map_header(view: memoryview) -> tuple[int, int] | None:
    """A msgpack map's number of entries and the position of its first key; ``None`` when ``view`` is no map."""
    b = view[0]
    if 0x80 <= b <= 0x8F:
        return b & 0x0F, 1
    if b == 0xDE:
        return int.from_bytes(view[1:3], "big"), 3
    if b == 0xDF:
        return int.from_bytes(view[1:5], "big"), 5
    return None


def pack_map_header(n: int) -> bytes:
    """The msgpack header of a map of ``n`` entries (the inverse of :func:`map_header`)."""
    if n < 16:
        return bytes([0x80 | n])
    return b"\xde" + n.to_bytes(2, "big") if n < 1 << 16 else b"\xdf" + n.to_bytes(4, "big")


def bin_span(view: memoryview, pos: int) -> tuple[int, int] | None:
    """Where the data of the ``bin`` value at ``pos`` lies, ``(start, end)``; ``None`` when it is no ``bin``."""
    t = view[pos]
    if t not in (0xC4, 0xC5, 0xC6):
        return None
    start = pos + 1 + _LEN_PREFIX[t]
    return start, start + int.from_bytes(view[pos + 1 : start], "big")


def _refuse_ext(code: int, data: bytes) -> Any:
    """msgpack ``ext_hook``: ext types are no part of the sample format (msgpack-python defaults write none)."""
    raise DecodeError(
        f"payload holds a msgpack ext value (type code {code}, {len(data)} bytes), which the atdata format never "
        "writes; the payload is corrupt or from another writer"
    )


def skim_map(payload: Buffer) -> dict[str, Any]:
    """Decode a msgpack map whose top-level ``bin`` values are returned as zero-copy memoryviews.

    Used for large payloads, so that an array's bytes are copied once (into its batch or sample array)
    instead of three times. Everything else is decoded by msgpack.

    Raises:
        DecodeError: when the payload is not msgpack, not a map, has a key that is not a str, or a value that
            runs past its end.
    """
    view = memoryview(payload)
    try:
        head = map_header(view) if len(view) else None
        if head is None:
            return unpack_map(payload, skim=False)  # not a map: let msgpack produce the precise error
        n, pos = head
        out: dict[str, Any] = {}
        unpackb = msgpack.unpackb
        for _ in range(n):
            end = _skip(view, pos)
            key = unpackb(view[pos:end], ext_hook=_refuse_ext)
            if key.__class__ is not str:
                raise DecodeError(_bad_key_message([key]))
            pos = end
            span = bin_span(view, pos)
            if span is not None:
                start, end = span
                if end > len(view):
                    raise ValueError(f"the bin value of {key[:40]!r} runs past the end of the payload")
                out[key] = view[start:end]
            else:
                end = _skip(view, pos)
                out[key] = unpackb(view[pos:end], ext_hook=_refuse_ext)
            pos = end
        if pos != len(view):
            raise ValueError(f"{len(view) - pos} extra bytes after the map")
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"payload is not valid msgpack ({type(exc).__name__}: {exc})") from exc
    return out


def _bad_key_message(keys: list[Any]) -> str:
    shown = ", ".join(f"{k!r:.40} ({type(k).__name__})" for k in keys[:5])
    return (
        f"payload map has keys that are not str: {shown}; sample field names must be str (msgpack str), so the "
        "payload is corrupt or was written by another tool"
    )


def unpack_map(payload: Buffer, *, skim: bool = True) -> dict[str, Any]:
    """Decode one msgpack payload that must be a map (large payloads through :func:`skim_map`).

    Keys that are not ``str`` are refused by :func:`skim_map` and :func:`decode_untyped_map`; a typed read
    (:func:`build_sample`) names them when they could hide a field.

    Raises:
        DecodeError: when the payload is not msgpack or not a map, or holds an ext value.
    """
    if skim and len(payload) >= SKIM_THRESHOLD and _is_map(payload):
        return skim_map(payload)
    try:
        obj = msgpack.unpackb(payload, ext_hook=_refuse_ext)
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types (ExtraData, ValueError, ...)
        if "is not allowed for map key" in str(exc):  # msgpack's strict_map_key: an int, float, nil ... key
            raise DecodeError(
                f"payload map has a key that is not str ({exc}); sample field names must be str (msgpack str), "
                "so the payload is corrupt or was written by another tool"
            ) from exc
        raise DecodeError(f"payload is not valid msgpack ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise DecodeError(f"payload is msgpack but not a map (found {type(obj).__name__}); expected a sample map")
    return obj


def _wire_value(spec: FieldSpec, value: Any, cls_name: str) -> Any:
    if value is None:
        if not spec.optional:
            raise SchemaError(
                f"field {spec.name!r} of {cls_name} is None but not Optional; annotate it `... | None` or give "
                "it a value",
                field=spec.name,
            )
        return None
    if spec.kind == "ndarray":
        if not isinstance(value, np.ndarray):
            raise SchemaError(
                f"field {spec.name!r} of {cls_name} is annotated NDArray but holds {type(value).__name__}; "
                "wrap it with np.asarray(...)",
                field=spec.name,
            )
        if spec.dtype is not None and value.dtype.newbyteorder("=") != spec.dtype.newbyteorder("="):
            raise SchemaError(
                f"field {spec.name!r} of {cls_name} expects dtype {spec.dtype} but holds {value.dtype}; "
                f"convert with .astype(np.{spec.dtype.name})",
                field=spec.name,
            )
        try:
            return array_to_bytes(value)
        except SchemaError as exc:
            raise SchemaError(f"field {spec.name!r} of {cls_name}: {exc.message}", field=spec.name) from exc
    if isinstance(value, np.generic):
        return value.item()
    return value


def pack_sample(sample: Any) -> bytes:
    """Encode a packable sample into its msgpack payload (byte-compatible with the original atdata)."""
    cls = type(sample)
    d = {spec.name: _wire_value(spec, getattr(sample, spec.name), cls.__name__) for spec in cls.__atdata_fields__}
    return _packb(d, cls.__name__)


def pack_mapping(data: Mapping[str, Any]) -> bytes:
    """Encode a mapping (a DictSample's fields); top-level arrays become ndarray-bytes."""
    d = {
        k: array_to_bytes(v) if isinstance(v, np.ndarray) else (v.item() if isinstance(v, np.generic) else v)
        for k, v in data.items()
    }
    return _packb(d, "DictSample")


def _packb(d: dict[str, Any], cls_name: str) -> bytes:
    try:
        return msgpack.packb(d, default=_packer_default)
    except (SchemaError, TypeError, ValueError, OverflowError) as exc:
        # Find the field to name it.
        for name, value in d.items():
            try:
                msgpack.packb(value, default=_packer_default)
            except (SchemaError, TypeError, ValueError, OverflowError) as inner:
                msg = inner.message if isinstance(inner, SchemaError) else str(inner)
                raise SchemaError(f"field {name!r} of {cls_name} cannot be encoded: {msg}", field=name) from exc
        raise SchemaError(f"{cls_name} cannot be encoded: {exc}") from exc


# --------------------------------------------------------------------------------------------------------------
# samples

_CLASS_CACHE: dict[type, tuple[tuple[Any, ...], dict[str, Any]]] = {}


def _class_plan(cls: type) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """(field specs, {name: zero-argument default maker}) of a packable class, cached."""
    plan = _CLASS_CACHE.get(cls)
    if plan is None:
        defaults: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                defaults[f.name] = (lambda v: lambda: v)(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                defaults[f.name] = f.default_factory
        plan = (cls.__atdata_fields__, defaults)  # type: ignore[attr-defined]
        _CLASS_CACHE[cls] = plan
    return plan


_PRIMITIVE_CHECK: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (float, int),
    "bool": (bool,),
    "bytes": (bytes, bytearray, memoryview),
    "list": (list, tuple),
    "dict": (dict,),
}


def _preview(value: Any) -> str:
    """A short repr of an untrusted value, without building the repr of a huge one."""
    if isinstance(value, (str, bytes, bytearray, memoryview, list, tuple)):
        head = value[:16]
        r = repr(bytes(head) if isinstance(head, memoryview) else head)
        return r[:40] + ("..." if len(r) > 40 or len(value) > 16 else "")
    if isinstance(value, dict):
        return f"a map of {len(value)} entries"
    return f"{value!r:.40}"


def convert_field(spec: FieldSpec, value: Any) -> Any:
    """Check and convert one decoded field value for a typed sample (arrays decoded, dtype checked).

    Raises:
        DecodeError: when the value does not fit the field (wrong type, bad array).
    """
    if value is None:
        if spec.optional or spec.has_default:
            return None
        raise DecodeError(f"required field {spec.name!r} is null", field=spec.name)
    kind = spec.kind
    if kind == "ndarray":
        if isinstance(value, np.ndarray):
            arr = value
        elif isinstance(value, (bytes, bytearray, memoryview)):
            try:
                arr = bytes_to_array(value)
            except DecodeError as exc:
                raise DecodeError(exc.message, field=spec.name) from exc
        else:
            raise DecodeError(
                f"field {spec.name!r} expects an NDArray (ndarray-bytes) but the payload holds {type(value).__name__}",
                field=spec.name,
            )
        if spec.dtype is not None and arr.dtype.newbyteorder("=") != spec.dtype.newbyteorder("="):
            raise DecodeError(
                f"field {spec.name!r} expects dtype {spec.dtype} but the payload holds {arr.dtype}; the shard "
                "was written with another schema (read it as DictSample, or fix the annotation)",
                field=spec.name,
            )
        return arr
    if kind == "any":
        return value
    ok = _PRIMITIVE_CHECK[kind]
    if not isinstance(value, ok) or (kind in ("int", "float") and isinstance(value, bool)):
        raise DecodeError(
            f"field {spec.name!r} expects {kind} but the payload holds {type(value).__name__} ({_preview(value)})",
            field=spec.name,
        )
    if kind == "float":
        return float(value)  # type: ignore[arg-type]
    if kind == "bytes" and not isinstance(value, bytes):
        return bytes(value)  # type: ignore[call-overload]
    return value


def _check_keys(data: Mapping[Any, Any]) -> None:
    bad = [k for k in data if k.__class__ is not str]
    if bad:
        raise DecodeError(_bad_key_message(bad))


def _missing_field_message(cls: type, name: str, data: Mapping[Any, Any]) -> str:
    keys = list(data)
    bad = [k for k in keys if k.__class__ is not str]
    present = sorted(k for k in keys if k.__class__ is str)
    more = f" (and {len(present) - 20} more)" if len(present) > 20 else ""
    msg = (
        f"{cls.__name__} needs field {name!r} but the sample has only {present[:20]}{more}; read it as "
        "DictSample, or give the field a default / make it `... | None`"
    )
    return f"{msg}; also, {_bad_key_message(bad)}" if bad else msg


def build_sample(cls: type, data: Mapping[str, Any]) -> Any:
    """Build an instance of packable ``cls`` from a decoded map (tolerates extra str keys).

    Raises:
        DecodeError: when a required field is missing, a value does not fit its field, or a field left to its
            default sits next to a key that is not a str (which may be the field, mis-encoded).
    """
    specs, defaults = _class_plan(cls)
    values: dict[str, Any] = {}
    for spec in specs:
        name = spec.name
        if name in data:
            values[name] = convert_field(spec, data[name])
            continue
        if name in defaults:
            values[name] = defaults[name]()
        elif spec.optional:
            values[name] = None
        else:
            raise DecodeError(_missing_field_message(cls, name, data), field=name)
        _check_keys(data)  # a field left to its default may hide behind a key that is not a str (b"label")
    if cls.__atdata_fast_init__:  # type: ignore[attr-defined]
        obj: Any = object.__new__(cls)
        obj.__dict__.update(values)
        return obj
    return cls(**values)


def decode_untyped_map(data: Mapping[str, Any]) -> dict[str, Any]:
    """Decode ndarray-bytes / ``.npy`` values of a schema-free map into arrays (writable).

    Only values that are valid encoded arrays as a whole are decoded; any other ``bin`` value (one that merely
    starts with the ``.npy`` magic, say) stays ``bytes``.

    Raises:
        DecodeError: when a key is not a str.
    """
    out: dict[str, Any] = {}
    for k, v in data.items():
        if k.__class__ is not str:
            raise DecodeError(_bad_key_message([k]))
        if isinstance(v, (bytes, bytearray, memoryview)) and is_array_bytes(v):
            out[k] = bytes_to_array(v)
        else:
            out[k] = bytes(v) if isinstance(v, memoryview) else v
    return out


# --------------------------------------------------------------------------------------------------------------
# webdataset members

_INT_EXTS = frozenset({"cls", "cls2", "class", "count", "index", "inx", "id"})
_TEXT_EXTS = frozenset({"txt", "text", "transcript"})
MSGPACK_EXTS = frozenset({"msgpack", "mp", "mpk"})


def decode_member(ext: str, data: Buffer) -> Any:
    """Decode one webdataset member by its (last) extension; unknown extensions stay ``bytes``.

    Example:
        >>> decode_member("cls", b"7"), decode_member("json", b'{"a": 1}')
        (7, {'a': 1})
    """
    last = ext.rsplit(".", 1)[-1]
    try:
        if last in MSGPACK_EXTS:
            if _is_map(data):
                return decode_untyped_map(unpack_map(data))
            return msgpack.unpackb(data, ext_hook=_refuse_ext)
        if last == "json":
            return json.loads(bytes(data))
        if last in _INT_EXTS:
            return int(bytes(data).strip())
        if last in _TEXT_EXTS:
            return bytes(data).decode("utf-8")
        if last == "npy":
            return load_npy(data)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"member .{ext} could not be decoded as {last} ({type(exc).__name__}: {exc})") from exc
    return bytes(data)


def _is_map(data: Buffer) -> bool:
    if not data:
        return False
    b = data[0]
    return 0x80 <= b <= 0x8F or b in (0xDE, 0xDF)


def field_name(ext: str) -> str:
    """The sample field a member extension maps to: ``image.npy`` -> ``image``; ``jpg`` -> ``jpg``."""
    if "." in ext:
        return ext.rsplit(".", 1)[0]
    return ext


def members_to_map(members: Mapping[str, Buffer]) -> dict[str, Any]:
    """Turn one tar sample (extension -> bytes) into a field map.

    A sample whose only member is ``.msgpack``/``.mp`` is an atdata sample: its map is the sample. Otherwise
    each member becomes a field (decoded by extension).
    """
    if len(members) == 1:
        ((ext, data),) = members.items()
        if ext in MSGPACK_EXTS:
            return unpack_map(data)
    out = {field_name(ext): decode_member(ext, data) for ext, data in members.items()}
    if len(out) != len(members):
        names = [field_name(e) for e in members]
        dup = sorted({n for n in names if names.count(n) > 1})[0]
        exts = sorted(e for e in members if field_name(e) == dup)
        raise DecodeError(
            f"the sample's members {exts} all map to field {dup!r}, so all but one would be lost; give each "
            "member its own name before the last extension",
            field=dup,
        )
    return out
