"""Commands sent inside the secure session, and their results.

Every message is canonical JSON with an ``id`` and a ``type``; bytes travel as unpadded
base64url.  Decoding is strict - unknown types, unknown fields, missing fields, wrong JSON
types and out-of-range values each raise their own error - because the device acts on these
messages (joins networks, calls URLs) and a lenient parser is where injection starts.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import InitVar, dataclass, field
from enum import StrEnum
from typing import ClassVar, Final, Self, TypeAlias, TypeVar
from urllib.parse import urlsplit

from .canonical import JsonValue, b64url_decode, b64url_encode, canonical_json, parse_canonical_json
from .claim import ClaimConfirmation
from .diagnostics import DiagnosticCode
from .errors import (
    EncodingError,
    FieldTypeError,
    InsecureUrlError,
    InvalidFieldError,
    InvalidPassphraseError,
    InvalidSsidError,
    InvalidUrlError,
    MissingFieldError,
    PayloadError,
    ProtocolError,
    UnknownFieldError,
    UnknownMessageTypeError,
)
from .identity import validate_device_id
from .payload import OwnerSecret

MAX_SSID_BYTES: Final = 32
MIN_PASSPHRASE: Final = 8
MAX_PASSPHRASE: Final = 63
PSK_HEX_LENGTH: Final = 64
MAX_URL_LENGTH: Final = 2048
MAX_REQUEST_ID: Final = 2**32 - 1
MAX_SCAN_RESULTS: Final = 64
MAX_TEXT_LENGTH: Final = 64
MAX_MESSAGE_LENGTH: Final = 256
BROKER_PIN_SIZE: Final = 32
MIN_RSSI: Final = -127
MAX_PORT: Final = 65535
MAX_COMMIT_TIMEOUT: Final = 3600
MAX_HOSTNAME_LENGTH: Final = 253
#: Longest ``status`` wait a client may ask for (seconds); below any transport's timeout.
MAX_STATUS_WAIT: Final = 30
#: The LAN session-finish reply's header naming what the device supports beyond version 1.
FEATURES_HEADER: Final = "X-IOB-Features"
#: Named in :data:`FEATURES_HEADER`: ``status`` takes ``wait`` (a long poll).
FEATURE_STATUS_WAIT: Final = "status-wait"
#: Named in :data:`FEATURES_HEADER`: ``set_claim`` takes ``hub_relay``, ``status`` may carry
#: ``relay`` (the signed confirmation for Home Assistant to relay) and ``claim_answer`` exists.
FEATURE_CLAIM_RELAY: Final = "claim-relay"
#: Named in :data:`FEATURES_HEADER`: ``set_wifi`` takes ``wps`` (join by the router's WPS
#: push button, no passphrase typed; the device learns the key from the router).
FEATURE_WPS: Final = "wps"
_PRINTABLE_ASCII: Final = frozenset(chr(code) for code in range(0x20, 0x7F))
_HEX: Final = frozenset("0123456789abcdefABCDEF")
_CLAIM_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9_-]{22,512}")
_ERROR_CODE_RE: Final = re.compile(r"[a-z0-9_]{1,64}")
_HOST_LABEL_RE: Final = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")

_T = TypeVar("_T")
_E = TypeVar("_E", bound=StrEnum)


class CommandType(StrEnum):
    """The ``type`` of a request, echoed in its response."""

    INFO = "info"
    SCAN_WIFI = "scan_wifi"
    SET_WIFI = "set_wifi"
    SET_CLAIM = "set_claim"
    COMMIT = "commit"
    STATUS = "status"
    IDENTIFY = "identify"
    FACTORY_RESET = "factory_reset"
    SET_OWNER_SECRET = "set_owner_secret"  # noqa: S105 - a command name, not a secret
    CLAIM_ANSWER = "claim_answer"


class DeviceState(StrEnum):
    """Where the device is in onboarding (``status``)."""

    PROVISIONING = "provisioning"
    COMMITTING = "committing"
    COMMITTED = "committed"


class WifiSecurity(StrEnum):
    """Security of a scanned network."""

    OPEN = "open"
    WEP = "wep"
    WPA_PERSONAL = "wpa_personal"
    WPA3_PERSONAL = "wpa3_personal"
    ENTERPRISE = "enterprise"


class ResultError(StrEnum):
    """Generic error codes of an error response (a :class:`ProtocolError` code also fits)."""

    INVALID_REQUEST = "invalid_request"
    UNSUPPORTED = "unsupported"
    NOT_READY = "not_ready"
    BUSY = "busy"
    FAILED = "failed"
    INTERNAL = "internal"
    #: ``set_claim`` on a device that has an owner (only its Wi-Fi can change).
    ALREADY_CLAIMED = "already_claimed"
    #: ``commit`` of a claim whose ``set_claim`` carried no ``owner_secret``.
    OWNER_SECRET_REQUIRED = "owner_secret_required"  # noqa: S105 - an error code
    #: ``set_owner_secret`` on a device without an owner.
    NOT_CLAIMED = "not_claimed"


# --- field validation ---------------------------------------------------------------------------


def validate_ssid(ssid: bytes) -> bytes:
    """An SSID is 1-32 arbitrary bytes (IEEE 802.11); no encoding is implied."""
    if not 1 <= len(ssid) <= MAX_SSID_BYTES:
        raise InvalidSsidError(f"SSID must be 1-{MAX_SSID_BYTES} bytes, got {len(ssid)}")
    return ssid


def display_ssid(ssid: bytes) -> str:
    r"""Show an SSID safely: printable UTF-8 as text, anything else escaped as ``\xNN``.

    Control and bidirectional-override characters are escaped, so a hostile network name
    cannot rewrite the line it is shown on.
    """
    try:
        text = ssid.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        if text.isprintable() and "\\" not in text:
            return text
    return "".join(
        chr(byte) if chr(byte) in _PRINTABLE_ASCII and byte != ord("\\") else f"\\x{byte:02x}"
        for byte in ssid
    )


def validate_passphrase(passphrase: str | None) -> str | None:
    """WPA passphrase: 8-63 printable ASCII characters, or 64 hex digits (a raw PSK).

    ``None`` means an open network.
    """
    if passphrase is None:
        return None
    if len(passphrase) == PSK_HEX_LENGTH:
        if not set(passphrase) <= _HEX:
            raise InvalidPassphraseError("a 64-character passphrase must be hex digits (a PSK)")
        return passphrase
    if not MIN_PASSPHRASE <= len(passphrase) <= MAX_PASSPHRASE:
        raise InvalidPassphraseError(
            f"passphrase must be {MIN_PASSPHRASE}-{MAX_PASSPHRASE} characters, "
            f"got {len(passphrase)}"
        )
    if not set(passphrase) <= _PRINTABLE_ASCII:
        raise InvalidPassphraseError("passphrase must be printable ASCII characters")
    return passphrase


def validate_host(host: str) -> str:
    """A DNS name or an IP address literal (IPv6 without brackets)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return host
    labels = host.removesuffix(".").split(".")
    if len(host) > MAX_HOSTNAME_LENGTH or not all(_HOST_LABEL_RE.fullmatch(x) for x in labels):
        raise InvalidFieldError(f"invalid host name {host!r}")
    return host


