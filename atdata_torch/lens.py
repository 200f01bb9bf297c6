"""Lenses: bidirectional, composable transforms between sample types, and the registry that finds them.

A lens from ``S`` to ``V`` has a getter ``get(s: S) -> V`` and, optionally, a putter ``put(v: V, s: S) -> S``
that writes a changed view back into a source. Well-behaved lenses obey ``get(put(v, s)) == v`` and
``put(get(s), s) == s``.

Example:
    >>> import numpy as np
    >>> import atdata_torch as atd
    >>> @atd.packable
    ... class Full:
    ...     x: atd.NDArray
    ...     label: str
    >>> @atd.packable
    ... class LabelOnly:
    ...     label: str
    >>> @atd.lens
    ... def label_only(s: Full) -> LabelOnly:
    ...     return LabelOnly(label=s.label)
    >>> @label_only.putter
    ... def _(v: LabelOnly, s: Full) -> Full:
    ...     return Full(x=s.x, label=v.label)
    >>> label_only(Full(x=np.zeros(1), label="a"))
    LabelOnly(label='a')
"""

from __future__ import annotations

import importlib
import sys
import typing
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, SupportsIndex, TypeVar

from .errors import LensNotFoundError, LensPutterError

__all__ = ["Lens", "LensNetwork", "LensRegistry", "lens", "registry"]

S = TypeVar("S")
V = TypeVar("V")
W = TypeVar("W")


def _type_name(t: Any) -> str:
    return getattr(t, "__qualname__", None) or repr(t)


