"""The pytest fixtures of ``atdata_torch.testing`` (the original's names): ``mock_atmosphere``, ``tmp_dataset``,
``tmp_index``. Imported by the package only when pytest is installed.

Use them with ``pytest_plugins = ["atdata_torch.testing"]`` in your top-level ``conftest.py`` (or
``pytest -p atdata_torch.testing``); nothing is registered automatically.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..dataset import Dataset
from ..index import Index
from ..schema import packable
from ._factories import make_dataset, mock_index
from ._mock import MockAtmosphere

__all__ = ["mock_atmosphere", "tmp_dataset", "tmp_index"]


@pytest.fixture
def mock_atmosphere() -> Iterator[MockAtmosphere]:
    """A fresh :class:`MockAtmosphere`, logged in as ``test.mock.social``; reset and closed afterwards."""
    client = MockAtmosphere()
    client.login("test.mock.social", "test-password")
    yield client
    client.reset()
    client.close()


@packable
class _TmpSample:
    """The sample type of ``tmp_dataset``."""

    name: str
    value: int


@pytest.fixture
def tmp_dataset(tmp_path: Path) -> Dataset[Any]:
    """A ``Dataset`` of 10 samples ``(name="s<i>", value=i)`` in one shard under ``tmp_path``."""
    make: Any = _TmpSample  # a @packable class: its fields are its constructor's arguments
    samples = [make(name=f"s{i}", value=i) for i in range(10)]
    return make_dataset(tmp_path, samples, sample_type=_TmpSample)


@pytest.fixture
def tmp_index(tmp_path: Path) -> Iterator[Index]:
    """A fresh SQLite-backed ``Index`` in ``tmp_path`` (closed afterwards)."""
    index = mock_index(tmp_path)
    yield index
    index.close()
