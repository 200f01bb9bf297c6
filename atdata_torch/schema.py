"""Typed samples: ``@packable``, :class:`PackableSample`, :class:`DictSample` and field specs.

A packable sample is a dataclass whose fields are msgpack-friendly values (``str``, ``int``, ``float``, ``bool``,
``bytes``, lists, dicts, ``None``) or numpy arrays (``NDArray``). Its wire form is the original atdata format:
one msgpack map per sample, arrays as ``ndarray-bytes`` ``bin`` values (see ``_codec``).

Example:
    >>> import numpy as np
    >>> import atdata_torch as atd
    >>> from numpy.typing import NDArray
    >>> @atd.packable
    ... class Point:
    ...     xy: NDArray
    ...     name: str
    >>> p = Point(xy=np.array([1.0, 2.0], dtype=np.float32), name="a")
    >>> Point.from_bytes(p.packed) == p
    True
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import sys
import types
import typing
from collections.abc import ItemsView, Iterator, KeysView, ValuesView
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, Union

import numpy as np

from . import _codec
from ._sampleio import values_equal as _values_equal
from ._sampleio import wds_dict
from .errors import SchemaError
from .lens import Lens, registry

__all__ = ["DictSample", "FieldSpec", "PackableSample", "packable", "schema_id"]

T = TypeVar("T")

_PRIMITIVES: dict[type, str] = {
    str: "str",
    int: "int",
    float: "float",
    bool: "bool",
    bytes: "bytes",
}


@dataclass(frozen=True)
class FieldSpec:
    """How one field of a packable class is stored.

    Attributes:
        name: The field name (a key of the msgpack map).
        kind: ``"ndarray"``, ``"str"``, ``"int"``, ``"float"``, ``"bool"``, ``"bytes"``, ``"list"``, ``"dict"``
            or ``"any"``.
        optional: Whether ``None`` is allowed (and the key may be missing on read).
        dtype: For ``ndarray`` fields annotated with a scalar type (``NDArray[np.uint8]``), the expected dtype.
        items: For ``list`` fields, the spec of the items (``None`` when unconstrained).
        has_default: Whether the dataclass field has a default.
    """

    name: str
    kind: str
    optional: bool = False
    dtype: np.dtype[Any] | None = None
    items: FieldSpec | None = None
    has_default: bool = False

    def describe(self) -> dict[str, Any]:
        """A JSON-able description (used for schema ids and ``Dataset.describe()``)."""
        d: dict[str, Any] = {"name": self.name, "kind": self.kind, "optional": self.optional}
        if self.dtype is not None:
            d["dtype"] = self.dtype.str
        if self.items is not None:
            d["items"] = self.items.describe()
        return d


def _is_ndarray_annotation(tp: Any) -> bool:
    return tp is np.ndarray or typing.get_origin(tp) is np.ndarray


def _ndarray_dtype(tp: Any) -> np.dtype[Any] | None:
    args = typing.get_args(tp)
    if len(args) != 2:
        return None
    scalar_args = typing.get_args(args[1])
    if len(scalar_args) != 1:
        return None
    scalar = scalar_args[0]
    if isinstance(scalar, TypeVar) or scalar is Any:
        return None
    try:
        dt = np.dtype(scalar)
    except TypeError:
        return None
    # np.generic / np.number etc. are abstract: they do not pin a dtype.
    if isinstance(scalar, type) and scalar in (np.generic, np.number, np.integer, np.floating):
        return None
    return dt  # type: ignore[no-any-return]


def _unwrap_optional(where: str, name: str, tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; an annotation that is no union -> ``(it, False)``; other unions raise."""
    if typing.get_origin(tp) is not Union and not (sys.version_info >= (3, 10) and isinstance(tp, types.UnionType)):
        return tp, False
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if len(args) != 1:
        raise SchemaError(
            f"{where} is annotated {tp!r}: unions other than `X | None` are not supported; "
            "pick one type (or `typing.Any`)",
            field=name,
        )
    return args[0], len(args) != len(typing.get_args(tp))


