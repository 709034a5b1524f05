"""Fixtures for BLE provisioning: the device's real parts, an in-process radio, a BlueZ mock.

* ``device`` — a factory-provisioned device with its real session host (window open) and
  controller over the simulated Wi-Fi of tests/device (``HomeNet``, ``Cafe``, hidden ``Attic``).
* ``loopback`` — the provisioning and Improv services on :mod:`device_firmware.ble.loopback`.
* ``bluez`` — a private system bus running python-dbusmock's bluez5 template extended by
  ``bluez_gatt_template.py`` (GattManager1 that calls the application back, checked
  advertisements, simulated centrals); the daemon and the mock are stopped by pid.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dbusmock
import pytest
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from iob_protocol.framing import ChunkReassembler, chunk_frame
from iob_protocol.session import ClientSession

from device_firmware.ble.bluez import ProvisioningPeripheral
from device_firmware.ble.gatt import ProvisioningService, payload_size
from device_firmware.ble.improv import ImprovService
from device_firmware.ble.loopback import LoopbackPeripheral
from device_firmware.ble.wire import RX_UUID, TX_UUID
from device_firmware.controller import DeviceController
from device_firmware.decide import WindowReason
from device_firmware.hardware import Hardware
from device_firmware.network.simulated import SimulatedBackend
from device_firmware.provisioning.session_host import SessionHost
from device_firmware.relay_client import RelayClient
from device_firmware.state import StateStore
from tests.device.conftest import Provisioned, home_scenario

TEMPLATE = Path(__file__).with_name("bluez_gatt_template.py")
ADAPTER = "hci0"
MOCK_BUS = "org.bluez"
MOCK_IFACE = "org.bluez.Mock"


@dataclass
class Device:
    """The device's parts a BLE transport talks to."""

    provisioned: Provisioned
    backend: SimulatedBackend
    store: StateStore
    controller: DeviceController
    host: SessionHost
    hardware: Hardware

    def qr_client(self) -> ClientSession:
        return self.provisioned.qr_client()

    async def show(self, peripheral: ProvisioningPeripheral) -> None:
        """Do the presence's part: the peripheral follows the state and the window."""
        await peripheral.follow(self.store.current, advertise=self.host.window_open)


@pytest.fixture
async def device(provisioned: Provisioned) -> AsyncIterator[Device]:
    store = StateStore(provisioned.config.state_file)
    backend = SimulatedBackend(home_scenario())
    hardware = Hardware()

    def no_relay(url: str) -> RelayClient:
        raise AssertionError(f"BLE tests never reach an account service ({url})")

    controller = DeviceController(
        device=provisioned.device,
        store=store,
        backend=backend,
        relay_factory=no_relay,
        commit_timeout=30,
        hardware=hardware,
    )
    host = SessionHost(provisioned.device, controller.dispatch, allow_insecure_http=True)
    host.open_window(WindowReason.BOOT_UNCLAIMED)
    try:
        yield Device(provisioned, backend, store, controller, host, hardware)
    finally:
        await controller.aclose()


def improv_service(device: Device, **options: Any) -> ImprovService:
    info = device.provisioned.device.info
    return ImprovService(
        device.controller,
        device_name=f"IoT Onboard {info.device_id[:8]}",
        hardware_name=info.model,
        firmware_version=info.firmware_version,
        session_idle=device.host.session_idle,
        **options,
    )


@dataclass
class Loopback:
    peripheral: LoopbackPeripheral
    provisioning: ProvisioningService
    improv: ImprovService


@pytest.fixture
async def loopback(device: Device) -> AsyncIterator[Loopback]:
    improv = improv_service(device, authorization_seconds=60.0)
    provisioning = ProvisioningService(device.host, on_session=improv.refresh)
    peripheral = LoopbackPeripheral([provisioning, improv])
    await peripheral.start()
    await improv.update(device.store.current, window_open=device.host.window_open)
    try:
        yield Loopback(peripheral, provisioning, improv)
    finally:
        await peripheral.stop()


# --- BlueZ mock -----------------------------------------------------------------------------


