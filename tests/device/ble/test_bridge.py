"""The loopback BLE bridge driven by the HA-free client Home Assistant's tests use.

In-process bridges serve the device's real provisioning and Improv services (session host,
controller, simulated Wi-Fi); one test runs the whole agent in-process with ``ble_bridge`` and one
the agent subprocess with ``run --ble-bridge 127.0.0.1:0``. The client is
tests/integration/ble_bridge.py, which imports only the standard library.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import struct
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from iob_protocol.ble import (
    RX_UUID,
    SERVICE_UUID,
    STATE_UUID,
    TX_UUID,
    AdvertisedState,
    BlePhase,
    parse_state_value,
)
from iob_protocol.commands import OkResponse, StatusRequest, StatusResult
from iob_protocol.framing import (
    ChunkReassembler,
    FrameType,
    chunk_frame,
    encode_error_frame,
    encode_frame,
)

from device_firmware.ble.bridge import MAX_CLIENTS, MAX_MESSAGE_SIZE, BridgePeripheral
from device_firmware.ble.errors import BleError
from device_firmware.ble.gatt import OWNER_IDLE_SECONDS, payload_size
from device_firmware.ble.improv import IMPROV_SERVICE_DATA_UUID
from device_firmware.config import DeviceConfig
from device_firmware.decide import WindowReason
from device_firmware.errors import ConfigError
from device_firmware.provisioning.session_host import HANDSHAKE_ORIGIN_MISMATCH
from tests.device.commit_helpers import commit
from tests.device.conftest import (
    HOME_PASSPHRASE,
    AgentStarter,
    Provisioned,
    agent_command,
    simulated_run,
)
from tests.device.real_relay import RealRelay
from tests.integration.ble_bridge import (
    BleBridgeClient,
    BridgeAdvertisement,
    BridgeClosedError,
    BridgeRequestError,
    bridge_port_from_log,
    wait_for_bridge_port,
)
from tests.plugins.clock import MONOTONIC_START, FakeClock

from .client import BleClient, error_code
from .conftest import Device

LOOPBACK = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[3]


class FrameLink:
    """Protocol frames over the bridge: chunks written to RX, TX notifications reassembled."""

    def __init__(self, client: BleBridgeClient) -> None:
        self.client = client
        self.frames: asyncio.Queue[bytes] = asyncio.Queue()
        self.chunks: list[bytes] = []
        self._reassembler = ChunkReassembler()

    async def start(self) -> None:
        await self.client.start_notify(TX_UUID, self._chunk)

    def _chunk(self, _uuid: str, data: bytearray) -> None:
        self.chunks.append(bytes(data))
        frame = self._reassembler.feed(bytes(data))
        if frame is not None:
            self.frames.put_nowait(frame)

    async def send(self, frame: bytes) -> None:
        for chunk in chunk_frame(frame, payload_size(self.client.mtu_size)):
            await self.client.write_gatt_char(RX_UUID, chunk, response=False)

    async def receive(self) -> bytes:
        async with asyncio.timeout(10):
            return await self.frames.get()


async def linked(port: int, *, mtu: int = 185) -> FrameLink:
    client = BleBridgeClient(LOOPBACK, port)
    await client.connect(mtu)
    link = FrameLink(client)
    await link.start()
    return link


async def status(client: BleClient) -> StatusResult:
    response = await client.call(StatusRequest(request_id=client.request_id()))
    assert isinstance(response, OkResponse), response
    assert isinstance(response.result, StatusResult)
    return response.result


async def eventually(probe: Callable[[], object], *, what: str) -> None:
    """Wait (bounded, polling) until ``probe()`` is true: the other side runs on its own."""
    try:
        async with asyncio.timeout(10):
            while True:
                if probe():
                    return
                await asyncio.sleep(0.005)
    except TimeoutError:
        pytest.fail(what)


@pytest.fixture
async def bridge(device: Device) -> AsyncIterator[BridgePeripheral]:
    peripheral = BridgePeripheral(
        host=device.host,
        controller=device.controller,
        device=device.provisioned.device,
        bind=(LOOPBACK, 0),
    )
    await peripheral.start()
    await device.show(peripheral)
    try:
        yield peripheral
    finally:
        await peripheral.stop()


# --- GATT over the bridge ---------------------------------------------------------------------


@pytest.mark.parametrize("mtu", [23, 185])
async def test_handshake_and_commands_through_the_bridge(
    bridge: BridgePeripheral, device: Device, mtu: int
) -> None:
    scanner = BleBridgeClient(LOOPBACK, bridge.port)
    advert = await scanner.advertisement()
    assert advert is not None
    state = AdvertisedState.parse(advert.service_data[SERVICE_UUID])
    device_id = device.provisioned.device.identity.device_id
    assert (state.phase, state.window_open, state.short_id) == (
        BlePhase.UNCLAIMED,
        True,
        device_id[:8],
    )
    assert advert.connectable
    assert advert.local_name == f"IoT Onboard {device_id[:8]}"
    await scanner.disconnect()

    link = await linked(bridge.port, mtu=mtu)
    assert link.client.is_connected
    assert link.client.mtu_size == mtu
    client = BleClient(device.qr_client(), link.send, link.receive)
    await client.handshake()
    result = await status(client)
    assert result.state.value == "provisioning"
    # Every notification was cut to this link's MTU, as BlueZ cuts them.
    assert link.chunks
    assert all(len(chunk) <= mtu - 3 for chunk in link.chunks)
    value = parse_state_value(bytes(await link.client.read_gatt_char(STATE_UUID)))
    assert (value.phase, value.window_open) == (BlePhase.UNCLAIMED, True)
    await link.client.disconnect()
    assert not link.client.is_connected


async def test_att_errors_reach_the_client_as_bluez_reports_them(
    bridge: BridgePeripheral,
) -> None:
    client = BleBridgeClient(LOOPBACK, bridge.port)
    with pytest.raises(BridgeClosedError, match="not open"):
        await client.read_gatt_char(STATE_UUID)
    await client.advertisement()
    with pytest.raises(BridgeRequestError) as refused:
        await client.read_gatt_char(STATE_UUID)
    assert refused.value.error == "not_connected"
    await client.connect(23)
    with pytest.raises(BridgeRequestError) as refused:
        await client.connect(23)
    assert refused.value.error == "already_connected"
    with pytest.raises(BridgeRequestError) as refused:
        await client.write_gatt_char(TX_UUID, b"x", response=True)
    assert (refused.value.error, refused.value.att) == ("att", "NotPermitted")
    with pytest.raises(BridgeRequestError) as refused:
        await client.read_gatt_char(RX_UUID)
    assert refused.value.att == "NotPermitted"
    with pytest.raises(BridgeRequestError) as refused:
        await client.start_notify(RX_UUID, lambda _uuid, _data: None)
    assert refused.value.att == "NotPermitted"
    with pytest.raises(BridgeRequestError) as refused:
        await client.read_gatt_char("00000000-0000-0000-0000-000000000000")
    assert refused.value.error == "unknown_characteristic"
    # Longer than an attribute: refused before any handler sees it.
    with pytest.raises(BridgeRequestError) as refused:
        await client.write_gatt_char(RX_UUID, bytes(600), response=True)
    assert refused.value.error == "invalid_value"
    # RX allows write without response, so BlueZ swallows its errors: a garbage chunk is
    # acknowledged, and the protocol's ERROR frame is the answer.
    link = FrameLink(client)
    await link.start()
    await client.write_gatt_char(RX_UUID, b"\x00garbage", response=True)
    assert error_code(await link.receive()) == "chunk_sequence"
    await client.stop_notify(TX_UUID)
    await client.disconnect()


async def test_advertisement_follows_the_window_and_is_pushed(
    bridge: BridgePeripheral, device: Device
) -> None:
    client = BleBridgeClient(LOOPBACK, bridge.port)
    pushed: list[BridgeAdvertisement | None] = []
    client.on_advertisement(pushed.append)
    await client.connect(185)
    states: list[bytes] = []
    await client.start_notify(STATE_UUID, lambda _uuid, data: states.append(bytes(data)))
    assert await client.advertisement() is not None

    device.host.close_window()
    await device.show(bridge)
    await eventually(lambda: pushed and pushed[-1] is None, what="no advertisement pushed")
    assert await client.advertisement() is None
    assert bridge.advertising["iot_onboard"] is False
    await eventually(lambda: states, what="no state notification")
    assert parse_state_value(states[-1]).window_open is False

    # A button press reopens the window: both advertisements come back, Improv authorized.
    device.host.open_window(WindowReason.BUTTON)
    await device.show(bridge)
    await bridge.authorize_improv()
    advert = await client.advertisement()
    assert advert is not None
    assert {SERVICE_UUID, IMPROV_SERVICE_DATA_UUID} <= set(advert.service_data)
    await eventually(lambda: pushed[-1] == advert, what="the reopened window was not pushed")
    assert parse_state_value(states[-1]).window_open is True

    # Unsubscribed: the next change is not notified. The bridge answers requests in order
    # after what it pushed before, so a read's reply proves nothing else is on its way.
    await client.stop_notify(STATE_UUID)
    seen = len(states)
    device.host.close_window()
    await device.show(bridge)
    assert parse_state_value(bytes(await client.read_gatt_char(STATE_UUID))).window_open is False
    assert len(states) == seen
    await client.disconnect()


async def test_disconnect_mid_frame_then_reconnect_and_resume(
    bridge: BridgePeripheral, device: Device
) -> None:
    first = await linked(bridge.port, mtu=23)
    session = device.qr_client()
    hello_chunks = chunk_frame(session.start(), payload_size(23))
    assert len(hello_chunks) > 1
    await first.client.write_gatt_char(RX_UUID, hello_chunks[0], response=False)
    await eventually(lambda: bridge.provisioning.owner is not None, what="no owner")
    await first.client.disconnect()
    # Closing the socket is the link dropping: the service forgets it and its partial frame.
    await eventually(lambda: bridge.provisioning.owner is None, what="link not closed")

    second = await linked(bridge.port, mtu=23)
    client = BleClient(device.qr_client(), second.send, second.receive)
    await client.handshake()
    assert (await status(client)).state.value == "provisioning"
    await second.client.disconnect()

    # The session is not tied to the link: a new connection continues it.
    third = await linked(bridge.port, mtu=185)
    resumed = BleClient(client.session, third.send, third.receive, next_id=client.next_id)
    assert (await status(resumed)).state.value == "provisioning"
    await third.client.disconnect()


def _message(document: object) -> bytes:
    body = json.dumps(document).encode()
    return struct.pack(">I", len(body)) + body


MALFORMED = [
    (struct.pack(">I", MAX_MESSAGE_SIZE + 1), f"1-{MAX_MESSAGE_SIZE} allowed"),
    (struct.pack(">I", 0), "message of 0 bytes"),
    (struct.pack(">I", 3) + b"{x}", "not UTF-8 JSON"),
    (struct.pack(">I", 2) + b"\xff\xfe", "not UTF-8 JSON"),
    (_message([1, 2]), "must be a JSON object"),
    (_message({"op": "read", "uuid": STATE_UUID}), "'id' must be"),
    (_message({"id": True, "op": "advertisement"}), "'id' must be"),
    (_message({"id": 1, "op": "explode"}), "unknown op"),
    (_message({"id": 1, "op": "connect", "mtu": "big"}), "'mtu' must be"),
    (
        _message({"id": 1, "op": "write", "uuid": RX_UUID, "value": "zz", "response": False}),
        "not hex",
    ),
]


async def test_malformed_messages_close_only_that_client(
    bridge: BridgePeripheral, caplog: pytest.LogCaptureFixture
) -> None:
    bystander = await linked(bridge.port)
    for raw, reason in MALFORMED:
        client = BleBridgeClient(LOOPBACK, bridge.port)
        await client.connect(185)  # a link, so its closing is a link drop too
        await client.send_raw(raw)
        closed = await client.wait_closed()
        assert reason in closed, (raw, closed)
        assert not client.is_connected
        with pytest.raises(BridgeClosedError):
            await client.read_gatt_char(STATE_UUID)
        await client.disconnect()
    # A truncated message (the client went away mid-message) is logged the same way.
    client = BleBridgeClient(LOOPBACK, bridge.port)
    await client.send_raw(struct.pack(">I", 50) + b"{")
    await client.disconnect()
    await eventually(
        lambda: any("inside a 50-byte message" in r.getMessage() for r in caplog.records),
        what="truncated message not logged",
    )
    # The bridge, the bystander's link and the services are unharmed.
    assert bystander.client.is_connected
    value = parse_state_value(bytes(await bystander.client.read_gatt_char(STATE_UUID)))
    assert value.phase is BlePhase.UNCLAIMED
    logged = [r.getMessage() for r in caplog.records if "BLE bridge client" in r.getMessage()]
    assert len(logged) >= len(MALFORMED)
    assert any("unknown op 'explode'" in line for line in logged)
    await bystander.client.disconnect()


async def test_clients_are_bounded_and_disconnect_keeps_the_connection(
    bridge: BridgePeripheral,
) -> None:
    clients = [BleBridgeClient(LOOPBACK, bridge.port) for _ in range(MAX_CLIENTS)]
    for client in clients:
        await client.open()
    extra = BleBridgeClient(LOOPBACK, bridge.port)
    with pytest.raises(BridgeClosedError, match=f"more than {MAX_CLIENTS} clients"):
        await extra.open()
    await extra.disconnect()

    # The wire format's own disconnect drops the link and keeps the connection.
    first = clients[0]
    await first.connect(23)
    await first.send_raw(_message({"id": 1000, "op": "disconnect"}))
    with pytest.raises(BridgeRequestError) as refused:
        await first.read_gatt_char(STATE_UUID)
    assert refused.value.error == "not_connected"
    assert await first.advertisement() is not None
    await first.connect(185)
    assert len(await first.read_gatt_char(STATE_UUID)) == 3
    for client in clients:
        await client.disconnect()


async def test_bridge_refuses_non_loopback_addresses(device: Device) -> None:
    for host in ("0.0.0.0", "192.0.2.1", "localhost"):  # noqa: S104 - refused on purpose
        peripheral = BridgePeripheral(
            host=device.host,
            controller=device.controller,
            device=device.provisioned.device,
            bind=(host, 0),
        )
        with pytest.raises(BleError, match=r"loopback|IP address"):
            await peripheral.start()
    for text in ("0.0.0.0:0", "192.0.2.1:8000", "localhost:0", "127.0.0.1", "127.0.0.1:99999"):
        with pytest.raises(ConfigError, match="ble_bridge"):
            DeviceConfig(ble_bridge=text)
    assert DeviceConfig(ble_bridge="[::1]:0").ble_bridge == "[::1]:0"
    with pytest.raises(ConfigError, match="contradict"):
        DeviceConfig(ble=False, ble_bridge="127.0.0.1:0")
    assert bridge_port_from_log("INFO x: BLE bridge listening on [::1]:4242 (no radio)") == 4242
    assert bridge_port_from_log("INFO x: LAN provisioning server on 127.0.0.1 port 80") is None
    assert DeviceConfig.from_mapping({"ble_bridge": "127.0.0.1:0"}).ble_bridge == "127.0.0.1:0"


# --- the agent ------------------------------------------------------------------------------


async def test_agent_serves_the_bridge_and_stops_advertising_after_the_claim(
    start_agent: AgentStarter, account_service: RealRelay
) -> None:
    async with start_agent(ble=True, ble_bridge=f"{LOOPBACK}:0") as running:
        bridge = running.agent.ble
        assert isinstance(bridge, BridgePeripheral)
        dropped: list[BleBridgeClient] = []
        client = BleBridgeClient(LOOPBACK, bridge.port, disconnected_callback=dropped.append)
        pushed: list[BridgeAdvertisement | None] = []
        client.on_advertisement(pushed.append)
        advert = await client.advertisement()
        assert advert is not None
        assert AdvertisedState.parse(advert.service_data[SERVICE_UUID]).window_open
        await client.connect(185)

        claim = await account_service.claim(running.provisioned.device.identity.device_id)
        _lan, result = await commit(running, account_service.url, token=claim["token"])
        assert result.state.value == "committed"

        async def online() -> bool:
            value = parse_state_value(bytes(await client.read_gatt_char(STATE_UUID)))
            return value.phase is BlePhase.ONLINE

        async with asyncio.timeout(10):
            while True:
                if await online():
                    break
                await asyncio.sleep(0.01)
        await eventually(lambda: pushed and pushed[-1] is None, what="still advertising")
        assert await client.advertisement() is None
    # The agent stopped: the bridge closed the connection and the link with it.
    assert "stopping" in await client.wait_closed()
    assert not client.is_connected
    assert dropped == [client]
    await client.disconnect()
    assert dropped == [client]  # reported once


async def test_agent_stops_when_the_bridge_port_is_taken(start_agent: AgentStarter) -> None:
    taken = socket.socket()
    taken.bind((LOOPBACK, 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        with pytest.raises(BleError, match=f"cannot listen on 127.0.0.1 port {port}"):
            async with start_agent(ble=True, ble_bridge=f"{LOOPBACK}:{port}"):
                pytest.fail("the agent started without its bridge")
    finally:
        taken.close()


def _agent_args(provisioned: Provisioned, scenario: Path, *extra: str) -> list[str]:
    return agent_command(provisioned, *simulated_run(scenario, *extra))


def _scenario(tmp_path: Path) -> Path:
    scenario = tmp_path / "scenario.json"
    networks = [{"ssid": "HomeNet", "passphrase": HOME_PASSPHRASE, "strength": 80}]
    scenario.write_text(json.dumps({"networks": networks}), encoding="utf-8")
    return scenario


async def test_agent_subprocess_with_the_cli_flag(provisioned: Provisioned, tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    with log.open("wb") as handle:
        process = await asyncio.create_subprocess_exec(
            *_agent_args(provisioned, _scenario(tmp_path), "--ble-bridge", f"{LOOPBACK}:0"),
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    try:
        port = await asyncio.to_thread(
            wait_for_bridge_port, log, alive=lambda: process.returncode is None
        )
        scanner = BleBridgeClient(LOOPBACK, port)
        advert = await scanner.advertisement()
        await scanner.disconnect()
        assert advert is not None
        assert AdvertisedState.parse(advert.service_data[SERVICE_UUID]).window_open
        link = await linked(port, mtu=247)
        client = BleClient(provisioned.qr_client(), link.send, link.receive)
        await client.handshake()
        assert (await status(client)).state.value == "provisioning"
        await link.client.disconnect()
    finally:
        if process.returncode is None:
            os.kill(process.pid, signal.SIGTERM)
        async with asyncio.timeout(30):
            returncode = await process.wait()
    text = log.read_text(errors="replace")
    assert returncode == 0, text
    assert "Traceback" not in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--ble-bridge", "0.0.0.0:0"), "loopback"),
        (("--ble-bridge", "127.0.0.1:0", "--no-ble"), "contradict"),
    ],
)
async def test_cli_refuses_a_bad_bridge_address(
    provisioned: Provisioned, tmp_path: Path, extra: tuple[str, ...], message: str
) -> None:
    done = await asyncio.to_thread(
        subprocess.run,
        _agent_args(provisioned, _scenario(tmp_path), *extra),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert message in done.stderr


async def test_another_link_cannot_finish_or_abort_a_pending_handshake(
    device: Device, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(MONOTONIC_START)  # a central "goes quiet" without waiting 30 s
    peripheral = BridgePeripheral(
        host=device.host,
        controller=device.controller,
        device=device.provisioned.device,
        bind=(LOOPBACK, 0),
        clock=clock,
    )
    await peripheral.start()
    try:
        budget = device.host.remaining_attempts()
        user = await linked(peripheral.port)
        session = device.qr_client()
        await user.send(session.start())
        finish = session.handle_device_hello(await user.receive())

        # The user's central goes quiet long enough for another central to be served.
        clock.now += OWNER_IDLE_SECONDS + 1
        stranger = await linked(peripheral.port)
        forged = encode_frame(FrameType.CLIENT_FINISH, os.urandom(64))
        caplog.set_level(logging.INFO, "device_firmware.ble.gatt")
        for frame in (forged, encode_error_frame("wrong_setup_code")):
            # BlueZ acknowledges RX writes itself; the refusal is ATT's, so nothing is notified
            # (an ERROR notification would reach the user's central too).
            await stranger.send(frame)
        refusals = [r for r in caplog.records if HANDSHAKE_ORIGIN_MISMATCH in r.getMessage()]
        assert len(refusals) == 2, caplog.text
        assert stranger.frames.empty()
        assert user.frames.empty()
        assert device.host.remaining_attempts() == budget

        clock.now += OWNER_IDLE_SECONDS + 1
        await user.send(finish)
        client = BleClient(session, user.send, user.receive)
        assert (await status(client)).state.value == "provisioning"
        assert device.host.remaining_attempts() == budget
        await stranger.client.disconnect()
        await user.client.disconnect()
    finally:
        await peripheral.stop()
