"""The HTTP application: ``create_app(config) -> web.Application``.

``cleanup_ctx`` owns the database (opened and migrated at start-up), the broker adapter
(connected at start-up unless one is injected) and the housekeeping task; all three are
closed on shutdown. With its own adapter (``serve``) the app also reconciles the broker with
the database before it takes requests, and again whenever the adapter's connection to the
broker comes back after a loss (a broker restart), so a crash between a commit and its broker
call, or a broker that lost changes, heals without anyone running ``broker reconcile``.
Every error leaves as ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, TypeAlias

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from iob_protocol.account_api import ErrorBody
from iob_protocol.httplog import server_logger
from iob_protocol.sources import WallClock, unix_time

from .api import routes
from .api.common import RELAY
from .broker import BrokerAdapter
from .config import RelayConfig
from .context import Context
from .errors import (
    MethodNotAllowedError,
    NotFoundError,
    RelayError,
    RequestTooLargeError,
)
from .relay import Relay
from .storage import open_storage

_LOGGER: Final = logging.getLogger(__name__)
#: The HTTP server's own log: a request that is not HTTP is one INFO line, not a traceback.
HTTP_LOGGER: Final = server_logger("cloud_relay.http", (HttpProcessingError,))

BrokerFactory: TypeAlias = Callable[[RelayConfig], Awaitable[BrokerAdapter]]


def error_body(error: RelayError) -> dict[str, Any]:
    """The one error shape of the API."""
    return ErrorBody.of(error.code, error.message).to_dict()


def error_response(error: RelayError) -> web.Response:
    """A JSON error response (with Retry-After where it applies)."""
    headers = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(int(error.retry_after))
    return web.json_response(error_body(error), status=error.status, headers=headers)


_HTTP_ERRORS: Final[dict[int, type[RelayError]]] = {
    404: NotFoundError,
    405: MethodNotAllowedError,
    413: RequestTooLargeError,
}


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn every failure into the API's JSON error; never leak a traceback."""
    try:
        response = await handler(request)
    except RelayError as err:
        if err.status >= 500:  # noqa: PLR2004
            _LOGGER.warning("%s %s: %s", request.method, request.path, err.message)
        response = error_response(err)
    except web.HTTPException as err:
        if err.status < 400:  # noqa: PLR2004 - redirects pass through
            raise
        mapped = _HTTP_ERRORS.get(err.status)
        error = mapped() if mapped is not None else RelayError()
        response = error_response(error)
        if err.status == 405:  # noqa: PLR2004
            allow = err.headers.get("Allow")
            if allow:
                response.headers["Allow"] = allow
    except asyncio.CancelledError:
        raise
    except Exception:
        _LOGGER.exception("unexpected error in %s %s", request.method, request.path)
        response = error_response(RelayError())
    # Tokens and credentials travel in bodies: never cache, never sniff.
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


async def mosquitto_adapter(config: RelayConfig) -> BrokerAdapter:
    """The production adapter: Mosquitto's dynamic security, connected."""
    from .broker.mosquitto import MosquittoDynsecAdapter  # noqa: PLC0415 - optional at import

    adapter = MosquittoDynsecAdapter(
        config.broker.host, config.broker.port, config.broker.username, config.broker.password
    )
    await adapter.connect()
    return adapter


def create_app(
    config: RelayConfig,
    *,
    broker: BrokerAdapter | None = None,
    broker_factory: BrokerFactory = mosquitto_adapter,
    clock: WallClock = unix_time,
    migrate: bool = True,
    purge_interval: float | None = 600.0,
    reconcile: bool | None = None,
) -> web.Application:
    """The account service's app.

    Args:
        config: the configuration.
        broker: an adapter to use (not closed by the app); otherwise ``broker_factory``
            connects one that the app owns.
        broker_factory: builds and connects the adapter when ``broker`` is None.
        clock: Unix seconds (tests move it).
        migrate: apply pending migrations at start-up.
        purge_interval: seconds between housekeeping runs; None for none.
        reconcile: reconcile the broker at start-up and after every broker reconnect; None:
            when the app connects its own adapter (``serve``), not with an injected one.
    """
    app = web.Application(
        middlewares=[error_middleware],
        # Handlers enforce their own, smaller limits while reading; this is the ceiling.
        client_max_size=config.max_import_bytes,
        handler_args={"logger": HTTP_LOGGER},
    )
    app.add_routes(routes())

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        storage = await open_storage(config.database_url)
        owned_broker: BrokerAdapter | None = None
        hooked: BrokerAdapter | None = None
        purge_task: asyncio.Task[None] | None = None
        try:
            if migrate:
                await storage.migrate()
            adapter = broker
            if adapter is None:
                owned_broker = adapter = await broker_factory(config)
            relay = Relay(Context(config=config, storage=storage, broker=adapter, clock=clock))
            app[RELAY] = relay
            if owned_broker is not None if reconcile is None else reconcile:
                await relay.reconcile_quietly("at start-up")

                async def reconnected() -> None:
                    await relay.reconcile_quietly("after the broker connection came back")

                adapter.set_reconnect_hook(reconnected)
                hooked = adapter
            if purge_interval is not None:
                purge_task = asyncio.create_task(
                    relay.purge_forever(purge_interval), name="relay-purge"
                )
            yield
        finally:
            if hooked is not None:
                hooked.set_reconnect_hook(None)
            if purge_task is not None:
                purge_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await purge_task
            if owned_broker is not None:
                await owned_broker.aclose()
            await storage.close()

    app.cleanup_ctx.append(lifecycle)
    return app
