"""SampleBatch: one stacked numpy array per NDArray field, a list for everything else."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Generic, TypeVar

import numpy as np

from . import _shm
from ._ndarray import parse_array_header
from .errors import DecodeError
from .schema import DictSample, PackableSample

__all__ = ["SampleBatch"]

T = TypeVar("T")


def stack_column(values: Sequence[Any]) -> Any:
    """Stack a column of arrays into one new (writable) array when they agree in dtype and shape; else a list."""
    if not values or not all(isinstance(v, np.ndarray) for v in values):
        return list(values)
    first = values[0]
    if any(v.shape != first.shape or v.dtype != first.dtype for v in values):
        return list(values)
    out = _shm.empty((len(values), *first.shape), first.dtype)  # shared memory in a Loader's worker (see _shm)
    for i, v in enumerate(values):
        out[i] = v
    return out


def stack_encoded(values: Sequence[Any]) -> Any:
    """Stack a column of ndarray-bytes buffers straight into one new array (one copy); ``None`` when the
    arrays differ in dtype or shape (ragged). Every buffer's header and length is checked before any copy
    (by :func:`parse_array_header`: plain dtype, valid shape, exact data length).

    Raises:
        DecodeError: when a buffer is no valid ndarray-bytes value.
    """
    first = values[0]
    dtype, shape, off = parse_array_header(first)
    prefix = bytes(first[:off])
    n = len(first)
    for v in values:
        # A different header (or a corrupt one) is parsed, to tell ragged from broken (raises DecodeError). Even
        # one that means the same array ("f4" for "<f4") has its data at another offset: the caller stacks the
        # decoded arrays instead.
        if len(v) != n or v[:off] != prefix:
            parse_array_header(v)
            return None
    rows = len(values)
    if dtype.itemsize == 0 or n == off:
        try:
            return np.empty((rows, *shape), dtype)
        except ValueError as exc:  # (rows, 0, 2**40, 2**40): more than numpy can describe, though empty
            raise DecodeError(
                f"a column of {rows} empty arrays of shape {shape} is larger than any array numpy can hold; "
                "the payloads are corrupt"
            ) from exc
    if n - off < _ROW_COPY_BYTES:
        joined = bytearray().join([memoryview(v)[off:] for v in values])
        return np.frombuffer(joined, dtype=dtype).reshape((rows, *shape))
    # Large rows: copy each into one numpy allocation (huge pages where the kernel allows: far fewer page faults
    # than a torch or shared-memory allocation of the same size; measured in benchmarks/bench_loader.py), reused
    # from batch to batch (see batch_array). In a Loader's worker, in shared memory: the batch is then sent as a
    # handle, not copied again (see _shm).
    out = batch_array((rows, *shape), dtype)
    flat = out.reshape(rows, -1).view(np.uint8)
    for i, v in enumerate(values):
        flat[i] = np.frombuffer(v, dtype=np.uint8, offset=off)
    return out


_ROW_COPY_BYTES = 16 * 1024
_POOLED_BYTES = 4 << 20  # batch arrays this large are reused (see batch_array)
_POOLED_BATCHES = 4  # idle batch arrays kept for reuse (the loop holds one or two; a prefetch queue a few)


def batch_array(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised batch array: in a Loader's worker, in shared memory (see ``atdata_torch._shm``); else, from
    :data:`_POOLED_BYTES` up, a pooled buffer reused once nothing refers to the batch that last had it (the tensor
    of a batch keeps its array alive), so that a pass does not fault in and zero fresh pages for every batch.

    A fresh array per batch made large-tensor passes unstable: each 4 MiB-per-sample batch faulted in, zeroed and (on
    a busy machine) compacted memory for huge pages anew; in this process (0 workers, 48 x 4 MiB shuffled in batches
    of 16) a pass took 38 ms of CPU and 1,632 page faults with fresh arrays, 30 ms and 0 faults with reused ones.
    Spare arrays idle for 10 s are let go.
    """
    if _shm.active():
        return _shm.empty(shape, dtype)
    dt = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    if nbytes < _POOLED_BYTES or dt.hasobject:
        return np.empty(shape, dt)
    from .sources._buffers import _buffer_pool

    pool = _buffer_pool(_POOLED_BATCHES, "batch")
    pool.release(idle=10.0)
    buf = pool.get(nbytes)
    # Through a memoryview, which keeps the handed-out buffer alive for as long as any view of the batch is: numpy
    # would point a view of a view at the pool's own array, and the pool would hand the memory out again.
    out: np.ndarray = np.frombuffer(memoryview(buf), dt).reshape(shape)  # type: ignore[arg-type]
    return out


