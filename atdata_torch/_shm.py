"""Batch arrays in shared memory, for DataLoader workers: one copy from shard to the tensor a worker sends.

A worker's batch travels to the main process through torch's reducers: a tensor whose storage is not in shared
memory is first copied into a fresh shared-memory segment (``share_memory_()``), a second pass over every byte after
the copy that built the batch. torch's own ``default_collate`` avoids the copy by allocating its stacked output in
shared memory when it runs in a worker; this module does the same for the columnar decoder, and reuses the segments.

While a worker's :class:`SharedBatches` is on (a :class:`~atdata_torch.Loader` with workers and the default collate
makes one in the main process, and each worker turns it on, see ``Pipeline._run``), :func:`empty` gives batch arrays
of at least :data:`MIN_SHARED` bytes as numpy views of shared storage, the decoder writes into them, and
:func:`to_shared_tensor` turns such a view back into a tensor of that storage, which torch sends as a handle (a file
descriptor), not as bytes. Smaller arrays are sent inline (see ``collate._inline``): a segment costs more than
copying them.

Segments are reused: a fresh one costs far more than the copy it saves (torch ``fallocate`` s it, then every 4 KiB
page faults in as it is written: 1.3 ms per MiB on this machine, vs 0.25 ms for an anonymous numpy array with huge
pages). Each worker owns :data:`SLOTS` slots; one byte per slot in a shared ``uint8`` tensor says whether the main
process still holds the segment. The worker sets it when it hands the segment out; the main process clears it when
the storage it received for that segment dies (a ``weakref.finalize`` on the storage: torch keeps a storage's Python
object alive as long as any tensor, view or numpy array refers to the storage, so the byte is cleared only once
nothing in the main process can read the segment). The worker reuses only segments whose byte is clear; with none
free it makes a fresh segment outside the pool (what ``default_collate`` does for every batch), so it never waits.

In the main process (``num_workers=0``) nothing changes: batch arrays are ordinary numpy memory, wrapped without a
copy.
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from typing import Any, cast

import numpy as np
import torch

__all__ = [
    "MIN_SHARED",
    "SLOTS",
    "SharedBatches",
    "active",
    "empty",
    "enable",
    "release",
    "slot_of",
    "to_shared_tensor",
]

MIN_SHARED = 1 << 20  # smaller batch arrays are sent inline (collate._INLINE_BYTES), not through shared memory
SLOTS = 16  # reusable segments per worker (batches in flight: prefetch_factor per worker, plus what the loop holds)
MAX_WORKERS = 256  # workers that get slots (others allocate fresh segments)

_TOKENS = itertools.count(1)
_REGISTRY: weakref.WeakValueDictionary[tuple[int, int], SharedBatches] = weakref.WeakValueDictionary()


class SharedBatches:
    """The busy bytes of one Loader's workers' segments (made in the main process, inherited by its workers)."""

    def __init__(self) -> None:
        self.busy = torch.zeros(MAX_WORKERS * SLOTS, dtype=torch.uint8)
        self.busy.share_memory_()  # type: ignore[no-untyped-call]
        self.token = (os.getpid(), next(_TOKENS))
        _REGISTRY[self.token] = self

    def __getstate__(self) -> dict[str, Any]:
        return {"busy": self.busy, "token": self.token}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.busy, self.token = state["busy"], state["token"]
        # (a spawned worker: the main process's registry holds the original)


class _Pool:
    """One worker's segments: slot ``i`` is byte ``base + i`` of the busy bytes."""

    def __init__(self, owner: SharedBatches, worker: int) -> None:
        self.owner = owner
        self.base = worker * SLOTS if worker < MAX_WORKERS else -1
        self.storages: list[torch.UntypedStorage | None] = [None] * SLOTS
        self.slot_at: dict[int, int] = {}  # data pointer -> slot
        self.lock = threading.Lock()

    def take(self, nbytes: int) -> torch.UntypedStorage:
        if self.base < 0:
            return _segment(nbytes)
        busy = self.owner.busy
        with self.lock:
            spare: int | None = None  # a free slot to (re)fill: an empty one, else one of another size
            for i, st in enumerate(self.storages):
                if busy[self.base + i]:
                    continue
                if st is not None and nbytes <= st.nbytes() <= 2 * nbytes:
                    busy[self.base + i] = 1
                    return st
                if spare is None or (st is None and self.storages[spare] is not None):
                    spare = i
            if spare is None:
                return _segment(nbytes)  # every slot in flight: a segment of its own
            old = self.storages[spare]
            if old is not None:
                self.slot_at.pop(old.data_ptr(), None)
            st = _segment(nbytes)
            self.storages[spare] = st
            self.slot_at[st.data_ptr()] = spare
            busy[self.base + spare] = 1
            return st


