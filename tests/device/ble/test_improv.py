"""Improv Wi-Fi compatibility: py-improv-ble-client's own packet builders and parsers against the
device's Improv service over the loopback link (Home Assistant's improv_ble uses that library).
"""

from __future__ import annotations

import asyncio

import pytest
from bleak.backends.scanner import AdvertisementData
from improv_ble_client import device_filter
from improv_ble_client import protocol as prot

from device_firmware.ble.gatt import ProvisioningService
from device_firmware.ble.improv import (
    IMPROV_CAPABILITIES_UUID,
    IMPROV_ERROR_UUID,
    IMPROV_RPC_COMMAND_UUID,
    IMPROV_RPC_RESULT_UUID,
    IMPROV_SERVICE_DATA_UUID,
    IMPROV_SERVICE_UUID,
    IMPROV_STATE_UUID,
    ImprovState,
    encode_packet,
    improv_service_data,
    parse_packet,
)
from device_firmware.ble.loopback import LoopbackCentral, LoopbackPeripheral
from device_firmware.ble.wire import TX_UUID
from device_firmware.hardware import LedPattern
from device_firmware.state import DeviceStateRecord, Ownership, Phase
from tests.device.conftest import HOME_PASSPHRASE, HOME_SSID, WRONG_PASSPHRASE

from .client import BleClient
from .conftest import Device, Loopback, improv_service


async def improv_central(peripheral: LoopbackPeripheral, *, mtu: int = 185) -> LoopbackCentral:
    central = peripheral.connect(mtu=mtu)
    for uuid in (IMPROV_STATE_UUID, IMPROV_ERROR_UUID, IMPROV_RPC_RESULT_UUID):
        await central.subscribe(uuid)
    return central


async def send(central: LoopbackCentral, command: prot.Command, *, pieces: bool = False) -> None:
    """The client's write: one (long) write, or several MTU-sized writes as some clients do."""
    data = command.as_bytes()
    if not pieces:
        await central.write(IMPROV_RPC_COMMAND_UUID, data)
        return
    step = central.payload_size
    for start in range(0, len(data), step):
        await central.write(IMPROV_RPC_COMMAND_UUID, data[start : start + step])


async def next_state(central: LoopbackCentral) -> prot.State:
    return prot.State(await _byte(central, IMPROV_STATE_UUID))


async def next_error(central: LoopbackCentral) -> prot.Error:
    while True:
        error = prot.Error(await _byte(central, IMPROV_ERROR_UUID))
        if error is not prot.Error.NO_ERROR:  # the client ignores these, as here
            return error


async def _byte(central: LoopbackCentral, uuid: str) -> int:
    value = await central.notification(uuid)
    assert len(value) == 1
    return value[0]


async def next_result(central: LoopbackCentral) -> prot.Command:
    return prot.parse_result(await central.notification(IMPROV_RPC_RESULT_UUID))


async def test_capabilities_state_and_error_are_readable(loopback: Loopback) -> None:
    central = await improv_central(loopback.peripheral)
    capabilities = prot.Capabilities((await central.read(IMPROV_CAPABILITIES_UUID))[0])
    assert capabilities == (
        prot.Capabilities.IDENTIFY | prot.Capabilities.DEVICE_INFO | prot.Capabilities.SCAN_WIFI
    )
    assert prot.State((await central.read(IMPROV_STATE_UUID))[0]) is (
        prot.State.AUTHORIZATION_REQUIRED
    )
    assert prot.Error((await central.read(IMPROV_ERROR_UUID))[0]) is prot.Error.NO_ERROR


async def test_wifi_settings_without_authorization_are_refused(
    loopback: Loopback, device: Device
) -> None:
    central = await improv_central(loopback.peripheral)
    await send(central, prot.WiFiSettingsCmd(HOME_SSID, HOME_PASSPHRASE.encode()))
    assert await next_error(central) is prot.Error.NOT_AUTHORIZED
    assert not any(event.startswith("connect") for event in device.backend.events)


