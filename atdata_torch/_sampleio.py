"""Helpers of the sample classes that need nothing of them: value equality, and the webdataset dict form.

``PackableSample.as_wds`` and ``DictSample.as_wds`` give what the original atdata's do, so code that writes with
webdataset (``webdataset.TarWriter(path).write(sample.as_wds)``, the pattern the original's docs teach) keeps
working, and the shards it writes read back here.

Example:
    >>> d = wds_dict(b"\\x80")
    >>> sorted(d), d["msgpack"], len(d["__key__"])
    (['__key__', 'msgpack'], b'\\x80', 36)
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np

__all__ = ["values_equal", "wds_dict"]


def wds_dict(packed: bytes) -> dict[str, Any]:
    """``{"__key__": <a new time-based UUID>, "msgpack": packed}``, as the original's ``as_wds``.

    The key is ``str(uuid.uuid1(0, 0))`` (node and clock sequence 0, as the original: no MAC address in the key);
    within a process, successive keys differ (``uuid1`` never repeats a timestamp). Give your own keys for
    reproducible shards: ``{**sample.as_wds, "__key__": f"{i:06d}"}``.
    """
    return {"__key__": str(uuid.uuid1(0, 0)), "msgpack": packed}


def values_equal(a: Any, b: Any) -> bool:
    """Equality of sample field values: arrays by dtype, shape and content (NaN equal to NaN), containers deeply.

    Example:
        >>> values_equal({"x": np.zeros(2)}, {"x": np.zeros(2)}), values_equal(np.zeros(2), np.zeros(3))
        (True, False)
    """
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
            return False
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        try:
            return bool(np.array_equal(a, b, equal_nan=True))
        except TypeError:
            return bool(np.array_equal(a, b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(values_equal(a[k], b[k]) for k in a)
    return bool(a == b)
