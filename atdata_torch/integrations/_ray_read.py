"""The Ray Data datasource of :func:`atdata_torch.integrations.ray.read_atdata` (see that module)."""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask
from ray.data.extensions import (
    ArrowTensorArray,
    ArrowVariableShapedTensorArray,
    ArrowVariableShapedTensorType,
    get_arrow_extension_tensor_types,
)

from .._arrow import columns_to_arrow
from .._indexing import ShardIndexes
from ..dataset import Dataset
from ..errors import SchemaError
from ..schema import FieldSpec, PackableSample

__all__ = ["AtdataDatasource", "Part", "from_ray_tensor", "plan_parts", "ray_tensors"]


@dataclass(frozen=True)
class Part:
    """One read task: samples ``[lo, hi)`` of shard number ``shard`` (its ``name``), ``nbytes`` of payloads."""

    shard: int
    name: str
    lo: int
    hi: int
    nbytes: int


class _OneShard:
    """A source restricted to one of its shards: what a read task opens (every other attribute is the source's, so
    that its capabilities still show)."""

    def __init__(self, source: Any, shard: str) -> None:
        self._source, self._shard = source, shard

    def list_shards(self) -> list[str]:
        return [self._shard]

    def open_shard(self, shard: str) -> Any:
        return self._source.open_shard(shard)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._source, name)

    def __repr__(self) -> str:
        return f"{self._source!r}[{self._shard}]"


def ray_tensors(name: str, values: Any, spec: FieldSpec | None = None) -> Any:
    """NDArray columns as Ray's tensor extension types: ``ArrowTensorType`` for arrays of one shape,
    ``ArrowVariableShapedTensorType`` for ragged ones and for optional fields (``spec.optional``), so that every
    block of a column has a type Ray can unify. A missing array is an Arrow null over an empty array of the column's
    number of dimensions (what Ray's numpy batches show: they drop null bits); a block whose arrays are all missing
    has one dimension and the field's declared dtype (``NDArray[np.float32] | None``; float64 when undeclared)."""
    optional = spec is not None and spec.optional
    try:
        if isinstance(values, np.ndarray) and not optional:
            return ArrowTensorArray.from_numpy(np.ascontiguousarray(values), column_name=name)
        values = list(values)
        present = [v for v in values if v is not None]
        if len(present) == len(values) and not optional and len({(v.shape, v.dtype) for v in present}) == 1:
            return ArrowTensorArray.from_numpy(np.stack(present), column_name=name)
        return _variable(name, values, present, spec)
    except SchemaError:
        raise
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise SchemaError(
            f"field {name!r} cannot become a Ray tensor column ({type(exc).__name__}: {str(exc)[:200]}); give its "
            "arrays one dtype",
            field=name,
        ) from exc


def _variable(name: str, values: list[Any], present: list[Any], spec: FieldSpec | None) -> Any:
    """A variable-shaped Ray tensor column, with Arrow nulls for the missing arrays (see :func:`ray_tensors`)."""
    ndim = present[0].ndim if present else 1
    declared = spec.dtype if spec is not None and spec.dtype is not None else np.dtype(np.float64)
    dtype = present[0].dtype if present else declared
    if any(v.ndim != ndim for v in present):
        raise SchemaError(
            f"field {name!r} holds arrays of different numbers of dimensions; Ray's variable-shaped tensor "
            "column needs one: reshape them (e.g. add a leading axis of 1)",
            field=name,
        )
    empty = np.zeros((0,) * ndim, dtype)
    arr = ArrowVariableShapedTensorArray.from_numpy([v if v is not None else empty for v in values])
    if len(present) == len(values):
        return arr
    st = arr.storage
    mask = pa.array([v is None for v in values], pa.bool_())
    children = [st.field(i) for i in range(st.type.num_fields)]
    storage = pa.StructArray.from_arrays(children, fields=list(st.type), mask=mask)
    return pa.ExtensionArray.from_storage(arr.type, storage)


def from_ray_tensor(col: Any) -> Any:
    """A Ray tensor extension column as an array (no nulls, one shape) or a list (``None`` for nulls); ``None``
    for other columns."""
    if not isinstance(col.type, get_arrow_extension_tensor_types()):  # type: ignore[no-untyped-call]
        return None
    values = col.to_numpy(zero_copy_only=False)
    if col.null_count == 0 and not isinstance(col.type, ArrowVariableShapedTensorType):
        return values
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    # Ray's own concatenation drops null bits: a missing array is also told by its empty shape (0, ..., 0).
    return [
        values[i] if valid[i] and (values[i].size or not all(d == 0 for d in values[i].shape)) else None
        for i in range(len(col))
    ]


