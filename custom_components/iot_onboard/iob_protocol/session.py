"""The local secure session: SPAKE2 on the setup code, a signed transcript, an AEAD channel.

Client (Home Assistant) and device are separate sans-I/O state machines: they take and return
encoded frames and never touch a socket, so the LAN HTTP and the BLE transports drive the same
objects.  The flow is three messages::

    client                                               device
    CLIENT_HELLO   version kind device_id pA   ------>
                                               <------   DEVICE_HELLO version pB key sig cD
    (check key against the QR fingerprint or registry key, then the signature, then cD)
    CLIENT_FINISH  cC                          ------>
    DATA ...                                   <----->   DATA ...

Why this order: the client checks the device key *before* it uses the PAKE result, and it has
sent nothing but a SPAKE2 message (which reveals nothing about the code) until the device has
proven both its identity (signature) and its knowledge of the code (``cD``).  SPAKE2 makes each
handshake test exactly one guess of the code, online: a recorded transcript, or a fake device
that saw the client's message, cannot be used to check guesses offline.  See docs/protocol.md.

Which secret is the PAKE password depends on the device's state: the label's (QR or manual
code) while it is unclaimed, only the owner secret sent with the claim once it is claimed
(:func:`check_credential_kind`).  The handshake itself is the same for every kind.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Self

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from spake2 import SPAKE2_A, SPAKE2_B, SPAKEError
from spake2.ed25519_basic import NotOnCurve

from .canonical import encode_fields
from .errors import (
    CounterExhaustedError,
    DeviceIdMismatchError,
    DeviceKeyMismatchError,
    FrameAuthenticationError,
    FrameTooLargeError,
    HandshakeSignatureError,
    HandshakeTimeoutError,
    MalformedHandshakeError,
    NoOwnerSecretError,
    OutOfOrderFrameError,
    OwnerSessionRequiredError,
    PayloadError,
    ProtocolError,
    RemoteError,
    ReplayedFrameError,
    SessionClosedError,
    SessionError,
    SetupCodeRequiredError,
    SignatureError,
    UnexpectedMessageError,
    UnsupportedVersionError,
    WrongSetupCodeError,
)
from .framing import (
    HEADER_SIZE,
    MAX_BODY_SIZE,
    FrameType,
    decode_error_body,
    decode_frame,
    encode_frame,
    frame_header,
)
from .identity import (
    DEVICE_ID_LENGTH,
    PUBLIC_KEY_SIZE,
    SIGNATURE_SIZE,
    DeviceIdentity,
    TrustAnchor,
    validate_device_id,
    verify_signature,
)
from .payload import (
    LABEL_KINDS,
    CredentialKind,
    ManualCode,
    OwnerSecret,
    QrPayload,
    SetupCode,
    SetupCredential,
    pake_password,
)
from .sources import MonotonicClock, RandomSource, monotonic, system_random

PROTOCOL_VERSION: Final = 1
#: Seconds from the first handshake message to the last (DESIGN: 60 s to finish one).
HANDSHAKE_TIMEOUT: Final = 60.0
SPAKE_MESSAGE_SIZE: Final = 33
CONFIRM_SIZE: Final = 32
SESSION_ID_SIZE: Final = 16
KEY_SIZE: Final = 32
COUNTER_SIZE: Final = 8
TAG_SIZE: Final = 16
CLIENT_HELLO_SIZE: Final = 2 + DEVICE_ID_LENGTH + SPAKE_MESSAGE_SIZE
DEVICE_HELLO_SIZE: Final = 1 + SPAKE_MESSAGE_SIZE + PUBLIC_KEY_SIZE + SIGNATURE_SIZE + CONFIRM_SIZE
#: Largest plaintext one DATA frame carries.
MAX_PLAINTEXT_SIZE: Final = MAX_BODY_SIZE - COUNTER_SIZE - TAG_SIZE
MAX_COUNTER: Final = 2**64 - 1

TRANSCRIPT_DOMAIN: Final = "iob/v1/handshake-transcript"
SIGNATURE_DOMAIN: Final = "iob/v1/handshake-signature"
KEYS_INFO: Final = b"iob/v1/session-keys"
DEVICE_CONFIRM_DOMAIN: Final = "iob/v1/confirm/device"
CLIENT_CONFIRM_DOMAIN: Final = "iob/v1/confirm/client"
SESSION_ID_DOMAIN: Final = "iob/v1/session-id"
_NONCE_PREFIX: Final = bytes(4)


class SessionState(StrEnum):
    """Where a session is; FAILED and CLOSED are final."""

    NEW = "new"
    AWAITING_DEVICE_HELLO = "awaiting_device_hello"
    AWAITING_CLIENT_FINISH = "awaiting_client_finish"
    ESTABLISHED = "established"
    FAILED = "failed"
    CLOSED = "closed"


# --- key schedule -------------------------------------------------------------------------------


def pake_identities(kind: CredentialKind, device_id: str) -> tuple[bytes, bytes]:
    """SPAKE2 identities ``(idA, idB)``: bind the credential kind and the device id."""
    return (f"iob/v1/client/{kind.value}".encode(), f"iob/v1/device/{device_id}".encode())


def transcript_hash(client_hello: bytes, device_pake: bytes, device_key: bytes) -> bytes:
    """SHA-256 over everything both sides said before the signature."""
    return hashlib.sha256(
        encode_fields(
            TRANSCRIPT_DOMAIN,
            {
                "client_hello": client_hello,
                "device_key": device_key,
                "device_pake": device_pake,
                "version": PROTOCOL_VERSION,
            },
        )
    ).digest()


@dataclass(frozen=True, slots=True, repr=False)
class SessionKeys:
    """Everything derived from the PAKE key and the transcript (no repr: keys stay out of logs)."""

    device_confirm_key: bytes
    client_confirm_key: bytes
    client_to_device: bytes
    device_to_client: bytes
    session_id: bytes


def derive_session_keys(pake_key: bytes, transcript: bytes) -> SessionKeys:
    """HKDF-SHA256(ikm = SPAKE2 key, salt = transcript hash) into four independent keys."""
    material = HKDF(
        algorithm=hashes.SHA256(), length=4 * KEY_SIZE, salt=transcript, info=KEYS_INFO
    ).derive(pake_key)
    session_id = hashlib.sha256(encode_fields(SESSION_ID_DOMAIN, {"transcript": transcript}))
    return SessionKeys(
        device_confirm_key=material[0:KEY_SIZE],
        client_confirm_key=material[KEY_SIZE : 2 * KEY_SIZE],
        client_to_device=material[2 * KEY_SIZE : 3 * KEY_SIZE],
        device_to_client=material[3 * KEY_SIZE :],
        session_id=session_id.digest()[:SESSION_ID_SIZE],
    )


def device_confirmation(keys: SessionKeys, transcript: bytes, signature: bytes) -> bytes:
    """``cD``: proves the device derived the same key (knows the code)."""
    message = encode_fields(
        DEVICE_CONFIRM_DOMAIN, {"signature": signature, "transcript": transcript}
    )
    return hmac.digest(keys.device_confirm_key, message, "sha256")


def client_confirmation(
    keys: SessionKeys, transcript: bytes, signature: bytes, device_confirm: bytes
) -> bytes:
    """``cC``: proves the client derived the same key (knows the code)."""
    message = encode_fields(
        CLIENT_CONFIRM_DOMAIN,
        {"device_confirm": device_confirm, "signature": signature, "transcript": transcript},
    )
    return hmac.digest(keys.client_confirm_key, message, "sha256")


def check_credential_kind(
    kind: CredentialKind, *, claimed: bool, owner_secret_known: bool = True
) -> None:
    """Return if a device in this state takes ``kind``; raise why not otherwise.

    Unclaimed devices take the label (QR, manual code) and refuse an owner secret; claimed
    devices take only their owner's secret (DESIGN: "claimed devices accept only the owner's
    authorised session").  ``owner_secret_known`` False: claimed without one (zero-touch),
    so nothing is accepted.
    """
    if not claimed:
        if kind is CredentialKind.OWNER:
            raise SetupCodeRequiredError(
                "this device has no owner; set it up with the code on its label"
            )
        return
    if kind is not CredentialKind.OWNER:
        raise OwnerSessionRequiredError(
            "this device is owned; use its owner's Home Assistant, or factory-reset it"
        )
    if not owner_secret_known:
        raise NoOwnerSecretError(
            "this device was claimed without an owner secret; factory-reset it to change its Wi-Fi"
        )


def _parse_client_hello(body: bytes) -> tuple[CredentialKind, bytes, bytes]:
    """``(kind, device id bytes, pA)`` of a CLIENT_HELLO body, size and version checked."""
    if len(body) != CLIENT_HELLO_SIZE:
        raise MalformedHandshakeError(f"CLIENT_HELLO must be {CLIENT_HELLO_SIZE} bytes")
    if body[0] != PROTOCOL_VERSION:
        raise UnsupportedVersionError(f"client speaks handshake version {body[0]}")
    try:
        kind = CredentialKind.from_wire(body[1])
    except PayloadError as err:
        raise MalformedHandshakeError(str(err)) from err
    return kind, body[2 : 2 + DEVICE_ID_LENGTH], body[2 + DEVICE_ID_LENGTH :]


def _frame_body(data: bytes) -> tuple[FrameType, bytes]:
    frame = decode_frame(data)
    if frame.type is FrameType.ERROR:
        raise RemoteError(decode_error_body(frame.body))
    return frame.type, frame.body


def client_hello_kind(frame: bytes) -> CredentialKind:
    """The credential kind a CLIENT_HELLO frame names, read without touching any secret.

    Lets a transport refuse a kind the device does not take before it spends a handshake
    slot on it; raises the errors :meth:`DeviceSession.handle_client_hello` would for a
    malformed hello.
    """
    frame_type, body = _frame_body(frame)
    if frame_type is not FrameType.CLIENT_HELLO:
        raise UnexpectedMessageError(f"expected CLIENT_HELLO, got {frame_type.name}")
    return _parse_client_hello(body)[0]


def _finish_pake(pake: SPAKE2_A | SPAKE2_B, message: bytes) -> bytes:
    try:
        return bytes(pake.finish(message))
    except (SPAKEError, NotOnCurve, ValueError) as err:
        raise MalformedHandshakeError(f"invalid SPAKE2 message: {err}") from err


# --- AEAD channel -------------------------------------------------------------------------------


class SecureChannel:
    """ChaCha20-Poly1305 with a strict per-direction counter.

    Each DATA frame body is ``counter(u64) ciphertext tag``; the nonce is four zero bytes and
    the counter, the associated data the frame header and the session id.  The receiver accepts
    only the next counter, so replayed, reordered and dropped frames are all detected.  Any
    receive failure closes the channel for good (fail closed, like TLS): a peer that sees one
    forged frame cannot know what else was lost.
    """

    def __init__(self, session_id: bytes, send_key: bytes, receive_key: bytes) -> None:
        """Keys are per direction, so the two counters can never produce the same nonce."""
        self._session_id = session_id
        self._send = ChaCha20Poly1305(send_key)
        self._receive = ChaCha20Poly1305(receive_key)
        self._send_counter = 0
        self._receive_counter = 0
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether the channel refuses further use."""
        return self._closed

    def close(self) -> None:
        """Refuse all further use."""
        self._closed = True

    def seal(self, plaintext: bytes) -> bytes:
        """Encrypt one message into a DATA frame."""
        if self._closed:
            raise SessionClosedError("channel is closed")
        if len(plaintext) > MAX_PLAINTEXT_SIZE:
            raise FrameTooLargeError(f"plaintext over {MAX_PLAINTEXT_SIZE} bytes")
        if self._send_counter > MAX_COUNTER:
            self._closed = True
            raise CounterExhaustedError("send counter exhausted")
        counter = self._send_counter.to_bytes(COUNTER_SIZE, "big")
        header = frame_header(FrameType.DATA, COUNTER_SIZE + len(plaintext) + TAG_SIZE)
        sealed = self._send.encrypt(_NONCE_PREFIX + counter, plaintext, header + self._session_id)
        self._send_counter += 1
        return header + counter + sealed

    def open(self, data: bytes) -> bytes:
        """Decrypt one DATA frame; any failure closes the channel."""
        if self._closed:
            raise SessionClosedError("channel is closed")
        try:
            return self._open(data)
        except ProtocolError:
            self._closed = True
            raise

    def _open(self, data: bytes) -> bytes:
        frame = decode_frame(data)
        if frame.type is FrameType.ERROR:
            raise RemoteError(decode_error_body(frame.body))
        if frame.type is not FrameType.DATA:
            raise UnexpectedMessageError(f"{frame.type.name} frame on an established session")
        if len(frame.body) < COUNTER_SIZE + TAG_SIZE:
            raise FrameAuthenticationError("DATA frame too short")
        counter = int.from_bytes(frame.body[:COUNTER_SIZE], "big")
        if counter < self._receive_counter:
            raise ReplayedFrameError(f"counter {counter} already used")
        if counter > self._receive_counter:
            raise OutOfOrderFrameError(f"expected counter {self._receive_counter}, got {counter}")
        header = data[:HEADER_SIZE]  # validated by decode_frame
        try:
            plaintext = self._receive.decrypt(
                _NONCE_PREFIX + frame.body[:COUNTER_SIZE],
                frame.body[COUNTER_SIZE:],
                header + self._session_id,
            )
        except InvalidTag as err:
            raise FrameAuthenticationError("frame failed authentication") from err
        self._receive_counter += 1
        return plaintext