class Lens(Generic[S, V]):
    """A getter (and optional putter) between a source type ``S`` and a view type ``V``.

    Args:
        get: ``S -> V``.
        put: ``(V, S) -> S``, or ``None`` for a one-way lens.
        source: The source type; read from ``get``'s first parameter annotation when omitted.
        view: The view type; read from ``get``'s return annotation when omitted.
        name: A name for reprs and the index (defaults to the getter's name).
    """

    def __init__(
        self,
        get: Callable[[S], V],
        put: Callable[[V, S], S] | None = None,
        *,
        source: type[S] | None = None,
        view: type[V] | None = None,
        name: str | None = None,
        _localns: dict[str, Any] | None = None,
    ) -> None:
        self._get = get
        self._put = put
        self.name = name or getattr(get, "__name__", "lens")
        if source is None or view is None:
            hints = _hints(get, _localns)
            params = [k for k in hints if k != "return"]
            if source is None:
                if not params:
                    raise TypeError(
                        f"lens {self.name!r}: annotate the getter's parameter with the source type "
                        "(def f(s: Source) -> View), or pass source="
                    )
                source = hints[params[0]]
            if view is None:
                if "return" not in hints:
                    raise TypeError(
                        f"lens {self.name!r}: annotate the getter's return type with the view type, or pass view="
                    )
                view = hints["return"]
        self.source_type: type[S] = source
        self.view_type: type[V] = view
        self.__name__ = self.name  # the original atdata's lenses carry their getter's name (functools.update_wrapper)
        self.__doc__ = getattr(get, "__doc__", None)

    @staticmethod
    def identity(sample_type: type[S] = object) -> Lens[S, S]:  # type: ignore[assignment]
        """The lens that returns its source unchanged, and whose putter returns the view (the original's
        ``Lens.identity(T)``).

        Example:
            >>> Lens.identity(int).get(3), Lens.identity(int).put(4, 3)
            (3, 4)
        """

        def identity(s: S) -> S:
            return s

        def put(v: S, s: S) -> S:
            return v

        return Lens(identity, put, source=sample_type, view=sample_type, name="identity")

    def get(self, source: S) -> V:
        """Apply the getter."""
        return self._get(source)

    def __call__(self, source: S) -> V:
        return self._get(source)

    @property
    def has_putter(self) -> bool:
        """Whether :meth:`put` is available."""
        return self._put is not None

    def put(self, view: V, source: S) -> S:
        """Write ``view`` back into ``source``.

        Raises:
            LensPutterError: for a lens without a putter (also a ``NotImplementedError``). The original atdata
                returned ``source`` unchanged there, silently dropping the view's changes.
        """
        if self._put is None:
            raise LensPutterError(
                f"lens {self.name!r} ({_type_name(self.source_type)} -> {_type_name(self.view_type)}) has no "
                f"putter, so a changed view cannot be written back; add one with @{self.name}.putter (the original "
                "atdata returned the source unchanged here)"
            )
        return self._put(view, source)

    def putter(self, put: Callable[[V, S], S]) -> Callable[[V, S], S]:
        """Decorator that adds the putter ``put(view, source) -> source``; returns ``put`` unchanged."""
        self._put = put
        return put

    def __or__(self, other: Lens[V, W]) -> Lens[S, W]:
        """Compose: ``(a | b).get(s) == b.get(a.get(s))``; the putter composes too when both have one."""
        if not isinstance(other, Lens):
            return NotImplemented
        first, second = self, other

        def get(s: S) -> W:
            return second.get(first.get(s))

        put: Callable[[W, S], S] | None = None
        if first.has_putter and second.has_putter:

            def put(w: W, s: S) -> S:
                return first.put(second.put(w, first.get(s)), s)

        return Lens(
            get,
            put,
            source=first.source_type,
            view=second.view_type,
            name=f"{first.name}|{second.name}",
        )

    def __matmul__(self, other: Lens[W, S]) -> Lens[W, V]:
        """Compose right to left, like ``f ∘ g``: ``(a @ b).get(s) == a.get(b.get(s))``, i.e. ``b | a``."""
        if not isinstance(other, Lens):
            return NotImplemented
        return other | self

    def __reduce_ex__(self, protocol: SupportsIndex) -> str | tuple[Any, ...]:
        # @lens rebinds the getter's name in its module to this Lens, so the getter function can no longer be
        # pickled by reference ("not the same object as module.name"), and a dataset with an as_type() stage
        # could not reach spawn / forkserver DataLoader workers. A lens that is a module attribute is pickled by
        # reference instead, like a function.
        qualname = getattr(self._get, "__qualname__", "")
        module = sys.modules.get(getattr(self._get, "__module__", None) or "")
        if module is not None and qualname and "<locals>" not in qualname:
            obj: Any = module
            for part in qualname.split("."):
                obj = getattr(obj, part, None)
            if obj is self:
                return (_lens_from_module, (module.__name__, qualname))
        return super().__reduce_ex__(protocol)

    def __repr__(self) -> str:
        arrow = "<->" if self.has_putter else "->"
        return f"Lens({self.name}: {_type_name(self.source_type)} {arrow} {_type_name(self.view_type)})"


def _lens_from_module(module: str, qualname: str) -> Lens[Any, Any]:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[no-any-return]


def _hints(fn: Callable[..., Any], localns: dict[str, Any] | None) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, localns=localns)
    except NameError as exc:
        raise TypeError(
            f"cannot resolve the annotations of lens {getattr(fn, '__name__', fn)!r}: {exc}; define the sample "
            "types at module level or import them"
        ) from exc


