"""Hugging Face ``datasets`` interop: ``Dataset.from_hf()`` and ``Dataset.to_hf()`` (extra ``hf``).

Samples travel as Python dicts and numpy arrays (no Arrow conversion of our own). ``to_hf()`` declares the features
from the sample type: NDArray fields become nested ``List`` s of their dtype (any shape, ragged ones included), so
that ``from_hf()`` gives back arrays of the same dtype and shape; ``int`` / ``float`` / ``bool`` / ``str`` / ``bytes``
fields become ``Value`` s. ``from_hf()`` writes the rows as shards with index sidecars through
:func:`~atdata_torch.write_samples`, one column per field of the sample type.

Example:
    >>> import numpy as np, tempfile, os
    >>> import atdata_torch as atd
    >>> @atd.packable
    ... class Pair:
    ...     x: atd.NDArray
    ...     label: int
    >>> ds = atd.write_samples([Pair(x=np.full((2, 2), i, np.float32), label=i) for i in range(3)],
    ...                        os.path.join(tempfile.mkdtemp(), "p.tar"), progress=False)
    >>> hf = ds.to_hf()
    >>> hf.num_rows, hf.features["label"].dtype
    (3, 'int64')
    >>> back = atd.Dataset.from_hf(hf, Pair, os.path.join(tempfile.mkdtemp(), "b.tar"))
    >>> back[2].x.dtype, back[2].x.shape, back[2].label
    (dtype('float32'), (2, 2), 2)
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import MissingDependencyError, SchemaError
from ..schema import DictSample, PackableSample
from ..writer import write_samples

if TYPE_CHECKING:
    from ..dataset import Dataset

__all__ = ["from_hf", "to_hf"]

_VALUES = {"int": "int64", "float": "float64", "bool": "bool", "str": "string", "bytes": "binary"}


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as exc:
        raise MissingDependencyError.for_extra("datasets", "hf", "Dataset.from_hf() / to_hf()") from exc
    return datasets


def _fields(sample_type: Any) -> list[Any]:
    if isinstance(sample_type, type) and issubclass(sample_type, PackableSample):
        return list(sample_type.__atdata_fields__)
    return []


def _row(sample: Any, names: list[str] | None) -> dict[str, Any]:
    if isinstance(sample, DictSample):
        return {k: sample[k] for k in sample.keys()}  # noqa: SIM118 (a DictSample is no dict)
    if names is None:
        raise SchemaError(
            f"to_hf() converts @packable samples and DictSamples, got {type(sample).__name__}; return one of those "
            "from map()"
        )
    return {n: getattr(sample, n) for n in names}


def _features(datasets: Any, specs: list[Any], first: dict[str, Any] | None) -> Any:
    """HF features for the sample type's fields (``None``: let ``datasets`` infer them, for untyped fields)."""
    out: dict[str, Any] = {}
    for spec in specs:
        if spec.kind == "ndarray":
            value = None if first is None else first.get(spec.name)
            dtype = spec.dtype if spec.dtype is not None else (value.dtype if value is not None else None)
            if dtype is None:
                return None  # no sample tells the dtype: inferred
            feature: Any = datasets.Value(np.dtype(dtype).name)
            for _ in range(np.ndim(value) if value is not None else 1):
                feature = datasets.List(feature)
            out[spec.name] = feature
        elif spec.kind in _VALUES:
            out[spec.name] = datasets.Value(_VALUES[spec.kind])
        else:
            return None
    return datasets.Features(out)


def to_hf(ds: Dataset[Any], limit: int | None = None) -> Any:
    """The samples of ``ds`` in shard order (the first ``limit``) as an in-memory ``datasets.Dataset``.

    Raises:
        MissingDependencyError: without the ``hf`` extra.
        SchemaError: for samples that are neither @packable nor DictSample (after a ``map()``).
    """
    datasets = _datasets()
    specs = _fields(ds.sample_type)
    names = [s.name for s in specs] if specs else None
    samples: Iterator[Any] = iter(ds.ordered())
    if limit is not None:
        samples = itertools.islice(samples, max(0, limit))
    rows = [_row(s, names) for s in samples]
    features = _features(datasets, specs, rows[0] if rows else None) if specs else None
    if not rows:
        return datasets.Dataset.from_dict({n: [] for n in names or []}, features=features)
    return datasets.Dataset.from_list(rows, features=features)


def _leaf_dtype(feature: Any) -> np.dtype[Any] | None:
    """The numpy dtype of an HF feature's values (``List(List(Value("float32")))`` -> float32), if numeric."""
    while feature is not None:
        dtype = getattr(feature, "dtype", None)
        if isinstance(dtype, str) and not hasattr(feature, "feature"):
            try:
                got = np.dtype(dtype)
            except TypeError:
                return None
            return got if got.kind in "biufc" else None
        feature = getattr(feature, "feature", None)
    return None


def _converters(sample_type: Any, columns: list[str], features: Any) -> dict[str, np.dtype[Any] | None]:
    """The ndarray fields of ``sample_type`` and the dtype each is read as; raises for columns that do not match."""
    specs = _fields(sample_type)
    names = {s.name for s in specs}
    required = {s.name for s in specs if not (s.optional or s.has_default)}
    missing = sorted(required - set(columns))
    extra = sorted(set(columns) - names)
    if missing or extra:
        raise SchemaError(
            f"from_hf() maps the HF dataset's columns to the fields of {sample_type.__name__}: expected "
            f"{sorted(names)}, found {sorted(columns)} (missing: {missing}, not in the type: {extra}); select or "
            "rename the columns first (hf.select_columns([...]), hf.rename_column(old, new))",
            field=(missing or extra)[0],
        )
    feats = features or {}
    return {
        s.name: (s.dtype if s.dtype is not None else _leaf_dtype(feats.get(s.name)))
        for s in specs
        if s.kind == "ndarray"
    }


def from_hf(
    hf_dataset: Any,
    sample_type: type[Any],
    path: str | os.PathLike[str],
    *,
    maxcount: int | None = None,
    maxsize: int | None = None,
    progress: bool | None = None,
) -> Dataset[Any]:
    """Write the rows of a Hugging Face dataset (``datasets.Dataset`` or ``IterableDataset``) as shards of
    ``sample_type`` at ``path`` (``maxcount`` / ``maxsize`` split them, see :func:`~atdata_torch.write_samples`), and
    return the dataset over them. List columns of NDArray fields become arrays of the field's dtype (else the dtype the
    HF features declare).

    Raises:
        MissingDependencyError: without the ``hf`` extra.
        SchemaError: when the columns are not the type's fields (naming the missing and the extra ones).
    """
    _datasets()
    if not (sample_type is DictSample or (isinstance(sample_type, type) and issubclass(sample_type, PackableSample))):
        raise SchemaError(f"from_hf() writes @packable samples or DictSample, got {sample_type!r}")
    columns = list(getattr(hf_dataset, "column_names", None) or [])
    arrays = {} if sample_type is DictSample else _converters(sample_type, columns, hf_dataset.features)

    def samples() -> Iterator[Any]:
        for row in hf_dataset:
            for name, dtype in arrays.items():
                v = row.get(name)
                if v is not None:
                    row[name] = np.asarray(v, dtype=dtype)
            yield DictSample(row) if sample_type is DictSample else sample_type(**row)

    return write_samples(samples(), path, maxcount=maxcount, maxsize=maxsize, progress=progress)  # type: ignore[no-any-return]
