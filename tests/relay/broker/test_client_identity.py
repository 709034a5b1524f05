"""Every IoT Onboard client is bound to its own MQTT client id (issue 12.1).

Device ids are public, so without the binding a device could connect with another device's
client id and take over its session again and again (firing its will each time), across
households. Real credentials on the real Mosquitto fixture.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.reasoncodes import ReasonCode

from cloud_relay.broker import BrokerState, DeviceCredential, HubCredential, HubState
from cloud_relay.broker.mosquitto import MosquittoDynsecAdapter
from cloud_relay.broker.reconcile import device_acls, hub_acls
from tests.plugins.mosquitto import dynsec_command

from .harness import CREDENTIALS_REFUSED, WAIT, MosquittoHarness, assert_connected


@pytest.fixture
async def adapter(mosquitto: MosquittoHarness) -> AsyncIterator[MosquittoDynsecAdapter]:
    async with mosquitto.adapter() as connected:
        yield connected


async def _client(mosquitto: MosquittoHarness, username: str) -> dict[str, Any]:
    (answer,) = await dynsec_command(
        mosquitto.broker, [{"command": "getClient", "username": username}]
    )
    client: dict[str, Any] = answer["data"]["client"]
    return client


async def _refusal(client: aiomqtt.Client) -> int:
    """The CONNACK reason code refusing ``client`` (fails the test if it connects)."""
    with pytest.raises(aiomqtt.MqttCodeError) as refused:
        async with client:
            pass
    code = refused.value.rc
    assert isinstance(code, ReasonCode)
    return int(code.value)


async def test_a_device_cannot_connect_with_another_devices_client_id(
    mosquitto: MosquittoHarness, adapter: MosquittoDynsecAdapter
) -> None:
    """Device A with its own credential but B's client id is refused; B stays, no will."""
    dev_a = DeviceCredential("DEVA", secrets.token_urlsafe(16))
    dev_b = DeviceCredential("DEVB", secrets.token_urlsafe(16))
    await adapter.put_device(dev_a)
    await adapter.put_device(dev_b)
    will = aiomqtt.Will("iob/DEVB/availability", b"offline", qos=1, retain=False)
    async with (
        mosquitto.observer() as observer,
        mosquitto.mqtt(dev_b.username, dev_b.password, will=will) as b,
    ):
        await observer.subscribe("iob/DEVB/#", qos=1)
        await assert_connected(b, "iob/DEVB/state/x")
        for _ in range(3):  # again and again: every attempt is refused
            code = await _refusal(mosquitto.mqtt(dev_a.username, dev_a.password, identifier="DEVB"))
            assert code in CREDENTIALS_REFUSED
        # B was never taken over: still connected, and its will never fired.
        await assert_connected(b, "iob/DEVB/state/y")
        # Everything the observer got up to B's marker: a will would have come before it.
        marker = secrets.token_bytes(8)
        await b.publish("iob/DEVB/state/marker", marker, qos=1)
        seen: list[str] = []
        while True:
            async with asyncio.timeout(WAIT):
                message = await anext(observer.messages)
            if message.payload == marker:
                break
            seen.append(str(message.topic))
        assert "iob/DEVB/availability" not in seen


async def test_a_device_cannot_connect_with_a_hubs_client_id(
    mosquitto: MosquittoHarness, adapter: MosquittoDynsecAdapter
) -> None:
    dev = DeviceCredential("DEVA", secrets.token_urlsafe(16))
    home = HubCredential("home", secrets.token_urlsafe(16))
    await adapter.put_device(dev)
    await adapter.put_hub(home, {"DEVA": True})
    assert (await _client(mosquitto, "DEVA"))["clientid"] == "DEVA"
    assert (await _client(mosquitto, "hub-home"))["clientid"] == "hub-home"
    async with mosquitto.mqtt(home.username, home.password) as hub:
        code = await _refusal(mosquitto.mqtt(dev.username, dev.password, identifier="hub-home"))
        assert code in CREDENTIALS_REFUSED
        # And a hub may not use any other id either (a random one, a device's).
        for other in ("DEVA", f"hub-{secrets.token_hex(3)}"):
            refused = mosquitto.mqtt(home.username, home.password, identifier=other)
            assert await _refusal(refused) in CREDENTIALS_REFUSED
        await assert_connected(hub, "iob/DEVA/cmd/x")


async def test_reconcile_adds_the_binding_to_clients_made_before_it(
    mosquitto: MosquittoHarness, adapter: MosquittoDynsecAdapter
) -> None:
    """An existing deployment: clients without a binding (or a wrong one) are fixed."""
    dev = DeviceCredential("DEVA", secrets.token_urlsafe(16))
    other = DeviceCredential("DEVB", secrets.token_urlsafe(16))
    home = HubCredential("home", secrets.token_urlsafe(16))
    # What the adapter made before client ids were bound: same clients and roles, no clientid.
    await dynsec_command(
        mosquitto.broker,
        [
            {
                "command": "createRole",
                "rolename": "iob-device-DEVA",
                "acls": [acl.to_json() for acl in sorted(device_acls("DEVA"))],
            },
            {
                "command": "createClient",
                "username": "DEVA",
                "password": dev.password,
                "roles": [{"rolename": "iob-device-DEVA"}],
            },
            {
                "command": "createRole",
                "rolename": "iob-hub-home",
                "acls": [acl.to_json() for acl in sorted(hub_acls({"DEVA": True}))],
            },
            {
                "command": "createClient",
                "username": "hub-home",
                "password": home.password,
                "clientid": "someone-else",
                "roles": [{"rolename": "iob-hub-home"}],
            },
        ],
    )
    await adapter.put_device(other)
    # Before the reconcile, DEVA's credential takes any client id (the old behaviour).
    async with mosquitto.mqtt(dev.username, dev.password, identifier="DEVB"):
        pass

    report = await adapter.reconcile(
        BrokerState(
            devices={"DEVA": dev, "DEVB": other},
            hubs={"home": HubState(home, {"DEVA": True})},
        )
    )

    assert set(report.updated) == {"DEVA", "hub-home"}
    assert (await _client(mosquitto, "DEVA"))["clientid"] == "DEVA"
    assert (await _client(mosquitto, "hub-home"))["clientid"] == "hub-home"
    code = await _refusal(mosquitto.mqtt(dev.username, dev.password, identifier="DEVB"))
    assert code in CREDENTIALS_REFUSED
    async with (
        mosquitto.mqtt(dev.username, dev.password) as device_session,
        mosquitto.mqtt(home.username, home.password) as hub_session,
    ):
        await assert_connected(device_session, "iob/DEVA/state/x")
        await assert_connected(hub_session, "iob/DEVA/cmd/x")
        # Converged: a second reconcile changes nothing and kicks nobody.
        again = await adapter.reconcile(
            BrokerState(
                devices={"DEVA": dev, "DEVB": other},
                hubs={"home": HubState(home, {"DEVA": True})},
            )
        )
        assert not again.changed
        await assert_connected(device_session, "iob/DEVA/state/y")
        await assert_connected(hub_session, "iob/DEVA/cmd/y")