# --- state machines -----------------------------------------------------------------------------


class _Session:
    """What client and device share: state, deadline, and the channel once established."""

    def __init__(self, *, clock: MonotonicClock, timeout: float) -> None:
        self._clock = clock
        self._timeout = timeout
        self._deadline: float | None = None
        self._state = SessionState.NEW
        self._channel: SecureChannel | None = None
        self._keys: SessionKeys | None = None

    @property
    def state(self) -> SessionState:
        """Current state."""
        return self._state

    @property
    def session_id(self) -> bytes | None:
        """16-byte id, equal on both sides, once keys are derived (for logs; not secret)."""
        return None if self._keys is None else self._keys.session_id

    def close(self) -> None:
        """End the session; every further call raises :class:`SessionClosedError`."""
        if self._channel is not None:
            self._channel.close()
        if self._state is not SessionState.FAILED:
            self._state = SessionState.CLOSED

    def seal(self, plaintext: bytes) -> bytes:
        """Encrypt a message into a DATA frame (established sessions only)."""
        channel = self._established()
        try:
            return channel.seal(plaintext)
        except CounterExhaustedError:
            self._state = SessionState.FAILED
            raise

    def open(self, frame: bytes) -> bytes:
        """Decrypt a DATA frame; any failure ends the session."""
        channel = self._established()
        try:
            return channel.open(frame)
        except ProtocolError:
            self._state = SessionState.FAILED
            raise

    def _established(self) -> SecureChannel:
        if self._state is not SessionState.ESTABLISHED or self._channel is None:
            raise SessionClosedError(f"session is {self._state.value}, not established")
        return self._channel

    def _expect(self, state: SessionState) -> None:
        if self._state in {SessionState.FAILED, SessionState.CLOSED}:
            raise SessionClosedError(f"session is {self._state.value}")
        if self._state is not state:
            current = self._state
            self._state = SessionState.FAILED
            raise UnexpectedMessageError(f"session is {current.value}, not {state.value}")

    def _check_deadline(self) -> None:
        if self._deadline is not None and self._clock() > self._deadline:
            raise HandshakeTimeoutError(f"handshake took longer than {self._timeout:g} s")

    def _receive(self, data: bytes, expected: FrameType) -> bytes:
        frame_type, body = _frame_body(data)
        if frame_type is not expected:
            raise UnexpectedMessageError(f"expected {expected.name}, got {frame_type.name}")
        return body


