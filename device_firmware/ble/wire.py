"""What a BLE central sees of an IoT Onboard device: UUIDs, service data, state and features.

The contract with Home Assistant lives in the shared protocol package (``iob_protocol.ble``),
so the device and the integration's GATT client read the same definitions; this module keeps
the device's imports (``from .wire import ...``) working. docs/ble.md describes the bytes.
"""

from __future__ import annotations

from iob_protocol.ble import (
    DIAGNOSTIC_ORDER,
    DIAGNOSTIC_OTHER,
    FEATURES_UUID,
    FORMAT_VERSION,
    RX_UUID,
    SERVICE_DATA_SIZE,
    SERVICE_UUID,
    SHORT_ID_BYTES,
    SHORT_ID_CHARS,
    STATE_FAILED,
    STATE_PHASE_MASK,
    STATE_UUID,
    STATE_VALUE_SIZE,
    STATE_WINDOW_OPEN,
    TX_UUID,
    AdvertisedState,
    BlePhase,
    BleStatus,
    StateValue,
    WireFormatError,
    diagnostic_number,
    encode_features,
    parse_state_value,
    short_id,
    short_id_text,
)

__all__ = [
    "DIAGNOSTIC_ORDER",
    "DIAGNOSTIC_OTHER",
    "FEATURES_UUID",
    "FORMAT_VERSION",
    "RX_UUID",
    "SERVICE_DATA_SIZE",
    "SERVICE_UUID",
    "SHORT_ID_BYTES",
    "SHORT_ID_CHARS",
    "STATE_FAILED",
    "STATE_PHASE_MASK",
    "STATE_UUID",
    "STATE_VALUE_SIZE",
    "STATE_WINDOW_OPEN",
    "TX_UUID",
    "AdvertisedState",
    "BlePhase",
    "BleStatus",
    "StateValue",
    "WireFormatError",
    "diagnostic_number",
    "encode_features",
    "parse_state_value",
    "short_id",
    "short_id_text",
]
