"""The one place where bytes become samples and samples become bytes.

Wire format (``../shared/docs/format.md``): a sample is ``msgpack.packb({field: value})`` with msgpack-python
defaults; an NDArray value is a ``bin`` holding the "ndarray-bytes 1.0.0" encoding::

    u8 L | L bytes dtype.str (ASCII) | u8 ndim | ndim x int64 LE shape | raw C-order data

Readers also accept a full ``.npy`` file in place of ndarray-bytes (loaded with ``allow_pickle=False``).
"""

from __future__ import annotations

import dataclasses
import io
import json
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


_HEADER_CACHE: dict[bytes, tuple[np.dtype[Any], tuple[int, ...], int]] = {}


def parse_array_header(buf: Buffer) -> tuple[np.dtype[Any], tuple[int, ...], int]:
    """Parse an ndarray-bytes header: ``(dtype, shape, data_offset)``. Validates the data length.

    Raises:
        DecodeError: when the buffer is too short, the dtype is unknown, or the length does not match.
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
            dtype = np.dtype(key[1 : 1 + dlen].decode("ascii"))
        except (TypeError, ValueError, UnicodeDecodeError) as exc:
            raise DecodeError(f"ndarray-bytes value names an unknown dtype {key[1 : 1 + dlen]!r}") from exc
        if dtype.hasobject:
            raise DecodeError("ndarray-bytes value has an object dtype, which is refused (no pickle)")
        shape = struct.unpack_from(f"<{ndim}q", key, dlen + 2)
        if any(s < 0 for s in shape):
            raise DecodeError(f"ndarray-bytes value has a negative dimension in shape {shape}")
        if len(_HEADER_CACHE) > 4096:
            _HEADER_CACHE.clear()
        hit = (dtype, shape, hdr_len)
        _HEADER_CACHE[key] = hit
    dtype, shape, hdr_len = hit
    expected = dtype.itemsize
    for s in shape:
        expected *= s
    if n - hdr_len != expected:
        raise DecodeError(
            f"ndarray-bytes value holds {n - hdr_len} data bytes but dtype {dtype.str} and shape {shape} "
            f"need {expected}; the payload is truncated or corrupt"
        )
    return hit


def bytes_to_array(buf: Buffer, *, writable: bool = True) -> np.ndarray[Any, Any]:
    """Decode ndarray-bytes (or a legacy ``.npy`` file) into an array.

    With ``writable=True`` (the default) the result owns writable memory (a copy when ``buf`` is read-only),
    so ``torch.from_numpy`` can share it without warnings.

    Example:
        >>> import numpy as np
        >>> bytes_to_array(array_to_bytes(np.arange(3, dtype=">i2"))).dtype.str
        '>i2'
    """
    if bytes(buf[:6]) == NPY_MAGIC:
        return load_npy(buf)
    dtype, shape, off = parse_array_header(buf)
    arr = np.frombuffer(buf, dtype=dtype, offset=off).reshape(shape) if dtype.itemsize else np.empty(shape, dtype)
    if writable and not arr.flags.writeable:
        arr = arr.copy()
    return arr


def load_npy(buf: Buffer) -> np.ndarray[Any, Any]:
    """Load a ``.npy`` file's bytes, refusing pickled (object) arrays."""
    try:
        return np.load(io.BytesIO(bytes(buf)), allow_pickle=False)  # type: ignore[no-any-return]
    except ValueError as exc:
        raise DecodeError(f"invalid .npy array ({exc})") from exc


def is_array_bytes(buf: Buffer) -> bool:
    """Whether a ``bin`` value is (very probably) an encoded array: ``.npy`` or a length-consistent ndarray-bytes."""
    n = len(buf)
    if n >= 6 and bytes(buf[:6]) == NPY_MAGIC:
        return True
    if n < 4:
        return False
    dlen = buf[0]
    if not 2 <= dlen <= 32 or n < dlen + 2 or buf[1] not in b"<>|=":
        return False
    try:
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
    """The position just after the msgpack object starting at ``pos``."""
    b = buf[pos]
    if b <= 0x7F or b >= 0xE0:
        return pos + 1
    if 0xA0 <= b <= 0xBF:
        return pos + 1 + (b & 0x1F)
    if 0x80 <= b <= 0x9F:
        n = (b & 0x0F) * (2 if b <= 0x8F else 1)
        pos += 1
    elif b in _FIXED_SIZES:
        return pos + 1 + _FIXED_SIZES[b]
    elif b in _LEN_PREFIX:
        w = _LEN_PREFIX[b]
        return pos + 1 + w + int.from_bytes(buf[pos + 1 : pos + 1 + w], "big")
    elif b in _EXT_PREFIX:
        w = _EXT_PREFIX[b]
        return pos + 2 + w + int.from_bytes(buf[pos + 1 : pos + 1 + w], "big")
    elif b in (0xDC, 0xDD, 0xDE, 0xDF):
        w = 2 if b in (0xDC, 0xDE) else 4
        n = int.from_bytes(buf[pos + 1 : pos + 1 + w], "big") * (2 if b >= 0xDE else 1)
        pos += 1 + w
    else:
        raise ValueError(f"invalid msgpack type byte 0x{b:02x}")
    for _ in range(n):
        pos = _skip(buf, pos)
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


