"""One search over several places: the local index and an app view (the original atdata's ``atdata.search``).

A :class:`SearchBackend` answers ``search(text=..., tags=..., schema_ref=..., repo=..., limit=..., cursor=...)``
with :class:`SearchResults`; :class:`LocalSearchBackend` searches an :class:`~atdata_torch.Index` (SQLite or
Redis), :class:`AppViewSearchBackend` an app view's ``searchDatasets`` endpoint, and :class:`SearchAggregator`
merges several, deduplicated by URI and by name.

Example:
    >>> import tempfile, os
    >>> import atdata_torch as atd
    >>> index = atd.Index(os.path.join(tempfile.mkdtemp(), "index.db"))
    >>> _ = index.insert_dataset(["/data/mnist-000.tar"], name="mnist-train", schema_ref="atdata://local/schema/Digit@1.0.0")
    >>> [r.name for r in atd.LocalSearchBackend(index).search(text="mnist").items]
    ['mnist-train']
    >>> index.close()
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .atmosphere import DESCRIBE_SERVICE, SEARCH_DATASETS, dataset_search_params
from .errors import ConfigError

__all__ = [
    "AppViewSearchBackend",
    "LocalSearchBackend",
    "SearchAggregator",
    "SearchBackend",
    "SearchResult",
    "SearchResults",
]

log = logging.getLogger("atdata_torch")

#: The app view endpoint the original queries (``science.alt.dataset.searchDatasets``).


@dataclass
class SearchResult:
    """One search hit from any backend.

    Attributes:
        uri: AT-URI (app view) or CID (local index).
        name: The dataset name.
        description: Its description, if any.
        tags: Its tags.
        schema_ref: Its schema reference, if known.
        source: The backend that found it (``"local"``, ``"atmosphere"``).
        score: A relevance score, if the backend gives one.
        record: The raw record, if the backend has one.
    """

    uri: str
    name: str
    description: str | None = None
    tags: list[str] = field(default_factory=list)
    schema_ref: str | None = None
    source: str = "unknown"
    score: float | None = None
    record: dict[str, Any] | None = None


@dataclass
class SearchResults:
    """A page of search hits.

    Attributes:
        items: The hits of this page.
        cursor: Pass it back as ``cursor=`` for the next page; ``None`` on the last page.
        total_hint: The number of hits across all pages, if the backend knows it.
        source: Which backend(s) answered (``"local"``, ``"atmosphere"``, ``"aggregated"``).
    """

    items: list[SearchResult] = field(default_factory=list)
    cursor: str | None = None
    total_hint: int | None = None
    source: str = "unknown"


@runtime_checkable
class SearchBackend(Protocol):
    """What a search backend provides: a ``name``, ``search(...)`` and ``health_check()``."""

    @property
    def name(self) -> str:
        """The backend's identifier (``"local"``, ``"atmosphere"``)."""
        ...

    def search(
        self,
        text: str | None = None,
        tags: list[str] | None = None,
        schema_ref: str | None = None,
        repo: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> SearchResults:
        """Datasets matching every given criterion (``tags``: all must match), at most ``limit`` of them."""
        ...

    def health_check(self) -> bool:
        """``True`` when the backend can answer."""
        ...


class _XrpcQuery(Protocol):
    """The one client method :class:`AppViewSearchBackend` needs (``Atmosphere.xrpc_query``)."""

    def xrpc_query(self, nsid: str, params: dict[str, Any] | None = None) -> dict[str, Any]: ...


def _check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"search: limit must be a positive int, got {limit!r}; pass e.g. limit=50")
    return limit


