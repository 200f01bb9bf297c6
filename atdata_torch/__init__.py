"""atdata_torch: typed, sharded datasets for PyTorch, in the atdata / WebDataset tar format.

``import atdata_torch`` is cheap: the names below are loaded from their modules on first use (so that the
command line, ``atdata-torch --help``, starts without importing torch). ``__all__`` is the public API; a few
internals that earlier versions exported (``Pipeline``, ``SkipReport``, ``ShardIndex``, ``FieldSpec``) stay
reachable as attributes, but their homes are their modules.

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

import importlib as _importlib
import logging as _stdlib_logging  # (not "_logging": that is the submodule atdata_torch._logging)
import sys as _sys
import types as _types
from typing import TYPE_CHECKING as _TYPE_CHECKING

from .errors import (
    AppViewError,
    AppViewRequiredError,
    AppViewUnavailableError,
    AtdataError,
    AuthError,
    BlobLimitError,
    ChecksumError,
    ConfigError,
    DecodeError,
    EmptyDatasetError,
    IdentityError,
    IndexNotFoundError,
    IndexStoreError,
    LensNotFoundError,
    LensPutterError,
    LoaderStateError,
    ManifestNotFoundError,  # manifests (c17m)
    MissingDependencyError,
    MixtureError,  # issue 18: mixtures
    PartialFailureError,
    PublishError,
    RandomAccessError,
    RecordNotFoundError,
    SampleIndexError,
    SampleKeyError,
    SchemaError,
    ShardError,
    ShardFormatError,
    ShardNotFoundError,
    SkippedSamplesWarning,
    SourceError,
    SplitError,
)

if _TYPE_CHECKING:
    from numpy.typing import NDArray

    from . import nodes as nodes
    from ._batch import SampleBatch
    from ._logging import configure_logging, get_logger, log_operation
    from ._ndarray import array_to_bytes, bytes_to_array
    from ._pipeline import LastBatch, OnError, sample_rng, sample_seed
    from ._pipeline import Pipeline as Pipeline
    from ._pipeline import SkipReport as SkipReport
    from ._protocols import Packable
    from ._random_access import MapDataset
    from ._sidecar import ShardIndex as ShardIndex
    from ._stats import LoaderStats
    from .cache import ShardCache
    from .collate import TensorBatch, collate, to_tensor
    from .dataset import Dataset
    from .index import (
        AbstractDataStore,
        Index,
        IndexEntry,
        LocalDiskStore,
        Repository,
        ShardWriteResult,
        create_repository,
        generate_cid,
        get_default_index,
        promote_to_atmosphere,
        set_default_index,
        verify_checksums,
        verify_cid,
    )
    from .lens import Lens, LensNetwork, LensRegistry, lens
    from .lens import registry as lens_registry
    from .load import DatasetDict, load_dataset, register_resolver
    from .loader import Loader
    from .mixture import Mixture, mix  # issue 18: mixtures
    from .schema import DictSample, PackableSample, packable, schema_id
    from .schema import FieldSpec as FieldSpec
    from .sources import ConcatSource, DataSource, LocalSource, MemorySource, register_source
    from .sources.blob import BlobSource
    from .sources.http import HTTPSource
    from .sources.s3 import S3Source
    from .sources.url import URLSource
    from .writer import ShardWriter, build_index, write_samples

if _TYPE_CHECKING:  # search (c17s)
    from .search import (
        AppViewSearchBackend,
        LocalSearchBackend,
        SearchAggregator,
        SearchBackend,
        SearchResult,
        SearchResults,
    )

if _TYPE_CHECKING:  # manifests and queries (c17m)
    from .manifest import (
        ManifestBuilder,
        ManifestField,
        ManifestWriter,
        QueryExecutor,
        SampleLocation,
        ShardManifest,
        query_fields,
    )

if _TYPE_CHECKING:  # the CLI as a function, the deprecated schema_to_type() (c17t)
    from ._toplevel import main
    from ._toplevel import schema_to_type as schema_to_type

__version__ = "0.1.0"

# A library logs, the application decides where to: no "No handlers could be found" output by default.
_stdlib_logging.getLogger("atdata_torch").addHandler(_stdlib_logging.NullHandler())

# name -> (module, attribute): what ``atd.<name>`` loads on first use. Relative modules are this package's.
_LAZY: dict[str, tuple[str, str]] = {
    "NDArray": ("numpy.typing", "NDArray"),
    "SampleBatch": ("._batch", "SampleBatch"),
    "array_to_bytes": ("._ndarray", "array_to_bytes"),
    "bytes_to_array": ("._ndarray", "bytes_to_array"),
    "LastBatch": ("._pipeline", "LastBatch"),
    "OnError": ("._pipeline", "OnError"),
    "sample_rng": ("._pipeline", "sample_rng"),
    "sample_seed": ("._pipeline", "sample_seed"),
    "LoaderStats": ("._stats", "LoaderStats"),
    "MapDataset": ("._random_access", "MapDataset"),
    "ShardCache": (".cache", "ShardCache"),
    "TensorBatch": (".collate", "TensorBatch"),
    "collate": (".collate", "collate"),
    "to_tensor": (".collate", "to_tensor"),
    "Dataset": (".dataset", "Dataset"),
    # issue 18: weighted mixtures
    "Mixture": (".mixture", "Mixture"),
    "mix": (".mixture", "mix"),
    "Index": (".index", "Index"),
    "get_default_index": (".index", "get_default_index"),
    "set_default_index": (".index", "set_default_index"),
    "IndexEntry": (".index", "IndexEntry"),
    "AbstractDataStore": (".index", "AbstractDataStore"),
    "Repository": (".index", "Repository"),
    "create_repository": (".index", "create_repository"),
    "LocalDiskStore": (".index", "LocalDiskStore"),
    "verify_checksums": (".index", "verify_checksums"),
    "ShardWriteResult": (".index", "ShardWriteResult"),
    "generate_cid": (".index", "generate_cid"),
    "verify_cid": (".index", "verify_cid"),
    "promote_to_atmosphere": (".index", "promote_to_atmosphere"),
    "Lens": (".lens", "Lens"),
    "LensRegistry": (".lens", "LensRegistry"),
    "lens": (".lens", "lens"),
    "lens_registry": (".lens", "registry"),
    "DatasetDict": (".load", "DatasetDict"),
    "load_dataset": (".load", "load_dataset"),
    "register_resolver": (".load", "register_resolver"),
    "Loader": (".loader", "Loader"),
    "DictSample": (".schema", "DictSample"),
    "PackableSample": (".schema", "PackableSample"),
    "packable": (".schema", "packable"),
    "schema_id": (".schema", "schema_id"),
    "ConcatSource": (".sources", "ConcatSource"),
    "DataSource": (".sources", "DataSource"),
    "LocalSource": (".sources", "LocalSource"),
    "MemorySource": (".sources", "MemorySource"),
    "register_source": (".sources", "register_source"),
    "HTTPSource": (".sources.http", "HTTPSource"),
    "S3Source": (".sources.s3", "S3Source"),
    "ShardWriter": (".writer", "ShardWriter"),
    "build_index": (".writer", "build_index"),
    "write_samples": (".writer", "write_samples"),
    # manifests and queries (c17m)
    "ManifestBuilder": (".manifest", "ManifestBuilder"),
    "ManifestField": (".manifest", "ManifestField"),
    "ManifestWriter": (".manifest", "ManifestWriter"),
    "QueryExecutor": (".manifest", "QueryExecutor"),
    "SampleLocation": (".manifest", "SampleLocation"),
    "ShardManifest": (".manifest", "ShardManifest"),
    "query_fields": (".manifest", "query_fields"),
    # Not in __all__: internals that earlier versions exported, kept reachable (import them from their modules).
    "Pipeline": ("._pipeline", "Pipeline"),
    "SkipReport": ("._pipeline", "SkipReport"),
    "ShardIndex": ("._sidecar", "ShardIndex"),
    "FieldSpec": (".schema", "FieldSpec"),
}
# --- issue 17 (c17l): lenses, sources, protocols, logging under the original atdata's names
_LAZY.update(
    {
        "LensNetwork": (".lens", "LensNetwork"),
        "URLSource": (".sources.url", "URLSource"),
        "BlobSource": (".sources.blob", "BlobSource"),
        "Packable": ("._protocols", "Packable"),
        "configure_logging": ("._logging", "configure_logging"),
        "get_logger": ("._logging", "get_logger"),
        "log_operation": ("._logging", "log_operation"),
    }
)
# --- issue 17 (c17s): search, the original's remaining top-level names
_LAZY.update(
    {
        "SearchResult": (".search", "SearchResult"),
        "SearchResults": (".search", "SearchResults"),
        "SearchBackend": (".search", "SearchBackend"),
        "AppViewSearchBackend": (".search", "AppViewSearchBackend"),
        "LocalSearchBackend": (".search", "LocalSearchBackend"),
        "SearchAggregator": (".search", "SearchAggregator"),
    }
)
# --- issue 17 (c17t): the CLI as a function (``atd.main(argv) -> int``) and the deprecated schema_to_type()
_LAZY.update(
    {
        "main": ("._toplevel", "main"),
        "schema_to_type": ("._toplevel", "schema_to_type"),  # deprecated: warns when called; not in __all__
    }
)
# Deprecated names that warn on every access (module __getattr__, never cached, not in dir()), as the original.
_DEPRECATED = {"AbstractIndex": ("._toplevel", "abstract_index")}
# Submodules reachable as attributes before their first import (``atd.nodes`` imports torchdata.nodes).
_LAZY_MODULES = ("nodes", "atmosphere")
# Submodules that share their name with a function of the API: ``atd.collate`` and ``atd.lens`` are the functions.
_SHADOWED = ("collate", "lens")


class _Package(_types.ModuleType):
    """This package's module type: importing ``atdata_torch.collate`` (or ``.lens``) binds the submodule on its
    parent, which would hide the function of the same name; bind the function instead (as an eager
    ``from .collate import collate`` did)."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _SHADOWED and isinstance(value, _types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package

