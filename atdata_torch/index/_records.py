"""What an index stores: entries, labels, the :class:`IndexStore` protocol its backends implement, its errors.

Example:
    >>> e = IndexEntry(name="digits", schema_ref="atdata://local/schema/Digit@1.0.0", data_urls=["/d/a.tar"],
    ...                metadata={"tags": ["vision"]}, cid="bafyrei...")
    >>> e.tags, e.description
    (['vision'], None)
"""

from __future__ import annotations

import datetime as _dt
import difflib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..errors import IndexNotFoundError

__all__ = [
    "IndexEntry",
    "IndexNotFoundError",
    "IndexStore",
    "Label",
    "now",
    "similar",
]


def now() -> str:
    """The current UTC time in SQLite's ``datetime('now')`` format, with microseconds (sorts as text).

    Example:
        >>> len(now()) == len("2024-01-01 00:00:00.000000")
        True
    """
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def similar(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Names close to ``name`` (typos, case, prefixes), best first.

    Example:
        >>> similar("mnsit", ["mnist", "cifar10"]), similar("mnist", ["cifar10", "mnist-train-2024"])
        (['mnist'], ['mnist-train-2024'])
    """
    pool = sorted(set(candidates))
    out = difflib.get_close_matches(name, pool, n=n, cutoff=0.6)
    low = name.lower()
    for c in pool:
        if len(out) >= n:
            break
        if c not in out and (low in c.lower() or c.lower() in low):
            out.append(c)
    return out


@dataclass
class IndexEntry:
    """One indexed dataset: a name, a schema reference and shard URLs, identified by a CID.

    The layout is the original atdata's ``LocalDatasetEntry``; ``description``, ``tags`` and ``license`` live in
    ``metadata`` under those keys (where the original's search looks for them).

    Attributes:
        name: The dataset name.
        schema_ref: ``atdata://local/schema/{Name}@{version}``.
        data_urls: Shard URLs or absolute paths (brace patterns allowed).
        metadata: Free-form metadata (``description``, ``tags``, ``license``, ``checksums``, ``size``, ...).
        cid: The content id of ``{"schema_ref", "data_urls"}`` (see :func:`atdata_torch.index.entry_cid`).
        created_at: When the entry was stored (UTC, ``YYYY-MM-DD HH:MM:SS[.ffffff]``), if known.
        legacy_uuid: The id of entries from old atdata versions, if any.
    """

    name: str
    schema_ref: str
    data_urls: list[str]
    metadata: dict[str, Any] | None = None
    cid: str = ""
    created_at: str | None = None
    legacy_uuid: str | None = None

    @property
    def description(self) -> str | None:
        """``metadata["description"]``, if set."""
        d = (self.metadata or {}).get("description")
        return d if isinstance(d, str) else None

    @property
    def tags(self) -> list[str]:
        """``metadata["tags"]`` (empty when unset)."""
        t = (self.metadata or {}).get("tags")
        return [str(x) for x in t] if isinstance(t, list) else []

    @property
    def license(self) -> str | None:
        """``metadata["license"]``, if set."""
        lic = (self.metadata or {}).get("license")
        return lic if isinstance(lic, str) else None


@dataclass
class Label:
    """A name (and optional version) pointing at an entry's CID; the newest label of a name is its latest.

    Attributes:
        name: The label name (usually the dataset name).
        cid: The entry it points at.
        version: A version string, or ``None`` (stored as ``""``, as the original does).
        description: Optional text.
        created_at: When the label was (re)written, if known; labels the original wrote to Redis have none.
    """

    name: str
    cid: str
    version: str | None = None
    description: str | None = None
    created_at: str | None = field(default=None, compare=False)


@runtime_checkable
class IndexStore(Protocol):
    """The persistence contract of an index backend (SQLite, Redis): records in the original atdata's layout.

    ``Index`` owns the logic (CIDs, versions, schemas, lenses); a store only saves and finds records. Every
    method raises :class:`~atdata_torch.errors.IndexStoreError` when the backend fails; lookups return ``None``
    or ``[]`` for a missing record. Writes are atomic and safe from several processes at once.

    Example:
        >>> from atdata_torch.index import SqliteStore
        >>> import tempfile, os
        >>> store = SqliteStore(os.path.join(tempfile.mkdtemp(), "index.db"))
        >>> isinstance(store, IndexStore)
        True
        >>> store.close()
    """

    location: str
    """Where the store lives (a file path or a ``redis://`` URL), for messages."""

    def put_entry(self, entry: IndexEntry, label: Label | None = None) -> None:
        """Upsert an entry by CID (and a label, in the same transaction)."""
        ...

    def get_entry(self, cid: str) -> IndexEntry | None:
        """The entry with this CID."""
        ...

    def entries_named(self, name: str) -> list[IndexEntry]:
        """Entries with this name, newest first (an indexed lookup, not a scan)."""
        ...

    def iter_entries(self) -> Iterator[IndexEntry]:
        """Every entry, in no particular order."""
        ...

    def put_label(self, label: Label) -> None:
        """Upsert a label by (name, version); its ``created_at`` becomes now."""
        ...

    def get_label(self, name: str, version: str | None = None) -> Label | None:
        """The label with this version, or with ``version=None`` the newest label of the name."""
        ...

    def labels_named(self, name: str) -> list[Label]:
        """Labels with this name, newest first."""
        ...

    def iter_labels(self) -> Iterator[Label]:
        """Every label."""
        ...

    def names(self) -> set[str]:
        """Every entry and label name (for listings and "did you mean" messages)."""
        ...

    def put_schema(self, name: str, version: str, schema_json: str, *, replace: bool = True) -> bool:
        """Store a schema; with ``replace=False`` only if (name, version) is free. Returns whether it was stored."""
        ...

    def get_schema(self, name: str, version: str) -> str | None:
        """A schema's JSON."""
        ...

    def schema_versions(self, name: str) -> list[str]:
        """The versions stored for a schema name."""
        ...

    def iter_schemas(self) -> Iterator[tuple[str, str, str]]:
        """Every ``(name, version, schema_json)``."""
        ...

    def put_lens(self, name: str, version: str, lens_json: str, *, replace: bool = True) -> bool:
        """Store a lens record; with ``replace=False`` only if (name, version) is free."""
        ...

    def get_lens(self, name: str, version: str) -> str | None:
        """A lens record's JSON."""
        ...

    def lens_versions(self, name: str) -> list[str]:
        """The versions stored for a lens name."""
        ...

    def iter_lenses(self) -> Iterator[tuple[str, str, str]]:
        """Every ``(name, version, lens_json)``."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
