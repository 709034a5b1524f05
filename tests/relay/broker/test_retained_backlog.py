"""A hub that subscribes while many devices' retained messages wait gets every one of them.

Home Assistant subscribes to a household's devices at start, on reload and on every reconnect,
and each device keeps about six retained messages (availability, descriptor, states). Mosquitto's
default queue (``max_queued_messages 1000`` beyond 20 in flight) silently dropped the rest:
the memory benchmark at 1000 devices delivered 1020 of 6000, and devices whose descriptor was
dropped stayed missing in HA until they republished. The broker config written by
``cloud_relay.broker.local`` (and the one docs/broker.md gives) raises the queue.
"""

from __future__ import annotations

import asyncio
import secrets

import aiomqtt

from cloud_relay.broker.local import MosquittoBroker
from tests.plugins.mosquitto import create_scoped_client

# More retained messages than the default queue holds (1000 + 20 in flight), as ~500 devices.
RETAINED = 3000
DEADLINE = 30.0  # a bound, not an expectation: delivery takes well under a second here


async def _client_with_everything(broker: MosquittoBroker) -> tuple[str, str]:
    username, password = f"bulk-{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    await create_scoped_client(
        broker, username=username, password=password, rolename=username, subtree="iob/#"
    )
    return username, password


async def test_a_late_subscriber_receives_every_retained_message(
    mosquitto_broker: MosquittoBroker,
) -> None:
    username, password = await _client_with_everything(mosquitto_broker)

    def client(identifier: str) -> aiomqtt.Client:
        return aiomqtt.Client(
            mosquitto_broker.host,
            mosquitto_broker.port,
            username=username,
            password=password,
            identifier=identifier,
        )

    async with client("publisher") as publisher:
        for index in range(RETAINED):
            await publisher.publish(f"iob/dev{index:05d}/meta", b"{}", qos=1, retain=True)

    received: set[str] = set()
    async with client("hub") as hub:
        # QoS 1, as the integration's hub subscribes.
        await hub.subscribe("iob/#", qos=1)
        async with asyncio.timeout(DEADLINE):
            async for message in hub.messages:
                received.add(message.topic.value)
                if len(received) == RETAINED:
                    break
    assert len(received) == RETAINED
