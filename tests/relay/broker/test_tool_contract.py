"""Tool credentials (Node-RED, Telegraf): what the adapter contract promises, shown over MQTT.

A tool credential reaches exactly what its household's hub reaches, follows the hub as devices
come and go (no call for the tool), is read-only unless it has control, never receives
commands or diagnostics, never factory-resets, and is cut off at once when removed. Runs once
per adapter in ``conftest.ADAPTERS``.
"""

from __future__ import annotations

import secrets

from cloud_relay.broker import (
    BrokerAdapter,
    BrokerState,
    DeviceCredential,
    HubCredential,
    HubState,
    ToolCredential,
)

from .harness import (
    CREDENTIALS_REFUSED,
    GRANTED_QOS1,
    NOT_AUTHORIZED,
    BrokerHarness,
    assert_disconnected,
    connect_code,
    next_message,
    record_puback_codes,
    subscribe_code,
)


def tool(credential_id: str, household_id: str, *, control: bool) -> ToolCredential:
    return ToolCredential(credential_id, household_id, control, secrets.token_urlsafe(16))


async def _home(
    adapter: BrokerAdapter, *, control: bool
) -> tuple[DeviceCredential, DeviceCredential, ToolCredential]:
    """Household ``home`` owns DEVA and has a tool; DEVB belongs to nobody's hub."""
    dev_a = DeviceCredential("DEVA", secrets.token_urlsafe(16))
    dev_b = DeviceCredential("DEVB", secrets.token_urlsafe(16))
    for dev in (dev_a, dev_b):
        await adapter.put_device(dev)
    await adapter.put_hub(HubCredential("home", secrets.token_urlsafe(16)), {"DEVA": True})
    credential = tool("t1", "home", control=control)
    await adapter.put_tool(credential)
    return dev_a, dev_b, credential


async def test_read_tool_sees_its_household_only_and_publishes_nothing(
    harness: BrokerHarness, adapter: BrokerAdapter
) -> None:
    dev_a, dev_b, reader = await _home(adapter, control=False)
    async with (
        harness.mqtt(dev_a.username, dev_a.password) as a,
        harness.mqtt(dev_b.username, dev_b.password) as b,
    ):
        # Retained before the tool subscribes: the other household's must not be replayed.
        await b.publish("iob/DEVB/state/t", b"secret", qos=1, retain=True)
        await a.publish("iob/DEVA/state/t", b"21.5", qos=1, retain=True)
        await a.subscribe("iob/DEVA/cmd/#", qos=1)
        async with harness.mqtt(reader.username, reader.password) as t:
            pubacks = record_puback_codes(t)
            assert await subscribe_code(t, "iob/#") == GRANTED_QOS1
            assert await next_message(t) == ("iob/DEVA/state/t", b"21.5")
            await t.publish("iob/DEVA/cmd/on", b"1", qos=1)
            # Commands and diagnostics are not delivered to a tool, other devices never.
            await a.publish("iob/DEVA/diag", b"{}", qos=1)
            await b.publish("iob/DEVB/state/t", b"secret2", qos=1)
            await a.publish("iob/DEVA/availability", b"online", qos=1)
            assert await next_message(t) == ("iob/DEVA/availability", b"online")
            assert pubacks == [NOT_AUTHORIZED]
            # The refused command never reached the device: its next command is its own marker.
            await a.publish("iob/DEVA/cmd/marker", b"m", qos=1)
            assert await next_message(a) == ("iob/DEVA/cmd/marker", b"m")


async def test_control_tool_commands_but_never_factory_resets(
    harness: BrokerHarness, adapter: BrokerAdapter
) -> None:
    dev_a, _, control = await _home(adapter, control=True)
    async with harness.mqtt(dev_a.username, dev_a.password) as a:
        await a.subscribe("iob/DEVA/cmd/#", qos=1)
        async with harness.mqtt(control.username, control.password) as c:
            pubacks = record_puback_codes(c)
            for topic in ("DEVA/cmd/_factory_reset", "DEVB/cmd/on", "DEVA/state/on"):
                await c.publish(f"iob/{topic}", b"refused", qos=1)
            await c.publish("iob/DEVA/cmd/on", b"1", qos=1)
            # Neither a factory reset, another household's device, nor a device's state.
            assert await next_message(a) == ("iob/DEVA/cmd/on", b"1")
            assert pubacks == [NOT_AUTHORIZED, NOT_AUTHORIZED, NOT_AUTHORIZED, 0]


async def test_tool_follows_the_hub_and_removal_cuts_it_off(
    harness: BrokerHarness, adapter: BrokerAdapter
) -> None:
    _, dev_b, reader = await _home(adapter, control=False)
    async with harness.mqtt(reader.username, reader.password) as t:
        assert await subscribe_code(t, "iob/#") == GRANTED_QOS1
        # DEVB joins the household: only the hub is re-put, the tool sees it at once.
        await adapter.put_hub(HubCredential("home", "p"), {"DEVA": True, "DEVB": True})
        async with harness.mqtt(dev_b.username, dev_b.password) as b:
            await b.publish("iob/DEVB/state/t", b"joined", qos=1)
        assert await next_message(t) == ("iob/DEVB/state/t", b"joined")
        await adapter.remove_tool(reader.credential_id)
        await assert_disconnected(t)
    assert await connect_code(harness, reader.username, reader.password) in CREDENTIALS_REFUSED
    await adapter.remove_tool(reader.credential_id)  # idempotent


async def test_reconcile_keeps_restores_and_removes_tools(
    harness: BrokerHarness, adapter: BrokerAdapter
) -> None:
    hub = HubCredential("home", secrets.token_urlsafe(16))
    kept = tool("kept", "home", control=True)
    gone = tool("gone", "home", control=False)
    await adapter.put_hub(hub, {})
    await adapter.put_tool(gone)
    state = BrokerState(hubs={"home": HubState(hub)}, tools={"kept": kept})
    report = await adapter.reconcile(state)
    assert report.created == (kept.username,)
    assert report.removed == (gone.username,)
    assert await connect_code(harness, gone.username, gone.password) in CREDENTIALS_REFUSED
    assert await connect_code(harness, kept.username, kept.password) == 0
    assert not (await adapter.reconcile(state)).changed


async def test_remove_hub_removes_its_tools_first_and_the_broker_stays_up(
    harness: BrokerHarness, adapter: BrokerAdapter
) -> None:
    """Mosquitto 2.0.11 leaves a dangling role in a client whose role was deleted."""
    _, _, reader = await _home(adapter, control=False)
    await adapter.remove_hub("home")
    assert await connect_code(harness, reader.username, reader.password) in CREDENTIALS_REFUSED
    await adapter.remove_tool(reader.credential_id)  # the broker is still there, and idempotent
    await adapter.put_hub(HubCredential("home", "p"), {})
