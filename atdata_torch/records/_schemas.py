"""Schema records in the original atdata's local JSON, and ``@packable`` types rebuilt from them.

A record looks like the original's::

    {"name": "ImageSample", "version": "1.0.0", "description": ..., "createdAt": ...,
     "fields": [{"name": "image", "optional": false,
                 "fieldType": {"$type": "local#ndarray", "dtype": "uint8", "shape": [28, 28],
                               "atdataTorch": {"dtype": "|u1", "dtypeDeclared": true}}},
                {"name": "label", "optional": false, "fieldType": {"$type": "local#primitive", "primitive": "str"}}]}

The ``atdataTorch`` object is an extension the original ignores: the exact numpy dtype, whether the class declares
it (``NDArray[np.uint8]``) or it was only seen in the data, and ``null`` when unknown (the original writes
``"float32"`` for every bare ``NDArray``, so a record without the extension that says ``"float32"`` is read as
"dtype unknown"). ``shape`` (the original's key) lists the dimensions seen in the data, ``null`` where they vary.
``dict`` and ``Any`` fields, which the original cannot describe, are written as ``local#dict`` / ``local#any``.

Example:
    >>> import atdata_torch as atd
    >>> @atd.packable
    ... class Tagged:
    ...     text: str
    ...     score: float | None = None
    >>> rec = build_schema_record(Tagged, version="1.0.0")
    >>> [f["fieldType"]["primitive"] for f in rec["fields"]], rec["fields"][1]["optional"]
    (['str', 'float'], True)
    >>> T = type_from_record(rec)
    >>> T(text="a").score is None, T.from_bytes(Tagged(text="a", score=0.5).packed).score
    (True, 0.5)
"""

from __future__ import annotations

import copyreg
import dataclasses
import datetime as _dt
import json
import keyword
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import SchemaError
from ..schema import FieldSpec, PackableSample, packable

__all__ = [
    "EXT",
    "FieldHint",
    "HintTracker",
    "build_schema_record",
    "class_signature",
    "parse_lens_ref",
    "parse_schema_ref",
    "record_fields",
    "record_signature",
    "schema_ref",
    "type_from_record",
]

SCHEMA_PREFIX = "atdata://local/schema/"
LEGACY_SCHEMA_PREFIX = "local://schemas/"
LENS_PREFIX = "atdata://local/lens/"
EXT = "atdataTorch"

_PRIMITIVES = ("str", "int", "float", "bool", "bytes")
_BINARY_KINDS = ("sparse", "arrow_tensor", "safetensors", "dataframe")


# ------------------------------------------------------------------------------------------------------- refs
def schema_ref(name: str, version: str) -> str:
    """``atdata://local/schema/{name}@{version}``.

    Example:
        >>> schema_ref("ImageSample", "1.0.0")
        'atdata://local/schema/ImageSample@1.0.0'
    """
    return f"{SCHEMA_PREFIX}{name}@{version}"


def parse_schema_ref(ref: str) -> tuple[str, str]:
    """``(name, version)`` of ``atdata://local/schema/N@v``, legacy ``local://schemas/module.N@v`` or ``N@v``.

    Raises:
        ValueError: when the reference has no ``@version``.

    Example:
        >>> parse_schema_ref("local://schemas/pkg.mod.ImageSample@1.0.0")
        ('ImageSample', '1.0.0')
    """
    path = ref
    for prefix in (SCHEMA_PREFIX, LEGACY_SCHEMA_PREFIX):
        if ref.startswith(prefix):
            path = ref[len(prefix) :]
            break
    else:
        if "://" in ref:
            raise ValueError(f"not a local schema reference: {ref!r} (expected {SCHEMA_PREFIX}Name@version)")
    if "@" not in path:
        raise ValueError(f"schema reference {ref!r} has no version; expected {SCHEMA_PREFIX}Name@1.0.0")
    name, version = path.rsplit("@", 1)
    if "." in name:
        name = name.rsplit(".", 1)[1]
    return name, version


def parse_lens_ref(ref: str) -> tuple[str, str]:
    """``(name, version)`` of ``atdata://local/lens/{name}@{version}`` (or ``name@version``).

    Example:
        >>> parse_lens_ref("atdata://local/lens/gray@1.0.0")
        ('gray', '1.0.0')
    """
    path = ref[len(LENS_PREFIX) :] if ref.startswith(LENS_PREFIX) else ref
    if "@" not in path or "://" in path:
        raise ValueError(f"not a lens reference: {ref!r} (expected {LENS_PREFIX}name@1.0.0)")
    name, version = path.rsplit("@", 1)
    return name, version


# ------------------------------------------------------------------------------------------------------- hints
@dataclass
class FieldHint:
    """What the written data showed about an NDArray field: its dtype and shape (``None`` where they vary)."""

    dtype: np.dtype[Any] | None = None
    shape: list[int | None] | None = None
    mixed_dtype: bool = False
    mixed_ndim: bool = False


