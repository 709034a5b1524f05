"""The bytes a central sees before and after connecting (the contract with Home Assistant)."""

from __future__ import annotations

import pytest
from iob_protocol.diagnostics import DiagnosticCode

from device_firmware.ble.bluez import ble_phase
from device_firmware.ble.wire import (
    DIAGNOSTIC_ORDER,
    AdvertisedState,
    BlePhase,
    BleStatus,
    StateValue,
    WireFormatError,
    diagnostic_number,
    parse_state_value,
    short_id,
)
from device_firmware.state import Phase
from tests.protocol.helpers import WIRE_DIAGNOSTICS

DEVICE_ID = "0123456789ABCDEF"


def test_pinned_bytes() -> None:
    status = BleStatus(
        phase=BlePhase.PROVISIONING, window_open=True, diagnostic=DiagnosticCode.WIFI_AUTH_FAILED
    )
    assert status.state_value() == bytes.fromhex("011901")
    assert status.service_data(DEVICE_ID) == bytes.fromhex("0119") + bytes.fromhex("00443214c7")
    idle = BleStatus(phase=BlePhase.ONLINE, window_open=False)
    assert idle.state_value() == bytes.fromhex("010300")
    assert short_id(DEVICE_ID) == bytes.fromhex("00443214c7")


def test_diagnostic_numbering_is_append_only_and_complete() -> None:
    assert [code.value for code in DIAGNOSTIC_ORDER] == WIRE_DIAGNOSTICS
    # A new code in iob_protocol must get a number here (appended) before it can be sent.
    assert set(DIAGNOSTIC_ORDER) == set(DiagnosticCode)


@pytest.mark.parametrize("phase", list(BlePhase))
@pytest.mark.parametrize("window_open", [False, True])
@pytest.mark.parametrize("diagnostic", [None, *DiagnosticCode])
def test_round_trips(phase: BlePhase, window_open: bool, diagnostic: DiagnosticCode | None) -> None:
    status = BleStatus(phase=phase, window_open=window_open, diagnostic=diagnostic)
    assert parse_state_value(status.state_value()) == StateValue(
        phase=phase, window_open=window_open, failed=diagnostic is not None, diagnostic=diagnostic
    )
    advertised = AdvertisedState.parse(status.service_data(DEVICE_ID))
    assert advertised == AdvertisedState(
        phase=phase, window_open=window_open, failed=diagnostic is not None, short_id="01234567"
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\x02\x01\x00", "version"),
        (b"\x01\x01", "version"),
        (b"\x01\x21\x00", "reserved"),
        (b"\x01\x04\x00", "phase"),
        (b"\x01\x11\x00", "disagree"),
        (b"\x01\x01\x05", "disagree"),
    ],
)
def test_malformed_state_values(value: bytes, reason: str) -> None:
    with pytest.raises(WireFormatError, match=reason):
        parse_state_value(value)


def test_a_diagnostic_without_a_number_is_still_a_failure() -> None:
    """A newer device may report a code this side cannot name: failed, code unknown."""
    parsed = parse_state_value(bytes([1, 0x11, 0xFF]))
    assert (parsed.failed, parsed.diagnostic) == (True, None)
    assert diagnostic_number(None) == 0


def test_malformed_service_data() -> None:
    with pytest.raises(WireFormatError, match="version"):
        AdvertisedState.parse(b"\x01\x01\x00")
    with pytest.raises(WireFormatError, match="reserved"):
        AdvertisedState.parse(b"\x01\x80" + bytes(5))


def test_every_onboarding_phase_has_an_advertised_number() -> None:
    assert [ble_phase(phase).name for phase in Phase] == [phase.name for phase in Phase]
