"""Arrow interop: columnar batches <-> ``pyarrow.Table`` (the ``arrow`` extra).

How each kind of field becomes a column:

- an NDArray field whose arrays agree in dtype and shape: pyarrow's canonical fixed-shape tensor
  (``pa.fixed_shape_tensor(value_type, shape)``, ``arrow.fixed_shape_tensor``; a missing optional array is a null);
- an NDArray field with arrays of different shapes (ragged): a struct column ``struct<data: list<value_type>,
  shape: list<int32>>`` (each array's row-major values and its shape; the storage layout of Arrow's canonical
  ``arrow.variable_shape_tensor``, for which pyarrow has no type yet), its field metadata
  ``{"atdata_torch.tensor": "variable_shape"}``; a missing optional array is a null;
- ``str`` -> ``string``, ``bytes`` -> ``binary``, ``int`` -> ``int64``, ``float`` -> ``float64``, ``bool`` ->
  ``bool``, optional ones with nulls; lists, dicts and ``Any`` fields as pyarrow infers them.

A column whose arrays are all missing is of Arrow's ``null`` type. :func:`table_to_columns` reads such tables back
(and any table whose tensor columns use pyarrow's fixed-shape tensor type).

Example:
    >>> import numpy as np
    >>> from atdata_torch import DictSample, SampleBatch
    >>> b = SampleBatch.from_samples([DictSample(x=np.zeros((2, 2), np.float32), y="a"),
    ...                               DictSample(x=np.ones((2, 2), np.float32), y=None)])
    >>> t = b.to_arrow()
    >>> str(t.schema.field("y").type), t.column("x").type.shape, t.column("y").null_count
    ('string', [2, 2], 1)
    >>> table_to_columns(t)["x"].shape
    (2, 2, 2)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import MissingDependencyError, SchemaError
from .schema import DictSample, FieldSpec, PackableSample

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "RAGGED_KEY",
    "batch_to_arrow",
    "columns_to_arrow",
    "columns_to_samples",
    "concat_tables",
    "is_ragged",
    "pyarrow",
    "table_to_columns",
]

#: The field metadata key (and value ``b"variable_shape"``) that marks a ragged tensor column.
RAGGED_KEY = b"atdata_torch.tensor"
_RAGGED_VALUE = b"variable_shape"

#: Builds a tensor column from an NDArray field's values, or returns ``None`` to use the default encoding:
#: ``tensors(name, values)`` with ``values`` one stacked array, or a list of arrays and ``None`` s.
TensorBuilder = Callable[[str, Any], "pa.Array | None"]

_PRIMITIVE_TYPES = {"str": "string", "bytes": "binary", "int": "int64", "float": "float64", "bool": "bool_"}


def pyarrow() -> Any:
    """The ``pyarrow`` module, or a :class:`MissingDependencyError` naming the ``arrow`` extra."""
    try:
        import pyarrow as pa
    except ImportError as exc:
        raise MissingDependencyError.for_extra("pyarrow", "arrow", "Arrow interop (to_arrow)") from exc
    return pa


def _specs(sample_type: Any) -> dict[str, FieldSpec]:
    if isinstance(sample_type, type) and issubclass(sample_type, PackableSample):
        return {s.name: s for s in sample_type.__atdata_fields__}
    return {}


def _native(arr: np.ndarray[Any, Any], name: str) -> np.ndarray[Any, Any]:
    """``arr`` in native byte order and C order, with a dtype Arrow can hold (else a :class:`SchemaError`)."""
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype.kind not in "biuf":
        raise SchemaError(
            f"field {name!r}: an array of dtype {arr.dtype} has no Arrow tensor type (expected bool, integer or "
            "float arrays); convert it (e.g. .astype(np.float32)) or store it as bytes",
            field=name,
        )
    return arr if arr.flags.c_contiguous else arr.copy(order="C")  # (ascontiguousarray makes 0-d arrays 1-d)


def _fixed(pa: Any, stacked: np.ndarray[Any, Any], name: str, mask: np.ndarray[Any, Any] | None = None) -> Any:
    """A fixed-shape tensor column from ``stacked`` (shape ``(rows, *shape)``); ``mask`` marks nulls."""
    stacked = _native(stacked, name)
    shape = list(stacked.shape[1:])
    width = int(np.prod(shape)) if shape else 1
    values = pa.array(stacked.reshape(-1))
    storage = pa.FixedSizeListArray.from_arrays(
        values, width, mask=pa.array(mask, pa.bool_()) if mask is not None else None
    )
    return pa.ExtensionArray.from_storage(pa.fixed_shape_tensor(values.type, shape), storage)


def _ragged(pa: Any, values: Sequence[Any], name: str, value_type: Any = None) -> Any:
    """A ragged tensor column (see the module docstring) from arrays and ``None`` s (nulls)."""
    arrays = [_native(np.asarray(v), name) if v is not None else None for v in values]
    dtypes = {a.dtype for a in arrays if a is not None}
    if len(dtypes) > 1:
        raise SchemaError(
            f"field {name!r} holds arrays of several dtypes ({sorted(str(d) for d in dtypes)}); an Arrow tensor "
            "column has one value type: cast them to one dtype",
            field=name,
        )
    if dtypes:
        value_type = pa.from_numpy_dtype(dtypes.pop())
    elif value_type is None:
        value_type = pa.float64()
    flat = [a.reshape(-1) for a in arrays if a is not None]
    data_offsets = np.zeros(len(arrays) + 1, np.int32)
    shape_offsets = np.zeros(len(arrays) + 1, np.int32)
    for i, a in enumerate(arrays):
        data_offsets[i + 1] = data_offsets[i] + (a.size if a is not None else 0)
        shape_offsets[i + 1] = shape_offsets[i] + (a.ndim if a is not None else 0)
    joined = np.concatenate(flat) if flat else np.zeros(0, value_type.to_pandas_dtype())
    shapes = np.asarray([d for a in arrays if a is not None for d in a.shape], np.int32)
    data = pa.ListArray.from_arrays(pa.array(data_offsets), pa.array(joined, type=value_type))
    shape = pa.ListArray.from_arrays(pa.array(shape_offsets), pa.array(shapes, pa.int32()))
    mask = pa.array([a is None for a in arrays], pa.bool_())
    return pa.StructArray.from_arrays([data, shape], names=["data", "shape"], mask=mask)


def _tensor_column(pa: Any, name: str, values: Any) -> Any:
    """The default encoding of an NDArray field's values (a stacked array, or a list of arrays and ``None`` s)."""
    if isinstance(values, np.ndarray):
        return _fixed(pa, values, name)
    present = [v for v in values if v is not None]
    if not present:
        return pa.nulls(len(values))
    first = np.asarray(present[0])
    if all(isinstance(v, np.ndarray) and v.shape == first.shape and v.dtype == first.dtype for v in present):
        filler = np.zeros_like(first)
        stacked = np.stack([v if v is not None else filler for v in values])
        mask = np.array([v is None for v in values])
        return _fixed(pa, stacked, name, mask)
    return _ragged(pa, values, name)