def _read_part(source: Any, part: Part, decode_type: type, rows_per_block: int) -> Iterator[pa.Table]:
    """The blocks of one read task (runs in a Ray worker)."""
    ds: Dataset[Any] = Dataset(_OneShard(source, part.name), sample_type=decode_type).select_range(part.lo, part.hi)
    specs: dict[str, FieldSpec] = {}
    if isinstance(decode_type, type) and issubclass(decode_type, PackableSample):
        specs = {f.name: f for f in decode_type.__atdata_fields__}

    def tensors(name: str, values: Any) -> Any:
        return ray_tensors(name, values, specs.get(name))

    for batch in ds.ordered(batch_size=rows_per_block, rank=0, world_size=1, last_batch="exact"):
        yield columns_to_arrow(batch.to_dict(), len(batch), batch.sample_type, tensors=tensors)


def plan_parts(counts: list[tuple[str, int, int]], parallelism: int) -> list[Part]:
    """Read tasks for shards of ``(name, samples, payload bytes)``: one per shard, or, with fewer shards than
    ``parallelism``, ranges of samples within shards (each shard split in proportion to its samples)."""
    total = sum(n for _, n, _ in counts)
    parts: list[Part] = []
    want = max(1, parallelism)
    for i, (name, n, nbytes) in enumerate(counts):
        if n == 0:
            continue
        k = 1 if len(counts) >= want or total == 0 else max(1, min(n, round(want * n / total)))
        bounds = [n * j // k for j in range(k + 1)]
        for lo, hi in itertools.pairwise(bounds):
            if hi > lo:
                parts.append(Part(i, name, lo, hi, nbytes * (hi - lo) // n))
    return parts


class AtdataDatasource(Datasource):
    """A Ray Data datasource over a :class:`~atdata_torch.Dataset`'s shards (see ``read_atdata``)."""

    def __init__(self, ds: Dataset[Any], *, rows_per_block: int = 1024) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if rows_per_block < 1:
            raise ValueError(f"rows_per_block must be >= 1, got {rows_per_block}")
        self._ds = ds
        self._rows_per_block = rows_per_block
        self._counts: list[tuple[str, int, int]] | None = None
        self._bases: dict[str, int] = {}  # where a shard's selected range starts (select_range)

    def shard_counts(self) -> list[tuple[str, int, int]]:
        """Each shard's ``(name, samples, payload bytes)``, from its index sidecar (O(1) checks against a local
        shard, none for a remote one), or from one scan of a shard that has none."""
        if self._counts is None:
            ds = self._ds
            shards = ds.list_shards()
            indexes = ShardIndexes(ds.source)
            indexes.warm(shards)
            out = []
            for shard in shards:
                idx = indexes.sidecar(shard)
                if idx is None:
                    idx = ds.shard_index(shard)
                r = ds._ranges.get(shard)  # a select_range()d dataset (a "train[:10%]" split) reads part of a shard
                if r is not None:
                    idx = idx.slice(*r)
                    self._bases[shard] = max(0, r[0])
                sizes = idx.payload_sizes if idx.payload_sizes is not None else idx.lengths
                out.append((shard, idx.count, int(sum(sizes))))
            self._counts = out
        return self._counts

    def estimate_inmemory_data_size(self) -> int:
        """The payload bytes of every sample (the arrays' bytes dominate them), from the sidecars."""
        return sum(b for _, _, b in self.shard_counts())

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
    ) -> list[ReadTask]:
        """One task per shard, or per range of samples within a shard when there are fewer shards than
        ``parallelism``; each task's metadata holds its exact row count (what ``count()`` sums)."""
        source = self._ds.source
        decode_type = self._ds.decode_type
        tasks = []
        for planned in plan_parts(self.shard_counts(), parallelism):
            base = self._bases.get(planned.name, 0)
            part = dataclasses.replace(planned, lo=planned.lo + base, hi=planned.hi + base)
            meta = BlockMetadata(
                num_rows=part.hi - part.lo, size_bytes=part.nbytes, input_files=(part.name,), exec_stats=None
            )
            fn = functools.partial(_read_part, source, part, decode_type, self._rows_per_block)
            tasks.append(ReadTask(fn, meta, per_task_row_limit=per_task_row_limit))
        return tasks

    def get_name(self) -> str:
        return "Atdata"
