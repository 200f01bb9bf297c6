"""Where this process sits: rank and world size (DDP) and DataLoader worker. The one place that reads them.

Rank and world size are resolved in the main process (explicit arguments, then an initialized
``torch.distributed``, then the ``RANK``/``WORLD_SIZE`` environment, then ``(0, 1)``) and stored on the pipeline
before DataLoader workers start: under spawn/forkserver, workers have no initialized process group, and Lightning's
DDP launcher sets no ``RANK``, so a worker must never guess.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

__all__ = ["Topology", "resolve_rank_world", "worker_slot"]


class Topology(NamedTuple):
    """A reader's place: ``rank`` of ``world_size`` processes, ``worker`` of ``num_workers`` DataLoader workers."""

    rank: int
    world_size: int
    worker: int = 0
    num_workers: int = 1


def _env_int(*names: str) -> int | None:
    for n in names:
        v = os.environ.get(n)
        if v not in (None, ""):
            try:
                return int(v)
            except ValueError:
                raise ValueError(f"environment variable {n}={v!r} is not an integer") from None
    return None


def resolve_rank_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """Resolve (rank, world_size): explicit values win, then ``torch.distributed``, then the environment.

    Example:
        >>> resolve_rank_world(1, 4)
        (1, 4)
    """
    if rank is None or world_size is None:
        det_rank, det_world = 0, 1
        try:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                det_rank, det_world = dist.get_rank(), dist.get_world_size()
            else:
                raise RuntimeError
        except RuntimeError:
            env_world = _env_int("WORLD_SIZE")
            env_rank = _env_int("RANK")
            if env_rank is None:
                node, local, local_world = (
                    _env_int("NODE_RANK", "GROUP_RANK"),
                    _env_int("LOCAL_RANK"),
                    _env_int("LOCAL_WORLD_SIZE"),
                )
                if local is not None:
                    env_rank = (node or 0) * (local_world or 1) + local
            if env_world is not None:
                det_world = env_world
                det_rank = env_rank or 0
        rank = det_rank if rank is None else rank
        world_size = det_world if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size); got rank={rank}, world_size={world_size}")
    return rank, world_size


def worker_slot() -> tuple[int, int]:
    """(worker id, number of workers) of the calling DataLoader worker; ``(0, 1)`` in the main process."""
    info = _worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def control_slot() -> tuple[int, int, int]:
    """(worker id, number of workers, shared-control slot): slot 0 is the main process, ``1 + id`` a worker."""
    info = _worker_info()
    if info is None:
        return 0, 1, 0
    return info.id, info.num_workers, 1 + info.id


def _worker_info() -> Any:
    from torch.utils.data import get_worker_info

    return get_worker_info()
