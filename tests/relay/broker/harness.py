"""What the adapter contract suite needs from a broker, and MQTT helpers for the tests.

A future adapter (EMQX) joins the contract suite by implementing :class:`BrokerHarness` for its
broker and adding its name to ``ADAPTERS`` in ``conftest.py``; the suite itself only talks MQTT
and the :class:`~cloud_relay.broker.BrokerAdapter` interface.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Any, Protocol

import aiomqtt
from paho.mqtt.reasoncodes import ReasonCode

from cloud_relay.broker import BrokerAdapter
from cloud_relay.broker.mosquitto import MosquittoDynsecAdapter
from tests.plugins.mosquitto import MosquittoBroker, MosquittoProcess, dynsec_command
from tests.plugins.ports import free_port

WAIT = 2.0  # seconds; every wait ends early on the expected event
GRANTED_QOS1 = 1
NOT_AUTHORIZED = 0x87
#: Refused credentials: 0x86 bad user name or password, 0x87 not authorized (Mosquitto's).
CREDENTIALS_REFUSED = frozenset({0x86, 0x87})


class BrokerHarness(Protocol):
    """A running broker under test and the broker-specific ways to look at it."""

    name: str

    def adapter(self, *, timeout: float = 5.0) -> BrokerAdapter:
        """A new, unconnected adapter for this broker (its admin credentials)."""
        ...

    def unreachable_adapter(self, *, timeout: float) -> BrokerAdapter:
        """An adapter of the same kind pointed at a loopback port where nothing listens."""
        ...

    def mqtt(
        self,
        username: str,
        password: str,
        *,
        will: aiomqtt.Will | None = None,
        identifier: str | None = None,
    ) -> aiomqtt.Client:
        """An MQTT v5 client of this broker (not connected yet).

        Its client id is ``identifier``, by default ``username``: IoT Onboard clients are bound
        to the client id equal to their username (docs/broker.md).
        """
        ...

    def observer(self) -> aiomqtt.Client:
        """An MQTT v5 client that may subscribe to and receive every ``iob/`` topic."""
        ...

    async def restart(self) -> None:
        """Restart the broker on the same address with the same data."""
        ...

    async def add_foreign_client(self, username: str, password: str) -> None:
        """Create a client the account service knows nothing about (not through the adapter)."""
        ...

    async def admin_record(self) -> object:
        """The broker's record of the adapter's admin user (to show it was not touched)."""
        ...


@dataclass
class MosquittoHarness:
    """Mosquitto with dynamic security, from the ``mosquitto_process`` fixture."""

    process: MosquittoProcess
    name: str = "mosquitto"

    @property
    def broker(self) -> MosquittoBroker:
        return self.process.broker

    def adapter(self, *, timeout: float = 5.0) -> MosquittoDynsecAdapter:
        broker = self.broker
        return MosquittoDynsecAdapter(
            broker.host,
            broker.port,
            broker.admin_username,
            broker.admin_password,
            timeout=timeout,
        )

    def unreachable_adapter(self, *, timeout: float) -> MosquittoDynsecAdapter:
        return MosquittoDynsecAdapter(
            "127.0.0.1", free_port(), "iob-admin", "unused", timeout=timeout
        )

    def mqtt(
        self,
        username: str,
        password: str,
        *,
        will: aiomqtt.Will | None = None,
        identifier: str | None = None,
    ) -> aiomqtt.Client:
        broker = self.broker
        return aiomqtt.Client(
            broker.host,
            broker.port,
            username=username,
            password=password,
            identifier=username if identifier is None else identifier,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=will,
            timeout=WAIT,
        )

    def observer(self) -> aiomqtt.Client:
        # The dynsec admin role lets it subscribe to and receive every topic; it has no client
        # id binding, so every observer takes its own id.
        return self.mqtt(
            self.broker.admin_username,
            self.broker.admin_password,
            identifier=f"observer-{secrets.token_hex(4)}",
        )

    async def restart(self) -> None:
        await asyncio.to_thread(self.process.restart)

    async def add_foreign_client(self, username: str, password: str) -> None:
        await dynsec_command(
            self.broker,
            [{"command": "createClient", "username": username, "password": password}],
        )

    async def admin_record(self) -> object:
        (answer,) = await dynsec_command(
            self.broker,
            [
                {"command": "getClient", "username": self.broker.admin_username},
            ],
        )
        return answer["data"]


# -- MQTT helpers --------------------------------------------------------------------------------


def record_puback_codes(mqtt_client: aiomqtt.Client) -> list[int]:
    """aiomqtt drops PUBACK reason codes; catch them from the paho client underneath."""
    codes: list[int] = []
    paho = mqtt_client._client
    original = paho.on_publish
    assert original is not None

    def on_publish(*args: Any) -> None:
        code = args[3]
        codes.append(code.value if isinstance(code, ReasonCode) else int(code))
        original(*args)

    paho.on_publish = on_publish
    return codes


async def subscribe_code(mqtt_client: aiomqtt.Client, topic: str) -> int:
    """The SUBACK reason code for one subscription at QoS 1 (1 = granted, 0x87 = refused)."""
    (code,) = await mqtt_client.subscribe(topic, qos=1)
    assert isinstance(code, ReasonCode)
    return int(code.value)


async def next_message(mqtt_client: aiomqtt.Client) -> tuple[str, bytes]:
    async with asyncio.timeout(WAIT):
        message = await anext(mqtt_client.messages)
    assert isinstance(message.payload, bytes)
    return str(message.topic), message.payload


async def assert_disconnected(mqtt_client: aiomqtt.Client) -> None:
    """The broker ended this client's session (it was kicked)."""
    try:
        async with asyncio.timeout(WAIT):
            message = await anext(mqtt_client.messages)
    except aiomqtt.MqttError:
        return
    raise AssertionError(f"still connected: received {message.topic} instead of a disconnect")


async def assert_connected(mqtt_client: aiomqtt.Client, own_topic: str) -> None:
    """The session is alive: a message it publishes to itself comes back."""
    marker = secrets.token_bytes(8)
    await mqtt_client.subscribe(own_topic, qos=1)
    await mqtt_client.publish(own_topic, marker, qos=1)
    while True:
        topic, payload = await next_message(mqtt_client)
        if (topic, payload) == (own_topic, marker):
            return


async def connect_code(harness: BrokerHarness, username: str, password: str) -> int:
    """0 when ``username`` can connect with ``password``, else the CONNACK reason code."""
    try:
        async with harness.mqtt(username, password):
            return 0
    except aiomqtt.MqttCodeError as err:
        code = err.rc
    assert isinstance(code, ReasonCode)
    return int(code.value)
