"""Splits: split names in shard paths, TFDS/HF split expressions (``train[:10%]+validation``), and ``DatasetDict``.

Shared by ``load_dataset`` and the leaves that resolve names to datasets (the index, the AT Protocol), so that none
of them imports another to select a split.

Example:
    >>> [t.name for t in parse_split("train[:10%]+validation")], detect_split("data/mnist_train.tar")
    (['train', 'validation'], 'train')
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from .dataset import Dataset
from .errors import SplitError

__all__ = ["Bound", "DatasetDict", "SplitTerm", "detect_split", "parse_split", "select_split", "split_name"]

# --------------------------------------------------------------------------------------------------------------
# split names

_ALIASES = {
    "train": "train",
    "training": "train",
    "test": "test",
    "testing": "test",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "dev": "validation",
    "development": "validation",
}
_DELIM = r"[-_./\\]"
_SPLIT_RE = re.compile(rf"(?:^|{_DELIM})({'|'.join(sorted(_ALIASES, key=len, reverse=True))})(?={_DELIM}|$)")


def split_name(name: str) -> str:
    """The canonical name of a split alias (``training`` -> ``train``, ``dev`` -> ``validation``); others as given.

    Example:
        >>> split_name("valid"), split_name("extra")
        ('validation', 'extra')
    """
    return _ALIASES.get(name, name)


def detect_split(path: str) -> str | None:
    """The split a shard path names (``train``, ``test`` or ``validation``), or ``None``.

    The file name is checked first, with ``-``, ``_`` and ``.`` as delimiters (``mnist_train.tar``); then the
    directories, nearest first, whose whole name is a split name (``root/valid/...``). Other directory names do
    not count: ``/home/me/test_runs/shard.tar`` is not a test split.

    Example:
        >>> detect_split("data/mnist_train.tar"), detect_split("root/valid/shard-000.tar"), detect_split("x.tar")
        ('train', 'validation', None)
    """
    parts = path.lower().replace("\\", "/").split("/")
    m = _SPLIT_RE.search(parts[-1])
    if m:
        return _ALIASES[m.group(1)]
    for part in reversed(parts[:-1]):
        if part in _ALIASES:
            return _ALIASES[part]
    return None


# --------------------------------------------------------------------------------------------------------------
# split expressions


class Bound(NamedTuple):
    """One end of a split slice: an absolute sample index or a percentage."""

    value: int
    percent: bool


class SplitTerm(NamedTuple):
    """``name[start:stop]``."""

    name: str
    start: Bound | None
    stop: Bound | None


_TERM_RE = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(?:\[\s*([^\]]*)\s*\])?\s*$")


def _bound(text: str, expr: str) -> Bound | None:
    text = text.strip()
    if not text:
        return None
    m = re.fullmatch(r"(-?\d+)\s*(%)?", text)
    if m is None:
        raise SplitError(
            f"invalid slice bound {text!r} in split {expr!r}; use integers or percentages, e.g. 'train[:10%]', "
            "'train[100:200]', 'test[-5%:]'"
        )
    return Bound(int(m.group(1)), bool(m.group(2)))


def parse_split(expr: str) -> list[SplitTerm]:
    """Parse a TFDS/HF split expression: ``train``, ``train[:10%]``, ``train[10:20]+validation``.

    Raises:
        SplitError: on malformed expressions.
    """
    terms = []
    for part in expr.split("+"):
        m = _TERM_RE.match(part)
        if m is None:
            raise SplitError(f"cannot parse split {expr!r}: {part!r} is not 'name' or 'name[start:stop]'")
        name, sl = m.group(1), m.group(2)
        start = stop = None
        if sl is not None:
            if sl.count(":") != 1:
                raise SplitError(f"invalid slice [{sl}] in split {expr!r}; expected [start:stop]")
            a, b = sl.split(":")
            start, stop = _bound(a, expr), _bound(b, expr)
        terms.append(SplitTerm(_ALIASES.get(name.lower(), name), start, stop))
    return terms


def _resolve_bound(b: Bound | None, n: int, default: int) -> int:
    if b is None:
        return default
    v = round(b.value * n / 100) if b.percent else b.value
    if v < 0:
        v += n
    return max(0, min(n, v))


# --------------------------------------------------------------------------------------------------------------
# DatasetDict


class DatasetDict(dict[str, Dataset[Any]]):
    """A dict of split name -> :class:`Dataset`. With exactly one split it also behaves like that dataset
    (``ordered()``, ``shuffled()``, ``loader()``, ``as_type()``, ``head()``...). Dict methods stay dict methods:
    ``len(dd)`` is the number of splits and ``dd.get("train")`` a split (``dd["train"].get(key)`` finds a sample).

    Example:
        >>> dd = DatasetDict()
        >>> dd.sample_type is None
        True
    """

    _PROXIED = frozenset(
        {"ordered", "shuffled", "loader", "as_type", "list_shards", "head", "describe", "summary", "map", "filter"}
    )

    def __init__(
        self,
        splits: Mapping[str, Dataset[Any]] | None = None,
        sample_type: type | None = None,
        streaming: bool = False,
    ) -> None:
        super().__init__(splits or {})
        self._sample_type = sample_type
        # The original atdata's flag, kept for its users: every split streams here, whatever it says.
        self.streaming = bool(streaming)

    @property
    def sample_type(self) -> type | None:
        """The sample type of the splits."""
        if self._sample_type is not None:
            return self._sample_type
        return next(iter(self.values())).sample_type if self else None

    @property
    def num_shards(self) -> dict[str, int]:
        """Shards per split."""
        return {k: len(v.list_shards()) for k, v in self.items()}

    @property
    def num_samples(self) -> dict[str, int]:
        """Samples per split."""
        return {k: len(v) for k, v in self.items()}

    def __getitem__(self, key: str) -> Dataset[Any]:
        try:
            return super().__getitem__(key)
        except KeyError:
            raise SplitError(f"split {key!r} does not exist; available splits: {sorted(self)}") from None

    def __getattr__(self, name: str) -> Any:
        if name in self._PROXIED:
            if len(self) == 1:
                return getattr(next(iter(self.values())), name)
            raise AttributeError(
                f"DatasetDict has {len(self)} splits ({', '.join(sorted(self))}); select one first, e.g. "
                f"dd[{next(iter(self), 'train')!r}].{name}(...)"
            )
        raise AttributeError(f"'DatasetDict' object has no attribute {name!r}")

    def __repr__(self) -> str:
        inner = ", ".join(f"{k!r}: {v!r}" for k, v in self.items())
        return f"DatasetDict({{{inner}}})"


def select_split(splits: DatasetDict, expr: str) -> Dataset[Any]:
    """The dataset a split expression selects from ``splits`` (slices taken, ``+`` concatenated).

    Raises:
        SplitError: a named split does not exist (the message lists those that do), or the expression is malformed.
    """
    terms = parse_split(expr)
    parts: list[Dataset[Any]] = []
    for term in terms:
        if term.name not in splits:
            raise SplitError(f"split {term.name!r} does not exist; available splits: {sorted(splits)}")
        ds = splits[term.name]
        if term.start is not None or term.stop is not None:
            n = len(ds)
            lo = _resolve_bound(term.start, n, 0)
            hi = _resolve_bound(term.stop, n, n)
            ds = ds.select_range(lo, max(lo, hi))
        parts.append(ds)
    return parts[0] if len(parts) == 1 else Dataset.concat(parts)