__all__ = [
    "AbstractDataStore",
    "AppViewError",
    "AppViewRequiredError",
    "AppViewSearchBackend",
    "AppViewUnavailableError",
    "AtdataError",
    "AuthError",
    "BlobLimitError",
    "BlobSource",
    "ChecksumError",
    "ConcatSource",
    "ConfigError",
    "DataSource",
    "Dataset",
    "DatasetDict",
    "DecodeError",
    "DictSample",
    "EmptyDatasetError",
    "HTTPSource",
    "IdentityError",
    "Index",
    "IndexEntry",
    "IndexNotFoundError",
    "IndexStoreError",
    "LastBatch",
    "Lens",
    "LensNetwork",
    "LensNotFoundError",
    "LensPutterError",
    "LensRegistry",
    "Loader",
    "LoaderStateError",
    "LoaderStats",
    "LocalDiskStore",
    "LocalSearchBackend",
    "LocalSource",
    "ManifestBuilder",
    "ManifestField",
    "ManifestNotFoundError",
    "ManifestWriter",
    "MapDataset",
    "MemorySource",
    "MissingDependencyError",
    "Mixture",
    "MixtureError",
    "NDArray",
    "OnError",
    "Packable",
    "PackableSample",
    "PartialFailureError",
    "PublishError",
    "QueryExecutor",
    "RandomAccessError",
    "RecordNotFoundError",
    "Repository",
    "S3Source",
    "SampleBatch",
    "SampleIndexError",
    "SampleKeyError",
    "SampleLocation",
    "SchemaError",
    "SearchAggregator",
    "SearchBackend",
    "SearchResult",
    "SearchResults",
    "ShardCache",
    "ShardError",
    "ShardFormatError",
    "ShardManifest",
    "ShardNotFoundError",
    "ShardWriteResult",
    "ShardWriter",
    "SkippedSamplesWarning",
    "SourceError",
    "SplitError",
    "TensorBatch",
    "URLSource",
    "__version__",
    "array_to_bytes",
    "build_index",
    "bytes_to_array",
    "collate",
    "configure_logging",
    "create_repository",
    "generate_cid",
    "get_default_index",
    "get_logger",
    "lens",
    "lens_registry",
    "load_dataset",
    "log_operation",
    "main",
    "mix",
    "packable",
    "promote_to_atmosphere",
    "query_fields",
    "register_resolver",
    "register_source",
    "sample_rng",
    "sample_seed",
    "schema_id",
    "set_default_index",
    "to_tensor",
    "verify_checksums",
    "verify_cid",
    "write_samples",
]


def __getattr__(name: str) -> object:
    # Loaded on first use, then kept in the module's namespace (later lookups are plain attribute reads).
    if name in _LAZY:
        module, attr = _LAZY[name]
        value: object = getattr(_importlib.import_module(module, __name__), attr)
    elif name in _LAZY_MODULES:
        value = _importlib.import_module(f"{__name__}.{name}")
    elif name in _DEPRECATED:  # issue 17 (c17t): warns on each access, so it is not kept in the namespace
        module, attr = _DEPRECATED[name]
        factory = getattr(_importlib.import_module(module, __name__), attr)
        return factory()
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_LAZY_MODULES})
