"""Test helpers (the original atdata's ``atdata.testing``): an in-memory AT Protocol account, dataset, sample and
index factories, and pytest fixtures. No Redis, S3, PDS or network needed.

- :class:`MockAtmosphere`: a real :class:`~atdata_torch.atmosphere.Atmosphere` over an in-memory repo; the
  publisher and loader classes accept it.
- :func:`make_dataset`, :func:`make_samples`, :func:`mock_index`.
- Fixtures ``mock_atmosphere``, ``tmp_dataset``, ``tmp_index``: add ``pytest_plugins = ["atdata_torch.testing"]``
  to your top-level ``conftest.py`` (nothing is registered automatically). pytest is optional: without it the
  module imports and the fixtures are simply absent.

Example:
    >>> import atdata_torch as atd
    >>> import atdata_torch.testing as at_test
    >>> @atd.packable
    ... class Row:
    ...     name: str
    ...     score: float
    >>> [r.name for r in at_test.make_samples(Row, n=2, seed=1)]
    ['name_0', 'name_1']
    >>> with at_test.MockAtmosphere() as client:
    ...     client.login("alice.test", "password")["did"]
    'did:plc:mock000000000000'
"""

from __future__ import annotations

import importlib.util as _util

from ._factories import make_dataset, make_samples, mock_index
from ._mock import MockAtmosphere, MockAtmosphereClient

if _util.find_spec("pytest") is not None:  # pytest is optional: without it there are no fixtures
    from ._fixtures import mock_atmosphere, tmp_dataset, tmp_index  # noqa: F401 (pytest finds them here)

__all__ = [
    "MockAtmosphere",
    "MockAtmosphereClient",
    "make_dataset",
    "make_samples",
    "mock_index",
]
