"""``atdata_torch.local``: the original ``atdata.local`` import path (its index, entry and disk-store names).

Example:
    >>> from atdata_torch.local import Index, LocalDatasetEntry, LocalDiskStore
    >>> LocalDatasetEntry.__name__
    'IndexEntry'
"""

from __future__ import annotations

from .index import BasicIndexEntry, Index, LocalDatasetEntry, LocalDiskStore, Repository

__all__ = ["BasicIndexEntry", "Index", "LocalDatasetEntry", "LocalDiskStore", "Repository"]
