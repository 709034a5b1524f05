"""Handshake and channel: happy paths, attacks, and the state machine's edges."""

from __future__ import annotations

import hmac

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from iob_protocol import (
    ClientSession,
    CounterExhaustedError,
    CredentialKind,
    DeviceIdentity,
    DeviceIdMismatchError,
    DeviceKeyMismatchError,
    DeviceSession,
    FrameAuthenticationError,
    FrameTooLargeError,
    FrameType,
    HandshakeSignatureError,
    HandshakeTimeoutError,
    InvalidKeyError,
    MalformedHandshakeError,
    ManualCode,
    OutOfOrderFrameError,
    ProtocolError,
    QrPayload,
    RemoteError,
    ReplayedFrameError,
    SessionClosedError,
    SessionState,
    SetupCode,
    TrustAnchor,
    UnexpectedMessageError,
    UnsupportedVersionError,
    WrongSetupCodeError,
    decode_frame,
    encode_error_frame,
    encode_frame,
)
from iob_protocol.payload import is_trivial_passcode, pake_password
from iob_protocol.session import (
    MAX_COUNTER,
    MAX_PLAINTEXT_SIZE,
    derive_session_keys,
    device_confirmation,
    pake_identities,
    transcript_hash,
)
from spake2 import SPAKE2_A

from tests.plugins.clock import MONOTONIC_START, FakeClock

from .helpers import Device, SeededRandom, handshake, make_device

DEVICE = make_device("session device")
OTHER = make_device("another device")
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _pair(
    device: Device = DEVICE, *, manual: bool = False, clock: FakeClock[float] | None = None
) -> tuple[ClientSession, DeviceSession]:
    clock = clock or FakeClock(MONOTONIC_START)
    if manual:
        client = ClientSession.for_manual_code(
            device.code.manual_code(),
            device_id=device.identity.device_id,
            device_public_key=device.identity.public_key,
            clock=clock,
        )
    else:
        client = ClientSession.for_qr(device.qr, clock=clock)
    return client, DeviceSession(device.identity, device.code, clock=clock)


def _established(*, manual: bool = False) -> tuple[ClientSession, DeviceSession]:
    client, device = _pair(manual=manual)
    handshake(client, device)
    return client, device


@pytest.mark.parametrize("manual", [False, True])
def test_handshake_both_credentials(manual: bool) -> None:
    client, device = _established(manual=manual)
    assert client.state is device.state is SessionState.ESTABLISHED
    assert client.session_id == device.session_id
    assert client.session_id is not None
    assert len(client.session_id) == 16
    assert client.device_public_key == DEVICE.identity.public_key
    expected = CredentialKind.MANUAL if manual else CredentialKind.QR
    assert device.credential_kind is expected
    assert device.open(client.seal(b"ping")) == b"ping"
    assert client.open(device.seal(b"pong")) == b"pong"


def test_message_sizes() -> None:
    client, device = _pair()
    hello, device_hello, finish = handshake(client, device)
    assert (len(hello), len(device_hello), len(finish)) == (57, 168, 38)


# --- properties: channel ------------------------------------------------------------------------


@FAST
@given(st.lists(st.binary(max_size=600), min_size=1, max_size=6))
def test_round_trip_both_directions(messages: list[bytes]) -> None:
    client, device = _established()
    for message in messages:
        assert device.open(client.seal(message)) == message
        assert client.open(device.seal(message[::-1])) == message[::-1]


