"""Improv Wi-Fi over BLE (https://www.improv-wifi.com/ble/), for phones and HA's improv_ble.

Improv only gets the device onto Wi-Fi. Its ``send Wi-Fi settings`` RPC runs the same fail-safe
network commit as the captive page and the session's ``set_wifi`` (join as a trial, keep the
old configuration, make it permanent only if it works) through
:meth:`~device_firmware.controller.DeviceController.start_network_commit`. Improv carries no
claim and no proof of the setup code, so the device stays **unclaimed** in provisioning mode;
Home Assistant then finds it on the LAN (zeroconf) and claims it over the secure session with
the code from the label.

Authorization: a Wi-Fi RPC needs the state ``authorized``, reached by a press of the device's
button (the agent calls :meth:`ImprovService.authorize`; it lapses after
:data:`AUTHORIZATION_SECONDS`, as the spec suggests) or while a secure session that proved the
setup code is established and in use: its last frame at most :data:`AUTHORIZATION_SECONDS` ago
(``session_idle``), so a session its client left (it stays established for its idle timeout,
10 minutes) authorizes no longer than a button press would. A claimed device, or one outside
its provisioning window, never authorizes: Improv cannot move an owned device to another
network.

Packets: ``command u8 || length u8 || data || checksum u8`` (sum of the bytes before it, mod
256). A command may arrive in several writes (each with offset 0, or a long write with
offsets); bytes are collected per link until the announced length is complete. Results are one
notification each, so a result is trimmed (scan) to fit the link's MTU; longer ones (device
info at the minimum MTU) can be read with offsets from the RPC result characteristic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Any, Final

from iob_protocol.commands import WifiSecurity, validate_passphrase, validate_ssid
from iob_protocol.errors import InvalidFieldError
from iob_protocol.sources import MonotonicClock, monotonic

from device_firmware.controller import DeviceController
from device_firmware.decide import improv_offered
from device_firmware.errors import DeviceError
from device_firmware.network.backend import WifiCredentials
from device_firmware.state import DeviceStateRecord

from .errors import AttError, BleError, GattError
from .gatt import Access, Characteristic, Flag, GattService, Notify, read_at_offset

_LOGGER = logging.getLogger(__name__)

IMPROV_SERVICE_UUID: Final = "00467768-6228-2272-4663-277478268000"
IMPROV_STATE_UUID: Final = "00467768-6228-2272-4663-277478268001"
IMPROV_ERROR_UUID: Final = "00467768-6228-2272-4663-277478268002"
IMPROV_RPC_COMMAND_UUID: Final = "00467768-6228-2272-4663-277478268003"
IMPROV_RPC_RESULT_UUID: Final = "00467768-6228-2272-4663-277478268004"
IMPROV_CAPABILITIES_UUID: Final = "00467768-6228-2272-4663-277478268005"
#: The 16-bit service-data UUID ``4677`` of Improv 2.0 advertisements.
IMPROV_SERVICE_DATA_UUID: Final = "00004677-0000-1000-8000-00805f9b34fb"
#: How long a button press authorizes (the spec suggests one minute).
AUTHORIZATION_SECONDS: Final = 60.0
FIRMWARE_NAME: Final = "IoT Onboard"

_MAX_DATA: Final = 255
_MAX_PACKET: Final = 2 + _MAX_DATA + 1
_RPC_OVERHEAD: Final = 3
_WIFI_STRINGS: Final = 2
_AUTH_NAMES: Final = {
    WifiSecurity.OPEN: "NO",
    WifiSecurity.WEP: "WEP",
    WifiSecurity.WPA_PERSONAL: "WPA2",
    WifiSecurity.WPA3_PERSONAL: "WPA2",  # the spec knows WEP, WPA, WPA2 and NO
}


class ImprovState(IntEnum):
    """Current State characteristic."""

    AUTHORIZATION_REQUIRED = 0x01
    AUTHORIZED = 0x02
    PROVISIONING = 0x03
    PROVISIONED = 0x04


class ImprovError(IntEnum):
    """Error State characteristic."""

    NONE = 0x00
    INVALID_RPC_PACKET = 0x01
    UNKNOWN_RPC_COMMAND = 0x02
    UNABLE_TO_CONNECT = 0x03
    NOT_AUTHORIZED = 0x04
    UNKNOWN = 0xFF


class ImprovCommand(IntEnum):
    """RPC commands this device answers."""

    WIFI_SETTINGS = 0x01
    IDENTIFY = 0x02
    DEVICE_INFO = 0x03
    SCAN_WIFI = 0x04


class ImprovCapability(IntFlag):
    """Capabilities characteristic bits."""

    IDENTIFY = 0x01
    DEVICE_INFO = 0x02
    SCAN_WIFI = 0x04


CAPABILITIES: Final = (
    ImprovCapability.IDENTIFY | ImprovCapability.DEVICE_INFO | ImprovCapability.SCAN_WIFI
)


class ImprovPacketError(BleError):
    """An RPC packet with a wrong length, checksum or string layout."""


def checksum(data: bytes) -> int:
    """Improv's checksum: the sum of the bytes, mod 256."""
    return sum(data) & 0xFF