_STATE: list[_Pool | None] = [None]  # this process's pool (a worker sets it; the main process never does)


def enable(owner: SharedBatches | None, worker: int = 0) -> None:
    """Turn shared batch arrays on (``owner``: the Loader's busy bytes; ``worker``: this worker's id) or off."""
    pool = _STATE[0]
    if owner is None:
        _STATE[0] = None
    elif pool is None or pool.owner is not owner or pool.base != (worker * SLOTS if worker < MAX_WORKERS else -1):
        _STATE[0] = _Pool(owner, worker)


def active() -> bool:
    """Whether batch arrays of :data:`MIN_SHARED` bytes or more are allocated in shared memory here."""
    return _STATE[0] is not None


def empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised array: in shared memory (a pooled segment) while :func:`active` and it holds
    :data:`MIN_SHARED` bytes or more, else ordinary numpy memory."""
    dt = np.dtype(dtype)
    pool = _STATE[0]
    if pool is None:
        return np.empty(shape, dt)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    if nbytes < MIN_SHARED or dt.hasobject or not dt.isnative:
        return np.empty(shape, dt)
    storage = pool.take(nbytes)
    flat: np.ndarray = torch.empty(0, dtype=torch.uint8).set_(storage).numpy()
    out: np.ndarray = flat[:nbytes].view(dt).reshape(shape)
    return out


def to_shared_tensor(arr: np.ndarray) -> torch.Tensor | None:
    """The tensor of the shared storage ``arr`` views (made by :func:`empty`), without a copy; ``None`` when
    ``arr`` is not such a view (or not one torch can describe with the same strides)."""
    base: Any = arr.base
    while isinstance(base, np.ndarray):
        base = base.base
    if not isinstance(base, torch.Tensor):
        return None
    storage = base.untyped_storage()
    if not storage.is_shared():
        return None
    item = arr.dtype.itemsize
    off = arr.ctypes.data - storage.data_ptr()
    if off < 0 or off % item or any(s % item or s < 0 for s in arr.strides) or not arr.dtype.isnative:
        return None
    try:
        dtype = torch.from_numpy(np.empty(0, arr.dtype)).dtype
    except TypeError:
        return None
    out = torch.empty(0, dtype=dtype)
    return out.set_(storage, off // item, arr.shape, [s // item for s in arr.strides])


def slot_of(t: torch.Tensor) -> tuple[tuple[int, int], int] | None:
    """``(token, byte)`` of the pooled segment a tensor of this worker lies in, for the main process to clear once
    it lets go of the segment (see :func:`release`); ``None`` for any other tensor."""
    pool = _STATE[0]
    if pool is None or pool.base < 0:
        return None
    slot = pool.slot_at.get(t.untyped_storage().data_ptr())
    return None if slot is None else (pool.owner.token, pool.base + slot)


def release(t: torch.Tensor, where: tuple[tuple[int, int], int]) -> None:
    """In the main process: clear the segment's busy byte once the storage of ``t`` (received from a worker) dies.
    A batch unpickled anywhere else (no such Loader here) leaves the byte set: its worker then uses fresh segments."""
    token, byte = where
    owner = _REGISTRY.get(tuple(token))  # type: ignore[arg-type]
    if owner is None or not 0 <= byte < len(owner.busy):
        return
    weakref.finalize(t.untyped_storage(), _clear, owner.busy, byte)


def _segment(nbytes: int) -> torch.UntypedStorage:
    """A fresh shared-memory segment of ``nbytes`` (torch's sharing strategy: a file descriptor by default)."""
    return cast(torch.UntypedStorage, torch.UntypedStorage._new_shared(nbytes))  # type: ignore[no-untyped-call]


def _clear(busy: torch.Tensor, byte: int) -> None:
    busy[byte] = 0
