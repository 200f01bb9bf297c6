"""The default index (``get_default_index`` / ``set_default_index``) and ``create_repository``, the original
atdata's spellings.

Example:
    >>> import os, tempfile
    >>> repo = create_repository("sqlite", path=os.path.join(tempfile.mkdtemp(), "lab.db"))
    >>> type(repo.provider).__name__
    'SqliteStore'
"""

from __future__ import annotations

import os
import threading
from typing import Any

from ._compat import Repository, open_location
from ._index import Index
from ._stores import AbstractDataStore

__all__ = ["create_repository", "default_index_if_set", "get_default_index", "set_default_index"]


def create_repository(
    provider: str = "sqlite",
    *,
    path: str | os.PathLike[str] | None = None,
    redis: Any = None,
    data_store: AbstractDataStore | None = None,
    **kwargs: Any,
) -> Repository:
    """A :class:`Repository` over a backend named ``"sqlite"`` (``path=``) or ``"redis"`` (``redis=`` a client or
    URL, or ``host=``/``port=``/``db=``); ``Index(repository)`` opens it.

    Raises:
        IndexStoreError: an unknown backend or ``"postgres"``; the store cannot be opened.
        MissingDependencyError: ``"redis"`` without the ``redis`` package.
    """
    loc = open_location(None, provider=provider, path=path, redis=redis, kwargs=kwargs)
    return Repository(provider=Index(loc).store, data_store=data_store)


# ------------------------------------------------------------------------------------------------------ default
_default_index: Index | None = None
_default_lock = threading.Lock()


def get_default_index() -> Index:
    """The process's default index: the one :func:`set_default_index` set, else ``Index()`` (opened once).

    ``load_dataset("@local/name")`` reads it when no ``index=`` is given.
    """
    global _default_index
    with _default_lock:
        if _default_index is None:
            _default_index = Index()
        return _default_index


def set_default_index(index: Index) -> None:
    """Make ``index`` the default (for :func:`get_default_index` and ``load_dataset("@local/...")``)."""
    global _default_index
    with _default_lock:
        _default_index = index


def default_index_if_set() -> Index | None:
    """The default index if one was set or opened, else ``None`` (nothing is opened)."""
    return _default_index