def _is_tensor(spec: FieldSpec | None, values: Any) -> bool:
    if isinstance(values, np.ndarray):
        return True
    if spec is not None:
        return spec.kind == "ndarray"
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, np.ndarray) for v in present)


def columns_to_arrow(
    columns: Mapping[str, Any], size: int, sample_type: Any = DictSample, *, tensors: TensorBuilder | None = None
) -> pa.Table:
    """A ``pyarrow.Table`` of ``size`` rows from a batch's columns (see the module docstring for the encoding).

    Args:
        columns: Field name -> stacked array or list of values (what :meth:`SampleBatch.to_dict` gives).
        size: The number of rows.
        sample_type: The batch's sample type; a ``@packable`` class decides each column's kind from its fields.
        tensors: Builds NDArray columns another way (``tensors(name, values)``; ``None`` from it: the default).

    Raises:
        SchemaError: a value Arrow cannot hold in its column, naming the field and the fix.
    """
    pa = pyarrow()
    specs = _specs(sample_type)
    arrays: list[Any] = []
    fields: list[Any] = []
    for name, values in columns.items():
        spec = specs.get(name)
        if _is_tensor(spec, values):
            arr = tensors(name, values) if tensors is not None else None
            if arr is None:
                arr = _tensor_column(pa, name, values)
        else:
            arr = _plain_column(pa, name, values, spec)
        if len(arr) != size:
            raise SchemaError(f"column {name!r} has {len(arr)} values for a batch of {size}", field=name)
        arrays.append(arr)
        fields.append(_field(pa, name, arr))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields)) if fields else pa.table({})


