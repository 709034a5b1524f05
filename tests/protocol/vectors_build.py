"""Build the JSON test vectors from fixed inputs.

``test_vectors.py`` compares this output with the committed files byte for byte, so a change
to the wire format fails the tests until the vectors are regenerated on purpose::

    python -m tests.protocol.vectors_build       # from the repository root

Randomness is recorded in the vectors as the exact bytes each side drew, so an independent
implementation can replay a handshake without this PRG.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from iob_protocol import (
    ClaimConfirmation,
    ClientSession,
    CommandType,
    CommitRequest,
    CommitResult,
    CredentialKind,
    DeviceIdentity,
    DeviceSession,
    DeviceState,
    DiagnosticCode,
    ErrorResponse,
    FactoryResetRequest,
    FieldValue,
    FrameType,
    IdentifyRequest,
    InfoRequest,
    InfoResult,
    JsonValue,
    ManualCode,
    OkResponse,
    OwnerSessionRequiredError,
    ProtocolError,
    QrPayload,
    ReleaseNotice,
    ReleaseReason,
    Request,
    Response,
    ScanWifiRequest,
    ScanWifiResult,
    SetClaimRequest,
    SetOwnerSecretRequest,
    SetupCode,
    SetupCodeRequiredError,
    SetupVerifier,
    SetWifiRequest,
    StatusRequest,
    StatusResult,
    WifiNetwork,
    WifiSecurity,
    ZeroTouchConfirmation,
    b64url_encode,
    canonical_json,
    chunk_frame,
    decode_frame,
    decode_request,
    decode_response,
    encode_error_frame,
    encode_fields,
    encode_frame,
    encode_request,
    encode_response,
    format_fingerprint,
    parse_canonical_json,
)
from iob_protocol.commands import AckResult
from iob_protocol.payload import pake_password, verhoeff_digit
from iob_protocol.session import pake_identities, transcript_hash
from spake2 import SPAKE2_A

from tests.plugins.clock import MONOTONIC_START, FakeClock

from .helpers import ReplayRandom, SeededRandom

VECTOR_DIR = Path(__file__).parent / "vectors"

DEVICE_SEED = bytes(range(32))
DEVICE_ID = "0123456789ABCDEF"
SETUP_SECRET = bytes.fromhex("00112233445566778899aabbccddee")
PASSCODE = "271828182"
OWNER_SECRET = bytes(range(0x40, 0x60))
NEXT_OWNER_SECRET = bytes(range(0x60, 0x80))


def _error_code(func: Any, *args: Any) -> str:
    try:
        func(*args)
    except ProtocolError as err:
        return err.code
    msg = f"{func.__name__}{args!r} did not fail"
    raise AssertionError(msg)


def _manual_with_check(passcode: str) -> str:
    digits = passcode + verhoeff_digit(passcode)
    return f"{digits[:5]}-{digits[5:]}"


def _identity() -> DeviceIdentity:
    return DeviceIdentity.from_seed(DEVICE_ID, DEVICE_SEED)


def _setup_code() -> SetupCode:
    return SetupCode(DEVICE_ID, SETUP_SECRET, PASSCODE)


def build_canonical() -> dict[str, Any]:
    field_cases: list[tuple[str, dict[str, FieldValue]]] = [
        ("iob/v1/example", {}),
        ("iob/v1/example", {"b": b"\x00\xff", "a": "h\u00e9", "n": -1, "t": True, "f": False}),
        ("iob/v1/example", {"big": 2**63 - 1, "empty": b"", "text": ""}),
    ]
    fields = []
    for domain, values in field_cases:
        typed = {
            name: (
                {"bytes": value.hex()}
                if isinstance(value, bytes)
                else {"bool": value}
                if isinstance(value, bool)
                else {"int": value}
                if isinstance(value, int)
                else {"str": value}
            )
            for name, value in values.items()
        }
        fields.append(
            {"domain": domain, "fields": typed, "encoded": encode_fields(domain, values).hex()}
        )
    json_cases: list[JsonValue] = [
        {"b": [1, "x", None, True], "a": {"z": -5, "y": "\u00e9\n"}},
        {"id": 1, "type": "info"},
    ]
    invalid_json = [
        '{"b":1,"a":2}',
        '{"a": 1}',
        '{"a":1.5}',
        '{"a":1,"a":2}',
        '{"a":"\\u00e9"}',
        "[1,",
        '{"a":NaN}',
    ]
    return {
        "description": "encode_fields (signed/MACed/hashed data) and canonical JSON",
        "fields": fields,
        "json": [
            {"value": value, "encoded": canonical_json(value).decode()} for value in json_cases
        ],
        "invalid_json": [
            {"input": text, "error": _error_code(parse_canonical_json, text.encode())}
            for text in invalid_json
        ],
    }


def build_identity() -> dict[str, Any]:
    identity = _identity()
    message: dict[str, FieldValue] = {"device_id": DEVICE_ID, "n": 7}
    return {
        "description": "Ed25519 identity, fingerprint and a domain-separated signature",
        "device_id": DEVICE_ID,
        "private_key_seed": DEVICE_SEED.hex(),
        "public_key": identity.public_key.hex(),
        "fingerprint": identity.fingerprint.hex(),
        "fingerprint_text": format_fingerprint(identity.fingerprint),
        "signature": {
            "domain": "iob/v1/example",
            "fields": message,
            "signed_bytes": encode_fields("iob/v1/example", message).hex(),
            "signature": identity.sign("iob/v1/example", message).hex(),
        },
    }


def build_payload() -> dict[str, Any]:
    identity = _identity()
    code = _setup_code()
    qr = code.qr_payload(identity.fingerprint)
    manual = code.manual_code()
    good_qr = qr.format()
    good_manual = manual.format()
    invalid_qr = [
        "IOB2" + good_qr[4:],
        "XYZ:" + good_qr[4:],
        good_qr.rsplit(":", 1)[0],
        good_qr[:10] + good_qr[11:],
        good_qr[:10] + "I" + good_qr[11:],
        good_qr[:10] + "u" + good_qr[11:],
        good_qr[:-1] + ("0" if good_qr[-1] != "0" else "1"),
    ]
    invalid_manual = [
        good_manual[:-1],
        good_manual + "1",
        good_manual[:3] + "x" + good_manual[4:],
        good_manual[:-1] + str((int(good_manual[-1]) + 1) % 10),
        _manual_with_check("111111111"),
        _manual_with_check("123456789"),
        "12345-67891",
    ]
    rng = SeededRandom("verifier salt")
    verifier = SetupVerifier.create(code, random_bytes=rng, log2_n=14)
    return {
        "description": "QR payload, manual code, PAKE passwords and registry verifier",
        "device_id": DEVICE_ID,
        "setup_secret": SETUP_SECRET.hex(),
        "passcode": PASSCODE,
        "fingerprint": identity.fingerprint.hex(),
        "qr": good_qr,
        "manual": good_manual,
        "manual_variants_accepted": [
            good_manual.replace("-", ""),
            " " + good_manual.replace("-", " ") + " ",
        ],
        "pake_password_qr": pake_password(CredentialKind.QR, DEVICE_ID, SETUP_SECRET).hex(),
        "pake_password_manual": pake_password(
            CredentialKind.MANUAL, DEVICE_ID, PASSCODE.encode()
        ).hex(),
        "verifier": {
            "salt": rng.drawn.hex(),
            "log2_n": 14,
            "r": 8,
            "p": 1,
            "encoded": verifier.encode(),
        },
        "invalid_qr": [
            {"input": text, "error": _error_code(QrPayload.parse, text)} for text in invalid_qr
        ],
        "invalid_manual": [
            {"input": text, "error": _error_code(ManualCode.parse, text)} for text in invalid_manual
        ],
    }


def _secret(kind: CredentialKind) -> bytes:
    return OWNER_SECRET if kind is CredentialKind.OWNER else _setup_code().secret_for(kind)


def _handshake_case(kind: CredentialKind) -> dict[str, Any]:
    identity = _identity()
    code = _setup_code()
    client_rng = SeededRandom(f"client entropy {kind.value}")
    device_rng = SeededRandom(f"device entropy {kind.value}")
    clock = FakeClock(MONOTONIC_START)
    if kind is CredentialKind.QR:
        client = ClientSession.for_qr(
            code.qr_payload(identity.fingerprint), clock=clock, random_bytes=client_rng
        )
    elif kind is CredentialKind.MANUAL:
        client = ClientSession.for_manual_code(
            code.manual_code(),
            device_id=DEVICE_ID,
            device_public_key=identity.public_key,
            clock=clock,
            random_bytes=client_rng,
        )
    else:
        client = ClientSession.for_owner(
            device_id=DEVICE_ID,
            device_public_key=identity.public_key,
            owner_secret=OWNER_SECRET,
            clock=clock,
            random_bytes=client_rng,
        )
    if kind is CredentialKind.OWNER:
        device = DeviceSession.for_owner(
            identity, owner_secret=OWNER_SECRET, clock=clock, random_bytes=device_rng
        )
    else:
        device = DeviceSession(identity, code, clock=clock, random_bytes=device_rng)
    hello = client.start()
    device_hello = device.handle_client_hello(hello)
    finish = client.handle_device_hello(device_hello)
    device.handle_client_finish(finish)
    keys = client._keys
    assert keys is not None
    transcript = _transcript(hello, device_hello)
    id_a, id_b = pake_identities(kind, DEVICE_ID)
    requests = [b'{"id":1,"type":"info"}', b'{"id":2,"type":"status"}']
    client_frames = [client.seal(plaintext) for plaintext in requests]
    for frame in client_frames:
        device.open(frame)
    response = b'{"id":1,"ok":true,"result":{},"type":"identify"}'
    device_frame = device.seal(response)
    client.open(device_frame)
    pake = SPAKE2_A(
        pake_password(kind, DEVICE_ID, _secret(kind)),
        idA=id_a,
        idB=id_b,
        entropy_f=ReplayRandom(client_rng.drawn),
    )
    pake.start()
    pake_key = pake.finish(decode_frame(device_hello).body[1:34])
    return {
        "kind": kind.value,
        "pake_key": pake_key.hex(),
        "client_entropy": client_rng.drawn.hex(),
        "device_entropy": device_rng.drawn.hex(),
        "pake_password": pake_password(kind, DEVICE_ID, _secret(kind)).hex(),
        "pake_id_a": id_a.decode(),
        "pake_id_b": id_b.decode(),
        "client_hello": hello.hex(),
        "device_hello": device_hello.hex(),
        "client_finish": finish.hex(),
        "transcript_hash": transcript.hex(),
        "device_confirm_key": keys.device_confirm_key.hex(),
        "client_confirm_key": keys.client_confirm_key.hex(),
        "client_to_device_key": keys.client_to_device.hex(),
        "device_to_client_key": keys.device_to_client.hex(),
        "session_id": keys.session_id.hex(),
        "client_to_device": [
            {"plaintext": plaintext.decode(), "frame": frame.hex()}
            for plaintext, frame in zip(requests, client_frames, strict=True)
        ],
        "device_to_client": [{"plaintext": response.decode(), "frame": device_frame.hex()}],
    }


def _transcript(hello: bytes, device_hello: bytes) -> bytes:
    hello_body = decode_frame(hello).body
    body = decode_frame(device_hello).body
    return transcript_hash(hello_body, body[1:34], body[34:66])


def build_handshake() -> dict[str, Any]:
    return {
        "description": (
            "Full handshakes (QR and manual code) with recorded entropy, derived keys and "
            "the first DATA frames in each direction"
        ),
        "device_id": DEVICE_ID,
        "device_private_key_seed": DEVICE_SEED.hex(),
        "device_public_key": _identity().public_key.hex(),
        "setup_secret": SETUP_SECRET.hex(),
        "passcode": PASSCODE,
        # The label kinds only: the owner handshake is in owner.json (this file predates it).
        "cases": [_handshake_case(kind) for kind in (CredentialKind.QR, CredentialKind.MANUAL)],
    }


def build_framing() -> dict[str, Any]:
    frames = [
        (FrameType.CLIENT_FINISH, bytes(32)),
        (FrameType.DATA, b"hello"),
        (FrameType.ERROR, b"wrong_setup_code"),
    ]
    long_frame = encode_frame(FrameType.DATA, bytes(range(50)))
    invalid = [
        "4943010100",
        "4a42010100000000",
        "494302100000",
        "494201100001",
        "49420110000100ffee",
        "494202100000",
        "494201220000",
        "49420110400000",
    ]

    def _decode(hex_text: str) -> object:
        return decode_frame(bytes.fromhex(hex_text))

    return {
        "description": "Frame header, error frames and BLE chunks",
        "frames": [
            {
                "type": frame_type.name,
                "body": body.hex(),
                "encoded": encode_frame(frame_type, body).hex(),
            }
            for frame_type, body in frames
        ],
        "error_frame": {"code": "busy", "encoded": encode_error_frame("busy").hex()},
        "chunks": {
            "frame": long_frame.hex(),
            "mtu": 20,
            "chunks": [chunk.hex() for chunk in chunk_frame(long_frame, 20)],
        },
        "invalid_frames": [
            {"input": text, "error": _error_code(_decode, text)} for text in invalid
        ],
    }


def build_commands() -> dict[str, Any]:
    requests: list[Request] = [
        InfoRequest(request_id=1),
        ScanWifiRequest(request_id=2),
        SetWifiRequest(request_id=3, ssid=b"Home \xf0\x9f\x8f\xa0", passphrase="correct horse"),  # noqa: S106
        SetWifiRequest(request_id=4, ssid=b"\x00\xffcafe", hidden=True),
        SetWifiRequest(request_id=5, ssid=b"psk", passphrase="0123456789abcdef" * 4),
        SetClaimRequest(
            request_id=6,
            service_url="https://relay.example.com/api",
            claim_token="A" * 22 + "_-x",
            broker_pin=hashlib.sha256(b"broker").digest(),
            broker_host="mqtt.example.com",
            broker_port=8883,
        ),
        SetClaimRequest(
            request_id=7, service_url="https://relay.example.com", claim_token="t" * 43
        ),
        CommitRequest(request_id=8),
        StatusRequest(request_id=9),
        IdentifyRequest(request_id=10),
        FactoryResetRequest(request_id=11),
    ]
    responses: list[Response] = [
        OkResponse(
            request_id=1,
            command=CommandType.INFO,
            result=InfoResult(
                device_id=DEVICE_ID,
                model="IOB Pi Sensor",
                firmware_version="1.0.0",
                protocol_version=1,
                claimed=False,
            ),
        ),
        OkResponse(
            request_id=2,
            command=CommandType.SCAN_WIFI,
            result=ScanWifiResult(
                networks=(
                    WifiNetwork(ssid=b"Home", rssi=-40, security=WifiSecurity.WPA_PERSONAL),
                    WifiNetwork(ssid=b"\xff\x00", rssi=-90, security=WifiSecurity.OPEN),
                )
            ),
        ),
        OkResponse(request_id=3, command=CommandType.SET_WIFI, result=AckResult()),
        OkResponse(
            request_id=8, command=CommandType.COMMIT, result=CommitResult(timeout_seconds=180)
        ),
        OkResponse(
            request_id=9,
            command=CommandType.STATUS,
            result=StatusResult(
                state=DeviceState.PROVISIONING, diagnostic=DiagnosticCode.WIFI_AUTH_FAILED
            ),
        ),
        ErrorResponse(
            request_id=8,
            command=CommandType.COMMIT,
            error="not_ready",
            message="set_wifi first",
        ),
        ErrorResponse(request_id=0, command=None, error="unknown_field"),
    ]
    invalid_requests = [
        '{"id":1,"type":"reboot"}',
        '{"extra":1,"id":1,"type":"info"}',
        '{"type":"info"}',
        '{"id":"1","type":"info"}',
        '{"id":0,"type":"info"}',
        '{"hidden":false,"id":3,"ssid":"","type":"set_wifi"}',
        '{"hidden":false,"id":3,"passphrase":"short","ssid":"SG9tZQ","type":"set_wifi"}',
        (
            '{"claim_token":"AAAAAAAAAAAAAAAAAAAAAAAA","id":6,"service_url":"http://relay.local",'
            '"type":"set_claim"}'
        ),
        (
            '{"claim_token":"AAAAAAAAAAAAAAAAAAAAAAAA","id":6,"service_url":"ftp://relay.local",'
            '"type":"set_claim"}'
        ),
        '{"id": 1, "type": "info"}',
    ]
    return {
        "description": "Command and result messages (canonical JSON)",
        "requests": [encode_request(request).decode() for request in requests],
        "responses": [encode_response(response).decode() for response in responses],
        "invalid_requests": [
            {"input": text, "error": _error_code(decode_request, text.encode())}
            for text in invalid_requests
        ],
        "invalid_responses": [
            {"input": text, "error": _error_code(decode_response, text.encode())}
            for text in [
                '{"id":1,"ok":true,"result":{},"type":"info"}',
                '{"id":1,"ok":true,"result":{"state":"asleep"},"type":"status"}',
                '{"error":"Bad Code","id":1,"ok":false}',
            ]
        ],
    }


def build_claim() -> dict[str, Any]:
    identity = _identity()
    token = "q6Zr0v1i7i5b3a8kQ2m4Yw"  # noqa: S105 - test vector
    claim = ClaimConfirmation.create(
        identity, token, clock=lambda: 1_750_000_000, random_bytes=ReplayRandom(bytes(16))
    )
    release = ReleaseNotice.create(
        identity,
        ReleaseReason.FACTORY_RESET,
        clock=lambda: 1_750_000_100,
        random_bytes=ReplayRandom(bytes(range(16))),
    )
    return {
        "description": "Device-signed claim confirmation and release notice",
        "device_id": DEVICE_ID,
        "device_public_key": identity.public_key.hex(),
        "claim": {
            "claim_token": token,
            "nonce": claim.nonce.hex(),
            "timestamp": claim.timestamp,
            "signed_bytes": encode_fields(
                "iob/v1/claim-confirmation",
                {
                    "claim_token": token,
                    "device_id": DEVICE_ID,
                    "nonce": claim.nonce,
                    "timestamp": claim.timestamp,
                },
            ).hex(),
            "json": claim.to_json().decode(),
        },
        "release": {
            "reason": release.reason.value,
            "nonce": release.nonce.hex(),
            "timestamp": release.timestamp,
            "json": release.to_json().decode(),
        },
    }


def build_zero_touch() -> dict[str, Any]:
    identity = _identity()
    nonce = bytes(range(0xF0, 0x100))
    statement = ZeroTouchConfirmation.create(
        identity, clock=lambda: 1_750_000_200, random_bytes=ReplayRandom(nonce)
    )
    return {
        "description": (
            "Device-signed zero-touch confirmation: a pre-assigned device asks to be owned "
            "(Ed25519 over encode_fields('iob/v1/zero-touch', {device_id, nonce, timestamp}))"
        ),
        "device_id": DEVICE_ID,
        "device_public_key": identity.public_key.hex(),
        "nonce": statement.nonce.hex(),
        "timestamp": statement.timestamp,
        "signed_bytes": encode_fields(
            "iob/v1/zero-touch",
            {"device_id": DEVICE_ID, "nonce": statement.nonce, "timestamp": statement.timestamp},
        ).hex(),
        "signature": statement.signature.hex(),
        "json": statement.to_json().decode(),
    }


def _refusal(kind: CredentialKind, *, claimed: bool) -> dict[str, Any]:
    """A hello of a kind the device does not take in this state, and the device's answer."""
    identity = _identity()
    rng = SeededRandom(f"refused {kind.value}")
    if kind is CredentialKind.QR:
        client = ClientSession.for_qr(
            _setup_code().qr_payload(identity.fingerprint), random_bytes=rng
        )
    elif kind is CredentialKind.MANUAL:
        client = ClientSession.for_manual_code(
            _setup_code().manual_code(),
            device_id=DEVICE_ID,
            device_public_key=identity.public_key,
            random_bytes=rng,
        )
    else:
        client = ClientSession.for_owner(
            device_id=DEVICE_ID,
            device_public_key=identity.public_key,
            owner_secret=OWNER_SECRET,
            random_bytes=rng,
        )
    device = (
        DeviceSession.for_owner(identity, owner_secret=OWNER_SECRET)
        if claimed
        else DeviceSession(identity, _setup_code())
    )
    hello = client.start()
    code = _error_code(device.handle_client_hello, hello)
    assert code == (OwnerSessionRequiredError if claimed else SetupCodeRequiredError).code
    return {
        "device": "claimed" if claimed else "unclaimed",
        "kind": kind.value,
        "client_hello": hello.hex(),
        "error": code,
        "error_frame": encode_error_frame(code).hex(),
    }


