"""The original atdata's ``atdata._hf_api`` path: :func:`load_dataset` and :class:`DatasetDict` (they live in
:mod:`atdata_torch.load` and :mod:`atdata_torch._splits`).

Example:
    >>> from atdata_torch._hf_api import DatasetDict
    >>> DatasetDict(streaming=True).streaming
    True
"""

from __future__ import annotations

from ._splits import DatasetDict
from .load import load_dataset

__all__ = ["DatasetDict", "load_dataset"]
