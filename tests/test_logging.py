"""The logging helpers (``atdata_torch._logging``, the original's ``atdata._logging``): configure_logging,
get_logger, log_operation, with credentials redacted on every path."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

import atdata_torch as atdata
from atdata_torch import _logging

SECRET = "hunter2-secret"
URL = f"https://user:{SECRET}@host.test/a.tar?X-Amz-Signature={SECRET}"


class Sink:
    """A structlog-like logger: debug/info/warning/error, collecting (level, message)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def _add(self, level: str, msg: str, *args: Any, **kwargs: Any) -> None:
        self.lines.append((level, msg % args if args else msg))

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._add("debug", msg, *args)

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._add("info", msg, *args)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._add("warning", msg, *args)

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._add("error", msg, *args)


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    atdata.configure_logging(s)
    try:
        yield s
    finally:
        atdata.configure_logging(None)


def test_default_logger_is_the_redacting_stdlib_logger() -> None:
    log = atdata.get_logger()
    assert log is logging.getLogger("atdata_torch")
    assert any(isinstance(f, atdata.errors.RedactingFilter) for f in log.filters)  # type: ignore[union-attr]


def test_log_operation_logs_start_and_completion_redacted(sink: Sink) -> None:
    with atdata.log_operation("fetch", url=URL, shards=2):
        pass
    assert [lvl for lvl, _ in sink.lines] == ["info", "info"]
    assert sink.lines[0][1] == "fetch: started (url=https://***@host.test/a.tar, shards=2)"
    assert sink.lines[1][1].startswith("fetch: completed in ") and sink.lines[1][1].endswith("shards=2)")
    assert all(SECRET not in m for _, m in sink.lines)


def test_log_operation_logs_a_failure_and_reraises(sink: Sink) -> None:
    with pytest.raises(RuntimeError, match="boom"), atdata.log_operation("write_samples"):
        raise RuntimeError("boom")
    assert sink.lines[0] == ("info", "write_samples: started")
    assert sink.lines[1][0] == "error" and sink.lines[1][1].startswith("write_samples: failed after ")


def test_the_librarys_own_records_reach_the_configured_logger_redacted(sink: Sink) -> None:
    logging.getLogger("atdata_torch").warning("cannot open %s", URL)
    logging.getLogger("atdata_torch.sources").info("retrying %s", URL)  # a child logger's record too
    assert sink.lines == [
        ("warning", "cannot open https://***@host.test/a.tar"),
        ("info", "retrying https://***@host.test/a.tar"),
    ]
    assert atdata.get_logger() is sink


def test_configure_logging_none_restores_propagation(caplog: pytest.LogCaptureFixture) -> None:
    lib = logging.getLogger("atdata_torch")
    before = lib.propagate
    atdata.configure_logging(Sink())
    assert lib.propagate is False
    atdata.configure_logging(None)
    assert lib.propagate is before and not any(isinstance(h, _logging._Forward) for h in lib.handlers)
    with caplog.at_level(logging.INFO, logger="atdata_torch"), atdata.log_operation("op", url=URL):
        pass
    assert "op: started (url=https://***@host.test/a.tar)" in caplog.text and SECRET not in caplog.text


def test_a_stdlib_logger_of_the_application(caplog: pytest.LogCaptureFixture) -> None:
    app = logging.getLogger("compat_app")
    atdata.configure_logging(app)
    try:
        with caplog.at_level(logging.INFO):
            logging.getLogger("atdata_torch").info("token=%s", SECRET)
    finally:
        atdata.configure_logging(None)
    assert [r.name for r in caplog.records] == ["compat_app"] and caplog.records[0].getMessage() == "token=***"


def test_a_child_logger_of_ours_is_not_looped(sink: Sink) -> None:
    child = logging.getLogger("atdata_torch.app")
    atdata.configure_logging(child)
    assert atdata.get_logger() is child
    logging.getLogger("atdata_torch").info("once")  # no forwarding handler: no recursion


def test_configure_logging_rejects_what_is_no_logger() -> None:
    with pytest.raises(TypeError, match="debug/info/warning/error"):
        atdata.configure_logging(object())  # type: ignore[arg-type]
