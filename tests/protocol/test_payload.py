"""QR payload, manual code, setup code and registry verifier."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iob_protocol import (
    CredentialKind,
    ManualCode,
    PayloadCharacterError,
    PayloadCheckError,
    PayloadError,
    PayloadLengthError,
    PayloadPrefixError,
    QrPayload,
    SetupCode,
    SetupVerifier,
    TrivialCodeError,
    VerifierFormatError,
)
from iob_protocol.canonical import BASE32_ALPHABET
from iob_protocol.payload import (
    is_trivial_passcode,
    luhn_mod32,
    verhoeff_digit,
    verhoeff_valid,
)

from .helpers import SeededRandom, make_device

FAST = settings(max_examples=60, deadline=None)
DEVICE = make_device("payload device")
VERIFIER = SetupVerifier.create(DEVICE.code, random_bytes=SeededRandom("salt"), log2_n=14)

device_ids = st.text(BASE32_ALPHABET, min_size=16, max_size=16)
qr_payloads = st.builds(
    QrPayload,
    device_ids,
    st.binary(min_size=15, max_size=15),
    st.binary(min_size=20, max_size=20),
)
passcodes = st.from_regex(r"[0-9]{9}", fullmatch=True).filter(lambda p: not is_trivial_passcode(p))


@FAST
@given(qr_payloads)
def test_qr_round_trip(payload: QrPayload) -> None:
    text = payload.format()
    assert text.startswith("IOB1:")
    assert len(text) == 81
    # QR alphanumeric mode: digits, upper case and ':' only.
    assert set(text) <= set(BASE32_ALPHABET + "IO:")
    assert QrPayload.parse(text) == payload
    assert QrPayload.parse(f"  {text}\n") == payload


@FAST
@given(qr_payloads, st.data())
def test_qr_single_substitution_detected(payload: QrPayload, data: st.DataObject) -> None:
    text = payload.format()
    index = data.draw(st.integers(5, len(text) - 1).filter(lambda i: text[i] != ":"))
    replacement = data.draw(st.sampled_from(BASE32_ALPHABET).filter(lambda c: c != text[index]))
    with pytest.raises(PayloadCheckError):
        QrPayload.parse(text[:index] + replacement + text[index + 1 :])


@FAST
@given(passcodes)
def test_manual_round_trip(passcode: str) -> None:
    code = ManualCode(passcode)
    text = code.format()
    assert len(text) == 11
    assert text[5] == "-"
    assert ManualCode.parse(text) == code
    assert ManualCode.parse(text.replace("-", " ")) == code


@FAST
@given(passcodes, st.data())
def test_manual_typos_detected(passcode: str, data: st.DataObject) -> None:
    digits = passcode + verhoeff_digit(passcode)
    index = data.draw(st.integers(0, 9))
    if data.draw(st.booleans()) and index < 9 and digits[index] != digits[index + 1]:
        typo = digits[:index] + digits[index + 1] + digits[index] + digits[index + 2 :]
    else:
        new = data.draw(st.sampled_from("0123456789").filter(lambda d: d != digits[index]))
        typo = digits[:index] + new + digits[index + 1 :]
    assert not verhoeff_valid(typo)
    with pytest.raises(PayloadCheckError):
        ManualCode.parse(typo)


@pytest.mark.parametrize(
    "passcode",
    [
        "000000000",
        "999999999",
        "123456789",
        "987654321",
        "012345678",
        "890123456",
        "135791357",
        "121212121",
        "123123123",
    ],
)
def test_trivial_codes_refused(passcode: str) -> None:
    assert is_trivial_passcode(passcode)
    with pytest.raises(TrivialCodeError):
        ManualCode(passcode)
    with pytest.raises(TrivialCodeError):
        ManualCode.parse(passcode + verhoeff_digit(passcode))


def test_generated_codes_have_the_promised_entropy_and_are_not_trivial() -> None:
    rng = SeededRandom("many codes")
    codes = [SetupCode.generate(DEVICE.identity.device_id, random_bytes=rng) for _ in range(200)]
    assert len({code.passcode for code in codes}) == 200
    assert len({code.setup_secret for code in codes}) == 200
    assert all(len(code.setup_secret) * 8 >= 80 for code in codes)
    assert all(10**9 > 2**27 for _ in codes)  # 9 decimal digits: above Matter's 27-bit floor
    assert not any(is_trivial_passcode(code.passcode) for code in codes)


def test_generate_draws_again_on_trivial_passcode() -> None:
    zero = (0).to_bytes(4, "big")
    draws = iter([bytes(15), zero, (123456).to_bytes(4, "big")])
    code = SetupCode.generate(DEVICE.identity.device_id, random_bytes=lambda n: next(draws)[:n])
    assert code.passcode == "000123456"


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda _t: "", PayloadPrefixError),
        (lambda t: "IOB2" + t[4:], PayloadPrefixError),
        (lambda t: "iob1" + t[4:], PayloadPrefixError),
        (lambda _t: "WIFI:S:home;;", PayloadPrefixError),
        (lambda t: t + ":X", PayloadLengthError),
        (lambda t: t.rsplit(":", 1)[0], PayloadLengthError),
        (lambda t: t[:-1] + "XY", PayloadLengthError),
        (lambda t: t[:6] + t[7:], PayloadLengthError),
        (lambda t: t[:5] + "O" + t[6:], PayloadCharacterError),
        (lambda t: t[:30] + "L" + t[31:], PayloadCharacterError),
        (
            lambda t: t[:5] + t[5].lower() + t[6:] if t[5].isalpha() else t[:5] + "a" + t[6:],
            PayloadCharacterError,
        ),
    ],
)
def test_qr_errors(mutate: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        QrPayload.parse(mutate(DEVICE.qr.format()))  # type: ignore[operator]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", PayloadLengthError),
        ("1234", PayloadLengthError),
        ("12345-678901", PayloadLengthError),
        ("12345_67890", PayloadCharacterError),
        ("12345-6789O", PayloadCharacterError),
        ("\uff11\uff12\uff13\uff14\uff15-\uff16\uff17\uff18\uff19\uff10", PayloadCharacterError),
    ],
)
def test_manual_errors(text: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        ManualCode.parse(text)


def test_manual_code_constructor_validates() -> None:
    with pytest.raises(PayloadLengthError):
        ManualCode("12345")
    with pytest.raises(PayloadLengthError):
        ManualCode("12345678a")


def test_payload_constructors_validate() -> None:
    with pytest.raises(PayloadLengthError):
        QrPayload(DEVICE.identity.device_id, b"short", bytes(20))
    with pytest.raises(PayloadLengthError):
        QrPayload(DEVICE.identity.device_id, bytes(15), b"short")
    with pytest.raises(PayloadLengthError):
        SetupCode(DEVICE.identity.device_id, b"short", DEVICE.code.passcode)


def test_luhn_mod32_known_value() -> None:
    body = "0123456789ABCDEF"
    assert luhn_mod32(body) in BASE32_ALPHABET
    assert luhn_mod32(body) != luhn_mod32("1023456789ABCDEF")


def test_credential_kind_wire() -> None:
    for kind in CredentialKind:
        assert CredentialKind.from_wire(kind.wire) is kind
    with pytest.raises(PayloadError):
        CredentialKind.from_wire(0)


def test_setup_code_storage_round_trip() -> None:
    assert SetupCode.from_json(DEVICE.code.to_json()) == DEVICE.code


@pytest.mark.parametrize(
    "data",
    [
        b"nope",
        b'{"a":1}',
        b'{"device_id":1,"passcode":"x","setup_secret":"x"}',
        b'{"device_id":"0123456789ABCDEF","passcode":"271828182","setup_secret":"A"}',
    ],
)
def test_setup_code_storage_refuses(data: bytes) -> None:
    with pytest.raises(PayloadError):
        SetupCode.from_json(data)


def test_verifier_accepts_only_the_right_credentials() -> None:
    device_id = DEVICE.identity.device_id
    assert VERIFIER.verify(device_id, DEVICE.qr)
    assert VERIFIER.verify(device_id, DEVICE.code.manual_code())
    other = make_device("someone else")
    assert not VERIFIER.verify(device_id, other.code.manual_code())
    assert not VERIFIER.verify(device_id, other.qr)  # another device's QR
    assert not VERIFIER.verify(
        device_id, QrPayload(device_id, other.code.setup_secret, DEVICE.identity.fingerprint)
    )
    # A verifier never contains either secret.
    encoded = VERIFIER.encode()
    assert DEVICE.code.passcode not in encoded
    assert DEVICE.code.setup_secret.hex() not in encoded
    assert SetupVerifier.decode(encoded) == VERIFIER


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t.replace("iob-verifier-v1", "iob-verifier-v2"),
        lambda t: t.replace("$scrypt$", "$pbkdf2$"),
        lambda t: t.rsplit("$", 1)[0],
        lambda t: t.replace("$14$", "$10$"),
        lambda t: t.replace("$14$", "$30$"),
        lambda t: t.replace("$14$", "$1e$"),
        lambda t: t.replace("$8$", "$99$"),
        lambda t: t + "A",
        lambda t: t[:-3] + "+AA",
        lambda t: t.rsplit("$", 1)[0] + "$AAAA",
    ],
)
def test_verifier_decode_refuses(mutate: object) -> None:
    with pytest.raises(VerifierFormatError):
        SetupVerifier.decode(mutate(VERIFIER.encode()))  # type: ignore[operator]


def test_verifier_create_refuses_weak_cost() -> None:
    with pytest.raises(VerifierFormatError):
        SetupVerifier.create(DEVICE.code, log2_n=10)
