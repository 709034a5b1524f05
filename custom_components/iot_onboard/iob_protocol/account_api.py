"""The account service's ``/v1`` wire model: one typed model per JSON body, shared by all three.

The service (``cloud_relay``) builds its answers from these models, the integration's
``account_client`` and the device's ``relay_client`` parse the answers with them, and the
service's ``/openapi.json`` generates its ``components.schemas`` from them
(:func:`mashumaro.jsonschema.build_json_schema`), so one definition says what a body is.

Parsing is strict where the API is: unknown fields (``forbid_extra_keys``), a missing field, a
value of the wrong JSON type (no coercion: ``"1"`` is not an integer, ``1`` not a string), an
unknown enum member and a value outside its ``Annotated`` length or range constraints all
raise :class:`WireFormatError`. The constraints are mashumaro's JSON Schema annotations, so the
document and :meth:`WireModel.parse` read the same ones; the ``Pattern`` of an id is the
document's promise about the service (its tests validate every answer against the document),
not something a client refuses an answer for (ids are opaque to clients).

Importable as ``iob_protocol.account_api`` (device, service) and as
``custom_components.iot_onboard.iob_protocol.account_api`` (Home Assistant, which ships
mashumaro itself).
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import (
    Annotated,
    Any,
    Final,
    Literal,
    Self,
    Union,
    cast,
    get_args,
    get_origin,
    get_type_hints,
)

from mashumaro import DataClassDictMixin, pass_through
from mashumaro.config import BaseConfig
from mashumaro.exceptions import MissingField
from mashumaro.jsonschema.annotations import (
    Maximum,
    MaxLength,
    Minimum,
    MinLength,
    Pattern,
)

from .canonical import b64url_decode, b64url_encode
from .claim import GRANT_MAC_SIZE, ClaimConfirmation, ClaimGrant
from .errors import EncodingError, MalformedMessageError

# --- error codes ------------------------------------------------------------------------------


class ErrorCode(StrEnum):
    """Every ``error.code`` the account service answers (stable: never renamed once released)."""

    ADMIN_REQUIRED = "admin_required"
    #: No longer answered (the household's own device is onboarded again); services from
    #: before that still answer it and the integration still maps it.
    ALREADY_OWNED = "already_owned"
    AUDIT_CHAIN_BROKEN = "audit_chain_broken"
    AUTHENTICATION_REQUIRED = "authentication_required"
    BAD_SIGNATURE = "bad_signature"
    BROKER_UNAVAILABLE = "broker_unavailable"
    CLAIM_EXPIRED = "claim_expired"
    CLAIM_NOT_FOUND = "claim_not_found"
    CLAIM_REJECTED = "claim_rejected"
    CLOCK_SKEW = "clock_skew"
    CONFIG_ERROR = "config_error"
    CONFIRMATION_MISMATCH = "confirmation_mismatch"
    CONFLICT = "conflict"
    CREDENTIAL_REFUSED = "credential_refused"
    DEVICE_NOT_FOUND = "device_not_found"
    DEVICE_NOT_FOUND_OR_CODE_WRONG = "device_not_found_or_code_wrong"
    EMAIL_TAKEN = "email_taken"
    FORBIDDEN = "forbidden"
    HOUSEHOLD_DELETED = "household_deleted"
    HOUSEHOLD_NOT_FOUND = "household_not_found"
    INTERNAL_ERROR = "internal_error"
    INVALID_CREDENTIALS = "invalid_credentials"
    INVALID_RECORD = "invalid_record"
    INVALID_REQUEST = "invalid_request"
    INVALID_TOKEN = "invalid_token"  # noqa: S105
    INVITATION_INVALID = "invitation_invalid"
    JSON_TOO_DEEP = "json_too_deep"
    MEMBER_NOT_FOUND = "member_not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    MODEL_NOT_FOUND = "model_not_found"
    MQTT_CREDENTIAL_LIMIT = "mqtt_credential_limit"
    MQTT_CREDENTIAL_NOT_FOUND = "mqtt_credential_not_found"
    NOT_FOUND = "not_found"
    OWNER_HANDOVER_REQUIRED = "owner_handover_required"
    PASSWORD_MISMATCH = "password_mismatch"  # noqa: S105
    RATE_LIMITED = "rate_limited"
    REFRESH_TOKEN_INVALID = "refresh_token_invalid"  # noqa: S105
    REFRESH_TOKEN_REUSED = "refresh_token_reused"  # noqa: S105
    REGISTRY_DEVICE_NOT_FOUND = "registry_device_not_found"
    PROVISIONING_TOKEN_INVALID = "provisioning_token_invalid"  # noqa: S105
    RELEASE_STALE = "release_stale"
    REQUEST_TOO_LARGE = "request_too_large"
    SHARE_NOT_FOUND = "share_not_found"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    TRANSFER_NOT_FOUND = "transfer_not_found"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    WEAK_PASSWORD = "weak_password"  # noqa: S105


class WireFormatError(MalformedMessageError):
    """A body that does not fit its model (the model and field say where)."""


# --- value types ------------------------------------------------------------------------------


class Role(StrEnum):
    """A member's role in a household."""

    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"

    @property
    def can_manage(self) -> bool:
        """Whether the role may claim, release, share and manage members (admin or owner)."""
        return self in {Role.OWNER, Role.ADMIN}


