"""Onboarding over Bluetooth end to end: the real device agent, account service and Mosquitto.

The device runs as a subprocess with ``--ble-bridge 127.0.0.1:0``: its real GATT services
(``device_firmware/ble``) are served over loopback TCP instead of BlueZ, and
tests/integration/ble_bridge.py is the central. Home Assistant sees the device's own
advertisement (read from the bridge, injected through its Bluetooth manager, as a scanner or
an ESPHome proxy would report it) and its BLE client connects through the bridge in place of
bleak: a fake ``establish_connection`` hands it a bridge client shaped like ``BleakClient``.
Everything from the handshake to the commit is the real device, at the smallest MTU (23).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError
from habluetooth import BluetoothServiceInfoBleak
from homeassistant.components import bluetooth
from homeassistant.config_entries import SOURCE_BLUETOOTH, ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import issue_registry as ir

from custom_components.iot_onboard import ble_client
from custom_components.iot_onboard.const import CONF_HOUSEHOLD_ID, DOMAIN
from custom_components.iot_onboard.helpers import find_device, household_entry
from custom_components.iot_onboard.iob_protocol import AdvertisedState, BlePhase
from custom_components.iot_onboard.iob_protocol.ble import SERVICE_UUID
from tests.integration.ble_bridge import BleBridgeClient, BridgeError
from tests.integration.fake_ble import ble_device
from tests.integration.onboarding_services import (
    HOME_SSID,
    LOOPBACK,
    AccountService,
    Device,
    qr_text,
    running_services,
    sign_up,
    submit_wifi,
)
from tests.integration.runtime_helpers import wait_for
from tests.plugins.mosquitto import MosquittoBroker

ADDRESS = "AA:BB:CC:00:00:01"
#: The smallest ATT MTU: every frame travels in many chunks both ways.
MTU = 23


@pytest.fixture
def services(
    mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> Iterator[tuple[AccountService, Device]]:
    """A provisioned device with its BLE bridge, and the account service; stopped by pid."""
    with running_services(tmp_path, mosquitto_broker, ble_bridge=True) as running:
        yield running


class BridgeBleakClient:
    """The bridge client as ``BleakClientWithServiceCache`` looks to the integration."""

    def __init__(self, bridge: BleBridgeClient) -> None:
        self._bridge = bridge

    @property
    def is_connected(self) -> bool:
        return self._bridge.is_connected

    @property
    def mtu_size(self) -> int:
        return self._bridge.mtu_size

    async def write_gatt_char(self, uuid: str, data: bytes, response: bool = False) -> None:
        try:
            await self._bridge.write_gatt_char(uuid, data, response=response)
        except BridgeError as err:
            raise BleakError(str(err)) from err

    async def read_gatt_char(self, uuid: str) -> bytearray:
        try:
            return await self._bridge.read_gatt_char(uuid)
        except BridgeError as err:
            raise BleakError(str(err)) from err

    async def start_notify(self, uuid: str, callback: Callable[[Any, bytearray], None]) -> None:
        await self._bridge.start_notify(uuid, callback)

    async def disconnect(self) -> bool:
        return await self._bridge.disconnect()


class BridgeConnector:
    """``establish_connection`` through the device's bridge (one TCP connection per link)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.clients: list[BleBridgeClient] = []

    async def __call__(
        self,
        client_class: type[Any],
        device: BLEDevice,
        name: str,
        disconnected_callback: Callable[[Any], None] | None = None,
        **_: Any,
    ) -> BridgeBleakClient:
        del client_class, name
        assert device.address == ADDRESS
        wrapped: BridgeBleakClient | None = None

        def dropped(_bridge: BleBridgeClient) -> None:
            if disconnected_callback is not None and wrapped is not None:
                disconnected_callback(wrapped)

        bridge = BleBridgeClient(LOOPBACK, self.port, disconnected_callback=dropped)
        try:
            await bridge.connect(mtu=MTU)
        except BridgeError as err:
            raise BleakError(str(err)) from err
        self.clients.append(bridge)
        wrapped = BridgeBleakClient(bridge)
        return wrapped

    @property
    def all_closed(self) -> bool:
        return all(not client.is_connected for client in self.clients)


async def scanned(device: Device) -> BluetoothServiceInfoBleak:
    """The device's own advertisement, as Home Assistant's scanner would report it."""
    async with BleBridgeClient(LOOPBACK, device.bridge_port) as scanner:
        advert = await scanner.advertisement()
    assert advert is not None, "the device advertises while its window is open"
    assert advert.connectable
    # The IoT Onboard part (the Improv part would start HA's improv_ble flow as well).
    data = {SERVICE_UUID: advert.service_data[SERVICE_UUID]}
    return BluetoothServiceInfoBleak(
        name=advert.local_name,
        address=ADDRESS,
        rssi=-55,
        manufacturer_data={},
        service_data=data,
        service_uuids=[],
        source="local",
        device=ble_device(ADDRESS, advert.local_name),
        advertisement=AdvertisementData(
            local_name=advert.local_name,
            manufacturer_data={},
            service_data=data,
            service_uuids=[],
            tx_power=None,
            rssi=-55,
            platform_data=(),
        ),
        connectable=True,
        time=time.monotonic(),
        tx_power=None,
    )


