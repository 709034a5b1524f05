"""The broker auth endpoints answer from a real (SQLite) database, over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cloud_relay.api.broker_auth import BrokerAuthority, broker_auth_app
from cloud_relay.storage import Storage, open_storage
from cloud_relay.tokens import mqtt_password

from .harness import WAIT, next_message
from .rabbitmq import AUTH_SECRET, RabbitNode, mqtt_client

KEY = b"k" * 32
SECRET = AUTH_SECRET


@dataclass
class World:
    storage: Storage
    authority: BrokerAuthority
    http: TestClient  # type: ignore[type-arg]
    now: list[float]

    async def ask(self, question: str, **fields: str) -> str:
        reply = await self.http.post(f"/{SECRET}/{question}", data=fields)
        assert reply.status == 200
        return await reply.text()

    async def sql(self, sql: str, *args: object) -> None:
        async with self.storage.transaction() as conn:
            await conn.execute(sql, *args)


async def _seed(storage: Storage) -> None:
    async with storage.transaction() as conn:
        for household in ("h1", "h2"):
            await conn.execute(
                "INSERT INTO households (id, name, created_at) VALUES ($1, $1, 0)", household
            )
            await conn.execute(
                "INSERT INTO hubs (household_id, credential_version, created_at, updated_at) "
                "VALUES ($1, 1, 0, 0)",
                household,
            )
        await conn.execute(
            "INSERT INTO device_models (model, name, manufacturer, metadata, created_at, "
            "updated_at) VALUES ('m', 'm', 'm', '{}', 0, 0)"
        )
        owners: list[tuple[str, str | None]] = [
            ("d1", "h1"),
            ("d2", "h2"),
            ("free", None),
            ("a.b", "h1"),
        ]
        for device, owner in owners:
            await conn.execute(
                "INSERT INTO devices (device_id, model, public_key, setup_verifier, imported_at, "
                "household_id, credential_version, updated_at) "
                "VALUES ($1, 'm', $2, 'v', 0, $3, 2, 0)",
                device,
                b"\0" * 32,
                owner,
            )
        # h2 shares d2 with h1, view only.
        await conn.execute(
            "INSERT INTO shares (device_id, household_id, control, created_by, created_at) "
            "VALUES ('d2', 'h1', 0, 'x', 0)"
        )
        for credential, control in (("ro", 0), ("rw", 1)):
            await conn.execute(
                "INSERT INTO mqtt_credentials (id, household_id, label, control, created_by, "
                "created_at) VALUES ($1, 'h1', 'l', $2, 'x', 0)",
                credential,
                control,
            )


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    storage = await open_storage(f"sqlite:///{tmp_path / 'relay.db'}")
    await storage.migrate()
    await _seed(storage)
    now = [0.0]
    authority = BrokerAuthority(storage, KEY, cache_seconds=5.0, clock=lambda: now[0])
    async with TestClient(TestServer(broker_auth_app(authority, SECRET))) as http:
        yield World(storage, authority, http, now)
    await storage.close()


def device_pw(device: str, version: int = 2) -> str:
    return mqtt_password(KEY, "device", device, version)


async def test_user_needs_the_current_derived_password_and_its_own_client_id(world: World) -> None:
    assert await world.ask("user", username="d1", password=device_pw("d1"), client_id="d1") == (
        "allow"
    )
    assert await world.ask("user", username="d1", password=device_pw("d1", 1)) == "deny"
    assert await world.ask("user", username="d1", password=device_pw("d1"), client_id="d2") == (
        "deny"
    )
    # Unowned devices, ids with a dot, unknown names: nobody connects.
    assert await world.ask("user", username="free", password=device_pw("free")) == "deny"
    assert await world.ask("user", username="a.b", password=device_pw("a.b")) == "deny"
    hub = mqtt_password(KEY, "hub", "h1", 1)
    assert await world.ask("user", username="hub-h1", password=hub) == "allow"
    assert await world.ask("user", username="hub-h2", password=hub) == "deny"
    tool = mqtt_password(KEY, "tool", "ro", 1)
    assert await world.ask("user", username="tool-ro", password=tool) == "allow"


async def test_a_claim_needs_no_broker_write_and_a_release_is_seen_at_once(world: World) -> None:
    """The device's row is the credential: commit, and the broker's next question sees it."""
    assert await world.ask("user", username="free", password=device_pw("free")) == "deny"
    await world.sql("UPDATE devices SET household_id = 'h1' WHERE device_id = 'free'")
    # Within the cache time the old answer stands; the claim path invalidates it.
    world.authority.invalidate("free")
    assert await world.ask("user", username="free", password=device_pw("free")) == "allow"
    await world.sql("UPDATE devices SET household_id = NULL WHERE device_id = 'free'")
    assert await world.ask("user", username="free", password=device_pw("free")) == "allow"
    world.now[0] += 6  # without an invalidation, the cache expires
    assert await world.ask("user", username="free", password=device_pw("free")) == "deny"


async def test_device_touches_only_its_own_subtree(world: World) -> None:
    async def topic(permission: str, key: str) -> str:
        return await world.ask(
            "topic", username="d1", name="amq.topic", permission=permission, routing_key=key
        )

    assert await topic("write", "iob.d1.state") == "allow"
    assert await topic("read", "iob.d1.#") == "allow"
    assert await topic("read", "iob.d2.#") == "deny"
    assert await topic("read", "iob.*.state") == "deny"
    assert await topic("read", "#") == "deny"
    assert await topic("write", "iob.d2.cmd.on") == "deny"
    assert await topic("configure", "iob.d1.state") == "deny"
    other_exchange = await world.ask(
        "topic", username="d1", name="amq.direct", permission="write", routing_key="iob.d1.x"
    )
    assert other_exchange == "deny"


async def test_hub_reaches_its_household_and_commands_only_with_control(world: World) -> None:
    async def topic(permission: str, key: str) -> str:
        return await world.ask(
            "topic", username="hub-h1", name="amq.topic", permission=permission, routing_key=key
        )

    assert await topic("read", "iob.d1.#") == "allow"
    assert await topic("read", "iob.d2.#") == "allow"  # the share
    assert await topic("read", "iob.*.#") == "deny"  # per device, never a wildcard
    assert await topic("write", "iob.d1.cmd.on") == "allow"
    assert await topic("write", "iob.d1.state") == "deny"
    assert await topic("write", "iob.d2.cmd.on") == "deny"  # view-only share
    assert await topic("read", "iob.dX.#") == "deny"


async def test_tool_receives_no_commands_or_diagnostics_and_never_resets(world: World) -> None:
    async def topic(user: str, permission: str, key: str) -> str:
        return await world.ask(
            "topic", username=user, name="amq.topic", permission=permission, routing_key=key
        )

    assert await topic("tool-ro", "read", "iob.d1.state") == "allow"
    assert await topic("tool-ro", "read", "iob.d1.#") == "deny"
    assert await topic("tool-ro", "read", "iob.d1.cmd.#") == "deny"
    assert await topic("tool-ro", "read", "iob.d1.diag") == "deny"
    assert await topic("tool-ro", "write", "iob.d1.cmd.on") == "deny"
    assert await topic("tool-rw", "write", "iob.d1.cmd.on") == "allow"
    assert await topic("tool-rw", "write", "iob.d1.cmd._factory_reset") == "deny"
    assert await topic("tool-rw", "write", "iob.d2.cmd.on") == "deny"


async def test_resources_and_vhost_are_the_clients_own(world: World) -> None:
    async def resource(kind: str, name: str, permission: str) -> str:
        return await world.ask(
            "resource", username="d1", resource=kind, name=name, permission=permission
        )

    assert await resource("queue", "mqtt-subscription-d1qos1", "configure") == "allow"
    assert await resource("queue", "mqtt-subscription-d2qos1", "read") == "deny"
    assert await resource("exchange", "amq.topic", "write") == "allow"
    assert await resource("exchange", "amq.topic", "configure") == "deny"
    assert await world.ask("vhost", username="d1", vhost="/") == "allow"
    assert await world.ask("vhost", username="d1", vhost="other") == "deny"
    assert await world.ask("vhost", username="nobody", vhost="/") == "deny"


async def test_a_wrong_path_secret_is_a_404(world: World) -> None:
    reply = await world.http.post("/wrong-secret-0123456/user", data={"username": "d1"})
    assert reply.status == 404


# -- against a real RabbitMQ node ----------------------------------------------------------------


@pytest.fixture
async def node(rabbit_node: RabbitNode, world: World) -> AsyncIterator[RabbitNode]:
    """The session's node, asking this test's database (the endpoints on the node's auth port)."""
    runner = web.AppRunner(broker_auth_app(world.authority, AUTH_SECRET))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", rabbit_node.auth_port)
    await site.start()
    try:
        yield rabbit_node
    finally:
        await runner.cleanup()


def mqtt(node: RabbitNode, username: str, password: str) -> aiomqtt.Client:
    return mqtt_client(node, username, password, timeout=WAIT)


async def refused(node: RabbitNode, username: str, password: str) -> bool:
    try:
        async with mqtt(node, username, password):
            return False
    except aiomqtt.MqttError:
        return True


async def _refused_call(client: aiomqtt.Client, topic: str, *, subscribe: bool) -> None:
    if subscribe:
        await client.subscribe(topic, qos=1)  # no SUBACK comes: the answer is the close
    else:
        await client.publish(topic, b"1", qos=1)
    async with asyncio.timeout(WAIT):
        await anext(client.messages)


async def cut_off(client: aiomqtt.Client, topic: str, *, subscribe: bool) -> None:
    """RabbitMQ 3.10 answers a refused subscribe or publish by closing the connection."""
    with pytest.raises(aiomqtt.MqttError):
        await _refused_call(client, topic, subscribe=subscribe)


async def test_rabbitmq_device_connects_and_touches_only_its_topics(node: RabbitNode) -> None:
    assert await refused(node, "d1", device_pw("d1", 1))
    async with mqtt(node, "d1", device_pw("d1")) as device:
        await device.subscribe("iob/d1/#", qos=1)
        await device.publish("iob/d1/state", b"on", qos=1)
        assert await next_message(device) == ("iob/d1/state", b"on")
    async with mqtt(node, "d1", device_pw("d1")) as device:
        await cut_off(device, "iob/d2/#", subscribe=True)
    async with mqtt(node, "d1", device_pw("d1")) as device:
        await cut_off(device, "iob/d2/cmd/on", subscribe=False)


async def test_rabbitmq_claim_needs_no_broker_write(node: RabbitNode, world: World) -> None:
    assert await refused(node, "free", device_pw("free"))
    await world.sql("UPDATE devices SET household_id = 'h1' WHERE device_id = 'free'")
    world.authority.invalidate("free")
    async with mqtt(node, "free", device_pw("free")) as device:
        await device.subscribe("iob/free/#", qos=1)
        await device.publish("iob/free/state", b"up", qos=1)
        assert await next_message(device) == ("iob/free/state", b"up")


async def test_rabbitmq_hub_reads_its_household_and_commands_with_control(
    node: RabbitNode,
) -> None:
    hub_pw = mqtt_password(KEY, "hub", "h1", 1)
    async with mqtt(node, "hub-h1", hub_pw) as hub, mqtt(node, "d1", device_pw("d1")) as device:
        await hub.subscribe("iob/d1/#", qos=1)
        await device.subscribe("iob/d1/cmd/#", qos=1)
        await device.publish("iob/d1/state", b"x", qos=1)
        assert await next_message(hub) == ("iob/d1/state", b"x")
        await hub.publish("iob/d1/cmd/on", b"1", qos=1)
        assert await next_message(device) == ("iob/d1/cmd/on", b"1")
    async with mqtt(node, "hub-h1", hub_pw) as hub:
        await cut_off(hub, "iob/+/state", subscribe=True)
    async with mqtt(node, "hub-h1", hub_pw) as hub:
        await cut_off(hub, "iob/d2/cmd/on", subscribe=False)  # a view-only share