class ClaimState(StrEnum):
    """Where a claim is."""

    PENDING = "pending"
    OWNED = "owned"
    EXPIRED = "expired"
    REJECTED = "rejected"


class DeviceAccess(StrEnum):
    """What a household may do with a device."""

    OWNER = "owner"
    CONTROL = "control"
    READ = "read"


class ShareAccess(StrEnum):
    """What a share grants."""

    READ = "read"
    CONTROL = "control"


class MqttAccess(StrEnum):
    """What a household's MQTT credential for another tool may do with its devices."""

    READ = "read"
    CONTROL = "control"


class TransferStatus(StrEnum):
    """Where a transfer is."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    CANCELLED = "cancelled"


# Plain aliases (not ``type`` statements): mashumaro reads through them.
HexId = Annotated[str, Pattern("^[0-9a-f]{32}$")]
DeviceId = Annotated[str, Pattern("^[0-9A-HJKMNP-TV-Z]{16}$")]
Token = Annotated[str, Pattern("^[A-Za-z0-9_-]{43}$")]
#: Unix seconds.
Time = int
Json = dict[str, Any]

#: What the service keeps of a name: no control character (C0, DEL, C1), one visible at least.
_PRINTABLE: Final = r"[^\u0000-\u001f\u007f-\u009f]"
_VISIBLE: Final = rf"{_PRINTABLE}*[^\s\u0000-\u001f\u007f-\u009f]{_PRINTABLE}*"
TEXT_PATTERN: Final = f"^{_VISIBLE}$"
Name = Annotated[str, MinLength(1), MaxLength(100), Pattern(TEXT_PATTERN)]
#: A caller's own label for something (a Home Assistant user id, an order reference).
Label = Annotated[str, MinLength(1), MaxLength(200), Pattern(TEXT_PATTERN)]
#: An id in a request body: only bounded here, so a malformed one gets the handler's own 400.
IdInput = Annotated[str, MaxLength(64)]
#: The roles a member can be given (the owner is the household's creator).
GrantedRole = Literal["admin", "member", "viewer"]
#: A device-signed statement (iob_protocol.claim): a JSON object, or its canonical JSON text.
Statement = dict[str, Any] | str
_STATEMENT_REF: Final = {"$ref": "#/components/schemas/SignedStatement"}

_DEVICE_ID_DOC: Final = {"description": "16 Crockford base32 characters (the device's factory id)."}


# --- the base ---------------------------------------------------------------------------------


class WireModel(DataClassDictMixin):
    """A JSON object body: no coercion, no unknown field, constraints checked on parse."""

    __slots__ = ()

    class Config(BaseConfig):
        """Strict: the API's objects are closed, and values keep their JSON types."""

        forbid_extra_keys = True
        serialization_strategy = {  # noqa: RUF012 - mashumaro reads it once
            str: pass_through,
            int: pass_through,
            bool: pass_through,
        }

    @classmethod
    def parse(cls, document: object) -> Self:
        """``document`` (decoded JSON) as this model, or :class:`WireFormatError`."""
        if not isinstance(document, dict):
            raise WireFormatError(f"{cls.__name__}: expected a JSON object")
        try:
            return cls.from_dict(document)
        except WireFormatError:
            raise
        except (MissingField, ValueError, TypeError, KeyError) as err:
            raise WireFormatError(f"{cls.__name__}: {err}") from err

    def __post_init__(self) -> None:
        """Check every field against its annotation (mashumaro passes values through)."""
        hints = _hints(type(self))
        for item in fields(cast("Any", self)):
            problem = _problem(getattr(self, item.name), hints[item.name])
            if problem is not None:
                raise WireFormatError(f"{type(self).__name__}.{item.name} {problem}")


