"""``atdata_torch.stores``: the original ``atdata.stores`` import path (``LocalDiskStore``, ``S3DataStore``).

Example:
    >>> from atdata_torch.stores import LocalDiskStore, AbstractDataStore
    >>> issubclass(LocalDiskStore, AbstractDataStore)
    True
"""

from __future__ import annotations

from .index import AbstractDataStore, LocalDiskStore, S3DataStore, ShardWriteResult

__all__ = ["AbstractDataStore", "LocalDiskStore", "S3DataStore", "ShardWriteResult"]
