"""A claim puts the device's broker client before its write transaction (no broker round trip
under the database's write lock), and stays atomic: the transaction re-checks what was put,
puts again when the device changed in between, and a claim that loses after the early put
leaves nothing on the broker. Only with SQLite (one writer); with PostgreSQL the client is
put inside the transaction as before. Real broker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from cloud_relay.broker import (
    BrokerAdapter,
    BrokerState,
    DeviceCredential,
    HubCredential,
    ReconcileReport,
    ToolCredential,
)
from cloud_relay.broker.mosquitto import MosquittoDynsecAdapter
from cloud_relay.broker_sync import device_credential
from cloud_relay.config import RelayConfig
from cloud_relay.storage import Connection
from tests.plugins.mosquitto import MosquittoBroker

from .conftest import AppFactory, make_config
from .helpers import Api
from .mqtt import client_exists, connect_code

_T = TypeVar("_T")


class RecordingBroker(BrokerAdapter):
    """The real adapter; records ``put_device`` calls and runs a hook after the first one."""

    def __init__(self, inner: BrokerAdapter, events: list[str]) -> None:
        self.inner = inner
        self.events = events
        self.after_first_put: Callable[[], Awaitable[None]] | None = None

    async def put_device(self, credential: DeviceCredential) -> None:
        await self.inner.put_device(credential)
        self.events.append("put_device")
        hook, self.after_first_put = self.after_first_put, None
        if hook is not None:
            await hook()

    async def remove_device(self, device_id: str) -> None:
        self.events.append("remove_device")
        await self.inner.remove_device(device_id)

    async def put_hub(self, credential: HubCredential, access: Mapping[str, bool]) -> None:
        await self.inner.put_hub(credential, access)

    async def remove_hub(self, household_id: str) -> None:
        await self.inner.remove_hub(household_id)

    async def put_tool(self, credential: ToolCredential) -> None:
        await self.inner.put_tool(credential)

    async def remove_tool(self, credential_id: str) -> None:
        await self.inner.remove_tool(credential_id)

    async def reconcile(self, desired: BrokerState) -> ReconcileReport:
        return await self.inner.reconcile(desired)

    async def aclose(self) -> None:
        """The inner adapter belongs to its fixture."""


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the early put is its optimisation (PostgreSQL: test_postgres_puts_inside)."""
    return f"sqlite:///{tmp_path}/relay.db"


async def _recorded(
    start_api: AppFactory,
    config: RelayConfig,
    broker_adapter: MosquittoDynsecAdapter,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Api, RecordingBroker]:
    events: list[str] = []
    wrapper = RecordingBroker(broker_adapter, events)
    api: Api = await start_api(config, wrapper)
    storage = api.relay.ctx.storage
    real = storage.transaction

    def transaction() -> AbstractAsyncContextManager[Connection]:
        @asynccontextmanager
        async def recorded_transaction() -> AsyncIterator[Connection]:
            async with real() as conn:
                events.append("begin")
                yield conn
            events.append("commit")

        return recorded_transaction()

    real_run = storage.run

    async def run(body: Callable[[Connection], Awaitable[_T]]) -> _T:
        async def recorded_body(conn: Connection) -> _T:
            events.append("begin")
            return await body(conn)

        try:
            result = await real_run(recorded_body)
        except BaseException:
            events.append("rollback")
            raise
        events.append("commit")
        return result

    monkeypatch.setattr(storage, "transaction", transaction)
    monkeypatch.setattr(storage, "run", run)
    return api, wrapper


@pytest.fixture
async def recorded(
    start_api: AppFactory,
    relay_config: RelayConfig,
    broker_adapter: MosquittoDynsecAdapter,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Api, RecordingBroker]:
    """A relay whose broker calls and write transactions land in one event list."""
    return await _recorded(start_api, relay_config, broker_adapter, monkeypatch)


async def _version(api: Api, device_id: str) -> int:
    async with api.relay.ctx.storage.read() as conn:
        return int(
            await conn.fetchval(
                "SELECT credential_version FROM devices WHERE device_id = $1", device_id
            )
        )


async def test_the_device_client_is_put_before_the_write_transaction(
    recorded: tuple[Api, RecordingBroker], broker: MosquittoBroker
) -> None:
    api, wrapper = recorded
    _owner, _household, device, started = await api.started_claim()
    wrapper.events.clear()

    reply = await api.confirm(device, started.body["token"], expect=200)
    # One broker write, made before the transaction began; none inside it.
    assert wrapper.events == ["put_device", "begin", "commit"]
    assert await connect_code(broker, reply.body["mqtt"]) == 0


