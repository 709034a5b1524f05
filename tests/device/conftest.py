"""Fixtures for the device agent's tests: a provisioned device in a temporary directory, a
simulated network, the real account service in-process, the fault-injecting service answering
the device API, and the running agent on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import aiohttp
import dbus
import dbus.bus
import dbusmock
import pytest
from iob_protocol.payload import ManualCode, QrPayload
from iob_protocol.session import ClientSession

from device_firmware.agent import Agent
from device_firmware.capabilities.gpio import EdgeLine
from device_firmware.config import DeviceConfig
from device_firmware.factory import FactoryResult, ProvisionedDevice, factory_provision
from device_firmware.hardware import Hardware
from device_firmware.network.simulated import Scenario, SimulatedBackend, SimulatedNetwork
from device_firmware.selftest_hardware import HardwareAccess
from device_firmware.supervision import RuntimeFactory
from tests.plugins.mosquitto import MosquittoBroker
from tests.plugins.scripted_service import Answer, Received, ScriptedService

from .lan_client import LanClient
from .real_relay import RealRelay, real_relay

HOME_SSID = b"HomeNet"
HOME_PASSPHRASE = "correct horse battery"  # noqa: S105 - a simulated network's password
ATTIC_PASSPHRASE = "hidden network pw"  # noqa: S105 - a simulated network's password
WRONG_PASSPHRASE = "not the password"  # noqa: S105 - deliberately wrong
TEST_PASSWORD = "test-password"  # noqa: S105 - MQTT password in fixtures


@dataclass
class Provisioned:
    config: DeviceConfig
    result: FactoryResult
    device: ProvisionedDevice

    def qr_client(self) -> ClientSession:
        return ClientSession.for_qr(QrPayload.parse(self.result.qr_payload))

    def manual_client(self, code: str | None = None) -> ClientSession:
        return ClientSession.for_manual_code(
            ManualCode.parse(code or self.result.manual_code),
            device_id=self.device.identity.device_id,
            device_public_key=self.device.identity.public_key,
        )

    def owner_client(self, owner_secret: bytes) -> ClientSession:
        """What HA does for a device it claimed: its secret, the key it stored at claim time."""
        return ClientSession.for_owner(
            device_id=self.device.identity.device_id,
            device_public_key=self.device.identity.public_key,
            owner_secret=owner_secret,
        )


def provision(tmp_path: Path, **config: Any) -> Provisioned:
    settings: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "listen": ("127.0.0.1",),
        "port": 0,
        "captive_host": "127.0.0.1",
        "captive_port": 0,
        "allow_insecure_http": True,
        "relay_timeout": 5.0,
        # Never the machine's real system bus: BLE tests bring their own bus and BlueZ mock.
        "ble": False,
    }
    settings.update(config)
    cfg = DeviceConfig(**settings)
    result = factory_provision(
        cfg, model="pi-test", output_dir=tmp_path / "factory", verifier_log2_n=14
    )
    return Provisioned(cfg, result, ProvisionedDevice.load(cfg))


@pytest.fixture
def provisioned(tmp_path: Path) -> Provisioned:
    return provision(tmp_path)


def home_scenario(**changes: Any) -> Scenario:
    """HomeNet (WPA2) and an open café network in range; nothing saved."""
    home = SimulatedNetwork(ssid=HOME_SSID, passphrase=HOME_PASSPHRASE, strength=80)
    cafe = SimulatedNetwork(ssid=b"Cafe", strength=40)
    hidden = SimulatedNetwork(ssid=b"Attic", passphrase=ATTIC_PASSPHRASE, hidden=True)
    return dataclasses.replace(Scenario(networks=(home, cafe, hidden)), **changes)


# --- D-Bus ---------------------------------------------------------------------------------


@pytest.fixture
def system_bus(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private system bus (dbus-daemon, stopped by pid afterwards); its address."""
    if shutil.which("dbus-daemon") is None:
        pytest.fail("dbus-daemon is missing: run scripts/setup (Debian package dbus-daemon)")
    # PrivateDBus writes DBUS_SYSTEM_BUS_ADDRESS into os.environ; monkeypatch restores it.
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", ""))
    bus = dbusmock.PrivateDBus(dbusmock.BusType.SYSTEM)
    bus.start()
    try:
        yield str(bus.address)
    finally:
        bus.stop()


# --- the account service ---------------------------------------------------------------------


