"""Loader statistics: is the loader the bottleneck of a training loop?

A :class:`LoaderStats` is kept by every :class:`~atdata_torch.Loader` (``loader.stats()``) at the cost of two clock
reads per batch. The loop's time splits into the time it **waited** for the loader (inside ``next()``) and the time
it **held** each batch (its own work, from receiving a batch to asking for the next one). A large wait share means
the loader is the bottleneck: add workers, a cache, or lighter ``map()`` work.

Each reader (every DataLoader worker, or the main process with ``num_workers=0``) also counts its own work: the
time it spent **reading** records (locating them, waiting for shard bytes still downloading) and **decoding** them
into batches (``map()`` stages included), and the shards it got from the local **cache** or **downloaded**. A
worker's counts travel to the main process with each batch it sends (a tuple of five numbers), so ``stats()`` has
them per worker. Two clock reads per batch, no per-sample work.

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

__all__ = ["DEFAULT_PROFILE_EVERY", "LoaderStats", "batch_nbytes", "io_counts"]

log = logging.getLogger("atdata_torch")

DEFAULT_PROFILE_EVERY = 100  # batches between two log lines of Loader(profile=True)

# A reader's counts, as they travel from a worker with a batch: (read_s, decode_s, batches, cache_hits, downloads).
Work = tuple[float, float, int, int, int]
_WORK_KEYS = ("read_s", "decode_s", "batches", "cache_hits", "downloads")


def io_counts(source: Any) -> tuple[int, int]:
    """``(cache hits, shards downloaded)`` of a source in this process (summed over a ``ConcatSource``'s parts)."""
    inner = getattr(source, "sources", None)
    if isinstance(inner, list):
        hits = downloads = 0
        for part in inner:
            h, d = io_counts(part)
            hits += h
            downloads += d
        return hits, downloads
    cache = getattr(source, "cache", None)
    hits = getattr(cache, "hits", 0) if cache is not None else 0
    downloads = getattr(source, "shards_downloaded", 0)
    return (hits if isinstance(hits, int) else 0), (downloads if isinstance(downloads, int) else 0)


def batch_nbytes(batch: Any) -> int:
    """Bytes of the arrays and tensors of a batch (``TensorBatch``, ``SampleBatch``, a tensor, a dict or a tuple)."""
    fields = getattr(batch, "_fields", None)  # a TensorBatch's slot: asked first, as its __getattr__ raises on a miss
    if fields.__class__ is dict:
        return sum(batch_nbytes(v) for v in fields.values())
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
        self.workers: dict[int | None, list[float]] = {}  # worker id (None: this process) -> counts of _WORK_KEYS

    def record_work(self, worker: int | None, work: Work) -> None:
        """Add a reader's counts since its last report (``worker``: its id; ``None``: the main process)."""
        w = self.workers.get(worker)
        if w is None:
            w = self.workers[worker] = [0.0] * len(_WORK_KEYS)
        for i, v in enumerate(work):
            w[i] += v

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
            "read_s": sum(w[0] for w in self.workers.values()),
            "decode_s": sum(w[1] for w in self.workers.values()),
            "cache_hits": int(sum(w[3] for w in self.workers.values())),
            "downloads": int(sum(w[4] for w in self.workers.values())),
            "workers": [
                {
                    "worker": k,
                    **{key: (float(v) if key.endswith("_s") else int(v)) for key, v in zip(_WORK_KEYS, w, strict=True)},
                }
                for k, w in sorted(self.workers.items(), key=lambda kv: -1 if kv[0] is None else kv[0])
            ],
        }

    def summary(self) -> str:
        """One line for a log."""
        s = self.snapshot()
        return (
            f"epoch {s['epoch']}: {s['batches']} batches, {s['samples_per_s']:,.0f} samples/s, "
            f"{s['bytes_per_s'] / 1e6:,.1f} MB/s; the loop waited {s['wait_s']:.3f}s on the loader and held batches "
            f"{s['held_s']:.3f}s ({100 * s['wait_fraction']:.0f}% waiting); readers read {s['read_s']:.3f}s and "
            f"decoded {s['decode_s']:.3f}s in {max(1, len(s['workers']))} process(es); shards: {s['cache_hits']} "
            f"from the cache, {s['downloads']} downloaded"
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
