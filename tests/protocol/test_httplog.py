"""The HTTP servers' log filter: the client's malformed bytes are one line, bugs stay loud."""

from __future__ import annotations

import logging

import pytest
from iob_protocol.httplog import server_logger


class NotHttpError(Exception):
    """Stands in for aiohttp's HttpProcessingError (the package imports no aiohttp)."""

    def __init__(self) -> None:
        super().__init__("400")
        self.message = "Invalid method encountered:\n\n  b'\\x16\\x03'\n  ^"


def _raise(error: Exception) -> None:
    raise error


def _log(logger: logging.Logger, error: Exception, level: int = logging.ERROR) -> None:
    try:
        _raise(error)
    except Exception as caught:
        logger.log(level, "Error handling request from %s", "192.0.2.7", exc_info=caught)


def test_client_errors_become_one_info_line(caplog: pytest.LogCaptureFixture) -> None:
    logger = server_logger("iob.test.http", (NotHttpError,))
    assert server_logger("iob.test.http", (NotHttpError,)).filters == logger.filters
    caplog.set_level(logging.DEBUG)
    _log(logger, NotHttpError())
    _log(logger, NotHttpError(), logging.DEBUG)
    (info, debug) = caplog.records
    assert (info.levelname, debug.levelname) == ("INFO", "DEBUG")
    assert info.getMessage() == (
        "malformed HTTP request from 192.0.2.7 refused (400): "
        "Invalid method encountered: b'\\x16\\x03' ^"
    )
    assert info.exc_info is None
    assert "Traceback" not in caplog.text


def test_other_errors_keep_their_traceback(caplog: pytest.LogCaptureFixture) -> None:
    logger = server_logger("iob.test.http.bug", (NotHttpError,))
    caplog.set_level(logging.DEBUG)
    _log(logger, KeyError("a bug"))
    (record,) = caplog.records
    assert record.levelname == "ERROR"
    assert "Traceback" in caplog.text


def test_below_the_loggers_level_nothing_is_written(caplog: pytest.LogCaptureFixture) -> None:
    logger = server_logger("iob.test.http.quiet", (NotHttpError,))
    caplog.set_level(logging.WARNING, logger="iob.test.http.quiet")
    _log(logger, NotHttpError())
    assert not caplog.records
