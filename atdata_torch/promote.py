"""``atdata_torch.promote``: the original ``atdata.promote`` import path.

Example:
    >>> from atdata_torch.promote import promote_to_atmosphere
    >>> promote_to_atmosphere.__name__
    'promote_to_atmosphere'
"""

from __future__ import annotations

from .index import promote_to_atmosphere

__all__ = ["promote_to_atmosphere"]
