"""The adapter contract for ``kick_hub``: the hub's live sessions end, nothing else changes.

Runs once per adapter in ``conftest.ADAPTERS``, like ``test_contract.py``, through real MQTT
clients only.
"""

from __future__ import annotations

import secrets

from cloud_relay.broker import BrokerAdapter, DeviceCredential, HubCredential

from .harness import BrokerHarness, assert_connected, assert_disconnected


async def test_kick_hub_ends_its_sessions_and_keeps_its_access(
    harness: BrokerHarness, adapter: BrokerAdapter
) -> None:
    dev = DeviceCredential("DEVA", secrets.token_urlsafe(16))
    home = HubCredential("home", secrets.token_urlsafe(16))
    neighbour = HubCredential("neighbour", secrets.token_urlsafe(16))
    await adapter.put_device(dev)
    await adapter.put_hub(home, {"DEVA": True})
    await adapter.put_hub(neighbour, {"DEVA": True})
    async with (
        harness.mqtt(home.username, home.password) as kicked,
        harness.mqtt(neighbour.username, neighbour.password) as other_hub,
        harness.mqtt(dev.username, dev.password) as device_session,
    ):
        await assert_connected(kicked, "iob/DEVA/cmd/x")
        await adapter.kick_hub("home")
        await assert_disconnected(kicked)
        # Only that hub: the device and the other household's hub stay connected.
        await assert_connected(other_hub, "iob/DEVA/cmd/y")
        await assert_connected(device_session, "iob/DEVA/state/x")
    # Not locked out: the same credential reconnects at once with the same access.
    async with harness.mqtt(home.username, home.password) as again:
        await assert_connected(again, "iob/DEVA/cmd/x")


async def test_kick_hub_of_a_missing_hub_does_nothing(
    harness: BrokerHarness, adapter: BrokerAdapter
) -> None:
    await adapter.kick_hub("nobody")
    await adapter.kick_hub("nobody")  # and again: idempotent
    home = HubCredential("home", secrets.token_urlsafe(16))
    await adapter.put_hub(home, {})
    async with harness.mqtt(home.username, home.password):
        pass
