"""Lens records: references to importable code, or declarative field mappings (the original's lens JSON).

A record (the original's shape)::

    {"name", "version", "source_schema": "Full", "view_schema": "LabelOnly", "created_at", "description"?,
     "getter": {"kind": "code_reference", "module": "mypkg.lenses", "qualname": "label_only"}
               | {"kind": "field_mapping", "mappings": [{"source_field", "view_field", "transform": null}]},
     "putter": {...same kinds...} | {"kind": "opaque"},
     "atdataTorch": {"sourceSchemaRef": ..., "viewSchemaRef": ...}}     # extension: the exact schemas

Loading a record never runs code that is not installed: a code reference is imported by module name only (no
paths, no ``eval``), and a missing module raises :class:`~atdata_torch.errors.LensNotFoundError` naming it; a
field-mapping lens is built from closures over the mapping, with no code at all.

Example:
    >>> import atdata_torch as atd
    >>> @atd.packable
    ... class Full:
    ...     text: str
    ...     label: int
    >>> @atd.packable
    ... class OnlyLabel:
    ...     y: int
    >>> lens = FieldMappingLens(Full, OnlyLabel, {"y": "label"})
    >>> lens(Full(text="a", label=3))
    OnlyLabel(y=3)
    >>> lens.put(OnlyLabel(y=5), Full(text="a", label=3))
    Full(text='a', label=5)
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib
import importlib.util
import re
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ..errors import IndexStoreError, LensNotFoundError, SchemaError
from ..lens import Lens
from ._schemas import EXT

__all__ = ["FieldMappingLens", "import_code_ref", "lens_from_record", "lens_record"]

S = TypeVar("S")
V = TypeVar("V")

_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _field_names(cls: type) -> list[str]:
    if not dataclasses.is_dataclass(cls):
        raise SchemaError(f"{getattr(cls, '__name__', cls)!r} is not a @packable class (a dataclass)")
    return [f.name for f in dataclasses.fields(cls)]


def _needs_value(cls: type) -> set[str]:
    return {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }


class FieldMappingLens(Lens[S, V]):
    """A lens that copies fields: ``view.<v> = source.<mapping[v]>``; storable without code.

    Args:
        source: The source ``@packable`` class.
        view: The view ``@packable`` class.
        mapping: ``{view_field: source_field}``; by default every view field from the source field of the
            same name. View fields left out must have defaults.
        name: The lens name (defaults to ``"Source->View"``).

    The putter writes the mapped view fields back into a copy of the source.

    Raises:
        SchemaError: a mapped field does not exist, or a required view field is not mapped.
    """

    def __init__(
        self, source: type[S], view: type[V], mapping: Mapping[str, str] | None = None, *, name: str | None = None
    ) -> None:
        src_fields, view_fields = _field_names(source), _field_names(view)
        if mapping is None:
            mapping = {f: f for f in view_fields if f in src_fields}
        pairs = dict(mapping)
        for vf, sf in pairs.items():
            if vf not in view_fields:
                raise SchemaError(f"lens mapping names view field {vf!r}, but {view.__name__} has {view_fields}")
            if sf not in src_fields:
                raise SchemaError(f"lens mapping names source field {sf!r}, but {source.__name__} has {src_fields}")
        missing = sorted(_needs_value(view) - set(pairs))
        if missing:
            raise SchemaError(
                f"{view.__name__} needs {missing}, which the mapping does not fill; map them from fields of "
                f"{source.__name__} ({src_fields})"
            )
        self.mapping: dict[str, str] = pairs

        def get(s: S) -> V:
            return view(**{vf: getattr(s, sf) for vf, sf in pairs.items()})

        def put(v: V, s: S) -> S:
            return dataclasses.replace(s, **{sf: getattr(v, vf) for vf, sf in pairs.items()})  # type: ignore[type-var]

        super().__init__(get, put, source=source, view=view, name=name or f"{source.__name__}->{view.__name__}")


# ------------------------------------------------------------------------------------------------------- storing
def _code_ref(fn: Any) -> dict[str, str] | None:
    """``{"kind": "code_reference", "module", "qualname"}`` when ``fn`` can be imported back by name."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname or module == "__main__":
        return None
    obj: Any = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if obj is not fn and not (isinstance(obj, Lens) and obj._get is fn):  # @lens leaves a Lens under the name
        return None
    return {"kind": "code_reference", "module": module, "qualname": qualname}


def _why_not(fn: Any) -> str:
    qualname = str(getattr(fn, "__qualname__", fn))
    if getattr(fn, "__module__", None) == "__main__":
        return "it is defined in __main__, which other programs cannot import"
    if "<lambda>" in qualname:
        return "it is a lambda"
    if "<locals>" in qualname:
        return "it is defined inside a function"
    return f"{fn.__module__}.{qualname} does not name it (was the name reused?)"


