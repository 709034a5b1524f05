"""The BlueZ layer against a real dbus-daemon running the BlueZ mock (bluez_gatt_template.py):
registration as bluetoothd reads it back, advertisements, centrals writing and reading through
bluetoothd's D-Bus calls, disconnects, a bluetoothd restart, and the failures a user can meet.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
from dbus_fast import Message, MessageType, Variant
from improv_ble_client import protocol as prot
from iob_protocol.commands import InfoRequest, ScanWifiRequest, ScanWifiResult
from iob_protocol.diagnostics import DiagnosticCode
from iob_protocol.framing import chunk_frame

from device_firmware.ble.advertisement import AdvertisementData
from device_firmware.ble.bluez import ADVERTISEMENT_PATH, APP_PATH, BluezPeripheral
from device_firmware.ble.dbus_objects import ExportedObject, ObjectServer
from device_firmware.ble.errors import BluezError
from device_firmware.ble.improv import (
    IMPROV_RPC_COMMAND_UUID,
    IMPROV_RPC_RESULT_UUID,
    IMPROV_SERVICE_DATA_UUID,
    IMPROV_SERVICE_UUID,
    IMPROV_STATE_UUID,
)
from device_firmware.ble.wire import (
    FEATURES_UUID,
    RX_UUID,
    SERVICE_UUID,
    STATE_UUID,
    TX_UUID,
    AdvertisedState,
    BlePhase,
    parse_state_value,
)
from device_firmware.decide import WindowReason
from device_firmware.state import Phase
from tests.device.conftest import HOME_PASSPHRASE, HOME_SSID

from .client import BleClient
from .conftest import BluezMock, Device, MockCallError

PHONE = "AA:BB:CC:DD:EE:01"
IOB_ADVERT = f"{ADVERTISEMENT_PATH}/iot_onboard"
IMPROV_ADVERT = f"{ADVERTISEMENT_PATH}/improv"
_T = TypeVar("_T")


def make_peripheral(device: Device, bluez: BluezMock, **options: object) -> BluezPeripheral:
    return BluezPeripheral(
        host=device.host,
        controller=device.controller,
        device=device.provisioned.device,
        bus_address=bluez.address,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
async def peripheral(device: Device, bluez: BluezMock) -> AsyncIterator[BluezPeripheral]:
    ble = make_peripheral(device, bluez)
    await ble.start()
    await device.show(ble)
    try:
        yield ble
    finally:
        await ble.stop()


async def eventually(probe: Callable[[], Awaitable[_T]], accept: Callable[[_T], bool]) -> _T:
    """Poll a cross-process effect (a D-Bus signal reaching the other side), bounded."""
    async with asyncio.timeout(10):
        while True:
            value = await probe()
            if accept(value):
                return value
            await asyncio.sleep(0.01)


async def test_bluez_reads_the_application_back_and_sees_both_services(
    peripheral: BluezPeripheral, bluez: BluezMock
) -> None:
    assert peripheral.adapter_path == "/org/bluez/hci0"
    rows = {
        uuid: (path, service, flags) for path, uuid, service, flags in await bluez.characteristics()
    }
    assert rows[RX_UUID][1:] == (SERVICE_UUID, ["write", "write-without-response"])
    assert rows[TX_UUID][1:] == (SERVICE_UUID, ["notify"])
    assert rows[STATE_UUID][1:] == (SERVICE_UUID, ["notify", "read"])
    assert rows[FEATURES_UUID][1:] == (SERVICE_UUID, ["read"])
    assert rows[IMPROV_RPC_COMMAND_UUID][1:] == (IMPROV_SERVICE_UUID, ["write"])
    assert rows[IMPROV_STATE_UUID][1:] == (IMPROV_SERVICE_UUID, ["notify", "read"])
    assert len(rows) == 9
    assert all(path.startswith(APP_PATH + "/") for path, _service, _flags in rows.values())


async def test_advertisements_fit_and_carry_state_and_short_id(
    peripheral: BluezPeripheral, bluez: BluezMock, device: Device
) -> None:
    adverts = await bluez.advertisements()  # the mock refused anything over 31 bytes
    assert set(adverts) == {IOB_ADVERT, IMPROV_ADVERT}
    ours = adverts[IOB_ADVERT]
    assert ours["Type"] == "peripheral"
    assert ours["ServiceUUIDs"] == []
    state = AdvertisedState.parse(ours["ServiceData"][SERVICE_UUID])
    assert state == AdvertisedState(
        phase=BlePhase.UNCLAIMED,
        window_open=True,
        failed=False,
        short_id=device.provisioned.device.identity.device_id[:8],
    )
    assert ours["LocalName"] == peripheral.local_name
    improv = adverts[IMPROV_ADVERT]
    assert improv["ServiceUUIDs"] == [IMPROV_SERVICE_UUID]
    parsed = prot.ImprovServiceData.from_bytes(improv["ServiceData"][IMPROV_SERVICE_DATA_UUID])
    assert parsed.state is prot.State.AUTHORIZATION_REQUIRED


async def test_a_withdrawn_advertisement_is_unregistered_without_a_change_before_it(
    peripheral: BluezPeripheral, bluez: BluezMock, device: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim closes the window and changes what would be advertised in one step. Bookworm's
    bluetoothd (5.66) crashed (SIGSEGV, in the VM stage) when an advertisement it was
    refreshing from a PropertiesChanged was unregistered at once; a withdrawn advertisement now
    goes without a change signal, and its new content is there for the next registration."""
    assert set(await bluez.advertisements()) == {IOB_ADVERT, IMPROV_ADVERT}
    events: list[tuple[str, str]] = []
    for adv in peripheral._adverts.values():
        emit = adv._emit

        def spy(path: str, interface: str, changed: Any, emit: Any = emit) -> None:
            events.append(("changed", path))
            emit(path, interface, changed)

        monkeypatch.setattr(adv, "_emit", spy)
    call = peripheral._call

    async def spy_call(path: str, interface: str, member: str, *args: Any) -> Any:
        if member == "UnregisterAdvertisement":
            events.append(("unregister", str(args[1][0])))
        return await call(path, interface, member, *args)

    monkeypatch.setattr(peripheral, "_call", spy_call)

    await device.store.update(
        phase=Phase.PROVISIONING, diagnostic=DiagnosticCode.DHCP_TIMEOUT, diagnostic_at=1
    )
    device.host.close_window()
    await device.show(peripheral)

    assert sorted(events) == [("unregister", IMPROV_ADVERT), ("unregister", IOB_ADVERT)]
    assert await bluez.advertisements() == {}
    device.host.open_window(WindowReason.BUTTON)
    await device.show(peripheral)
    ours = (await bluez.advertisements())[IOB_ADVERT]
    state = AdvertisedState.parse(ours["ServiceData"][SERVICE_UUID])
    assert (state.phase, state.failed) == (BlePhase.PROVISIONING, True)


