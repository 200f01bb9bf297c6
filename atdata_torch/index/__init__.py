"""The dataset index: names, versions, search, schemas and lenses, in SQLite (default) or Redis.

Both backends use the original atdata's tables and keys (see ``docs/format.md``), so an index either library
wrote is readable by the other; entry ids are the original's CIDs.

Example:
    >>> import os, tempfile, numpy as np
    >>> import atdata_torch as atd
    >>> @atd.packable
    ... class Reading:
    ...     values: atd.NDArray
    ...     station: str
    >>> index = atd.Index(os.path.join(tempfile.mkdtemp(), "index.db"))   # default: ~/.local/share/atdata-torch
    >>> entry = index.write_samples([Reading(np.arange(3.0), "a")], name="weather", version="1.0.0",
    ...                             progress=False)
    >>> index.get_dataset("@local/weather@1.0.0").schema_ref
    'atdata://local/schema/Reading@1.0.0'
    >>> T = index.get_schema_type(entry.schema_ref)       # a @packable class rebuilt from the stored schema
    >>> T.from_bytes(Reading(np.arange(2.0), "b").packed).station
    'b'
    >>> index.close()
"""

from __future__ import annotations

from ..records import FieldMappingLens, build_schema_record, type_from_record
from ._cid import cid_of, entry_cid
from ._compat import Repository, generate_cid, generate_cid_from_bytes, promote_to_atmosphere, verify_cid
from ._default import create_repository, get_default_index, set_default_index
from ._index import Index
from ._locations import default_data_dir, default_index_location, parse_dataset_ref
from ._records import IndexEntry, IndexNotFoundError, IndexStore, Label
from ._s3store import S3DataStore
from ._stores import AbstractDataStore, LocalDiskStore, ShardWriteResult, sha256_file, verify_checksums
from .redis import RedisStore
from .sqlite import SqliteStore

#: The original atdata's names for the entry class (``atdata.local.LocalDatasetEntry``, ``BasicIndexEntry``).
LocalDatasetEntry = IndexEntry
BasicIndexEntry = IndexEntry

__all__ = [
    "AbstractDataStore",
    "BasicIndexEntry",
    "FieldMappingLens",
    "Index",
    "IndexEntry",
    "IndexNotFoundError",
    "IndexStore",
    "Label",
    "LocalDatasetEntry",
    "LocalDiskStore",
    "RedisStore",
    "Repository",
    "S3DataStore",
    "ShardWriteResult",
    "SqliteStore",
    "build_schema_record",
    "cid_of",
    "create_repository",
    "default_data_dir",
    "default_index_location",
    "entry_cid",
    "generate_cid",
    "generate_cid_from_bytes",
    "get_default_index",
    "parse_dataset_ref",
    "promote_to_atmosphere",
    "set_default_index",
    "sha256_file",
    "type_from_record",
    "verify_checksums",
    "verify_cid",
]
