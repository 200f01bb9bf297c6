"""``atdata_torch.repository``: the original ``atdata.repository`` import path.

Example:
    >>> from atdata_torch.repository import Repository, create_repository
    >>> Repository.__name__
    'Repository'
"""

from __future__ import annotations

from .index import Repository, create_repository

__all__ = ["Repository", "create_repository"]
