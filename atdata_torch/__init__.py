"""atdata_torch: typed, sharded datasets for PyTorch, in the atdata / WebDataset tar format.

Example:
    >>> import numpy as np, tempfile, os
    >>> import atdata_torch as atd
    >>> @atd.packable
    ... class ImageSample:
    ...     image: atd.NDArray
    ...     label: str
    >>> path = os.path.join(tempfile.mkdtemp(), "train.tar")
    >>> ds = atd.write_samples([ImageSample(image=np.zeros((2, 2), np.uint8), label="cat")], path, progress=False)
    >>> ds.head(1)[0].label
    'cat'
"""

import logging as _logging
from typing import TYPE_CHECKING as _TYPE_CHECKING

from numpy.typing import NDArray

from ._batch import SampleBatch
from ._ndarray import array_to_bytes, bytes_to_array
from ._pipeline import LastBatch, OnError, Pipeline, SkipReport, sample_rng, sample_seed
from ._sidecar import ShardIndex
from ._stats import LoaderStats
from .cache import ShardCache
from .collate import TensorBatch, collate, to_tensor
from .dataset import Dataset
from .errors import (
    AtdataError,
    AuthError,
    BlobLimitError,
    ChecksumError,
    DecodeError,
    IdentityError,
    IndexStoreError,
    LensNotFoundError,
    MissingDependencyError,
    PublishError,
    RecordNotFoundError,
    SchemaError,
    ShardFormatError,
    ShardNotFoundError,
    SkippedSamplesWarning,
    SourceError,
    SplitError,
)
from .lens import Lens, LensRegistry, lens
from .lens import registry as lens_registry
from .load import DatasetDict, load_dataset, register_resolver
from .loader import Loader, LoaderStateError
from .schema import DictSample, FieldSpec, PackableSample, packable, schema_id
from .sources import ConcatSource, DataSource, LocalSource, MemorySource, register_source
from .sources.http import HTTPSource
from .sources.s3 import S3Source
from .writer import ShardWriter, build_index, write_samples

if _TYPE_CHECKING:
    from .index import Index

__version__ = "0.1.0"

# A library logs, the application decides where to: no "No handlers could be found" output by default.
_logging.getLogger("atdata_torch").addHandler(_logging.NullHandler())

__all__ = [
    "AtdataError",
    "AuthError",
    "BlobLimitError",
    "ChecksumError",
    "ConcatSource",
    "DataSource",
    "Dataset",
    "DatasetDict",
    "DecodeError",
    "DictSample",
    "FieldSpec",
    "HTTPSource",
    "IdentityError",
    "Index",
    "IndexStoreError",
    "LastBatch",
    "Lens",
    "LensNotFoundError",
    "LensRegistry",
    "Loader",
    "LoaderStateError",
    "LoaderStats",
    "LocalSource",
    "MemorySource",
    "MissingDependencyError",
    "NDArray",
    "OnError",
    "PackableSample",
    "Pipeline",
    "PublishError",
    "RecordNotFoundError",
    "S3Source",
    "SampleBatch",
    "SchemaError",
    "ShardCache",
    "ShardFormatError",
    "ShardIndex",
    "ShardNotFoundError",
    "ShardWriter",
    "SkipReport",
    "SkippedSamplesWarning",
    "SourceError",
    "SplitError",
    "TensorBatch",
    "__version__",
    "array_to_bytes",
    "build_index",
    "bytes_to_array",
    "collate",
    "lens",
    "lens_registry",
    "load_dataset",
    "packable",
    "register_resolver",
    "register_source",
    "sample_rng",
    "sample_seed",
    "schema_id",
    "to_tensor",
    "write_samples",
]


def __getattr__(name: str) -> object:
    # Loaded on first use: ``atd.Index`` (the dataset index, a leaf) and ``atd.nodes`` (imports torchdata.nodes).
    if name == "Index":
        from .index import Index

        return Index
    if name == "nodes":
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
