"""Limits of the device's HTTP servers (LAN provisioning and captive page) against a LAN host.

aiohttp on its own reads a body until its announced length arrives (a ``Content-Length`` of a
terabyte, sent without the body, got no answer at all), keeps a connection that never sends a
complete request head open for ever, and accepts connections until the process runs out of
file descriptors - and then nobody, Home Assistant included, gets an answer. Here:

* :func:`body_limits` answers 413 (``body_too_large``) to a ``Content-Length`` above the
  application's ``client_max_size`` and 411 (``length_required``) to a body without one
  (chunked), before a byte of the body is read; the connection is then closed. A body that
  does not arrive within the head timeout is 408 (``body_timeout``): such a connection is busy,
  not idle, so the cap alone could not shed it.
* :class:`ConnectionGuard` caps the open connections of the servers sharing it. At the cap a
  new connection closes the oldest *idle* one (no complete request received yet, or waiting
  between requests), so ``GET /iob/v1/info`` stays answerable under a flood of idle
  connections; only when every connection is busy is the new one refused. The cap is lowered
  to what the process's open-file limit leaves (:func:`connection_cap`). A connection must send
  a complete request head within ``header_timeout`` (a slowloris client dribbling header lines
  is closed) and may then idle ``idle_timeout`` between requests.
* :meth:`ConnectionGuard.exception_handler` turns the event loop's accept failures
  (``EMFILE``/``ENFILE``: asyncio already pauses accepting for a second) into one log line per
  episode and closes idle connections to make room.

Each episode (cap reached, descriptors exhausted) is one WARNING when it starts and one INFO
when it ends, never a line per connection.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

_LOGGER = logging.getLogger("device_firmware.http")

DEFAULT_MAX_CONNECTIONS: Final = 64
DEFAULT_HEADER_TIMEOUT: Final = 10.0
DEFAULT_IDLE_TIMEOUT: Final = 30.0
#: Descriptors kept for everything but the HTTP servers (D-Bus, MQTT, zeroconf, files, BLE).
FD_RESERVE: Final = 128
MIN_CONNECTIONS: Final = 8
#: An accept-failure episode ends after this long without one (one line per episode).
STARVED_QUIET: Final = 30.0
#: How many idle connections an accept failure closes at once.
SHED_ON_ACCEPT_ERROR: Final = 8
BODY_TOO_LARGE: Final = "body_too_large"
LENGTH_REQUIRED: Final = "length_required"
BODY_TIMEOUT: Final = "body_timeout"
_ACCEPT_ERROR: Final = "socket.accept() out of system resource"
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerLimits:
    """Connection limits of the device's HTTP servers (``max_connections``, timeouts)."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT


def connection_cap(wanted: int, open_files: int | None = None) -> int:
    """``wanted``, lowered so the servers never exhaust the open-file limit (soft)."""
    if open_files is None:
        open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if open_files == resource.RLIM_INFINITY:
        return wanted
    return max(MIN_CONNECTIONS, min(wanted, open_files - FD_RESERVE))


def _refusal(status: int, error: str, message: str) -> web.Response:
    response = web.json_response(
        {"error": error, "message": message},
        status=status,
        headers={"Cache-Control": "no-store"},
    )
    response.force_close()  # the unread body must not be taken for the next request
    return response