def build_owner() -> dict[str, Any]:
    identity = _identity()
    requests: list[Request] = [
        SetClaimRequest(
            request_id=6,
            service_url="https://relay.example.com",
            claim_token="t" * 43,
            owner_secret=OWNER_SECRET,
        ),
        SetOwnerSecretRequest(request_id=12, owner_secret=NEXT_OWNER_SECRET),
    ]
    responses: list[Response] = [
        OkResponse(request_id=12, command=CommandType.SET_OWNER_SECRET, result=AckResult()),
        ErrorResponse(
            request_id=6,
            command=CommandType.SET_CLAIM,
            error="already_claimed",
            message="the device already has an owner",
        ),
        ErrorResponse(
            request_id=8,
            command=CommandType.COMMIT,
            error="owner_secret_required",
            message="set_claim carried no owner secret",
        ),
        ErrorResponse(request_id=3, command=CommandType.SET_WIFI, error="owner_session_required"),
    ]
    invalid_requests = [
        (
            '{"claim_token":"AAAAAAAAAAAAAAAAAAAAAAAA","id":6,"owner_secret":"AAAA",'
            '"service_url":"https://relay.local","type":"set_claim"}'
        ),
        '{"id":12,"owner_secret":"' + "A" * 43 + '","type":"set_owner_secret"}',
        '{"id":12,"type":"set_owner_secret"}',
        (
            '{"id":12,"owner_secret":"QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=",'
            '"type":"set_owner_secret"}'
        ),
    ]
    return {
        "description": (
            "Owner sessions: a claimed device's only credential is the 32-byte owner secret sent "
            "with set_claim (kind 'owner', wire 0x03); label kinds are refused once claimed"
        ),
        "device_id": DEVICE_ID,
        "device_private_key_seed": DEVICE_SEED.hex(),
        "device_public_key": identity.public_key.hex(),
        "owner_secret": OWNER_SECRET.hex(),
        "owner_secret_b64url": b64url_encode(OWNER_SECRET),
        "pake_password_owner": pake_password(CredentialKind.OWNER, DEVICE_ID, OWNER_SECRET).hex(),
        "requests": [encode_request(request).decode() for request in requests],
        "responses": [encode_response(response).decode() for response in responses],
        "invalid_requests": [
            {"input": text, "error": _error_code(decode_request, text.encode())}
            for text in invalid_requests
        ],
        "handshake": _handshake_case(CredentialKind.OWNER),
        "refusals": [
            _refusal(CredentialKind.QR, claimed=True),
            _refusal(CredentialKind.MANUAL, claimed=True),
            _refusal(CredentialKind.OWNER, claimed=False),
        ],
    }


BUILDERS = {
    "canonical": build_canonical,
    "identity": build_identity,
    "payload": build_payload,
    "handshake": build_handshake,
    "framing": build_framing,
    "commands": build_commands,
    "claim": build_claim,
    "zero_touch": build_zero_touch,
    "owner": build_owner,
}


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    VECTOR_DIR.mkdir(exist_ok=True)
    for name, builder in BUILDERS.items():
        (VECTOR_DIR / f"{name}.json").write_text(render(builder()), encoding="utf-8")
        print(f"wrote {name}.json")  # noqa: T201


if __name__ == "__main__":
    main()
