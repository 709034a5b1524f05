"""Every error the protocol package raises.

One base class, :class:`ProtocolError`, so callers can catch the package as a whole; each
subclass carries a stable string ``code`` that travels on the wire (error frames, command
results) and into logs and translations, so it must never change once released.
"""

from __future__ import annotations

from typing import ClassVar

from .diagnostics import DiagnosticCode


class ProtocolError(Exception):
    """Base of every error in this package."""

    code: ClassVar[str] = "protocol_error"
    #: The diagnostic a user should see for this error, where one fits.
    diagnostic: ClassVar[DiagnosticCode | None] = None


# --- deterministic encoding -------------------------------------------------------------------


class EncodingError(ProtocolError):
    """A value cannot be put into, or read from, the canonical encodings."""

    code = "encoding_error"


class MalformedMessageError(EncodingError):
    """The bytes are not valid JSON of the subset this protocol allows."""

    code = "malformed_message"


class JsonTooDeepError(MalformedMessageError):
    """Arrays and objects nested deeper than the protocol allows (``MAX_JSON_DEPTH``)."""

    code = "json_too_deep"


class JsonTooLargeError(MalformedMessageError):
    """More JSON text than the reader accepts."""

    code = "json_too_large"


class NonCanonicalMessageError(EncodingError):
    """Valid JSON, but not in canonical form, so a signature or MAC would be ambiguous."""

    code = "non_canonical_message"


# --- identity -----------------------------------------------------------------------------------


class IdentityError(ProtocolError):
    """Device identity problems."""

    code = "identity_error"


class InvalidDeviceIdError(IdentityError):
    """A device id is not 16 characters of Crockford base32."""

    code = "invalid_device_id"


class InvalidKeyError(IdentityError):
    """A key has the wrong length or is not a valid Ed25519 key."""

    code = "invalid_key"


class KeyFileError(IdentityError):
    """The identity file is missing, unreadable or not in the expected format."""

    code = "key_file_error"


class InsecureKeyFileError(KeyFileError):
    """The identity file is readable by group or others: refuse rather than use a leaked key."""

    code = "insecure_key_file"


class SignatureError(IdentityError):
    """An Ed25519 signature does not verify."""

    code = "bad_signature"


# --- setup payload ------------------------------------------------------------------------------


class PayloadError(ProtocolError):
    """The QR string, manual code or verifier is malformed."""

    code = "payload_error"


class PayloadPrefixError(PayloadError):
    """The QR string does not start with ``IOB1:`` (not ours, or another version)."""

    code = "payload_prefix"


class PayloadLengthError(PayloadError):
    """Wrong number of fields or characters."""

    code = "payload_length"


class PayloadCharacterError(PayloadError):
    """A character outside the allowed alphabet."""

    code = "payload_character"


class PayloadCheckError(PayloadError):
    """The check character does not match: most likely a typo or a damaged label."""

    code = "payload_check"


class TrivialCodeError(PayloadError):
    """A passcode an attacker would try first (all same digit, a sequence, a short repeat)."""

    code = "trivial_code"


class VerifierFormatError(PayloadError):
    """A setup-code verifier string is malformed or uses parameters below the floor."""

    code = "verifier_format"


# --- secure session -----------------------------------------------------------------------------


class SessionError(ProtocolError):
    """Handshake or secure-channel failure."""

    code = "session_error"


class MalformedHandshakeError(SessionError):
    """A handshake message has the wrong size, version or content."""

    code = "malformed_handshake"


class UnexpectedMessageError(SessionError):
    """A message arrived that the state machine does not expect now."""

    code = "unexpected_message"


class DeviceIdMismatchError(SessionError):
    """The client addressed a different device than the one answering."""

    code = "device_id_mismatch"


class DeviceKeyMismatchError(SessionError):
    """The device's key does not match the QR fingerprint or registry key (evil twin)."""

    code = "device_key_mismatch"


class HandshakeSignatureError(SessionError):
    """The device's transcript signature does not verify."""

    code = "handshake_signature"


class WrongSetupCodeError(SessionError):
    """Key confirmation failed: the two sides used different setup codes."""

    code = "wrong_setup_code"


class HandshakeTimeoutError(SessionError):
    """The handshake took longer than its deadline."""

    code = "handshake_timeout"
    diagnostic = DiagnosticCode.TIMEOUT


class SessionClosedError(SessionError):
    """The session failed or was closed earlier and can no longer be used."""

    code = "session_closed"


class ReplayedFrameError(SessionError):
    """A frame's counter is below the next expected one (replay)."""

    code = "replayed_frame"


class OutOfOrderFrameError(SessionError):
    """A frame's counter is above the next expected one (reorder or loss)."""

    code = "out_of_order_frame"


class FrameAuthenticationError(SessionError):
    """AEAD decryption failed: the frame was tampered with or keyed differently."""

    code = "frame_authentication"


class CounterExhaustedError(SessionError):
    """2**64 frames in one direction: a new session is needed."""

    code = "counter_exhausted"


class CredentialRefusedError(SessionError):
    """The device does not take this kind of credential in its current state.

    Decided from the hello's kind byte and the device's public state (claimed or not) before
    any secret is used, so it tests no guess (and costs no attempt; see docs/protocol.md §7).
    """

    code = "credential_refused"