@dataclass
class BluezMock:
    """Drives the mock from the test over dbus-fast (the mock calls back into this process)."""

    address: str
    bus: MessageBus
    process: dbusmock.SpawnedMock | None = None
    adapter: str = ADAPTER
    reassemblers: dict[str, ChunkReassembler] = field(default_factory=dict)

    @property
    def adapter_path(self) -> str:
        return f"/org/bluez/{self.adapter}"

    def spawn(self) -> None:
        self.process = dbusmock.SpawnedMock.spawn_with_template(
            str(TEMPLATE), {}, dbusmock.BusType.SYSTEM, stdout=subprocess.DEVNULL
        )

    def terminate(self) -> None:
        if self.process is not None:
            self.process.terminate()  # by the mock's pid
            self.process = None

    async def restart(self) -> None:
        """bluetoothd restarts: everything registered with it is forgotten."""
        self.terminate()
        self.spawn()
        await self.mock("AddGattAdapter", "ss", self.adapter, "iob-test")

    async def call(
        self, path: str, interface: str, member: str, signature: str = "", *body: Any
    ) -> list[Any]:
        reply = await self.bus.call(
            Message(
                destination=MOCK_BUS,
                path=path,
                interface=interface,
                member=member,
                signature=signature,
                body=list(body),
            )
        )
        assert reply is not None
        if reply.message_type is MessageType.ERROR:
            raise MockCallError(reply.error_name or "", str(reply.body[0] if reply.body else ""))
        return list(reply.body)

    async def mock(self, member: str, signature: str = "", *body: Any) -> list[Any]:
        return await self.call("/", MOCK_IFACE, member, signature, *body)

    async def add_central(self, address: str) -> str:
        (path,) = await self.mock("AddDevice", "sss", self.adapter, address, "phone")
        await self.mock("ConnectDevice", "ss", self.adapter, address)
        return str(path)

    async def characteristics(self) -> list[tuple[str, str, str, list[str]]]:
        (rows,) = await self.mock("GetCharacteristics", "s", self.adapter)
        return [(str(p), str(u), str(s), [str(f) for f in flags]) for p, u, s, flags in rows]

    async def advertisements(self) -> dict[str, dict[str, Any]]:
        (adverts,) = await self.mock("GetAdvertisements", "s", self.adapter)
        return {
            str(path): {name: _plain(value) for name, value in props.items()}
            for path, props in adverts.items()
        }

    async def write(
        self, address: str, uuid: str, value: bytes, *, mtu: int, offset: int = 0
    ) -> None:
        await self.mock("CentralWrite", "sssayqq", self.adapter, address, uuid, value, mtu, offset)

    async def read(self, address: str, uuid: str, *, mtu: int = 185, offset: int = 0) -> bytes:
        (value,) = await self.mock("CentralRead", "sssqq", self.adapter, address, uuid, offset, mtu)
        return bytes(value)

    async def subscribe(self, address: str, uuid: str, *, mtu: int) -> None:
        await self.mock("CentralSubscribe", "sssq", self.adapter, address, uuid, mtu)

    async def disconnect(self, address: str) -> None:
        await self.mock("DisconnectCentral", "ss", self.adapter, address)

    async def notifications(self, address: str, uuid: str) -> list[bytes]:
        (values,) = await self.mock("TakeNotifications", "sss", self.adapter, address, uuid)
        return [bytes(value) for value in values]

    async def wait_notifications(self, address: str, uuid: str, count: int = 1) -> list[bytes]:
        """Poll (bounded) until ``count`` notifications arrived; signals cross two processes."""
        received: list[bytes] = []
        async with asyncio.timeout(10):
            while len(received) < count:
                received += await self.notifications(address, uuid)
                if len(received) < count:
                    await asyncio.sleep(0.005)
        return received

    async def send_frame(self, address: str, frame: bytes, *, mtu: int) -> None:
        for chunk in chunk_frame(frame, payload_size(mtu)):
            await self.write(address, RX_UUID, chunk, mtu=mtu)

    async def receive_frame(self, address: str) -> bytes:
        reassembler = self.reassemblers.setdefault(address, ChunkReassembler())
        async with asyncio.timeout(10):
            while True:
                for chunk in await self.wait_notifications(address, TX_UUID):
                    frame = reassembler.feed(chunk)
                    if frame is not None:
                        return frame


class MockCallError(Exception):
    def __init__(self, name: str, text: str) -> None:
        super().__init__(f"{name}: {text}")
        self.name = name


def _plain(value: Any) -> Any:
    if isinstance(value, Variant):
        return _plain(value.value)
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


@pytest.fixture
async def bluez_without_adapter(system_bus: str) -> AsyncIterator[BluezMock]:
    """The BlueZ mock with no adapter yet (tests add what they need)."""
    bus = await MessageBus(bus_address=system_bus).connect()
    controller = BluezMock(system_bus, bus)
    controller.spawn()
    try:
        yield controller
    finally:
        bus.disconnect()
        controller.terminate()


@pytest.fixture
async def bluez(bluez_without_adapter: BluezMock) -> BluezMock:
    await bluez_without_adapter.mock("AddGattAdapter", "ss", ADAPTER, "iob-test")
    return bluez_without_adapter