@FAST
@given(st.binary(max_size=200), st.data())
def test_any_bit_flip_rejected(message: bytes, data: st.DataObject) -> None:
    client, device = _established()
    frame = bytearray(client.seal(message))
    bit = data.draw(st.integers(0, len(frame) * 8 - 1))
    frame[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(ProtocolError):
        device.open(bytes(frame))
    assert device.state is SessionState.FAILED
    with pytest.raises(SessionClosedError):
        device.open(client.seal(message))


@FAST
@given(st.integers(1, 5), st.data())
def test_replay_rejected(count: int, data: st.DataObject) -> None:
    client, device = _established()
    frames = [client.seal(bytes([index])) for index in range(count)]
    for frame in frames:
        device.open(frame)
    with pytest.raises(ReplayedFrameError):
        device.open(data.draw(st.sampled_from(frames)))
    assert device.state is SessionState.FAILED


@FAST
@given(st.integers(2, 5), st.data())
def test_reorder_rejected(count: int, data: st.DataObject) -> None:
    client, device = _established()
    frames = [client.seal(bytes([index])) for index in range(count)]
    skipped = data.draw(st.integers(1, count - 1))
    with pytest.raises(OutOfOrderFrameError):
        device.open(frames[skipped])


def test_frames_of_one_direction_do_not_open_in_the_other() -> None:
    client, _ = _established()
    with pytest.raises(FrameAuthenticationError):
        client.open(client.seal(b"reflected"))


def test_a_reflected_frame_is_refused_as_protocol_md_describes() -> None:
    """§6: the counter check comes first (lower: replayed, higher: out of order); only a
    reflected frame whose counter equals the receiver's next reaches decryption and fails it."""
    _, device = _established()
    device.seal(b"0")
    with pytest.raises(OutOfOrderFrameError):
        device.open(device.seal(b"1"))  # counter 1, the device expects 0
    client, device = _established()
    for index in range(2):
        device.open(client.seal(bytes([index])))
    with pytest.raises(ReplayedFrameError):
        device.open(device.seal(b"0"))  # counter 0, the device expects 2
    _, device = _established()
    with pytest.raises(FrameAuthenticationError):
        device.open(device.seal(b"0"))  # counter 0 = expected: the other direction's key
    with pytest.raises(SessionClosedError):
        device.open(b"")  # and the channel is closed for good


def test_frames_of_one_session_do_not_open_in_another() -> None:
    client_a, _ = _established()
    _, device_b = _established()
    with pytest.raises(FrameAuthenticationError):
        device_b.open(client_a.seal(b"cross-session"))


# --- properties: handshake ----------------------------------------------------------------------


passcodes = st.from_regex(r"[0-9]{9}", fullmatch=True).filter(
    lambda code: not is_trivial_passcode(code) and code != DEVICE.code.passcode
)


@SLOW
@given(passcodes)
def test_wrong_manual_code_fails_at_key_confirmation(passcode: str) -> None:
    client = ClientSession.for_manual_code(
        ManualCode(passcode),
        device_id=DEVICE.identity.device_id,
        device_public_key=DEVICE.identity.public_key,
    )
    device = DeviceSession(DEVICE.identity, DEVICE.code)
    device_hello = device.handle_client_hello(client.start())
    with pytest.raises(WrongSetupCodeError):
        client.handle_device_hello(device_hello)
    assert client.state is SessionState.FAILED
    assert client.session_id is None
    # The client tells the device why; the device fails the attempt.
    with pytest.raises(RemoteError) as raised:
        device.handle_client_finish(encode_error_frame(WrongSetupCodeError.code))
    assert raised.value.remote_code == "wrong_setup_code"
    assert device.state is SessionState.FAILED


@SLOW
@given(st.binary(min_size=32, max_size=32))
def test_forged_client_finish_rejected_by_device(forged: bytes) -> None:
    client, device = _pair()
    client.handle_device_hello(device.handle_client_hello(client.start()))
    with pytest.raises(WrongSetupCodeError):
        device.handle_client_finish(encode_frame(FrameType.CLIENT_FINISH, forged))
    with pytest.raises(SessionClosedError):
        device.seal(b"x")


@SLOW
@given(passcodes, st.binary(min_size=8, max_size=8))
def test_wrong_guess_reveals_nothing_usable_offline(guess: str, seed: bytes) -> None:
    """An attacking client knows its own SPAKE2 secret and the device's answer to a wrong
    guess.  Re-deriving the keys for the *right* code from that record still does not
    reproduce the device's confirmation, so the record cannot be used to test codes offline.
    """
    device_id = DEVICE.identity.device_id
    kind = CredentialKind.MANUAL
    attacker = ClientSession.for_manual_code(
        ManualCode(guess),
        device_id=device_id,
        device_public_key=DEVICE.identity.public_key,
        random_bytes=SeededRandom(seed),
    )
    hello = attacker.start()
    device_hello = decode_frame(
        DeviceSession(DEVICE.identity, DEVICE.code).handle_client_hello(hello)
    ).body
    device_pake, device_key = device_hello[1:34], device_hello[34:66]
    signature, device_confirm = device_hello[66:130], device_hello[130:]
    transcript = transcript_hash(decode_frame(hello).body, device_pake, device_key)
    for candidate in (guess, DEVICE.code.passcode):
        offline = SPAKE2_A(
            pake_password(kind, device_id, candidate.encode()),
            idA=pake_identities(kind, device_id)[0],
            idB=pake_identities(kind, device_id)[1],
            entropy_f=SeededRandom(seed),  # the attacker's own exponent, replayed
        )
        offline.start()
        keys = derive_session_keys(offline.finish(device_pake), transcript)
        assert not hmac.compare_digest(
            device_confirmation(keys, transcript, signature), device_confirm
        )


@SLOW
@given(st.binary(min_size=8, max_size=8))
def test_evil_twin_refused_before_any_secret(seed: bytes) -> None:
    """Worst case: the twin even knows the setup code, but not the real device's key."""
    twin_identity = DeviceIdentity.generate(
        DEVICE.identity.device_id, random_bytes=SeededRandom(seed)
    )
    for client in (
        ClientSession.for_qr(DEVICE.qr),
        ClientSession.for_manual_code(
            DEVICE.code.manual_code(),
            device_id=DEVICE.identity.device_id,
            device_public_key=DEVICE.identity.public_key,
        ),
    ):
        twin = DeviceSession(twin_identity, DEVICE.code)
        twin_hello = twin.handle_client_hello(client.start())
        with pytest.raises(DeviceKeyMismatchError):
            client.handle_device_hello(twin_hello)
        assert client.state is SessionState.FAILED
        assert client.device_public_key is None
        with pytest.raises(SessionClosedError):
            client.seal(b"wifi password")


def test_twin_presenting_the_real_key_cannot_sign() -> None:
    twin_identity = DeviceIdentity.generate(
        DEVICE.identity.device_id, random_bytes=SeededRandom("t")
    )
    client = ClientSession.for_qr(DEVICE.qr)
    body = bytearray(
        decode_frame(
            DeviceSession(twin_identity, DEVICE.code).handle_client_hello(client.start())
        ).body
    )
    body[34:66] = DEVICE.identity.public_key
    with pytest.raises(HandshakeSignatureError):
        client.handle_device_hello(encode_frame(FrameType.DEVICE_HELLO, bytes(body)))


def test_tampered_device_hello_fields() -> None:
    for offset in (0, 1, 40, 70, 140):
        client, device = _pair()
        body = bytearray(decode_frame(device.handle_client_hello(client.start())).body)
        body[offset] ^= 0x01
        with pytest.raises(ProtocolError):
            client.handle_device_hello(encode_frame(FrameType.DEVICE_HELLO, bytes(body)))


# --- state machine edges ------------------------------------------------------------------------


def test_qr_for_another_device_refused() -> None:
    with pytest.raises(DeviceIdMismatchError):
        ClientSession(DEVICE.qr, device_id=OTHER.identity.device_id, trust=DEVICE.qr.trust_anchor)


def test_setup_code_of_another_device_refused() -> None:
    with pytest.raises(DeviceIdMismatchError):
        DeviceSession(DEVICE.identity, OTHER.code)


def test_client_addressing_another_device() -> None:
    client = ClientSession.for_qr(OTHER.qr)
    device = DeviceSession(DEVICE.identity, DEVICE.code)
    with pytest.raises(DeviceIdMismatchError):
        device.handle_client_hello(client.start())
    assert device.state is SessionState.FAILED


def test_client_handshake_timeout(fake_clock: FakeClock[float]) -> None:
    clock = fake_clock
    client, device = _pair(clock=clock)
    device_hello = device.handle_client_hello(client.start())
    clock.advance(60.5)
    with pytest.raises(HandshakeTimeoutError):
        client.handle_device_hello(device_hello)


def test_device_handshake_timeout(fake_clock: FakeClock[float]) -> None:
    clock = fake_clock
    client, device = _pair(clock=clock)
    finish = client.handle_device_hello(device.handle_client_hello(client.start()))
    clock.advance(61)
    with pytest.raises(HandshakeTimeoutError) as raised:
        device.handle_client_finish(finish)
    assert raised.value.diagnostic is not None


def test_out_of_order_calls() -> None:
    client, device = _pair()
    with pytest.raises(UnexpectedMessageError):
        client.handle_device_hello(b"")
    with pytest.raises(SessionClosedError):
        client.start()
    with pytest.raises(UnexpectedMessageError):
        device.handle_client_finish(b"")
    client, device = _pair()
    hello = client.start()
    with pytest.raises(UnexpectedMessageError):
        client.handle_device_hello(hello)  # a CLIENT_HELLO where DEVICE_HELLO belongs


def test_remote_error_during_handshake() -> None:
    client, _ = _pair()
    client.start()
    with pytest.raises(RemoteError) as raised:
        client.handle_device_hello(encode_error_frame("locked_out"))
    assert raised.value.remote_code == "locked_out"


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda body: body[:-1], MalformedHandshakeError),
        (lambda body: b"\x02" + body[1:], UnsupportedVersionError),
        (lambda body: body[:1] + b"\x09" + body[2:], MalformedHandshakeError),
        (lambda body: body[:18] + b"A" + b"\xff" * 32, MalformedHandshakeError),
        (lambda body: body[:18] + b"B" + body[19:], MalformedHandshakeError),
    ],
)
def test_malformed_client_hello(mutate: object, error: type[Exception]) -> None:
    client, device = _pair()
    body = decode_frame(client.start()).body
    with pytest.raises(error):
        device.handle_client_hello(encode_frame(FrameType.CLIENT_HELLO, mutate(body)))  # type: ignore[operator]


