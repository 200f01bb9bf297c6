"""HuggingFace-style ``load_dataset()``: path resolution and resolvers for names (the split grammar and
``DatasetDict`` live in ``_splits``; they are re-exported here).

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
import importlib
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, overload

from ._shards import expand_urls
from ._splits import Bound as Bound  # Bound and SplitTerm: importable from here, as before _splits
from ._splits import DatasetDict, detect_split, parse_split, select_split, split_name
from ._splits import SplitTerm as SplitTerm
from .dataset import Dataset
from .errors import ShardNotFoundError
from .schema import DictSample

__all__ = ["DatasetDict", "detect_split", "load_dataset", "parse_split", "register_resolver"]

T = TypeVar("T")

# --------------------------------------------------------------------------------------------------------------
# resolvers (index names, at:// URIs: registered below by dotted name, imported when a path matches)

Resolver = Callable[..., Any]
_RESOLVERS: list[tuple[Callable[[str], bool], Resolver | str]] = []
_DOTTED = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def register_resolver(matches: Callable[[str], bool] | str, resolve: Resolver | str) -> None:
    """Teach ``load_dataset`` a new kind of name.

    Args:
        matches: A predicate on the path, or a prefix (``"@"``, ``"at://"``).
        resolve: ``resolve(path, sample_type, **kwargs)`` returning a ``Dataset`` or ``DatasetDict``, or its
            dotted name ``"package.module:function"``, imported only when a path first matches (so registering
            imports nothing).

    Raises:
        ValueError: ``resolve`` is a string that is not ``"module:function"``.

    Example:
        >>> register_resolver("demo://", "os.path:basename")  # imported when a "demo://..." path is loaded
        >>> _ = _RESOLVERS.pop(0)
    """
    if isinstance(resolve, str) and not _DOTTED.fullmatch(resolve):
        raise ValueError(f"resolver {resolve!r} is not a dotted name 'package.module:function'")
    pred = (lambda p, _pre=matches: p.startswith(_pre)) if isinstance(matches, str) else matches
    _RESOLVERS.insert(0, (pred, resolve))


def _resolver(target: Resolver | str) -> Resolver:
    """The resolver function itself: a dotted name is imported (once; modules are cached by ``importlib``)."""
    if not isinstance(target, str):
        return target
    module, _, qualname = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[no-any-return]


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


def _data_file_splits(path: str, data_files: str | list[str] | Mapping[str, str | list[str]]) -> dict[str, list[str]]:
    """Split name -> shard URLs of explicit ``data_files`` (relative patterns are under ``path``'s directory)."""
    base = None if _is_remote(path) else path
    if base is not None and not os.path.isdir(base):
        base = os.path.dirname(base) or None
    if isinstance(data_files, (str, list)):
        pats = [data_files] if isinstance(data_files, str) else list(data_files)
        return {"train": _expand_patterns(pats, base)}
    return {
        split_name(k): _expand_patterns([v] if isinstance(v, str) else list(v), base) for k, v in data_files.items()
    }


def _directory_splits(path: str) -> dict[str, list[str]]:
    """Split name -> shards of a dataset directory (``*.tar`` and ``*/*.tar``, by the names inside it)."""
    files = _files_under(Path(path))
    if not files:
        raise ShardNotFoundError(
            f"no .tar shards in {path!r} or its subdirectories (e.g. {path}/train/*.tar)", shard=path
        )
    return _group_by_split(files, path)


def _pattern_splits(path: str) -> dict[str, list[str]]:
    """Split name -> shards of a shard path, URL or brace/glob pattern (a pattern may span several splits)."""
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


def resolve_splits(
    path: str, data_files: str | list[str] | Mapping[str, str | list[str]] | None = None
) -> dict[str, list[str]]:
    """Split name -> shard URLs for a path, a pattern, a directory, or explicit ``data_files``."""
    if data_files is not None:
        return _data_file_splits(path, data_files)
    if not _is_remote(path) and os.path.isdir(path):
        return _directory_splits(path)
    return _pattern_splits(path)


@overload
def load_dataset(
    path: str | os.PathLike[str],
    sample_type: type[T],
    *,
    split: str,
    data_files: str | list[str] | Mapping[str, str | list[str]] | None = None,
    streaming: bool = False,
    **source_options: Any,
) -> Dataset[T]: ...


@overload
def load_dataset(
    path: str | os.PathLike[str],
    sample_type: type[T],
    *,
    split: None = None,
    data_files: str | list[str] | Mapping[str, str | list[str]] | None = None,
    streaming: bool = False,
    **source_options: Any,
) -> DatasetDict: ...


@overload
def load_dataset(
    path: str | os.PathLike[str],
    sample_type: None = None,
    *,
    split: str,
    data_files: str | list[str] | Mapping[str, str | list[str]] | None = None,
    streaming: bool = False,
    **source_options: Any,
) -> Dataset[DictSample]: ...


@overload
def load_dataset(
    path: str | os.PathLike[str],
    sample_type: None = None,
    *,
    split: None = None,
    data_files: str | list[str] | Mapping[str, str | list[str]] | None = None,
    streaming: bool = False,
    **source_options: Any,
) -> DatasetDict: ...


def load_dataset(
    path: str | os.PathLike[str],
    sample_type: type[Any] | None = None,
    *,
    split: str | None = None,
    data_files: str | list[str] | Mapping[str, str | list[str]] | None = None,
    streaming: bool = False,
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
        streaming: Accepted for the original atdata's callers (and HF ``datasets``'): every dataset streams its
            shards here, so ``True`` and ``False`` read the same way. It is kept on a returned ``DatasetDict``.
        **source_options: Passed to the sources (``cache_dir=``, ``cache_max_bytes=``, ``headers=``,
            ``endpoint=``, ...).

    Raises:
        SplitError: the requested split does not exist (the message lists those that do), or is malformed.
        ShardNotFoundError: nothing matches the path.
    """
    p = os.fspath(path)
    for matches, resolve in _RESOLVERS:
        if matches(p):
            result = _resolver(resolve)(p, sample_type, split=split, **source_options)
            if isinstance(result, DatasetDict):
                result.streaming = bool(streaming)
            if split is None or isinstance(result, Dataset):
                return result  # type: ignore[no-any-return]
            return select_split(result, split)
    st: Any = sample_type if sample_type is not None else DictSample
    groups = resolve_splits(p, data_files)
    splits = DatasetDict(
        {name: Dataset(shards, sample_type=st, **source_options) for name, shards in groups.items()},
        st,
        streaming=streaming,
    )
    if split is None:
        return splits
    return select_split(splits, split)


# --------------------------------------------------------------------------------------------------------------
# the leaves' names: "@local/name[@version]" and bare names that are not files (the dataset index);
# "at://..." URIs and "@handle/name[@version]" (the AT Protocol). The predicates are here; the resolvers are named by
# dotted string and imported only when such a name is loaded, so importing atdata_torch imports neither leaf (nor
# the atproto SDK), and this module imports no leaf.

_INDEX_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*(?:@[A-Za-z0-9_.+\-]+)?")
_AT_NAME = re.compile(r"@(?!local/)[A-Za-z0-9:._\-]+/[^/@\s]+(?:@[^/@\s]+)?")


def _is_index_name(path: str) -> bool:
    if path.startswith("@local/"):
        return True
    return bool(_INDEX_NAME.fullmatch(path)) and not path.lower().endswith(".tar") and not os.path.exists(path)


def _is_atproto_name(path: str) -> bool:
    return path.startswith("at://") or bool(_AT_NAME.fullmatch(path))


#: The leaves' resolvers by dotted name, in the order they are registered (the last registered is tried first).
_LEAF_RESOLVERS: dict[str, tuple[Callable[[str], bool], str]] = {
    "index": (_is_index_name, "atdata_torch.index._resolve:resolve"),
    "atproto": (_is_atproto_name, "atdata_torch.atmosphere._resolve:resolve"),
}
for _matches, _target in _LEAF_RESOLVERS.values():
    register_resolver(_matches, _target)
del _matches, _target
