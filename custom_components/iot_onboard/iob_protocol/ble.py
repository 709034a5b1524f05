"""What a BLE central sees of an IoT Onboard device, and protocol frames over its GATT link.

The whole BLE contract between the device (``device_firmware/ble``) and Home Assistant (its
manifest matcher and its GATT client): UUIDs, service data, the state characteristic, and
:class:`FrameChannel`, which carries protocol frames as chunks over RX/TX. No BLE library is
imported: a transport hands the channel a write function and feeds it notifications, so the
same code runs over bleak (Home Assistant) and the device's in-process loopback (tests).
docs/ble.md describes the same bytes.

Service data (advertised under :data:`SERVICE_UUID`, 7 bytes)::

    version u8 = 1 || state u8 || short id (5 bytes)

State characteristic (:data:`STATE_UUID`, read and notify, 3 bytes)::

    version u8 = 1 || state u8 || diagnostic u8

Features characteristic (:data:`FEATURES_UUID`, read; absent on older devices): the protocol
features the device supports over this link, as ASCII names separated by commas, the names of
the LAN's ``X-IOB-Features`` header (:func:`parse_features`). Read once per connection, before
any command that depends on one; a device without the characteristic names none.

``state``: bits 0-2 the phase (0 unclaimed, 1 provisioning, 2 committing, 3 online), bit 3 set
while the provisioning window accepts handshakes, bit 4 set while the last attempt's diagnostic
is pending, bits 5-7 zero. ``diagnostic``: 0 for none, otherwise the 1-based position of the
code in :data:`DIAGNOSTIC_ORDER` (append-only), or 255 for a code without a number yet (the
``status`` command names it). The short id is the first 8 characters of the
device id (Crockford base32) as their 5 bytes: enough to tell the devices of one household
apart and to match a scanned QR code before connecting; it proves nothing (the handshake does).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Final, Self, TypeAlias

from .canonical import base32_decode, base32_encode
from .diagnostics import DiagnosticCode
from .errors import FramingError, ProtocolError
from .framing import ChunkReassembler, chunk_frame

#: The IoT Onboard provisioning service (a random 128-bit UUID owned by this project).
SERVICE_UUID: Final = "ffea8e11-9877-4ae7-8fbb-4d229f30fe00"
#: Client → device protocol frames in chunks (write, write without response).
RX_UUID: Final = "ffea8e11-9877-4ae7-8fbb-4d229f30fe01"
#: Device → client protocol frames in chunks (notify).
TX_UUID: Final = "ffea8e11-9877-4ae7-8fbb-4d229f30fe02"
#: Device state and last diagnostic (read, notify).
STATE_UUID: Final = "ffea8e11-9877-4ae7-8fbb-4d229f30fe03"
#: The protocol features the device supports over Bluetooth (read; see the module docs).
FEATURES_UUID: Final = "ffea8e11-9877-4ae7-8fbb-4d229f30fe04"
#: Longest features value a central reads (a few short names).
MAX_FEATURES_SIZE: Final = 128

FORMAT_VERSION: Final = 1
SHORT_ID_CHARS: Final = 8
SHORT_ID_BYTES: Final = 5
SERVICE_DATA_SIZE: Final = 2 + SHORT_ID_BYTES
STATE_VALUE_SIZE: Final = 3


def encode_features(features: tuple[str, ...]) -> bytes:
    """The features characteristic's value for ``features`` (names without commas)."""
    value = ",".join(features).encode("ascii")
    if len(value) > MAX_FEATURES_SIZE or any("," in name or not name for name in features):
        raise ValueError(f"features {features!r} do not fit the characteristic")
    return value


def parse_features(value: bytes) -> frozenset[str]:
    """The feature names in a features value; anything unreadable names nothing."""
    try:
        text = value[:MAX_FEATURES_SIZE].decode("ascii")
    except UnicodeDecodeError:
        return frozenset()
    return frozenset(name.strip() for name in text.split(",") if name.strip().isprintable()) - {""}


#: The smallest ATT MTU (every link has at least this), and the 3 bytes ATT puts in front.
MIN_ATT_MTU: Final = 23
ATT_HEADER_SIZE: Final = 3
#: The largest attribute value (Core spec Vol 3 Part F 3.2.9); BlueZ never sends more.
MAX_ATTRIBUTE_SIZE: Final = 512
#: Seconds a channel waits for the device's reply frame by default.
DEFAULT_REPLY_TIMEOUT: Final = 15.0
#: Complete frames a channel keeps while nobody waits for them (more is a misbehaving device).
MAX_PENDING_FRAMES: Final = 8

STATE_PHASE_MASK: Final = 0x07
STATE_WINDOW_OPEN: Final = 0x08
STATE_FAILED: Final = 0x10
_STATE_RESERVED: Final = 0xE0

