"""``load_dataset("@local/name[@version]")`` and ``load_dataset("name")``: the resolver ``load.py`` calls.

``load.py`` (core) registers a small predicate and imports this module only when a path matches, so importing
``atdata_torch`` never imports the index.

Example:
    >>> # atd.load_dataset("@local/digits@2.0.0", split="train")
    >>> # atd.load_dataset("digits", split="train[:10%]", index="redis://127.0.0.1:6379/0")
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import ShardNotFoundError
from ._default import default_index_if_set
from ._index import Index
from ._locations import default_index_location
from ._records import IndexNotFoundError

__all__ = ["resolve"]


def _open(index: Any) -> tuple[Index | None, bool, str]:
    """``(index, owned, location)``; ``None`` when the default SQLite index does not exist (nothing to read)."""
    if index is None:
        index = default_index_if_set()  # set_default_index(...) (or get_default_index() opened it)
    if isinstance(index, Index):
        return index, False, index.location
    location = os.fspath(index) if index is not None else default_index_location()
    if "://" not in location and not os.path.exists(location):
        return None, False, location
    return Index(location), True, location


def resolve(
    path: str, sample_type: type | None, *, split: str | None = None, index: Any = None, **source_options: Any
) -> Any:
    """Resolve an index name to a ``DatasetDict`` (``load_dataset`` selects ``split`` from it).

    Args:
        path: ``@local/name[@version]`` or a bare ``name[@version]`` (that is not a file).
        sample_type: The sample class, or ``None`` for the class rebuilt from the entry's schema.
        split: Unused here (``load_dataset`` applies it).
        index: An :class:`Index` or its location (default: ``$ATDATA_TORCH_INDEX`` / the user's index).
        **source_options: For the sources.

    Raises:
        IndexNotFoundError: ``@local/`` names that the index does not know (with similar names).
        ShardNotFoundError: bare names that are neither files nor indexed datasets.
    """
    explicit = path.startswith("@local/")
    idx, owned, location = _open(index)
    try:
        if idx is None:
            if explicit:
                raise IndexNotFoundError(f"cannot resolve {path!r}: there is no index at {location}")
            raise ShardNotFoundError(
                f"no shard or directory matches {path!r} (and there is no index at {location})", shard=path
            )
        try:
            return idx.load(path, sample_type, **source_options)
        except IndexNotFoundError as exc:
            if explicit:
                raise
            raise ShardNotFoundError(f"no shard or directory matches {path!r}, and {exc.message}", shard=path) from exc
    finally:
        if owned and idx is not None:
            idx.close()
