"""HuggingFace-style ``load_dataset()``: path resolution, split detection, split slicing, ``DatasetDict``.

Example:
    >>> import atdata_torch as atd
    >>> # atd.load_dataset("data/train-*.tar", split="train")                 -> Dataset[DictSample]
    >>> # atd.load_dataset("data", ImageSample)                              -> DatasetDict {"train", "test"}
    >>> # atd.load_dataset("data", ImageSample, split="train[:10%]+validation")
    >>> [t.name for t in parse_split("train[:10%]+validation")]
    ['train', 'validation']
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, overload

from ._shards import expand_urls
from .dataset import Dataset
from .errors import ShardNotFoundError, SplitError
from .schema import DictSample

__all__ = ["DatasetDict", "detect_split", "load_dataset", "parse_split", "register_resolver"]

T = TypeVar("T")

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
        {"ordered", "shuffled", "loader", "as_type", "list_shards", "head", "describe", "map", "filter"}
    )

    def __init__(self, splits: Mapping[str, Dataset[Any]] | None = None, sample_type: type | None = None) -> None:
        super().__init__(splits or {})
        self._sample_type = sample_type

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


# --------------------------------------------------------------------------------------------------------------
# resolvers (index names, at:// URIs: registered by later modules)

Resolver = Callable[..., Any]
_RESOLVERS: list[tuple[Callable[[str], bool], Resolver]] = []


def register_resolver(matches: Callable[[str], bool] | str, resolve: Resolver) -> None:
    """Teach ``load_dataset`` a new kind of name.

    Args:
        matches: A predicate on the path, or a prefix (``"@"``, ``"at://"``).
        resolve: ``resolve(path, sample_type, **kwargs)`` returning a ``Dataset`` or ``DatasetDict``.
    """
    pred = (lambda p, _pre=matches: p.startswith(_pre)) if isinstance(matches, str) else matches
    _RESOLVERS.insert(0, (pred, resolve))


# --------------------------------------------------------------------------------------------------------------
# path resolution

_REMOTE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def _is_remote(p: str) -> bool:
    return bool(_REMOTE.match(p)) and not p.startswith("file://")


def _files_under(root: Path) -> list[str]:
    direct = sorted(str(p) for p in root.glob("*.tar"))
    nested = sorted(str(p) for p in root.glob("*/*.tar"))
    return direct + nested


def _group_by_split(shards: list[str], root: str | None = None) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for s in shards:
        # Under a dataset directory only the path inside it counts (not the directories that contain it).
        rel = os.path.relpath(s, root) if root else s
        groups.setdefault(detect_split(rel) or "train", []).append(s)
    return groups


def _expand_patterns(patterns: list[str], base: str | None) -> list[str]:
    out: list[str] = []
    for pat in patterns:
        if base and not _is_remote(pat) and not os.path.isabs(pat):
            pat = os.path.join(base, pat)
        expanded = expand_urls(pat)
        missing = [e for e in expanded if not _is_remote(e) and glob.has_magic(e)]
        if missing:
            raise ShardNotFoundError(f"no files match {pat!r}", shard=pat)
        out.extend(expanded)
    return out


def resolve_splits(
    path: str, data_files: str | list[str] | Mapping[str, str | list[str]] | None = None
) -> dict[str, list[str]]:
    """Split name -> shard URLs for a path, a pattern, a directory, or explicit ``data_files``."""
    base = None if _is_remote(path) else path
    if data_files is not None:
        if base is not None and not os.path.isdir(base):
            base = os.path.dirname(base) or None
        if isinstance(data_files, (str, list)):
            pats = [data_files] if isinstance(data_files, str) else list(data_files)
            return {"train": _expand_patterns(pats, base)}
        return {
            _ALIASES.get(k, k): _expand_patterns([v] if isinstance(v, str) else list(v), base)
            for k, v in data_files.items()
        }
    if not _is_remote(path) and os.path.isdir(path):
        files = _files_under(Path(path))
        if not files:
            raise ShardNotFoundError(
                f"no .tar shards in {path!r} or its subdirectories (e.g. {path}/train/*.tar)", shard=path
            )
        return _group_by_split(files, path)
    shards = expand_urls(path)
    if not _is_remote(path):
        missing = [s for s in shards if glob.has_magic(s) or not os.path.exists(s)]
        if missing:
            raise ShardNotFoundError(f"no shard matches {missing[0]!r}", shard=missing[0])
    if "{" in path or "*" in path or "?" in path:
        groups = _group_by_split(shards)
        if len(groups) > 1:
            return groups
    return {detect_split(path) or detect_split(shards[0] if shards else path) or "train": shards}


@overload
def load_dataset(
    path: str | os.PathLike[str],
    sample_type: type[T],
    *,
    split: str,
    data_files: str | list[str] | Mapping[str, str | list[str]] | None = None,
    **source_options: Any,
) -> Dataset[T]: ...


@overload
def load_dataset(
    path: str | os.PathLike[str],
    sample_type: type[T],
    *,
    split: None = None,
    data_files: str | list[str] | Mapping[str, str | list[str]] | None = None,
    **source_options: Any,
) -> DatasetDict: ...


@overload
def load_dataset(
    path: str | os.PathLike[str],
    sample_type: None = None,
    *,
    split: str,
    data_files: str | list[str] | Mapping[str, str | list[str]] | None = None,
    **source_options: Any,
) -> Dataset[DictSample]: ...


@overload
def load_dataset(
    path: str | os.PathLike[str],
    sample_type: None = None,
    *,
    split: None = None,
    data_files: str | list[str] | Mapping[str, str | list[str]] | None = None,
    **source_options: Any,
) -> DatasetDict: ...


def load_dataset(
    path: str | os.PathLike[str],
    sample_type: type[Any] | None = None,
    *,
    split: str | None = None,
    data_files: str | list[str] | Mapping[str, str | list[str]] | None = None,
    **source_options: Any,
) -> Dataset[Any] | DatasetDict:
    """Load shards by path, pattern, directory or URL, as the original atdata does (and where it fails).

    Args:
        path: A shard path or URL with braces or globs (``data/train-*.tar``, ``s3://b/d-{000..009}.tar``), a
            directory (``data/`` with ``train-*.tar`` / ``test-*.tar``, or ``data/train/*.tar`` subdirectories),
            or a name a registered resolver knows (``@local/name``, ``at://...``).
        sample_type: The sample class (``None``: :class:`DictSample`).
        split: ``None`` returns a :class:`DatasetDict` of every split found; a split expression returns one
            ``Dataset``: ``"train"``, ``"train[:10%]"``, ``"train[100:200]+validation"``.
        data_files: Explicit files: a pattern or list (the ``train`` split) or ``{split: pattern(s)}``.
        **source_options: Passed to the sources (``cache_dir=``, ``cache_max_bytes=``, ``headers=``,
            ``endpoint=``, ...).

    Raises:
        SplitError: the requested split does not exist (the message lists those that do), or is malformed.
        ShardNotFoundError: nothing matches the path.
    """
    p = os.fspath(path)
    for matches, resolve in _RESOLVERS:
        if matches(p):
            result = resolve(p, sample_type, split=split, **source_options)
            if split is None or isinstance(result, Dataset):
                return result  # type: ignore[no-any-return]
            return _select(result, split)
    st: Any = sample_type if sample_type is not None else DictSample
    groups = resolve_splits(p, data_files)
    splits = DatasetDict(
        {name: Dataset(shards, sample_type=st, **source_options) for name, shards in groups.items()}, st
    )
    if split is None:
        return splits
    return _select(splits, split)


def _select(splits: DatasetDict, expr: str) -> Dataset[Any]:
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


# --------------------------------------------------------------------------------------------------------------
# the dataset index (a leaf): "@local/name[@version]", and bare names that are not files. Its module is imported
# only when such a name is loaded.

_INDEX_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*(?:@[A-Za-z0-9_.+\-]+)?")


def _is_index_name(path: str) -> bool:
    if path.startswith("@local/"):
        return True
    return bool(_INDEX_NAME.fullmatch(path)) and not path.lower().endswith(".tar") and not os.path.exists(path)


def _resolve_index_name(path: str, sample_type: type[Any] | None, **kwargs: Any) -> Any:
    from .index._resolve import resolve

    return resolve(path, sample_type, **kwargs)


register_resolver(_is_index_name, _resolve_index_name)

# --------------------------------------------------------------------------------------------------------------
# the AT Protocol (a leaf): "at://..." URIs and "@handle/name[@version]". Its module (and the atproto SDK) is
# imported only when such a name is loaded.

_AT_NAME = re.compile(r"@(?!local/)[A-Za-z0-9:._\-]+/[^/@\s]+(?:@[^/@\s]+)?")


def _is_atproto_name(path: str) -> bool:
    return path.startswith("at://") or bool(_AT_NAME.fullmatch(path))


def _resolve_atproto(path: str, sample_type: type[Any] | None, **kwargs: Any) -> Any:
    from .atmosphere._resolve import resolve

    return resolve(path, sample_type, **kwargs)


register_resolver(_is_atproto_name, _resolve_atproto)