async def test_state_changes_refresh_the_advertisement_and_the_window_controls_it(
    peripheral: BluezPeripheral, bluez: BluezMock, device: Device
) -> None:
    await device.store.update(
        phase=Phase.PROVISIONING, diagnostic=DiagnosticCode.DHCP_TIMEOUT, diagnostic_at=1
    )
    await device.show(peripheral)

    def failed(adverts: dict[str, dict[str, Any]]) -> bool:
        data = adverts[IOB_ADVERT]["ServiceData"]
        return AdvertisedState.parse(data[SERVICE_UUID]).failed

    await eventually(bluez.advertisements, failed)  # bluetoothd re-read PropertiesChanged
    value = parse_state_value(await bluez.read(PHONE, STATE_UUID))
    assert (value.phase, value.diagnostic) == (BlePhase.PROVISIONING, DiagnosticCode.DHCP_TIMEOUT)

    device.host.close_window()
    await device.show(peripheral)
    assert await bluez.advertisements() == {}
    assert peripheral.advertising == {"iot_onboard": False, "improv": False}
    device.host.open_window(WindowReason.BUTTON)
    await device.show(peripheral)
    assert set(await bluez.advertisements()) == {IOB_ADVERT, IMPROV_ADVERT}


@pytest.mark.parametrize("mtu", [23, 185])
async def test_a_central_runs_the_session_through_bluetoothd(
    peripheral: BluezPeripheral, bluez: BluezMock, device: Device, mtu: int
) -> None:
    await bluez.add_central(PHONE)
    await bluez.subscribe(PHONE, TX_UUID, mtu=mtu)

    async def send(frame: bytes) -> None:
        await bluez.send_frame(PHONE, frame, mtu=mtu)

    async def receive() -> bytes:
        return await bluez.receive_frame(PHONE)

    client = BleClient(device.qr_client(), send, receive)
    await client.handshake()
    assert (await client.call(InfoRequest(request_id=1))).ok
    scan = await client.call(ScanWifiRequest(request_id=2))
    assert isinstance(scan.result, ScanWifiResult)  # type: ignore[union-attr]
    assert peripheral.provisioning.owner == f"/org/bluez/hci0/dev_{PHONE.replace(':', '_')}"