class ClientSession(_Session):
    """Home Assistant's side of the handshake and channel.

    Construct with :meth:`for_qr` or :meth:`for_manual_code` (unclaimed devices) or
    :meth:`for_owner` (a device this Home Assistant claimed); each requires something to check
    the device key against, so a client can never skip the evil-twin check.
    """

    def __init__(
        self,
        credential: SetupCredential | OwnerSecret,
        *,
        device_id: str,
        trust: TrustAnchor,
        clock: MonotonicClock = monotonic,
        random_bytes: RandomSource = system_random,
        timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        """Prepare a handshake with ``device_id`` using ``credential``."""
        super().__init__(clock=clock, timeout=timeout)
        self._device_id = validate_device_id(device_id)
        if isinstance(credential, QrPayload) and credential.device_id != device_id:
            raise DeviceIdMismatchError("the QR code belongs to another device")
        self._kind = credential.kind
        self._trust = trust
        id_a, id_b = pake_identities(self._kind, device_id)
        password = pake_password(self._kind, device_id, credential.pake_secret)
        self._pake = SPAKE2_A(password, idA=id_a, idB=id_b, entropy_f=random_bytes)
        self._hello = b""
        self._device_key: bytes | None = None

    @classmethod
    def for_qr(
        cls,
        qr: QrPayload,
        *,
        clock: MonotonicClock = monotonic,
        random_bytes: RandomSource = system_random,
        timeout: float = HANDSHAKE_TIMEOUT,
    ) -> Self:
        """Use the scanned QR code: device id, secret and fingerprint all come from it."""
        return cls(
            qr,
            device_id=qr.device_id,
            trust=qr.trust_anchor,
            clock=clock,
            random_bytes=random_bytes,
            timeout=timeout,
        )

    @classmethod
    def for_manual_code(
        cls,
        code: ManualCode,
        *,
        device_id: str,
        device_public_key: bytes,
        clock: MonotonicClock = monotonic,
        random_bytes: RandomSource = system_random,
        timeout: float = HANDSHAKE_TIMEOUT,
    ) -> Self:
        """Use a typed code; the device key comes from the registry via the account service."""
        return cls(
            code,
            device_id=device_id,
            trust=TrustAnchor.from_public_key(device_public_key),
            clock=clock,
            random_bytes=random_bytes,
            timeout=timeout,
        )

    @classmethod
    def for_owner(
        cls,
        *,
        device_id: str,
        device_public_key: bytes,
        owner_secret: bytes,
        clock: MonotonicClock = monotonic,
        random_bytes: RandomSource = system_random,
        timeout: float = HANDSHAKE_TIMEOUT,
    ) -> Self:
        """Reconnect to a device this Home Assistant owns (re-onboarding, Wi-Fi change).

        ``owner_secret`` is the one sent with ``set_claim``; ``device_public_key`` the key the
        device proved at claim time, so an evil twin is refused exactly as with a manual code.
        """
        return cls(
            OwnerSecret(owner_secret),
            device_id=device_id,
            trust=TrustAnchor.from_public_key(device_public_key),
            clock=clock,
            random_bytes=random_bytes,
            timeout=timeout,
        )

    @property
    def device_public_key(self) -> bytes | None:
        """The device's verified public key, once the device hello has been accepted."""
        return self._device_key

    def start(self) -> bytes:
        """The CLIENT_HELLO frame; starts the handshake deadline."""
        self._expect(SessionState.NEW)
        self._deadline = self._clock() + self._timeout
        pake_message = bytes(self._pake.start())
        self._hello = (
            bytes([PROTOCOL_VERSION, self._kind.wire])
            + self._device_id.encode("ascii")
            + pake_message
        )
        self._state = SessionState.AWAITING_DEVICE_HELLO
        return encode_frame(FrameType.CLIENT_HELLO, self._hello)

    def handle_device_hello(self, frame: bytes) -> bytes:
        """Check the DEVICE_HELLO; return CLIENT_FINISH and become established.

        Raises :class:`DeviceKeyMismatchError` (evil twin), :class:`HandshakeSignatureError`
        or :class:`WrongSetupCodeError` without producing anything to send.
        """
        self._expect(SessionState.AWAITING_DEVICE_HELLO)
        try:
            return self._handle_device_hello(frame)
        except ProtocolError:
            self._state = SessionState.FAILED
            raise

    def _handle_device_hello(self, frame: bytes) -> bytes:
        self._check_deadline()
        body = self._receive(frame, FrameType.DEVICE_HELLO)
        if len(body) != DEVICE_HELLO_SIZE:
            raise MalformedHandshakeError(f"DEVICE_HELLO must be {DEVICE_HELLO_SIZE} bytes")
        if body[0] != PROTOCOL_VERSION:
            raise UnsupportedVersionError(f"device speaks handshake version {body[0]}")
        offset = 1
        device_pake = body[offset : offset + SPAKE_MESSAGE_SIZE]
        offset += SPAKE_MESSAGE_SIZE
        device_key = body[offset : offset + PUBLIC_KEY_SIZE]
        offset += PUBLIC_KEY_SIZE
        signature = body[offset : offset + SIGNATURE_SIZE]
        offset += SIGNATURE_SIZE
        device_confirm = body[offset:]
        # 1. Is this the device on the label (or in the registry)?  Before anything else.
        if not self._trust.matches(device_key):
            raise DeviceKeyMismatchError(
                "the device's key does not match the QR code or registry: possible evil twin"
            )
        # 2. Did that device take part in this very handshake?
        transcript = transcript_hash(self._hello, device_pake, device_key)
        try:
            verify_signature(device_key, SIGNATURE_DOMAIN, {"transcript": transcript}, signature)
        except SignatureError as err:
            raise HandshakeSignatureError(
                "device signature over the transcript is invalid"
            ) from err
        # 3. Does it know the setup code?
        keys = derive_session_keys(_finish_pake(self._pake, device_pake), transcript)
        if not hmac.compare_digest(
            device_confirmation(keys, transcript, signature), device_confirm
        ):
            raise WrongSetupCodeError("key confirmation failed: wrong setup code")
        self._keys = keys
        self._device_key = device_key
        self._channel = SecureChannel(keys.session_id, keys.client_to_device, keys.device_to_client)
        self._state = SessionState.ESTABLISHED
        return encode_frame(
            FrameType.CLIENT_FINISH,
            client_confirmation(keys, transcript, signature, device_confirm),
        )


class DeviceSession(_Session):
    """The device's side of the handshake and channel.

    Unclaimed, it is built with the label's :class:`SetupCode` and takes QR and manual-code
    handshakes; claimed, with :meth:`for_owner` and the owner secret, and takes only that.  It
    never holds both, so a claimed device cannot be opened with its label by construction.

    The transport asks the :class:`~.limiter.AttemptLimiter` before creating one, and reports
    the outcome to it (see docs/protocol.md, "Device wiring").
    """

    def __init__(
        self,
        identity: DeviceIdentity,
        setup_code: SetupCode | None = None,
        *,
        owner_secret: bytes | None = None,
        clock: MonotonicClock = monotonic,
        random_bytes: RandomSource = system_random,
        timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        """Answer as ``identity`` with the label's secrets or, claimed, the owner secret."""
        super().__init__(clock=clock, timeout=timeout)
        secrets: Mapping[CredentialKind, bytes]
        if setup_code is not None and owner_secret is None:
            if setup_code.device_id != identity.device_id:
                raise DeviceIdMismatchError("setup code and identity belong to different devices")
            secrets = {kind: setup_code.secret_for(kind) for kind in LABEL_KINDS}
        elif owner_secret is not None and setup_code is None:
            secrets = {CredentialKind.OWNER: OwnerSecret(owner_secret).pake_secret}
        else:
            raise SessionError(
                "give the setup code (unclaimed device) or the owner secret (claimed), not both"
            )
        self._identity = identity
        self._secrets = secrets
        self._claimed = owner_secret is not None
        self._random_bytes = random_bytes
        self._kind: CredentialKind | None = None
        self._expected_client_confirm = b""

    @classmethod
    def for_owner(
        cls,
        identity: DeviceIdentity,
        *,
        owner_secret: bytes,
        clock: MonotonicClock = monotonic,
        random_bytes: RandomSource = system_random,
        timeout: float = HANDSHAKE_TIMEOUT,
    ) -> Self:
        """A claimed device: only its owner's secret opens a session."""
        return cls(
            identity,
            owner_secret=owner_secret,
            clock=clock,
            random_bytes=random_bytes,
            timeout=timeout,
        )

    @property
    def accepted_kinds(self) -> frozenset[CredentialKind]:
        """The credential kinds this session answers: the label's, or the owner's only."""
        return frozenset(self._secrets)

    @property
    def credential_kind(self) -> CredentialKind | None:
        """Which credential the client used, once its hello was read."""
        return self._kind

    def handle_client_hello(self, frame: bytes) -> bytes:
        """Answer a CLIENT_HELLO with DEVICE_HELLO; starts the handshake deadline."""
        self._expect(SessionState.NEW)
        self._deadline = self._clock() + self._timeout
        try:
            return self._handle_client_hello(frame)
        except ProtocolError:
            self._state = SessionState.FAILED
            raise

    def _handle_client_hello(self, frame: bytes) -> bytes:
        body = self._receive(frame, FrameType.CLIENT_HELLO)
        kind, device_id, client_pake = _parse_client_hello(body)
        if device_id != self._identity.device_id.encode("ascii"):
            raise DeviceIdMismatchError("the client is looking for another device")
        # Before any secret is used: a refused kind tests no guess.
        check_credential_kind(kind, claimed=self._claimed)
        device_id_text = self._identity.device_id
        id_a, id_b = pake_identities(kind, device_id_text)
        password = pake_password(kind, device_id_text, self._secrets[kind])
        pake = SPAKE2_B(password, idA=id_a, idB=id_b, entropy_f=self._random_bytes)
        device_pake = bytes(pake.start())
        pake_key = _finish_pake(pake, client_pake)
        device_key = self._identity.public_key
        transcript = transcript_hash(body, device_pake, device_key)
        signature = self._identity.sign(SIGNATURE_DOMAIN, {"transcript": transcript})
        keys = derive_session_keys(pake_key, transcript)
        device_confirm = device_confirmation(keys, transcript, signature)
        self._expected_client_confirm = client_confirmation(
            keys, transcript, signature, device_confirm
        )
        self._kind = kind
        self._keys = keys
        self._state = SessionState.AWAITING_CLIENT_FINISH
        return encode_frame(
            FrameType.DEVICE_HELLO,
            bytes([PROTOCOL_VERSION]) + device_pake + device_key + signature + device_confirm,
        )

    def handle_client_finish(self, frame: bytes) -> None:
        """Check CLIENT_FINISH and become established; a wrong code fails here."""
        self._expect(SessionState.AWAITING_CLIENT_FINISH)
        try:
            self._check_deadline()
            body = self._receive(frame, FrameType.CLIENT_FINISH)
            if len(body) != CONFIRM_SIZE:
                raise MalformedHandshakeError(f"CLIENT_FINISH must be {CONFIRM_SIZE} bytes")
            if not hmac.compare_digest(body, self._expected_client_confirm):
                raise WrongSetupCodeError("key confirmation failed: wrong setup code")
        except ProtocolError:
            self._state = SessionState.FAILED
            raise
        keys = self._keys
        if keys is None:  # pragma: no cover - set together with the state
            raise SessionClosedError("no keys")
        self._channel = SecureChannel(keys.session_id, keys.device_to_client, keys.client_to_device)
        self._state = SessionState.ESTABLISHED
