"""Batches to tensors: :class:`TensorBatch` and :func:`collate`.

NDArray columns become ``torch.Tensor`` s through ``torch.from_numpy`` (no copy: the batch arrays are fresh,
writable memory); other fields stay lists. A :class:`TensorBatch` implements ``pin_memory()`` (which torch's
pin-memory thread calls) and ``.to(device, non_blocking=...)``.

Example:
    >>> import numpy as np
    >>> from atdata_torch import DictSample, collate
    >>> tb = collate([DictSample(x=np.ones(2, np.float32), y="a"), DictSample(x=np.zeros(2, np.float32), y="b")])
    >>> tb.x.shape, tb.x.dtype, tb.y
    (torch.Size([2, 2]), torch.float32, ['a', 'b'])
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from . import _shm
from ._batch import SampleBatch
from ._shm import to_shared_tensor
from .errors import SchemaError

__all__ = ["TensorBatch", "collate", "to_tensor"]

# numpy kinds torch can hold: bool, signed/unsigned ints, floats, complex.
_TORCH_KINDS = frozenset("biufc")


def to_tensor(arr: np.ndarray[Any, Any], field: str | None = None) -> torch.Tensor:
    """One array to a tensor, sharing memory when torch can; big-endian arrays are converted to native order.

    Raises:
        SchemaError: for dtypes torch has no tensor type for (strings, datetimes, objects), naming the field.
    """
    dt = arr.dtype
    if dt.kind not in _TORCH_KINDS or dt.itemsize == 0 or dt.str[1:] == "f16" or dt.str[1:] == "c32":
        where = f"field {field!r}" if field else "array"
        raise SchemaError(
            f"{where} has dtype {dt}, which torch has no tensor type for; convert it in a map() stage "
            "(e.g. timestamps to int64, strings to token ids) or keep it out of collate",
            field=field,
        )
    if not dt.isnative:
        arr = arr.astype(dt.newbyteorder("="))
    elif arr.base is not None:
        shared = to_shared_tensor(arr)  # a worker's batch array in shared memory: its storage, sent as a handle
        if shared is not None:
            return shared
    if not arr.flags.writeable:
        arr = arr.copy()
    if any(s < 0 for s in arr.strides):
        arr = np.ascontiguousarray(arr)
    return torch.from_numpy(arr)


class TensorBatch:
    """A batch with the field names of its samples: NDArray fields as tensors, the rest as lists.

    Attributes:
        keys: The sample keys of the batch (when known).
        sample_type: The sample class the batch came from.
    """

    __slots__ = ("_fields", "_size", "keys", "sample_type")

    def __init__(
        self, fields: dict[str, Any], size: int, keys: list[str] | None = None, sample_type: type | None = None
    ) -> None:
        self._fields = fields
        self._size = size
        self.keys = keys
        self.sample_type = sample_type

    @classmethod
    def from_batch(cls, batch: SampleBatch[Any]) -> TensorBatch:
        """Convert a :class:`SampleBatch` (ndarray columns -> tensors, no copy)."""
        fields: dict[str, Any] = {}
        for name, col in batch.to_dict().items():
            fields[name] = to_tensor(col, name) if isinstance(col, np.ndarray) else col
        return cls(fields, len(batch), batch.keys, batch.sample_type)

    @property
    def fields(self) -> list[str]:
        """The field names."""
        return list(self._fields)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._fields[name]
        except KeyError:
            raise AttributeError(f"TensorBatch has no field {name!r}; fields are {list(self._fields)}") from None

    def __getitem__(self, name: str) -> Any:
        return self._fields[name]

    def __contains__(self, name: object) -> bool:
        return name in self._fields

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return self._size

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict."""
        return dict(self._fields)

    def _map_tensors(self, fn: Any) -> TensorBatch:
        return TensorBatch(
            {k: fn(v) if isinstance(v, torch.Tensor) else v for k, v in self._fields.items()},
            self._size,
            self.keys,
            self.sample_type,
        )

    def pin_memory(self, device: str | torch.device | None = None) -> TensorBatch:
        """Pinned copies of the tensors (called by DataLoader's pin-memory thread)."""
        return self._map_tensors(lambda t: t.pin_memory() if device is None else t.pin_memory(device))

    def to(self, device: str | torch.device, non_blocking: bool = False) -> TensorBatch:
        """The tensors moved to ``device``."""
        return self._map_tensors(lambda t: t.to(device, non_blocking=non_blocking))

    def __getstate__(self) -> tuple[Any, ...]:
        # Small CPU tensors travel inline as numpy (cheaper than a shared-memory segment each); large or shared
        # ones go through torch's reducers (shared memory, no copy).
        # In a Loader's worker, a tensor in one of its pooled shared segments also sends the segment's busy byte,
        # which the main process clears once it lets go of the tensor (see atdata_torch._shm).
        fields = {k: _inline(v) for k, v in self._fields.items()}
        if not _shm.active():
            return (fields, self._size, self.keys, self.sample_type)
        slots = {k: w for k, v in fields.items() if isinstance(v, torch.Tensor) and (w := _shm.slot_of(v)) is not None}
        return (fields, self._size, self.keys, self.sample_type, slots)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        fields, self._size, self.keys, self.sample_type = state[:4]
        self._fields = {k: torch.from_numpy(v.array) if isinstance(v, _Inline) else v for k, v in fields.items()}
        for k, where in (state[4] if len(state) > 4 else {}).items():
            _shm.release(self._fields[k], where)

    def __repr__(self) -> str:
        parts = []
        for n, v in self._fields.items():
            if isinstance(v, torch.Tensor):
                parts.append(f"{n}: Tensor{tuple(v.shape)} {str(v.dtype).replace('torch.', '')}")
            else:
                parts.append(f"{n}: list[{len(v)}]")
        return f"TensorBatch(size={self._size}; {', '.join(parts)})"


_INLINE_BYTES = 1 << 20


def _inline(v: Any) -> Any:
    """A small plain CPU tensor as an :class:`_Inline` numpy array; anything else unchanged."""
    if (
        isinstance(v, torch.Tensor)
        and v.device.type == "cpu"
        and v.layout == torch.strided
        and not v.is_shared()  # type: ignore[no-untyped-call]
        and v.nbytes < _INLINE_BYTES
        and not v.requires_grad
        and not v.is_conj()
        and not v.is_neg()
    ):
        try:
            return _Inline(v.numpy())
        except (TypeError, RuntimeError):  # dtypes numpy lacks (bfloat16, float8, quantized): torch's reducer
            return v
    return v


class _Inline:
    __slots__ = ("array",)

    def __init__(self, array: np.ndarray[Any, Any]) -> None:
        self.array = array

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Inline, (self.array,))


def collate(batch: SampleBatch[Any] | Sequence[Any]) -> TensorBatch:
    """Turn a :class:`SampleBatch` or a list of samples into a :class:`TensorBatch`.

    Usable as ``collate_fn`` of a ``DataLoader`` over a per-sample pipeline (``batch_size=k``) and as the
    conversion step of a batched one (``batch_size=None``).
    """
    if not isinstance(batch, SampleBatch):
        batch = SampleBatch.from_samples(list(batch))
    return TensorBatch.from_batch(batch)
