"""msgpack sample maps: decode (zero-copy for large payloads), walk without decoding, and encode.

A sample is ``msgpack.packb({field: value})`` with msgpack-python defaults (``../shared/docs/format.md``); its
NDArray values are ndarray-bytes (:mod:`._ndarray`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np

from ._ndarray import Buffer, array_to_bytes
from .errors import DecodeError, SchemaError

if TYPE_CHECKING:
    from .schema import FieldSpec


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


def _is_map(data: Buffer) -> bool:
    if not data:
        return False
    b = data[0]
    return 0x80 <= b <= 0x8F or b in (0xDE, 0xDF)