#: Wire numbering of diagnostic codes (1-based; new codes are only ever appended).
DIAGNOSTIC_ORDER: Final[tuple[DiagnosticCode, ...]] = (
    DiagnosticCode.WIFI_AUTH_FAILED,
    DiagnosticCode.WIFI_AP_NOT_FOUND,
    DiagnosticCode.DHCP_TIMEOUT,
    DiagnosticCode.DNS_FAILED,
    DiagnosticCode.NO_INTERNET,
    DiagnosticCode.RELAY_UNREACHABLE,
    DiagnosticCode.TLS_FAILED,
    DiagnosticCode.CLOCK_SKEW,
    DiagnosticCode.CLAIM_REJECTED,
    DiagnosticCode.CLAIM_EXPIRED,
    DiagnosticCode.BROKER_AUTH_FAILED,
    DiagnosticCode.TIMEOUT,
    DiagnosticCode.BROKER_UNREACHABLE,
    DiagnosticCode.CAPTIVE_PORTAL,
    DiagnosticCode.WPS_FAILED,
)
#: A failure whose code has no number here yet (a newer device): ask ``status`` for it.
DIAGNOSTIC_OTHER: Final = 0xFF


class WireFormatError(ProtocolError):
    """Bytes that are not a valid service-data or state value (a central's parser raises it)."""

    code = "ble_wire_format"


class BlePhase(IntEnum):
    """The onboarding phase as advertised (the device's ``Phase``, numbered)."""

    UNCLAIMED = 0
    PROVISIONING = 1
    COMMITTING = 2
    ONLINE = 3


def short_id(device_id: str) -> bytes:
    """The 5 advertised bytes naming ``device_id`` (its first 8 base32 characters)."""
    return base32_decode(device_id[:SHORT_ID_CHARS])


def short_id_text(raw: bytes) -> str:
    """The 8 characters a device id starts with, from advertised bytes (HA's side)."""
    return base32_encode(raw)


