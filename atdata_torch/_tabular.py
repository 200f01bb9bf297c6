"""Datasets as tables: ``to_dict()``, ``to_pandas()`` and ``to_parquet()`` (the original atdata's analysis surface).

pandas and pyarrow come with the ``arrow`` extra (``pip install 'atdata-torch[arrow]'``) and are imported only here,
when one of these is called. Each sample becomes one row: a ``@packable`` sample's fields, a ``DictSample``'s keys,
a dict as it is (the result of a ``map()``); arrays stay numpy arrays in their cells.

Example:
    >>> from atdata_torch import DictSample
    >>> columns([DictSample(a=1, b="x"), DictSample(a=2, b="y")])
    {'a': [1, 2], 'b': ['x', 'y']}
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .errors import MissingDependencyError, SchemaError

__all__ = ["columns", "row", "to_pandas", "to_parquet"]


def row(sample: Any) -> dict[str, Any]:
    """One sample as a ``{field: value}`` dict (the default ``sample_map`` of :func:`to_parquet`).

    Raises:
        SchemaError: for a value that is no sample, dataclass or mapping (say, what a ``map()`` returned).
    """
    to_dict = getattr(sample, "to_dict", None)
    if callable(to_dict):
        out = to_dict()
        if isinstance(out, dict):
            return out
    if dataclasses.is_dataclass(sample) and not isinstance(sample, type):
        return {f.name: getattr(sample, f.name) for f in dataclasses.fields(sample)}
    if isinstance(sample, Mapping):
        return dict(sample)
    raise SchemaError(
        f"cannot turn a {type(sample).__name__} into a table row: expected a @packable sample, a DictSample, a "
        "dataclass or a dict; map() the dataset to one of these, or pass sample_map= (a function sample -> dict)"
    )


def columns(samples: list[Any]) -> dict[str, list[Any]]:
    """Samples as ``{field: [values...]}``, the fields being those of the first sample (``{}`` for none).

    Raises:
        SchemaError: when a later sample lacks a field of the first (a ragged set of DictSamples).
    """
    if not samples:
        return {}
    rows = [row(s) for s in samples]
    names = list(rows[0])
    out: dict[str, list[Any]] = {n: [] for n in names}
    for i, r in enumerate(rows):
        for n in names:
            if n not in r:
                raise SchemaError(
                    f"sample {i} has no field {n!r}, which sample 0 has (its fields: {sorted(r)}); to_dict() needs "
                    "samples of one shape: use to_pandas(), which fills missing fields with NaN",
                    field=n,
                )
            out[n].append(r[n])
    return out


def _pandas(feature: str) -> Any:
    try:
        import pandas
    except ImportError as exc:
        raise MissingDependencyError.for_extra("pandas", "arrow", feature) from exc
    return pandas


def to_pandas(samples: Iterable[Any]) -> Any:
    """A ``pandas.DataFrame`` of one row per sample."""
    pd = _pandas("Dataset.to_pandas()")
    return pd.DataFrame([row(s) for s in samples])


def _write(pd: Any, rows: list[dict[str, Any]], path: str, kwargs: dict[str, Any]) -> None:
    import pyarrow as pa

    try:
        pd.DataFrame(rows).to_parquet(path, **{"engine": "pyarrow", **kwargs})
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise SchemaError(
            f"to_parquet({path!r}): pyarrow cannot store these rows ({type(exc).__name__}: {exc}); parquet cells "
            "hold scalars, strings, bytes and 1-d arrays: pass sample_map= returning such values (for example "
            "arrays as bytes or flattened lists)"
        ) from exc


def to_parquet(
    samples: Iterable[Any],
    path: str | os.PathLike[str],
    sample_map: Callable[[Any], dict[str, Any]] | None = None,
    maxcount: int | None = None,
    **kwargs: Any,
) -> list[str]:
    """Write samples to parquet: one file at ``path``, or with ``maxcount`` files of at most that many rows named
    ``{stem}-000000{suffix}``, ``-000001``, ... (the original atdata's names). Returns the paths written.

    Raises:
        MissingDependencyError: without pandas or pyarrow (the ``arrow`` extra).
        SchemaError: when a row cannot be stored in parquet.
    """
    pd = _pandas("Dataset.to_parquet()")
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError.for_extra("pyarrow", "arrow", "Dataset.to_parquet()") from exc
    if maxcount is not None and (isinstance(maxcount, bool) or not isinstance(maxcount, int) or maxcount < 1):
        raise ValueError(f"to_parquet(maxcount=...) takes a positive int (rows per file) or None, got {maxcount!r}")
    fn = row if sample_map is None else sample_map
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    if maxcount is None:
        _write(pd, [fn(s) for s in samples], path, kwargs)
        return [path]
    stem, suffix = os.path.splitext(os.path.basename(path))
    written: list[str] = []
    buf: list[dict[str, Any]] = []

    def flush() -> None:
        name = os.path.join(parent, f"{stem}-{len(written):06d}{suffix}")
        _write(pd, buf, name, kwargs)
        written.append(name)
        buf.clear()

    for s in samples:
        buf.append(fn(s))
        if len(buf) >= maxcount:
            flush()
    if buf:
        flush()
    return written
