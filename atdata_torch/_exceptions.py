"""The original atdata's ``atdata._exceptions`` path: its error classes, which live in :mod:`atdata_torch.errors`.

Example:
    >>> from atdata_torch._exceptions import LensNotFoundError, SampleKeyError
    >>> issubclass(LensNotFoundError, ValueError), issubclass(SampleKeyError, KeyError)
    (True, True)
"""

from __future__ import annotations

from .errors import (
    AppViewError,
    AppViewRequiredError,
    AppViewUnavailableError,
    AtdataError,
    LensNotFoundError,
    SampleKeyError,
    SchemaError,
    ShardError,
)

__all__ = [
    "AppViewError",
    "AppViewRequiredError",
    "AppViewUnavailableError",
    "AtdataError",
    "LensNotFoundError",
    "SampleKeyError",
    "SchemaError",
    "ShardError",
]


def __getattr__(name: str) -> object:
    # PartialFailureError is added to errors.py by another part of issue 17: found there once it exists.
    from . import errors

    try:
        return getattr(errors, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
