"""Device-signed statements for the account service: claim, zero-touch, release, credential.

The device signs with its identity key, so the service can verify them against the registry's
public key whether the device sends them itself or they travel through Home Assistant (an IoT
VLAN without internet).  The signed time bounds replay to the claim's TTL; the nonce lets the
service refuse a second use of the same statement.

All four share one shape: Ed25519 over ``encode_fields(domain, fields)``, where ``fields``
always holds ``device_id``, a 16-byte ``nonce`` and ``timestamp``; the JSON form is exactly
those fields (bytes in base64url) plus ``signature``.  The helpers below are that shape, once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, Final, Self, TypeAlias

from .canonical import (
    JSON_INT_MAX,
    JsonValue,
    b64url_decode,
    b64url_encode,
    canonical_json,
    encode_fields,
    parse_canonical_json,
)
from .errors import (
    ClaimError,
    ClaimExpiredError,
    ClockSkewError,
    EncodingError,
    IdentityError,
    JsonTooDeepError,
)
from .identity import SIGNATURE_SIZE, DeviceIdentity, validate_device_id, verify_signature
from .sources import RandomSource, WallClock, system_random, unix_time

CLAIM_DOMAIN: Final = "iob/v1/claim-confirmation"
ZERO_TOUCH_DOMAIN: Final = "iob/v1/zero-touch"
RELEASE_DOMAIN: Final = "iob/v1/release"
MQTT_CREDENTIAL_DOMAIN: Final = "iob/v1/mqtt-credential"
#: The account service's MAC over a relayed claim's grant, and the domain of its key.
CLAIM_GRANT_DOMAIN: Final = "iob/v1/claim-grant"
CLAIM_GRANT_KEY_DOMAIN: Final = "iob/v1/claim-grant-key"
GRANT_MAC_SIZE: Final = 32
NONCE_SIZE: Final = 16
#: Claim tokens live at most 10 minutes (DESIGN); a confirmation older than that is useless.
MAX_AGE_SECONDS: Final = 600
#: How far in the future a device clock may be before CLOCK_SKEW.
MAX_SKEW_SECONDS: Final = 120
#: A credential request is signed right before it is posted: a short life bounds its replay.
CREDENTIAL_MAX_AGE_SECONDS: Final = 120
_CLAIM_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9_-]{22,512}")

_Fields: TypeAlias = dict[str, bytes | str | int]


class ReleaseReason(StrEnum):
    """Why the device let go of its owner."""

    FACTORY_RESET = "factory_reset"


# --- the shape every statement shares -----------------------------------------------------------


def _fresh(clock: WallClock, random_bytes: RandomSource) -> tuple[bytes, int]:
    """A new nonce and the signing time."""
    nonce = random_bytes(NONCE_SIZE)
    return nonce, clock()


def _check_time(timestamp: int, now: int, max_age: int, max_skew: int) -> None:
    if timestamp > now + max_skew:
        raise ClockSkewError(f"signed time is {timestamp - now} s in the future")
    if timestamp < now - max_age:
        raise ClaimExpiredError(f"signed time is {now - timestamp} s old (limit {max_age} s)")


def _verify(
    public_key: bytes,
    domain: str,
    fields: _Fields,
    signature: bytes,
    *,
    timestamp: int,
    now: int,
    max_age: int,
    max_skew: int,
) -> None:
    """The signature first (a forged time must not produce a time error), then the time."""
    verify_signature(public_key, domain, fields, signature)
    _check_time(timestamp, now, max_age, max_skew)


def _to_json(fields: _Fields, signature: bytes) -> bytes:
    """The signed fields, bytes as base64url, plus the signature: canonical JSON."""
    document: dict[str, JsonValue] = {
        name: b64url_encode(value) if isinstance(value, bytes) else value
        for name, value in fields.items()
    }
    document["signature"] = b64url_encode(signature)
    return canonical_json(document)


def _parse(data: bytes, expected: set[str]) -> dict[str, JsonValue]:
    try:
        document = parse_canonical_json(data)
    except JsonTooDeepError:
        raise  # its own stable code: the account service answers json_too_deep
    except EncodingError as err:
        raise ClaimError(str(err)) from err
    if not isinstance(document, dict) or set(document) != expected:
        raise ClaimError(f"expected exactly the fields {sorted(expected)}")
    return document


def _str(document: Mapping[str, JsonValue], name: str) -> str:
    value = document[name]
    if not isinstance(value, str):
        raise ClaimError(f"{name} must be a string")
    return value


def _int(document: Mapping[str, JsonValue], name: str) -> int:
    value = document[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise ClaimError(f"{name} must be an integer")
    return value


def _bytes(document: Mapping[str, JsonValue], name: str) -> bytes:
    try:
        return b64url_decode(_str(document, name))
    except EncodingError as err:
        raise ClaimError(f"{name}: {err}") from err


def _validate_common(device_id: str, nonce: bytes, timestamp: int, signature: bytes) -> None:
    if not 0 <= timestamp <= JSON_INT_MAX:
        raise ClaimError("timestamp out of range")
    try:
        validate_device_id(device_id)
    except IdentityError as err:
        raise ClaimError(str(err)) from err
    if len(nonce) != NONCE_SIZE:
        raise ClaimError(f"nonce must be {NONCE_SIZE} bytes")
    if len(signature) != SIGNATURE_SIZE:
        raise ClaimError(f"signature must be {SIGNATURE_SIZE} bytes")


# --- the statements -----------------------------------------------------------------------------


class _Statement:
    """What every statement does with its signed fields: validate, verify, serialise.

    A dataclass below declares the fields; :attr:`DOMAIN` says what the statement asks for,
    so a signature for one never verifies as another.
    """

    __slots__ = ()

    DOMAIN: ClassVar[str]
    device_id: str
    nonce: bytes
    timestamp: int
    signature: bytes

    def _fields(self) -> _Fields:
        raise NotImplementedError

    def __post_init__(self) -> None:
        """Validate shapes (not the signature: that needs the registry key)."""
        _validate_common(self.device_id, self.nonce, self.timestamp, self.signature)

    def verify(
        self,
        public_key: bytes,
        *,
        now: int,
        max_age: int = MAX_AGE_SECONDS,
        max_skew: int = MAX_SKEW_SECONDS,
    ) -> None:
        """Raise unless signed by ``public_key`` within ``max_age`` seconds before ``now``.

        The caller still checks what the statement's nonce or token may do (unused, live,
        bound to this device).
        """
        _verify(
            public_key,
            self.DOMAIN,
            self._fields(),
            self.signature,
            timestamp=self.timestamp,
            now=now,
            max_age=max_age,
            max_skew=max_skew,
        )

    def to_json(self) -> bytes:
        """Canonical JSON, the body (or its ``confirmation``) the device posts."""
        return _to_json(self._fields(), self.signature)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimConfirmation(_Statement):
    """The device's proof of possession for one claim token.

    The caller of :meth:`verify` still checks that the token is live, bound to this device,
    and unused.
    """

    DOMAIN: ClassVar[str] = CLAIM_DOMAIN

    device_id: str
    claim_token: str = field(repr=False)
    nonce: bytes
    timestamp: int
    signature: bytes

    def __post_init__(self) -> None:
        """Validate shapes (not the signature: that needs the registry key)."""
        _Statement.__post_init__(self)
        if not _CLAIM_TOKEN_RE.fullmatch(self.claim_token):
            raise ClaimError("claim token must be 22-512 base64url characters")

    @staticmethod
    def _signed(device_id: str, claim_token: str, nonce: bytes, timestamp: int) -> _Fields:
        return {
            "claim_token": claim_token,
            "device_id": device_id,
            "nonce": nonce,
            "timestamp": timestamp,
        }

    def _fields(self) -> _Fields:
        return self._signed(self.device_id, self.claim_token, self.nonce, self.timestamp)

    @classmethod
    def create(
        cls,
        identity: DeviceIdentity,
        claim_token: str,
        *,
        clock: WallClock = unix_time,
        random_bytes: RandomSource = system_random,
    ) -> Self:
        """Sign (device id, token, fresh nonce, now)."""
        nonce, timestamp = _fresh(clock, random_bytes)
        signature = identity.sign(
            CLAIM_DOMAIN, cls._signed(identity.device_id, claim_token, nonce, timestamp)
        )
        return cls(
            device_id=identity.device_id,
            claim_token=claim_token,
            nonce=nonce,
            timestamp=timestamp,
            signature=signature,
        )

    @classmethod
    def from_json(cls, data: bytes) -> Self:
        """Parse :meth:`to_json` output (the signature is checked by :meth:`verify`)."""
        document = _parse(data, {"claim_token", "device_id", "nonce", "signature", "timestamp"})
        return cls(
            device_id=_str(document, "device_id"),
            claim_token=_str(document, "claim_token"),
            nonce=_bytes(document, "nonce"),
            timestamp=_int(document, "timestamp"),
            signature=_bytes(document, "signature"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class _DeviceOnlyStatement(_Statement):
    """A statement that says nothing but "this device, now": its domain says what it asks for.

    Subclasses differ only in :attr:`DOMAIN`, so a signature for one never verifies as another.
    """

    device_id: str
    nonce: bytes
    timestamp: int
    signature: bytes

    @staticmethod
    def _signed(device_id: str, nonce: bytes, timestamp: int) -> _Fields:
        return {"device_id": device_id, "nonce": nonce, "timestamp": timestamp}

    def _fields(self) -> _Fields:
        return self._signed(self.device_id, self.nonce, self.timestamp)

    @classmethod
    def create(
        cls,
        identity: DeviceIdentity,
        *,
        clock: WallClock = unix_time,
        random_bytes: RandomSource = system_random,
    ) -> Self:
        """Sign (device id, fresh nonce, now)."""
        nonce, timestamp = _fresh(clock, random_bytes)
        signature = identity.sign(cls.DOMAIN, cls._signed(identity.device_id, nonce, timestamp))
        return cls(
            device_id=identity.device_id, nonce=nonce, timestamp=timestamp, signature=signature
        )

    @classmethod
    def from_json(cls, data: bytes) -> Self:
        """Parse :meth:`to_json` output (the signature is checked by :meth:`verify`)."""
        document = _parse(data, {"device_id", "nonce", "signature", "timestamp"})
        return cls(
            device_id=_str(document, "device_id"),
            nonce=_bytes(document, "nonce"),
            timestamp=_int(document, "timestamp"),
            signature=_bytes(document, "signature"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ZeroTouchConfirmation(_DeviceOnlyStatement):
    """A device pre-assigned to a household asks to be owned by it (no token, no session).

    Sent by the device itself when it comes online by Ethernet; the service accepts it only
    for a device its registry pre-assigns (order metadata), and remembers the nonce.
    """

    DOMAIN: ClassVar[str] = ZERO_TOUCH_DOMAIN


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttCredentialRequest(_DeviceOnlyStatement):
    """An owned device asks for its current MQTT credential (the broker refused the saved one).

    The service answers only an owned device, within :data:`CREDENTIAL_MAX_AGE_SECONDS`, and
    remembers the nonce; the password itself is never part of a statement.
    """

    DOMAIN: ClassVar[str] = MQTT_CREDENTIAL_DOMAIN


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseNotice(_Statement):
    """The device tells the service it has let go of its owner (factory reset)."""

    DOMAIN: ClassVar[str] = RELEASE_DOMAIN

    device_id: str
    reason: ReleaseReason
    nonce: bytes
    timestamp: int
    signature: bytes

    @staticmethod
    def _signed(device_id: str, reason: ReleaseReason, nonce: bytes, timestamp: int) -> _Fields:
        return {
            "device_id": device_id,
            "nonce": nonce,
            "reason": reason.value,
            "timestamp": timestamp,
        }

    def _fields(self) -> _Fields:
        return self._signed(self.device_id, self.reason, self.nonce, self.timestamp)

    @classmethod
    def create(
        cls,
        identity: DeviceIdentity,
        reason: ReleaseReason = ReleaseReason.FACTORY_RESET,
        *,
        clock: WallClock = unix_time,
        random_bytes: RandomSource = system_random,
    ) -> Self:
        """Sign (device id, reason, fresh nonce, now)."""
        nonce, timestamp = _fresh(clock, random_bytes)
        signature = identity.sign(
            RELEASE_DOMAIN, cls._signed(identity.device_id, reason, nonce, timestamp)
        )
        return cls(
            device_id=identity.device_id,
            reason=reason,
            nonce=nonce,
            timestamp=timestamp,
            signature=signature,
        )

    @classmethod
    def from_json(cls, data: bytes) -> Self:
        """Parse :meth:`to_json` output."""
        document = _parse(data, {"device_id", "nonce", "reason", "signature", "timestamp"})
        try:
            reason = ReleaseReason(_str(document, "reason"))
        except ValueError as err:
            raise ClaimError("unknown release reason") from err
        return cls(
            device_id=_str(document, "device_id"),
            reason=reason,
            nonce=_bytes(document, "nonce"),
            timestamp=_int(document, "timestamp"),
            signature=_bytes(document, "signature"),
        )


# --- the grant of a relayed claim ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimGrant:
    """The account service's "owned" answer to one claim confirmation, as the MAC covers it.

    When Home Assistant relays a device's confirmation (an IoT VLAN without internet), the
    answer reaches the device through HA, not over the service's TLS. The service then MACs it
    with a key derived from the claim token, over the confirmation's nonce: the device, which
    holds the token, refuses a grant for another confirmation, another device or another token,
    and any change on the way. ``client_id`` "" stands for none.
    """

    device_id: str
    household_id: str
    host: str
    port: int
    tls: bool
    username: str
    password: str = field(repr=False)
    client_id: str = ""

    def mac(self, claim_token: str, nonce: bytes) -> bytes:
        """HMAC-SHA256 under the token's grant key over these fields and ``nonce``."""
        key = hashlib.sha256(
            encode_fields(CLAIM_GRANT_KEY_DOMAIN, {"claim_token": claim_token})
        ).digest()
        signed = encode_fields(
            CLAIM_GRANT_DOMAIN,
            {
                "client_id": self.client_id,
                "device_id": self.device_id,
                "household_id": self.household_id,
                "mqtt_host": self.host,
                "mqtt_password": self.password,
                "mqtt_port": self.port,
                "mqtt_tls": self.tls,
                "mqtt_username": self.username,
                "nonce": nonce,
            },
        )
        return hmac.new(key, signed, hashlib.sha256).digest()

    def check(self, mac: bytes, confirmation: ClaimConfirmation) -> None:
        """Raise :class:`ClaimError` unless ``mac`` is the service's for ``confirmation``."""
        if self.device_id != confirmation.device_id:
            raise ClaimError("the grant names another device")
        expected = self.mac(confirmation.claim_token, confirmation.nonce)
        if not hmac.compare_digest(expected, mac):
            raise ClaimError("the grant's MAC does not match this claim's confirmation")
