"""Loader statistics: is the loader the bottleneck of a training loop?

A :class:`LoaderStats` is kept by every :class:`~atdata_torch.Loader` (``loader.stats()``) at the cost of two clock
reads per batch. The loop's time splits into the time it **waited** for the loader (inside ``next()``) and the time
it **held** each batch (its own work, from receiving a batch to asking for the next one). A large wait share means
the loader is the bottleneck: add workers, a cache, or lighter ``map()`` work.

Example:
    >>> s = LoaderStats()
    >>> s.record(wait=0.01, held=0.03, samples=64, nbytes=1 << 20)
    >>> s.snapshot()["batches"], round(s.snapshot()["wait_fraction"], 2)
    (1, 0.25)
"""

from __future__ import annotations

import logging
import time
from typing import Any

__all__ = ["LoaderStats", "batch_nbytes"]

log = logging.getLogger("atdata_torch")


def batch_nbytes(batch: Any) -> int:
    """Bytes of the arrays and tensors of a batch (``TensorBatch``, ``SampleBatch``, a tensor, a dict or a tuple)."""
    nbytes = getattr(batch, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if hasattr(batch, "element_size") and hasattr(batch, "numel"):
        return int(batch.element_size() * batch.numel())
    fields = getattr(batch, "_fields", None)
    if not isinstance(fields, dict):
        fields = getattr(batch, "fields", None)
    if isinstance(fields, dict):
        return sum(batch_nbytes(v) for v in fields.values())
    if isinstance(batch, dict):
        return sum(batch_nbytes(v) for v in batch.values())
    if isinstance(batch, (list, tuple)) and batch and not isinstance(batch[0], (str, bytes, int, float)):
        return sum(batch_nbytes(v) for v in batch)
    return 0


class LoaderStats:
    """Counters of one pass (reset at the start of each epoch) and of the loader's whole life.

    ``snapshot()`` gives batches/s, samples/s, bytes/s (over the loop's wall time: wait + held), the time the loop
    waited on the loader, the time it held batches, and their ratio.
    """

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.reset()

    def reset(self, epoch: int | None = None) -> None:
        """Start counting a new pass."""
        self.epoch = epoch
        self.batches = 0
        self.samples = 0
        self.bytes = 0
        self.wait_s = 0.0
        self.held_s = 0.0
        self.first_batch_s: float | None = None

    def record(self, *, wait: float, held: float, samples: int, nbytes: int) -> None:
        """Count one batch: ``wait`` seconds inside ``next()``, ``held`` seconds in the loop before that."""
        if self.first_batch_s is None:
            self.first_batch_s = wait
        self.batches += 1
        self.samples += samples
        self.bytes += nbytes
        self.wait_s += wait
        self.held_s += held

    def snapshot(self) -> dict[str, Any]:
        """The counters and rates as a plain dict (JSON-able)."""
        wall = self.wait_s + self.held_s
        rate = (lambda n: n / wall) if wall > 0 else (lambda n: 0.0)
        return {
            "epoch": self.epoch,
            "batches": self.batches,
            "samples": self.samples,
            "bytes": self.bytes,
            "batches_per_s": rate(self.batches),
            "samples_per_s": rate(self.samples),
            "bytes_per_s": rate(self.bytes),
            "wait_s": self.wait_s,
            "held_s": self.held_s,
            "wait_fraction": self.wait_s / wall if wall > 0 else 0.0,
            "first_batch_s": self.first_batch_s,
        }

    def summary(self) -> str:
        """One line for a log."""
        s = self.snapshot()
        return (
            f"epoch {s['epoch']}: {s['batches']} batches, {s['samples_per_s']:,.0f} samples/s, "
            f"{s['bytes_per_s'] / 1e6:,.1f} MB/s; the loop waited {s['wait_s']:.3f}s on the loader and held batches "
            f"{s['held_s']:.3f}s ({100 * s['wait_fraction']:.0f}% waiting)"
        )


class _Timer:
    """Wraps a loader's batch iterator: times each ``next()`` (wait) and the gap before it (held)."""

    def __init__(self, stats: LoaderStats, profile_every: int | None) -> None:
        self.stats = stats
        self.every = profile_every
        self._t = time.perf_counter()

    def before_next(self) -> None:
        now = time.perf_counter()
        if self.stats.batches:
            self.stats.held_s += now - self._t  # the loop's work on the batch it got last
        self._t = now

    def after_next(self, batch: Any) -> None:
        now = time.perf_counter()
        try:
            n = len(batch)
        except TypeError:
            n = 0
        self.stats.record(wait=now - self._t, held=0.0, samples=n, nbytes=batch_nbytes(batch))
        self._t = now
        if self.every and self.stats.batches % self.every == 0:
            log.info("atdata_torch loader %s", self.stats.summary())

    def end(self) -> None:
        if self.every:
            log.info("atdata_torch loader %s (end of epoch)", self.stats.summary())