def skim_map(payload: Buffer) -> dict[str, Any]:
    """Decode a msgpack map whose top-level ``bin`` values are returned as zero-copy memoryviews.

    Used for large payloads, so that an array's bytes are copied once (into its batch or sample array)
    instead of three times. Everything else is decoded by msgpack.
    """
    view = memoryview(payload)
    try:
        head = map_header(view)
        if head is None:
            return unpack_map(payload)  # not a map: let msgpack produce the precise error
        n, pos = head
        out: dict[str, Any] = {}
        unpackb = msgpack.unpackb
        for _ in range(n):
            end = _skip(view, pos)
            key = unpackb(view[pos:end])
            pos = end
            span = bin_span(view, pos)
            if span is not None:
                start, end = span
                if end > len(view):
                    raise ValueError("bin value runs past the end of the payload")
                out[key] = view[start:end]
            else:
                end = _skip(view, pos)
                out[key] = unpackb(view[pos:end])
            pos = end
        if pos != len(view):
            raise ValueError(f"{len(view) - pos} extra bytes after the map")
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"payload is not valid msgpack ({type(exc).__name__}: {exc})") from exc
    return out


def unpack_map(payload: Buffer) -> dict[str, Any]:
    """Decode one msgpack payload that must be a map (large payloads through :func:`skim_map`).

    Raises:
        DecodeError: when the payload is not msgpack or not a map.
    """
    if len(payload) >= SKIM_THRESHOLD and _is_map(payload):
        return skim_map(payload)
    try:
        obj = msgpack.unpackb(payload)
    except Exception as exc:  # msgpack raises several unrelated types (ExtraData, ValueError, ...)
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


def convert_field(spec: FieldSpec, value: Any) -> Any:
    """Check and convert one decoded field value for a typed sample (arrays decoded, dtype checked)."""
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
            f"field {spec.name!r} expects {kind} but the payload holds {type(value).__name__} ({value!r:.40})",
            field=spec.name,
        )
    if kind == "float":
        return float(value)  # type: ignore[arg-type]
    if kind == "bytes" and not isinstance(value, bytes):
        return bytes(value)  # type: ignore[call-overload]
    return value


def build_sample(cls: type, data: Mapping[str, Any]) -> Any:
    """Build an instance of packable ``cls`` from a decoded map (tolerates extra keys)."""
    specs, defaults = _class_plan(cls)
    values: dict[str, Any] = {}
    for spec in specs:
        name = spec.name
        if name in data:
            values[name] = convert_field(spec, data[name])
        elif name in defaults:
            values[name] = defaults[name]()
        elif spec.optional:
            values[name] = None
        else:
            present = sorted(data)
            raise DecodeError(
                f"{cls.__name__} needs field {name!r} but the sample has only {present}; read it as "
                "DictSample, or give the field a default / make it `... | None`",
                field=name,
            )
    if cls.__atdata_fast_init__:  # type: ignore[attr-defined]
        obj: Any = object.__new__(cls)
        obj.__dict__.update(values)
        return obj
    return cls(**values)


def decode_untyped_map(data: Mapping[str, Any]) -> dict[str, Any]:
    """Decode ndarray-bytes / ``.npy`` values of a schema-free map into arrays (writable)."""
    out: dict[str, Any] = {}
    for k, v in data.items():
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
            return decode_untyped_map(unpack_map(data)) if _is_map(data) else msgpack.unpackb(data)
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
    return {field_name(ext): decode_member(ext, data) for ext, data in members.items()}
