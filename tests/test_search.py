"""atdata_torch.search: the original atdata's search API over real local indexes and a small app view stand-in."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

import atdata_torch as atdata

REF = "atdata://local/schema/Digit@1.0.0"


def _index(path: Path, names: list[tuple[str, list[str]]]) -> atdata.Index:
    index = atdata.Index(str(path))
    for name, tags in names:
        index.insert_dataset([f"/data/{name}-000.tar"], name=name, schema_ref=REF, tags=tags)
    return index


class _AppView:
    """The one method AppViewSearchBackend uses, answering like an app view."""

    def __init__(self, entries: list[dict[str, Any]], up: bool = True) -> None:
        self.entries, self.up, self.calls = entries, up, []  # type: ignore[var-annotated]

    def xrpc_query(self, nsid: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.calls.append((nsid, params))
        if not self.up:
            raise atdata.AppViewUnavailableError("app view down")
        if nsid.endswith("describeService"):
            return {"did": "did:web:appview"}
        return {"entries": self.entries, "cursor": "next"}


def test_local_backend_filters_and_pages(tmp_path: Path) -> None:
    index = _index(tmp_path / "a.db", [("mnist-train", ["vision"]), ("mnist-test", ["vision"]), ("imdb", ["text"])])
    backend = atdata.LocalSearchBackend(index)
    assert isinstance(backend, atdata.SearchBackend) and backend.name == "local" and backend.health_check()
    assert sorted(r.name for r in backend.search(text="MNIST").items) == ["mnist-test", "mnist-train"]
    assert [r.name for r in backend.search(tags=["text"]).items] == ["imdb"]
    assert backend.search(schema_ref="atdata://local/schema/Other@1.0.0").items == []
    first = backend.search(limit=2)
    assert len(first.items) == 2 and first.cursor == "2" and first.total_hint == 3 and first.source == "local"
    rest = backend.search(limit=2, cursor=first.cursor)
    assert len(rest.items) == 1 and rest.cursor is None
    hit = rest.items[0]
    assert hit.source == "local" and hit.uri.startswith("bafy") and hit.schema_ref == REF
    with pytest.raises(atdata.ConfigError, match="cursor"):
        backend.search(cursor="abc")
    with pytest.raises(atdata.ConfigError, match="limit"):
        backend.search(limit=0)
    index.close()


def test_appview_backend_maps_entries_and_params() -> None:
    client = _AppView([{"uri": "at://did:plc:x/e/1", "name": "mnist", "tags": ["vision"], "schemaRef": REF}])
    backend = atdata.AppViewSearchBackend(client)
    assert backend.name == "atmosphere" and backend.health_check()
    res = backend.search(text="mnist", tags=["vision"], limit=500, cursor="c1")
    assert client.calls[-1] == (
        "science.alt.dataset.searchDatasets",
        {"limit": 100, "q": "mnist", "tags": ["vision"], "cursor": "c1"},
    )
    assert res.cursor == "next" and res.source == "atmosphere"
    assert res.items[0].uri == "at://did:plc:x/e/1" and res.items[0].schema_ref == REF
    assert res.items[0].record is not None
    assert atdata.AppViewSearchBackend(_AppView([], up=False)).health_check() is False


def test_aggregator_merges_two_real_indexes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a = _index(tmp_path / "a.db", [("mnist", ["vision"]), ("cifar", ["vision"])])
    b = _index(tmp_path / "b.db", [("MNIST", ["vision"]), ("imdb", ["text"])])
    down = atdata.AppViewSearchBackend(_AppView([], up=False))
    agg = atdata.SearchAggregator([atdata.LocalSearchBackend(a), down, atdata.LocalSearchBackend(b)])
    with caplog.at_level(logging.WARNING, logger="atdata_torch"):
        res = agg.search()
    assert [r.name for r in res.items] == ["cifar", "imdb", "mnist"]  # "MNIST" from b is a duplicate by name
    assert res.source == "aggregated" and res.total_hint == 3 and res.cursor is None
    assert "atmosphere failed its health check" in caplog.text
    assert [r.name for r in agg.search(limit=1).items] == ["cifar"]
    a.close()
    b.close()


def test_the_originals_module_path_works() -> None:
    import atdata_torch.search as search

    assert search.SearchResult is atdata.SearchResult and search.SearchResults().items == []