def lens_record(
    lens: Lens[Any, Any],
    *,
    name: str,
    version: str,
    description: str | None = None,
    source_schema: str,
    view_schema: str,
    source_ref: str | None = None,
    view_ref: str | None = None,
) -> dict[str, Any]:
    """The stored record of a lens.

    Raises:
        IndexStoreError: the getter cannot be referenced by ``module:qualname`` and the lens is not a
            :class:`FieldMappingLens`.
    """
    if isinstance(lens, FieldMappingLens):
        fwd = [{"source_field": sf, "view_field": vf, "transform": None} for vf, sf in lens.mapping.items()]
        back = [{"source_field": vf, "view_field": sf, "transform": None} for vf, sf in lens.mapping.items()]
        getter: dict[str, Any] = {"kind": "field_mapping", "mappings": fwd}
        putter: dict[str, Any] = {"kind": "field_mapping", "mappings": back}
    else:
        ref = _code_ref(lens._get)
        if ref is None:
            raise IndexStoreError(
                f"lens {name!r} cannot be stored: its getter {getattr(lens._get, '__qualname__', lens._get)!r} "
                f"cannot be imported by name ({_why_not(lens._get)}); define it at module level in an installed "
                "module, or use atdata_torch.index.FieldMappingLens for a field mapping"
            )
        getter = ref
        putter = {"kind": "opaque"}
        if lens._put is not None:
            put_ref = _code_ref(lens._put)
            if put_ref is None:
                warnings.warn(
                    f"lens {name!r}: the putter cannot be imported by name ({_why_not(lens._put)}); the stored lens "
                    "is one-way. Give the putter its own module-level name to store it.",
                    UserWarning,
                    stacklevel=3,
                )
            else:
                putter = put_ref
    record: dict[str, Any] = {
        "name": name,
        "version": version,
        "source_schema": source_schema,
        "view_schema": view_schema,
        "getter": getter,
        "putter": putter,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
    }
    if description:
        record["description"] = description
    ext = {k: v for k, v in (("sourceSchemaRef", source_ref), ("viewSchemaRef", view_ref)) if v}
    if ext:
        record[EXT] = ext
    return record


# ------------------------------------------------------------------------------------------------------- loading
def import_code_ref(module: str, qualname: str, *, lens: str = "?") -> Callable[..., Any]:
    """Import ``module`` by name (only from what is installed) and return ``module.<qualname>``.

    Raises:
        LensNotFoundError: the module is not installed, the name is not in it, or it is not callable.

    Example:
        >>> import_code_ref("os.path", "join")("a", "b")
        'a/b'
    """
    if not _DOTTED.fullmatch(module) or not _DOTTED.fullmatch(qualname):
        raise LensNotFoundError(f"lens {lens}: {module!r}:{qualname!r} is not a module:qualname reference")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise LensNotFoundError(
            f"lens {lens} is code in module {module!r} ({module}:{qualname}), which is not installed; install the "
            "package that provides it (nothing is downloaded or run from the index)"
        )
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as exc:
        raise LensNotFoundError(f"lens {lens}: importing {module!r} failed: {exc}") from exc
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise LensNotFoundError(
                f"lens {lens}: module {module!r} has no {qualname!r} (the installed version may differ from the "
                "one the lens was stored with)"
            ) from None
    if not callable(obj):
        raise LensNotFoundError(f"lens {lens}: {module}:{qualname} is not callable")
    return obj  # type: ignore[no-any-return]


def lens_from_record(
    record: Mapping[str, Any],
    *,
    source_type: type | None,
    view_type: type | None,
    resolve_type: Callable[[str, str | None], type] | None = None,
) -> Lens[Any, Any]:
    """Rebuild a lens from its record.

    Args:
        record: The stored record.
        source_type: The source class (field mappings: looked up with ``resolve_type`` when ``None``).
        view_type: The view class (same).
        resolve_type: ``resolve_type(schema_name, schema_ref_or_None) -> class``, for field mappings.

    Raises:
        LensNotFoundError: the code is not installed, or the record cannot be rebuilt (opaque getter).
    """
    label = f"{record.get('name')}@{record.get('version')}"
    getter = record.get("getter") or {}
    putter = record.get("putter") or {}
    ext = record.get(EXT) or {}
    kind = getter.get("kind")
    if kind == "field_mapping":
        if source_type is None or view_type is None:
            if resolve_type is None:
                raise LensNotFoundError(f"lens {label} is a field mapping: pass source_type= and view_type=")
            source_type = source_type or resolve_type(str(record.get("source_schema")), ext.get("sourceSchemaRef"))
            view_type = view_type or resolve_type(str(record.get("view_schema")), ext.get("viewSchemaRef"))
        mapping = {str(m["view_field"]): str(m["source_field"]) for m in getter.get("mappings") or []}
        return FieldMappingLens(source_type, view_type, mapping, name=str(record.get("name")))
    if kind == "code_reference":
        get: Any = import_code_ref(str(getter.get("module")), str(getter.get("qualname")), lens=label)
        put: Any = None
        if isinstance(get, Lens):  # the name of an @lens function is the Lens itself
            source_type = source_type or get.source_type
            view_type = view_type or get.view_type
            get, put = get._get, get._put
        if putter.get("kind") == "code_reference":
            put = import_code_ref(str(putter.get("module")), str(putter.get("qualname")), lens=label)
        return Lens(get, put, source=source_type, view=view_type, name=str(record.get("name")))
    raise LensNotFoundError(
        f"lens {label} cannot be rebuilt: its getter is {kind!r} (neither a code reference nor a field mapping); "
        "define it with @atd.lens in an installed module and store it again"
    )