@pytest.mark.usefixtures("enable_bluetooth")
async def test_bluetooth_onboarding_of_the_real_device(
    hass: HomeAssistant, services: tuple[AccountService, Device]
) -> None:
    relay, device = services
    info = await scanned(device)
    advertised = AdvertisedState.parse(info.service_data[SERVICE_UUID])
    assert advertised.short_id == device.device_id[:8]
    assert (advertised.phase, advertised.window_open) == (BlePhase.UNCLAIMED, True)

    connector = BridgeConnector(device.bridge_port)
    with patch.object(ble_client, "establish_connection", connector):
        bluetooth.async_get_advertisement_callback(hass)(info)
        # Discovery flows start as background tasks.
        await hass.async_block_till_done(wait_background_tasks=True)
        progress = hass.config_entries.flow.async_progress()
        [flow] = [f for f in progress if f["handler"] == DOMAIN]
        assert flow["context"]["source"] == SOURCE_BLUETOOTH
        flow_id = flow["flow_id"]
        result = await hass.config_entries.flow.async_configure(flow_id, {})
        assert result["step_id"] == "account"
        result = await sign_up(hass, flow_id, relay.url)
        assert result["step_id"] == "credentials", result
        result = await hass.config_entries.flow.async_configure(
            flow_id, {"setup_code": qr_text(device)}
        )
        assert result["step_id"] == "wifi", result
        assert connector.all_closed  # let go while the user picks the network
        # The real device names the join by the router's WPS button in its features
        # characteristic, so the Bluetooth flow offers it as the LAN's does.
        assert result["data_schema"] is not None
        assert "wps" in result["data_schema"].schema
        result = await submit_wifi(hass, result)
        assert result["type"] is FlowResultType.CREATE_ENTRY, result
        await hass.async_block_till_done()
        assert connector.all_closed

    assert result["result"].unique_id == device.device_id
    household_id = result["result"].data[CONF_HOUSEHOLD_ID]
    entry = household_entry(hass, household_id)
    assert entry is not None
    status = await asyncio.to_thread(device.status)
    assert (status["phase"], status["household_id"]) == ("online", household_id)
    assert status["wifi_ssid"] == HOME_SSID
    assert entry.state is ConfigEntryState.LOADED, (entry.state, entry.reason)
    await wait_for(
        hass,
        lambda: find_device(hass, device.device_id) is not None,
        "the device in Home Assistant (over MQTT)",
        timeout=60,
    )
    await _change_wifi_over_ble(hass, device, connector)


async def _change_wifi_over_ble(
    hass: HomeAssistant, device: Device, connector: BridgeConnector
) -> None:
    """Later its window opens for its owner only and it advertises over BLE again.

    The Wi-Fi watchdog opens that window when the saved network is gone for a while; the
    button (SIGUSR1) opens the same owner-only window at once. Home Assistant's matcher starts
    the Bluetooth flow again once the address has been away for a while; here the flow is
    started with the advertisement as the matcher would.
    """
    assert device.process is not None
    os.kill(device.process.popen.pid, signal.SIGUSR1)
    for _ in range(600):
        info = await scanned(device)
        state = AdvertisedState.parse(info.service_data[SERVICE_UUID])
        if state.window_open:
            break
        await asyncio.sleep(0.05)
    assert (state.phase, state.window_open) == (BlePhase.ONLINE, True)
    with patch.object(ble_client, "establish_connection", connector):
        result = await hass.config_entries.flow.async_init(
            DOMAIN, context={"source": SOURCE_BLUETOOTH}, data=info
        )
        assert result["step_id"] == "wifi_lost_confirm", result
        issue = ir.async_get(hass).async_get_issue(DOMAIN, f"wifi_lost_{device.device_id}")
        assert issue is not None
        flow_id = result["flow_id"]
        result = await hass.config_entries.flow.async_configure(flow_id, {})
        assert result["step_id"] == "wifi", result
        assert result["data_schema"] is not None
        cafe = next(
            option["value"]
            for option in result["data_schema"].schema["network"].config["options"]
            if option["label"].startswith("Cafe")
        )
        result = await hass.config_entries.flow.async_configure(flow_id, {"network": cafe})
        assert result["type"] is FlowResultType.SHOW_PROGRESS
        await hass.async_block_till_done()
        result = await hass.config_entries.flow.async_configure(flow_id)
        assert result["type"] is FlowResultType.ABORT, result
        assert result["reason"] == "wifi_changed"
        await hass.async_block_till_done()
        assert connector.all_closed
    status = await asyncio.to_thread(device.status)
    assert (status["phase"], status["wifi_ssid"]) == ("online", "Cafe")
