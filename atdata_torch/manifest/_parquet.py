"""The ``.manifest.parquet`` table: pyarrow and pandas imported lazily (the ``arrow`` extra).

Columns: ``__key__`` (string), ``__offset__`` and ``__size__`` (int64), then one per manifest field. A field's
column type follows its storage kind (string, bool, int64, double; a list field is a parquet LIST); the original's
files (fastparquet, list fields as JSON text) are read too, their JSON columns decoded to lists.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

from ..errors import MissingDependencyError, SchemaError, ShardFormatError

__all__ = ["arrow", "build_table", "frame_table", "pandas", "read_samples", "samples_frame", "table_bytes"]

META_COLUMNS = ("__key__", "__offset__", "__size__")


def arrow() -> Any:
    """``pyarrow`` (with ``pyarrow.parquet`` loaded), or :class:`MissingDependencyError` naming the extra."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:
        raise MissingDependencyError.for_extra("pyarrow", "arrow", "manifests (.manifest.parquet)") from exc
    return pyarrow


def pandas() -> Any:
    """``pandas``, or :class:`MissingDependencyError` naming the extra."""
    try:
        import pandas
    except ImportError as exc:
        raise MissingDependencyError.for_extra("pandas", "arrow", "manifest queries") from exc
    return pandas


def _arrow_type(pa: Any, kind: str | None, item: str | None) -> Any:
    scalar = {"str": pa.string(), "bool": pa.bool_(), "int": pa.int64(), "float": pa.float64()}
    if kind == "list":
        return pa.list_(scalar[item]) if item in scalar else None
    return scalar.get(kind or "")


def build_table(
    rows: Sequence[tuple[str, int, int, dict[str, Any]]], columns: dict[str, tuple[str | None, str | None]]
) -> Any:
    """An arrow table of manifest rows ``(key, offset, size, {field: value})``; ``columns`` maps each field to its
    ``(kind, item kind)``, which fixes its column type (``None``: inferred from the values).

    Raises:
        SchemaError: when a field's values do not fit one column type (naming the field).
    """
    pa = arrow()
    arrays = [
        pa.array([r[0] for r in rows], pa.string()),
        pa.array([r[1] for r in rows], pa.int64()),
        pa.array([r[2] for r in rows], pa.int64()),
    ]
    names = list(META_COLUMNS)
    for name, (kind, item) in columns.items():
        values = [r[3].get(name) for r in rows]
        typ = _arrow_type(pa, kind, item)
        if typ is None and all(v is None for v in values):
            typ = pa.string()
        try:
            arrays.append(pa.array(values, typ))
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
            raise SchemaError(
                f"manifest field {name!r} holds values that do not fit one parquet column ({exc}); "
                "exclude it with Annotated[..., ManifestField(..., exclude=True)]",
                field=name,
            ) from exc
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


def table_bytes(table: Any) -> bytes:
    """The parquet file of an arrow table."""
    pa = arrow()
    sink = io.BytesIO()
    pa.parquet.write_table(table, sink)
    return sink.getvalue()


def frame_table(frame: Any) -> Any:
    """An arrow table of a samples DataFrame (a manifest not built by :class:`ManifestBuilder`)."""
    pa = arrow()
    if len(frame.columns) == 0:
        return pa.table(
            {
                "__key__": pa.array([], pa.string()),
                "__offset__": pa.array([], pa.int64()),
                "__size__": pa.array([], pa.int64()),
            }
        )
    return pa.Table.from_pandas(frame, preserve_index=False)


def samples_frame(table: Any, json_columns: Sequence[str] = ()) -> Any:
    """The pandas DataFrame of a manifest table; list columns (and ``json_columns``, decoded) hold Python lists,
    as the original's do."""
    pd = pandas()
    pa = arrow()
    data: dict[str, Any] = {}
    for i, name in enumerate(table.column_names):
        col = table.column(i)
        if name in json_columns:
            data[name] = pd.Series([None if v is None else json.loads(v) for v in col.to_pylist()], dtype=object)
        elif pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            data[name] = pd.Series(col.to_pylist(), dtype=object)
        else:
            data[name] = col.to_pandas()
    return pd.DataFrame(data)


def read_samples(path: str) -> Any:
    """The samples DataFrame of a ``.manifest.parquet`` file (ours or the original's).

    Raises:
        ShardFormatError: when it is not parquet or lacks the ``__key__`` / ``__offset__`` columns.
    """
    pa = arrow()
    try:
        f = pa.parquet.ParquetFile(path)
        table = f.read()
    except pa.ArrowException as exc:
        raise ShardFormatError(
            f"manifest {path!r} is not a readable parquet file ({exc}); rewrite it (write_samples(..., "
            "manifest=True)) or delete it",
            shard=path,
        ) from exc
    missing = [c for c in META_COLUMNS[:2] if c not in table.column_names]
    if missing and table.num_rows == 0:  # the original writes an empty frame without columns for an empty shard
        return pandas().DataFrame()
    if missing:
        raise ShardFormatError(
            f"manifest {path!r} has columns {table.column_names}, expected __key__, __offset__, __size__ and the "
            f"fields (missing {missing}); rewrite it with write_samples(..., manifest=True)",
            shard=path,
        )
    schema = f.schema
    json_cols = [schema.column(i).name for i in range(len(schema)) if schema.column(i).logical_type.type == "JSON"]
    try:
        return samples_frame(table, json_cols)
    except ValueError as exc:
        raise ShardFormatError(
            f"manifest {path!r} has a JSON column that is not valid JSON ({exc})", shard=path
        ) from exc
