"""Ray Data: read atdata shards into a ``ray.data.Dataset`` and write one out as atdata shards (the ``ray`` extra).

- :func:`read_atdata` is a datasource with one read task per shard, or per range of samples within a shard when
  there are fewer shards than the requested parallelism. Its row count (``count()``) and size estimate come from the
  index sidecars, without reading shards. NDArray fields become Ray tensor columns (``ArrowTensorType``, or
  ``ArrowVariableShapedTensorType`` for ragged fields), other fields plain Arrow columns (``str`` -> ``string``,
  ``bytes`` -> ``binary``, ``int`` -> ``int64``, ``float`` -> ``float64``; ``None`` -> null).
- :func:`write_atdata` is a datasink: each task writes whole shards to a staging prefix named by its task index, and
  the shards get their final, globally numbered names only when every task has succeeded (see
  ``atdata_torch.integrations._ray_write``). The output is ordinary atdata shards with index sidecars.
- :class:`TorchCollate` is a ``collate_fn`` for ``iter_torch_batches`` that keeps ``str`` / ``bytes`` columns (and
  ragged or partly missing arrays) as Python lists. Ray's default collate turns every column into a tensor and raises
  ``TypeError: can't convert np.ndarray of type numpy.str_`` on a ``str`` column; pass
  ``collate_fn=TorchCollate()``, or drop those columns first (``ds.drop_columns(["caption"])``).

A missing optional array is an Arrow null; Ray's numpy batches (``map_batches``) show it as an empty array with the
column's number of dimensions, and :func:`write_atdata` writes it back as ``None``.

Example:
    >>> from atdata_torch.integrations.ray import read_atdata, write_atdata, TorchCollate
    >>> # ds = read_atdata("data/train-{000000..000099}.tar", ImageSample)      # a ray.data.Dataset
    >>> # ds.count()                                                           # from the sidecars
    >>> # for batch in ds.iter_torch_batches(batch_size=64, collate_fn=TorchCollate()): ...
    >>> # write_atdata(ds.map_batches(augment), "s3://bucket/out/train.tar", ImageSample, maxcount=10_000,
    >>> #              endpoint="https://minio.example.org")
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..dataset import Dataset
from ..errors import AtdataError, MissingDependencyError
from ..schema import DictSample

try:
    import pyarrow as pa
    import ray.data
    from ray.data.collate_fn import ArrowBatchCollateFn
except ImportError as _exc:
    raise MissingDependencyError.for_extra("ray", "ray", "atdata_torch.integrations.ray") from _exc

from ._ray_read import AtdataDatasource, from_ray_tensor
from ._ray_write import AtdataDatasink

__all__ = ["AtdataDatasink", "AtdataDatasource", "TorchCollate", "read_atdata", "write_atdata"]

_S3_OPTIONS = ("endpoint", "region", "profile", "access_key", "secret_key")


def _absolute(urls: Any) -> Any:
    """Local paths made absolute (a str stays a str, a list a list); URLs as they are."""
    if isinstance(urls, str):
        return urls if "://" in urls else os.path.abspath(urls)
    return [u if "://" in u else os.path.abspath(u) for u in urls]


def _dataset(source: Any, sample_type: type | None, split: str | None, options: dict[str, Any]) -> Dataset[Any]:
    """The atdata dataset ``read_atdata`` reads: a Dataset as is, an index name through ``load_dataset``, or URLs."""
    if isinstance(source, Dataset):
        if options:
            raise TypeError(f"read_atdata got source options {sorted(options)} with a Dataset; give them to Dataset()")
        ds: Dataset[Any] = source
    elif isinstance(source, str) and (source.startswith("@") or source.startswith("at://")):
        from ..load import DatasetDict, load_dataset

        got = load_dataset(source, sample_type, split=split, **options)
        if isinstance(got, DatasetDict):
            if len(got) != 1:
                raise AtdataError(f"read_atdata({source!r}) has the splits {sorted(got)}; pick one with split=")
            got = next(iter(got.values()))
        ds = got
    else:
        urls = [os.fspath(u) for u in source] if isinstance(source, (list, tuple)) else os.fspath(source)
        ds = Dataset(_absolute(urls), sample_type=sample_type, **options)
    shards = ds.list_shards()
    if shards != _absolute(shards):  # Ray workers run in another directory: relative paths would not resolve there
        ranges = {_absolute(k): v for k, v in ds._ranges.items()}
        ds = Dataset(_absolute(shards), sample_type=ds.sample_type)
        ds._ranges = ranges  # (keep a select_range()d dataset's ranges)
    if ds.has_filter or ds.sample_type is not ds.decode_type:
        raise AtdataError(
            f"read_atdata reads the shards of {ds!r} as {getattr(ds.decode_type, '__name__', ds.decode_type)}: its "
            "map / filter / as_type stages do not run in Ray; apply them with ray_ds.map_batches / filter instead"
        )
    return ds


def read_atdata(
    source: str | os.PathLike[str] | list[str] | Dataset[Any],
    sample_type: type | None = None,
    *,
    rows_per_block: int = 1024,
    split: str | None = None,
    override_num_blocks: int | None = None,
    ray_remote_args: dict[str, Any] | None = None,
    **source_options: Any,
) -> ray.data.Dataset:
    """Read atdata shards as a ``ray.data.Dataset`` (one row per sample, one column per field).

    Args:
        source: Shard URLs (a brace pattern, glob or list; local, ``https://`` or ``s3://``), a
            :class:`~atdata_torch.Dataset` (read without its map/filter stages, which raise), or an index name
            (``"@local/name@version"``, resolved by :func:`~atdata_torch.load_dataset`).
        sample_type: The ``@packable`` class (default: the Dataset's, the index entry's, or ``DictSample``).
        rows_per_block: Rows per Arrow block a read task yields.
        split: For an index name with several splits, the one to read.
        override_num_blocks: Ray's read parallelism (with fewer shards, shards are split into ranges of samples).
        ray_remote_args: Given to the read tasks (``num_cpus``, ``memory``...).
        **source_options: Given to ``Dataset(...)`` (``endpoint=``, ``access_key=`` ... for ``s3://``).

    Example:
        >>> # ds = read_atdata("s3://bucket/train-{000000..000099}.tar", ImageSample, endpoint="http://minio:9000")
    """
    ds = _dataset(source, sample_type, split, dict(source_options))
    datasource = AtdataDatasource(ds, rows_per_block=rows_per_block)
    out: ray.data.Dataset = ray.data.read_datasource(
        datasource, override_num_blocks=override_num_blocks, ray_remote_args=ray_remote_args
    )
    return out


def write_atdata(
    ray_dataset: ray.data.Dataset,
    path: str | os.PathLike[str],
    sample_type: type = DictSample,
    *,
    maxcount: int | None = 10_000,
    maxsize: int | None = None,
    index: Any = None,
    name: str | None = None,
    version: str | None = None,
    ray_remote_args: dict[str, Any] | None = None,
    concurrency: int | None = None,
    **s3_options: Any,
) -> Dataset[Any]:
    """Write a ``ray.data.Dataset`` as atdata shards (``dir/train-000000.tar``, ... with index sidecars).

    Every task writes whole shards to a staging prefix; they are renamed (S3: copied, then deleted) to their final
    names only when every task has succeeded, so a failed write leaves nothing under the final names and a retried
    task no duplicate.

    Args:
        ray_dataset: One column per field of ``sample_type`` (tensor columns for NDArray fields).
        path: ``"dir/train.tar"`` or ``"s3://bucket/prefix/train.tar"``; shards are ``train-NNNNNN.tar`` beside it.
        sample_type: The ``@packable`` class of the rows (``DictSample``: any columns).
        maxcount: Samples per shard (also the rows each write call receives, so that shards are whole).
        maxsize: Bytes per shard.
        index: An :class:`~atdata_torch.Index` to record one entry in (with ``name=``, ``version=``).
        name: The entry's name.
        version: The entry's version.
        ray_remote_args: Given to the write tasks (e.g. ``{"max_retries": 3, "retry_exceptions": True}``).
        concurrency: The most write tasks at once.
        **s3_options: For ``s3://``: ``endpoint``, ``region``, ``profile``, ``access_key``, ``secret_key``
            (default: the boto3 chain of each worker).

    Returns:
        A :class:`~atdata_torch.Dataset` over the written shards.

    Raises:
        AtdataError: shards with the final names exist already.
    """
    path = os.fspath(path)
    unknown = sorted(set(s3_options) - set(_S3_OPTIONS))
    if unknown:
        raise TypeError(f"write_atdata got unknown keyword arguments {unknown}; S3 options are {list(_S3_OPTIONS)}")
    sink = AtdataDatasink(
        path,
        sample_type,
        maxcount=maxcount,
        maxsize=maxsize,
        index=index,
        name=name,
        version=version,
        s3_options=s3_options,
    )
    sink.check_target()
    ray_dataset.write_datasink(sink, ray_remote_args=ray_remote_args, concurrency=concurrency)
    written: Dataset[Any] = Dataset(sink.urls, sample_type=sample_type, **s3_options)
    return written


class TorchCollate(ArrowBatchCollateFn):
    """``iter_torch_batches(collate_fn=TorchCollate())``: tensor and numeric columns as ``torch.Tensor`` s, the rest
    as lists (``str``, ``bytes``; ragged arrays as lists of tensors; ``None`` for missing values).

    Args:
        device: Move the tensors there (Ray moves only all-tensor batches itself).

    Example:
        >>> collate = TorchCollate()
        >>> out = collate(pa.table({"x": [1.0, 2.0], "s": ["a", "b"]}))
        >>> out["x"].tolist(), out["s"]
        ([1.0, 2.0], ['a', 'b'])
    """

    def __init__(self, device: Any = None) -> None:
        super().__init__()
        self.device = device

    def __call__(self, batch: pa.Table) -> Any:
        import torch

        from .._arrow import table_to_columns

        out: dict[str, Any] = {}
        for name, values in table_to_columns(batch, tensors=from_ray_tensor).items():
            col = batch.schema.field(name).type
            numeric = pa.types.is_integer(col) or pa.types.is_floating(col) or pa.types.is_boolean(col)
            if isinstance(values, np.ndarray) and values.dtype != object:
                out[name] = torch.as_tensor(values)
            elif numeric and None not in values:
                out[name] = torch.as_tensor(np.asarray(values))
            else:
                out[name] = [torch.as_tensor(v) if isinstance(v, np.ndarray) else v for v in values]
            if self.device is not None:
                v = out[name]
                out[name] = (
                    v.to(self.device)
                    if isinstance(v, torch.Tensor)
                    else [t.to(self.device) if isinstance(t, torch.Tensor) else t for t in v]
                )
        return out
