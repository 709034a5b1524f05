"""A scripted IoT Onboard device behind a fake BleakClient, for the Bluetooth config-flow tests.

The device half is the shared protocol package's real :class:`DeviceSession` (handshake,
encryption, the claimed device's owner-only rule) with commands answered from a script; the
radio half is shaped like bleak's client (``write_gatt_char``, ``start_notify``,
``read_gatt_char``, ``disconnect``, ``mtu_size``) and follows the device's GATT rules from
docs/ble.md: chunks of at most MTU - 3 bytes, ERROR frames for refusals and bad chunks, silence
after a good CLIENT_FINISH, a partial frame dropped on disconnect. The real device code runs
against Home Assistant in test_ble_onboarding_e2e.py (through the device's BLE bridge).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakCharacteristicNotFoundError, BleakError
from habluetooth import BluetoothServiceInfoBleak

from custom_components.iot_onboard.iob_protocol import (
    AckResult,
    BlePhase,
    BleStatus,
    ChunkReassembler,
    CommandResult,
    CommandType,
    CommitResult,
    DeviceIdentity,
    DeviceSession,
    DeviceState,
    DiagnosticCode,
    ErrorResponse,
    FrameType,
    InfoResult,
    OkResponse,
    OwnerSecret,
    ProtocolError,
    Request,
    Response,
    ScanWifiResult,
    SetClaimRequest,
    SetupCode,
    SetWifiRequest,
    StatusResult,
    WifiNetwork,
    WifiSecurity,
    chunk_frame,
    decode_request,
    encode_error_frame,
    encode_response,
)
from custom_components.iot_onboard.iob_protocol.ble import (
    FEATURES_UUID,
    RX_UUID,
    SERVICE_UUID,
    STATE_UUID,
    TX_UUID,
)

ADDRESS: Final = "AA:BB:CC:DD:EE:01"
NETWORKS: Final = (
    WifiNetwork(ssid=b"HomeNet", rssi=-40, security=WifiSecurity.WPA_PERSONAL),
    WifiNetwork(ssid=b"Cafe", rssi=-70, security=WifiSecurity.OPEN),
)

#: bleak 0.22 (HA 2025.4) requires ``rssi``; bleak 1+ deprecates it.
_BLE_DEVICE_TAKES_RSSI: Final = "rssi" in inspect.signature(BLEDevice.__init__).parameters


def ble_device(address: str, name: str) -> BLEDevice:
    """A ``BLEDevice`` on every supported bleak version."""
    extra: dict[str, Any] = {"rssi": -60} if _BLE_DEVICE_TAKES_RSSI else {}
    return BLEDevice(address, name, {}, **extra)


type NotifyCallback = Callable[[Any, bytearray], None]
type DisconnectedCallback = Callable[[Any], None]


@dataclass
class FakeGattDevice:
    """The device's provisioning service in small; knobs make it fail on purpose."""

    identity: DeviceIdentity
    setup: SetupCode
    owner: OwnerSecret | None = None
    model: str = "pi-test"
    mtu: int = 23
    #: The features characteristic's value (None: a device from before it, no characteristic).
    features: bytes | None = b"wps"
    #: Reading the features characteristic fails this many more times (a flaky link).
    features_failures: int = 0
    features_reads: int = 0
    #: The diagnostic the next commit ends with (None: it joins the network).
    commit_failure: DiagnosticCode | None = None
    #: Drop the link after this many notifications of the next reply (then clear it).
    drop_mid_reply: int | None = None
    #: Drop the link after this many writes of the next request (then clear it).
    drop_mid_request: int | None = None
    #: The dropped write itself reports success (the link fails before the next chunk).
    drop_quietly: bool = False
    #: Keep ``drop_mid_request`` armed for every request (a link that never holds).
    drop_repeatedly: bool = False
    #: establish_connection fails while False (out of range, no proxy slot).
    reachable: bool = True
    #: After answering COMMIT it leaves Bluetooth (joined the new Wi-Fi, window closed).
    leave_after_commit: bool = False
    #: Answers every frame instead of the scripted device (a misbehaving one), while set.
    script: Callable[[bytes], bytes | None] | None = None
    connections: int = 0
    disconnects: int = 0
    commands: list[CommandType] = field(default_factory=list)
    wifi: bytes | None = None
    wps: bool = False
    claim: SetClaimRequest | None = None
    _handshake: DeviceSession | None = None
    _session: DeviceSession | None = None
    _state: DeviceState = DeviceState.PROVISIONING
    _diagnostic: DiagnosticCode | None = None

    @property
    def device_id(self) -> str:
        return self.identity.device_id

    @property
    def claimed(self) -> bool:
        return self.owner is not None

    def status(self, *, window_open: bool = True) -> BleStatus:
        phase = BlePhase.ONLINE if self.claimed else BlePhase.UNCLAIMED
        return BleStatus(phase=phase, window_open=window_open, diagnostic=self._diagnostic)

    def service_info(self, *, window_open: bool = True) -> BluetoothServiceInfoBleak:
        """The advertisement Home Assistant's scanner would report."""
        data = {SERVICE_UUID: self.status(window_open=window_open).service_data(self.device_id)}
        name = f"IoT Onboard {self.device_id[:8]}"
        return BluetoothServiceInfoBleak(
            name=name,
            address=ADDRESS,
            rssi=-60,
            manufacturer_data={},
            service_data=data,
            service_uuids=[],
            source="local",
            device=ble_device(ADDRESS, name),
            advertisement=AdvertisementData(
                local_name=name,
                manufacturer_data={},
                service_data=data,
                service_uuids=[],
                tx_power=None,
                rssi=-60,
                platform_data=(),
            ),
            connectable=True,
            time=time.monotonic(),
            tx_power=None,
        )

    # --- frames ---------------------------------------------------------------------------

    def link_closed(self) -> None:
        """A disconnect ends an unfinished handshake (docs/ble.md, "Disconnect")."""
        self.disconnects += 1
        self._handshake = None

    def handle(self, frame: bytes) -> bytes | None:
        """One whole frame in; the reply frame, or None (a good CLIENT_FINISH, an ERROR)."""
        if self.script is not None:
            return self.script(frame)
        kind = frame[3]
        if kind == FrameType.CLIENT_HELLO:
            return self._hello(frame)
        if kind == FrameType.CLIENT_FINISH:
            return self._finish(frame)
        if kind == FrameType.ERROR:
            self._handshake = None  # the client gave up (it found the code wrong)
            return None
        return self._data(frame)

    def _hello(self, frame: bytes) -> bytes:
        session = (
            DeviceSession.for_owner(self.identity, owner_secret=self.owner.secret)
            if self.owner is not None
            else DeviceSession(self.identity, self.setup)
        )
        try:
            reply = session.handle_client_hello(frame)
        except ProtocolError as err:
            return encode_error_frame(err.code)
        self._handshake = session
        return reply

    def _finish(self, frame: bytes) -> bytes | None:
        session, self._handshake = self._handshake, None
        if session is None:
            return encode_error_frame("unexpected_message")
        try:
            session.handle_client_finish(frame)
        except ProtocolError as err:
            return encode_error_frame(err.code)
        self._session = session
        return None  # established: the device sends nothing (docs/ble.md)

    def _data(self, frame: bytes) -> bytes:
        if self._session is None:
            return encode_error_frame("no_session")
        try:
            request = decode_request(self._session.open(frame), allow_insecure_http=True)
        except ProtocolError as err:
            self._session = None
            return encode_error_frame(err.code)
        self.commands.append(request.command)
        response: Response
        try:
            result = self._result(request)
        except _RefusedError as err:
            response = ErrorResponse(
                request_id=request.request_id, command=request.command, error=str(err)
            )
        else:
            response = OkResponse(
                request_id=request.request_id, command=request.command, result=result
            )
        return self._session.seal(encode_response(response))

    def _result(self, request: Request) -> CommandResult:
        """The scripted device: what a real one would answer, minus the real network."""
        if isinstance(request, SetWifiRequest):
            self.wifi = request.ssid
            self.wps = request.wps
        elif isinstance(request, SetClaimRequest):
            if self.claimed:
                raise _RefusedError("already_claimed")
            self.claim = request
        elif request.command is CommandType.COMMIT:
            self.reachable = not self.leave_after_commit
            failed = self.commit_failure is not None
            self._state = DeviceState.PROVISIONING if failed else DeviceState.COMMITTED
            self._diagnostic = self.commit_failure
            return CommitResult(timeout_seconds=120)
        elif request.command is CommandType.STATUS:
            return StatusResult(state=self._state, diagnostic=self._diagnostic)
        elif request.command is CommandType.SCAN_WIFI:
            return ScanWifiResult(networks=NETWORKS)
        elif request.command is CommandType.INFO:
            return InfoResult(
                device_id=self.device_id,
                model=self.model,
                firmware_version="1.0",
                protocol_version=1,
                claimed=self.claimed,
            )
        else:
            raise _RefusedError("unsupported")
        return AckResult()