class AppViewSearchBackend:
    """Searches an app view (``science.alt.dataset.searchDatasets``) through a client's ``xrpc_query``.

    Args:
        atmosphere: An ``Atmosphere`` client with an app view configured (anything with
            ``xrpc_query(nsid, params=None) -> dict``).
    """

    def __init__(self, atmosphere: _XrpcQuery) -> None:
        self._atmo = atmosphere

    @property
    def name(self) -> str:
        """``"atmosphere"``."""
        return "atmosphere"

    def search(
        self,
        text: str | None = None,
        tags: list[str] | None = None,
        schema_ref: str | None = None,
        repo: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> SearchResults:
        """Query the app view; ``limit`` is capped at 100 (the app view's maximum).

        Raises:
            AppViewRequiredError: The client has no app view configured.
            AppViewUnavailableError: The app view cannot be reached.
        """
        params = dataset_search_params(
            text, tags=tags, schema_ref=schema_ref, repo=repo, limit=_check_limit(limit), cursor=cursor
        )
        result = self._atmo.xrpc_query(SEARCH_DATASETS, params=params)
        items = [
            SearchResult(
                uri=str(e.get("uri", "")),
                name=str(e.get("name", "")),
                description=e.get("description"),
                tags=list(e.get("tags", [])),
                schema_ref=e.get("schemaRef"),
                source="atmosphere",
                record=e,
            )
            for e in result.get("entries", [])
        ]
        return SearchResults(items=items, cursor=result.get("cursor"), total_hint=None, source="atmosphere")

    def health_check(self) -> bool:
        """``True`` when the app view answers ``describeService``."""
        try:
            self._atmo.xrpc_query(DESCRIBE_SERVICE)
        except Exception as exc:  # any failure means "not healthy", as in the original
            log.info("atdata_torch: app view health check failed: %s", exc)
            return False
        return True


class LocalSearchBackend:
    """Searches a local :class:`~atdata_torch.Index` (SQLite or Redis): name substring (any case), tags, schema.

    Args:
        index: The index to search (anything with ``list_datasets()`` returning ``IndexEntry``).
    """

    def __init__(self, index: Any) -> None:
        self._index = index

    @property
    def name(self) -> str:
        """``"local"``."""
        return "local"

    def search(
        self,
        text: str | None = None,
        tags: list[str] | None = None,
        schema_ref: str | None = None,
        repo: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> SearchResults:
        """Entries whose name contains ``text`` (any case), carrying every tag, of schema ``schema_ref``.

        ``repo`` is ignored (local entries have no repo); ``cursor`` is the offset of the page (a decimal string,
        as the previous page's ``cursor`` gives it).

        Raises:
            ConfigError: ``limit`` is not a positive int, or ``cursor`` is not one of this backend's cursors.
        """
        _check_limit(limit)
        try:
            offset = int(cursor) if cursor else 0
        except ValueError:
            offset = -1
        if offset < 0:
            raise ConfigError(
                f"LocalSearchBackend.search: cursor must be a previous page's cursor (a decimal offset), got "
                f"{cursor!r}; pass cursor=None for the first page"
            )
        needle = text.lower() if text else None
        matched = [
            SearchResult(
                uri=e.cid,
                name=e.name,
                description=e.description,
                tags=e.tags,
                schema_ref=e.schema_ref,
                source="local",
            )
            for e in self._index.list_datasets()
            if (needle is None or needle in e.name.lower())
            and (schema_ref is None or e.schema_ref == schema_ref)
            and (tags is None or all(t in e.tags for t in tags))
        ]
        end = offset + limit
        return SearchResults(
            items=matched[offset:end],
            cursor=str(end) if end < len(matched) else None,
            total_hint=len(matched),
            source="local",
        )

    def health_check(self) -> bool:
        """Always ``True``."""
        return True


class SearchAggregator:
    """Queries several backends in order and merges their hits, deduplicated by URI and by name (any case).

    The first occurrence wins; scored hits come first (highest first), then by name. A backend that fails its
    health check, or raises, is skipped with a logged warning naming it (as the original does).

    Args:
        backends: The backends, in order of preference.
    """

    def __init__(self, backends: list[SearchBackend]) -> None:
        self._backends = list(backends)

    def search(
        self,
        text: str | None = None,
        tags: list[str] | None = None,
        schema_ref: str | None = None,
        repo: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> SearchResults:
        """Every healthy backend's hits for these criteria, at most ``limit`` in all; ``cursor`` is unused."""
        _check_limit(limit)
        hits: list[SearchResult] = []
        for backend in self._backends:
            if not backend.health_check():
                log.warning("atdata_torch: search backend %s failed its health check, skipping it", backend.name)
                continue
            try:
                page = backend.search(text=text, tags=tags, schema_ref=schema_ref, repo=repo, limit=limit)
            except Exception as exc:  # one backend down must not sink the others (the original's behaviour)
                log.warning(
                    "atdata_torch: search backend %s raised %s: %s; skipping it", backend.name, type(exc).__name__, exc
                )
                continue
            hits.extend(page.items)
        unique = _deduplicate(hits)
        unique.sort(key=lambda r: (r.score is None, -(r.score or 0.0), r.name))
        return SearchResults(items=unique[:limit], cursor=None, total_hint=len(unique), source="aggregated")


def _deduplicate(items: list[SearchResult]) -> list[SearchResult]:
    """The first hit of each URI and of each name (any case)."""
    seen_uris: set[str] = set()
    seen_names: set[str] = set()
    unique = []
    for item in items:
        if item.uri in seen_uris or item.name.lower() in seen_names:
            continue
        seen_uris.add(item.uri)
        seen_names.add(item.name.lower())
        unique.append(item)
    return unique
