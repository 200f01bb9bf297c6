"""``LoaderStatsCallback``: log the training loader's :meth:`~atdata_torch.Loader.stats` to the Trainer's logger.

Every ``every_n_batches`` training batches (and at the end of each training epoch) it logs ``loader/samples_per_s``,
``loader/batches_per_s``, ``loader/bytes_per_s``, ``loader/wait_s``, ``loader/held_s`` and ``loader/wait_fraction``
(the share of the loop's time spent waiting for data: near 0 means the loader keeps up), and the readers' totals
``loader/read_s``, ``loader/decode_s``, ``loader/cache_hits`` and ``loader/downloads``. Works with any training
loader that is an :class:`~atdata_torch.Loader` (e.g. from ``AtdataDataModule``); others are ignored.

Needs the ``lightning`` extra: ``pip install 'atdata-torch[lightning]'``.

Example:
    >>> from atdata_torch.integrations.loader_stats import LoaderStatsCallback
    >>> cb = LoaderStatsCallback(every_n_batches=50)
    >>> # lightning.Trainer(callbacks=[cb], logger=CSVLogger("runs")).fit(model, datamodule=dm)
"""

from __future__ import annotations

from typing import Any

from ..errors import MissingDependencyError

try:
    import lightning.pytorch as pl
except ImportError as _exc:  # pragma: no cover - exercised without the extra
    raise MissingDependencyError.for_extra("lightning", "lightning", "atdata_torch.integrations.loader_stats") from _exc

__all__ = ["LoaderStatsCallback"]

_KEYS = (
    "samples_per_s",
    "batches_per_s",
    "bytes_per_s",
    "wait_s",
    "held_s",
    "wait_fraction",
    "read_s",
    "decode_s",
    "cache_hits",
    "downloads",
)


def _loaders(obj: Any) -> list[Any]:
    """The atdata_torch loaders in what ``trainer.train_dataloader`` is (a loader, a CombinedLoader, a collection)."""
    if callable(getattr(obj, "stats", None)):
        return [obj]
    inner = getattr(obj, "iterables", None)
    if inner is not None and inner is not obj:
        return _loaders(inner)
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _loaders(v)]
    if isinstance(obj, (list, tuple)):
        return [x for v in obj for x in _loaders(v)]
    return []


class LoaderStatsCallback(pl.Callback):
    """Log the training loader's stats to the Trainer's logger.

    Args:
        every_n_batches: Log every this many training batches (and at each training epoch's end).
        prefix: Metric name prefix.
    """

    def __init__(self, every_n_batches: int = 50, prefix: str = "loader/") -> None:
        super().__init__()
        if every_n_batches < 1:
            raise ValueError(f"every_n_batches must be >= 1, got {every_n_batches}")
        self.every_n_batches = every_n_batches
        self.prefix = prefix

    def _log(self, trainer: Any, pl_module: Any, *, on_step: bool = True) -> None:
        for i, loader in enumerate(_loaders(trainer.train_dataloader)):
            s = loader.stats()
            tag = self.prefix if i == 0 else f"{self.prefix}{i}/"
            pl_module.log_dict({tag + k: float(s[k]) for k in _KEYS}, on_step=on_step, on_epoch=not on_step)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Log every ``every_n_batches`` batches."""
        if (batch_idx + 1) % self.every_n_batches == 0:
            self._log(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Log at the end of each training epoch."""
        self._log(trainer, pl_module, on_step=False)
