"""The device-signed MQTT credential request (docs/protocol.md §9)."""

from __future__ import annotations

import json
import time

import pytest
from iob_protocol import (
    ClaimError,
    ClaimExpiredError,
    ClockSkewError,
    MqttCredentialRequest,
    ReleaseNotice,
    SignatureError,
    ZeroTouchConfirmation,
)
from iob_protocol.canonical import encode_fields
from iob_protocol.claim import CREDENTIAL_MAX_AGE_SECONDS, MQTT_CREDENTIAL_DOMAIN
from iob_protocol.identity import load_public_key

from .helpers import SeededRandom, make_device

DEVICE = make_device("credential device")
OTHER = make_device("credential other")
NOW = 1_800_000_000


def _request(timestamp: int = NOW, seed: str = "credential") -> MqttCredentialRequest:
    return MqttCredentialRequest.create(
        DEVICE.identity, clock=lambda: timestamp, random_bytes=SeededRandom(seed)
    )


def test_round_trip_and_verify() -> None:
    request = _request()
    assert request.device_id == DEVICE.identity.device_id
    assert len(request.nonce) == 16
    parsed = MqttCredentialRequest.from_json(request.to_json())
    assert parsed == request
    assert isinstance(parsed, MqttCredentialRequest)
    parsed.verify(DEVICE.identity.public_key, now=NOW + 30, max_age=CREDENTIAL_MAX_AGE_SECONDS)
    assert set(json.loads(request.to_json())) == {"device_id", "nonce", "signature", "timestamp"}


def test_signature_covers_the_documented_bytes() -> None:
    """Ed25519 over encode_fields("iob/v1/mqtt-credential", fields): what another
    implementation must sign (docs/protocol.md §9)."""
    request = _request()
    assert MQTT_CREDENTIAL_DOMAIN == "iob/v1/mqtt-credential"
    message = encode_fields(
        MQTT_CREDENTIAL_DOMAIN,
        {"device_id": request.device_id, "nonce": request.nonce, "timestamp": request.timestamp},
    )
    load_public_key(DEVICE.identity.public_key).verify(request.signature, message)


def test_fresh_nonce_and_time_by_default() -> None:
    first = MqttCredentialRequest.create(DEVICE.identity)
    second = MqttCredentialRequest.create(DEVICE.identity)
    assert abs(first.timestamp - time.time()) < 3600  # a generous bound: wall clock, not speed
    assert first.nonce != second.nonce
    first.verify(DEVICE.identity.public_key, now=first.timestamp)


def test_wrong_key_or_changed_fields_refused() -> None:
    request = _request()
    with pytest.raises(SignatureError):
        request.verify(OTHER.identity.public_key, now=NOW)
    for change in (
        {"device_id": OTHER.identity.device_id},
        {"nonce": bytes(16)},
        {"timestamp": NOW + 1},
    ):
        fields = {
            "device_id": request.device_id,
            "nonce": request.nonce,
            "timestamp": request.timestamp,
            "signature": request.signature,
            **change,
        }
        changed = MqttCredentialRequest(**fields)  # type: ignore[arg-type]
        with pytest.raises(SignatureError):
            changed.verify(DEVICE.identity.public_key, now=NOW)


def test_domain_separated_from_zero_touch_and_release() -> None:
    """Same device, nonce and time: a zero-touch or release signature is no credential request,
    and a credential request is no zero-touch confirmation."""
    request = _request(seed="same")
    zero_touch = ZeroTouchConfirmation.create(
        DEVICE.identity, clock=lambda: NOW, random_bytes=SeededRandom("same")
    )
    release = ReleaseNotice.create(
        DEVICE.identity, clock=lambda: NOW, random_bytes=SeededRandom("same")
    )
    assert zero_touch.nonce == request.nonce == release.nonce
    for signature in (zero_touch.signature, release.signature):
        forged = MqttCredentialRequest(
            device_id=request.device_id,
            nonce=request.nonce,
            timestamp=request.timestamp,
            signature=signature,
        )
        with pytest.raises(SignatureError):
            forged.verify(DEVICE.identity.public_key, now=NOW)
    as_zero_touch = ZeroTouchConfirmation.from_json(request.to_json())
    with pytest.raises(SignatureError):
        as_zero_touch.verify(DEVICE.identity.public_key, now=NOW)


def test_time_window() -> None:
    key = DEVICE.identity.public_key
    window = {"max_age": CREDENTIAL_MAX_AGE_SECONDS, "max_skew": 120}
    _request(NOW - CREDENTIAL_MAX_AGE_SECONDS).verify(key, now=NOW, **window)
    _request(NOW + 120).verify(key, now=NOW, **window)
    with pytest.raises(ClaimExpiredError):
        _request(NOW - CREDENTIAL_MAX_AGE_SECONDS - 1).verify(key, now=NOW, **window)
    with pytest.raises(ClockSkewError):
        _request(NOW + 121).verify(key, now=NOW, **window)


def test_a_forged_time_is_a_signature_error_not_a_time_error() -> None:
    request = _request(NOW - 10_000)
    with pytest.raises(SignatureError):
        request.verify(OTHER.identity.public_key, now=NOW)


ID = "0123456789ABCDEF"
NONCE = "A" * 22  # 16 bytes, base64url


def _document(**fields: object) -> bytes:
    base: dict[str, object] = {"device_id": ID, "nonce": NONCE, "signature": "AA", "timestamp": 1}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None}, sort_keys=True).encode()


@pytest.mark.parametrize(
    "data",
    [
        b"nope",
        b"[]",
        _document(nonce=None),
        _document(reason="x"),
        _document(device_id=1),
        _document(timestamp=True),
        _document(timestamp=-1),
        _document(nonce="A"),
        _document(),  # a 1-byte signature
    ],
)
def test_malformed_requests_refused(data: bytes) -> None:
    with pytest.raises(ClaimError):
        MqttCredentialRequest.from_json(data)