async def test_a_disconnect_reported_by_bluez_drops_the_partial_frame(
    peripheral: BluezPeripheral, bluez: BluezMock, device: Device
) -> None:
    await bluez.add_central(PHONE)
    await bluez.subscribe(PHONE, TX_UUID, mtu=23)
    hello = device.qr_client().start()
    for chunk in chunk_frame(hello, 20)[:3]:
        await bluez.write(PHONE, RX_UUID, chunk, mtu=23)

    async def owner() -> str | None:
        return peripheral.provisioning.owner

    await eventually(owner, lambda link: link is not None)
    await bluez.disconnect(PHONE)  # Device1.Connected -> false, StopNotify
    await eventually(owner, lambda link: link is None)

    await bluez.mock("ConnectDevice", "ss", bluez.adapter, PHONE)
    await bluez.subscribe(PHONE, TX_UUID, mtu=23)

    async def send(frame: bytes) -> None:
        await bluez.send_frame(PHONE, frame, mtu=23)

    client = BleClient(device.qr_client(), send, lambda: bluez.receive_frame(PHONE))
    await client.handshake()
    assert (await client.call(InfoRequest(request_id=1))).ok


async def test_a_removed_device_is_a_closed_link(
    peripheral: BluezPeripheral, bluez: BluezMock, device: Device
) -> None:
    path = await bluez.add_central(PHONE)
    hello = device.qr_client().start()
    await bluez.write(PHONE, RX_UUID, chunk_frame(hello, 20)[0], mtu=23)

    async def owner() -> str | None:
        return peripheral.provisioning.owner

    await eventually(owner, lambda link: link == path)
    await bluez.call(bluez.adapter_path, "org.bluez.Adapter1", "RemoveDevice", "o", path)
    await eventually(owner, lambda link: link is None)


async def test_improv_long_write_through_bluetoothd(
    peripheral: BluezPeripheral, bluez: BluezMock, device: Device
) -> None:
    await bluez.add_central(PHONE)
    for uuid in (IMPROV_STATE_UUID, IMPROV_RPC_RESULT_UUID):
        await bluez.subscribe(PHONE, uuid, mtu=23)
    await peripheral.authorize_improv()
    packet = prot.WiFiSettingsCmd(HOME_SSID, HOME_PASSPHRASE.encode()).as_bytes()
    # bluetoothd executes a long write as WriteValue calls with the "offset" option.
    for offset in range(0, len(packet), 18):
        await bluez.write(
            PHONE, IMPROV_RPC_COMMAND_UUID, packet[offset : offset + 18], mtu=23, offset=offset
        )
    results = await bluez.wait_notifications(PHONE, IMPROV_RPC_RESULT_UUID)
    assert isinstance(prot.parse_result(results[0]), prot.WiFiSettingsRes)
    states = await bluez.notifications(PHONE, IMPROV_STATE_UUID)
    assert [prot.State(value[0]) for value in states] == [
        prot.State.AUTHORIZED,
        prot.State.PROVISIONING,
        prot.State.PROVISIONED,
    ]
    assert device.backend.saved_ssid == HOME_SSID
    assert not device.store.current.claimed

    # Improv is done: its advertisement goes; ours stays (HA claims the device over LAN).
    await device.show(peripheral)
    assert set(await bluez.advertisements()) == {IOB_ADVERT}


@pytest.mark.usefixtures("peripheral")
async def test_a_write_with_a_bad_offset_gets_bluez_error(bluez: BluezMock) -> None:
    await bluez.add_central(PHONE)
    with pytest.raises(MockCallError) as error:
        await bluez.write(PHONE, IMPROV_RPC_COMMAND_UUID, b"\x01\x10", mtu=23, offset=7)
    assert error.value.name == "org.bluez.Error.InvalidOffset"


async def test_stop_withdraws_application_and_advertisements(
    device: Device, bluez: BluezMock
) -> None:
    ble = make_peripheral(device, bluez)
    await ble.start()
    assert await bluez.characteristics()
    await ble.stop()
    assert await bluez.characteristics() == []
    assert await bluez.advertisements() == {}


async def test_bluetoothd_restart_registers_again(device: Device, bluez: BluezMock) -> None:
    ble = make_peripheral(device, bluez, retry_seconds=0.05)
    await ble.start()
    await device.show(ble)
    try:
        await bluez.restart()
        rows = await eventually(bluez.characteristics, bool)
        assert len(rows) == 9
        adverts = await eventually(bluez.advertisements, lambda found: len(found) == 2)
        assert set(adverts) == {IOB_ADVERT, IMPROV_ADVERT}
    finally:
        await ble.stop()


# --- what a user can meet -------------------------------------------------------------------


async def test_bluez_not_running(device: Device, system_bus: str) -> None:
    ble = BluezPeripheral(
        host=device.host,
        controller=device.controller,
        device=device.provisioned.device,
        bus_address=system_bus,
    )
    with pytest.raises(BluezError, match="not running") as error:
        await ble.start()
    assert "systemctl enable --now bluetooth" in error.value.next_step


