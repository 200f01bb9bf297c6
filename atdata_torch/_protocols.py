"""The original atdata's protocols (``atdata._protocols``): :class:`Packable`, and :class:`DataSource`.

Example:
    >>> import atdata_torch as atd
    >>> class Custom:
    ...     @classmethod
    ...     def from_data(cls, data): return cls()
    ...     @classmethod
    ...     def from_bytes(cls, bs): return cls()
    ...     packed = b""
    ...     as_wds = {}
    >>> isinstance(Custom(), Packable), isinstance(object(), Packable)
    (True, False)
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from .sources._base import DataSource

__all__ = ["DataSource", "Packable"]


@runtime_checkable
class Packable(Protocol):
    """What a sample type offers to be written and read (``@packable`` classes and :class:`DictSample` do):
    ``from_data(dict)`` and ``from_bytes(bytes)`` build one, ``packed`` is its msgpack payload and ``as_wds`` its
    WebDataset dict (``{"__key__": ..., "msgpack": packed}``). ``isinstance`` checks only that they exist."""

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Any:
        """A sample from a dict of field values."""
        ...

    @classmethod
    def from_bytes(cls, bs: bytes) -> Any:
        """A sample from its msgpack payload."""
        ...

    @property
    def packed(self) -> bytes:
        """The msgpack payload."""
        ...

    @property
    def as_wds(self) -> dict[str, Any]:
        """The WebDataset member dict."""
        ...
