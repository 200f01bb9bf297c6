"""What a shard source can do beyond listing and opening shards, declared as protocols.

Every source lists and opens shards (:class:`~atdata_torch.sources.ShardSource`). The read path asks for more
through these structural protocols (``isinstance(source, Prefetching)``) instead of probing attribute names: a
source that has the methods has the capability, without inheriting anything.

Example:
    >>> from atdata_torch.sources import LocalSource
    >>> isinstance(LocalSource(["a.tar"]), Buffered), isinstance(LocalSource(["a.tar"]), Prefetching)
    (True, False)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .._placement import Router
    from ._filling import Buffer, Filling

__all__ = ["Buffered", "Prefetching", "RangeReading", "Routing", "SidecarBatching", "SidecarReading", "Streaming"]


@runtime_checkable
class Buffered(Protocol):
    """Gives a whole shard as bytes in memory (``None``: it cannot, read the stream instead)."""

    def buffer(self, shard: str) -> Buffer | None: ...


@runtime_checkable
class Streaming(Protocol):
    """Gives a shard as a buffer that may still be filling (a download in progress), for the pass ``owner``."""

    def stream_buffer(self, shard: str, owner: Any = None) -> Buffer | Filling | None: ...


@runtime_checkable
class RangeReading(Protocol):
    """Reads ``[start, end)`` of a shard without reading the rest."""

    def read_range(self, shard: str, start: int, end: int) -> bytes: ...


@runtime_checkable
class Prefetching(Protocol):
    """Starts fetching shards the pass will read, in the order given."""

    def prefetch(self, shards: Iterable[str]) -> None: ...


@runtime_checkable
class SidecarReading(Protocol):
    """Gives the bytes of a shard's index sidecar (``<shard>.idx.json``), or ``None`` when it has none."""

    def read_sidecar(self, shard: str) -> bytes | None: ...


@runtime_checkable
class SidecarBatching(Protocol):
    """Reads the index sidecars of many shards at once (one round trip each, in parallel)."""

    def read_sidecars(self, shards: list[str]) -> None: ...


@runtime_checkable
class Routing(Protocol):
    """Places the array bytes of a shard straight into batch rows as they are read (see ``atdata_torch._placement``)."""

    def route(self, shard: str, router: Router) -> None: ...

    def unroute(self, owner: Any) -> None: ...
