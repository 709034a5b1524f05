"""One log line, never a traceback, when a client sends something that is not HTTP.

aiohttp's server logs a request it cannot parse (a port scanner, TLS on the HTTP port, a
broken client) at ERROR, or at DEBUG for a first request with a bad method, each with the
parser's traceback: a flood of them buries real failures. The account service and the device
hand their servers a logger from :func:`server_logger`, whose filter turns exactly those
records into one line at INFO (DEBUG stays DEBUG) naming the client and the parser's reason.
Anything else the server logs there (a handler's bug) keeps its level and traceback.

Standard library only: the caller passes the exception classes that mean "the client's
bytes are not HTTP" (``aiohttp.http_exceptions.HttpProcessingError``).
"""

from __future__ import annotations

import logging
from typing import Final

MAX_REASON: Final = 160


class ClientErrorFilter(logging.Filter):
    """Rewrites a record caused by one of ``client_errors`` to one line without a traceback."""

    def __init__(
        self, logger: logging.Logger, client_errors: tuple[type[BaseException], ...]
    ) -> None:
        """Filter records of ``logger`` whose exception is one of ``client_errors``."""
        super().__init__()
        self._logger = logger
        self._client_errors = client_errors

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record; shorten the client's own errors (or drop them below the level)."""
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, self._client_errors):
            return True
        level = min(record.levelno, logging.INFO)
        if not self._logger.isEnabledFor(level):
            return False
        args = record.args if isinstance(record.args, tuple) else ()
        client = args[0] if args else "a client"
        reason = " ".join(str(getattr(error, "message", None) or error).split())
        record.msg = "malformed HTTP request from %s refused (400): %s"
        record.args = (client, reason[:MAX_REASON])
        record.levelno, record.levelname = level, logging.getLevelName(level)
        record.exc_info = record.exc_text = None
        return True


def server_logger(name: str, client_errors: tuple[type[BaseException], ...]) -> logging.Logger:
    """The logger ``name`` with a :class:`ClientErrorFilter` (added once) for an HTTP server."""
    logger = logging.getLogger(name)
    if not any(isinstance(existing, ClientErrorFilter) for existing in logger.filters):
        logger.addFilter(ClientErrorFilter(logger, client_errors))
    return logger
