"""Packable classes whose annotations are strings (``from __future__ import annotations``).

Imported by test_schema.py; kept in its own module so that the test module itself uses ordinary
annotations.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from numpy.typing import NDArray

import atdata_torch as atd


@atd.packable
class FutureSample:
    image: NDArray
    raw: np.ndarray
    mask: NDArray[np.uint8]
    maybe: Optional[NDArray]  # noqa: UP045
    maybe2: NDArray | None
    name: str
    count: int
    score: float
    flag: bool
    blob: bytes
    tags: list[str]
    meta: dict
    extra: dict | None = None
    anything: Any = None


def make_local_class() -> type:
    """A packable class defined in a function, using a local alias (found via the caller frame)."""
    Alias = NDArray[np.float32]

    @atd.packable
    class LocalFuture:
        x: Alias
        n: int | None = None

    return LocalFuture