def encode_packet(command: int, strings: list[bytes]) -> bytes:
    """``command || length || (len || string)* || checksum`` (commands and results alike)."""
    data = b"".join(bytes([len(item)]) + item for item in strings)
    if len(data) > _MAX_DATA or any(len(item) > _MAX_DATA for item in strings):
        raise ImprovPacketError("Improv data is limited to 255 bytes")
    body = bytes([command, len(data)]) + data
    return body + bytes([checksum(body)])


def parse_packet(packet: bytes) -> tuple[int, list[bytes]]:
    """The command and its strings; :class:`ImprovPacketError` if malformed."""
    if len(packet) < _RPC_OVERHEAD or len(packet) != packet[1] + _RPC_OVERHEAD:
        raise ImprovPacketError("length byte does not match the packet")
    if packet[-1] != checksum(packet[:-1]):
        raise ImprovPacketError("bad checksum")
    strings: list[bytes] = []
    position, end = 2, len(packet) - 1
    while position < end:
        size = packet[position]
        if position + 1 + size > end:
            raise ImprovPacketError("a string runs past the packet")
        strings.append(packet[position + 1 : position + 1 + size])
        position += 1 + size
    return packet[0], strings


def improv_service_data(state: ImprovState) -> bytes:
    """Advertised under ``4677``: state, capabilities, four reserved zero bytes."""
    return bytes([state, CAPABILITIES, 0, 0, 0, 0])


@dataclass(slots=True)
class _Incoming:
    """Bytes of one RPC packet arriving on one link."""

    data: bytearray = field(default_factory=bytearray)
    #: Length of ``data`` when the current write (and its offsets) began.
    base: int = 0


