"""The query DSL: ``FieldProxy`` comparisons build a ``Predicate``, a callable over a manifest DataFrame.

``query_fields(T)`` (or ``ds.fields``) gives one proxy per manifest field of ``T``; ``F`` gives a proxy for any name.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from typing import Any, cast

from ._fields import resolve_manifest_fields

__all__ = ["F", "FieldProxy", "Predicate", "query_fields"]

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "gt": operator.gt,
    "lt": operator.lt,
    "ge": operator.ge,
    "le": operator.le,
    "eq": operator.eq,
    "ne": operator.ne,
    "isin": lambda col, values: col.isin(values),
}
_SYMBOLS = {"gt": ">", "lt": "<", "ge": ">=", "le": "<=", "eq": "==", "ne": "!=", "isin": "in"}


class Predicate:
    """A boolean expression over manifest fields: combine with ``&``, ``|``, ``~``; call it on a DataFrame (or pass
    it as ``where=``) to get the boolean mask of the matching rows.

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"label": ["dog", "cat", "dog"], "score": [0.2, 0.9, 0.95]})
        >>> pred = (F.label == "dog") & (F.score > 0.5)
        >>> pred
        (Predicate('label' == 'dog') & Predicate('score' > 0.5))
        >>> pred(df).tolist()
        [False, False, True]
    """

    __slots__ = ("_child", "_children", "_field", "_kind", "_op", "_value")
    __hash__ = None  # type: ignore[assignment]

    def __init__(
        self,
        kind: str,
        *,
        field: str | None = None,
        op: str | None = None,
        value: Any = None,
        children: list[Predicate] | None = None,
        child: Predicate | None = None,
    ) -> None:
        if kind == "comparison" and op not in _OPS:
            raise ValueError(f"unknown operator {op!r}: expected one of {', '.join(_OPS)}")
        if kind not in ("comparison", "and", "or", "not"):
            raise ValueError(f"unknown predicate kind {kind!r}: expected comparison, and, or, not")
        self._kind = kind
        self._field = field
        self._op = op
        self._value = value
        self._children = children or []
        self._child = child

    def _join(self, other: Any, kind: str) -> Predicate:
        if not isinstance(other, Predicate):
            return NotImplemented  # type: ignore[no-any-return]
        left = self._children if self._kind == kind else [self]
        right = other._children if other._kind == kind else [other]
        return Predicate(kind, children=[*left, *right])

    def __and__(self, other: Predicate) -> Predicate:
        return self._join(other, "and")

    def __or__(self, other: Predicate) -> Predicate:
        return self._join(other, "or")

    def __invert__(self) -> Predicate:
        return Predicate("not", child=self)

    def fields(self) -> set[str]:
        """The field names the predicate reads."""
        if self._kind == "comparison":
            return {self._field} if self._field is not None else set()
        if self._kind == "not":
            return self._child.fields() if self._child is not None else set()
        return set().union(*(c.fields() for c in self._children))

    def compile(self) -> Callable[[Any], Any]:
        """The predicate as a function ``DataFrame -> boolean Series`` (what calling it does)."""
        return self.__call__

    def __call__(self, df: Any) -> Any:
        if self._kind == "comparison":
            return _OPS[self._op or ""](df[self._field], self._value)
        if self._kind == "not":
            return ~cast(Predicate, self._child)(df)
        combine = operator.and_ if self._kind == "and" else operator.or_
        return functools.reduce(combine, (c(df) for c in self._children))

    def __repr__(self) -> str:
        if self._kind == "comparison":
            return f"Predicate({self._field!r} {_SYMBOLS[self._op or '']} {self._value!r})"
        if self._kind == "not":
            return f"~{self._child!r}"
        sep = " & " if self._kind == "and" else " | "
        return "(" + sep.join(repr(c) for c in self._children) + ")"


class FieldProxy:
    """One manifest field in a query: comparisons (``>``, ``==``, ...), :meth:`isin` and :meth:`between` give a
    :class:`Predicate`.

    Example:
        >>> FieldProxy("score").between(0.5, 0.9)
        (Predicate('score' >= 0.5) & Predicate('score' <= 0.9))
    """

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def _cmp(self, op: str, value: Any) -> Predicate:
        return Predicate("comparison", field=self._name, op=op, value=value)

    def __gt__(self, value: Any) -> Predicate:
        return self._cmp("gt", value)

    def __lt__(self, value: Any) -> Predicate:
        return self._cmp("lt", value)

    def __ge__(self, value: Any) -> Predicate:
        return self._cmp("ge", value)

    def __le__(self, value: Any) -> Predicate:
        return self._cmp("le", value)

    def __eq__(self, value: Any) -> Predicate:  # type: ignore[override]
        return self._cmp("eq", value)

    def __ne__(self, value: Any) -> Predicate:  # type: ignore[override]
        return self._cmp("ne", value)

    __hash__ = None  # type: ignore[assignment]

    def isin(self, values: Sequence[Any]) -> Predicate:
        """The field's value is one of ``values``."""
        return self._cmp("isin", list(values))

    def between(self, low: Any, high: Any) -> Predicate:
        """``low <= field <= high``."""
        return self._cmp("ge", low) & self._cmp("le", high)

    def __repr__(self) -> str:
        return f"FieldProxy({self._name!r})"


def query_fields(sample_type: type) -> Any:
    """An object with one :class:`FieldProxy` attribute per manifest field of ``sample_type`` (what ``ds.fields``
    returns).

    Raises:
        SchemaError: (also a ``TypeError``) when ``sample_type`` is not a dataclass.

    Example:
        >>> import atdata_torch as atd
        >>> @atd.packable
        ... class S:
        ...     label: str
        ...     score: float
        >>> Q = query_fields(S)
        >>> Q
        SFields(label, score)
        >>> Q.score > 0.5
        Predicate('score' > 0.5)
    """
    names = list(resolve_manifest_fields(sample_type))
    title = f"{sample_type.__name__}Fields"
    attrs: dict[str, Any] = {name: FieldProxy(name) for name in names}
    attrs["__annotations__"] = {name: FieldProxy for name in names}
    attrs["__slots__"] = ()
    attrs["__repr__"] = lambda self: f"{title}({', '.join(names)})"
    return type(title, (), attrs)()


class _AnyField:
    """``F.name`` is a :class:`FieldProxy` for any field name (no sample type needed)."""

    def __getattr__(self, name: str) -> FieldProxy:
        if name.startswith("_"):
            raise AttributeError(name)
        return FieldProxy(name)

    def __repr__(self) -> str:
        return "F"


F = _AnyField()
