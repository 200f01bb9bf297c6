"""Remote request policy: which failures are retried, how long to back off (``Retry-After`` included), the
deadline of a request with all its retries, and the minimum transfer rate of a response body.

A source's ``_open_range`` raises :class:`TransientError` for a failure worth retrying and bounds its timeouts by
:func:`request_deadline`; :func:`with_retries` calls it again until it succeeds, the attempts run out or the
deadline passes; :class:`Pace` breaks off a body that arrives too slowly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .._redaction import redact_text
from ..errors import SourceError

__all__ = ["Pace", "TransientError", "request_deadline", "with_retries"]

log = logging.getLogger("atdata_torch")

_T = TypeVar("_T")


class TransientError(Exception):
    """Raised by ``_open_range`` implementations for failures worth retrying (wraps the cause).

    Args:
        message: What happened (shown in the retry warning and the final error).
        retry_after: Seconds the server asked the client to wait (``Retry-After``), if it did.
    """

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


_LIMITS = threading.local()  # the deadline (a time.monotonic() value) of the request this thread is making


def request_deadline() -> float | None:
    """When the request being retried on this thread must be done by (``time.monotonic()``), or ``None``.

    Set by :func:`with_retries` around every attempt; ``_open_range`` implementations bound their
    connect and read timeouts by it, and :class:`Pace` checks it as bytes arrive."""
    until: float | None = getattr(_LIMITS, "until", None)
    return until


class Pace:
    """The limits on one response body as it is received: the request's total deadline, and a minimum transfer
    rate (``min_rate`` bytes/s averaged over ``window`` seconds), which a server that trickles a byte at a time
    (never idle long enough for the read timeout) cannot defeat. :meth:`got` is called after every receive: one
    clock read and two comparisons (cheap next to the system call it follows).

    Example:
        >>> p = Pace(None, 0.0, 1.0, "a.tar")
        >>> p.got(10)  # no limits: never raises
    """

    __slots__ = ("min_rate", "shard", "until", "win_bytes", "win_start", "window")

    def __init__(self, until: float | None, min_rate: float, window: float, shard: str) -> None:
        self.until = until
        self.min_rate = min_rate
        self.window = max(window, 1e-3)
        self.shard = shard
        self.win_start = time.monotonic()
        self.win_bytes = 0

    def got(self, n: int) -> None:
        """``n`` more bytes arrived; raise :class:`TransientError` when the deadline passed or the rate is too low."""
        now = time.monotonic()
        self.win_bytes += n
        if self.until is not None and now > self.until:
            raise TransientError("the request's deadline passed while the body was arriving")
        elapsed = now - self.win_start
        if elapsed >= self.window:
            if self.win_bytes < self.min_rate * elapsed:
                raise TransientError(
                    f"the server sent {self.win_bytes} bytes in {elapsed:.1f}s, below min_rate={self.min_rate:g} "
                    "bytes/s (a stalled or trickling transfer)"
                )
            self.win_start, self.win_bytes = now, 0


def with_retries(
    fn: Callable[[], _T],
    *,
    what: str,
    shown: str,
    limit: float | None,
    retries: int,
    backoff: float,
    max_retry_after: float,
) -> _T:
    """Call ``fn`` until it does not raise :class:`TransientError`: at most ``retries`` more times, within
    ``limit`` seconds in all (``None``: no limit), with exponential backoff (at least what a ``Retry-After`` asked
    for, up to ``max_retry_after``) and a WARNING per retry naming ``what`` and ``shown`` (the redacted shard).

    Example:
        >>> with_retries(lambda: 7, what="download of", shown="a.tar", limit=None, retries=0, backoff=0.0,
        ...              max_retry_after=0.0)
        7
    """
    until = time.monotonic() + float(limit) if limit else None
    outer = getattr(_LIMITS, "until", None)
    _LIMITS.until = until if outer is None or until is None else min(until, outer)
    attempt = 0
    try:
        while True:
            try:
                return fn()
            except TransientError as exc:
                attempt += 1
                cause: BaseException = exc.__cause__ or exc
                text = str(exc) if cause is exc else f"{type(cause).__name__}: {cause}"
                reason = redact_text(text)
                if reason != text:  # a foreign error quoting the URL's query or user info: chain a redacted copy
                    cause = TransientError(reason)
                now = time.monotonic()
                if until is not None and now >= until:
                    raise _too_slow(what, shown, limit, attempt, reason) from cause
                if attempt > retries:
                    raise SourceError(
                        f"{what} {shown!r} failed after {attempt} attempts ({reason}); check that the server is "
                        f"reachable, or raise retries= (now {retries})",
                        shard=shown,
                    ) from cause
                delay, note = _delay(exc, attempt, backoff, max_retry_after)
                if until is not None and now + delay >= until:
                    raise _too_slow(
                        what, shown, limit, attempt, f"{reason}; the next try would start after it"
                    ) from cause
                log.warning(
                    "atdata_torch: %s %s failed (attempt %d of %d: %s); retrying in %.2fs%s",
                    what,
                    shown,
                    attempt,
                    retries + 1,
                    reason,
                    delay,
                    note,
                )
                time.sleep(delay)
    finally:
        _LIMITS.until = outer


def _delay(exc: TransientError, attempt: int, backoff: float, max_retry_after: float) -> tuple[float, str]:
    """The wait before attempt ``attempt + 1``: exponential backoff, at least what a ``Retry-After`` asked for (up
    to ``max_retry_after``), and a note for the warning when the server asked for longer."""
    delay = backoff * (2 ** (attempt - 1))
    note = ""
    if exc.retry_after is not None:
        if exc.retry_after > max_retry_after:
            note = (
                f"; the server asked to wait {exc.retry_after:g}s (Retry-After), more than "
                f"max_retry_after={max_retry_after:g}"
            )
        delay = max(delay, min(exc.retry_after, max_retry_after))
    return delay, note


def _too_slow(what: str, shown: str, limit: Any, attempts: int, reason: str) -> SourceError:
    return SourceError(
        f"{what} {shown!r} did not finish within its deadline of {float(limit):g}s ({attempts} attempts; last: "
        f"{reason}); the server is stalled or too slow: check it, or raise deadline= (sidecar_deadline= for "
        "index sidecars)",
        shard=shown,
    )