@pytest.mark.parametrize(("mtu", "pieces"), [(23, False), (23, True), (185, False)])
async def test_button_then_wifi_settings_join_the_network_unclaimed(
    loopback: Loopback, device: Device, mtu: int, pieces: bool
) -> None:
    central = await improv_central(loopback.peripheral, mtu=mtu)
    await loopback.improv.authorize()
    assert await next_state(central) is prot.State.AUTHORIZED
    await send(central, prot.WiFiSettingsCmd(HOME_SSID, HOME_PASSPHRASE.encode()), pieces=pieces)
    assert await next_state(central) is prot.State.PROVISIONING
    assert await next_state(central) is prot.State.PROVISIONED
    result = await next_result(central)
    assert isinstance(result, prot.WiFiSettingsRes)
    assert result.redirect_url is None
    # The same fail-safe network commit as the captive page: joined, saved, still unclaimed.
    assert device.backend.saved_ssid == HOME_SSID
    record = device.store.current
    assert (record.phase, record.claimed, record.wifi_ssid) == (
        Phase.PROVISIONING,
        False,
        HOME_SSID,
    )
    assert record.diagnostic is None


async def test_wrong_passphrase_is_unable_to_connect_and_rolls_back(
    loopback: Loopback, device: Device
) -> None:
    central = await improv_central(loopback.peripheral)
    await loopback.improv.authorize()
    assert await next_state(central) is prot.State.AUTHORIZED
    await send(central, prot.WiFiSettingsCmd(HOME_SSID, WRONG_PASSPHRASE.encode()))
    assert await next_state(central) is prot.State.PROVISIONING
    assert await next_state(central) is prot.State.AUTHORIZED  # authorization starts over
    assert await next_error(central) is prot.Error.UNABLE_TO_CONNECT
    assert device.backend.saved_ssid is None
    assert device.store.current.diagnostic is not None
    assert device.store.current.diagnostic.value == "WIFI_AUTH_FAILED"


async def test_settings_sent_again_while_joining_get_the_joins_outcome(
    loopback: Loopback, device: Device
) -> None:
    """A client whose link dropped sends its command again (py-improv-ble-client retries):
    while the join runs that is not "not authorized"; both hear the join's outcome."""
    central = await improv_central(loopback.peripheral)
    await loopback.improv.authorize()
    assert await next_state(central) is prot.State.AUTHORIZED
    command = prot.WiFiSettingsCmd(HOME_SSID, WRONG_PASSPHRASE.encode())
    await send(central, command)
    assert await next_state(central) is prot.State.PROVISIONING
    await send(central, command)
    assert await next_state(central) is prot.State.AUTHORIZED
    assert await next_error(central) is prot.Error.UNABLE_TO_CONNECT
    assert device.store.current.diagnostic is not None
    assert device.store.current.diagnostic.value == "WIFI_AUTH_FAILED"


async def test_a_passphrase_no_network_accepts_is_refused_before_joining(
    loopback: Loopback, device: Device
) -> None:
    central = await improv_central(loopback.peripheral)
    await loopback.improv.authorize()
    await next_state(central)
    await send(central, prot.WiFiSettingsCmd(HOME_SSID, b"short"))
    assert await next_error(central) is prot.Error.UNABLE_TO_CONNECT
    await send(central, prot.WiFiSettingsCmd(b"x" * 33, HOME_PASSPHRASE.encode()))
    assert await next_error(central) is prot.Error.INVALID_RPC_PACKET
    assert not any(event.startswith("connect") for event in device.backend.events)