class ImprovService(GattService):
    """The Improv GATT service, backed by the device controller."""

    uuid = IMPROV_SERVICE_UUID

    def __init__(
        self,
        controller: DeviceController,
        *,
        device_name: str,
        hardware_name: str,
        firmware_version: str,
        session_idle: Callable[[], float | None] = lambda: None,
        on_state: Callable[[ImprovState], Awaitable[None]] | None = None,
        clock: MonotonicClock = monotonic,
        authorization_seconds: float = AUTHORIZATION_SECONDS,
    ) -> None:
        """Answer for ``controller``; ``on_state`` hears every state change (advertisement).

        ``session_idle``: seconds since the last frame of an established session that proved
        the setup code (None: there is none); such a session authorizes while that is under
        ``authorization_seconds``.
        """
        super().__init__()
        self._controller = controller
        self._info = [
            FIRMWARE_NAME.encode(),
            firmware_version.encode(),
            hardware_name.encode(),
            device_name.encode(),
        ]
        self._session_idle = session_idle
        self._on_state = on_state
        self._clock = clock
        self._authorization_seconds = authorization_seconds
        self._enabled = False
        self._authorized_until = float("-inf")
        self._expiry: asyncio.TimerHandle | None = None
        self._provisioning = False
        self._provisioned = False
        self._state = ImprovState.AUTHORIZATION_REQUIRED
        self._error = ImprovError.NONE
        self._result = b""
        self._incoming: dict[str, _Incoming] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._command_lock = asyncio.Lock()
        self._characteristics = (
            Characteristic(
                IMPROV_CAPABILITIES_UUID,
                frozenset({Flag.READ}),
                read=lambda access: read_at_offset(bytes([CAPABILITIES]), access),
            ),
            Characteristic(
                IMPROV_STATE_UUID,
                frozenset({Flag.READ, Flag.NOTIFY}),
                read=lambda access: read_at_offset(bytes([self._state]), access),
            ),
            Characteristic(
                IMPROV_ERROR_UUID,
                frozenset({Flag.READ, Flag.NOTIFY}),
                read=lambda access: read_at_offset(bytes([self._error]), access),
            ),
            Characteristic(
                IMPROV_RPC_COMMAND_UUID, frozenset({Flag.WRITE}), write=self._write_command
            ),
            Characteristic(
                IMPROV_RPC_RESULT_UUID,
                frozenset({Flag.READ, Flag.NOTIFY}),
                read=lambda access: read_at_offset(self._result, access),
            ),
        )

    @property
    def characteristics(self) -> tuple[Characteristic, ...]:
        """Capabilities, state, error, RPC command, RPC result."""
        return self._characteristics

    @property
    def state(self) -> ImprovState:
        """The published state."""
        return self._state

    @property
    def error(self) -> ImprovError:
        """The published error."""
        return self._error

    @property
    def enabled(self) -> bool:
        """Whether Improv may put the device on a network now."""
        return self._enabled

    @property
    def advertised(self) -> bool:
        """Whether the Improv advertisement should be on air."""
        return self._enabled or self._provisioning

    async def start(self, notify: Notify) -> None:
        """Attach and publish the current state."""
        await super().start(notify)
        await self._publish()

    async def stop(self) -> None:
        """Detach; pending RPC work is cancelled (a running commit continues in the controller)."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        tasks, self._tasks = self._tasks, set()
        for task in list(tasks):
            task.cancel()
        for task in list(tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._incoming.clear()
        await super().stop()

    # --- device state -----------------------------------------------------------------------

    async def update(self, record: DeviceStateRecord, *, window_open: bool) -> None:
        """Follow the device: Improv is offered while unclaimed, without Wi-Fi, window open."""
        enabled = improv_offered(record, window_open=window_open)
        if enabled and not self._enabled:
            self._provisioned = False  # a factory reset starts a new round
        if not enabled:
            self._authorized_until = float("-inf")
        self._enabled = enabled
        await self._publish()

    async def authorize(self) -> None:
        """The button was pressed: authorize for :data:`AUTHORIZATION_SECONDS`."""
        if not self._enabled:
            _LOGGER.info("Improv: button press ignored (Improv is not offered now)")
            return
        self._authorize()
        await self._publish()

    async def refresh(self) -> None:
        """Re-evaluate the state (a secure session started or ended)."""
        remaining = self._session_remaining()
        if remaining > 0:
            self._schedule_expiry(remaining)
        await self._publish()

    def _session_remaining(self) -> float:
        """Seconds the secure session still authorizes (0: it does not)."""
        idle = self._session_idle()
        return 0.0 if idle is None else max(self._authorization_seconds - idle, 0.0)

    def _authorize(self) -> None:
        self._authorized_until = self._clock() + self._authorization_seconds
        self._schedule_expiry(self._authorization_seconds)

    def _schedule_expiry(self, delay: float) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = asyncio.get_running_loop().call_later(delay, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        # The loop's timers may fire a hair early, and the session may have been used since.
        remaining = max(self._authorized_until - self._clock(), self._session_remaining())
        if remaining > 0:
            self._schedule_expiry(remaining)
            return
        self._spawn(self._publish())

    def _current_state(self) -> ImprovState:
        if self._provisioned:
            return ImprovState.PROVISIONED
        if self._provisioning:
            return ImprovState.PROVISIONING
        if self._enabled and (
            self._clock() < self._authorized_until or self._session_remaining() > 0
        ):
            return ImprovState.AUTHORIZED
        return ImprovState.AUTHORIZATION_REQUIRED

    async def _publish(self) -> None:
        state = self._current_state()
        if state == self._state:
            return
        self._state = state
        _LOGGER.info("Improv state: %s", state.name.lower())
        await self._notify(IMPROV_STATE_UUID, bytes([state]))
        if self._on_state is not None:
            await self._on_state(state)

    async def _set_error(self, error: ImprovError) -> None:
        if error == self._error:
            return
        self._error = error
        await self._notify(IMPROV_ERROR_UUID, bytes([error]))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name="iob-improv")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- RPC --------------------------------------------------------------------------------

    def link_closed(self, link: str) -> None:
        """Forget a half-received packet."""
        self._incoming.pop(link, None)

    def all_links_closed(self) -> None:
        """Forget every half-received packet."""
        self._incoming.clear()

    def _write_command(self, value: bytes, access: Access) -> None:
        incoming = self._incoming.setdefault(access.link, _Incoming())
        if access.offset == 0:
            incoming.base = len(incoming.data)
        elif incoming.base + access.offset != len(incoming.data):
            self._incoming.pop(access.link, None)
            self._spawn(self._set_error(ImprovError.INVALID_RPC_PACKET))
            raise GattError(AttError.INVALID_OFFSET, f"unexpected offset {access.offset}")
        incoming.data += value
        data = incoming.data
        if len(data) < 2 or len(data) < data[1] + _RPC_OVERHEAD:  # noqa: PLR2004
            if len(data) > _MAX_PACKET:
                self._incoming.pop(access.link, None)
                self._spawn(self._set_error(ImprovError.INVALID_RPC_PACKET))
            return
        size = data[1] + _RPC_OVERHEAD
        packet, extra = bytes(data[:size]), bytes(data[size:])
        self._incoming.pop(access.link, None)
        if extra:
            _LOGGER.info("Improv: %d bytes after a packet from %s", len(extra), access.link)
            self._spawn(self._set_error(ImprovError.INVALID_RPC_PACKET))
            return
        self._spawn(self._command(packet, access))

    async def _command(self, packet: bytes, access: Access) -> None:
        async with self._command_lock:
            try:
                command, strings = parse_packet(packet)
            except ImprovPacketError as err:
                _LOGGER.info("Improv: invalid packet from %s: %s", access.link, err)
                await self._set_error(ImprovError.INVALID_RPC_PACKET)
                return
            await self._set_error(ImprovError.NONE)
            if command == ImprovCommand.WIFI_SETTINGS:
                await self._wifi_settings(strings, access)
            elif command == ImprovCommand.IDENTIFY:
                if self._current_state() in {
                    ImprovState.AUTHORIZATION_REQUIRED,
                    ImprovState.AUTHORIZED,
                }:
                    record = self._controller.state
                    self._controller.hardware.identify(record.phase, record.diagnostic)
            elif command == ImprovCommand.DEVICE_INFO:
                await self._send_result(command, self._info)
            elif command == ImprovCommand.SCAN_WIFI:
                await self._scan(access)
            else:
                await self._set_error(ImprovError.UNKNOWN_RPC_COMMAND)

    async def _send_result(self, command: int, strings: list[bytes]) -> None:
        self._result = encode_packet(command, strings)
        await self._notify(IMPROV_RPC_RESULT_UUID, self._result)

    async def _scan(self, access: Access) -> None:
        try:
            result = await self._controller.scan()
        except DeviceError as err:
            _LOGGER.info("Improv: scan failed: %s", err)
            await self._set_error(ImprovError.UNKNOWN)
            return
        room = min(_MAX_DATA, access.payload_size - _RPC_OVERHEAD)
        strings: list[bytes] = []
        used = 0
        for network in result.networks:
            auth = _AUTH_NAMES.get(network.security)
            if auth is None:
                continue  # enterprise networks need more than a passphrase
            entry = [network.ssid, str(network.rssi).encode(), auth.encode()]
            size = sum(1 + len(item) for item in entry)
            if used + size > room:
                break
            strings += entry
            used += size
        await self._send_result(ImprovCommand.SCAN_WIFI, strings)

    async def _wifi_settings(self, strings: list[bytes], access: Access) -> None:
        if self._provisioning:
            # A client whose link dropped sends its command again (py-improv-ble-client does,
            # as HA's improv_ble uses it): the join already runs, and its outcome (the result or
            # the error) is notified to every subscriber. "Not authorized" would be false.
            _LOGGER.info(
                "Improv: Wi-Fi settings from %s while joining: the outcome follows", access.link
            )
            return
        if self._current_state() is not ImprovState.AUTHORIZED:
            _LOGGER.info("Improv: Wi-Fi settings from %s refused (not authorized)", access.link)
            await self._set_error(ImprovError.NOT_AUTHORIZED)
            return
        if len(strings) != _WIFI_STRINGS:
            await self._set_error(ImprovError.INVALID_RPC_PACKET)
            return
        try:
            ssid = validate_ssid(strings[0])
        except InvalidFieldError as err:
            _LOGGER.info("Improv: %s", err)
            await self._set_error(ImprovError.INVALID_RPC_PACKET)
            return
        try:
            passphrase = validate_passphrase(strings[1].decode("ascii") or None)
        except (InvalidFieldError, UnicodeDecodeError) as err:
            # The network would refuse it: "unable to connect" is what the user can act on.
            # A decode error quotes the offending byte: never log any part of a passphrase.
            reason = "not ASCII" if isinstance(err, UnicodeDecodeError) else str(err)
            _LOGGER.info("Improv: passphrase refused: %s", reason)
            await self._set_error(ImprovError.UNABLE_TO_CONNECT)
            return
        wifi = WifiCredentials(ssid=ssid, passphrase=passphrase)
        self._provisioning = True
        await self._publish()
        self._spawn(self._provision(wifi))

    async def _provision(self, wifi: WifiCredentials) -> None:
        joined = False
        try:
            await self._controller.start_network_commit(wifi)
            record = await self._controller.wait_for_commit()
            joined = record.diagnostic is None and record.wifi_ssid == wifi.ssid
            if not joined:
                _LOGGER.info("Improv: joining failed: %s", record.diagnostic)
        except DeviceError as err:
            _LOGGER.info("Improv: network commit refused: %s", err)
        finally:
            self._provisioning = False
        if joined:
            self._provisioned = True
            await self._publish()
            await self._send_result(ImprovCommand.WIFI_SETTINGS, [])
            return
        if self._enabled:
            self._authorize()  # the spec: authorization starts over after a failure
        await self._publish()
        await self._set_error(ImprovError.UNABLE_TO_CONNECT)