def test_reflected_pake_message_refused() -> None:
    client, device = _pair()
    hello = decode_frame(client.start()).body
    device_hello = bytearray(
        decode_frame(device.handle_client_hello(encode_frame(FrameType.CLIENT_HELLO, hello))).body
    )
    device_hello[1:34] = hello[18:]  # the client's own SPAKE2 message
    with pytest.raises(ProtocolError):
        client.handle_device_hello(encode_frame(FrameType.DEVICE_HELLO, bytes(device_hello)))


def test_malformed_device_hello() -> None:
    client, device = _pair()
    body = decode_frame(device.handle_client_hello(client.start())).body
    with pytest.raises(MalformedHandshakeError):
        client.handle_device_hello(encode_frame(FrameType.DEVICE_HELLO, body[:-1]))
    client, device = _pair()
    body = decode_frame(device.handle_client_hello(client.start())).body
    with pytest.raises(UnsupportedVersionError):
        client.handle_device_hello(encode_frame(FrameType.DEVICE_HELLO, b"\x02" + body[1:]))


def test_malformed_client_finish() -> None:
    client, device = _pair()
    finish = client.handle_device_hello(device.handle_client_hello(client.start()))
    with pytest.raises(MalformedHandshakeError):
        device.handle_client_finish(
            encode_frame(FrameType.CLIENT_FINISH, decode_frame(finish).body[:-1])
        )