async def test_malformed_and_unknown_commands(loopback: Loopback) -> None:
    central = await improv_central(loopback.peripheral)
    packet = bytearray(prot.DeviceInfoCmd().as_bytes())
    packet[-1] ^= 0xFF
    await central.write(IMPROV_RPC_COMMAND_UUID, bytes(packet))
    assert await next_error(central) is prot.Error.INVALID_RPC_PACKET
    await send(central, prot.HostnameCmd(b"kitchen"))  # a capability this device lacks
    assert await next_error(central) is prot.Error.UNKNOWN_RPC_COMMAND
    await central.write(IMPROV_RPC_COMMAND_UUID, prot.IdentifyCmd().as_bytes() + b"\x00")
    assert await next_error(central) is prot.Error.INVALID_RPC_PACKET
    # Still serving: a good command after the bad ones.
    await send(central, prot.DeviceInfoCmd())
    assert isinstance(await next_result(central), prot.DeviceInfoRes)


async def test_device_info_scan_and_identify(loopback: Loopback, device: Device) -> None:
    central = await improv_central(loopback.peripheral, mtu=185)
    await send(central, prot.IdentifyCmd())
    await send(central, prot.DeviceInfoCmd())
    info = await next_result(central)
    assert isinstance(info, prot.DeviceInfoRes)
    factory = device.provisioned.device.info
    assert info.firmware_name == b"IoT Onboard"
    assert info.firmware_version == factory.firmware_version.encode()
    assert info.hardware_chip == factory.model.encode()
    assert info.device_name == f"IoT Onboard {factory.device_id[:8]}".encode()
    assert LedPattern.IDENTIFY in device.hardware.history  # identify ran before device info

    await send(central, prot.ScanWifiCmd())
    scan = await next_result(central)
    assert isinstance(scan, prot.ScanWifiRes)
    assert scan.networks == [(b"HomeNet", b"-60", b"WPA2"), (b"Cafe", b"-80", b"NO")]


async def test_scan_result_is_trimmed_to_one_notification_at_the_minimum_mtu(
    loopback: Loopback,
) -> None:
    central = await improv_central(loopback.peripheral, mtu=23)
    await send(central, prot.ScanWifiCmd())
    value = await central.notification(IMPROV_RPC_RESULT_UUID)
    assert len(value) <= 20
    scan = prot.parse_result(value)
    assert isinstance(scan, prot.ScanWifiRes)
    assert scan.networks == [(b"HomeNet", b"-60", b"WPA2")]


async def test_device_info_longer_than_the_mtu_can_be_read_whole(loopback: Loopback) -> None:
    central = await improv_central(loopback.peripheral, mtu=23)
    await send(central, prot.DeviceInfoCmd())
    cut = await central.notification(IMPROV_RPC_RESULT_UUID)
    assert len(cut) == 20  # BlueZ cuts the notification to MTU - 3
    whole = await central.read(IMPROV_RPC_RESULT_UUID)  # a long read with offsets
    assert isinstance(prot.parse_result(whole), prot.DeviceInfoRes)


async def test_an_established_secure_session_authorizes(loopback: Loopback, device: Device) -> None:
    improv = await improv_central(loopback.peripheral)
    central = loopback.peripheral.connect(mtu=185)
    await central.subscribe(TX_UUID)
    client = BleClient(device.qr_client(), central.send_frame, central.receive_frame)
    await client.handshake()
    assert await next_state(improv) is prot.State.AUTHORIZED


async def test_a_session_its_client_left_authorizes_no_longer_than_a_button(
    device: Device,
) -> None:
    """The session stays established for its idle timeout (10 minutes) after its client left;
    it authorizes Improv only while in use, so nobody else in range gets those minutes."""
    improv = improv_service(device, authorization_seconds=0.3)
    provisioning = ProvisioningService(device.host, on_session=improv.refresh)
    peripheral = LoopbackPeripheral([provisioning, improv])
    await peripheral.start()
    try:
        await improv.update(device.store.current, window_open=device.host.window_open)
        stranger = await improv_central(peripheral)
        central = peripheral.connect(mtu=185)
        await central.subscribe(TX_UUID)
        client = BleClient(device.qr_client(), central.send_frame, central.receive_frame)
        await client.handshake()
        assert await next_state(stranger) is prot.State.AUTHORIZED
        # No frame since: the authorization lapses, the session itself is still there.
        assert await next_state(stranger) is prot.State.AUTHORIZATION_REQUIRED
        assert device.host.has_session
        await send(stranger, prot.WiFiSettingsCmd(b"Elsewhere", b"neighbour's pw"))
        assert await next_error(stranger) is prot.Error.NOT_AUTHORIZED
        assert improv.state is ImprovState.AUTHORIZATION_REQUIRED
    finally:
        await peripheral.stop()


