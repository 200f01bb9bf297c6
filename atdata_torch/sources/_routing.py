"""Routing: which download of a remote source follows which pass's placement router (its array bytes received
straight into batch rows, see ``atdata_torch._placement``), and only for the pass that routed it.

The state is the source's per-process state (under its lock): ``routers`` (shard -> the router of a download not
started yet), ``taken`` (shard -> a streamed download handed to a pass, which :meth:`RoutedDownloads.route` may
still reach) and ``pending`` (the read-ahead downloads).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, TypeGuard

from ._jobs import _Job

if TYPE_CHECKING:
    from .._placement import Router

__all__ = ["RoutedDownloads"]


def _routed_elsewhere(got: object, owner: Any) -> TypeGuard[_Job]:
    """Whether ``got`` is a download routed for a pass other than ``owner``'s (it must not be handed over)."""
    return isinstance(got, _Job) and got.router is not None and got.router.owner is not owner


class RoutedDownloads:
    """The routing half of :class:`~._remote.RemoteSource` (the :class:`~._capabilities.Routing` capability)."""

    if TYPE_CHECKING:

        def _state(self) -> dict[str, Any]: ...

    def _claim_router(self, shard: str, owner: Any) -> Router | None:
        """The router ``owner``'s pass set for ``shard`` before its download started, taken out of the state (under
        the state's lock); ``None`` when there is none, or it is another pass's."""
        routers: dict[str, Router] = self._state()["routers"]
        router = routers.get(shard)
        if router is not None and router.owner is owner:
            del routers[shard]
            return router
        return None

    def _taken(self, shard: str, got: Any, owner: Any) -> None:
        """Remember a streamed download handed to a pass that places bytes: :meth:`route` may still reach it
        (under the state's lock)."""
        if owner is not None and isinstance(got, _Job) and got.streamed:
            self._state()["taken"][shard] = (weakref.ref(got), owner)

    def route(self, shard: str, router: Router) -> None:
        """Receive the placed ranges of ``shard`` straight into batch rows (see ``atdata_torch._placement``): the
        download of it that is on its way takes the router up at the byte it has reached; one started later,
        from the start. Only the router's owner gets such a download (:meth:`stream_buffer`)."""
        st = self._state()
        with st["lock"]:
            job = st["pending"].get(shard)
            if job is None:  # the owner took it already and it is still arriving, or it has not started
                ref, owner = st["taken"].get(shard, (None, None))
                job = ref() if ref is not None and owner is router.owner else None
                if job is None:
                    st["routers"][shard] = router
            if isinstance(job, _Job) and job.streamed and job.router is None:
                job.router = router

    def unroute(self, owner: Any) -> None:
        """The pass of ``owner`` ended: forget its routers, and stop the downloads that follow them."""
        st = self._state()
        with st["lock"]:
            routers: dict[str, Router] = st["routers"]
            for shard in [s for s, r in routers.items() if r.owner is owner]:
                del routers[shard]
            taken = st["taken"]
            for shard in [s for s, (_, o) in taken.items() if o is owner]:
                del taken[shard]
            pending = st["pending"]
            for shard in [s for s, j in pending.items() if isinstance(j, _Job) and j.router is not None]:
                if pending[shard].router.owner is owner:
                    pending.pop(shard).cancel()
