"""``ManifestField`` and the rules that pick a sample type's manifest fields (the original atdata's)."""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import SchemaError

__all__ = ["AggregateKind", "ManifestField", "resolve_manifest_fields"]

AggregateKind = Literal["categorical", "numeric", "set"]

_KINDS = ("categorical", "numeric", "set")
_INFERRED = {"str": "categorical", "bool": "categorical", "int": "numeric", "float": "numeric", "list": "set"}


@dataclass(frozen=True)
class ManifestField:
    """Marks a field for the per-shard manifest, used with ``typing.Annotated``.

    Fields without a marker are inferred: ``str``/``bool`` are categorical, ``int``/``float`` numeric, ``list[...]``
    a set; arrays, bytes and dicts are left out. ``exclude=True`` leaves out a field that would be inferred.

    Args:
        aggregate: ``"categorical"``, ``"numeric"`` or ``"set"``: the statistics the manifest header keeps.
        exclude: Leave this field out of the manifest.

    Example:
        >>> from typing import Annotated
        >>> import atdata_torch as atd
        >>> @atd.packable
        ... class Img:
        ...     label: Annotated[str, ManifestField("categorical")]
        ...     path: Annotated[str, ManifestField("categorical", exclude=True)]
        ...     score: float
        >>> sorted(resolve_manifest_fields(Img))
        ['label', 'score']
    """

    aggregate: AggregateKind
    exclude: bool = False

    def __post_init__(self) -> None:
        if self.aggregate not in _KINDS:
            raise ValueError(f"ManifestField(aggregate={self.aggregate!r}): expected one of {', '.join(_KINDS)}")


def _marker(annotation: Any) -> ManifestField | None:
    for item in getattr(annotation, "__metadata__", ()):
        if isinstance(item, ManifestField):
            return item
    return None


def _spec_kinds(sample_type: type) -> dict[str, str]:
    """Field name -> storage kind (``FieldSpec.kind`` for ``@packable`` classes, else from the annotation)."""
    specs = getattr(sample_type, "__atdata_fields__", None)
    if specs is not None:
        return {s.name: s.kind for s in specs}
    hints = typing.get_type_hints(sample_type)
    out: dict[str, str] = {}
    for f in dataclasses.fields(sample_type):
        tp = hints.get(f.name)
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and type(None) in typing.get_args(tp):
            tp = args[0]
        origin = typing.get_origin(tp)
        name = getattr(tp, "__name__", "") if origin is None else getattr(origin, "__name__", "")
        out[f.name] = name if name in _INFERRED else "other"
    return out


def _hints(sample_type: type) -> dict[str, Any]:
    """The annotations with their ``Annotated`` extras. String annotations (``from __future__ import annotations``)
    naming types local to a function cannot all be resolved later: each is then evaluated on its own, with
    ``Annotated`` and ``ManifestField`` in scope, and one that stays unresolved counts as unmarked, unless it
    mentions ``ManifestField``."""
    try:
        return typing.get_type_hints(sample_type, include_extras=True)
    except NameError:
        pass
    out: dict[str, Any] = {}
    for klass in reversed(sample_type.__mro__):
        module = sys.modules.get(klass.__module__)
        ns = {**(vars(module) if module else {}), "Annotated": typing.Annotated, "ManifestField": ManifestField}
        for name, ann in vars(klass).get("__annotations__", {}).items():
            if not isinstance(ann, str):
                out[name] = ann
                continue
            try:
                out[name] = eval(ann, ns)  # the annotation the class itself wrote, as get_type_hints evaluates it
            except Exception as exc:
                if "ManifestField" in ann:
                    raise SchemaError(
                        f"cannot resolve the annotation {ann!r} of field {name!r} of {sample_type.__name__} ({exc}); "
                        "define the types it names at module level",
                        field=name,
                    ) from exc
    return out


def resolve_manifest_fields(sample_type: type) -> dict[str, ManifestField]:
    """The manifest fields of a sample type: explicit ``ManifestField`` markers, else the inference rules.

    Raises:
        SchemaError: (also a ``TypeError``, as the original raised) when ``sample_type`` is not a dataclass, e.g.
            ``DictSample``, whose fields are not known before reading.

    Example:
        >>> import atdata_torch as atd
        >>> @atd.packable
        ... class S:
        ...     x: atd.NDArray
        ...     label: str
        ...     n: int
        ...     tags: list[str]
        >>> {k: v.aggregate for k, v in resolve_manifest_fields(S).items()}
        {'label': 'categorical', 'n': 'numeric', 'tags': 'set'}
    """
    if not (isinstance(sample_type, type) and dataclasses.is_dataclass(sample_type)):
        raise SchemaError(
            f"manifests need a typed sample class, got {getattr(sample_type, '__name__', sample_type)!r}: its "
            "fields are not known; use a @packable class (Dataset[T](...), or write @packable samples)"
        )
    hints = _hints(sample_type)
    kinds = _spec_kinds(sample_type)
    out: dict[str, ManifestField] = {}
    for f in dataclasses.fields(sample_type):
        marker = _marker(hints.get(f.name))
        if marker is not None:
            if not marker.exclude:
                out[f.name] = marker
            continue
        kind = _INFERRED.get(kinds.get(f.name, ""))
        if kind is not None:
            out[f.name] = ManifestField(kind)  # type: ignore[arg-type]
    return out