def validate_service_url(url: str, *, allow_insecure_http: bool = False) -> str:
    """An absolute ``https`` URL with a host; ``http`` only for local development."""
    if not 0 < len(url) <= MAX_URL_LENGTH or not all("!" <= char <= "~" for char in url):
        raise InvalidUrlError("URL must be 1-2048 printable ASCII characters without spaces")
    parts = urlsplit(url)
    if parts.scheme == "http":
        if not allow_insecure_http:
            raise InsecureUrlError("service URL must use https")
    elif parts.scheme != "https":
        raise InvalidUrlError(f"unsupported URL scheme {parts.scheme!r}")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise InvalidUrlError("URL must not contain credentials or a fragment")
    try:
        parts.port  # noqa: B018 - parsing the port validates it
    except ValueError as err:
        raise InvalidUrlError(f"invalid port in URL: {err}") from err
    host = parts.hostname
    if not host:
        raise InvalidUrlError("URL has no host")
    try:
        validate_host(host)
    except InvalidFieldError as err:
        raise InvalidUrlError(str(err)) from err
    return url


def _validate_request_id(request_id: int, *, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if not low <= request_id <= MAX_REQUEST_ID:
        raise InvalidFieldError(f"id must be {low}-{MAX_REQUEST_ID}")


def validate_owner_secret(secret: bytes) -> bytes:
    """32 random bytes (see :class:`~.payload.OwnerSecret`), as a command field."""
    try:
        OwnerSecret(secret)
    except PayloadError as err:
        raise InvalidFieldError(str(err)) from err
    return secret


def _validate_text(name: str, value: str, limit: int = MAX_TEXT_LENGTH) -> None:
    if not 0 < len(value) <= limit or not value.isprintable():
        raise InvalidFieldError(f"{name} must be 1-{limit} printable characters")


# --- reading JSON objects -----------------------------------------------------------------------


class _Fields:
    """Typed access to a JSON object that remembers what was read, to reject the rest."""

    def __init__(self, document: dict[str, JsonValue], where: str) -> None:
        self._document = document
        self._where = where
        self._seen: set[str] = set()

    def _get(self, name: str, kind: type[_T], label: str, *, required: bool) -> _T | None:
        self._seen.add(name)
        if name not in self._document:
            if required:
                raise MissingFieldError(f"{self._where}: missing field {name!r}")
            return None
        value = self._document[name]
        # bool is an int subclass; a JSON true is never an integer here.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise FieldTypeError(f"{self._where}: field {name!r} must be {label}")
        return value

    def string(self, name: str) -> str:
        value = self._get(name, str, "a string", required=True)
        return value if value is not None else ""

    def optional_string(self, name: str) -> str | None:
        return self._get(name, str, "a string", required=False)

    def integer(self, name: str) -> int:
        value = self._get(name, int, "an integer", required=True)
        return value if value is not None else 0

    def optional_integer(self, name: str) -> int | None:
        return self._get(name, int, "an integer", required=False)

    def boolean(self, name: str) -> bool:
        return bool(self._get(name, bool, "true or false", required=True))

    def optional_boolean(self, name: str) -> bool | None:
        return self._get(name, bool, "true or false", required=False)

    def optional_document(self, name: str) -> dict[str, JsonValue] | None:
        """An object field as decoded JSON (a nested message read by its own parser)."""
        return self._get(name, dict, "an object", required=False)

    def binary(self, name: str) -> bytes:
        value = self.string(name)
        return self._decode(name, value)

    def optional_binary(self, name: str) -> bytes | None:
        value = self.optional_string(name)
        return None if value is None else self._decode(name, value)

    def obj(self, name: str) -> _Fields:
        value = self._get(name, dict, "an object", required=True)
        return _Fields(value or {}, f"{self._where}.{name}")

    def array(self, name: str) -> list[JsonValue]:
        value = self._get(name, list, "an array", required=True)
        return value or []

    def _decode(self, name: str, value: str) -> bytes:
        try:
            return b64url_decode(value)
        except EncodingError as err:
            raise FieldTypeError(f"{self._where}: field {name!r}: {err}") from err

    def done(self) -> None:
        extra = sorted(set(self._document) - self._seen)
        if extra:
            raise UnknownFieldError(f"{self._where}: unknown field {extra[0]!r}")


def _parse_object(data: bytes, where: str) -> _Fields:
    document = parse_canonical_json(data)
    if not isinstance(document, dict):
        raise FieldTypeError(f"{where} must be a JSON object")
    return _Fields(document, where)


def _command_type(value: str) -> CommandType:
    try:
        return CommandType(value)
    except ValueError as err:
        raise UnknownMessageTypeError(f"unknown command type {value!r}") from err


# --- requests -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _SimpleRequest:
    """A request that carries nothing but its id."""

    command: ClassVar[CommandType]
    request_id: int

    def __post_init__(self) -> None:
        """Validate the id."""
        _validate_request_id(self.request_id)

    def wire_fields(self) -> dict[str, JsonValue]:
        """Fields besides ``id`` and ``type``."""
        return {}


@dataclass(frozen=True, slots=True, kw_only=True)
class InfoRequest(_SimpleRequest):
    """Ask who the device is."""

    command: ClassVar[CommandType] = CommandType.INFO


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanWifiRequest(_SimpleRequest):
    """Ask for the networks the device can see."""

    command: ClassVar[CommandType] = CommandType.SCAN_WIFI


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitRequest(_SimpleRequest):
    """Apply Wi-Fi and claim with the fail-safe timer armed."""

    command: ClassVar[CommandType] = CommandType.COMMIT


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusRequest(_SimpleRequest):
    """Ask for the state and the last diagnostic code.

    ``wait`` (seconds, 0: answer at once): while the device commits, it answers when the
    commit ends or after ``wait`` seconds, whichever comes first (a long poll). Only sent to a
    device that names :data:`FEATURE_STATUS_WAIT`; 0 is not sent (an older device's form).
    """

    command: ClassVar[CommandType] = CommandType.STATUS
    wait: int = 0

    def __post_init__(self) -> None:
        """Validate the id and the wait."""
        _validate_request_id(self.request_id)
        if not 0 <= self.wait <= MAX_STATUS_WAIT:
            raise InvalidFieldError(f"wait must be 0-{MAX_STATUS_WAIT} seconds")

    def wire_fields(self) -> dict[str, JsonValue]:
        """Fields besides ``id`` and ``type``: ``wait`` unless 0."""
        return {"wait": self.wait} if self.wait else {}


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentifyRequest(_SimpleRequest):
    """Blink or beep, so the user knows which device they are talking to."""

    command: ClassVar[CommandType] = CommandType.IDENTIFY


@dataclass(frozen=True, slots=True, kw_only=True)
class FactoryResetRequest(_SimpleRequest):
    """Wipe Wi-Fi, claim and MQTT credentials."""

    command: ClassVar[CommandType] = CommandType.FACTORY_RESET


@dataclass(frozen=True, slots=True, kw_only=True)
class SetWifiRequest:
    """Wi-Fi credentials to try at the next commit.  No passphrase means an open network.

    ``wps``: no passphrase either, but the network is secured and the device asks the router
    for its key by WPS push button (pressed by the user just before the commit). Sent only to a
    device that names :data:`FEATURE_WPS`; false is not sent (an older device's form).
    """

    command: ClassVar[CommandType] = CommandType.SET_WIFI
    request_id: int
    ssid: bytes
    passphrase: str | None = field(default=None, repr=False)
    hidden: bool = False
    wps: bool = False

    def __post_init__(self) -> None:
        """Validate SSID and passphrase."""
        _validate_request_id(self.request_id)
        validate_ssid(self.ssid)
        validate_passphrase(self.passphrase)
        if self.wps and self.passphrase is not None:
            raise InvalidFieldError("a WPS join takes no passphrase")
        if self.wps and self.hidden:
            raise InvalidFieldError("a WPS join needs a network that shows its name")

    @property
    def ssid_display(self) -> str:
        """The SSID, safe to show."""
        return display_ssid(self.ssid)

    def wire_fields(self) -> dict[str, JsonValue]:
        """Fields besides ``id`` and ``type``."""
        fields: dict[str, JsonValue] = {"hidden": self.hidden, "ssid": b64url_encode(self.ssid)}
        if self.passphrase is not None:
            fields["passphrase"] = self.passphrase
        if self.wps:
            fields["wps"] = True
        return fields


@dataclass(frozen=True, slots=True, kw_only=True)
class SetClaimRequest:
    """Where and how to confirm the claim, how to recognise the broker, and the owner secret.

    ``owner_secret`` is optional on the wire only so that messages of older clients still
    parse; a device refuses to *commit* a claim without one (``owner_secret_required``).
    ``allow_insecure_http`` is not sent: it is the receiving side's local-development switch.
    An ``http`` URL is also valid with ``hub_relay``: such a device never talks to the service
    in clear, it hands its confirmation to Home Assistant over the encrypted session.
    """

    command: ClassVar[CommandType] = CommandType.SET_CLAIM
    request_id: int
    service_url: str
    claim_token: str = field(repr=False)
    broker_pin: bytes | None = None
    broker_host: str | None = None
    broker_port: int | None = None
    owner_secret: bytes | None = field(default=None, repr=False)
    #: Home Assistant can relay the signed confirmation if the device cannot reach the service
    #: (only sent to a device that names :data:`FEATURE_CLAIM_RELAY`; false is not sent).
    hub_relay: bool = False
    allow_insecure_http: InitVar[bool] = False

    def __post_init__(self, allow_insecure_http: bool) -> None:
        """Validate URL (https unless local development), token, pin and broker address."""
        _validate_request_id(self.request_id)
        validate_service_url(
            self.service_url, allow_insecure_http=allow_insecure_http or self.hub_relay
        )
        if not _CLAIM_TOKEN_RE.fullmatch(self.claim_token):
            raise InvalidFieldError("claim token must be 22-512 base64url characters")
        if self.broker_pin is not None and len(self.broker_pin) != BROKER_PIN_SIZE:
            raise InvalidFieldError(f"broker pin must be a {BROKER_PIN_SIZE}-byte SHA-256")
        if self.broker_host is not None:
            validate_host(self.broker_host)
        if self.broker_port is not None:
            if self.broker_host is None:
                raise InvalidFieldError("broker port needs a broker host")
            if not 1 <= self.broker_port <= MAX_PORT:
                raise InvalidFieldError(f"broker port must be 1-{MAX_PORT}")
        if self.owner_secret is not None:
            validate_owner_secret(self.owner_secret)

    def wire_fields(self) -> dict[str, JsonValue]:
        """Fields besides ``id`` and ``type``."""
        fields: dict[str, JsonValue] = {
            "claim_token": self.claim_token,
            "service_url": self.service_url,
        }
        if self.broker_pin is not None:
            fields["broker_pin"] = b64url_encode(self.broker_pin)
        if self.broker_host is not None:
            fields["broker_host"] = self.broker_host
        if self.broker_port is not None:
            fields["broker_port"] = self.broker_port
        if self.owner_secret is not None:
            fields["owner_secret"] = b64url_encode(self.owner_secret)
        if self.hub_relay:
            fields["hub_relay"] = True
        return fields


@dataclass(frozen=True, slots=True, kw_only=True)
class SetOwnerSecretRequest:
    """Replace the owner secret of a claimed device (owner sessions only).

    Lets the current owner hand a fresh secret to the recipient of a transfer, or rotate it.
    """

    command: ClassVar[CommandType] = CommandType.SET_OWNER_SECRET
    request_id: int
    owner_secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        """Validate the id and the secret."""
        _validate_request_id(self.request_id)
        validate_owner_secret(self.owner_secret)

    def wire_fields(self) -> dict[str, JsonValue]:
        """Fields besides ``id`` and ``type``."""
        return {"owner_secret": b64url_encode(self.owner_secret)}


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimAnswerRequest:
    """Home Assistant relayed the device's signed confirmation: the account service's answer.

    Exactly one of ``answer`` (the service's "owned" body with its ``grant_mac``, verbatim: the
    device checks it against the claim token it holds) and ``diagnostic`` (the service refused,
    or HA could not reach it either).
    """

    command: ClassVar[CommandType] = CommandType.CLAIM_ANSWER
    request_id: int
    answer: dict[str, JsonValue] | None = field(default=None, repr=False)
    diagnostic: DiagnosticCode | None = None

    def __post_init__(self) -> None:
        """Validate the id; one of the two."""
        _validate_request_id(self.request_id)
        if (self.answer is None) == (self.diagnostic is None):
            raise InvalidFieldError("claim_answer carries exactly one of answer and diagnostic")

    def wire_fields(self) -> dict[str, JsonValue]:
        """Fields besides ``id`` and ``type``."""
        if self.answer is not None:
            return {"answer": self.answer}
        return {"diagnostic": self.diagnostic.value if self.diagnostic else ""}


Request: TypeAlias = (
    InfoRequest
    | ScanWifiRequest
    | SetWifiRequest
    | SetClaimRequest
    | CommitRequest
    | StatusRequest
    | IdentifyRequest
    | FactoryResetRequest
    | SetOwnerSecretRequest
    | ClaimAnswerRequest
)

_SIMPLE_REQUESTS: Final[
    dict[
        CommandType,
        type[InfoRequest | ScanWifiRequest | CommitRequest | IdentifyRequest | FactoryResetRequest],
    ]
] = {
    CommandType.INFO: InfoRequest,
    CommandType.SCAN_WIFI: ScanWifiRequest,
    CommandType.COMMIT: CommitRequest,
    CommandType.IDENTIFY: IdentifyRequest,
    CommandType.FACTORY_RESET: FactoryResetRequest,
}


def encode_request(request: Request) -> bytes:
    """Canonical JSON of a request."""
    return canonical_json(
        {"id": request.request_id, "type": request.command.value, **request.wire_fields()}
    )


def request_reference(data: bytes) -> tuple[int, CommandType | None]:
    """The id and command of a request that :func:`decode_request` refused, where they parse.

    The refusal then answers *that* request (its sender matches answers by id) instead of
    request 0, which a client reads as an answer to another request. ``(0, None)`` when the
    frame is not a JSON object with an integer id.
    """
    try:
        fields = _parse_object(data, "request")
        request_id = fields.integer("id")
    except ProtocolError:
        return 0, None
    try:
        return request_id, _command_type(fields.string("type"))
    except ProtocolError:
        return request_id, None


def decode_request(data: bytes, *, allow_insecure_http: bool = False) -> Request:
    """Parse and validate a request; ``allow_insecure_http`` is the local-development flag."""
    fields = _parse_object(data, "request")
    request_id = fields.integer("id")
    command = _command_type(fields.string("type"))
    request: Request
    if command is CommandType.SET_WIFI:
        request = SetWifiRequest(
            request_id=request_id,
            ssid=fields.binary("ssid"),
            passphrase=fields.optional_string("passphrase"),
            hidden=fields.boolean("hidden"),
            wps=fields.optional_boolean("wps") or False,
        )
    elif command is CommandType.SET_CLAIM:
        request = SetClaimRequest(
            request_id=request_id,
            service_url=fields.string("service_url"),
            claim_token=fields.string("claim_token"),
            broker_pin=fields.optional_binary("broker_pin"),
            broker_host=fields.optional_string("broker_host"),
            broker_port=fields.optional_integer("broker_port"),
            owner_secret=fields.optional_binary("owner_secret"),
            hub_relay=fields.optional_boolean("hub_relay") or False,
            allow_insecure_http=allow_insecure_http,
        )
    elif command is CommandType.SET_OWNER_SECRET:
        request = SetOwnerSecretRequest(
            request_id=request_id, owner_secret=fields.binary("owner_secret")
        )
    elif command is CommandType.STATUS:
        request = StatusRequest(request_id=request_id, wait=fields.optional_integer("wait") or 0)
    elif command is CommandType.CLAIM_ANSWER:
        request = ClaimAnswerRequest(
            request_id=request_id,
            answer=fields.optional_document("answer"),
            diagnostic=_diagnostic(fields.optional_string("diagnostic")),
        )
    else:
        request = _SIMPLE_REQUESTS[command](request_id=request_id)
    fields.done()
    return request


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AckResult:
    """Success with nothing to report (``set_wifi``, ``set_claim``, ``identify``, reset, ...)."""

    def to_json(self) -> dict[str, JsonValue]:
        """Wire form."""
        return {}


@dataclass(frozen=True, slots=True, kw_only=True)
class InfoResult:
    """Who the device is."""

    device_id: str
    model: str
    firmware_version: str
    protocol_version: int
    claimed: bool

    def __post_init__(self) -> None:
        """Validate."""
        validate_device_id(self.device_id)
        _validate_text("model", self.model)
        _validate_text("firmware_version", self.firmware_version)
        if not 1 <= self.protocol_version <= MAX_PORT:
            raise InvalidFieldError("protocol_version must be 1-65535")

    def to_json(self) -> dict[str, JsonValue]:
        """Wire form."""
        return {
            "claimed": self.claimed,
            "device_id": self.device_id,
            "firmware_version": self.firmware_version,
            "model": self.model,
            "protocol_version": self.protocol_version,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class WifiNetwork:
    """One network from a scan."""

    ssid: bytes
    rssi: int
    security: WifiSecurity

    def __post_init__(self) -> None:
        """Validate."""
        validate_ssid(self.ssid)
        if not MIN_RSSI <= self.rssi <= 0:
            raise InvalidFieldError(f"rssi must be {MIN_RSSI}-0 dBm")

    @property
    def ssid_display(self) -> str:
        """The SSID, safe to show."""
        return display_ssid(self.ssid)

    def to_json(self) -> dict[str, JsonValue]:
        """Wire form."""
        return {
            "rssi": self.rssi,
            "security": self.security.value,
            "ssid": b64url_encode(self.ssid),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanWifiResult:
    """Networks the device sees, in the device's order."""

    networks: tuple[WifiNetwork, ...]

    def __post_init__(self) -> None:
        """Bound the list."""
        if len(self.networks) > MAX_SCAN_RESULTS:
            raise InvalidFieldError(f"at most {MAX_SCAN_RESULTS} networks")

    def to_json(self) -> dict[str, JsonValue]:
        """Wire form."""
        return {"networks": [network.to_json() for network in self.networks]}


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitResult:
    """The fail-safe timer is armed; the outcome comes through ``status``."""

    timeout_seconds: int

    def __post_init__(self) -> None:
        """Validate."""
        if not 1 <= self.timeout_seconds <= MAX_COMMIT_TIMEOUT:
            raise InvalidFieldError(f"timeout_seconds must be 1-{MAX_COMMIT_TIMEOUT}")

    def to_json(self) -> dict[str, JsonValue]:
        """Wire form."""
        return {"timeout_seconds": self.timeout_seconds}


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusResult:
    """Onboarding state and the last diagnostic code (``None`` if nothing failed).

    ``relay``: the device cannot reach the account service and waits (within its commit timer)
    for Home Assistant to relay this signed confirmation and answer with ``claim_answer``. Only
    sent while committing a claim whose ``set_claim`` carried ``hub_relay``.
    """

    state: DeviceState
    diagnostic: DiagnosticCode | None = None
    relay: ClaimConfirmation | None = None

    def to_json(self) -> dict[str, JsonValue]:
        """Wire form."""
        fields: dict[str, JsonValue] = {"state": self.state.value}
        if self.diagnostic is not None:
            fields["diagnostic"] = self.diagnostic.value
        if self.relay is not None:
            fields["relay"] = parse_canonical_json(self.relay.to_json())
        return fields


CommandResult: TypeAlias = AckResult | InfoResult | ScanWifiResult | CommitResult | StatusResult


def _enum(enum: type[_E], value: str, what: str) -> _E:
    try:
        return enum(value)
    except ValueError as err:
        raise InvalidFieldError(f"unknown {what} {value!r}") from err


def _diagnostic(value: str | None) -> DiagnosticCode | None:
    return None if value is None else _enum(DiagnosticCode, value, "diagnostic code")


def _read_ack(fields: _Fields) -> AckResult:
    del fields
    return AckResult()


def _read_info(fields: _Fields) -> InfoResult:
    return InfoResult(
        device_id=fields.string("device_id"),
        model=fields.string("model"),
        firmware_version=fields.string("firmware_version"),
        protocol_version=fields.integer("protocol_version"),
        claimed=fields.boolean("claimed"),
    )


def _read_network(fields: _Fields) -> WifiNetwork:
    network = WifiNetwork(
        ssid=fields.binary("ssid"),
        rssi=fields.integer("rssi"),
        security=_enum(WifiSecurity, fields.string("security"), "security"),
    )
    fields.done()
    return network


def _read_scan(fields: _Fields) -> ScanWifiResult:
    networks = []
    for index, item in enumerate(fields.array("networks")):
        if not isinstance(item, dict):
            raise FieldTypeError(f"networks[{index}] must be an object")
        networks.append(_read_network(_Fields(item, f"networks[{index}]")))
    return ScanWifiResult(networks=tuple(networks))


def _read_commit(fields: _Fields) -> CommitResult:
    return CommitResult(timeout_seconds=fields.integer("timeout_seconds"))


def _read_status(fields: _Fields) -> StatusResult:
    relay = fields.optional_document("relay")
    return StatusResult(
        state=_enum(DeviceState, fields.string("state"), "state"),
        diagnostic=_diagnostic(fields.optional_string("diagnostic")),
        relay=None if relay is None else ClaimConfirmation.from_json(canonical_json(relay)),
    )


_RESULTS: Final[
    dict[CommandType, tuple[type[CommandResult], Callable[[_Fields], CommandResult]]]
] = {
    CommandType.INFO: (InfoResult, _read_info),
    CommandType.SCAN_WIFI: (ScanWifiResult, _read_scan),
    CommandType.SET_WIFI: (AckResult, _read_ack),
    CommandType.SET_CLAIM: (AckResult, _read_ack),
    CommandType.COMMIT: (CommitResult, _read_commit),
    CommandType.STATUS: (StatusResult, _read_status),
    CommandType.IDENTIFY: (AckResult, _read_ack),
    CommandType.FACTORY_RESET: (AckResult, _read_ack),
    CommandType.SET_OWNER_SECRET: (AckResult, _read_ack),
    CommandType.CLAIM_ANSWER: (AckResult, _read_ack),
}


def result_type(command: CommandType) -> type[CommandResult]:
    """The result class a successful ``command`` answers with."""
    return _RESULTS[command][0]


@dataclass(frozen=True, slots=True, kw_only=True)
class OkResponse:
    """A successful response."""

    request_id: int
    command: CommandType
    result: CommandResult

    def __post_init__(self) -> None:
        """The result must be the one this command answers with."""
        _validate_request_id(self.request_id)
        expected = result_type(self.command)
        if not isinstance(self.result, expected):
            raise InvalidFieldError(f"{self.command.value} answers with {expected.__name__}")

    @property
    def ok(self) -> bool:
        """Always true."""
        return True


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorResponse:
    """A failed request.  ``request_id`` 0 and no ``command`` when the request was unreadable."""

    request_id: int
    command: CommandType | None
    error: str
    diagnostic: DiagnosticCode | None = None
    message: str | None = None

    def __post_init__(self) -> None:
        """Validate."""
        _validate_request_id(self.request_id, allow_zero=True)
        if not _ERROR_CODE_RE.fullmatch(self.error):
            raise InvalidFieldError("error must be a code of [a-z0-9_]{1,64}")
        if self.message is not None:
            _validate_text("message", self.message, MAX_MESSAGE_LENGTH)

    @property
    def ok(self) -> bool:
        """Always false."""
        return False

    @classmethod
    def from_error(
        cls,
        error: ProtocolError,
        *,
        request_id: int = 0,
        command: CommandType | None = None,
    ) -> Self:
        """Answer a request that raised ``error`` with the error's stable code."""
        return cls(
            request_id=request_id, command=command, error=error.code, diagnostic=error.diagnostic
        )


Response: TypeAlias = OkResponse | ErrorResponse


def encode_response(response: Response) -> bytes:
    """Canonical JSON of a response."""
    document: dict[str, JsonValue] = {"id": response.request_id, "ok": response.ok}
    if response.command is not None:
        document["type"] = response.command.value
    if isinstance(response, OkResponse):
        document["result"] = response.result.to_json()
    else:
        document["error"] = response.error
        if response.diagnostic is not None:
            document["diagnostic"] = response.diagnostic.value
        if response.message is not None:
            document["message"] = response.message
    return canonical_json(document)


def decode_response(data: bytes) -> Response:
    """Parse and validate a response."""
    fields = _parse_object(data, "response")
    request_id = fields.integer("id")
    ok = fields.boolean("ok")
    type_name = fields.optional_string("type")
    command = None if type_name is None else _command_type(type_name)
    response: Response
    if ok:
        if command is None:
            raise MissingFieldError("response: missing field 'type'")
        result_fields = fields.obj("result")
        result = _RESULTS[command][1](result_fields)
        result_fields.done()
        response = OkResponse(request_id=request_id, command=command, result=result)
    else:
        response = ErrorResponse(
            request_id=request_id,
            command=command,
            error=fields.string("error"),
            diagnostic=_diagnostic(fields.optional_string("diagnostic")),
            message=fields.optional_string("message"),
        )
    fields.done()
    return response
