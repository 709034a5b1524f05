"""Diagnostic codes and device-signed claim / zero-touch / release statements."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

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
    ZeroTouchConfirmation,
    errors,
)

from .helpers import WIRE_DIAGNOSTICS, SeededRandom, make_device

DEVICE = make_device("claim device")
OTHER = make_device("claim other")
TOKEN = "T" * 22
NOW = 1_800_000_000

EXPECTED_CODES = set(WIRE_DIAGNOSTICS)


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


_T = TypeVar("_T")


def _as(kind: Callable[..., _T], source: Any, **fields: Any) -> _T:
    """A ``kind`` statement with ``source``'s device id, nonce, time and signature (and
    ``fields``): a signature moved to other content or another kind of statement."""
    carried = ("device_id", "nonce", "timestamp", "signature")
    return kind(**{name: getattr(source, name) for name in carried} | fields)


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
    forged = _as(ClaimConfirmation, claim, claim_token="U" * 22)
    with pytest.raises(SignatureError):
        forged.verify(DEVICE.identity.public_key, now=NOW)
    moved = _as(
        ClaimConfirmation, claim, device_id=OTHER.identity.device_id, claim_token=claim.claim_token
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
    disguised = _as(ReleaseNotice, claim, reason=ReleaseReason.FACTORY_RESET)
    with pytest.raises(SignatureError):
        disguised.verify(DEVICE.identity.public_key, now=NOW)
    bad_reason = notice.to_json().replace(b"factory_reset", b"went_away")
    with pytest.raises(ClaimError):
        ReleaseNotice.from_json(bad_reason)


def _zero_touch(timestamp: int = NOW) -> ZeroTouchConfirmation:
    return ZeroTouchConfirmation.create(
        DEVICE.identity, clock=lambda: timestamp, random_bytes=SeededRandom("zero")
    )


def test_zero_touch_round_trip_and_verify() -> None:
    statement = _zero_touch()
    assert statement.device_id == DEVICE.identity.device_id
    assert len(statement.nonce) == 16
    parsed = ZeroTouchConfirmation.from_json(statement.to_json())
    assert parsed == statement
    parsed.verify(DEVICE.identity.public_key, now=NOW + 30)
    assert set(json.loads(statement.to_json())) == {
        "device_id",
        "nonce",
        "signature",
        "timestamp",
    }


def test_zero_touch_default_clock_and_randomness() -> None:
    first = ZeroTouchConfirmation.create(DEVICE.identity)
    second = ZeroTouchConfirmation.create(DEVICE.identity)
    assert abs(first.timestamp - time.time()) < 5
    assert first.nonce != second.nonce
    first.verify(DEVICE.identity.public_key, now=int(time.time()))


def test_zero_touch_wrong_key_or_moved_fields_refused() -> None:
    statement = _zero_touch()
    with pytest.raises(SignatureError):
        statement.verify(OTHER.identity.public_key, now=NOW)
    for change in (
        {"device_id": OTHER.identity.device_id},
        {"nonce": bytes(16)},
        {"timestamp": NOW + 1},
    ):
        moved = _as(ZeroTouchConfirmation, statement, **change)
        with pytest.raises(SignatureError):
            moved.verify(DEVICE.identity.public_key, now=NOW)


def test_zero_touch_is_domain_separated_from_claim_and_release() -> None:
    """Same device, nonce and time: no statement's signature passes as another's."""
    statement = _zero_touch()
    release = ReleaseNotice.create(
        DEVICE.identity, clock=lambda: NOW, random_bytes=SeededRandom("zero")
    )
    assert release.nonce == statement.nonce
    as_zero_touch = _as(ZeroTouchConfirmation, release)
    with pytest.raises(SignatureError):
        as_zero_touch.verify(DEVICE.identity.public_key, now=NOW)
    as_release = _as(ReleaseNotice, statement, reason=ReleaseReason.FACTORY_RESET)
    with pytest.raises(SignatureError):
        as_release.verify(DEVICE.identity.public_key, now=NOW)
    claim = _as(ClaimConfirmation, statement, claim_token=TOKEN)
    with pytest.raises(SignatureError):
        claim.verify(DEVICE.identity.public_key, now=NOW)


def test_zero_touch_time_window() -> None:
    key = DEVICE.identity.public_key
    with pytest.raises(ClaimExpiredError):
        _zero_touch(NOW - 601).verify(key, now=NOW)
    with pytest.raises(ClockSkewError):
        _zero_touch(NOW + 121).verify(key, now=NOW)
    _zero_touch(NOW - 600).verify(key, now=NOW)
    _zero_touch(NOW + 120).verify(key, now=NOW)
    # The service passes its own window (claim_ttl, max_clock_skew).
    with pytest.raises(ClaimExpiredError):
        _zero_touch(NOW - 61).verify(key, now=NOW, max_age=60, max_skew=5)
    with pytest.raises(ClockSkewError):
        _zero_touch(NOW + 6).verify(key, now=NOW, max_age=60, max_skew=5)
    _zero_touch(NOW + 5).verify(key, now=NOW, max_age=60, max_skew=5)


#: Bytes each signed statement's parser refuses.
UNPARSABLE: dict[type[ClaimConfirmation | ZeroTouchConfirmation], list[bytes]] = {
    ClaimConfirmation: [
        b"nope",
        b"[]",
        b'{"claim_token":"x"}',
        b'{"claim_token":1,"device_id":"0123456789ABCDEF","nonce":"AAAAAAAAAAAAAAAAAAAAAA","signature":"A","timestamp":1}',
        b'{"claim_token":"TTTTTTTTTTTTTTTTTTTTTT","device_id":"0123456789ABCDEF","nonce":"A","signature":"A","timestamp":1}',
        b'{"claim_token":"TTTTTTTTTTTTTTTTTTTTTT","device_id":"0123456789ABCDEF","nonce":"AAAAAAAAAAAAAAAAAAAAAA","signature":"AA","timestamp":true}',
    ],
    ZeroTouchConfirmation: [
        b"nope",
        b"[]",
        b'{"device_id":"0123456789ABCDEF"}',
        b'{"claim_token":"TTTTTTTTTTTTTTTTTTTTTT","device_id":"0123456789ABCDEF","nonce":"AAAAAAAAAAAAAAAAAAAAAA","signature":"AA","timestamp":1}',
        b'{"device_id":1,"nonce":"AAAAAAAAAAAAAAAAAAAAAA","signature":"AA","timestamp":1}',
        b'{"device_id":"0123456789ABCDEF","nonce":"AAAAAAAAAAAAAAAAAAAAAA","signature":"AA","timestamp":true}',
        b'{"device_id":"0123456789ABCDEF","nonce":"A","signature":"AA","timestamp":1}',
        b'{"device_id":"0123456789ABCDEF","nonce":"AAAAAAAAAAAAAAAAAAAAAA","signature":"AA","timestamp":1}',
        b'{"device_id":"0123456789abcdef","nonce":"AAAAAAAAAAAAAAAAAAAAAA","signature":"AA","timestamp":1}',
        b'{"nonce":"AAAAAAAAAAAAAAAAAAAAAA","device_id":"0123456789ABCDEF","signature":"AA","timestamp":1}',
    ],
}


@pytest.mark.parametrize(
    ("kind", "data"), [(kind, data) for kind, rows in UNPARSABLE.items() for data in rows]
)
def test_parse_errors(kind: type[ClaimConfirmation | ZeroTouchConfirmation], data: bytes) -> None:
    with pytest.raises(ClaimError):
        kind.from_json(data)


@pytest.mark.parametrize(
    ("statement", "changes"),
    [
        pytest.param(
            _claim(),
            [
                {"device_id": "bad"},
                {"claim_token": "short"},
                {"nonce": b"x"},
                {"signature": b"x"},
                {"timestamp": -1},
            ],
            id="claim",
        ),
        pytest.param(
            _zero_touch(),
            [
                {"device_id": "bad"},
                {"nonce": b"x"},
                {"signature": b"x"},
                {"timestamp": -1},
                {"timestamp": 2**53},
            ],
            id="zero touch",
        ),
    ],
)
def test_constructor_validates(
    statement: ClaimConfirmation | ZeroTouchConfirmation, changes: list[dict[str, Any]]
) -> None:
    base = dataclasses.asdict(statement)
    for change in changes:
        with pytest.raises(ClaimError):
            type(statement)(**{**base, **change})
