"""Fixtures: PostgreSQL (one cluster per session, one database per test), SQLite, the real
Mosquitto with the real dynamic-security adapter, and the relay app on 127.0.0.1.

Every relay test that asks for ``database_url`` (directly or through ``api``) runs twice:
once on SQLite and once on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from cloud_relay.app import create_app
from cloud_relay.broker import BrokerAdapter
from cloud_relay.broker.mosquitto import MosquittoDynsecAdapter
from cloud_relay.config import RelayConfig
from cloud_relay.storage.postgres import PostgresStorage
from tests.plugins.clock import FakeClock
from tests.plugins.mosquitto import MosquittoBroker
from tests.plugins.relay_config import relay_test_config

from .failing_broker import FailingBroker
from .helpers import Api
from .postgres import PostgresCluster, PostgresError, PostgresProcess

TEMPLATE = "relay_template"


async def _prepare_template(cluster: PostgresCluster) -> None:
    conn = await asyncpg.connect(cluster.dsn())
    try:
        await conn.execute(f"CREATE DATABASE {TEMPLATE}")
    finally:
        await conn.close()
    storage = await PostgresStorage.open(cluster.dsn(TEMPLATE), min_size=1, max_size=2)
    try:
        await storage.migrate()
    finally:
        await storage.close()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One PostgreSQL cluster for the session, with a migrated template database."""
    try:
        process = PostgresProcess()
    except PostgresError as err:
        pytest.fail(f"PostgreSQL is not available: {err}", pytrace=False)
    try:
        cluster = process.start()
        run_async(lambda: _prepare_template(cluster))
    except (PostgresError, OSError, asyncpg.PostgresError) as err:
        log = process.log_tail()
        process.stop()
        pytest.fail(f"PostgreSQL could not be started: {err}\n{log}", pytrace=False)
    try:
        yield cluster
    finally:
        process.stop()


def run_async(make: Callable[[], Any]) -> Any:
    """Run a coroutine to completion in a thread of its own.

    Sync fixtures must not call ``asyncio.run`` on the main thread: it clears the thread's event
    loop, which pytest-asyncio has already set up for the test.
    """
    result: list[Any] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(make()))
        except BaseException as err:  # noqa: BLE001 - re-raised on the caller's thread
            errors.append(err)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0] if result else None


async def _admin_sql(cluster: PostgresCluster, sql: str) -> None:
    conn = await asyncpg.connect(cluster.dsn())
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def fresh_postgres(request: pytest.FixtureRequest) -> Iterator[Callable[[bool], str]]:
    """Make a fresh database (migrated from the template, or empty); dropped after the test."""
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    made: list[str] = []

    def make(migrated: bool = True) -> str:
        name = f"t_{secrets.token_hex(6)}"
        template = f" TEMPLATE {TEMPLATE}" if migrated else ""
        run_async(lambda: _admin_sql(cluster, f"CREATE DATABASE {name}{template}"))
        made.append(name)
        return cluster.dsn(name)

    yield make
    for name in made:
        run_async(partial(_admin_sql, cluster, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A fresh database: an SQLite file, or a PostgreSQL database from the template."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/relay.db"
    make: Callable[[bool], str] = request.getfixturevalue("fresh_postgres")
    return make(True)


@pytest.fixture
def clock() -> FakeClock[int]:
    """The relay's wall clock, moved by tests."""
    return FakeClock(int(time.time()))


#: A test configuration: cheap argon2, generous limits, the test broker (tests/plugins).
make_config = relay_test_config


@pytest.fixture
def broker(mosquitto_broker_session: MosquittoBroker) -> MosquittoBroker:
    """The session's Mosquitto (tests use random device and household ids on it)."""
    return mosquitto_broker_session


@pytest.fixture
async def broker_adapter(broker: MosquittoBroker) -> AsyncIterator[MosquittoDynsecAdapter]:
    """The real dynamic-security adapter, connected to the session's broker."""
    adapter = MosquittoDynsecAdapter(
        broker.host, broker.port, broker.admin_username, broker.admin_password
    )
    await adapter.connect()
    try:
        yield adapter
    finally:
        await adapter.aclose()


@pytest.fixture
def relay_config(database_url: str, broker: MosquittoBroker) -> RelayConfig:
    """The configuration of the relay under test."""
    return make_config(database_url, broker)


AppFactory = Callable[..., Any]


@pytest.fixture
async def start_api(clock: FakeClock[int]) -> AsyncIterator[AppFactory]:
    """Start a relay app on 127.0.0.1 (``await start_api(config, broker=...)``)."""
    clients: list[TestClient[Any, Any]] = []

    async def start(config: RelayConfig, broker: BrokerAdapter, **options: Any) -> Api:
        app = create_app(config, broker=broker, clock=clock, purge_interval=None, **options)
        client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return Api(client)

    yield start
    for client in reversed(clients):
        await client.close()


@pytest.fixture
async def api(
    start_api: AppFactory, relay_config: RelayConfig, broker_adapter: MosquittoDynsecAdapter
) -> Api:
    """The relay on the test database and the real broker, with a validating client."""
    result: Api = await start_api(relay_config, broker_adapter)
    return result


@pytest.fixture
async def failing(
    start_api: AppFactory, relay_config: RelayConfig, broker_adapter: MosquittoDynsecAdapter
) -> tuple[Api, FailingBroker]:
    """The relay on a broker whose chosen calls fail (``failing[1].fail``)."""
    wrapper = FailingBroker(broker_adapter)
    return await start_api(relay_config, wrapper), wrapper
