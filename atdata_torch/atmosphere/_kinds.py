"""The records of one ``science.alt.dataset.*`` kind in a repo, from both namespaces (current first, then legacy)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ._lexicon import COLLECTIONS, LEGACY_COLLECTIONS
from ._xrpc import XrpcRepo

__all__ = ["list_kind"]


def list_kind(xrpc: XrpcRepo, kind: str, repo: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(at-uri, record)`` of every ``kind`` record (``"schema"``, ``"entry"``, ``"label"``, ``"lens"``) in ``repo``
    (``None``: the logged-in account's), from :data:`~atdata_torch.atmosphere.COLLECTIONS` then
    :data:`~atdata_torch.atmosphere.LEGACY_COLLECTIONS`."""
    for table in (COLLECTIONS, LEGACY_COLLECTIONS):
        yield from xrpc.list_records(table[kind], repo=repo)
