"""Where an index and its shards live by default, and how datasets are named in it.

Example:
    >>> parse_dataset_ref("@local/digits@2.0.0"), parse_dataset_ref("digits")
    (('digits', '2.0.0'), ('digits', None))
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import braceexpand

from .._splits import detect_split
from ..errors import IndexStoreError
from ._records import IndexStore
from .sqlite import SqliteStore

__all__ = [
    "abs_url",
    "check_name",
    "dataset_urls",
    "default_data_dir",
    "default_index_location",
    "parse_dataset_ref",
    "split_groups",
]

_LOCAL_PREFIXES = ("@local/", "local/")


def _user_data_dir() -> Path:
    try:
        import platformdirs
    except ImportError:
        base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
        return Path(base) / "atdata-torch"
    return Path(platformdirs.user_data_dir("atdata-torch", appauthor=False))


def default_index_location() -> str:
    """Where ``Index()`` opens: ``$ATDATA_TORCH_INDEX`` (a path or ``redis://`` URL), else ``index.db`` in the
    user data directory (``$XDG_DATA_HOME/atdata-torch``, ``~/.local/share/atdata-torch`` by default).

    Example:
        >>> default_index_location().endswith("index.db") or "ATDATA_TORCH_INDEX" in os.environ
        True
    """
    env = os.environ.get("ATDATA_TORCH_INDEX")
    return env if env else str(_user_data_dir() / "index.db")


def default_data_dir(store: IndexStore) -> Path:
    """Where ``Index.write_samples`` puts shards: ``$ATDATA_TORCH_DATA_DIR``, else ``data/`` next to a SQLite
    index, else ``data/`` in the user data directory."""
    env = os.environ.get("ATDATA_TORCH_DATA_DIR")
    if env:
        return Path(env).expanduser()
    if isinstance(store, SqliteStore):
        return store.path.parent / "data"
    return _user_data_dir() / "data"


def parse_dataset_ref(ref: str) -> tuple[str, str | None]:
    """``(name, version)`` of ``name``, ``name@version``, ``@local/name[@version]`` or ``local/name[@version]``.

    Example:
        >>> parse_dataset_ref("@local/digits@2.0.0"), parse_dataset_ref("digits")
        (('digits', '2.0.0'), ('digits', None))
    """
    for prefix in _LOCAL_PREFIXES:
        if ref.startswith(prefix):
            ref = ref[len(prefix) :]
            break
    if "@" in ref:
        name, version = ref.rsplit("@", 1)
        return name, version or None
    return ref, None


def check_name(name: str) -> str:
    """``name`` without an ``@local/`` or ``local/`` prefix (the original's spelling of this index); raise
    ``ValueError`` unless it can name a dataset in the index, ``IndexStoreError`` for an ``@handle/`` name.

    Example:
        >>> check_name("@local/digits"), check_name("mnist/train")
        ('digits', 'mnist/train')
    """
    for prefix in _LOCAL_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    else:
        if name.startswith("@") and "/" in name:
            raise IndexStoreError(
                f"dataset name {name!r} names an AT Protocol repo: this index does not publish (the original "
                "atdata did); write or insert it locally under a plain name, then publish it with "
                "index.promote(name, to=atmosphere), promote_to_atmosphere(entry, index, atmosphere) or "
                "atmosphere.publish_dataset(ds, name=...)"
            )
    parts = name.split("/")
    if not name or "@" in name or name != name.strip() or any(p in ("", ".", "..") for p in parts):
        raise ValueError(
            f"invalid dataset name {name!r}: use a non-empty name without '@' (it separates the version), "
            "surrounding spaces, or empty/'.'/'..' path segments"
        )
    return name


def abs_url(url: str) -> str:
    """An absolute path for a local path (``~`` expanded); URLs as they are."""
    return url if "://" in url else os.path.abspath(os.path.expanduser(url))


def dataset_urls(ds: Any) -> list[str]:
    """The URLs an index stores for a ``Dataset``: the original stores ``[ds.url]``, the URL or brace pattern the
    dataset was opened with, so the entry's CID is the original's. Local paths are made absolute; where the URL
    does not brace-expand to exactly the dataset's shards (a directory, a glob, a source), the shard list is stored.

    Example:
        >>> import atdata_torch as atd
        >>> dataset_urls(atd.Dataset("https://h/train-{000000..000003}.tar"))
        ['https://h/train-{000000..000003}.tar']
        >>> dataset_urls(atd.Dataset(["https://h/a.tar", "https://h/c.tar"]))
        ['https://h/{a,c}.tar']
    """
    shards = [abs_url(str(u)) for u in ds.list_shards()]
    url = getattr(ds, "_url", None)
    if isinstance(url, str) and url:
        whole = abs_url(url)
        if [abs_url(u) for u in braceexpand.braceexpand(whole)] == shards:
            return [whole]
    return shards


def split_groups(urls: list[str]) -> dict[str, list[str]]:
    """Split name -> shards, from the part of each URL after the URLs' common directory (``train`` by default):
    ``.../digits/train--ab12cd34--000000.tar`` is ``train``, and so is any shard whose name shows no split.
    Brace patterns (as the original stores ``ds.url``) are expanded first."""
    urls = [u for url in urls for u in braceexpand.braceexpand(url)]
    prefix = urls[0]
    for u in urls[1:]:
        while not u.startswith(prefix):
            prefix = prefix[:-1]
    prefix = prefix[: prefix.rfind("/") + 1]
    groups: dict[str, list[str]] = {}
    for u in urls:
        groups.setdefault(detect_split(u[len(prefix) :]) or "train", []).append(u)
    return groups
