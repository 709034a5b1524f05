"""Fixtures for the device agent's tests: a provisioned device in a temporary directory, a
simulated network, a fake account service for error paths, and the running agent on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import aiohttp
import pytest
from aiohttp import web
from iob_protocol.payload import ManualCode, QrPayload
from iob_protocol.session import ClientSession

from device_firmware.agent import Agent
from device_firmware.capabilities.gpio import EdgeLine
from device_firmware.config import DeviceConfig
from device_firmware.factory import FactoryResult, ProvisionedDevice, factory_provision
from device_firmware.hardware import Hardware
from device_firmware.network.simulated import Scenario, SimulatedBackend, SimulatedNetwork
from device_firmware.supervision import RuntimeFactory

from .lan_client import LanClient

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


# --- a fake account service for error paths ---------------------------------------------------


@dataclass
class FakeRelay:
    """Answers like cloud_relay; tests choose the answer. Only for paths the real one cannot
    produce on demand (5xx, malformed answers, a slow service)."""

    url: str = ""
    time_offset: int = 0
    confirm_status: int = 200
    confirm_body: dict[str, Any] | None = None
    health_delay: float = 0.0
    confirmations: list[dict[str, Any]] = field(default_factory=list)
    #: Signed credential requests (a refused claim is settled with one: "unowned" here).
    credential_requests: list[dict[str, Any]] = field(default_factory=list)
    releases: list[dict[str, Any]] = field(default_factory=list)
    zero_touch: list[dict[str, Any]] = field(default_factory=list)

    def owned(self, device_id: str) -> dict[str, Any]:
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


async def _fake_relay_app(relay: FakeRelay) -> web.Application:
    async def health(_request: web.Request) -> web.Response:
        await asyncio.sleep(relay.health_delay)
        return web.json_response({"status": "ok", "time": int(time.time()) + relay.time_offset})

    async def confirm(request: web.Request) -> web.Response:
        body = await request.json()
        relay.confirmations.append(body["confirmation"])
        answer = relay.confirm_body or relay.owned(body["confirmation"]["device_id"])
        return web.json_response(answer, status=relay.confirm_status)

    async def zero_touch(request: web.Request) -> web.Response:
        body = await request.json()
        relay.zero_touch.append(body["confirmation"])
        answer = relay.confirm_body or relay.owned(body["confirmation"]["device_id"])
        return web.json_response(answer, status=relay.confirm_status)

    async def credential(request: web.Request) -> web.Response:
        body = await request.json()
        relay.credential_requests.append(body["request"])
        return web.json_response({"status": "unowned", "device_id": body["request"]["device_id"]})

    async def release(request: web.Request) -> web.Response:
        relay.releases.append((await request.json())["release"])
        return web.json_response({"status": "released"})

    app = web.Application()
    app.router.add_get("/v1/health", health)
    app.router.add_post("/v1/claims/confirm", confirm)
    app.router.add_post("/v1/zero-touch/confirm", zero_touch)
    app.router.add_post("/v1/devices/release-by-device", release)
    app.router.add_post("/v1/device/mqtt-credential", credential)
    return app


@contextlib.asynccontextmanager
async def serve(app: web.Application, **site: Any) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port); yield its base URL."""
    # handler_cancellation: a handler whose client went away stops (the slow-service test).
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0, **site)
    await tcp.start()
    port = runner.addresses[0][1]
    scheme = "https" if site.get("ssl_context") else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def fake_relay() -> AsyncIterator[FakeRelay]:
    relay = FakeRelay()
    async with serve(await _fake_relay_app(relay)) as url:
        relay.url = url
        yield relay


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
        zeroconf: bool = False,
        ble_bus_address: str | None = None,
        button_line_factory: Callable[[str, int], EdgeLine] | None = None,
        **config: Any,
    ) -> AsyncIterator[RunningAgent]:
        cfg = provisioned.config.with_changes(**config) if config else provisioned.config
        backend = SimulatedBackend(scenario or home_scenario())
        hardware = Hardware()
        extra: dict[str, Any] = {} if wall_clock is None else {"wall_clock": wall_clock}
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
