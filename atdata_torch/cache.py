"""The shard cache (:class:`ShardCache`): it lives in :mod:`atdata_torch.sources.cache`; this module keeps
``atdata_torch.cache`` importable. Sources import it from there, never from here."""

from __future__ import annotations

from .sources.cache import ShardCache

__all__ = ["ShardCache"]
