"""Diagnostic codes and device-signed claim / release statements."""

from __future__ import annotations

import time

import pytest
from iob_protocol import (
    ClaimConfirmation,
    ClaimError,
    ClaimExpiredError,
    ClockSkewError,
    DiagnosticCode,
    ProtocolError,
    ReleaseNotice,
    ReleaseReason,
    SignatureError,
    errors,
)

from .helpers import SeededRandom, make_device

DEVICE = make_device("claim device")
OTHER = make_device("claim other")
TOKEN = "T" * 22
NOW = 1_800_000_000

EXPECTED_CODES = {
    "WIFI_AUTH_FAILED",
    "WIFI_AP_NOT_FOUND",
    "DHCP_TIMEOUT",
    "DNS_FAILED",
    "NO_INTERNET",
    "RELAY_UNREACHABLE",
    "TLS_FAILED",
    "CLOCK_SKEW",
    "CLAIM_REJECTED",
    "CLAIM_EXPIRED",
    "BROKER_AUTH_FAILED",
    "TIMEOUT",
}


def test_every_diagnostic_has_message_and_next_step() -> None:
    assert {code.value for code in DiagnosticCode} == EXPECTED_CODES
    for code in DiagnosticCode:
        assert code.value == code.name
        assert code.message.endswith(".")
        assert code.next_step.endswith(".")
        assert code.text.message == code.message
    assert len({code.message for code in DiagnosticCode}) == len(EXPECTED_CODES)


def test_error_codes_are_unique_and_rooted() -> None:
    classes = [
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, Exception)
    ]
    protocol_errors = [cls for cls in classes if issubclass(cls, ProtocolError)]
    assert protocol_errors == classes
    codes = [cls.code for cls in protocol_errors]
    assert len(codes) == len(set(codes))


def test_default_clock_is_unix_time() -> None:
    claim = ClaimConfirmation.create(DEVICE.identity, TOKEN)
    assert abs(claim.timestamp - time.time()) < 5
    claim.verify(DEVICE.identity.public_key, now=int(time.time()))


def _claim(timestamp: int = NOW) -> ClaimConfirmation:
    return ClaimConfirmation.create(
        DEVICE.identity, TOKEN, clock=lambda: timestamp, random_bytes=SeededRandom("nonce")
    )


def test_claim_round_trip_and_verify() -> None:
    claim = _claim()
    parsed = ClaimConfirmation.from_json(claim.to_json())
    assert parsed == claim
    parsed.verify(DEVICE.identity.public_key, now=NOW + 30)
    assert TOKEN not in repr(claim)


def test_claim_with_wrong_key_token_or_device_refused() -> None:
    claim = _claim()
    with pytest.raises(SignatureError):
        claim.verify(OTHER.identity.public_key, now=NOW)
    forged = ClaimConfirmation(
        device_id=claim.device_id,
        claim_token="U" * 22,
        nonce=claim.nonce,
        timestamp=claim.timestamp,
        signature=claim.signature,
    )
    with pytest.raises(SignatureError):
        forged.verify(DEVICE.identity.public_key, now=NOW)
    moved = ClaimConfirmation(
        device_id=OTHER.identity.device_id,
        claim_token=claim.claim_token,
        nonce=claim.nonce,
        timestamp=claim.timestamp,
        signature=claim.signature,
    )
    with pytest.raises(SignatureError):
        moved.verify(DEVICE.identity.public_key, now=NOW)


def test_claim_time_window() -> None:
    with pytest.raises(ClaimExpiredError) as expired:
        _claim(NOW - 601).verify(DEVICE.identity.public_key, now=NOW)
    assert expired.value.diagnostic is DiagnosticCode.CLAIM_EXPIRED
    with pytest.raises(ClockSkewError) as skew:
        _claim(NOW + 121).verify(DEVICE.identity.public_key, now=NOW)
    assert skew.value.diagnostic is DiagnosticCode.CLOCK_SKEW
    _claim(NOW - 600).verify(DEVICE.identity.public_key, now=NOW)
    _claim(NOW + 120).verify(DEVICE.identity.public_key, now=NOW)


@pytest.mark.parametrize(
    "data",
    [
        b"nope",
        b"[]",
        b'{"claim_token":"x"}',
        b'{"claim_token":1,"device_id":"0123456789ABCDEF","nonce":"AAAAAAAAAAAAAAAAAAAAAA","signature":"A","timestamp":1}',
        b'{"claim_token":"TTTTTTTTTTTTTTTTTTTTTT","device_id":"0123456789ABCDEF","nonce":"A","signature":"A","timestamp":1}',
        b'{"claim_token":"TTTTTTTTTTTTTTTTTTTTTT","device_id":"0123456789ABCDEF","nonce":"AAAAAAAAAAAAAAAAAAAAAA","signature":"AA","timestamp":true}',
    ],
)
def test_claim_parse_errors(data: bytes) -> None:
    with pytest.raises(ClaimError):
        ClaimConfirmation.from_json(data)


def test_claim_constructor_validates() -> None:
    claim = _claim()
    base = {
        "device_id": claim.device_id,
        "claim_token": claim.claim_token,
        "nonce": claim.nonce,
        "timestamp": claim.timestamp,
        "signature": claim.signature,
    }
    for change in (
        {"device_id": "bad"},
        {"claim_token": "short"},
        {"nonce": b"x"},
        {"signature": b"x"},
        {"timestamp": -1},
    ):
        with pytest.raises(ClaimError):
            ClaimConfirmation(**{**base, **change})  # type: ignore[arg-type]


def test_release_notice() -> None:
    notice = ReleaseNotice.create(
        DEVICE.identity, clock=lambda: NOW, random_bytes=SeededRandom("r")
    )
    assert notice.reason is ReleaseReason.FACTORY_RESET
    parsed = ReleaseNotice.from_json(notice.to_json())
    assert parsed == notice
    parsed.verify(DEVICE.identity.public_key, now=NOW)
    with pytest.raises(SignatureError):
        parsed.verify(OTHER.identity.public_key, now=NOW)
    with pytest.raises(ClaimExpiredError):
        parsed.verify(DEVICE.identity.public_key, now=NOW + 601)
    # A claim signature can never pass as a release signature (domain separation).
    claim = _claim()
    disguised = ReleaseNotice(
        device_id=claim.device_id,
        reason=ReleaseReason.FACTORY_RESET,
        nonce=claim.nonce,
        timestamp=claim.timestamp,
        signature=claim.signature,
    )
    with pytest.raises(SignatureError):
        disguised.verify(DEVICE.identity.public_key, now=NOW)
    bad_reason = notice.to_json().replace(b"factory_reset", b"went_away")
    with pytest.raises(ClaimError):
        ReleaseNotice.from_json(bad_reason)