async def test_button_authorization_lapses(device: Device) -> None:
    improv = improv_service(device, authorization_seconds=0.05)
    peripheral = LoopbackPeripheral([improv])
    await peripheral.start()
    try:
        await improv.update(device.store.current, window_open=True)
        central = await improv_central(peripheral)
        await improv.authorize()
        assert await next_state(central) is prot.State.AUTHORIZED
        assert await next_state(central) is prot.State.AUTHORIZATION_REQUIRED
    finally:
        await peripheral.stop()


async def test_a_claimed_device_never_authorizes(loopback: Loopback) -> None:
    claimed = DeviceStateRecord(
        phase=Phase.ONLINE,
        wifi_ssid=HOME_SSID,
        ownership=Ownership(household_id="hh", service_url="https://relay.example", claimed_at=1),
    )
    await loopback.improv.update(claimed, window_open=True)
    assert not loopback.improv.advertised
    central = await improv_central(loopback.peripheral)
    await loopback.improv.authorize()
    await send(central, prot.WiFiSettingsCmd(b"Elsewhere", b"neighbour's pw"))
    assert await next_error(central) is prot.Error.NOT_AUTHORIZED
    assert loopback.improv.state is ImprovState.AUTHORIZATION_REQUIRED


async def test_a_command_cut_off_by_a_disconnect_is_forgotten(loopback: Loopback) -> None:
    first = await improv_central(loopback.peripheral, mtu=23)
    data = prot.DeviceInfoCmd().as_bytes()
    await first.write(IMPROV_RPC_COMMAND_UUID, data[:1])
    first.disconnect()
    second = await improv_central(loopback.peripheral, mtu=185)
    await second.write(IMPROV_RPC_COMMAND_UUID, data)
    assert isinstance(await next_result(second), prot.DeviceInfoRes)
    await asyncio.sleep(0)
    assert loopback.improv.error.value == prot.Error.NO_ERROR


def test_service_data_matches_what_clients_filter_on() -> None:
    for state, offered in [
        (ImprovState.AUTHORIZATION_REQUIRED, True),
        (ImprovState.AUTHORIZED, True),
        (ImprovState.PROVISIONING, False),
        (ImprovState.PROVISIONED, False),
    ]:
        data = improv_service_data(state)
        parsed = prot.ImprovServiceData.from_bytes(data)
        assert parsed.state == prot.State(state)
        advertisement = AdvertisementData(
            local_name=None,
            manufacturer_data={},
            service_data={IMPROV_SERVICE_DATA_UUID: data},
            service_uuids=[IMPROV_SERVICE_UUID],
            tx_power=None,
            rssi=-60,
            platform_data=(),
        )
        assert device_filter(advertisement) is offered
    assert prot.SERVICE_UUID == IMPROV_SERVICE_UUID
    assert prot.SERVICE_DATA_UUID == IMPROV_SERVICE_DATA_UUID


def test_packets_round_trip_with_the_library() -> None:
    command = prot.WiFiSettingsCmd(b"Home", b"password1")
    assert parse_packet(command.as_bytes()) == (1, [b"Home", b"password1"])
    ours = encode_packet(4, [b"Home", b"-60", b"WPA2"])
    result = prot.parse_result(ours)
    assert isinstance(result, prot.ScanWifiRes)
    assert result.networks == [(b"Home", b"-60", b"WPA2")]
