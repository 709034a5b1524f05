"""The one place that reads device-signed statements (iob_protocol's claim module).

Every statement is verified against the registry's public key. An id the registry does not
know is verified against a throw-away key instead, so it fails exactly like a bad signature,
after the same work: a stranger cannot tell an unknown id from a known one.
"""

from __future__ import annotations

from typing import Final, TypeAlias, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from iob_protocol.canonical import JsonValue, canonical_json
from iob_protocol.claim import (
    ClaimConfirmation,
    MqttCredentialRequest,
    ReleaseNotice,
    ZeroTouchConfirmation,
)
from iob_protocol.errors import ClaimExpiredError as ProtocolClaimExpiredError
from iob_protocol.errors import ClockSkewError as ProtocolClockSkewError
from iob_protocol.errors import (
    EncodingError,
    IdentityError,
    ProtocolError,
    SignatureError,
)
from iob_protocol.errors import JsonTooDeepError as ProtocolJsonTooDeepError

from .errors import (
    BadSignatureError,
    ClaimExpiredError,
    ClockSkewError,
    InvalidRequestError,
    JsonTooDeepError,
)

#: Stands in for the registry key of an id the registry does not know.
_UNKNOWN_DEVICE_KEY: Final = (
    Ed25519PrivateKey.generate()
    .public_key()
    .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
)


DeviceStatement: TypeAlias = (
    ClaimConfirmation | MqttCredentialRequest | ReleaseNotice | ZeroTouchConfirmation
)
_S = TypeVar("_S", bound=DeviceStatement)


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


def _parse(kind: type[_S], value: object, field: str) -> _S:
    data = _canonical(value, field)
    try:
        return kind.from_json(data)  # type: ignore[return-value]
    except ProtocolJsonTooDeepError as err:
        raise JsonTooDeepError(f"{field}: {err}; a device's statement is one flat object") from err
    except ProtocolError as err:
        raise InvalidRequestError(f"{field} is malformed: {err}") from err


def parse_claim_confirmation(value: object) -> ClaimConfirmation:
    """The ``confirmation`` of ``POST /v1/claims/confirm``."""
    return _parse(ClaimConfirmation, value, "confirmation")


def parse_zero_touch(value: object) -> ZeroTouchConfirmation:
    """The ``confirmation`` of ``POST /v1/zero-touch/confirm``."""
    return _parse(ZeroTouchConfirmation, value, "confirmation")


def parse_mqtt_credential_request(value: object) -> MqttCredentialRequest:
    """The ``request`` of ``POST /v1/device/mqtt-credential``."""
    return _parse(MqttCredentialRequest, value, "request")


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
