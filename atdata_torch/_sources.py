"""The original atdata's ``atdata._sources`` path: :class:`URLSource`, :class:`S3Source`, :class:`BlobSource`
(they live in :mod:`atdata_torch.sources`; ``S3Source`` needs the ``s3`` extra only when one is built).

Example:
    >>> from atdata_torch._sources import URLSource
    >>> URLSource("data/train-{000000..000001}.tar").list_shards()
    ['data/train-000000.tar', 'data/train-000001.tar']
"""

from __future__ import annotations

from .sources.blob import BlobSource
from .sources.s3 import S3Source
from .sources.url import URLSource

__all__ = ["BlobSource", "S3Source", "URLSource"]