class SampleBatch(Generic[T]):
    """A batch of samples, column-wise.

    ``batch.<field>`` is one ``np.ndarray`` of shape ``(batch, ...)`` for NDArray fields whose arrays agree in
    dtype and shape, and a list otherwise (strings, ints, ragged or missing arrays). Works for typed samples and
    for :class:`DictSample`.

    Example:
        >>> import numpy as np
        >>> from atdata_torch import DictSample, SampleBatch
        >>> b = SampleBatch.from_samples([DictSample(x=np.zeros(2), y="a"), DictSample(x=np.ones(2), y="b")])
        >>> b.x.shape, b.y, len(b)
        ((2, 2), ['a', 'b'], 2)
    """

    __slots__ = ("_columns", "_size", "keys", "sample_type")
    _columns: dict[str, Any]
    _size: int
    sample_type: type
    keys: list[str] | None

    def __init__(
        self,
        columns: dict[str, Any] | Sequence[Any],
        size: int | None = None,
        sample_type: type | None = None,
        keys: list[str] | None = None,
    ) -> None:
        if size is None:  # the original atdata's SampleBatch(samples): a batch of these sample objects
            if isinstance(columns, dict):
                raise TypeError("SampleBatch(columns, size): give the size with a dict of columns, or pass samples")
            b = SampleBatch.from_samples(columns, sample_type, keys)
            columns, size, sample_type = b._columns, b._size, b.sample_type
        assert isinstance(columns, dict)
        self._columns = columns
        self._size = size
        self.sample_type = DictSample if sample_type is None else sample_type
        self.keys = keys

    @classmethod
    def from_samples(
        cls, samples: Sequence[Any], sample_type: type | None = None, keys: list[str] | None = None
    ) -> SampleBatch[Any]:
        """Build a batch from sample objects (typed, DictSample, dicts, or any object with fields)."""
        if sample_type is None:
            sample_type = type(samples[0]) if samples else DictSample
        names: list[str]
        if isinstance(sample_type, type) and issubclass(sample_type, PackableSample):
            names = [f.name for f in sample_type.__atdata_fields__]
            cols = {n: [getattr(s, n) for s in samples] for n in names}
        else:
            names = []
            seen: set[str] = set()
            for s in samples:
                for k in _keys_of(s):
                    if k not in seen:
                        seen.add(k)
                        names.append(k)
            cols = {n: [_get(s, n) for s in samples] for n in names}
        return cls({n: stack_column(c) for n, c in cols.items()}, len(samples), sample_type, keys)

    @property
    def fields(self) -> list[str]:
        """The field names."""
        return list(self._columns)

    def __getattr__(self, name: str) -> Any:
        # Read the slot without recursing: while unpickling (or copying) ``_columns`` is not
        # set yet, and ``pickle`` probes attributes such as ``__setstate__`` through here.
        try:
            columns = object.__getattribute__(self, "_columns")
        except AttributeError:
            raise AttributeError(name) from None
        try:
            return columns[name]
        except KeyError:
            if not columns and not name.startswith("__") and object.__getattribute__(self, "_size") == 0:
                return []  # an empty batch of a schema-free stream: every field is an empty column
            raise AttributeError(f"SampleBatch has no field {name!r}; fields are {list(columns)}") from None

    def __reduce__(self) -> tuple[Any, ...]:
        # Batches cross DataLoader worker boundaries.
        return (SampleBatch, (self._columns, self._size, self.sample_type, self.keys))

    def __getitem__(self, name: str) -> Any:
        return self._columns[name]

    def __len__(self) -> int:
        return self._size

    def to_dict(self) -> dict[str, Any]:
        """The columns as a dict."""
        return dict(self._columns)

    def to_arrow(self) -> Any:
        """The batch as a ``pyarrow.Table`` (the ``arrow`` extra): NDArray fields as fixed-shape tensor columns
        (ragged ones as ``struct<data, shape>``), the rest as plain columns; see ``atdata_torch._arrow``."""
        from ._arrow import batch_to_arrow

        return batch_to_arrow(self)

    @property
    def samples(self) -> list[T]:
        """The batch as a list of samples (rebuilt from the columns)."""
        out: list[Any] = []
        for i in range(self._size):
            # ``c[i, ...]`` keeps 0-d arrays as arrays (``c[i]`` would give a numpy scalar).
            row = {n: c[i, ...] if isinstance(c, np.ndarray) else c[i] for n, c in self._columns.items()}
            if isinstance(self.sample_type, type) and issubclass(self.sample_type, PackableSample):
                obj = object.__new__(self.sample_type)
                obj.__dict__.update(row)
                out.append(obj)
            else:
                out.append(DictSample(row))
        return out

    def __iter__(self) -> Iterator[T]:
        return iter(self.samples)

    def __repr__(self) -> str:
        parts = []
        for n, c in self._columns.items():
            if isinstance(c, np.ndarray):
                parts.append(f"{n}: ndarray{tuple(c.shape)} {c.dtype}")
            else:
                parts.append(f"{n}: list[{len(c)}]")
        return f"SampleBatch[{getattr(self.sample_type, '__name__', self.sample_type)}](size={self._size}; " + (
            ", ".join(parts) + ")"
        )


def _keys_of(s: Any) -> list[str]:
    if isinstance(s, (DictSample, dict)):
        return list(s.keys())
    if isinstance(s, PackableSample):
        return [f.name for f in type(s).__atdata_fields__]
    return [k for k in vars(s) if not k.startswith("_")]


def _get(s: Any, name: str) -> Any:
    if isinstance(s, (DictSample, dict)):
        return s.get(name)
    return getattr(s, name, None)
