"""Buffers reused across shards: one pool per kind and process, shared by every source and epoch in it.

Remote downloads (whole shards and segments), local reads and placed batch rows take their memory from here, so
that bytes arrive in pages that are already mapped (see :class:`_BufferPool`).
"""

from __future__ import annotations

import os
import threading
import time
import weakref

import numpy as np

__all__ = ["_BufferPool", "_buffer_pool"]


class _BufferPool:
    """Download buffers reused across shards, so that a shard arrives in memory that is already mapped.

    One pool per process, shared by every remote source and epoch in it. A fresh shard-sized buffer costs a page
    fault per page, which the kernel zero-fills while the download waits (measured on loopback, image shape: page
    zeroing was the largest single cost in a profile; reuse gave a median of 12,196 vs 10,420 samples/s, and took
    away the slow passes, 4,263-11,003 with fresh buffers vs 10,288-12,660). A buffer is handed
    out as a numpy view and reused only once that view is gone: everything that refers to the shard's bytes (the
    memoryview of the shard, records' payloads, decoded arrays that alias them) keeps the view alive. At most
    ``keep`` buffers are kept; the spare ones are dropped when downloads go idle (:meth:`release`).
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._slots: list[_Slot] = []
        self._lock = threading.Lock()

    def get(self, size: int) -> np.ndarray:
        """An uninitialised ``uint8`` array of ``size`` bytes (a view of a pooled buffer when one is free)."""
        with self._lock:
            best: _Slot | None = None
            for slot in self._slots:
                # A free buffer that fits without wasting more than half of it; the smallest such, and of those the
                # one freed last (its bytes are likelier to be in the CPU cache still).
                if (
                    slot.free
                    and size <= len(slot.arr) <= 2 * size
                    and (best is None or (len(slot.arr), -slot.free_since) < (len(best.arr), -best.free_since))
                ):
                    best = slot
            if best is None:
                arr = np.empty(size, np.uint8)
                if len(self._slots) < self.keep:
                    best = _Slot(arr)
                    self._slots.append(best)
                else:  # full: replace a free buffer, if any (the new size is the likelier one from now on)
                    free = [i for i, slot in enumerate(self._slots) if slot.free]
                    if not free:
                        return arr
                    best = self._slots[free[0]] = _Slot(arr)
            return best.hand_out(size)

    def in_use(self) -> int:
        """Buffers handed out and not free yet."""
        with self._lock:
            return sum(1 for slot in self._slots if not slot.free)

    def release(self, idle: float = 0.0) -> None:
        """Drop the buffers nothing has referred to for ``idle`` seconds."""
        cutoff = time.monotonic() - idle
        with self._lock:
            self._slots = [slot for slot in self._slots if not (slot.free and slot.free_since <= cutoff)]

    def __len__(self) -> int:
        return len(self._slots)


class _Slot:
    """A pooled buffer, and the view of it handed out (freed when that view is gone)."""

    __slots__ = ("__weakref__", "arr", "free_since", "view")

    def __init__(self, arr: np.ndarray) -> None:
        self.arr = arr
        self.view: weakref.ref[np.ndarray] | None = None
        self.free_since = time.monotonic()

    @property
    def free(self) -> bool:
        return self.view is None or self.view() is None

    def hand_out(self, size: int) -> np.ndarray:
        view = self.arr[:size]
        self.view = weakref.ref(view, self._freed)
        return view

    def _freed(self, _ref: object) -> None:
        self.free_since = time.monotonic()


_POOLS: dict[str, _BufferPool] = {}  # this process's pools by kind (sources and epochs share them)
_POOL_LOCK = threading.Lock()


def _pool_after_fork() -> None:
    """A forked child (a DataLoader worker) starts with no pool and a fresh lock (a download thread of the parent
    may have held it at the fork)."""
    global _POOL_LOCK
    _POOL_LOCK = threading.Lock()
    _POOLS.clear()


os.register_at_fork(after_in_child=_pool_after_fork)


def _buffer_pool(keep: int, kind: str = "shard") -> _BufferPool:
    """This process's pool of ``kind`` buffers (whole shards, or segments), keeping at least ``keep`` of them (a
    forked child starts its own)."""
    with _POOL_LOCK:
        pool = _POOLS.get(kind)
        if pool is None:
            pool = _POOLS[kind] = _BufferPool(keep)
        pool.keep = max(pool.keep, keep)
        return pool


def release_idle(idle: float) -> None:
    """Drop the buffers of every pool of this process that nothing has referred to for ``idle`` seconds."""
    for pool in list(_POOLS.values()):
        pool.release(idle)