def _spec_for(cls_name: str, name: str, tp: Any, *, has_default: bool, nested_in: str | None = None) -> FieldSpec:
    """Translate one annotation into a :class:`FieldSpec`, or raise :class:`SchemaError`."""
    where = f"field {name!r} of {cls_name}"
    tp, optional = _unwrap_optional(where, name, tp)
    origin = typing.get_origin(tp)
    if _is_ndarray_annotation(tp):
        if nested_in is not None:
            raise SchemaError(
                f"{where} nests an NDArray inside a {nested_in}: only top-level NDArray fields are encoded as "
                "arrays; stack the arrays into one NDArray field with a leading dimension instead",
                field=name,
            )
        dt = _ndarray_dtype(tp)
        if dt is not None and dt.hasobject:
            raise SchemaError(
                f"{where} declares an object dtype: object arrays would need pickle; use a concrete dtype",
                field=name,
            )
        return FieldSpec(name, "ndarray", optional, dtype=dt, has_default=has_default)
    if tp in _PRIMITIVES:
        return FieldSpec(name, _PRIMITIVES[tp], optional, has_default=has_default)
    if tp is Any or tp is object or tp is type(None):
        return FieldSpec(name, "any", True, has_default=has_default)
    if tp in (list, tuple) or origin in (list, tuple, typing.Sequence):
        item_args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        item: FieldSpec | None = None
        if item_args:
            item_tp = item_args[0] if len(set(item_args)) == 1 else Any
            item = _spec_for(cls_name, name, item_tp, has_default=False, nested_in="list")
        return FieldSpec(name, "list", optional, items=item, has_default=has_default)
    if tp is dict or origin is dict:
        dict_args = typing.get_args(tp)
        if dict_args:
            _spec_for(cls_name, name, dict_args[1], has_default=False, nested_in="dict")
        return FieldSpec(name, "dict", optional, has_default=has_default)
    raise SchemaError(
        f"{where} has the unsupported annotation {tp!r}; supported are NDArray / np.ndarray, str, int, "
        "float, bool, bytes, list[...], dict[...], typing.Any, and `X | None` of those",
        field=name,
    )


def _resolve_hints(cls: type, localns: dict[str, Any] | None) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls, localns=localns)
    except NameError as exc:
        raise SchemaError(
            f"cannot resolve the annotations of {cls.__name__}: {exc}; define the types it uses at module "
            "level (or import them) so that `typing.get_type_hints` can see them"
        ) from exc


_PACKING_ATTRS = ("__atdata_fields__", "__atdata_schema_id__", "__atdata_fast_init__")


class _Pending:
    """A packing attribute of a :class:`PackableSample` subclass not made by ``@packable`` (a plain ``@dataclass``
    subclass): the first read computes all three from the dataclass fields (the dataclass decorator runs after
    ``__init_subclass__``) and stores them as plain class attributes, so later reads cost nothing."""

    __slots__ = ("localns", "name")

    def __init__(self, name: str, localns: dict[str, Any]) -> None:
        self.name = name
        self.localns = localns

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        cls = owner if owner is not None else type(obj)
        _finish_packable(cls, self.localns)
        return cls.__dict__[self.name]