@web.middleware
async def body_limits(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """411/413 before the body is read (see the module docstring)."""
    if request.method in _BODY_METHODS:
        length = request.content_length
        limit = request.client_max_size
        if length is None:
            return _refusal(
                411, LENGTH_REQUIRED, "send the body with a Content-Length (no chunked bodies)"
            )
        if length > limit:
            return _refusal(
                413, BODY_TOO_LARGE, f"a body is at most {limit} bytes; this one is {length}"
            )
        protocol = request.protocol
        timeout = (
            protocol.body_timeout
            if isinstance(protocol, GuardedHandler)
            else DEFAULT_HEADER_TIMEOUT
        )
        try:
            async with asyncio.timeout(timeout):
                await request.read()  # kept by aiohttp: the handler's read() returns it
        except TimeoutError:
            return _refusal(
                408, BODY_TIMEOUT, f"the announced {length} bytes did not arrive in {timeout:g} s"
            )
    return await handler(request)


class _Episode:
    """One WARNING when a condition starts, one INFO when it ends."""

    def __init__(self, start: str, end: str) -> None:
        self._start = start
        self._end = end
        self.active = False

    def begin(self, *args: object) -> None:
        if not self.active:
            self.active = True
            _LOGGER.warning(self._start, *args)

    def finish(self, *args: object) -> None:
        if self.active:
            self.active = False
            _LOGGER.info(self._end, *args)


class ConnectionGuard:
    """The open connections of the servers that share it, with their cap and timeouts."""

    def __init__(self, limits: ServerLimits, *, open_files: int | None = None) -> None:
        """Cap at ``limits.max_connections`` or what ``open_files`` (RLIMIT_NOFILE) leaves."""
        self.limits = limits
        self.cap = connection_cap(limits.max_connections, open_files)
        if self.cap < limits.max_connections:
            _LOGGER.warning(
                "at most %d HTTP connections (max_connections is %d, but the open-file limit "
                "is %d): raise LimitNOFILE in the systemd unit to allow more",
                self.cap,
                limits.max_connections,
                resource.getrlimit(resource.RLIMIT_NOFILE)[0] if open_files is None else open_files,
            )
        self._open: dict[GuardedHandler, None] = {}  # in arrival order: oldest first
        self._last_accept_error = 0.0
        self._last_full = 0.0
        self._full = _Episode(
            "HTTP connection limit (%d) reached: closing the oldest idle connections "
            "(a client opening many connections?)",
            "HTTP connections back below half the limit (%d) for 30 s",
        )
        self._starved = _Episode(
            "out of file descriptors, accepting no connections for a second: %s "
            "(raise LimitNOFILE or lower max_connections)",
            "accepting HTTP connections again",
        )

    @property
    def open_connections(self) -> int:
        """Connections open now."""
        return len(self._open)

    def admit(self, handler: GuardedHandler) -> bool:
        """Register a new connection; close the oldest idle one at the cap (False: refused)."""
        now = asyncio.get_running_loop().time()
        if now - self._last_accept_error > STARVED_QUIET:
            self._starved.finish()
        self._maybe_end_full(now)
        if len(self._open) >= self.cap:
            self._last_full = now
            self._full.begin(self.cap)
            victim = next((other for other in self._open if other.idle), None)
            if victim is None:
                return False
            self._open.pop(victim)
            victim.force_close()
        self._open[handler] = None
        return True

    def release(self, handler: GuardedHandler) -> None:
        """Forget a closed connection."""
        self._open.pop(handler, None)
        self._maybe_end_full(asyncio.get_running_loop().time())

    def _maybe_end_full(self, now: float) -> None:
        """End the "limit reached" episode once below half the cap and quiet for a while.

        Hysteresis in count and in time: a flood that comes in waves (connections closed by
        the head timeout, then opened again) is one episode and one pair of log lines.
        """
        if len(self._open) <= self.cap // 2 and now - self._last_full > STARVED_QUIET:
            self._full.finish(self.cap)

    def shed(self, count: int) -> int:
        """Close up to ``count`` of the oldest idle connections; return how many."""
        victims = [handler for handler in self._open if handler.idle][:count]
        for victim in victims:
            self._open.pop(victim)
            victim.force_close()
        return len(victims)

    def exception_handler(
        self, previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None
    ) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]:
        """A loop exception handler: accept failures are one line per episode, not a traceback.

        Everything else goes to ``previous`` (the loop's default handler when None).
        """

        def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> object:
            if context.get("message") == _ACCEPT_ERROR:
                self._last_accept_error = loop.time()
                self._starved.begin(context.get("exception"))
                shed = self.shed(SHED_ON_ACCEPT_ERROR)
                _LOGGER.debug(
                    "accept failed (%s); %d idle connections closed", context.get("exception"), shed
                )
                return None
            if _is_retry_after_close(context):
                # asyncio's accept retry (scheduled by an EMFILE a second ago) ran after the
                # server closed its socket: nothing to serve any more, not an error.
                _LOGGER.debug("accept retry after the server closed: %s", context.get("exception"))
                return None
            if previous is None:
                loop.default_exception_handler(context)
                return None
            return previous(loop, context)

        return handle


def _is_retry_after_close(context: dict[str, Any]) -> bool:
    """Whether ``context`` is asyncio's delayed accept retry failing on a closed socket."""
    message = str(context.get("message", ""))
    failure = context.get("exception")
    return "._start_serving(" in message and isinstance(failure, ValueError | OSError)


class GuardedHandler(RequestHandler):
    """aiohttp's connection handler under a :class:`ConnectionGuard`."""

    def __init__(self, manager: web.Server, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        """As aiohttp's, plus the guard."""
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._head_timer: asyncio.TimerHandle | None = None

    @property
    def body_timeout(self) -> float:
        """Seconds an announced body may take to arrive (the request-head timeout)."""
        return self._guard.limits.header_timeout

    @property
    def idle(self) -> bool:
        """No request being handled: waiting for (the rest of) a request head."""
        waiter = self._waiter
        return not self._messages and waiter is not None and not waiter.done()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Admit the connection (or close it) and start the request-head timer."""
        super().connection_made(transport)
        if not self._guard.admit(self):
            self.force_close()
            return
        loop = asyncio.get_running_loop()
        self._head_timer = loop.call_later(self._guard.limits.header_timeout, self._head_late)

    def data_received(self, data: bytes) -> None:
        """Stop the head timer once a complete request head arrived."""
        super().data_received(data)
        if self._head_timer is not None and self._messages:
            self._head_timer.cancel()
            self._head_timer = None

    def connection_lost(self, exc: BaseException | None) -> None:
        """Forget the connection."""
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._guard.release(self)
        super().connection_lost(exc)

    def _head_late(self) -> None:
        self._head_timer = None
        if self.idle:
            _LOGGER.debug("no complete request head in time; connection closed")
            self.force_close()


class _GuardedServer(web.Server):
    def __init__(self, server: web.Server, guard: ConnectionGuard) -> None:
        super().__init__(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,  # noqa: SLF001 - the same loop aiohttp chose
            **server._kwargs,  # noqa: SLF001 - the handler arguments aiohttp assembled
        )
        self._guard = guard

    def __call__(self) -> RequestHandler:
        return GuardedHandler(self, guard=self._guard, loop=self._loop, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    """An :class:`aiohttp.web.AppRunner` whose connections obey ``guard``."""

    def __init__(self, app: web.Application, guard: ConnectionGuard, **kwargs: Any) -> None:
        """``kwargs`` as AppRunner's; idle and lingering times come from the guard."""
        super().__init__(
            app,
            keepalive_timeout=guard.limits.idle_timeout,
            # An unread body (413, 411) is not waited for: the connection closes at once.
            lingering_time=0,
            **kwargs,
        )
        self._guard = guard

    async def _make_server(self) -> web.Server:
        return _GuardedServer(await super()._make_server(), self._guard)
