"""The download threads: a priority thread pool shared by every shard download of a source in one process."""

from __future__ import annotations

import bisect
import itertools
import logging
import threading
from collections.abc import Callable
from typing import Protocol

from ._buffers import release_idle

__all__ = ["_Downloader"]

log = logging.getLogger("atdata_torch")


class _Queued(Protocol):
    """What the downloader asks of a download whose parts it runs (a :class:`~._jobs._Job`)."""

    priority: tuple[int, int]
    active: int  # parts being downloaded (under the downloader's lock)


class _Downloader:
    """Download threads serving parts in priority order (the shard needed first, then its parts by offset), with
    at most ``per_job`` parts of one shard at a time. Tasks never wait on other tasks (no deadlock). Threads start
    on demand and end after ``IDLE_EXIT`` seconds without work."""

    IDLE_EXIT = 2.0

    def __init__(self, threads: int, per_job: int) -> None:
        self._threads = threads
        self._per_job = per_job
        self._cv = threading.Condition()
        self._tasks: list[tuple[tuple[int, int, int], int, _Queued, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._started = 0
        self._idle = 0

    def submit(self, job: _Queued, offset: int, fn: Callable[[], None]) -> None:
        with self._cv:
            bisect.insort(self._tasks, ((*job.priority, offset), next(self._seq), job, fn), key=lambda t: t[:2])
            if self._idle == 0 and self._started < self._threads:
                self._started += 1
                threading.Thread(target=self._work, name=f"atdata-download-{self._started}", daemon=True).start()
            else:
                self._cv.notify_all()

    def _take(self) -> tuple[_Queued, Callable[[], None]] | None:
        with self._cv:
            while True:
                for i, (_, _, job, fn) in enumerate(self._tasks):
                    if job.active < self._per_job:
                        del self._tasks[i]
                        job.active += 1
                        return job, fn
                self._idle += 1
                woken = self._cv.wait(self.IDLE_EXIT)
                self._idle -= 1
                if not woken and not self._tasks:
                    self._started -= 1  # idle for a while: this thread ends (a later submit starts another)
                    if self._started == 0:  # this source is idle: drop buffers no source used for as long
                        release_idle(self.IDLE_EXIT)
                    return None

    def _work(self) -> None:
        while True:
            task = self._take()
            if task is None:
                return
            job, fn = task
            try:
                fn()
            except BaseException:  # pragma: no cover - tasks report their errors through their job
                log.exception("atdata_torch: download task failed")
            finally:
                with self._cv:
                    job.active -= 1
                    self._cv.notify_all()
            del task, job, fn  # an idle thread must not keep the last shard (and its buffer) alive