class PackableSample:
    """Base class of typed samples; ``@packable`` makes a dataclass one.

    Subclasses are dataclasses: ``@packable`` makes one, and a plain ``@dataclass`` subclass of
    ``PackableSample`` (the original atdata's inheritance syntax) is packable too, its fields read when the
    class is first used. Class attributes:

    Attributes:
        __atdata_fields__: The :class:`FieldSpec` of each field, in dataclass order.
        __atdata_schema_id__: A stable id of the schema (see :func:`schema_id`).

    Example:
        >>> import numpy as np
        >>> import atdata_torch as atd
        >>> @atd.packable
        ... class S:
        ...     x: atd.NDArray
        >>> isinstance(S(x=np.zeros(2)), atd.PackableSample)
        True
    """

    __atdata_fields__: ClassVar[tuple[FieldSpec, ...]] = ()
    __atdata_schema_id__: ClassVar[str] = ""
    __atdata_fast_init__: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        frame = sys._getframe(1)  # where the class statement ran (type.__new__ and __build_class__ are C)
        localns = frame.f_locals if frame.f_locals is frame.f_globals else dict(frame.f_locals)
        for name in _PACKING_ATTRS:
            if name not in cls.__dict__:
                setattr(cls, name, _Pending(name, localns))
        if "__eq__" not in cls.__dict__:
            # Keeps the array-aware __eq__ under a plain @dataclass (whose generated one compares field tuples,
            # which fails on arrays); dataclass adds no method the class already has.
            cls.__eq__ = PackableSample.__eq__  # type: ignore[method-assign]

    @classmethod
    def fields_spec(cls) -> tuple[FieldSpec, ...]:
        """The field specs of this class, in dataclass order."""
        return cls.__atdata_fields__

    @classmethod
    def from_data(cls: type[T], data: dict[str, Any]) -> T:
        """Build a sample from a decoded msgpack map (arrays may still be ndarray-bytes).

        Extra keys are ignored; a missing optional key becomes ``None``; a missing required key raises
        :class:`DecodeError` naming the field.
        """
        return _codec.build_sample(cls, data)  # type: ignore[no-any-return]

    @classmethod
    def from_bytes(cls: type[T], payload: bytes) -> T:
        """Decode one msgpack payload (the content of a ``<key>.msgpack`` member).

        Example:
            >>> import atdata_torch as atd
            >>> @atd.packable
            ... class Label:
            ...     name: str
            >>> Label.from_bytes(Label(name="cat").packed)
            Label(name='cat')
        """
        return _codec.build_sample(cls, _codec.unpack_map(payload))  # type: ignore[no-any-return]

    @property
    def packed(self) -> bytes:
        """The msgpack payload of this sample, byte-compatible with the original atdata."""
        return _codec.pack_sample(self)

    @property
    def as_wds(self) -> dict[str, Any]:
        """``{"__key__": <uuid1>, "msgpack": packed}``, for ``webdataset.TarWriter.write`` (see ``_sampleio``)."""
        return wds_dict(self.packed)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (arrays stay numpy arrays)."""
        return {f.name: getattr(self, f.name) for f in self.__atdata_fields__}

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(_values_equal(getattr(self, f.name), getattr(other, f.name)) for f in self.__atdata_fields__)

    __hash__ = None  # type: ignore[assignment]


def schema_id(cls: type) -> str | None:
    """A stable id of a packable class's schema: ``Name@<12 hex of sha256>`` (``None`` for DictSample).

    Two classes with the same name, field names, kinds, optionality and dtypes get the same id.

    Example:
        >>> import atdata_torch as atd
        >>> @atd.packable
        ... class A:
        ...     x: int
        >>> atd.schema_id(A).startswith("A@")
        True
    """
    fields = getattr(cls, "__atdata_fields__", None)
    if not fields:
        return None
    desc = json.dumps([f.describe() for f in fields], sort_keys=True, separators=(",", ":"))
    return f"{cls.__name__}@{hashlib.sha256(desc.encode()).hexdigest()[:12]}"


def packable(cls: type[T]) -> type[T]:
    """Make a class a typed, msgpack-serializable sample (a dataclass deriving :class:`PackableSample`).

    Every field must be annotated with a supported type; the error names the class and field otherwise. The
    decorated class also gets a registered lens from :class:`DictSample`, so ``ds.as_type(Cls)`` works on
    schema-free datasets.

    Example:
        >>> import numpy as np
        >>> import atdata_torch as atd
        >>> from numpy.typing import NDArray
        >>> @atd.packable
        ... class ImageSample:
        ...     image: NDArray
        ...     label: str
        ...     meta: dict | None = None
        >>> s = ImageSample(image=np.zeros((2, 2), np.uint8), label="cat")
        >>> ImageSample.from_bytes(s.packed) == s
        True
    """
    frame = sys._getframe(1)
    # Resolve names where the class was written (a module, a function, a notebook cell, a doctest).
    localns = {**frame.f_globals, **frame.f_locals, cls.__name__: cls}
    if issubclass(cls, PackableSample):
        new_cls: type = dataclass(cls, eq=False)
    else:
        # One new class with the same namespace and PackableSample as an extra base (so that the class the
        # user named is the dataclass itself, with no intermediate).
        ns = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
        bases = (*(b for b in cls.__bases__ if b is not object), PackableSample)
        new_cls = dataclass(type(cls.__name__, bases, ns), eq=False)
    _finish_packable(new_cls, localns)
    return new_cls


def _finish_packable(cls: type, localns: dict[str, Any]) -> None:
    """Compute and set the packing attributes of a dataclass deriving :class:`PackableSample`; register its lens.

    Raises:
        SchemaError: when ``cls`` is not a dataclass (so its fields are unknown), or a field's annotation is
            not supported.
    """
    own = inspect.get_annotations(cls)
    if "__dataclass_fields__" not in cls.__dict__ and any(
        not str(tp).startswith(("ClassVar", "typing.ClassVar")) for tp in own.values()
    ):
        raise SchemaError(
            f"{cls.__name__} subclasses PackableSample and declares fields {sorted(own)} but is not a dataclass, "
            "so they would not be packed; decorate it with @atd.packable (or @dataclasses.dataclass)"
        )
    if not dataclasses.is_dataclass(cls):
        raise SchemaError(
            f"{cls.__name__} subclasses PackableSample but is not a dataclass, so it has no fields to pack; "
            "decorate it with @atd.packable (or @dataclasses.dataclass)"
        )
    hints = _resolve_hints(cls, {**localns, cls.__name__: cls})
    specs = []
    for f in dataclasses.fields(cls):
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        specs.append(_spec_for(cls.__name__, f.name, hints.get(f.name, Any), has_default=has_default))
    cls.__atdata_fields__ = tuple(specs)  # type: ignore[attr-defined]
    cls.__atdata_schema_id__ = schema_id(cls) or ""  # type: ignore[attr-defined]
    cls.__atdata_fast_init__ = "__post_init__" not in {  # type: ignore[attr-defined]
        k for c in cls.__mro__ if c not in (object, PackableSample) for k in vars(c)
    }
    _register_dict_lens(cls)


def _register_dict_lens(cls: type) -> None:
    """Register DictSample -> cls (and back) for a packable class."""

    def get(s: DictSample) -> Any:
        return _codec.build_sample(cls, s._data)

    def put(v: Any, s: DictSample) -> DictSample:
        return DictSample({**s._data, **v.to_dict()})

    registry.register(Lens(get, put, source=DictSample, view=cls, name=f"DictSample->{cls.__name__}"))


class DictSample:
    """A schema-free sample: a mapping of field names to decoded values.

    Arrays in ndarray-bytes (or ``.npy``) form are decoded to numpy; other values stay as msgpack decoded them.
    Fields are reachable as ``s["f"]`` and ``s.f``.

    Example:
        >>> import numpy as np
        >>> from atdata_torch import DictSample
        >>> s = DictSample({"x": np.arange(3), "label": "a"})
        >>> s.label, s["x"].tolist(), sorted(s.keys())
        ('a', [0, 1, 2], ['label', 'x'])
    """

    __slots__ = ("_data",)
    _data: dict[str, Any]

    def __init__(self, _data: dict[str, Any] | None = None, /, **kwargs: Any) -> None:
        data = dict(_data or {})
        data.update(kwargs)
        object.__setattr__(self, "_data", data)

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> DictSample:
        """Wrap a decoded msgpack map, decoding any ndarray-bytes values to numpy arrays."""
        return cls(_codec.decode_untyped_map(data))

    @classmethod
    def from_bytes(cls, payload: bytes) -> DictSample:
        """Decode one msgpack payload."""
        return cls.from_data(_codec.unpack_map(payload))

    @property
    def packed(self) -> bytes:
        """The msgpack payload (arrays encoded as ndarray-bytes)."""
        return _codec.pack_mapping(self._data)

    @property
    def as_wds(self) -> dict[str, Any]:
        """``{"__key__": <uuid1>, "msgpack": packed}``, for ``webdataset.TarWriter.write``."""
        return wds_dict(self.packed)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(
                f"DictSample has no field {name!r}; fields are {sorted(self._data, key=str)}"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self._data[name] = value

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def keys(self) -> KeysView[str]:
        """The field names."""
        return self._data.keys()

    def values(self) -> ValuesView[Any]:
        """The field values."""
        return self._data.values()

    def items(self) -> ItemsView[str, Any]:
        """(name, value) pairs."""
        return self._data.items()

    def get(self, key: str, default: Any = None) -> Any:
        """The value of a field, or ``default``."""
        return self._data.get(key, default)

    def to_dict(self) -> dict[str, Any]:
        """A shallow copy of the fields as a dict."""
        return dict(self._data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DictSample):
            return NotImplemented
        return _values_equal(self._data, other._data)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        parts = []
        for k, v in self._data.items():
            if isinstance(v, np.ndarray):
                parts.append(f"{k}=ndarray(shape={v.shape}, dtype={v.dtype})")
            elif isinstance(v, (bytes, bytearray, memoryview)):
                parts.append(f"{k}=<{len(v)} bytes>")
            else:
                r = repr(v)
                parts.append(f"{k}={r if len(r) <= 60 else r[:57] + '...'}")
        return f"DictSample({', '.join(parts)})"

    def __getstate__(self) -> dict[str, Any]:
        return self._data

    def __setstate__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "_data", state)
