"""Dataset, sample and index factories for tests (the original atdata's ``make_dataset``, ``make_samples``,
``mock_index``).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> import atdata_torch as atd
    >>> @atd.packable
    ... class Point:
    ...     x: float
    ...     label: str
    >>> points = make_samples(Point, n=3, seed=0)
    >>> [p.label for p in points]
    ['label_0', 'label_1', 'label_2']
    >>> ds = make_dataset(Path(tempfile.mkdtemp()), points)
    >>> [p.label for p in ds.ordered()]
    ['label_0', 'label_1', 'label_2']
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..dataset import Dataset
from ..errors import EmptyDatasetError, SchemaError
from ..index import Index
from ..writer import write_samples

__all__ = ["make_dataset", "make_samples", "mock_index"]

ST = TypeVar("ST")


def make_dataset(
    path: Path | str,
    samples: Sequence[Any],
    *,
    name: str = "test",
    sample_type: type | None = None,
) -> Dataset[Any]:
    """Write ``samples`` to one shard ``path/{name}-000000.tar`` and return a ``Dataset`` over it.

    Args:
        path: Directory for the shard (created when missing).
        samples: ``@packable`` instances, all of one type.
        name: The shard's file name prefix.
        sample_type: The dataset's sample type (default: the first sample's type).

    Raises:
        EmptyDatasetError: ``samples`` is empty (also a ``ValueError``, as the original raised).
    """
    if not samples:
        raise EmptyDatasetError(
            "make_dataset(path, samples): samples is empty; pass at least one sample (make_samples(T, n) makes some)"
        )
    tar_path = Path(path) / f"{name}-000000.tar"
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    write_samples(samples, str(tar_path), progress=False)
    st = sample_type or type(samples[0])
    return Dataset(url=str(tar_path), sample_type=st)


def _value(f: dataclasses.Field[Any], i: int, rng: np.random.Generator) -> tuple[bool, Any]:
    """``(set it, value)`` for field ``f`` of sample ``i``: the original's rules, in its order (same draws)."""
    type_str = f.type if isinstance(f.type, str) else str(f.type)
    name = f.name
    if f.type is str or type_str == "str":
        return True, f"{name}_{i}"
    if f.type is int or type_str == "int":
        return True, i
    if f.type is float or type_str == "float":
        return True, float(rng.random())
    if f.type is bool or type_str == "bool":
        return True, i % 2 == 0
    if f.type is bytes or type_str == "bytes":
        return True, rng.bytes(16)
    if "NDArray" in type_str or "ndarray" in type_str.lower():
        return True, rng.standard_normal((4, 4)).astype(np.float32)
    if "list" in type_str.lower():
        return True, [f"{name}_{i}_{j}" for j in range(3)]
    if "None" in type_str:
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        return (False, None) if has_default else (True, None)
    return True, f"{name}_{i}"


def make_samples(sample_type: type[ST], n: int = 10, seed: int | None = None) -> list[ST]:
    """``n`` instances of a ``@packable`` type with generated field values (the same ``seed``, the same samples).

    As the original: ``str`` fields get ``"<field>_<i>"``, ``int`` the index ``i``, ``float`` a uniform draw in
    [0, 1), ``bool`` ``i % 2 == 0``, ``bytes`` 16 random bytes, ``NDArray`` a random ``(4, 4)`` float32 array,
    lists ``["<field>_<i>_0", ..., "<field>_<i>_2"]``; optional fields keep their default (``None`` when they
    have none). Random values come from ``numpy.random.default_rng(seed)`` in field order, so a seed gives the
    original's values too.

    Args:
        sample_type: A ``@packable`` class.
        n: How many samples.
        seed: Seed of the random values (``None``: fresh ones each call).

    Raises:
        SchemaError: ``sample_type`` is not a ``@packable`` (dataclass) type (also a ``TypeError``).
    """
    if not (isinstance(sample_type, type) and dataclasses.is_dataclass(sample_type)):
        raise SchemaError(
            f"make_samples: expected a @packable class, got {sample_type!r}; decorate it with @atdata_torch.packable"
        )
    rng = np.random.default_rng(seed)
    out: list[ST] = []
    for i in range(n):
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(sample_type):
            use, value = _value(f, i, rng)
            if use:
                kwargs[f.name] = value
        out.append(sample_type(**kwargs))
    return out


def mock_index(path: Path | str | None = None, **kwargs: Any) -> Index:
    """An :class:`~atdata_torch.Index` over a fresh SQLite file ``path/test_index.db`` (no Redis, no services).

    Args:
        path: Directory for the database (``None``: a new temporary directory).
        **kwargs: Passed to ``Index()`` (``data_dir=``, ``atmosphere=``, ...).

    Example:
        >>> index = mock_index()
        >>> index.list_schemas()
        []
        >>> index.close()
    """
    root = Path(path) if path is not None else Path(tempfile.mkdtemp(prefix="atdata-torch-index-"))
    root.mkdir(parents=True, exist_ok=True)
    kwargs.setdefault("atmosphere", None)
    return Index(str(root / "test_index.db"), **kwargs)