def _field(pa: Any, name: str, arr: Any) -> Any:
    """The schema field of a column (ragged tensor columns carry :data:`RAGGED_KEY` metadata)."""
    ragged = isinstance(arr.type, pa.StructType) and is_ragged(arr)
    return pa.field(name, arr.type, nullable=True, metadata={RAGGED_KEY: _RAGGED_VALUE} if ragged else None)


def is_ragged(arr: Any) -> bool:
    """Whether a struct array has the ragged tensor layout (fields ``data`` and ``shape``)."""
    t = arr.type
    return bool(t.num_fields == 2 and t.field(0).name == "data" and t.field(1).name == "shape")


def _plain_column(pa: Any, name: str, values: Sequence[Any], spec: FieldSpec | None) -> Any:
    kind = spec.kind if spec is not None else None
    typ = getattr(pa, _PRIMITIVE_TYPES[kind])() if kind in _PRIMITIVE_TYPES else None
    try:
        return pa.array(list(values), type=typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
        want = f"{kind} values" if kind else "values of one Arrow type"
        raise SchemaError(
            f"field {name!r} cannot become an Arrow column ({type(exc).__name__}: {str(exc)[:200]}); expected "
            f"{want}; make the field's values agree in type (or encode them, e.g. as bytes)",
            field=name,
        ) from exc


def batch_to_arrow(batch: Any, *, tensors: TensorBuilder | None = None) -> pa.Table:
    """A :class:`~atdata_torch.SampleBatch` as a ``pyarrow.Table`` (see :func:`columns_to_arrow`)."""
    return columns_to_arrow(batch.to_dict(), len(batch), batch.sample_type, tensors=tensors)


# ------------------------------------------------------------------------------------------------ back


def _fixed_to_numpy(col: Any) -> Any:
    """A fixed-shape tensor column as one array, or a list with ``None`` for nulls."""
    shape = list(col.type.shape)
    storage = col.storage
    width = storage.type.list_size
    values = storage.values.slice(storage.offset * width, len(col) * width).to_numpy(zero_copy_only=False)
    stacked = values.reshape((len(col), *shape))
    if col.null_count == 0:
        return stacked
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    return [stacked[i, ...] if valid[i] else None for i in range(len(col))]


def _ragged_to_list(col: Any) -> list[Any]:
    out: list[Any] = []
    data, shape = col.field("data"), col.field("shape")
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    for i in range(len(col)):
        if not valid[i]:
            out.append(None)
            continue
        dims = shape[i].values.to_numpy(zero_copy_only=False)
        out.append(data[i].values.to_numpy(zero_copy_only=False).reshape(tuple(int(d) for d in dims)))
    return out


def table_to_columns(table: pa.Table, *, tensors: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """A table's columns as a batch holds them: stacked arrays (fixed-shape tensors without nulls), else lists
    (``None`` for nulls; ragged tensor columns as lists of arrays).

    Args:
        table: A table (as :func:`columns_to_arrow` writes them, or any with plain and fixed-shape tensor columns).
        tensors: Converts other tensor extension columns (``tensors(chunked_or_array)`` -> array or list, ``None``:
            not one of its types).
    """
    pa = pyarrow()
    out: dict[str, Any] = {}
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        got = tensors(col) if tensors is not None else None
        if got is not None:
            out[name] = got
        elif isinstance(col.type, pa.FixedShapeTensorType):
            out[name] = _fixed_to_numpy(col)
        elif isinstance(col.type, pa.StructType) and is_ragged(col):
            out[name] = _ragged_to_list(col)
        else:
            out[name] = col.to_pylist()
    return out


def columns_to_samples(columns: Mapping[str, Any], size: int, sample_type: Any) -> list[Any]:
    """Rows of columns (see :func:`table_to_columns`) as samples of ``sample_type`` (``@packable`` or DictSample).

    Raises:
        SchemaError: a ``@packable`` field without a column (and no default), or a column the type has no field for.
    """
    specs = _specs(sample_type)
    if specs:
        extra = [c for c in columns if c not in specs]
        missing = [n for n, s in specs.items() if n not in columns and not (s.optional or s.has_default)]
        if extra or missing:
            raise SchemaError(
                f"the columns {sorted(columns)} do not fit {sample_type.__name__} (fields {sorted(specs)}): "
                f"missing {missing}, unknown {extra}; select or rename the columns (ray: ds.select_columns / "
                "ds.rename_columns) to match the sample type"
            )
    rows: list[Any] = []
    items = list(columns.items())
    for i in range(size):
        row = {n: (c[i, ...] if isinstance(c, np.ndarray) else c[i]) for n, c in items}
        rows.append(sample_type(**row) if specs else DictSample(row))
    return rows


def _value_type(pa: Any, tables: list[Any], name: str) -> Any:
    """The value type of the first non-null tensor column ``name`` among ``tables`` (``None``: none)."""
    for t in tables:
        typ = t.schema.field(name).type
        if isinstance(typ, pa.FixedShapeTensorType):
            return typ.value_type
        if isinstance(typ, pa.StructType) and typ.num_fields == 2:
            return typ.field(0).type.value_type
    return None


def concat_tables(tables: list[Any]) -> pa.Table:
    """Concatenate batch tables whose columns may differ in encoding (a fixed-shape tensor in one batch, ragged or
    all-null in another): such columns become ragged (or take the other type, for all-null ones) first."""
    pa = pyarrow()
    if not tables:
        return pa.table({})
    names = tables[0].column_names
    if all(t.schema == tables[0].schema for t in tables):
        return pa.concat_tables(tables)
    fixed: list[Any] = []
    for t in tables:
        if t.column_names != names:
            raise SchemaError(f"batches have different columns: {names} and {t.column_names}")
        arrays: list[Any] = []
        for name in names:
            types = {str(u.schema.field(name).type) for u in tables if not pa.types.is_null(u.schema.field(name).type)}
            col = t.column(name).combine_chunks()
            if len(types) > 1:
                values = table_to_columns(pa.table({name: col}))[name]
                col = _ragged(pa, list(values), name, _value_type(pa, tables, name))
            elif pa.types.is_null(col.type) and types:
                target = next(u.schema.field(name).type for u in tables if str(u.schema.field(name).type) in types)
                col = pa.nulls(len(col), target)
            arrays.append(col)
        schema = pa.schema([_field(pa, n, a) for n, a in zip(names, arrays, strict=True)])
        fixed.append(pa.Table.from_arrays(arrays, schema=schema))
    return pa.concat_tables(fixed)


def dataset_to_arrow(ds: Any, limit: int | None, batch_size: int) -> Any:
    """``Dataset.to_arrow``: the first ``limit`` samples (or all) in order, as one ``pyarrow.Table``."""
    pyarrow()  # fail early, naming the extra
    if limit is not None and limit < 0:
        raise ValueError(f"to_arrow(limit={limit}): limit must be >= 0 or None")
    tables: list[Any] = []
    rows = 0
    if limit != 0:
        pipe = ds.ordered(batch_size=batch_size, rank=0, world_size=1, last_batch="exact")
        for batch in pipe:
            tables.append(batch_to_arrow(batch))
            rows += len(batch)
            if limit is not None and rows >= limit:
                break
    table = concat_tables(tables)
    return table.slice(0, limit) if limit is not None else table