@pytest.fixture
async def account_service(
    provisioned: Provisioned, mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> AsyncIterator[RealRelay]:
    """The real account service in-process (``cloud_relay.app``) on a free loopback port.

    SQLite in the test's directory, the test's Mosquitto, an operator and a household owner
    signed up, and the ``provisioned`` device's factory record imported: ``await
    account_service.claim(device_id)`` gives the token Home Assistant would hand the device.
    Its wall clock is a :class:`~tests.plugins.clock.FakeClock` (``account_service.clock``).
    For answers the real service never gives (5xx, malformed, slow), use ``fake_relay``.
    """
    directory = tmp_path / "account-service"
    directory.mkdir()
    async with real_relay(directory, mosquitto_broker) as service:
        await service.import_records(provisioned.result.record_file)
        yield service


# --- answers the real account service never gives -------------------------------------------

HEALTH_PATH = "/v1/health"
CONFIRM_PATH = "/v1/claims/confirm"
ZERO_TOUCH_PATH = "/v1/zero-touch/confirm"
CREDENTIAL_PATH = "/v1/device/mqtt-credential"
RELEASE_PATH = "/v1/devices/release-by-device"


def owned(device_id: str) -> dict[str, Any]:
    """The service's "owned" answer, with a broker nobody listens on."""
    return {
        "status": "owned",
        "device_id": device_id,
        "household_id": "hh_test",
        "mqtt": {
            "host": "127.0.0.1",
            "port": 1883,
            "tls": False,
            "username": f"dev-{device_id}",
            "password": "secret-password",
        },
    }


def health(*, delay: float = 0.0) -> Answer:
    """The service's health answer with its clock (``delay``: a slow service)."""
    return Answer(200, {"status": "ok", "time": int(time.time())}, delay=delay)


def _owned_answer(key: str) -> Callable[[Received], Answer]:
    return lambda request: Answer(200, owned(request.body[key]["device_id"]))


def device_api(service: ScriptedService) -> None:
    """The device API's successful answers as ``service``'s defaults (any token is good)."""
    service.default("GET", HEALTH_PATH, lambda _request: health())
    service.default("POST", CONFIRM_PATH, _owned_answer("confirmation"))
    service.default("POST", ZERO_TOUCH_PATH, _owned_answer("confirmation"))
    service.default(
        "POST",
        CREDENTIAL_PATH,
        lambda request: Answer(
            200, {"status": "unowned", "device_id": request.body["request"]["device_id"]}
        ),
    )
    service.default("POST", RELEASE_PATH, Answer(200, {"status": "released"}))


def confirmations(service: ScriptedService) -> list[dict[str, Any]]:
    """The signed claim confirmations the device posted."""
    return [request.body["confirmation"] for request in service.received("POST", CONFIRM_PATH)]


@pytest.fixture
def scripted_service(scripted_service: ScriptedService) -> ScriptedService:
    """tests/plugins/scripted_service.py's fault injector, answering the device API by default.

    A device test scripts only what it breaks (``scripted_service.answer(...)``) and reads
    what the device sent (``scripted_service.received(...)``, :func:`confirmations`).
    """
    device_api(scripted_service)
    return scripted_service


# --- the agent ----------------------------------------------------------------------------------


@dataclass
class RunningAgent:
    agent: Agent
    backend: SimulatedBackend
    provisioned: Provisioned
    http: aiohttp.ClientSession
    hardware: Hardware

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.agent.lan_ports()[0]}"

    def client(self) -> LanClient:
        return LanClient(self.url, self.http)

    async def connected_client(
        self, *, manual: bool = False, owner_secret: bytes | None = None
    ) -> LanClient:
        client = self.client()
        if owner_secret is not None:
            session = self.provisioned.owner_client(owner_secret)
        elif manual:
            session = self.provisioned.manual_client()
        else:
            session = self.provisioned.qr_client()
        reply = await client.handshake(session)
        assert reply.status == 204, (reply.status, reply.error)
        return client


AgentStarter: TypeAlias = Callable[..., contextlib.AbstractAsyncContextManager[RunningAgent]]


def lingering_tasks() -> set[asyncio.Task[Any]]:
    current = asyncio.current_task()
    return {task for task in asyncio.all_tasks() if task is not current and not task.done()}


def _agent_task(task: asyncio.Task[Any]) -> bool:
    """Whether a task runs device_firmware code (the test's relay and broker run their own)."""
    frames = task.get_stack()
    coroutine = task.get_coro()
    code = getattr(coroutine, "cr_code", None)
    files = [frame.f_code.co_filename for frame in frames]
    if code is not None:
        files.append(code.co_filename)
    return any("/device_firmware/" in name for name in files)


def agent_tasks() -> set[asyncio.Task[Any]]:
    return {task for task in lingering_tasks() if _agent_task(task)}


@pytest.fixture
def start_agent(provisioned: Provisioned) -> AgentStarter:
    """``async with start_agent(scenario=..., **config) as running:`` - the whole agent."""

    @contextlib.asynccontextmanager
    async def start(
        scenario: Scenario | None = None,
        *,
        runtime_factory: RuntimeFactory | None = None,
        wall_clock: Callable[[], int] | None = None,
        clock: Callable[[], float] | None = None,
        zeroconf: bool = False,
        ble_bus_address: str | None = None,
        button_line_factory: Callable[[str, int], EdgeLine] | None = None,
        **config: Any,
    ) -> AsyncIterator[RunningAgent]:
        cfg = provisioned.config.with_changes(**config) if config else provisioned.config
        backend = SimulatedBackend(scenario or home_scenario())
        hardware = Hardware()
        extra: dict[str, Any] = {} if wall_clock is None else {"wall_clock": wall_clock}
        if clock is not None:
            extra["clock"] = clock
        agent = Agent(
            cfg,
            backend,
            runtime_factory=runtime_factory,
            hardware=hardware,
            advertise=zeroconf,
            ble_bus_address=ble_bus_address,
            button_line_factory=button_line_factory,
            **extra,
        )
        task = asyncio.create_task(agent.run())
        ready = asyncio.create_task(agent.ready())
        done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            ready.cancel()
            await task  # raises the start-up error
        async with aiohttp.ClientSession() as http:
            try:
                yield RunningAgent(agent, backend, provisioned, http, hardware)
            finally:
                agent.stop()
                await asyncio.wait_for(task, 30)
        # Connections to the test's other servers close a few loop turns later.
        for _ in range(200):
            if not agent_tasks():
                break
            await asyncio.sleep(0.01)
        assert not agent_tasks(), agent_tasks()

    return start


