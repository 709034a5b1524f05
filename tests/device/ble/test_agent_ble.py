"""The agent with BLE on, against the private dbus-daemon and the BlueZ mock: the agent starts
the peripheral, its advertisement and state characteristic follow the device's state, a button
press authorizes Improv, and without BlueZ the agent carries on over the LAN."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from improv_ble_client import protocol as prot

from device_firmware.actions import Action
from device_firmware.ble.bluez import ADVERTISEMENT_PATH
from device_firmware.ble.improv import IMPROV_SERVICE_DATA_UUID
from device_firmware.ble.wire import SERVICE_UUID, STATE_UUID, AdvertisedState, BlePhase
from device_firmware.ble.wire import parse_state_value as parse_state
from tests.device.commit_helpers import commit
from tests.device.conftest import AgentStarter
from tests.device.real_relay import RealRelay

from .conftest import BluezMock

PHONE = "AA:BB:CC:DD:EE:02"
IOB_ADVERT = f"{ADVERTISEMENT_PATH}/iot_onboard"
IMPROV_ADVERT = f"{ADVERTISEMENT_PATH}/improv"
_T = TypeVar("_T")


async def eventually(probe: Callable[[], Awaitable[_T]], accept: Callable[[_T], bool]) -> _T:
    """Poll a cross-process effect (a D-Bus signal reaching the other side), bounded."""
    async with asyncio.timeout(10):
        while True:
            value = await probe()
            if accept(value):
                return value
            await asyncio.sleep(0.01)


def improv_authorized(adverts: dict[str, dict[str, Any]]) -> bool:
    raw = adverts.get(IMPROV_ADVERT, {}).get("ServiceData", {}).get(IMPROV_SERVICE_DATA_UUID)
    return raw is not None and (
        prot.ImprovServiceData.from_bytes(raw).state is prot.State.AUTHORIZED
    )


async def test_agent_serves_ble_that_follows_the_state(
    start_agent: AgentStarter, account_service: RealRelay, bluez: BluezMock
) -> None:
    async with start_agent(ble=True, ble_bus_address=bluez.address) as running:
        assert running.agent.ble is not None
        adverts = await bluez.advertisements()
        state = AdvertisedState.parse(adverts[IOB_ADVERT]["ServiceData"][SERVICE_UUID])
        device_id = running.provisioned.device.identity.device_id
        assert (state.phase, state.window_open, state.short_id) == (
            BlePhase.UNCLAIMED,
            True,
            device_id[:8],
        )
        assert parse_state(await bluez.read(PHONE, STATE_UUID)).phase is BlePhase.UNCLAIMED

        # A button press on an unclaimed device authorizes Improv.
        running.agent.request(Action.BUTTON)
        await eventually(bluez.advertisements, improv_authorized)

        # Claimed over the LAN: the state characteristic follows, the window (and with it
        # the IoT Onboard advertisement) closes.
        claim = await account_service.claim(device_id)
        _client, status = await commit(running, account_service.url, token=claim["token"])
        assert status.state.value == "committed"

        async def phase() -> BlePhase:
            return parse_state(await bluez.read(PHONE, STATE_UUID)).phase

        await eventually(phase, lambda value: value is BlePhase.ONLINE)
        await eventually(bluez.advertisements, lambda adverts: IOB_ADVERT not in adverts)
    # Stopped with the agent: nothing of ours stays registered with bluetoothd.
    assert await bluez.advertisements() == {}


async def test_agent_without_bluez_warns_once_and_runs_on_lan(
    start_agent: AgentStarter, system_bus: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="device_firmware.presence")
    async with start_agent(ble=True, ble_bus_address=system_bus) as running:
        assert running.agent.ble is None
        client = await running.connected_client()
        assert client.session is not None
    warnings = [r.getMessage() for r in caplog.records if "BLE provisioning is off" in r.message]
    assert len(warnings) == 1
    assert "BlueZ (bluetoothd) is not running" in warnings[0]
    assert "systemctl enable --now bluetooth" in warnings[0]