class OwnerSessionRequiredError(CredentialRefusedError):
    """A label code (QR or manual) offered to a claimed device: only its owner may connect.

    This device is owned; use its owner's Home Assistant, or factory-reset it.
    """

    code = "owner_session_required"


class SetupCodeRequiredError(CredentialRefusedError):
    """An owner secret offered to a device without an owner (it was reset or released).

    Set the device up again with the code on its label.
    """

    code = "setup_code_required"


class NoOwnerSecretError(CredentialRefusedError):
    """The device is claimed but holds no owner secret (zero-touch, or older firmware).

    Nobody can open a session with it; factory-reset it to change its Wi-Fi.
    """

    code = "no_owner_secret"


class RemoteError(SessionError):
    """The peer reported an error with an error frame; ``remote_code`` says which."""

    code = "remote_error"

    def __init__(self, remote_code: str) -> None:
        """Keep the peer's code so callers can map it to a message."""
        super().__init__(f"peer reported error: {remote_code}")
        self.remote_code = remote_code


# --- attempt limiter ----------------------------------------------------------------------------


class LimiterError(ProtocolError):
    """The attempt limiter refuses a handshake."""

    code = "limiter_error"


class WindowClosedError(LimiterError):
    """No provisioning window is open (press the button or reboot unclaimed)."""

    code = "window_closed"


class LockedOutError(LimiterError):
    """Too many failed handshakes in this window."""

    code = "locked_out"


class BusyError(LimiterError):
    """Another handshake is in progress."""

    code = "busy"


class StaleAttemptError(LimiterError):
    """The attempt token is not the current handshake (it timed out or was already ended)."""

    code = "stale_attempt"


# --- framing ------------------------------------------------------------------------------------


class FramingError(ProtocolError):
    """A frame or chunk is malformed."""

    code = "framing_error"


class BadMagicError(FramingError):
    """The bytes do not start with the frame magic: garbage or a different protocol."""

    code = "bad_magic"


class UnsupportedVersionError(FramingError):
    """A frame or handshake version this implementation does not speak."""

    code = "unsupported_version"


class UnknownFrameTypeError(FramingError):
    """A frame type byte that is not defined."""

    code = "unknown_frame_type"


class FrameTooLargeError(FramingError):
    """A frame over :data:`MAX_FRAME_SIZE`."""

    code = "frame_too_large"


class TruncatedFrameError(FramingError):
    """Fewer bytes than the header announces."""

    code = "truncated_frame"


class TrailingDataError(FramingError):
    """More bytes than one frame where exactly one was expected."""

    code = "trailing_data"


class ChunkError(FramingError):
    """BLE chunking or reassembly failed."""

    code = "chunk_error"


class ChunkSequenceError(ChunkError):
    """A chunk arrived out of sequence (lost, duplicated or reordered)."""

    code = "chunk_sequence"


class IncompleteFrameError(ChunkError):
    """A new frame started, or the link dropped, before the previous frame was complete."""

    code = "incomplete_frame"


class InvalidMtuError(ChunkError):
    """The MTU is too small to carry a chunk header and one byte."""

    code = "invalid_mtu"


# --- commands -----------------------------------------------------------------------------------


class MessageError(ProtocolError):
    """A command or result does not follow the schema."""

    code = "invalid_message"


class UnknownMessageTypeError(MessageError):
    """The ``type`` field names no command this version knows."""

    code = "unknown_type"


class UnknownFieldError(MessageError):
    """A field the schema does not define (rejected so typos and downgrades are loud)."""

    code = "unknown_field"


class MissingFieldError(MessageError):
    """A required field is absent."""

    code = "missing_field"


class FieldTypeError(MessageError):
    """A field has the wrong JSON type."""

    code = "field_type"


class InvalidFieldError(MessageError):
    """A field has the right type but a value outside its range."""

    code = "invalid_field"


class InvalidSsidError(InvalidFieldError):
    """An SSID is empty or longer than 32 bytes."""

    code = "invalid_ssid"


class InvalidPassphraseError(InvalidFieldError):
    """A WPA passphrase is not 8-63 printable ASCII characters or 64 hex digits."""

    code = "invalid_passphrase"


class InvalidUrlError(InvalidFieldError):
    """A URL is not an absolute URL with a host."""

    code = "invalid_url"


class InsecureUrlError(InvalidUrlError):
    """A URL is ``http`` but only ``https`` is allowed outside local development."""

    code = "insecure_url"


# --- claim --------------------------------------------------------------------------------------


class ClaimError(ProtocolError):
    """A signed claim confirmation or release notice is invalid."""

    code = "claim_error"


class ClaimExpiredError(ClaimError):
    """The signed time is older than the allowed age."""

    code = "claim_expired"
    diagnostic = DiagnosticCode.CLAIM_EXPIRED


class ClockSkewError(ClaimError):
    """The signed time is in the future beyond the allowed skew: the device clock is wrong."""

    code = "clock_skew"
    diagnostic = DiagnosticCode.CLOCK_SKEW