def agent_command(provisioned: Provisioned, *args: str, config: Path | None = None) -> list[str]:
    """``python -m device_firmware [--config config] --data-dir <provisioned's> args``."""
    settings = ["--config", str(config)] if config is not None else []
    data_dir = ["--data-dir", str(provisioned.config.data_dir)]
    return [sys.executable, "-m", "device_firmware", *settings, *data_dir, *args]


def simulated_run(scenario: Path, *extra: str) -> list[str]:
    """``run`` on the simulated network ``scenario``, HTTP on a free loopback port, without
    zeroconf, hotspot or MQTT (and with ``extra``)."""
    listen = ["--listen", "127.0.0.1", "--port", "0"]
    quiet = ["--no-advertise", "--no-hotspot", "--no-mqtt", "--allow-insecure-http"]
    return ["run", "--simulate-network", str(scenario), *listen, *quiet, *extra]


# --- a unit's hardware, for the factory self-test -----------------------------------------


@dataclass
class UnitHardware:
    """NetworkManager and bluetoothd mocks on the private system bus, and a fake board."""

    address: str
    sysfs_root: Path
    mocks: list[dbusmock.SpawnedMock]

    def spawn(self, template: str) -> Any:
        """Start a python-dbusmock template on the bus; its main object (dbus-python)."""
        mock = dbusmock.SpawnedMock.spawn_with_template(
            template, {}, dbusmock.BusType.SYSTEM, stdout=subprocess.DEVNULL
        )
        self.mocks.append(mock)
        return mock.obj

    def connection(self) -> Any:
        """A dbus-python connection to the bus (for the mocks' own methods)."""
        return dbus.bus.BusConnection(self.address)

    def network_manager(self, *, wifi_state: int | None = 30) -> Any:
        """NetworkManager with wlan0 in ``wifi_state`` (None: an Ethernet device only)."""
        nm = self.spawn("networkmanager")
        if wifi_state is None:
            nm.AddEthernetDevice("eth0dev", "eth0", 30, dbus_interface=dbusmock.MOCK_IFACE)
        else:
            nm.AddWiFiDevice("wlan0dev", "wlan0", wifi_state, dbus_interface=dbusmock.MOCK_IFACE)
        return nm

    def bluez(self, *, powered: bool = True) -> Any:
        """bluetoothd with an LE adapter hci0 (GATT and advertising managers)."""
        bluez = self.spawn(str(Path(__file__).parent / "ble" / "bluez_gatt_template.py"))
        bluez.AddGattAdapter("hci0", "unit", dbus_interface="org.bluez.Mock")
        if not powered:
            adapter = self.connection().get_object("org.bluez", "/org/bluez/hci0")
            adapter.UpdateProperties(
                "org.bluez.Adapter1", {"Powered": False}, dbus_interface=dbusmock.MOCK_IFACE
            )
        return bluez

    def provision(
        self, tmp_path: Path, access: HardwareAccess | None = None, **config: Any
    ) -> tuple[FactoryResult, dict[str, Any]]:
        """factory-provision --self-test on this hardware; the result and the record line."""
        cfg = DeviceConfig(data_dir=tmp_path / "data", **config)
        result = factory_provision(
            cfg,
            model="plug-1",
            output_dir=tmp_path / "out",
            verifier_log2_n=14,
            self_test=True,
            hardware=access or HardwareAccess(sysfs_root=self.sysfs_root),
        )
        return result, json.loads(result.record_file.read_text().splitlines()[0])

    def status_led(self, name: str = "ACT") -> Path:
        """A sysfs LED as a Pi has it (``mmc0`` trigger), in files."""
        directory = self.sysfs_root / "sys/class/leds" / name
        directory.mkdir(parents=True)
        (directory / "trigger").write_text("none [mmc0] timer heartbeat\n")
        (directory / "brightness").write_text("0\n")
        (directory / "max_brightness").write_text("1\n")
        return directory


@pytest.fixture
def unit_hardware(system_bus: str, tmp_path: Path) -> Iterator[UnitHardware]:
    """A unit on the factory line: start the parts a test needs; stopped by pid afterwards."""
    hardware = UnitHardware(system_bus, tmp_path / "board", [])
    hardware.sysfs_root.mkdir()
    try:
        yield hardware
    finally:
        for mock in hardware.mocks:
            mock.terminate()
