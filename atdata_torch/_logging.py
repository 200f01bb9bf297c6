"""Pluggable logging, as in the original atdata (``atdata._logging``): :func:`configure_logging`,
:func:`get_logger`, :func:`log_operation`.

The library logs through the stdlib logger ``"atdata_torch"``, whose :class:`~atdata_torch.errors.RedactingFilter`
strips credentials (URL user info, presigned query strings, tokens) from every record. ``configure_logging(logger)``
sends those records (``info`` and above, unless the ``"atdata_torch"`` logger has a level set), already redacted, to
another logger (``structlog.get_logger()``, a stdlib logger of the application, anything with
``debug``/``info``/``warning``/``error``), instead of the usual propagation to the root logger;
``configure_logging(None)`` restores the default.

Example:
    >>> import logging
    >>> from atdata_torch._logging import configure_logging, get_logger, log_operation
    >>> class Collect:
    ...     def __init__(self): self.lines = []
    ...     def debug(self, msg, *a, **k): self.lines.append(msg % a)
    ...     info = warning = error = debug
    >>> sink = Collect()
    >>> configure_logging(sink)
    >>> with log_operation("fetch", url="https://user:pw@host/a.tar?sig=S"):
    ...     pass
    >>> sink.lines[0]
    'fetch: started (url=https://***@host/a.tar)'
    >>> configure_logging(None)
    >>> get_logger() is logging.getLogger("atdata_torch")
    True
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from ._redaction import RedactingFilter, redact_text

__all__ = ["LoggerProtocol", "configure_logging", "get_logger", "log_operation"]

_LIBRARY = logging.getLogger("atdata_torch")


@runtime_checkable
class LoggerProtocol(Protocol):
    """What a pluggable logger provides (stdlib loggers and structlog's bound loggers do)."""

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None: ...
    def info(self, msg: str, *args: Any, **kwargs: Any) -> None: ...
    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None: ...
    def error(self, msg: str, *args: Any, **kwargs: Any) -> None: ...


class _Forward(logging.Handler):
    """Hands the library's records, redacted, to the configured logger."""

    def __init__(self, target: LoggerProtocol) -> None:
        super().__init__()
        self.target = target
        self.addFilter(RedactingFilter())  # (the logger's own filter misses records of child loggers)

    def emit(self, record: logging.LogRecord) -> None:
        level = record.levelno
        name = "error" if level >= logging.ERROR else "warning" if level >= logging.WARNING else "info"
        if level < logging.INFO:
            name = "debug"
        try:
            getattr(self.target, name)(redact_text(record.getMessage()))
        except Exception:  # pragma: no cover - a broken sink must not break reading
            self.handleError(record)


_state: dict[str, Any] = {"logger": None, "handler": None, "propagate": True, "level": logging.NOTSET}


def configure_logging(logger: LoggerProtocol | None) -> None:
    """Send the library's log records (redacted) to ``logger``; ``None``: back to the stdlib ``"atdata_torch"``
    logger and its usual propagation.

    Raises:
        TypeError: when ``logger`` lacks ``debug``/``info``/``warning``/``error``.
    """
    if logger is not None and not isinstance(logger, LoggerProtocol):
        raise TypeError(
            f"configure_logging() needs a logger with debug/info/warning/error methods, got {type(logger).__name__}"
        )
    old = _state["handler"]
    if old is not None:
        _LIBRARY.removeHandler(old)
        _LIBRARY.propagate = _state["propagate"]
        _LIBRARY.setLevel(_state["level"])
        _state["handler"] = None
    _state["logger"] = None
    if logger is None or logger is _LIBRARY:
        return
    if isinstance(logger, logging.Logger) and logger.name.startswith("atdata_torch."):
        _state["logger"] = logger  # a child of ours already propagates here: forwarding to it would loop
        return
    handler = _Forward(logger)
    _state.update(logger=logger, handler=handler, propagate=_LIBRARY.propagate, level=_LIBRARY.level)
    _LIBRARY.addHandler(handler)
    _LIBRARY.propagate = False  # (the records go to the configured logger, not twice through the root)
    if _LIBRARY.level == logging.NOTSET:
        _LIBRARY.setLevel(logging.INFO)  # info and above reach it, as in the original (setLevel(DEBUG) for more)


def get_logger() -> LoggerProtocol:
    """The configured logger, else the stdlib ``"atdata_torch"`` logger (which redacts credentials)."""
    got: LoggerProtocol | None = _state["logger"]
    return got if got is not None else _LIBRARY


@contextlib.contextmanager
def log_operation(op_name: str, **context: Any) -> Iterator[None]:
    """Log an operation's start, and its completion with the time it took (``info``), or its failure (``error``,
    the exception propagates). ``context`` is shown as ``key=value`` pairs, credentials redacted.

    Example:
        >>> with log_operation("write_samples", shards=3):
        ...     pass
    """
    log = get_logger()
    ctx = ", ".join(f"{k}={redact_text(str(v))}" for k, v in context.items())
    tail = f" ({ctx})" if ctx else ""
    log.info(f"{op_name}: started{tail}")
    t0 = time.monotonic()
    try:
        yield
    except Exception:
        log.error(f"{op_name}: failed after {time.monotonic() - t0:.2f}s{tail}")
        raise
    log.info(f"{op_name}: completed in {time.monotonic() - t0:.2f}s{tail}")
