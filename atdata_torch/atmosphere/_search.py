"""Finding dataset entries without an app view: every repo a PDS hosts (or the ones named), filtered by text/tags."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from ..errors import IdentityError, RecordNotFoundError
from ._datasets import list_datasets
from ._lexicon import DatasetRecord
from ._xrpc import XrpcRepo

__all__ = ["search"]

log = logging.getLogger("atdata_torch")


def search(
    xrpc: XrpcRepo,
    text: str | None = None,
    *,
    repos: Iterable[str] | None = None,
    tags: Iterable[str] | None = None,
    limit: int | None = 50,
) -> list[DatasetRecord]:
    """See :meth:`Atmosphere.search`."""
    needle = text.lower() if text else None
    want = set(tags or ())
    dids = [xrpc.resolve(r) for r in repos] if repos is not None else xrpc.list_repos()
    hits: list[DatasetRecord] = []
    for did in dids:
        try:
            entries = list_datasets(xrpc, did)
        except (RecordNotFoundError, IdentityError) as exc:
            log.info("atdata_torch: search skips %s (%s)", did, exc)
            continue
        for e in entries:
            if want and not want.issubset(e.tags):
                continue
            hay = " ".join([e.name, e.description or "", " ".join(e.tags)]).lower()
            if needle is None or needle in hay:
                hits.append(e)
    hits.sort(key=lambda r: r.created_at or "", reverse=True)
    return hits if limit is None else hits[:limit]
