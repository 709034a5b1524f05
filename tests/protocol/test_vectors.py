"""The committed vectors pin the wire format: the implementation must reproduce them exactly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from iob_protocol import (
    ChunkReassembler,
    ClaimConfirmation,
    ClientSession,
    CredentialKind,
    CredentialRefusedError,
    DeviceIdentity,
    DeviceSession,
    ManualCode,
    OwnerSecret,
    QrPayload,
    ReleaseNotice,
    SetClaimRequest,
    SetupCode,
    SetupVerifier,
    ZeroTouchConfirmation,
    client_hello_kind,
    decode_request,
    decode_response,
    encode_error_frame,
    encode_fields,
    encode_request,
    encode_response,
    parse_canonical_json,
)

from tests.plugins.clock import MONOTONIC_START, FakeClock

from .helpers import ReplayRandom
from .vectors_build import BUILDERS, VECTOR_DIR, render


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTOR_DIR / f"{name}.json").read_text("utf-8"))
    return data


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_vectors_reproduced_byte_for_byte(name: str) -> None:
    committed = (VECTOR_DIR / f"{name}.json").read_text("utf-8")
    assert render(BUILDERS[name]()) == committed


def test_no_stray_vector_files() -> None:
    assert {path.stem for path in Path(VECTOR_DIR).glob("*.json")} == set(BUILDERS)


def _typed(value: dict[str, Any]) -> bytes | str | int | bool:
    ((kind, raw),) = value.items()
    result: bytes | str | int | bool = bytes.fromhex(raw) if kind == "bytes" else raw
    return result


def test_canonical_vectors_consumed() -> None:
    vectors = _load("canonical")
    for case in vectors["fields"]:
        fields = {name: _typed(value) for name, value in case["fields"].items()}
        assert encode_fields(case["domain"], fields).hex() == case["encoded"]
    for case in vectors["json"]:
        assert parse_canonical_json(case["encoded"].encode()) == case["value"]


def _replay(client: ClientSession, device: DeviceSession, case: dict[str, Any]) -> None:
    """Run ``case``'s recorded handshake: every message, the session id (on both sides) and
    the recorded frames (each way the case has) come out as recorded."""
    assert client.start().hex() == case["client_hello"]
    device_hello = device.handle_client_hello(bytes.fromhex(case["client_hello"]))
    assert device_hello.hex() == case["device_hello"]
    assert client.handle_device_hello(device_hello).hex() == case["client_finish"]
    device.handle_client_finish(bytes.fromhex(case["client_finish"]))
    for side in (client, device):
        assert side.session_id is not None
        assert side.session_id.hex() == case["session_id"]
    for item in case["client_to_device"]:
        assert device.open(bytes.fromhex(item["frame"])) == item["plaintext"].encode()
    for item in case.get("device_to_client", []):
        assert client.open(bytes.fromhex(item["frame"])) == item["plaintext"].encode()


def test_handshake_replayed_from_recorded_entropy() -> None:
    vectors = _load("handshake")
    identity = DeviceIdentity.from_seed(
        vectors["device_id"], bytes.fromhex(vectors["device_private_key_seed"])
    )
    assert identity.public_key.hex() == vectors["device_public_key"]
    code = SetupCode(
        vectors["device_id"], bytes.fromhex(vectors["setup_secret"]), vectors["passcode"]
    )
    for case in vectors["cases"]:
        client_random = ReplayRandom(bytes.fromhex(case["client_entropy"]))
        if case["kind"] == CredentialKind.QR:
            client = ClientSession.for_qr(
                code.qr_payload(identity.fingerprint),
                clock=FakeClock(MONOTONIC_START),
                random_bytes=client_random,
            )
        else:
            client = ClientSession.for_manual_code(
                code.manual_code(),
                device_id=identity.device_id,
                device_public_key=identity.public_key,
                clock=FakeClock(MONOTONIC_START),
                random_bytes=client_random,
            )
        device = DeviceSession(
            identity,
            code,
            clock=FakeClock(MONOTONIC_START),
            random_bytes=ReplayRandom(bytes.fromhex(case["device_entropy"])),
        )
        _replay(client, device, case)


def test_payload_vectors_consumed() -> None:
    vectors = _load("payload")
    qr = QrPayload.parse(vectors["qr"])
    assert qr.device_id == vectors["device_id"]
    assert qr.setup_secret.hex() == vectors["setup_secret"]
    assert qr.fingerprint.hex() == vectors["fingerprint"]
    assert ManualCode.parse(vectors["manual"]).passcode == vectors["passcode"]
    for variant in vectors["manual_variants_accepted"]:
        assert ManualCode.parse(variant).passcode == vectors["passcode"]
    verifier = SetupVerifier.decode(vectors["verifier"]["encoded"])
    assert verifier.salt.hex() == vectors["verifier"]["salt"]
    assert verifier.verify(vectors["device_id"], qr)
    assert verifier.verify(vectors["device_id"], ManualCode(vectors["passcode"]))


def test_command_vectors_round_trip() -> None:
    vectors = _load("commands")
    for text in vectors["requests"]:
        assert encode_request(decode_request(text.encode())).decode() == text
    for text in vectors["responses"]:
        assert encode_response(decode_response(text.encode())).decode() == text


def test_framing_vectors_consumed() -> None:
    vectors = _load("framing")
    reassembler = ChunkReassembler()
    results = [reassembler.feed(bytes.fromhex(chunk)) for chunk in vectors["chunks"]["chunks"]]
    assert results[-1] is not None
    assert results[-1].hex() == vectors["chunks"]["frame"]
    assert all(result is None for result in results[:-1])


def test_claim_vectors_verify() -> None:
    vectors = _load("claim")
    key = bytes.fromhex(vectors["device_public_key"])
    claim = ClaimConfirmation.from_json(vectors["claim"]["json"].encode())
    claim.verify(key, now=vectors["claim"]["timestamp"] + 5)
    release = ReleaseNotice.from_json(vectors["release"]["json"].encode())
    release.verify(key, now=vectors["release"]["timestamp"])


def test_zero_touch_vector_verifies() -> None:
    vectors = _load("zero_touch")
    key = bytes.fromhex(vectors["device_public_key"])
    statement = ZeroTouchConfirmation.from_json(vectors["json"].encode())
    assert statement.device_id == vectors["device_id"]
    assert statement.nonce.hex() == vectors["nonce"]
    assert statement.signature.hex() == vectors["signature"]
    signed = encode_fields(
        "iob/v1/zero-touch",
        {
            "device_id": statement.device_id,
            "nonce": statement.nonce,
            "timestamp": statement.timestamp,
        },
    )
    assert signed.hex() == vectors["signed_bytes"]
    statement.verify(key, now=vectors["timestamp"])
    assert statement.to_json().decode() == vectors["json"]


def test_owner_vectors_replayed() -> None:
    """The owner handshake replays from its recorded entropy; refusals and messages match."""
    vectors = _load("owner")
    identity = DeviceIdentity.from_seed(
        vectors["device_id"], bytes.fromhex(vectors["device_private_key_seed"])
    )
    secret = bytes.fromhex(vectors["owner_secret"])
    assert OwnerSecret.decode(vectors["owner_secret_b64url"]).secret == secret
    case = vectors["handshake"]
    assert case["kind"] == CredentialKind.OWNER
    client = ClientSession.for_owner(
        device_id=identity.device_id,
        device_public_key=identity.public_key,
        owner_secret=secret,
        clock=FakeClock(MONOTONIC_START),
        random_bytes=ReplayRandom(bytes.fromhex(case["client_entropy"])),
    )
    device = DeviceSession.for_owner(
        identity,
        owner_secret=secret,
        clock=FakeClock(MONOTONIC_START),
        random_bytes=ReplayRandom(bytes.fromhex(case["device_entropy"])),
    )
    _replay(client, device, case)
    for text in vectors["requests"]:
        assert encode_request(decode_request(text.encode())).decode() == text
    claim = decode_request(vectors["requests"][0].encode())
    assert isinstance(claim, SetClaimRequest)
    assert claim.owner_secret == secret
    for text in vectors["responses"]:
        assert encode_response(decode_response(text.encode())).decode() == text
    code = SetupCode(identity.device_id, bytes(range(15)), "271828182")
    for refusal in vectors["refusals"]:
        refusing = (
            DeviceSession.for_owner(identity, owner_secret=secret)
            if refusal["device"] == "claimed"
            else DeviceSession(identity, code)
        )
        hello = bytes.fromhex(refusal["client_hello"])
        assert client_hello_kind(hello) == refusal["kind"]
        with pytest.raises(CredentialRefusedError) as raised:
            refusing.handle_client_hello(hello)
        assert raised.value.code == refusal["error"]
        assert encode_error_frame(raised.value.code).hex() == refusal["error_frame"]