class _RefusedError(Exception):
    """A command the scripted device refuses (its error code)."""


class FakeBleakClient:
    """One connection to a :class:`FakeGattDevice`, shaped like ``BleakClientWithServiceCache``."""

    def __init__(self, device: FakeGattDevice, disconnected: DisconnectedCallback | None) -> None:
        self.device = device
        self.mtu_size = device.mtu
        self.is_connected = True
        self._disconnected = disconnected
        self._reassembler = ChunkReassembler()
        self._notify: dict[str, NotifyCallback] = {}
        self._writes = 0

    async def start_notify(self, uuid: str, callback: NotifyCallback, **_: Any) -> None:
        self._require()
        self._notify[uuid] = callback

    async def read_gatt_char(self, uuid: str, **_: Any) -> bytearray:
        self._require()
        if uuid == FEATURES_UUID:
            self.device.features_reads += 1
            if self.device.features is None:
                raise BleakCharacteristicNotFoundError(uuid)
            if self.device.features_failures:
                self.device.features_failures -= 1
                raise BleakError("read failed: the link is busy")
            return bytearray(self.device.features)
        assert uuid == STATE_UUID
        return bytearray(self.device.status().state_value())

    async def write_gatt_char(self, uuid: str, data: bytes, response: bool = False) -> None:
        self._require()
        assert uuid == RX_UUID
        assert response, "the integration writes with response (reliable over proxies)"
        assert len(data) <= self.mtu_size - 3, "a chunk larger than the link allows"
        self._writes += 1
        if self.device.drop_mid_request is not None and self._writes > self.device.drop_mid_request:
            if not self.device.drop_repeatedly:
                self.device.drop_mid_request = None
            self.drop()
            if self.device.drop_quietly:
                return
            raise BleakError("Not connected")
        try:
            frame = self._reassembler.feed(bytes(data))
        except ProtocolError as err:
            self._send(encode_error_frame(err.code))
            return
        if frame is not None:
            self._writes = 0
            reply = self.device.handle(frame)
            if reply is not None:
                self._send(reply)
            if not self.device.reachable:
                self.drop()

    def _send(self, frame: bytes) -> None:
        callback = self._notify.get(TX_UUID)
        assert callback is not None, "the integration subscribes to TX before writing"
        for number, chunk in enumerate(chunk_frame(frame, self.mtu_size - 3)):
            if self.device.drop_mid_reply is not None and number >= self.device.drop_mid_reply:
                self.device.drop_mid_reply = None
                self.drop()
                return
            callback(None, bytearray(chunk))

    async def disconnect(self) -> bool:
        if self.is_connected:
            self.is_connected = False
            self.device.link_closed()
            if self._disconnected is not None:
                self._disconnected(self)
        return True

    def drop(self) -> None:
        """The radio link goes away (out of range, the device restarted)."""
        if self.is_connected:
            self.is_connected = False
            self.device.link_closed()
            if self._disconnected is not None:
                self._disconnected(self)

    def _require(self) -> None:
        if not self.is_connected:
            raise BleakError("Not connected")


@dataclass
class FakeConnector:
    """Stands in for bleak-retry-connector's ``establish_connection``."""

    device: FakeGattDevice
    devices_seen: list[BLEDevice] = field(default_factory=list)
    clients: list[FakeBleakClient] = field(default_factory=list)
    #: Called when a connection is refused (the test's hook into "meanwhile").
    on_unreachable: Callable[[], None] | None = None

    async def __call__(
        self,
        client_class: type[Any],
        device: BLEDevice,
        name: str,
        disconnected_callback: DisconnectedCallback | None = None,
        **_: Any,
    ) -> FakeBleakClient:
        del client_class, name
        self.devices_seen.append(device)
        if not self.device.reachable:
            if self.on_unreachable is not None:
                self.on_unreachable()
            raise BleakError(f"{device.address}: device not found")
        self.device.connections += 1
        client = FakeBleakClient(self.device, disconnected_callback)
        self.clients.append(client)
        return client

    @property
    def all_closed(self) -> bool:
        return all(not client.is_connected for client in self.clients)