async def test_a_device_changed_after_the_early_put_is_put_again(
    recorded: tuple[Api, RecordingBroker], broker: MosquittoBroker
) -> None:
    api, wrapper = recorded
    _owner, _household, device, started = await api.started_claim()
    before = await _version(api, device.id)
    wrapper.events.clear()

    async def bump_version() -> None:
        # As a claim and release by someone else between the early put and the transaction
        # would leave it: the device free again, at the next credential version.
        async with api.relay.ctx.storage.transaction() as conn:
            await conn.execute(
                "UPDATE devices SET credential_version = credential_version + 1 "
                "WHERE device_id = $1",
                device.id,
            )

    wrapper.after_first_put = bump_version
    reply = await api.confirm(device, started.body["token"], expect=200)
    # The confirmation first runs on SQLite's writer thread without the broker, reaches the
    # put at the new version and is rolled back, then runs again with the put inside.
    assert wrapper.events == [
        "put_device",
        "begin",
        "commit",
        "begin",
        "rollback",
        "begin",
        "put_device",
        "commit",
    ]
    assert await _version(api, device.id) == before + 1
    # The broker holds the credential the database committed, not the one put early.
    assert await connect_code(broker, reply.body["mqtt"]) == 0
    early = device_credential(api.relay.ctx.config, device.id, before)
    assert await connect_code(broker, {**reply.body["mqtt"], "password": early.password}) != 0


async def test_a_claim_lost_after_the_early_put_leaves_nothing(
    recorded: tuple[Api, RecordingBroker], broker: MosquittoBroker
) -> None:
    api, wrapper = recorded
    _owner, _household, device, started = await api.started_claim()
    wrapper.events.clear()

    async def expire_claim() -> None:
        # The claim lapses between the early put and the transaction.
        async with api.relay.ctx.storage.transaction() as conn:
            await conn.execute(
                "UPDATE claims SET expires_at = $1 WHERE id = $2",
                api.now() - 1,
                started.body["claim_id"],
            )

    wrapper.after_first_put = expire_claim
    reply = await api.confirm(device, started.body["token"])
    assert (reply.status, reply.code) == (410, "claim_expired")
    # The early put was undone from the database (device free: its client removed).
    assert "remove_device" in wrapper.events
    assert not await client_exists(broker, device.id)
    async with api.relay.ctx.storage.read() as conn:
        assert (
            await conn.fetchval("SELECT household_id FROM devices WHERE device_id = $1", device.id)
            is None
        )
        assert (
            await conn.fetchval("SELECT status FROM claims WHERE id = $1", started.body["claim_id"])
            == "expired"
        )


async def test_no_early_put_for_a_claim_that_cannot_win(
    recorded: tuple[Api, RecordingBroker], broker: MosquittoBroker
) -> None:
    api, wrapper = recorded
    _owner, _household, device, started = await api.started_claim()
    confirmation = device.confirm(started.body["token"], api.now())
    await api.request(
        "POST", "/v1/claims/confirm", json_body={"confirmation": confirmation}, expect=200
    )
    wrapper.events.clear()

    replay = await api.request(
        "POST", "/v1/claims/confirm", json_body={"confirmation": confirmation}
    )
    assert (replay.status, replay.code) == (409, "claim_rejected")
    # A spent token puts nothing on the broker, and the owner's client stays.
    assert "put_device" not in wrapper.events
    assert "remove_device" not in wrapper.events
    assert await client_exists(broker, device.id)


async def test_postgres_puts_inside_the_transaction(
    start_api: AppFactory,
    fresh_postgres: Callable[[bool], str],
    broker: MosquittoBroker,
    broker_adapter: MosquittoDynsecAdapter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = make_config(fresh_postgres(True), broker)
    api, wrapper = await _recorded(start_api, config, broker_adapter, monkeypatch)
    _owner, _household, device, started = await api.started_claim()
    wrapper.events.clear()

    reply = await api.confirm(device, started.body["token"], expect=200)
    assert wrapper.events == ["begin", "put_device", "commit"]
    assert await connect_code(broker, reply.body["mqtt"]) == 0