def test_channel_edges() -> None:
    client, device = _established()
    with pytest.raises(FrameTooLargeError):
        client.seal(bytes(MAX_PLAINTEXT_SIZE + 1))
    assert client.state is SessionState.ESTABLISHED  # a local mistake does not end the session
    assert len(client.seal(bytes(MAX_PLAINTEXT_SIZE))) == 16 * 1024
    with pytest.raises(RemoteError):
        device.open(encode_error_frame("internal"))
    client, device = _established()
    with pytest.raises(UnexpectedMessageError):
        device.open(encode_frame(FrameType.CLIENT_FINISH, bytes(32)))
    client, device = _established()
    with pytest.raises(FrameAuthenticationError):
        device.open(encode_frame(FrameType.DATA, bytes(23)))


def test_counter_exhaustion() -> None:
    client, _ = _established()
    channel = client._channel
    assert channel is not None
    channel._send_counter = MAX_COUNTER
    client.seal(b"last")
    with pytest.raises(CounterExhaustedError):
        client.seal(b"one too many")
    assert client.state is SessionState.FAILED


def test_close() -> None:
    client, device = _established()
    client.close()
    assert client.state is SessionState.CLOSED
    with pytest.raises(SessionClosedError):
        client.seal(b"x")
    with pytest.raises(SessionClosedError):
        client._channel.open(b"")  # type: ignore[union-attr]
    with pytest.raises(SessionClosedError):
        client._channel.seal(b"")  # type: ignore[union-attr]
    assert client._channel is not None
    assert client._channel.closed
    fresh, _ = _pair()
    fresh.close()
    assert fresh.state is SessionState.CLOSED
    failed, _ = _pair()
    failed.start()
    with pytest.raises(RemoteError):
        failed.handle_device_hello(encode_error_frame("busy"))
    failed.close()
    assert failed.state is SessionState.FAILED
    device.close()
    with pytest.raises(SessionClosedError):
        device.open(b"")


def test_seal_before_established() -> None:
    client, _ = _pair()
    with pytest.raises(SessionClosedError):
        client.seal(b"too early")


def test_trust_anchor_kinds() -> None:
    anchor = TrustAnchor.from_fingerprint(DEVICE.identity.fingerprint)
    assert anchor.matches(DEVICE.identity.public_key)
    assert not anchor.matches(OTHER.identity.public_key)
    assert not anchor.matches(b"short")
    with pytest.raises(InvalidKeyError):
        TrustAnchor.from_fingerprint(b"short")
    exact = TrustAnchor.from_public_key(DEVICE.identity.public_key)
    assert exact.matches(DEVICE.identity.public_key)
    assert not exact.matches(OTHER.identity.public_key)


def test_generic_constructor_with_manual_code_and_fingerprint() -> None:
    client = ClientSession(
        DEVICE.code.manual_code(),
        device_id=DEVICE.identity.device_id,
        trust=TrustAnchor.from_fingerprint(DEVICE.identity.fingerprint),
    )
    handshake(client, DeviceSession(DEVICE.identity, DEVICE.code))
    assert client.state is SessionState.ESTABLISHED


def test_setup_code_types() -> None:
    code = SetupCode.generate(DEVICE.identity.device_id, random_bytes=SeededRandom("x"))
    assert isinstance(code.qr_payload(DEVICE.identity.fingerprint), QrPayload)
