"""Progress bars for slow, user-visible work (cache fills, index builds), shown as the writer shows its own.

``progress=None`` (the default everywhere): a bar only when stderr is a terminal (tqdm's ``disable=None``), and
never inside a DataLoader worker (workers inherit the terminal, and several bars from several processes would
garble it). ``True``: always (in workers too). ``False``: never. A bar that would not show is ``None``, so that a
download loop pays one ``is not None`` test per chunk and nothing per byte.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

__all__ = ["bar", "in_worker"]


def in_worker() -> bool:
    """Whether this process is a DataLoader worker (torch is only asked when it is imported already)."""
    data = sys.modules.get("torch.utils.data")
    return data is not None and data.get_worker_info() is not None


def bar(progress: bool | None, **kwargs: Any) -> Any:
    """A ``tqdm`` bar (``leave=False``) for ``progress`` (see the module), or ``None`` when it would not show."""
    if progress is False or (progress is None and in_worker()):
        return None
    kwargs.setdefault("leave", False)
    b = tqdm(disable=None if progress is None else False, **kwargs)
    if b.disable:
        b.close()
        return None
    return b
