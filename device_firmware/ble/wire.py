"""What a BLE central sees of an IoT Onboard device: UUIDs, service data, state characteristic.

This module is the whole BLE contract with Home Assistant (its manifest matcher and its GATT
client) and depends only on ``iob_protocol``, so it can move into the shared protocol package
unchanged. docs/ble.md describes the same bytes.

Service data (advertised under :data:`SERVICE_UUID`, 7 bytes)::

    version u8 = 1 || state u8 || short id (5 bytes)

State characteristic (:data:`STATE_UUID`, read and notify, 3 bytes)::

    version u8 = 1 || state u8 || diagnostic u8

``state``: bits 0-2 the phase (0 unclaimed, 1 provisioning, 2 committing, 3 online), bit 3 set
while the provisioning window accepts handshakes, bit 4 set while the last attempt's diagnostic
is pending, bits 5-7 zero. ``diagnostic``: 0 for none, otherwise the 1-based position of the
code in :data:`DIAGNOSTIC_ORDER` (append-only), or 255 for a code without a number yet (the
``status`` command names it). The short id is the first 8 characters of the
device id (Crockford base32) as their 5 bytes: enough to tell the devices of one household
apart and to match a scanned QR code before connecting; it proves nothing (the handshake does).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final, Self

from iob_protocol.canonical import base32_decode, base32_encode
from iob_protocol.diagnostics import DiagnosticCode

#: The IoT Onboard provisioning service (a random 128-bit UUID owned by this project).
SERVICE_UUID: Final = "ffea8e11-9877-4ae7-8fbb-4d229f30fe00"
#: Client → device protocol frames in chunks (write, write without response).
RX_UUID: Final = "ffea8e11-9877-4ae7-8fbb-4d229f30fe01"
#: Device → client protocol frames in chunks (notify).
TX_UUID: Final = "ffea8e11-9877-4ae7-8fbb-4d229f30fe02"
#: Device state and last diagnostic (read, notify).
STATE_UUID: Final = "ffea8e11-9877-4ae7-8fbb-4d229f30fe03"

FORMAT_VERSION: Final = 1
SHORT_ID_CHARS: Final = 8
SHORT_ID_BYTES: Final = 5
SERVICE_DATA_SIZE: Final = 2 + SHORT_ID_BYTES
STATE_VALUE_SIZE: Final = 3

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
)
#: A failure whose code has no number here yet (a newer device): ask ``status`` for it.
DIAGNOSTIC_OTHER: Final = 0xFF


class WireFormatError(ValueError):
    """Bytes that are not a valid service-data or state value (a central's parser raises it)."""


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
