"""``atdata_torch.local``: the original ``atdata.local`` import path (its index, entry and disk-store names).

Example:
    >>> from atdata_torch.local import Index, LocalDatasetEntry, LocalDiskStore
    >>> LocalDatasetEntry.__name__
    'IndexEntry'
"""

from __future__ import annotations

from .index import BasicIndexEntry, Index, LocalDatasetEntry, LocalDiskStore, Repository, S3DataStore

#: The original's Redis key prefixes (``LocalDatasetEntry:{cid}``, ``LocalSchema:{name}@{version}``); our
#: Redis store uses the same keys.
REDIS_KEY_DATASET_ENTRY = "LocalDatasetEntry"
REDIS_KEY_SCHEMA = "LocalSchema"

__all__ = [
    "REDIS_KEY_DATASET_ENTRY",
    "REDIS_KEY_SCHEMA",
    "BasicIndexEntry",
    "Index",
    "LocalDatasetEntry",
    "LocalDiskStore",
    "Repository",
    "S3DataStore",
]