class LensRegistry:
    """Lenses indexed by (source, view); finds multi-hop paths by breadth-first search.

    Example:
        >>> reg = LensRegistry()
        >>> reg.register(Lens(lambda s: float(s), source=int, view=float, name="i2f"))
        >>> reg.register(Lens(lambda s: str(s), source=float, view=str, name="f2s"))
        >>> reg.find(int, str)(3)
        '3.0'
    """

    def __init__(self) -> None:
        self._edges: dict[type, dict[type, Lens[Any, Any]]] = {}

    def register(self, lens: Lens[Any, Any]) -> None:
        """Add (or replace) the lens for its (source, view) pair."""
        self._edges.setdefault(lens.source_type, {})[lens.view_type] = lens

    def unregister(self, lens: Lens[Any, Any]) -> None:
        """Remove a lens."""
        edges = self._edges.get(lens.source_type, {})
        if edges.get(lens.view_type) is lens:
            del edges[lens.view_type]

    def reachable(self, source: type) -> list[type]:
        """All view types reachable from ``source``, nearest first."""
        seen: dict[type, None] = {}
        queue = deque([source])
        while queue:
            t = queue.popleft()
            for v in self._edges.get(t, {}):
                if v not in seen and v is not source:
                    seen[v] = None
                    queue.append(v)
        return list(seen)

    def find(self, source: type[S], view: type[V]) -> Lens[S, V]:
        """The shortest chain of lenses from ``source`` to ``view``, composed into one lens.

        Raises:
            LensNotFoundError: listing the types that are reachable from ``source``.
        """
        if source is view:
            ident: Lens[Any, Any] = Lens(lambda s: s, lambda v, s: v, source=source, view=view, name="identity")
            return ident
        prev: dict[type, tuple[type, Lens[Any, Any]]] = {}
        queue = deque([source])
        while queue:
            t = queue.popleft()
            for v, ln in self._edges.get(t, {}).items():
                if v in prev or v is source:
                    continue
                prev[v] = (t, ln)
                if v is view:
                    chain: list[Lens[Any, Any]] = []
                    cur: type = view
                    while cur is not source:
                        p, step = prev[cur]
                        chain.append(step)
                        cur = p
                    chain.reverse()
                    out = chain[0]
                    for step in chain[1:]:
                        out = out | step
                    return out
                queue.append(v)
        reach = ", ".join(_type_name(t) for t in self.reachable(source)) or "nothing"
        raise LensNotFoundError(
            f"no lens converts {_type_name(source)} to {_type_name(view)}; from {_type_name(source)} the "
            f"registered lenses reach: {reach}. Define one with @atd.lens def f(s: {_type_name(source)}) -> "
            f"{_type_name(view)}: ..."
        )

    def transform(self, source: type[S], view: type[V]) -> Lens[S, V]:
        """The original atdata's spelling of :meth:`find`: the lens from ``source`` to ``view``.

        Raises:
            LensNotFoundError: with the original's message, listing the lenses registered from ``source``
                (``.available_targets``: ``[(view type, lens name)]``).
        """
        try:
            return self.find(source, view)
        except LensNotFoundError:
            targets: list[tuple[Any, str]] = [(v, str(ln.name)) for v, ln in self._edges.get(source, {}).items()]
            raise LensNotFoundError(source, view, targets) from None

    def __len__(self) -> int:
        return sum(len(v) for v in self._edges.values())


class LensNetwork(LensRegistry):
    """The process-wide lens registry under the original atdata's name: ``LensNetwork()`` is always the same
    object, the one ``@lens`` and ``@packable`` register into (:data:`registry`).

    :meth:`transform` finds multi-hop paths too (A -> B plus B -> C gives A -> C), where the original looked up
    directly registered lenses only: every lookup that worked there works here.

    Example:
        >>> LensNetwork() is LensNetwork() is registry
        True
    """

    _instance: LensNetwork | None = None

    def __new__(cls) -> LensNetwork:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
            LensRegistry.__init__(cls._instance)
        return cls._instance

    def __init__(self) -> None:  # the singleton keeps its lenses (LensRegistry.__init__ ran once, in __new__)
        pass


registry: LensRegistry = LensNetwork()
"""The process-wide registry that ``@lens`` and ``@packable`` register into (``LensNetwork()``)."""


def lens(get: Callable[[S], V]) -> Lens[S, V]:
    """Decorator: make a lens from an annotated getter and register it.

    Works with ``from __future__ import annotations`` (the annotations are resolved against the module and the
    defining scope).

    Example:
        >>> import atdata_torch as atd
        >>> @atd.packable
        ... class A:
        ...     n: int
        >>> @atd.packable
        ... class B:
        ...     n2: int
        >>> @atd.lens
        ... def double(a: A) -> B:
        ...     return B(n2=a.n * 2)
        >>> atd.lens_registry.find(A, B)(A(n=2))
        B(n2=4)
    """
    frame = sys._getframe(1)
    localns = {**frame.f_globals, **frame.f_locals}
    out: Lens[S, V] = Lens(get, _localns=localns)
    registry.register(out)
    return out
