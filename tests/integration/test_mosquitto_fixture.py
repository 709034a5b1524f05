"""The shared Mosquitto fixture works inside the HA test tree (phcc blocks sockets by default)."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from tests.plugins.mosquitto import MosquittoBroker, create_scoped_client


@pytest.mark.usefixtures("hass")
async def test_broker_round_trip_under_phcc(mosquitto_broker: MosquittoBroker) -> None:
    """Create a client over dynamic security and see it publish and receive its own topic."""
    await create_scoped_client(
        mosquitto_broker,
        username="hub",
        password="hub-secret-1",  # noqa: S106 - the test's
        rolename="hub",
        subtree="iob/#",
    )
    async with aiomqtt.Client(
        mosquitto_broker.host,
        mosquitto_broker.port,
        username="hub",
        password="hub-secret-1",  # noqa: S106
    ) as client:
        await client.subscribe("iob/dev1/state/#")
        await client.publish("iob/dev1/state/temp", b"21.5", qos=1)
        async with asyncio.timeout(5):
            message = await anext(aiter(client.messages))
    assert str(message.topic) == "iob/dev1/state/temp"
    assert message.payload == b"21.5"
