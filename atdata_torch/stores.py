"""``atdata_torch.stores``: the original ``atdata.stores`` import path (``LocalDiskStore``).

The original's ``S3DataStore`` is not provided: write shards to S3 with ``ShardWriter("s3://...")``.

Example:
    >>> from atdata_torch.stores import LocalDiskStore, AbstractDataStore
    >>> issubclass(LocalDiskStore, AbstractDataStore)
    True
"""

from __future__ import annotations

from .index import AbstractDataStore, LocalDiskStore, ShardWriteResult

__all__ = ["AbstractDataStore", "LocalDiskStore", "ShardWriteResult"]