class HintTracker:
    """Collects :class:`FieldHint` for the NDArray fields of samples as they are written.

    Example:
        >>> import numpy as np, atdata_torch as atd
        >>> @atd.packable
        ... class Img:
        ...     x: atd.NDArray
        >>> t = HintTracker(Img)
        >>> t.update(Img(x=np.zeros((2, 3), np.uint8))); t.update(Img(x=np.zeros((4, 3), np.uint8)))
        >>> t.hints["x"].shape, t.hints["x"].dtype.str
        ([None, 3], '|u1')
    """

    def __init__(self, cls: type) -> None:
        fields: tuple[FieldSpec, ...] = getattr(cls, "__atdata_fields__", ())
        self._names = [f.name for f in fields if f.kind == "ndarray"]
        self.hints: dict[str, FieldHint] = {n: FieldHint() for n in self._names}
        self._seen: set[str] = set()

    def update(self, sample: Any) -> None:
        """Look at one sample."""
        for name in self._names:
            v = getattr(sample, name, None)
            if not isinstance(v, np.ndarray):
                continue
            h = self.hints[name]
            if name not in self._seen:
                self._seen.add(name)
                h.dtype, h.shape = v.dtype, list(v.shape)
                continue
            if not h.mixed_dtype and h.dtype is not None and v.dtype != h.dtype:
                h.mixed_dtype, h.dtype = True, None
            if h.mixed_ndim or h.shape is None:
                continue
            if v.ndim != len(h.shape):
                h.mixed_ndim, h.shape = True, None
                continue
            h.shape = [d if d == s else None for d, s in zip(h.shape, v.shape, strict=True)]


# ------------------------------------------------------------------------------------------------------- records
def _field_type(spec: FieldSpec, hint: FieldHint | None) -> dict[str, Any]:
    if spec.kind in _PRIMITIVES:
        return {"$type": "local#primitive", "primitive": spec.kind}
    if spec.kind == "ndarray":
        dt = spec.dtype if spec.dtype is not None else (hint.dtype if hint is not None else None)
        # numpy's name ("uint8") is the original's name for the dtypes it knows; float32 is its "unknown".
        ft: dict[str, Any] = {"$type": "local#ndarray", "dtype": dt.name if dt is not None else "float32"}
        if hint is not None and hint.shape is not None:
            ft["shape"] = list(hint.shape)
        ft[EXT] = {"dtype": dt.str if dt is not None else None, "dtypeDeclared": spec.dtype is not None}
        return ft
    if spec.kind == "list":
        out: dict[str, Any] = {"$type": "local#array"}
        if spec.items is not None:
            out["items"] = _field_type(spec.items, None)
            if spec.items.optional:
                out["items"][EXT] = {**out["items"].get(EXT, {}), "optional": True}
        return out
    if spec.kind in ("dict", "any"):
        return {"$type": f"local#{spec.kind}"}
    raise SchemaError(f"field {spec.name!r} has kind {spec.kind!r}, which a schema record cannot describe")


def _default_description(cls: type) -> str | None:
    doc = cls.__doc__
    if doc is None or doc.startswith(f"{cls.__name__}("):  # the signature dataclass() makes up
        return None
    return doc


def build_schema_record(
    cls: type,
    *,
    version: str,
    description: str | None = None,
    hints: Mapping[str, FieldHint] | None = None,
) -> dict[str, Any]:
    """The local schema record of a ``@packable`` class (the original's JSON, plus dtype/shape extensions).

    Args:
        cls: A ``@packable`` class.
        version: The schema version (``"1.0.0"``).
        description: Text; defaults to the class docstring.
        hints: Per-field dtype/shape seen in the data (see :class:`HintTracker`).

    Raises:
        SchemaError: ``cls`` is not ``@packable``.
    """
    specs: tuple[FieldSpec, ...] = getattr(cls, "__atdata_fields__", ())
    if not (isinstance(cls, type) and issubclass(cls, PackableSample) and specs):
        raise SchemaError(
            f"{getattr(cls, '__name__', cls)!r} is not a @packable class with fields; only typed samples have a "
            "schema (decorate the class with @atd.packable)"
        )
    hints = hints or {}
    return {
        "name": cls.__name__,
        "version": version,
        "fields": [
            {"name": s.name, "fieldType": _field_type(s, hints.get(s.name)), "optional": s.optional} for s in specs
        ],
        "description": description if description is not None else _default_description(cls),
        "createdAt": _dt.datetime.now(_dt.timezone.utc).isoformat(),
    }


