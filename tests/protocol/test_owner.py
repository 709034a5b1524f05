"""Owner sessions: once claimed, a device takes only its owner's secret, never its label."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from iob_protocol import (
    LABEL_KINDS,
    OWNER_SECRET_SIZE,
    ClientSession,
    CredentialKind,
    DeviceIdentity,
    DeviceKeyMismatchError,
    DeviceSession,
    FieldTypeError,
    FrameType,
    InvalidFieldError,
    MalformedHandshakeError,
    MissingFieldError,
    NoOwnerSecretError,
    OwnerSecret,
    OwnerSessionRequiredError,
    PayloadError,
    PayloadLengthError,
    RemoteError,
    SessionClosedError,
    SessionError,
    SessionState,
    SetClaimRequest,
    SetOwnerSecretRequest,
    SetupCodeRequiredError,
    TrivialCodeError,
    UnexpectedMessageError,
    WrongSetupCodeError,
    check_credential_kind,
    client_hello_kind,
    decode_frame,
    decode_request,
    encode_error_frame,
    encode_frame,
    encode_request,
    validate_owner_secret,
)
from iob_protocol.payload import pake_password

from tests.plugins.clock import MONOTONIC_START, FakeClock

from .helpers import SeededRandom, handshake, make_device

DEVICE = make_device("owner device")
SECRET = SeededRandom("owner secret")(OWNER_SECRET_SIZE)
TOKEN = "c" * 32
SLOW = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
secrets = st.binary(min_size=OWNER_SECRET_SIZE, max_size=OWNER_SECRET_SIZE).filter(
    lambda value: len(set(value)) > 1
)


def _owner_client(secret: bytes = SECRET, *, key: bytes | None = None) -> ClientSession:
    return ClientSession.for_owner(
        device_id=DEVICE.identity.device_id,
        device_public_key=key or DEVICE.identity.public_key,
        owner_secret=secret,
        clock=FakeClock(MONOTONIC_START),
    )


def _claimed(identity: DeviceIdentity = DEVICE.identity) -> DeviceSession:
    return DeviceSession.for_owner(identity, owner_secret=SECRET, clock=FakeClock(MONOTONIC_START))


def _label_clients() -> list[ClientSession]:
    return [
        ClientSession.for_qr(DEVICE.qr),
        ClientSession.for_manual_code(
            DEVICE.code.manual_code(),
            device_id=DEVICE.identity.device_id,
            device_public_key=DEVICE.identity.public_key,
        ),
    ]


# --- the secret ---------------------------------------------------------------------------------


def test_owner_secret_generate_encode_decode() -> None:
    secret = OwnerSecret.generate(random_bytes=SeededRandom("generate"))
    assert len(secret.secret) == OWNER_SECRET_SIZE
    assert secret.kind is CredentialKind.OWNER
    assert secret.pake_secret == secret.secret
    assert OwnerSecret.decode(secret.encode()) == secret
    assert secret.secret.hex() not in repr(secret)
    assert OwnerSecret.generate() != OwnerSecret.generate()  # the system source


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (bytes(31), PayloadLengthError),
        (bytes(33), PayloadLengthError),
        (bytes(32), TrivialCodeError),
        (b"\xff" * 32, TrivialCodeError),
    ],
)
def test_owner_secret_refuses(value: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        OwnerSecret(value)
    with pytest.raises(InvalidFieldError):
        validate_owner_secret(value)


def test_owner_secret_decode_refuses_bad_text() -> None:
    with pytest.raises(PayloadError):
        OwnerSecret.decode("not base64url!")
    with pytest.raises(PayloadLengthError):
        OwnerSecret.decode("QUJD")


def test_kinds() -> None:
    assert CredentialKind.OWNER.wire == 0x03
    assert CredentialKind.from_wire(0x03) is CredentialKind.OWNER
    assert frozenset({CredentialKind.QR, CredentialKind.MANUAL}) == LABEL_KINDS
    with pytest.raises(PayloadError):
        DEVICE.code.secret_for(CredentialKind.OWNER)  # the label holds no owner secret
    # The owner kind is bound into the password: the same bytes as a label kind differ.
    assert pake_password(CredentialKind.OWNER, "0123456789ABCDEF", SECRET) != pake_password(
        CredentialKind.QR, "0123456789ABCDEF", SECRET
    )


# --- the handshake ------------------------------------------------------------------------------


def test_owner_handshake() -> None:
    client, device = _owner_client(), _claimed()
    handshake(client, device)
    assert client.state is device.state is SessionState.ESTABLISHED
    assert device.credential_kind is CredentialKind.OWNER
    assert device.accepted_kinds == {CredentialKind.OWNER}
    assert client.device_public_key == DEVICE.identity.public_key
    assert device.open(client.seal(b"set_wifi")) == b"set_wifi"
    assert client.open(device.seal(b"ok")) == b"ok"


def test_unclaimed_device_accepts_the_label_kinds() -> None:
    assert DeviceSession(DEVICE.identity, DEVICE.code).accepted_kinds == LABEL_KINDS


@SLOW
@given(secrets)
def test_wrong_owner_secret_fails_at_key_confirmation(wrong: bytes) -> None:
    client, device = _owner_client(wrong), _claimed()
    device_hello = device.handle_client_hello(client.start())
    with pytest.raises(WrongSetupCodeError):
        client.handle_device_hello(device_hello)
    with pytest.raises(SessionClosedError):
        client.seal(b"wifi password")
    with pytest.raises(RemoteError):
        device.handle_client_finish(encode_error_frame(WrongSetupCodeError.code))
    assert device.state is SessionState.FAILED


@SLOW
@given(secrets)
def test_forged_owner_finish_rejected(forged: bytes) -> None:
    client, device = _owner_client(), _claimed()
    client.handle_device_hello(device.handle_client_hello(client.start()))
    with pytest.raises(WrongSetupCodeError):
        device.handle_client_finish(encode_frame(FrameType.CLIENT_FINISH, forged))


def test_evil_twin_refused_even_with_the_owner_secret() -> None:
    """A twin that somehow learned the secret still lacks the key stored at claim time."""
    twin = DeviceIdentity.generate(DEVICE.identity.device_id, random_bytes=SeededRandom("twin"))
    client = _owner_client()
    with pytest.raises(DeviceKeyMismatchError):
        client.handle_device_hello(_claimed(twin).handle_client_hello(client.start()))
    assert client.state is SessionState.FAILED


@pytest.mark.parametrize("index", [0, 1], ids=["qr", "manual"])
def test_claimed_device_refuses_the_label(index: int) -> None:
    client, device = _label_clients()[index], _claimed()
    hello = client.start()
    with pytest.raises(OwnerSessionRequiredError) as raised:
        device.handle_client_hello(hello)
    assert raised.value.code == "owner_session_required"
    assert device.state is SessionState.FAILED
    assert device.session_id is None  # nothing derived: no guess was tested
    with pytest.raises(RemoteError) as remote:
        client.handle_device_hello(encode_error_frame(raised.value.code))
    assert remote.value.remote_code == "owner_session_required"


def test_unclaimed_device_refuses_an_owner_secret() -> None:
    device = DeviceSession(DEVICE.identity, DEVICE.code)
    with pytest.raises(SetupCodeRequiredError):
        device.handle_client_hello(_owner_client().start())


def test_check_credential_kind_matrix() -> None:
    for kind in LABEL_KINDS:
        check_credential_kind(kind, claimed=False)
        with pytest.raises(OwnerSessionRequiredError):
            check_credential_kind(kind, claimed=True)
    check_credential_kind(CredentialKind.OWNER, claimed=True)
    with pytest.raises(SetupCodeRequiredError):
        check_credential_kind(CredentialKind.OWNER, claimed=False)
    with pytest.raises(NoOwnerSecretError):
        check_credential_kind(CredentialKind.OWNER, claimed=True, owner_secret_known=False)
    with pytest.raises(OwnerSessionRequiredError):
        check_credential_kind(CredentialKind.QR, claimed=True, owner_secret_known=False)


def test_client_hello_kind() -> None:
    assert client_hello_kind(_owner_client().start()) is CredentialKind.OWNER
    qr, manual = _label_clients()
    assert client_hello_kind(qr.start()) is CredentialKind.QR
    assert client_hello_kind(manual.start()) is CredentialKind.MANUAL
    body = decode_frame(_owner_client().start()).body
    with pytest.raises(MalformedHandshakeError):
        client_hello_kind(encode_frame(FrameType.CLIENT_HELLO, body[:1] + b"\x07" + body[2:]))
    with pytest.raises(MalformedHandshakeError):
        client_hello_kind(encode_frame(FrameType.CLIENT_HELLO, body[:-1]))
    with pytest.raises(UnexpectedMessageError):
        client_hello_kind(encode_frame(FrameType.CLIENT_FINISH, bytes(32)))
    with pytest.raises(RemoteError):
        client_hello_kind(encode_error_frame("busy"))


def test_device_session_holds_one_kind_of_secret() -> None:
    with pytest.raises(SessionError):
        DeviceSession(DEVICE.identity)
    with pytest.raises(SessionError):
        DeviceSession(DEVICE.identity, DEVICE.code, owner_secret=SECRET)
    with pytest.raises(TrivialCodeError):
        DeviceSession.for_owner(DEVICE.identity, owner_secret=bytes(32))


# --- messages -----------------------------------------------------------------------------------


def test_set_claim_carries_the_owner_secret() -> None:
    request = SetClaimRequest(
        request_id=3, service_url="https://r.example", claim_token=TOKEN, owner_secret=SECRET
    )
    decoded = decode_request(encode_request(request))
    assert decoded == request
    assert isinstance(decoded, SetClaimRequest)
    assert decoded.owner_secret == SECRET
    assert SECRET.hex() not in repr(request)
    assert OwnerSecret(SECRET).encode() not in repr(request)
    # Older clients' messages still parse; the device refuses to commit them instead.
    legacy = decode_request(
        b'{"claim_token":"' + TOKEN.encode() + b'","id":3,"service_url":"https://r.example",'
        b'"type":"set_claim"}'
    )
    assert isinstance(legacy, SetClaimRequest)
    assert legacy.owner_secret is None
    with pytest.raises(InvalidFieldError):
        SetClaimRequest(
            request_id=3, service_url="https://r.example", claim_token=TOKEN, owner_secret=b"x"
        )
    with pytest.raises(FieldTypeError):
        decode_request(
            b'{"claim_token":"' + TOKEN.encode() + b'","id":3,"owner_secret":"a+b",'
            b'"service_url":"https://r.example","type":"set_claim"}'
        )


def test_set_owner_secret_message() -> None:
    request = SetOwnerSecretRequest(request_id=9, owner_secret=SECRET)
    assert decode_request(encode_request(request)) == request
    assert SECRET.hex() not in repr(request)
    with pytest.raises(MissingFieldError):
        decode_request(b'{"id":9,"type":"set_owner_secret"}')
    with pytest.raises(InvalidFieldError):
        SetOwnerSecretRequest(request_id=9, owner_secret=bytes(32))
    with pytest.raises(InvalidFieldError):
        SetOwnerSecretRequest(request_id=0, owner_secret=SECRET)
