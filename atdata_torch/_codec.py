"""The one place where bytes become samples and samples become bytes.

Wire format (``../shared/docs/format.md``): a sample is ``msgpack.packb({field: value})`` with msgpack-python
defaults; an NDArray value is a ``bin`` holding the "ndarray-bytes 1.0.0" encoding::

    u8 L | L bytes dtype.str (ASCII) | u8 ndim | ndim x int64 LE shape | raw C-order data

Readers also accept a full ``.npy`` file in place of ndarray-bytes (loaded with ``allow_pickle=False``).

This module builds typed samples and webdataset field maps; the array encodings live in :mod:`._ndarray` and the
msgpack map decode/encode in :mod:`._msgpack` (the names the read path uses from them are re-exported here).
"""

from __future__ import annotations

import dataclasses
import json
import reprlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np

# Re-exported (``X as X``): the decoder and ``schema`` use them as ``_codec.<name>``.
from ._msgpack import SKIM_THRESHOLD as SKIM_THRESHOLD
from ._msgpack import _bad_key_message, _is_map, _refuse_ext
from ._msgpack import pack_mapping as pack_mapping
from ._msgpack import pack_sample as pack_sample
from ._msgpack import skim_map as skim_map
from ._msgpack import unpack_map as unpack_map
from ._ndarray import Buffer, bytes_to_array, is_array_bytes, load_npy
from ._ndarray import parse_array_header as parse_array_header
from .errors import DecodeError

if TYPE_CHECKING:
    from .schema import FieldSpec

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


_REPR = reprlib.Repr()  # (keyword arguments need Python 3.12)
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 40, 40


def _preview(value: Any) -> str:
    """A short repr of an untrusted value, without building the repr of a huge one."""
    if isinstance(value, (str, bytes, bytearray, memoryview, list, tuple)):
        head = value[:16]
        r = _REPR.repr(bytes(head) if isinstance(head, memoryview) else head)  # nesting cut short: no recursion
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
