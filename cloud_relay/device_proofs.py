"""The one place that reads device-signed statements (iob_protocol's claim module).

Every statement is verified against the registry's public key. An id the registry does not
know is verified against a throw-away key instead, so it fails exactly like a bad signature,
after the same work: a stranger cannot tell an unknown id from a known one.

The zero-touch confirmation is not in ``iob_protocol.claim`` yet; :class:`ZeroTouchConfirmation`
here follows the same shape (domain-separated Ed25519 over device id, nonce and time) and
moves to the protocol package when it lands there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Self

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from iob_protocol import claim as protocol_claim
from iob_protocol.canonical import (
    JsonValue,
    b64url_decode,
    b64url_encode,
    canonical_json,
    parse_canonical_json,
)
from iob_protocol.errors import (
    ClaimError,
    EncodingError,
    IdentityError,
    ProtocolError,
    SignatureError,
)
from iob_protocol.errors import ClaimExpiredError as ProtocolClaimExpiredError
from iob_protocol.errors import ClockSkewError as ProtocolClockSkewError
from iob_protocol.identity import DeviceIdentity, verify_signature

from .errors import BadSignatureError, ClaimExpiredError, ClockSkewError, InvalidRequestError

ClaimConfirmation = protocol_claim.ClaimConfirmation
ReleaseNotice = protocol_claim.ReleaseNotice
ZERO_TOUCH_DOMAIN: Final = "iob/v1/zero-touch"
NONCE_SIZE: Final = protocol_claim.NONCE_SIZE

#: Stands in for the registry key of an id the registry does not know.
_UNKNOWN_DEVICE_KEY: Final = (
    Ed25519PrivateKey.generate()
    .public_key()
    .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ZeroTouchConfirmation:
    """A pre-assigned device asks to be owned by its order's household (no token)."""

    device_id: str
    nonce: bytes
    timestamp: int
    signature: bytes

    def __post_init__(self) -> None:
        """Validate shapes."""
        try:
            # Same rules as the protocol's own statements (id, nonce, time, signature sizes).
            protocol_claim._validate_common(  # noqa: SLF001 - shared validation, one rule set
                self.device_id, self.nonce, self.timestamp, self.signature
            )
        except IdentityError as err:
            raise ClaimError(str(err)) from err

    def _signed(self) -> dict[str, bytes | str | int]:
        return {"device_id": self.device_id, "nonce": self.nonce, "timestamp": self.timestamp}

    @classmethod
    def create(cls, identity: DeviceIdentity, *, nonce: bytes, timestamp: int) -> Self:
        """Sign (device id, nonce, time): what the device sends when it comes online."""
        fields: dict[str, bytes | str | int] = {
            "device_id": identity.device_id,
            "nonce": nonce,
            "timestamp": timestamp,
        }
        return cls(
            device_id=identity.device_id,
            nonce=nonce,
            timestamp=timestamp,
            signature=identity.sign(ZERO_TOUCH_DOMAIN, fields),
        )

    def verify(self, public_key: bytes, *, now: int, max_age: int, max_skew: int) -> None:
        """Raise unless signed by ``public_key`` within the time window."""
        verify_signature(public_key, ZERO_TOUCH_DOMAIN, self._signed(), self.signature)
        protocol_claim._check_time(self.timestamp, now, max_age, max_skew)  # noqa: SLF001

    def to_json(self) -> bytes:
        """Canonical JSON."""
        return canonical_json(
            {
                "device_id": self.device_id,
                "nonce": b64url_encode(self.nonce),
                "signature": b64url_encode(self.signature),
                "timestamp": self.timestamp,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> Self:
        """Parse :meth:`to_json` output."""
        try:
            document = parse_canonical_json(data)
        except EncodingError as err:
            raise ClaimError(str(err)) from err
        expected = {"device_id", "nonce", "signature", "timestamp"}
        if not isinstance(document, dict) or set(document) != expected:
            raise ClaimError(f"expected exactly the fields {sorted(expected)}")
        device_id, nonce, signature, timestamp = (document[name] for name in sorted(expected))
        if not (
            isinstance(device_id, str)
            and isinstance(nonce, str)
            and isinstance(signature, str)
            and isinstance(timestamp, int)
            and not isinstance(timestamp, bool)
        ):
            raise ClaimError("device_id, nonce and signature must be strings, timestamp an integer")
        try:
            return cls(
                device_id=device_id,
                nonce=b64url_decode(nonce),
                timestamp=timestamp,
                signature=b64url_decode(signature),
            )
        except EncodingError as err:
            raise ClaimError(str(err)) from err


type DeviceStatement = ClaimConfirmation | ReleaseNotice | ZeroTouchConfirmation


def _canonical(value: object, field: str) -> bytes:
    """The statement's canonical bytes, whether it came as a JSON object or as its text."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, dict):
        try:
            return canonical_json(_as_json(value))
        except EncodingError as err:
            raise InvalidRequestError(f"{field}: {err}") from err
    raise InvalidRequestError(f"{field} must be the device's signed JSON object")


def _as_json(value: object) -> JsonValue:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, list):
        return [_as_json(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _as_json(item) for key, item in value.items()}
    raise EncodingError(f"unsupported JSON value of type {type(value).__name__}")


def _parse[T: DeviceStatement](kind: type[T], value: object, field: str) -> T:
    data = _canonical(value, field)
    try:
        return kind.from_json(data)  # type: ignore[return-value]
    except ProtocolError as err:
        raise InvalidRequestError(f"{field} is malformed: {err}") from err


def parse_claim_confirmation(value: object) -> ClaimConfirmation:
    """The ``confirmation`` of ``POST /v1/claims/confirm``."""
    return _parse(ClaimConfirmation, value, "confirmation")


def parse_zero_touch(value: object) -> ZeroTouchConfirmation:
    """The ``confirmation`` of ``POST /v1/zero-touch/confirm``."""
    return _parse(ZeroTouchConfirmation, value, "confirmation")


def parse_release(value: object) -> ReleaseNotice:
    """The ``release`` of ``POST /v1/devices/release-by-device``."""
    return _parse(ReleaseNotice, value, "release")


def verify_statement(
    statement: DeviceStatement,
    registry_key: bytes | None,
    *,
    now: int,
    max_age: int,
    max_skew: int,
) -> None:
    """Check signature, then time; map failures to the API's errors."""
    key = registry_key if registry_key is not None else _UNKNOWN_DEVICE_KEY
    try:
        statement.verify(key, now=now, max_age=max_age, max_skew=max_skew)
    except (SignatureError, IdentityError) as err:
        raise BadSignatureError from err
    except ProtocolClockSkewError as err:
        raise ClockSkewError(
            f"The device's clock is {statement.timestamp - now} s ahead of the service's; let "
            "the device reach an NTP server (UDP 123) and try again."
        ) from err
    except ProtocolClaimExpiredError as err:
        if statement.timestamp < now - max_age - max_skew:
            # Far in the past is as likely a clock that never synced as an old statement.
            raise ClockSkewError(
                f"The device's signed time is {now - statement.timestamp} s behind the "
                "service's; let the device reach an NTP server (UDP 123) and try again."
            ) from err
        raise ClaimExpiredError from err
    if registry_key is None:  # pragma: no cover - the throw-away key never verifies
        raise BadSignatureError