_HINTS: Final[dict[type, dict[str, Any]]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = get_type_hints(cls, include_extras=True)
    return hints


def _problem(value: object, kind: Any) -> str | None:  # noqa: C901, PLR0911
    """What is wrong with ``value`` as ``kind``; None when it fits."""
    origin = get_origin(kind)
    if origin is Annotated:
        base, *constraints = get_args(kind)
        problem = _problem(value, base)
        return problem if problem is not None else _constraint_problem(value, constraints)
    if origin in {Union, types.UnionType}:
        problems = [_problem(value, option) for option in get_args(kind)]
        return None if None in problems else next(p for p in problems if p)
    if kind is type(None):
        return None if value is None else "must be null"
    if origin is Literal:
        return None if value in get_args(kind) else f"must be one of {get_args(kind)}"
    if kind is Any:
        return None
    if kind is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else "must be an integer"
    if kind is str:
        return None if isinstance(value, str) else "must be a string"
    if origin is tuple:
        if not isinstance(value, tuple):
            return "must be an array"
        item = get_args(kind)[0]
        return next((p for p in (_problem(v, item) for v in value) if p), None)
    if origin is dict or kind is dict:
        return None if isinstance(value, dict) else "must be an object"
    if isinstance(kind, type):
        return None if isinstance(value, kind) else f"must be a {kind.__name__}"
    return None


def _constraint_problem(value: Any, constraints: list[Any]) -> str | None:
    for constraint in constraints:
        if isinstance(constraint, MinLength) and len(value) < constraint.value:
            return f"must be at least {constraint.value} character(s)"
        if isinstance(constraint, MaxLength) and len(value) > constraint.value:
            return f"must be at most {constraint.value} characters"
        if isinstance(constraint, Minimum) and value < constraint.value:
            return f"must be at least {constraint.value}"
        if isinstance(constraint, Maximum) and value > constraint.value:
            return f"must be at most {constraint.value}"
    return None


# --- errors -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorDetail(WireModel):
    """``code`` is an :class:`ErrorCode` from this service (a proxy may answer others)."""

    code: Annotated[str, Pattern("^[a-z][a-z0-9_]*$")]
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorBody(WireModel):
    """Every error: ``{"error": {"code", "message"}}``."""

    error: ErrorDetail

    @classmethod
    def of(cls, code: ErrorCode | str, message: str) -> Self:
        """The body for ``code``."""
        return cls(error=ErrorDetail(code=str(code), message=message))


# --- service and accounts ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Health(WireModel):
    """The service is up; ``time`` is its clock (devices check their skew against it)."""

    status: Literal["ok"] = "ok"
    time: Time


@dataclass(frozen=True, slots=True, kw_only=True)
class Account(WireModel):
    """An account."""

    account_id: HexId
    email: str
    display_name: str
    is_admin: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenPair(WireModel):
    """What sign-up, sign-in and refresh answer (OAuth 2 field names)."""

    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the OAuth 2 token type
    access_token: Token = field(repr=False)
    expires_in: Annotated[int, Minimum(0)] = field(
        metadata={"description": "Seconds the access token lives."}
    )
    refresh_token: Token = field(repr=False)
    refresh_expires_in: Annotated[int, Minimum(0)]
    account: Account


# --- households -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Household(WireModel):
    """A household and the caller's role in it."""

    household_id: HexId
    name: str
    role: Role
    created_at: Time


@dataclass(frozen=True, slots=True, kw_only=True)
class HouseholdList(WireModel):
    """The caller's households."""

    households: tuple[Household, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Provisioned(WireModel):
    """A redeemed provisioning token: the owner account it made, signed in, and its household."""

    tokens: TokenPair
    household: Household


@dataclass(frozen=True, slots=True, kw_only=True)
class Member(WireModel):
    """A household member: an account, or a Home Assistant user (``external_id``)."""

    member_id: HexId
    household_id: HexId
    account_id: HexId | None
    external_id: str | None
    display_name: str
    role: Role
    created_at: Time


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberList(WireModel):
    """Every member of a household."""

    members: tuple[Member, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Invitation(WireModel):
    """A new invitation; ``token`` is shown once."""

    invitation_id: HexId
    household_id: HexId
    token: Token = field(
        repr=False, metadata={"description": "Shown once; give it to the invitee."}
    )
    role: Role
    email: str | None
    external_id: str | None
    expires_at: Time


@dataclass(frozen=True, slots=True, kw_only=True)
class InvitationSummary(WireModel):
    """An open invitation (without its token)."""

    invitation_id: HexId
    household_id: HexId
    role: Role
    email: str | None
    external_id: str | None
    created_at: Time
    expires_at: Time


@dataclass(frozen=True, slots=True, kw_only=True)
class InvitationList(WireModel):
    """Open invitations."""

    invitations: tuple[InvitationSummary, ...]


# --- claims and credentials -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim(WireModel):
    """A single-use claim token bound to a device and a household."""

    claim_id: HexId
    device_id: DeviceId = field(metadata=_DEVICE_ID_DOC)
    household_id: HexId
    token: Token = field(
        repr=False, metadata={"description": "Single use, 256 bits; hand it to the device."}
    )
    expires_at: Time


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimStatus(WireModel):
    """A claim's state, for polling."""

    claim_id: HexId
    status: ClaimState
    device_id: DeviceId = field(metadata=_DEVICE_ID_DOC)
    household_id: HexId
    expires_at: Time
    completed_at: Time | None


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttCredentials(WireModel):
    """Broker address and a username/password: a device's, or a household hub's.

    The one credentials type of the project (the service's answers, the integration's hub,
    the device's grant). ``client_id`` is the only MQTT client id the broker accepts with
    ``username``; the service always names it, None only for a credential built without one
    (then the connecting side uses its own).
    """

    host: Annotated[str, MinLength(1)]
    port: Annotated[int, Minimum(1), Maximum(65535)]
    tls: bool
    username: Annotated[str, MinLength(1)]
    password: Annotated[str, MinLength(1)] = field(repr=False)
    client_id: str | None = None

    class Config(WireModel.Config):
        """The service always sends ``client_id``: the document says a string."""

        json_schema = {  # noqa: RUF012 - mashumaro reads it once
            "properties": {
                "client_id": {
                    "type": "string",
                    "description": "The only MQTT client id the broker accepts with this "
                    "username (the device id; hub-<household id> for a hub; the username "
                    "for a tool credential).",
                }
            }
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Owned(WireModel):
    """The service's "owned" answer to a claim, zero-touch or credential request."""

    status: Literal["owned"] = "owned"
    device_id: DeviceId = field(metadata=_DEVICE_ID_DOC)
    #: Checked non-empty on parse too: the device keeps it as its owner.
    household_id: Annotated[HexId, MinLength(1)]
    mqtt: MqttCredentials


#: base64url of a 32-byte MAC (no padding).
_GRANT_MAC_LENGTH: Final = 43


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayedOwned(WireModel):
    """The "owned" answer to a confirmation Home Assistant relayed (``relayed``: true).

    :class:`Owned` plus ``grant_mac``: the service's HMAC under a key derived from the claim
    token, over the grant and the confirmation's nonce (``iob_protocol.claim.ClaimGrant``), so
    the device can tell the answer to its own confirmation from anything else HA could hand it.
    """

    status: Literal["owned"] = "owned"
    device_id: DeviceId = field(metadata=_DEVICE_ID_DOC)
    household_id: Annotated[HexId, MinLength(1)]
    mqtt: MqttCredentials
    grant_mac: Annotated[str, MinLength(_GRANT_MAC_LENGTH), MaxLength(_GRANT_MAC_LENGTH)] = field(
        metadata={"description": "base64url HMAC-SHA256 of the grant (docs/protocol.md §9)."}
    )

    @staticmethod
    def grant_of(owned: Owned) -> ClaimGrant:
        """The fields the MAC covers."""
        mqtt = owned.mqtt
        return ClaimGrant(
            device_id=owned.device_id,
            household_id=owned.household_id,
            host=mqtt.host,
            port=mqtt.port,
            tls=mqtt.tls,
            username=mqtt.username,
            password=mqtt.password,
            client_id=mqtt.client_id or "",
        )

    @classmethod
    def sealed(cls, owned: Owned, confirmation: ClaimConfirmation) -> Self:
        """``owned`` with the MAC for ``confirmation`` (the service's side)."""
        mac = cls.grant_of(owned).mac(confirmation.claim_token, confirmation.nonce)
        return cls(
            device_id=owned.device_id,
            household_id=owned.household_id,
            mqtt=owned.mqtt,
            grant_mac=b64url_encode(mac),
        )

    def opened(self, confirmation: ClaimConfirmation) -> Owned:
        """The plain answer, once the MAC proves it answers ``confirmation`` (the device's side).

        Raises :class:`~.errors.ClaimError` otherwise.
        """
        owned = Owned(device_id=self.device_id, household_id=self.household_id, mqtt=self.mqtt)
        try:
            mac = b64url_decode(self.grant_mac)
        except EncodingError as err:
            raise WireFormatError(f"RelayedOwned.grant_mac: {err}") from err
        if len(mac) != GRANT_MAC_SIZE:
            raise WireFormatError(f"RelayedOwned.grant_mac must be {GRANT_MAC_SIZE} bytes")
        self.grant_of(owned).check(mac, confirmation)
        return owned


@dataclass(frozen=True, slots=True, kw_only=True)
class Unowned(WireModel):
    """Nobody owns the device (released, or never claimed): said to the genuine device only."""

    status: Literal["unowned"] = "unowned"
    device_id: DeviceId = field(metadata=_DEVICE_ID_DOC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Released(WireModel):
    """A release took effect (or had already)."""

    status: Literal["released"] = "released"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceCredentials(WireModel):
    """A device's new MQTT credentials (after a rotation)."""

    device_id: DeviceId = field(metadata=_DEVICE_ID_DOC)
    mqtt: MqttCredentials


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceKey(WireModel):
    """A device's registry identity key, released for its manual code."""

    device_id: DeviceId = field(metadata=_DEVICE_ID_DOC)
    public_key: Annotated[str, Pattern("^[A-Za-z0-9_-]{43}$")] = field(
        metadata={"description": "The raw 32-byte Ed25519 identity key, base64url."}
    )
    fingerprint: Annotated[str, Pattern("^[0-9A-HJKMNP-TV-Z]{32}$")] = field(
        metadata={"description": "The key's fingerprint as on the QR code (docs/protocol.md §2)."}
    )
    model: str


# --- devices ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Model(WireModel):
    """A device model's registry entry."""

    model: str
    name: str
    manufacturer: str
    metadata: Json
    updated_at: Time


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelList(WireModel):
    """Every device model."""

    models: tuple[Model, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceSummary(WireModel):
    """A device the household owns or that is shared with it."""

    device_id: DeviceId = field(metadata=_DEVICE_ID_DOC)
    model: str
    access: DeviceAccess
    owner_household_id: HexId
    since: Time | None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceList(WireModel):
    """Owned and shared devices."""

    devices: tuple[DeviceSummary, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Device(DeviceSummary):
    """One device with its model's metadata."""

    model_info: Model | None


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttAccessSummary(WireModel):
    """A household's MQTT credential for another tool (Node-RED, Telegraf), without password."""

    credential_id: HexId
    household_id: HexId
    label: str
    access: MqttAccess
    username: str = field(metadata={"description": "tool-<credential_id>; also the client id."})
    created_at: Time


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttAccessCredential(MqttAccessSummary):
    """A new tool credential: ``mqtt`` carries the password, shown this once only."""

    mqtt: MqttCredentials = field(
        repr=False, metadata={"description": "Shown once; the service cannot show it again."}
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttAccessList(WireModel):
    """A household's tool credentials."""

    credentials: tuple[MqttAccessSummary, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Share(WireModel):
    """A device shared with another household."""

    device_id: DeviceId = field(metadata=_DEVICE_ID_DOC)
    household_id: HexId
    access: ShareAccess
    created_at: Time


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareList(WireModel):
    """A device's shares."""

    shares: tuple[Share, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Transfer(WireModel):
    """A two-party transfer of a device between households."""

    transfer_id: HexId
    device_id: DeviceId = field(metadata=_DEVICE_ID_DOC)
    from_household_id: HexId
    to_household_id: HexId
    status: TransferStatus
    created_at: Time
    expires_at: Time


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferList(WireModel):
    """Pending transfers."""

    transfers: tuple[Transfer, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEvent(WireModel):
    """One entry of the hash-chained audit log."""

    seq: Annotated[int, Minimum(1)]
    at: Time
    actor: str
    action: str
    household_id: str | None
    device_id: str | None
    details: Json
    hash: Annotated[str, Pattern("^[0-9a-f]{64}$")]


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditPage(WireModel):
    """Audit events, newest first, and the cursor of the next page."""

    events: tuple[AuditEvent, ...]
    next_cursor: str | None


# --- administration ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SelfTestCheck(WireModel):
    """One factory self-test check: ``pass``, ``fail`` or ``skipped``, and why."""

    name: str
    result: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SelfTest(WireModel):
    """The unit's ``factory-provision --self-test`` result (no secret in it)."""

    checks: tuple[SelfTestCheck, ...]
    passed: bool
    at: Time


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryDevice(WireModel):
    """A manufacturing-registry entry."""

    device_id: DeviceId = field(metadata=_DEVICE_ID_DOC)
    model: str
    public_key: str
    fingerprint: str
    imported_at: Time
    household_id: HexId | None
    owned_since: Time | None
    preassigned_household_id: HexId | None
    order_ref: str | None
    self_test: SelfTest | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportReport(WireModel):
    """What a registry import changed."""

    imported: int
    unchanged: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RevokedSessions(WireModel):
    """How many sessions an admin revoked."""

    revoked_sessions: int


# --- account lifecycle ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class HouseholdDeleted(WireModel):
    """What deleting a household did (every device is unclaimed and can be onboarded again)."""

    household_id: HexId
    devices_released: Annotated[int, Minimum(0)]
    members_removed: Annotated[int, Minimum(0)]
    invitations_revoked: Annotated[int, Minimum(0)]


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountProfile(WireModel):
    """The account as stored (no password hash)."""

    account_id: HexId
    email: str
    display_name: str
    is_admin: bool
    created_at: Time


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportedMembership(WireModel):
    """One household the account belongs to, and its place there."""

    household_id: HexId
    household_name: str
    member_id: HexId
    role: Role
    external_id: str | None
    display_name: str
    joined_at: Time


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportedHousehold(WireModel):
    """A household the account owns, with the devices it owns."""

    household_id: HexId
    name: str
    created_at: Time
    devices: tuple[DeviceSummary, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportedSession(WireModel):
    """A sign-in session's metadata (its tokens are never exported: only their hashes exist)."""

    session_id: HexId
    created_at: Time
    revoked_at: Time | None
    revoke_reason: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountExport(WireModel):
    """``GET /v1/account/export``: everything the service holds about the account."""

    exported_at: Time
    account: AccountProfile
    memberships: tuple[ExportedMembership, ...]
    households: tuple[ExportedHousehold, ...]
    sessions: tuple[ExportedSession, ...]
    audit_events: tuple[AuditEvent, ...] = field(
        metadata={"description": "Every audit event the account is the actor of, oldest first."}
    )


# --- request bodies ---------------------------------------------------------------------------


class WireRequest(WireModel):
    """A request body: optional fields are absent when None (the API never takes ``null``)."""

    __slots__ = ()

    def body(self) -> dict[str, Any]:
        """The JSON body to send: unset optional fields left out."""
        return {name: value for name, value in self.to_dict().items() if value is not None}


@dataclass(frozen=True, slots=True, kw_only=True)
class SignUpRequest(WireRequest):
    """``POST /v1/auth/sign-up``."""

    email: Annotated[str, MaxLength(254)]
    password: Annotated[str, MaxLength(1024)] = field(
        repr=False,
        metadata={
            "description": "At least 10 characters and not the e-mail address; otherwise "
            "400 `weak_password` (a code of its own, so no minLength here)."
        },
    )
    display_name: Name | None = None

    class Config(WireModel.Config):
        """The document says the address is an e-mail address."""

        json_schema = {  # noqa: RUF012 - mashumaro reads it once
            "properties": {"email": {"type": "string", "format": "email", "maxLength": 254}}
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class SignInRequest(WireRequest):
    """``POST /v1/auth/sign-in``."""

    email: Annotated[str, MaxLength(254)]
    password: Annotated[str, MaxLength(1024)] = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class RefreshRequest(WireRequest):
    """``POST /v1/auth/refresh``."""

    refresh_token: Annotated[str, MaxLength(128)] = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class AcceptInvitationRequest(WireRequest):
    """``POST /v1/invitations/accept``."""

    token: Annotated[str, MaxLength(128)] = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProvisioningRequest(WireRequest):
    """``POST /v1/provisioning/redeem``: the add-on's one-time token (Home Assistant)."""

    token: Annotated[str, MaxLength(128)] = field(repr=False)
    household_name: Name


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfirmationRequest(WireRequest):
    """``POST /v1/claims/confirm`` and ``/v1/zero-touch/confirm``: the signed confirmation."""

    confirmation: Statement
    #: Home Assistant relays the device's confirmation: the answer is :class:`RelayedOwned`
    #: (claims only; zero-touch answers as always).
    relayed: bool | None = field(
        default=None,
        metadata={
            "description": "true when Home Assistant relays the device's claim confirmation: "
            "the answer then carries `grant_mac` (RelayedOwned)."
        },
    )

    class Config(WireModel.Config):
        """A signed statement (the document's SignedStatement)."""

        json_schema = {"properties": {"confirmation": _STATEMENT_REF}}  # noqa: RUF012


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseRequest(WireRequest):
    """``POST /v1/devices/release-by-device``: the signed release."""

    release: Statement

    class Config(WireModel.Config):
        """A signed statement (the document's SignedStatement)."""

        json_schema = {"properties": {"release": _STATEMENT_REF}}  # noqa: RUF012


@dataclass(frozen=True, slots=True, kw_only=True)
class CredentialRequest(WireRequest):
    """``POST /v1/device/mqtt-credential``: the signed credential request."""

    request: Statement

    class Config(WireModel.Config):
        """A signed statement (the document's SignedStatement)."""

        json_schema = {"properties": {"request": _STATEMENT_REF}}  # noqa: RUF012


@dataclass(frozen=True, slots=True, kw_only=True)
class HouseholdRequest(WireRequest):
    """``POST /v1/households`` and ``PATCH /v1/households/{id}``."""

    name: Name


@dataclass(frozen=True, slots=True, kw_only=True)
class AddMemberRequest(WireRequest):
    """``POST …/members``: a member standing for a Home Assistant user."""

    external_id: Label
    display_name: Name
    role: GrantedRole


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateMemberRequest(WireRequest):
    """``PATCH …/members/{id}``: only the fields given change."""

    role: GrantedRole | None = None
    display_name: Name | None = None
    external_id: Label | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class InviteRequest(WireRequest):
    """``POST …/invitations``."""

    role: GrantedRole
    email: Annotated[str, MaxLength(254)] | None = None
    external_id: Label | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimRequest(WireRequest):
    """``POST …/claims``."""

    device_id: IdInput


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceKeyRequest(WireRequest):
    """``POST …/device-keys``."""

    device_id: Annotated[str, MaxLength(64)] = field(
        metadata={"description": "16 Crockford base32 characters."}
    )
    manual_code: Annotated[str, MaxLength(64)] = field(
        metadata={
            "description": "The 10 digits from the label, e.g. `27182-81821`; hyphens and "
            "spaces are ignored."
        }
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareRequest(WireRequest):
    """``PUT …/shares/{target_household_id}``."""

    access: ShareAccess


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttAccessRequest(WireRequest):
    """``POST …/mqtt-credentials``."""

    label: Name = field(metadata={"description": "What it is for, e.g. `Node-RED`."})
    access: MqttAccess


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferRequest(WireRequest):
    """``POST …/transfers``."""

    to_household_id: IdInput


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryImportRequest(WireRequest):
    """``POST /v1/admin/registry/import``: factory records (each parsed by the service)."""

    records: tuple[dict[str, Any], ...]

    class Config(WireModel.Config):
        """1 to 10,000 FactoryRecord items."""

        json_schema = {  # noqa: RUF012 - mashumaro reads it once
            "properties": {
                "records": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 10000,
                    "items": {"$ref": "#/components/schemas/FactoryRecord"},
                }
            }
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PreassignRequest(WireRequest):
    """``PUT /v1/admin/registry/devices/{device_id}/preassignment``."""

    household_id: IdInput
    order_ref: Label | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PutModelRequest(WireRequest):
    """``PUT /v1/admin/models/{model}``."""

    name: Name
    manufacturer: Annotated[str, MaxLength(100), Pattern(f"^(?:{_VISIBLE})?$")] | None = None
    metadata: Json | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OwnerRequest(WireRequest):
    """``POST /v1/households/{id}/owner``: the member who becomes the owner."""

    member_id: IdInput


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteHouseholdRequest(WireRequest):
    """``DELETE /v1/households/{id}``: the household's name, typed again to confirm."""

    confirm_name: Annotated[str, MaxLength(100)] = field(
        metadata={
            "description": "The household's current name, exactly as GET shows it; otherwise "
            "400 `confirmation_mismatch`."
        }
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteAccountRequest(WireRequest):
    """``DELETE /v1/account``: the account's password, entered again."""

    password: Annotated[str, MaxLength(1024)] = field(repr=False)


#: Every request model.
REQUEST_MODELS: Final[tuple[type[WireRequest], ...]] = (
    SignUpRequest,
    SignInRequest,
    RefreshRequest,
    AcceptInvitationRequest,
    ProvisioningRequest,
    ConfirmationRequest,
    ReleaseRequest,
    CredentialRequest,
    HouseholdRequest,
    AddMemberRequest,
    UpdateMemberRequest,
    InviteRequest,
    ClaimRequest,
    DeviceKeyRequest,
    ShareRequest,
    MqttAccessRequest,
    TransferRequest,
    RegistryImportRequest,
    PreassignRequest,
    PutModelRequest,
    OwnerRequest,
    DeleteHouseholdRequest,
    DeleteAccountRequest,
)

#: Every response model, by the name ``/openapi.json`` gives its schema.
RESPONSE_MODELS: Final[tuple[type[WireModel], ...]] = (
    ErrorBody,
    Health,
    Account,
    TokenPair,
    Household,
    HouseholdList,
    Provisioned,
    Member,
    MemberList,
    Invitation,
    InvitationSummary,
    InvitationList,
    Claim,
    ClaimStatus,
    MqttCredentials,
    Owned,
    RelayedOwned,
    Unowned,
    Released,
    DeviceCredentials,
    DeviceSummary,
    DeviceList,
    Device,
    Share,
    ShareList,
    MqttAccessSummary,
    MqttAccessCredential,
    MqttAccessList,
    Transfer,
    TransferList,
    AuditEvent,
    AuditPage,
    Model,
    ModelList,
    RegistryDevice,
    DeviceKey,
    ImportReport,
    RevokedSessions,
    HouseholdDeleted,
    AccountProfile,
    ExportedMembership,
    ExportedHousehold,
    ExportedSession,
    AccountExport,
)
