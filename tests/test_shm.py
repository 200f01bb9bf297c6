"""Worker batches in shared memory (``atdata_torch._shm``): a worker's batch arrays are built in pooled shared
segments, so that sending a batch moves a handle (one copy from shard to tensor, not two); a segment is reused only
once the main process has let go of every tensor that views it; the main process keeps its zero-copy path."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

import atdata_torch as atd
from atdata_torch import _shm
from atdata_torch._batch import stack_encoded
from atdata_torch._ndarray import array_to_bytes
from atdata_torch.collate import TensorBatch, to_tensor

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")

ROW = (128, 256)  # 128 KiB of float32 per sample: a batch of 8 is 1 MiB, sent through shared memory


@atd.packable
class ShmRec:
    x: NDArray[np.float32]
    label: int


@pytest.fixture
def worker_pool() -> Iterator[_shm.SharedBatches]:
    """This process acting as a Loader's worker 0 (as ``Pipeline._run`` sets it up in a worker)."""
    owner = _shm.SharedBatches()
    _shm.enable(owner, 0)
    try:
        yield owner
    finally:
        _shm.enable(None)


def _encoded(n: int) -> list[bytes]:
    return [array_to_bytes(np.full(ROW, i, np.float32)) for i in range(n)]


def test_a_worker_batch_is_built_in_shared_memory_and_sent_without_a_copy(worker_pool: _shm.SharedBatches) -> None:
    arr = stack_encoded(_encoded(8))
    assert arr is not None and arr.nbytes >= _shm.MIN_SHARED
    t = to_tensor(arr, "x")
    assert t.is_shared()  # type: ignore[no-untyped-call]
    assert t.data_ptr() == arr.ctypes.data  # the decoder's array itself: no copy into a tensor
    ptr = t.untyped_storage().data_ptr()
    data = ForkingPickler.dumps(TensorBatch({"x": t}, 8))
    # torch's reducer sent a handle to the segment (a few hundred bytes for 1 MiB) and did not move the storage
    # into a fresh segment (share_memory_() on an unshared tensor copies it and changes its data pointer).
    assert len(data) < 4096
    assert t.untyped_storage().data_ptr() == ptr
    assert torch.equal(t[3], torch.full(ROW, 3.0))


def test_small_arrays_stay_ordinary_memory_in_a_worker(worker_pool: _shm.SharedBatches) -> None:
    arr = stack_encoded([array_to_bytes(np.zeros(4, np.float32))] * 8)
    assert arr is not None and not to_tensor(arr).is_shared()  # type: ignore[no-untyped-call]


def test_the_main_process_keeps_its_zero_copy_path() -> None:
    assert not _shm.active()
    arr = stack_encoded(_encoded(8))
    assert arr is not None
    t = to_tensor(arr)
    assert not t.is_shared() and t.data_ptr() == arr.ctypes.data  # type: ignore[no-untyped-call]


def test_a_segment_is_reused_only_once_its_byte_is_cleared(worker_pool: _shm.SharedBatches) -> None:
    a = _shm.empty((8, *ROW), np.float32)
    ta = _shm.to_shared_tensor(a)
    assert ta is not None
    where = _shm.slot_of(ta)
    assert where is not None and where[0] == worker_pool.token
    assert int(worker_pool.busy[where[1]]) == 1
    b = _shm.empty((8, *ROW), np.float32)  # the first is still held by the main process: another segment
    assert b.ctypes.data != a.ctypes.data
    worker_pool.busy[where[1]] = 0  # the main process let go of it
    c = _shm.empty((8, *ROW), np.float32)
    assert c.ctypes.data == a.ctypes.data


def test_release_clears_the_byte_only_when_every_view_is_gone() -> None:
    owner = _shm.SharedBatches()
    t = torch.zeros(1000)
    owner.busy[5] = 1
    _shm.release(t, (owner.token, 5))
    view = t[10:20]
    del t
    gc.collect()
    assert int(owner.busy[5]) == 1  # a view still reads the segment
    arr = view.numpy()
    del view
    gc.collect()
    assert int(owner.busy[5]) == 1  # so does a numpy array of it
    del arr
    gc.collect()
    assert int(owner.busy[5]) == 0


def test_release_of_an_unknown_loader_leaves_the_segment_busy() -> None:
    owner = _shm.SharedBatches()
    owner.busy[1] = 1
    t = torch.zeros(4)
    _shm.release(t, ((0, -1), 1))  # no such Loader in this process
    del t
    gc.collect()
    assert int(owner.busy[1]) == 1


def _dataset(tmp_path: Path, n: int = 64) -> atd.Dataset[ShmRec]:
    samples = [ShmRec(x=np.full(ROW, i, np.float32), label=i) for i in range(n)]
    written = atd.write_samples(samples, str(tmp_path / "shm.tar"), maxcount=16, progress=False)
    return atd.Dataset[ShmRec](written.list_shards())


def _labels_and_values(batches: list[Any]) -> list[tuple[int, float]]:
    out = []
    for b in batches:
        assert isinstance(b.x, torch.Tensor)
        out += [(int(lab), float(b.x[i, 0, 0])) for i, lab in enumerate(b.label)]
    return out


@pytest.mark.parametrize("shuffle", [False, True])
def test_worker_batches_held_by_the_loop_are_never_overwritten(tmp_path: Path, shuffle: bool) -> None:
    ds = _dataset(tmp_path)
    want = _labels_and_values(list(ds.loader(batch_size=8, shuffle=shuffle, seed=3, num_workers=0)))
    loader = ds.loader(batch_size=8, shuffle=shuffle, seed=3, num_workers=2, persistent_workers=True)
    owner = loader.pipeline.shared_batches
    assert owner is not None
    held = list(loader)  # every batch of the epoch held at once: more than a worker's slots
    assert all(b.x.is_shared() for b in held)
    assert int(owner.busy.sum()) > 0
    assert _labels_and_values(held) == want  # checked after the epoch: no segment was reused while held
    assert all(torch.equal(b.x[i], torch.full(ROW, float(lab))) for b in held for i, lab in enumerate(b.label))
    del held
    gc.collect()
    assert int(owner.busy.sum()) == 0  # let go: every segment can be reused
    again = []
    for b in loader:  # batches dropped one by one: segments recycled, values still right
        again += _labels_and_values([b])
        del b
    assert sorted(again) == sorted(want)


def test_collate_none_sends_sample_batches_as_before(tmp_path: Path) -> None:
    ds = _dataset(tmp_path, 32)
    loader = ds.loader(batch_size=8, shuffle=False, num_workers=1, collate_fn=None)
    assert loader.pipeline.shared_batches is None
    got = list(loader)
    assert [int(v) for b in got for v in b.label] == list(range(32))
    assert isinstance(got[0].x, np.ndarray)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="real pinning needs a GPU")
def test_pinned_worker_batches_are_right(tmp_path: Path) -> None:
    ds = _dataset(tmp_path)
    want = _labels_and_values(list(ds.loader(batch_size=8, shuffle=True, seed=3, num_workers=0)))
    loader = ds.loader(batch_size=8, shuffle=True, seed=3, num_workers=2, pin_memory=True)
    held = list(loader)
    assert all(b.x.is_pinned() for b in held)
    assert _labels_and_values(held) == want
    on_gpu = [b.to("cuda", non_blocking=True) for b in held]
    torch.cuda.synchronize()
    assert _labels_and_values([b.to("cpu") for b in on_gpu]) == want