@dataclass(frozen=True, slots=True, kw_only=True)
class BleStatus:
    """What the advertisement and the state characteristic say about the device."""

    phase: BlePhase
    window_open: bool
    diagnostic: DiagnosticCode | None = None

    @property
    def state_byte(self) -> int:
        """Phase and flags in one byte."""
        value = int(self.phase)
        if self.window_open:
            value |= STATE_WINDOW_OPEN
        if self.diagnostic is not None:
            value |= STATE_FAILED
        return value

    def state_value(self) -> bytes:
        """The state characteristic's value."""
        return bytes([FORMAT_VERSION, self.state_byte, diagnostic_number(self.diagnostic)])

    def service_data(self, device_id: str) -> bytes:
        """The advertisement's service data."""
        return bytes([FORMAT_VERSION, self.state_byte]) + short_id(device_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class AdvertisedState:
    """Advertised service data, parsed (what a central knows before connecting)."""

    phase: BlePhase
    window_open: bool
    #: The last attempt failed; the state characteristic says with which diagnostic.
    failed: bool
    #: The first 8 characters of the device id.
    short_id: str

    @classmethod
    def parse(cls, data: bytes) -> Self:
        """Parse service data; refuses other versions and reserved bits."""
        if len(data) < SERVICE_DATA_SIZE or data[0] != FORMAT_VERSION:
            raise WireFormatError(f"not version-{FORMAT_VERSION} service data: {data.hex()}")
        phase, window_open = _parse_state_byte(data[1])
        return cls(
            phase=phase,
            window_open=window_open,
            failed=bool(data[1] & STATE_FAILED),
            short_id=short_id_text(data[2:SERVICE_DATA_SIZE]),
        )


def diagnostic_number(code: DiagnosticCode | None) -> int:
    """The diagnostic byte: 0 for none, the code's number, or :data:`DIAGNOSTIC_OTHER`."""
    if code is None:
        return 0
    if code in DIAGNOSTIC_ORDER:
        return DIAGNOSTIC_ORDER.index(code) + 1
    return DIAGNOSTIC_OTHER


@dataclass(frozen=True, slots=True, kw_only=True)
class StateValue:
    """The state characteristic, parsed (a central's side)."""

    phase: BlePhase
    window_open: bool
    failed: bool
    #: Which code, when this side knows its number (None also when nothing failed).
    diagnostic: DiagnosticCode | None


def parse_state_value(value: bytes) -> StateValue:
    """Parse the state characteristic; unknown diagnostic numbers stay ``failed`` without code."""
    if len(value) < STATE_VALUE_SIZE or value[0] != FORMAT_VERSION:
        raise WireFormatError(f"not a version-{FORMAT_VERSION} state value: {value.hex()}")
    phase, window_open = _parse_state_byte(value[1])
    failed, number = bool(value[1] & STATE_FAILED), value[2]
    if failed != (number != 0):
        raise WireFormatError("the failed flag and the diagnostic disagree")
    code = DIAGNOSTIC_ORDER[number - 1] if 0 < number <= len(DIAGNOSTIC_ORDER) else None
    return StateValue(phase=phase, window_open=window_open, failed=failed, diagnostic=code)


def _parse_state_byte(state: int) -> tuple[BlePhase, bool]:
    if state & _STATE_RESERVED:
        raise WireFormatError(f"reserved state bits set: 0x{state:02x}")
    try:
        phase = BlePhase(state & STATE_PHASE_MASK)
    except ValueError as err:
        raise WireFormatError(f"unknown phase {state & STATE_PHASE_MASK}") from err
    return phase, bool(state & STATE_WINDOW_OPEN)


def chunk_payload_size(att_mtu: int) -> int:
    """Bytes one chunk may carry on a link with ``att_mtu``: ``min(ATT_MTU - 3, 512)``.

    A missing or absurd MTU (bleak reports 23 until it knows better) falls back to the
    smallest one, which every link supports.
    """
    return min(max(att_mtu, MIN_ATT_MTU) - ATT_HEADER_SIZE, MAX_ATTRIBUTE_SIZE)


# --- frames over GATT -------------------------------------------------------------------------


class BleLinkError(ProtocolError):
    """The GATT link failed under a frame (a transport error, not the device's answer)."""

    code = "ble_link"


class BleDisconnectedError(BleLinkError):
    """The link dropped: a frame cut off by it never reached the other side whole."""

    code = "ble_disconnected"


class BleReplyTimeoutError(BleLinkError):
    """No complete reply frame arrived in time (out of range, or the device is busy)."""

    code = "ble_reply_timeout"


#: Writes one chunk to the RX characteristic (bleak: ``write_gatt_char(RX_UUID, chunk, ...)``).
WriteChunk: TypeAlias = Callable[[bytes], Awaitable[None]]


class FrameChannel:
    """Protocol frames over one GATT connection: chunks to RX, TX notifications into frames.

    The transport owns the connection: it passes :meth:`notified` as its TX notification
    callback and calls :meth:`disconnected` when the link drops. Waits are bounded
    (``timeout``); every failure is a :class:`ProtocolError` with a stable code:
    :class:`BleDisconnectedError` (also for a frame cut off mid-way, in either direction),
    :class:`BleReplyTimeoutError`, or the reassembler's :class:`FramingError` for a bad chunk
    from the device (that frame is lost; the next FIRST chunk starts clean). A channel serves
    one connection: after a disconnect, connect again and make a new channel.
    """

    def __init__(
        self,
        write: WriteChunk,
        *,
        payload_size: int,
        timeout: float = DEFAULT_REPLY_TIMEOUT,
    ) -> None:
        """``payload_size`` from :func:`chunk_payload_size` of the link's ATT MTU."""
        self._write = write
        self._payload_size = payload_size
        self._timeout = timeout
        self._reassembler = ChunkReassembler()
        self._frames: asyncio.Queue[bytes | ProtocolError] = asyncio.Queue(MAX_PENDING_FRAMES)
        self._closed: str | None = None

    @property
    def payload_size(self) -> int:
        """Bytes per chunk on this link."""
        return self._payload_size

    @property
    def connected(self) -> bool:
        """False once :meth:`disconnected` was called."""
        return self._closed is None

    def notified(self, chunk: bytes) -> None:
        """A TX notification (call from the transport's notification callback)."""
        if self._closed is not None:
            return
        try:
            frame = self._reassembler.feed(bytes(chunk))
        except FramingError as err:
            self._put(err)
            return
        if frame is not None:
            self._put(frame)

    def disconnected(self, reason: str = "the BLE link dropped") -> None:
        """The link is gone: a partial frame is lost and a waiting receive fails at once.

        Frames that arrived whole before the drop are still delivered first.
        """
        if self._closed is not None:
            return
        self._closed = reason
        if self._reassembler.reset():
            reason = f"{reason} in the middle of the device's reply"
        self._put(BleDisconnectedError(reason))

    def discard_pending(self) -> int:
        """Drop frames nobody waited for (a late reply to an abandoned request)."""
        dropped = 0
        while not self._frames.empty():
            self._frames.get_nowait()
            dropped += 1
        return dropped

    def _put(self, item: bytes | ProtocolError) -> None:
        if self._frames.full():
            self._frames.get_nowait()  # the oldest: nobody asked for it
        self._frames.put_nowait(item)

    async def send(self, frame: bytes) -> None:
        """Write ``frame`` as chunks; a drop part-way is :class:`BleDisconnectedError`."""
        chunks = chunk_frame(frame, self._payload_size)
        for number, chunk in enumerate(chunks):
            if self._closed is not None:
                raise BleDisconnectedError(
                    f"{self._closed} after {number} of {len(chunks)} chunks; the device "
                    "dropped the partial frame: send it again over a new connection"
                )
            await self._write(chunk)

    async def receive(self) -> bytes:
        """The next frame from the device (within the channel's timeout)."""
        try:
            async with asyncio.timeout(self._timeout):
                item = await self._frames.get()
        except TimeoutError as err:
            raise BleReplyTimeoutError(
                f"no reply from the device within {self._timeout:g} s"
            ) from err
        if isinstance(item, ProtocolError):
            if isinstance(item, BleDisconnectedError):
                self._put(item)  # every later call fails the same way
            raise item
        return item

    async def exchange(self, frame: bytes) -> bytes:
        """Send a frame and wait for the reply (stale frames are dropped first)."""
        self.discard_pending()
        if self._closed is not None:
            raise BleDisconnectedError(self._closed)
        await self.send(frame)
        return await self.receive()