# ------------------------------------------------------------------------------------------------------- parsing
def _convert_json_schema(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Fields of an AT Protocol ``science.alt.dataset.schema`` record (``schemaType: "jsonSchema"``)."""
    inner = record.get("schema") or {}
    body = inner.get("schemaBody", inner)
    required = set(body.get("required") or [])

    def prop_type(prop: Mapping[str, Any]) -> dict[str, Any]:
        ref = str(prop.get("$ref", "")).lower()
        if "ndarray" in ref:
            ft: dict[str, Any] = {"$type": "local#ndarray"}
            for k in ("dtype", "shape", EXT):
                if k in prop:
                    ft[k] = prop[k]
            return ft
        t = prop.get("type")
        if t == "string":
            if prop.get("format") == "byte" or prop.get("contentEncoding") == "base64":
                return {"$type": "local#primitive", "primitive": "bytes"}
            return {"$type": "local#primitive", "primitive": "str"}
        simple = {"integer": "int", "number": "float", "boolean": "bool"}
        if t in simple:
            return {"$type": "local#primitive", "primitive": simple[str(t)]}
        if t == "array":
            items = prop.get("items")
            return {"$type": "local#array", **({"items": prop_type(items)} if items else {})}
        if t == "object":
            return {"$type": "local#dict"}
        return {"$type": "local#any"}

    return [
        {"name": n, "fieldType": prop_type(p), "optional": n not in required}
        for n, p in (body.get("properties") or {}).items()
    ]


def record_fields(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``fields`` of a schema record (local JSON, or an AT Protocol JSON-Schema record converted)."""
    if record.get("schemaType") == "jsonSchema" or isinstance((record.get("schema") or {}).get("schemaBody"), dict):
        return _convert_json_schema(record)
    fields = record.get("fields")
    if not isinstance(fields, list):
        raise SchemaError(f"schema record {record.get('name')!r} has no 'fields' list")
    return fields


def _kind(ft: Mapping[str, Any]) -> str:
    t = str(ft.get("$type", ""))
    return t.split("#")[-1] if "#" in t else str(ft.get("kind", ""))


def _declared_dtype(ft: Mapping[str, Any]) -> np.dtype[Any] | None:
    ext = ft.get(EXT)
    if isinstance(ext, Mapping):
        if not ext.get("dtypeDeclared", ext.get("dtype") is not None) or ext.get("dtype") is None:
            return None
        text = str(ext["dtype"])
    else:
        text = str(ft.get("dtype") or "float32")
        if text == "float32":  # the original writes float32 for every bare NDArray: unknown
            return None
    try:
        return np.dtype(text)
    except TypeError:
        return None


def _spec_sig(ft: Mapping[str, Any], optional: bool) -> dict[str, Any]:
    kind = _kind(ft)
    if kind == "primitive":
        prim = str(ft.get("primitive", "str"))
        out: dict[str, Any] = {"kind": prim}
    elif kind in ("ndarray", "structured"):
        dt = _declared_dtype(ft)
        out = {"kind": "ndarray", "dtype": dt.newbyteorder("=").str if dt is not None else None}
    elif kind in _BINARY_KINDS:
        out = {"kind": "bytes"}
    elif kind == "array":
        items = ft.get("items")
        item_opt = bool(isinstance(items, Mapping) and (items.get(EXT) or {}).get("optional"))
        out = {"kind": "list", "items": _spec_sig(items, item_opt) if isinstance(items, Mapping) else None}
    elif kind in ("dict", "any"):
        out = {"kind": kind}
        optional = optional or kind == "any"
    else:
        out = {"kind": f"unknown:{kind}"}
    out["optional"] = bool(optional)
    return out


def _fieldspec_sig(spec: FieldSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": spec.kind}
    if spec.kind == "ndarray":
        out["dtype"] = spec.dtype.newbyteorder("=").str if spec.dtype is not None else None
    if spec.kind == "list":
        out["items"] = _fieldspec_sig(spec.items) if spec.items is not None else None
    out["optional"] = bool(spec.optional)
    return out


def class_signature(cls: type) -> str:
    """What must match for a stored schema to describe ``cls``: field names, kinds, optionality, declared dtypes."""
    specs: tuple[FieldSpec, ...] = getattr(cls, "__atdata_fields__", ())
    sig = [{"name": s.name, **_fieldspec_sig(s)} for s in specs]
    return json.dumps([cls.__name__, sig], sort_keys=True)


def record_signature(record: Mapping[str, Any]) -> str:
    """:func:`class_signature` of the type a record describes."""
    name = str(record.get("name", "")).rsplit(".", 1)[-1]
    sig = [
        {"name": f.get("name"), **_spec_sig(f.get("fieldType") or {}, bool(f.get("optional")))}
        for f in record_fields(record)
    ]
    return json.dumps([name, sig], sort_keys=True)


# ------------------------------------------------------------------------------------------------------- types
_RESERVED = frozenset(n for n in dir(PackableSample) if not n.startswith("__")) | {"packed"}
_PY_PRIMITIVES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool, "bytes": bytes}
_TYPE_CACHE: dict[str, type] = {}


def _annotation(ft: Mapping[str, Any], where: str) -> Any:
    kind = _kind(ft)
    if kind == "primitive":
        prim = str(ft.get("primitive", "str"))
        if prim not in _PY_PRIMITIVES:
            raise SchemaError(f"{where} has the unknown primitive type {prim!r}")
        return _PY_PRIMITIVES[prim]
    if kind in ("ndarray", "structured"):
        dt = _declared_dtype(ft)
        if dt is not None and np.dtype(dt.type) == dt.newbyteorder("="):
            return np.ndarray[Any, np.dtype[dt.type]]  # type: ignore[name-defined]
        return NDArray[Any]
    if kind in _BINARY_KINDS:
        return bytes
    if kind == "array":
        items = ft.get("items")
        if not isinstance(items, Mapping):
            return list
        item = _annotation(items, where)
        if (items.get(EXT) or {}).get("optional"):
            item = typing.Optional[item]  # noqa: UP045 (a runtime object, not an annotation)
        return list[item]  # type: ignore[valid-type]
    if kind == "dict":
        return dict
    if kind == "any":
        return Any
    if kind == "ref":
        raise SchemaError(f"{where} references another schema ({ft.get('ref')!r}); nested schemas are not supported")
    raise SchemaError(f"{where} has the unknown field type {ft.get('$type')!r}")


class _RebuiltType(type):
    """The metaclass of classes rebuilt from schema records (see :func:`type_from_record`)."""


def _rebuild(record: dict[str, Any], ref: str | None) -> type:
    return type_from_record(record, ref=ref)


def _reduce_rebuilt(cls: type) -> tuple[Any, ...]:
    return (_rebuild, (getattr(cls, "__atdata_record__"), getattr(cls, "__atdata_schema_ref__", None)))  # noqa: B009


copyreg.pickle(_RebuiltType, _reduce_rebuilt)


def type_from_record(record: Mapping[str, Any], *, ref: str | None = None) -> type:
    """Rebuild a ``@packable`` class from a schema record; runs no stored code.

    Optional fields become keyword-only with default ``None``, so they may come in any order (the original fails
    with "non-default argument follows default" when a required field follows an optional one); optional
    ``NDArray`` fields decode as arrays. The same record always gives the same class (cached).

    Raises:
        SchemaError: a name is not a Python identifier, or a field type cannot be rebuilt.
    """
    raw_name = str(record.get("name") or "")
    name = raw_name.rsplit(".", 1)[-1]
    if not name.isidentifier() or keyword.iskeyword(name):
        raise SchemaError(f"schema name {raw_name!r} is not a valid Python class name")
    fields = record_fields(record)
    if not fields:
        raise SchemaError(f"schema {raw_name!r} has no fields")
    version = str(record.get("version", ""))
    key = json.dumps([name, version, fields], sort_keys=True, default=str)
    hit = _TYPE_CACHE.get(key)
    if hit is not None:
        return hit
    annotations: dict[str, Any] = {}
    ns: dict[str, Any] = {}
    for f in fields:
        fname = str(f.get("name") or "")
        where = f"field {fname!r} of schema {name}@{version}"
        if not fname.isidentifier() or keyword.iskeyword(fname) or fname.startswith("__") or fname in _RESERVED:
            raise SchemaError(f"{where}: the name is not a usable Python attribute name", field=fname)
        if fname in annotations:
            raise SchemaError(f"{where} appears twice", field=fname)
        ann = _annotation(f.get("fieldType") or {}, where)
        if f.get("optional") or ann is Any:
            annotations[fname] = typing.Optional[ann]  # noqa: UP045
            ns[fname] = dataclasses.field(default=None, kw_only=True)
        else:
            annotations[fname] = ann
    desc = record.get("description")
    ns.update(
        {
            "__annotations__": annotations,
            "__module__": __name__,
            "__qualname__": name,
            "__doc__": desc if isinstance(desc, str) and desc else f"{name} (rebuilt from schema {name}@{version}).",
            "__atdata_schema_ref__": ref or schema_ref(name, version),
        }
    )
    ns["__atdata_record__"] = {"name": raw_name, "version": version, "fields": fields, "description": desc}
    # A PackableSample subclass of its own metaclass: it pickles as its record, so batches of it cross to and from
    # DataLoader workers (fork or spawn) and it is rebuilt, identical, in any process.
    rebuilt: type = _RebuiltType(name, (PackableSample,), ns)
    cls: type = packable(rebuilt)
    _TYPE_CACHE[key] = cls
    if len(_TYPE_CACHE) > 1024:
        _TYPE_CACHE.pop(next(iter(_TYPE_CACHE)))
    return cls