async def test_no_le_adapter(device: Device, bluez_without_adapter: BluezMock) -> None:
    await bluez_without_adapter.mock("AddAdapter", "ss", "hci0", "classic only")
    ble = make_peripheral(device, bluez_without_adapter)
    with pytest.raises(BluezError, match="no Bluetooth LE adapter") as error:
        await ble.start()
    assert "bluetoothctl list" in error.value.next_step


async def test_named_adapter_missing(device: Device, bluez: BluezMock) -> None:
    ble = make_peripheral(device, bluez, adapter="hci7")
    with pytest.raises(BluezError, match="no Bluetooth adapter hci7"):
        await ble.start()


async def test_the_object_tree_answers_like_a_dbus_service(
    peripheral: BluezPeripheral, bluez: BluezMock
) -> None:
    """busctl and d-feet can look at it; properties are read-only."""
    assert peripheral._bus is not None
    owner = peripheral._bus.unique_name

    async def call(
        path: str, interface: str, member: str, signature: str = "", *body: object
    ) -> Message:
        reply = await bluez.bus.call(
            Message(
                destination=owner,
                path=path,
                interface=interface,
                member=member,
                signature=signature,
                body=list(body),
            )
        )
        assert reply is not None
        return reply

    (xml,) = (await call(APP_PATH, "org.freedesktop.DBus.Introspectable", "Introspect")).body
    assert '<node name="service0"/>' in xml
    assert '<node name="service1"/>' in xml
    (objects,) = (
        await call(APP_PATH, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects")
    ).body
    assert len(objects) == 11  # 2 services, 9 characteristics; the root is not an object
    char = f"{APP_PATH}/service0/char2"
    reply = await call(
        char,
        "org.freedesktop.DBus.Properties",
        "Get",
        "ss",
        "org.bluez.GattCharacteristic1",
        "UUID",
    )
    assert reply.body[0].value == STATE_UUID
    refused = await call(
        char,
        "org.freedesktop.DBus.Properties",
        "Set",
        "ssv",
        "org.bluez.GattCharacteristic1",
        "UUID",
        Variant("s", "x"),
    )
    assert refused.message_type is MessageType.ERROR
    unknown = await call(char, "org.bluez.GattCharacteristic1", "Frobnicate")
    assert unknown.error_name == "org.freedesktop.DBus.Error.UnknownMethod"


async def test_the_mock_refuses_what_bluetoothd_refuses(bluez: BluezMock) -> None:
    """The mock's length check is what makes the advertisement tests mean something."""

    class TooLong(ExportedObject):
        def properties(self) -> dict[str, dict[str, Variant]]:
            data = AdvertisementData(
                service_uuids=(SERVICE_UUID,), service_data={SERVICE_UUID: bytes(7)}
            )
            return {"org.bluez.LEAdvertisement1": data.properties()}

    server = ObjectServer(bluez.bus)
    server.export(TooLong("/test/too_long"))
    try:
        with pytest.raises(MockCallError) as error:
            await bluez.call(
                "/org/bluez/hci0",
                "org.bluez.LEAdvertisingManager1",
                "RegisterAdvertisement",
                "oa{sv}",
                "/test/too_long",
                {},
            )
        assert error.value.name == "org.bluez.Error.Failed"
    finally:
        server.close()


async def test_a_button_press_offers_and_authorizes_improv(
    peripheral: BluezPeripheral, bluez: BluezMock, device: Device
) -> None:
    device.host.close_window()  # the 15 minutes ran out
    await device.show(peripheral)
    assert await bluez.advertisements() == {}
    device.host.open_window(WindowReason.BUTTON)
    await device.show(peripheral)
    await peripheral.authorize_improv()

    def authorized(adverts: dict[str, dict[str, Any]]) -> bool:
        data = adverts.get(IMPROV_ADVERT, {}).get("ServiceData", {})
        raw = data.get(IMPROV_SERVICE_DATA_UUID)
        return raw is not None and prot.ImprovServiceData.from_bytes(raw).state is (
            prot.State.AUTHORIZED
        )

    adverts = await eventually(bluez.advertisements, authorized)
    assert IOB_ADVERT in adverts


async def test_an_adapter_that_is_off_is_powered_on(device: Device, bluez: BluezMock) -> None:
    await bluez.call(
        bluez.adapter_path,
        "org.freedesktop.DBus.Properties",
        "Set",
        "ssv",
        "org.bluez.Adapter1",
        "Powered",
        Variant("b", False),
    )

    async def powered() -> bool:
        (value,) = await bluez.call(
            bluez.adapter_path,
            "org.freedesktop.DBus.Properties",
            "Get",
            "ss",
            "org.bluez.Adapter1",
            "Powered",
        )
        return bool(value.value)

    assert not await powered()
    ble = make_peripheral(device, bluez)
    await ble.start()
    try:
        assert await powered()
    finally:
        await ble.stop()
