"""Client of the IoT Onboard account service's ``/v1`` API (no Home Assistant import).

Modelled on python-wled: an injected ``aiohttp`` session (in Home Assistant always
``async_get_clientsession``), ``asyncio.timeout`` around every request, one exception base
(:class:`AccountServiceError`), typed frozen dataclass models.

Tokens: sign-in returns a short-lived access token and a refresh token that *rotates* (each use
returns a new pair; reusing a spent one makes the service revoke the whole session). So one
client owns one session's tokens, refreshes under a lock (concurrent callers wait for the same
refresh instead of spending the token twice), refreshes shortly before the access token
expires and once more after an unexpected 401, and reports every new pair through
``on_tokens`` so the caller can persist it. When the refresh token itself is refused the
caller gets :class:`AuthenticationError`: the user must sign in again (reauth).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Self
from urllib.parse import quote

import aiohttp

from .const import (
    CONF_ACCESS_EXPIRES_AT,
    CONF_ACCESS_TOKEN,
    CONF_REFRESH_EXPIRES_AT,
    CONF_REFRESH_TOKEN,
)
from .iob_protocol import (
    DiagnosticCode,
    EncodingError,
    MalformedMessageError,
    b64url_decode,
    load_json,
)

DEFAULT_TIMEOUT: Final = 15.0
#: Refresh this many seconds before the access token expires (clock differences, slow calls).
REFRESH_MARGIN: Final = 60
#: The largest answer read (audit pages are the biggest, well below this).
MAX_RESPONSE_SIZE: Final = 1024 * 1024
_PUBLIC_KEY_SIZE: Final = 32
_HTTP_BAD_REQUEST: Final = 400
_HTTP_SERVER_ERROR: Final = 500

type TokenCallback = Callable[[TokenSet], None]
type Clock = Callable[[], float]


# --- errors -----------------------------------------------------------------------------------


class AccountServiceError(Exception):
    """Base of every error of this client."""

    #: The onboarding diagnostic this error means for a user, where one fits.
    diagnostic: DiagnosticCode | None = None


class AccountConnectionError(AccountServiceError):
    """The service did not answer (DNS, refused, timeout, TLS)."""

    diagnostic = DiagnosticCode.RELAY_UNREACHABLE


class AccountResponseError(AccountServiceError):
    """The service answered something this client does not understand."""


class AccountApiError(AccountServiceError):
    """The service refused the request; ``code`` is its stable error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        """Keep status, code and the service's message (safe to show)."""
        super().__init__(f"{code}: {message}" if message else code)
        self.status = status
        self.code = code
        self.message = message


class InvalidRequestError(AccountApiError):
    """400: the request was malformed or a value was refused."""


class WeakPasswordError(InvalidRequestError):
    """400 ``weak_password``: choose a longer password."""


class ClockSkewError(InvalidRequestError):
    """400 ``clock_skew``: a signed statement's time is too far from the service's."""

    diagnostic = DiagnosticCode.CLOCK_SKEW


class AuthenticationError(AccountApiError):
    """401: not signed in, or the tokens were revoked or expired: sign in again."""


class InvalidCredentialsError(AuthenticationError):
    """401 ``invalid_credentials``: wrong e-mail or password."""


class ForbiddenError(AccountApiError):
    """403: the account's role in the household does not allow this."""


class NotFoundError(AccountApiError):
    """404: no such resource among the account's (strangers get the same answer)."""


class DeviceKeyNotFoundError(NotFoundError):
    """404 ``device_not_found_or_code_wrong``: no device takes this id and manual code for us.

    The service answers the same for an unknown id, a wrong code and another household's
    device, so nobody can enumerate ids.
    """


class ConflictError(AccountApiError):
    """409: conflicts with the current state."""


class EmailTakenError(ConflictError):
    """409 ``email_taken``: an account with this e-mail exists; sign in instead."""


class AlreadyOwnedError(ConflictError):
    """409 ``already_owned``: the device already belongs to this household."""


class ClaimRejectedError(ConflictError):
    """409 ``claim_rejected``: unknown device, owned elsewhere, or token spent."""

    diagnostic = DiagnosticCode.CLAIM_REJECTED


class ClaimExpiredError(AccountApiError):
    """410 ``claim_expired``: the claim's ten minutes are over; start again."""

    diagnostic = DiagnosticCode.CLAIM_EXPIRED


class RateLimitedError(AccountApiError):
    """429: too many attempts; ``retry_after`` seconds to wait (when the service said)."""

    def __init__(self, status: int, code: str, message: str, retry_after: int | None) -> None:
        """Keep the wait."""
        super().__init__(status, code, message)
        self.retry_after = retry_after


class ServiceUnavailableError(AccountApiError):
    """5xx: the service, its database or its broker is down; nothing was changed."""

    diagnostic = DiagnosticCode.RELAY_UNREACHABLE


_CODE_ERRORS: Final[dict[str, type[AccountApiError]]] = {
    "weak_password": WeakPasswordError,
    "clock_skew": ClockSkewError,
    "bad_signature": ClaimRejectedError,
    "invalid_credentials": InvalidCredentialsError,
    "email_taken": EmailTakenError,
    "already_owned": AlreadyOwnedError,
    "claim_rejected": ClaimRejectedError,
    "claim_expired": ClaimExpiredError,
    "device_not_found_or_code_wrong": DeviceKeyNotFoundError,
}
_STATUS_ERRORS: Final[dict[int, type[AccountApiError]]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    410: ClaimExpiredError,
}


# --- models -----------------------------------------------------------------------------------


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


class TransferStatus(StrEnum):
    """Where a transfer is."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenSet:
    """One session's tokens; times are Unix seconds. Never logged (no repr of secrets)."""

    access_token: str = field(repr=False)
    access_expires_at: int
    refresh_token: str = field(repr=False)
    refresh_expires_at: int

    def as_entry_data(self) -> dict[str, Any]:
        """The keys a config entry stores (see const.py)."""
        return {
            CONF_ACCESS_TOKEN: self.access_token,
            CONF_ACCESS_EXPIRES_AT: self.access_expires_at,
            CONF_REFRESH_TOKEN: self.refresh_token,
            CONF_REFRESH_EXPIRES_AT: self.refresh_expires_at,
        }

    @classmethod
    def from_entry_data(cls, data: Mapping[str, Any]) -> Self:
        """Read :meth:`as_entry_data` back."""
        return cls(
            access_token=str(data[CONF_ACCESS_TOKEN]),
            access_expires_at=int(data[CONF_ACCESS_EXPIRES_AT]),
            refresh_token=str(data[CONF_REFRESH_TOKEN]),
            refresh_expires_at=int(data[CONF_REFRESH_EXPIRES_AT]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    """The signed-in account."""

    account_id: str
    email: str
    display_name: str
    is_admin: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedIn:
    """What sign-in and sign-up return."""

    account: Account
    tokens: TokenSet


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceHealth:
    """The service is up; ``time`` is its clock (Unix seconds)."""

    status: str
    time: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Household:
    """A household and the caller's role in it."""

    household_id: str
    name: str
    role: Role
    created_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Member:
    """A household member: an account, or a Home Assistant user (``external_id``)."""

    member_id: str
    household_id: str
    account_id: str | None
    external_id: str | None
    display_name: str
    role: Role
    created_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Invitation:
    """A new invitation; ``token`` is shown once."""

    invitation_id: str
    household_id: str
    token: str = field(repr=False)
    role: Role
    email: str | None
    external_id: str | None
    expires_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class InvitationSummary:
    """An open invitation (without its token)."""

    invitation_id: str
    household_id: str
    role: Role
    email: str | None
    external_id: str | None
    created_at: int
    expires_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """A single-use claim token bound to a device and a household."""

    claim_id: str
    device_id: str
    household_id: str
    token: str = field(repr=False)
    expires_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceKey:
    """A device's registry identity key (raw Ed25519), released for its manual code.

    A manual-code handshake checks the device against this key before anything secret is
    sent (the QR code carries its own fingerprint instead).
    """

    device_id: str
    public_key: bytes
    fingerprint: str
    model: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimStatus:
    """A claim's state, for polling."""

    claim_id: str
    status: ClaimState
    device_id: str
    household_id: str
    expires_at: int
    completed_at: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttCredentials:
    """Broker address and a username/password (a device's, or the household hub's)."""

    host: str
    port: int
    tls: bool
    username: str
    password: str = field(repr=False)
    #: The only MQTT client id the broker accepts with ``username`` (None from a service that
    #: does not say: then the username, which is what the broker binds).
    client_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimOwned:
    """The service's "owned" answer to a claim confirmation."""

    device_id: str
    household_id: str
    mqtt: MqttCredentials


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceModel:
    """A device model's registry entry."""

    model: str
    name: str
    manufacturer: str
    metadata: dict[str, Any]
    updated_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceSummary:
    """A device the household owns or that is shared with it."""

    device_id: str
    model: str
    access: DeviceAccess
    owner_household_id: str
    since: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Device(DeviceSummary):
    """One device with its model's metadata."""

    model_info: DeviceModel | None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceCredentials:
    """A device's new MQTT credentials (after a rotation)."""

    device_id: str
    mqtt: MqttCredentials


@dataclass(frozen=True, slots=True, kw_only=True)
class Share:
    """A device shared with another household."""

    device_id: str
    household_id: str
    access: ShareAccess
    created_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Transfer:
    """A two-party transfer of a device between households."""

    transfer_id: str
    device_id: str
    from_household_id: str
    to_household_id: str
    status: TransferStatus
    created_at: int
    expires_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEvent:
    """One entry of the hash-chained audit log."""

    seq: int
    at: int
    actor: str
    action: str
    household_id: str | None
    device_id: str | None
    details: dict[str, Any]
    hash: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditPage:
    """Audit events, newest first, and the cursor of the next page."""

    events: tuple[AuditEvent, ...]
    next_cursor: str | None


# --- parsing ----------------------------------------------------------------------------------


class _Reader:
    """Typed reads of a JSON object; anything unexpected is an :class:`AccountResponseError`."""

    def __init__(self, document: Any, where: str) -> None:
        if not isinstance(document, dict):
            raise AccountResponseError(f"{where}: expected a JSON object")
        self._document: dict[str, Any] = document
        self._where = where

    def _get(self, name: str) -> Any:
        if name not in self._document:
            raise AccountResponseError(f"{self._where}: missing {name!r}")
        return self._document[name]

    def text(self, name: str) -> str:
        value = self._get(name)
        if not isinstance(value, str):
            raise AccountResponseError(f"{self._where}: {name!r} must be a string")
        return value

    def opt_text(self, name: str) -> str | None:
        return None if self._document.get(name) is None else self.text(name)

    def integer(self, name: str) -> int:
        value = self._get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise AccountResponseError(f"{self._where}: {name!r} must be an integer")
        return value

    def opt_integer(self, name: str) -> int | None:
        return None if self._document.get(name) is None else self.integer(name)

    def flag(self, name: str) -> bool:
        value = self._get(name)
        if not isinstance(value, bool):
            raise AccountResponseError(f"{self._where}: {name!r} must be true or false")
        return value

    def obj(self, name: str) -> _Reader:
        return _Reader(self._get(name), f"{self._where}.{name}")

    def opt_obj(self, name: str) -> _Reader | None:
        return None if self._document.get(name) is None else self.obj(name)

    def raw_obj(self, name: str) -> dict[str, Any]:
        value = self._get(name)
        if not isinstance(value, dict):
            raise AccountResponseError(f"{self._where}: {name!r} must be an object")
        return value

    def items(self, name: str) -> list[_Reader]:
        value = self._get(name)
        if not isinstance(value, list):
            raise AccountResponseError(f"{self._where}: {name!r} must be an array")
        return [_Reader(item, f"{self._where}.{name}[{index}]") for index, item in enumerate(value)]

    def enum[E: StrEnum](self, name: str, enum: type[E]) -> E:
        value = self.text(name)
        try:
            return enum(value)
        except ValueError as err:
            raise AccountResponseError(f"{self._where}: unknown {name} {value!r}") from err


def _account(reader: _Reader) -> Account:
    return Account(
        account_id=reader.text("account_id"),
        email=reader.text("email"),
        display_name=reader.text("display_name"),
        is_admin=reader.flag("is_admin"),
    )


def _signed_in(reader: _Reader, now: float) -> SignedIn:
    issued = int(now)
    return SignedIn(
        account=_account(reader.obj("account")),
        tokens=TokenSet(
            access_token=reader.text("access_token"),
            access_expires_at=issued + reader.integer("expires_in"),
            refresh_token=reader.text("refresh_token"),
            refresh_expires_at=issued + reader.integer("refresh_expires_in"),
        ),
    )


def _household(reader: _Reader) -> Household:
    return Household(
        household_id=reader.text("household_id"),
        name=reader.text("name"),
        role=reader.enum("role", Role),
        created_at=reader.integer("created_at"),
    )


def _member(reader: _Reader) -> Member:
    return Member(
        member_id=reader.text("member_id"),
        household_id=reader.text("household_id"),
        account_id=reader.opt_text("account_id"),
        external_id=reader.opt_text("external_id"),
        display_name=reader.text("display_name"),
        role=reader.enum("role", Role),
        created_at=reader.integer("created_at"),
    )


def _invitation(reader: _Reader) -> Invitation:
    return Invitation(
        invitation_id=reader.text("invitation_id"),
        household_id=reader.text("household_id"),
        token=reader.text("token"),
        role=reader.enum("role", Role),
        email=reader.opt_text("email"),
        external_id=reader.opt_text("external_id"),
        expires_at=reader.integer("expires_at"),
    )


def _invitation_summary(reader: _Reader) -> InvitationSummary:
    return InvitationSummary(
        invitation_id=reader.text("invitation_id"),
        household_id=reader.text("household_id"),
        role=reader.enum("role", Role),
        email=reader.opt_text("email"),
        external_id=reader.opt_text("external_id"),
        created_at=reader.integer("created_at"),
        expires_at=reader.integer("expires_at"),
    )


def _claim(reader: _Reader) -> Claim:
    return Claim(
        claim_id=reader.text("claim_id"),
        device_id=reader.text("device_id"),
        household_id=reader.text("household_id"),
        token=reader.text("token"),
        expires_at=reader.integer("expires_at"),
    )


def _device_key(reader: _Reader) -> DeviceKey:
    try:
        public_key = b64url_decode(reader.text("public_key"))
    except EncodingError as err:
        raise AccountResponseError(f"device key: public_key is not base64url: {err}") from err
    if len(public_key) != _PUBLIC_KEY_SIZE:
        raise AccountResponseError("device key: public_key must be 32 bytes")
    return DeviceKey(
        device_id=reader.text("device_id"),
        public_key=public_key,
        fingerprint=reader.text("fingerprint"),
        model=reader.text("model"),
    )


def _claim_status(reader: _Reader) -> ClaimStatus:
    return ClaimStatus(
        claim_id=reader.text("claim_id"),
        status=reader.enum("status", ClaimState),
        device_id=reader.text("device_id"),
        household_id=reader.text("household_id"),
        expires_at=reader.integer("expires_at"),
        completed_at=reader.opt_integer("completed_at"),
    )


def _mqtt(reader: _Reader) -> MqttCredentials:
    return MqttCredentials(
        host=reader.text("host"),
        port=reader.integer("port"),
        tls=reader.flag("tls"),
        username=reader.text("username"),
        password=reader.text("password"),
        client_id=reader.opt_text("client_id"),
    )


def _owned(reader: _Reader) -> ClaimOwned:
    if reader.text("status") != ClaimState.OWNED:
        raise AccountResponseError("claim confirmation: status is not 'owned'")
    return ClaimOwned(
        device_id=reader.text("device_id"),
        household_id=reader.text("household_id"),
        mqtt=_mqtt(reader.obj("mqtt")),
    )


def _model(reader: _Reader) -> DeviceModel:
    return DeviceModel(
        model=reader.text("model"),
        name=reader.text("name"),
        manufacturer=reader.text("manufacturer"),
        metadata=reader.raw_obj("metadata"),
        updated_at=reader.integer("updated_at"),
    )


def _device_summary(reader: _Reader) -> DeviceSummary:
    return DeviceSummary(
        device_id=reader.text("device_id"),
        model=reader.text("model"),
        access=reader.enum("access", DeviceAccess),
        owner_household_id=reader.text("owner_household_id"),
        since=reader.opt_integer("since"),
    )


def _device(reader: _Reader) -> Device:
    info = reader.opt_obj("model_info")
    return Device(
        device_id=reader.text("device_id"),
        model=reader.text("model"),
        access=reader.enum("access", DeviceAccess),
        owner_household_id=reader.text("owner_household_id"),
        since=reader.opt_integer("since"),
        model_info=None if info is None else _model(info),
    )


def _share(reader: _Reader) -> Share:
    return Share(
        device_id=reader.text("device_id"),
        household_id=reader.text("household_id"),
        access=reader.enum("access", ShareAccess),
        created_at=reader.integer("created_at"),
    )


def _transfer(reader: _Reader) -> Transfer:
    return Transfer(
        transfer_id=reader.text("transfer_id"),
        device_id=reader.text("device_id"),
        from_household_id=reader.text("from_household_id"),
        to_household_id=reader.text("to_household_id"),
        status=reader.enum("status", TransferStatus),
        created_at=reader.integer("created_at"),
        expires_at=reader.integer("expires_at"),
    )


def _audit_page(reader: _Reader) -> AuditPage:
    return AuditPage(
        events=tuple(
            AuditEvent(
                seq=item.integer("seq"),
                at=item.integer("at"),
                actor=item.text("actor"),
                action=item.text("action"),
                household_id=item.opt_text("household_id"),
                device_id=item.opt_text("device_id"),
                details=item.raw_obj("details"),
                hash=item.text("hash"),
            )
            for item in reader.items("events")
        ),
        next_cursor=reader.opt_text("next_cursor"),
    )


async def read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, or ``limit + 1`` bytes when it is longer (``read(n)`` may return less)."""
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            break
    return bytes(body[: limit + 1])


def _segment(value: str) -> str:
    """One path segment; ids never contain ``/``, but a caller's typo must not change the path."""
    return quote(value, safe="")


def _api_error(status: int, document: Any, retry_after: str | None) -> AccountApiError:
    error = document.get("error") if isinstance(document, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    code = code if isinstance(code, str) else f"http_{status}"
    message = message if isinstance(message, str) else ""
    if status == 429:  # noqa: PLR2004
        wait = int(retry_after) if retry_after is not None and retry_after.isdigit() else None
        return RateLimitedError(status, code, message, wait)
    if status >= _HTTP_SERVER_ERROR:
        return ServiceUnavailableError(status, code, message)
    cls = _CODE_ERRORS.get(code) or _STATUS_ERRORS.get(status, AccountApiError)
    return cls(status, code, message)


# --- the client -------------------------------------------------------------------------------


class AccountClient:
    """One account's session with one account service."""

    def __init__(
        self,
        base_url: str,
        *,
        session: aiohttp.ClientSession,
        tokens: TokenSet | None = None,
        on_tokens: TokenCallback | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Clock = time.time,
    ) -> None:
        """``on_tokens`` is called (in the event loop) with every new token pair."""
        self._base_url = base_url.rstrip("/")
        self._session = session
        self._tokens = tokens
        self._on_tokens = on_tokens
        self._timeout = timeout
        self._clock = clock
        self._refresh_lock = asyncio.Lock()

    @property
    def base_url(self) -> str:
        """The service URL without a trailing slash."""
        return self._base_url

    @property
    def tokens(self) -> TokenSet | None:
        """The current tokens (None before sign-in or after sign-out)."""
        return self._tokens

    def _set_tokens(self, tokens: TokenSet) -> None:
        self._tokens = tokens
        if self._on_tokens is not None:
            self._on_tokens(tokens)

    # --- transport ----------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        token: str | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        url = self._base_url + path
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            async with (
                asyncio.timeout(self._timeout),
                self._session.request(
                    method,
                    url,
                    json=body,
                    headers=headers,
                    params=params,
                    allow_redirects=False,
                ) as response,
            ):
                raw = await read_limited(response, MAX_RESPONSE_SIZE)
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except TimeoutError as err:
            raise AccountConnectionError(f"{url}: no answer within {self._timeout:g} s") from err
        except (aiohttp.ClientError, OSError) as err:
            raise AccountConnectionError(f"{url}: {err}") from err
        if len(raw) > MAX_RESPONSE_SIZE:
            raise AccountResponseError(f"{url}: answer larger than {MAX_RESPONSE_SIZE} bytes")
        document: Any = None
        if raw:
            try:
                document = load_json(raw, max_bytes=MAX_RESPONSE_SIZE)
            except MalformedMessageError as err:
                if status >= _HTTP_SERVER_ERROR:
                    raise ServiceUnavailableError(status, f"http_{status}", "") from err
                raise AccountResponseError(f"{url}: HTTP {status}, not JSON ({err})") from err
        if status >= _HTTP_BAD_REQUEST:
            raise _api_error(status, document, retry_after)
        return document

    async def _authed(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """A request with the access token; one refresh and retry after an early 401."""
        token = await self._access_token()
        try:
            return await self._request(method, path, body, token=token, params=params)
        except InvalidCredentialsError:
            raise
        except AuthenticationError:
            token = await self._refresh_unless_done(token)
            return await self._request(method, path, body, token=token, params=params)

    async def _access_token(self) -> str:
        tokens = self._tokens
        if tokens is None:
            raise AuthenticationError(401, "authentication_required", "not signed in")
        if tokens.access_expires_at - REFRESH_MARGIN > self._clock():
            return tokens.access_token
        return await self._refresh_unless_done(tokens.access_token)

    async def _refresh_unless_done(self, stale_access_token: str) -> str:
        """Refresh once for everyone who saw ``stale_access_token``; return the new token."""
        async with self._refresh_lock:
            tokens = self._tokens
            if tokens is None:
                raise AuthenticationError(401, "authentication_required", "not signed in")
            if tokens.access_token != stale_access_token:
                return tokens.access_token  # another caller refreshed meanwhile
            return (await self._refresh(tokens)).access_token

    async def _refresh(self, tokens: TokenSet) -> TokenSet:
        if tokens.refresh_expires_at <= self._clock():
            raise AuthenticationError(401, "refresh_token_invalid", "the session has expired")
        document = await self._request(
            "POST", "/v1/auth/refresh", {"refresh_token": tokens.refresh_token}
        )
        signed_in = _signed_in(_Reader(document, "refresh"), self._clock())
        self._set_tokens(signed_in.tokens)
        return signed_in.tokens

    # --- service and auth ---------------------------------------------------------------------

    async def health(self) -> ServiceHealth:
        """``GET /v1/health``: is this an account service, and its clock."""
        reader = _Reader(await self._request("GET", "/v1/health"), "health")
        return ServiceHealth(status=reader.text("status"), time=reader.integer("time"))

    async def sign_up(self, email: str, password: str, display_name: str = "") -> SignedIn:
        """Create an account and sign in."""
        body: dict[str, Any] = {"email": email, "password": password}
        if display_name:
            body["display_name"] = display_name
        signed_in = _signed_in(
            _Reader(await self._request("POST", "/v1/auth/sign-up", body), "sign-up"),
            self._clock(),
        )
        self._set_tokens(signed_in.tokens)
        return signed_in

    async def sign_in(self, email: str, password: str) -> SignedIn:
        """Sign in with e-mail and password."""
        document = await self._request(
            "POST", "/v1/auth/sign-in", {"email": email, "password": password}
        )
        signed_in = _signed_in(_Reader(document, "sign-in"), self._clock())
        self._set_tokens(signed_in.tokens)
        return signed_in

    async def refresh(self) -> TokenSet:
        """Rotate the tokens now (normally automatic)."""
        tokens = self._tokens
        if tokens is None:
            raise AuthenticationError(401, "authentication_required", "not signed in")
        async with self._refresh_lock:
            return await self._refresh(self._tokens or tokens)

    async def sign_out(self) -> None:
        """Revoke this session at the service and forget the tokens."""
        await self._authed("POST", "/v1/auth/sign-out")
        self._tokens = None

    async def me(self) -> Account:
        """The signed-in account."""
        return _account(_Reader(await self._authed("GET", "/v1/auth/me"), "me"))

    # --- households and members -----------------------------------------------------------------

    async def households(self) -> list[Household]:
        """The account's households with its role in each."""
        reader = _Reader(await self._authed("GET", "/v1/households"), "households")
        return [_household(item) for item in reader.items("households")]

    async def create_household(self, name: str) -> Household:
        """A new household owned by the account."""
        return _household(
            _Reader(await self._authed("POST", "/v1/households", {"name": name}), "household")
        )

    async def household(self, household_id: str) -> Household:
        """One household."""
        path = f"/v1/households/{_segment(household_id)}"
        return _household(_Reader(await self._authed("GET", path), "household"))

    async def rename_household(self, household_id: str, name: str) -> Household:
        """Rename (admin or owner)."""
        path = f"/v1/households/{_segment(household_id)}"
        return _household(_Reader(await self._authed("PATCH", path, {"name": name}), "household"))

    async def members(self, household_id: str) -> list[Member]:
        """Every member."""
        path = f"/v1/households/{_segment(household_id)}/members"
        reader = _Reader(await self._authed("GET", path), "members")
        return [_member(item) for item in reader.items("members")]

    async def add_member(
        self, household_id: str, *, external_id: str, display_name: str, role: Role
    ) -> Member:
        """A member standing for a Home Assistant user (admin or owner)."""
        path = f"/v1/households/{_segment(household_id)}/members"
        body = {"external_id": external_id, "display_name": display_name, "role": role.value}
        return _member(_Reader(await self._authed("POST", path, body), "member"))

    async def update_member(
        self,
        household_id: str,
        member_id: str,
        *,
        role: Role | None = None,
        display_name: str | None = None,
        external_id: str | None = None,
    ) -> Member:
        """Change a member's role, name or external id (admin or owner)."""
        path = f"/v1/households/{_segment(household_id)}/members/{_segment(member_id)}"
        body: dict[str, Any] = {}
        if role is not None:
            body["role"] = role.value
        if display_name is not None:
            body["display_name"] = display_name
        if external_id is not None:
            body["external_id"] = external_id
        return _member(_Reader(await self._authed("PATCH", path, body), "member"))

    async def remove_member(self, household_id: str, member_id: str) -> None:
        """Remove a member (admin or owner)."""
        path = f"/v1/households/{_segment(household_id)}/members/{_segment(member_id)}"
        await self._authed("DELETE", path)

    async def invitations(self, household_id: str) -> list[InvitationSummary]:
        """Open invitations (admin or owner)."""
        path = f"/v1/households/{_segment(household_id)}/invitations"
        reader = _Reader(await self._authed("GET", path), "invitations")
        return [_invitation_summary(item) for item in reader.items("invitations")]

    async def invite(
        self,
        household_id: str,
        *,
        role: Role,
        email: str | None = None,
        external_id: str | None = None,
    ) -> Invitation:
        """An invitation token, shown once (admin or owner)."""
        path = f"/v1/households/{_segment(household_id)}/invitations"
        body: dict[str, Any] = {"role": role.value}
        if email is not None:
            body["email"] = email
        if external_id is not None:
            body["external_id"] = external_id
        return _invitation(_Reader(await self._authed("POST", path, body), "invitation"))

    async def revoke_invitation(self, household_id: str, invitation_id: str) -> None:
        """Withdraw an open invitation (admin or owner)."""
        path = f"/v1/households/{_segment(household_id)}/invitations/{_segment(invitation_id)}"
        await self._authed("DELETE", path)

    async def accept_invitation(self, token: str) -> Member:
        """Join a household with an invitation token."""
        document = await self._authed("POST", "/v1/invitations/accept", {"token": token})
        return _member(_Reader(document, "member"))

    # --- claims -----------------------------------------------------------------------------------

    async def create_claim(self, household_id: str, device_id: str) -> Claim:
        """A single-use claim token for ``device_id`` (admin or owner).

        Raises :class:`ClaimRejectedError` (unknown, or owned by another household: the service
        does not say which) or :class:`AlreadyOwnedError` (already this household's).
        """
        path = f"/v1/households/{_segment(household_id)}/claims"
        return _claim(_Reader(await self._authed("POST", path, {"device_id": device_id}), "claim"))

    async def device_key(self, household_id: str, device_id: str, manual_code: str) -> DeviceKey:
        """The registry key of ``device_id``, for a member who holds its manual code.

        Raises :class:`DeviceKeyNotFoundError` for a wrong code, an unknown id or another
        household's device alike; attempts are rate limited per device.
        """
        path = f"/v1/households/{_segment(household_id)}/device-keys"
        body = {"device_id": device_id, "manual_code": manual_code}
        return _device_key(_Reader(await self._authed("POST", path, body), "device key"))

    async def claim_status(self, claim_id: str) -> ClaimStatus:
        """``pending``, ``owned``, ``expired`` or ``rejected``."""
        path = f"/v1/claims/{_segment(claim_id)}"
        return _claim_status(_Reader(await self._authed("GET", path), "claim status"))

    async def wait_for_claim(self, claim_id: str, *, interval: float = 2.0) -> ClaimStatus:
        """Poll until the claim leaves ``pending`` (bound it with ``asyncio.timeout``)."""
        while True:
            status = await self.claim_status(claim_id)
            if status.status is not ClaimState.PENDING:
                return status
            await asyncio.sleep(interval)

    async def confirm_claim(self, confirmation: Mapping[str, Any] | str) -> ClaimOwned:
        """Relay a device's signed claim confirmation (a device without internet).

        ``confirmation`` is the canonical JSON object (or its text) the device signed; the
        service verifies the signature against its registry either way.
        """
        document = await self._request("POST", "/v1/claims/confirm", {"confirmation": confirmation})
        return _owned(_Reader(document, "claim confirmation"))

    # --- hub credentials --------------------------------------------------------------------------

    async def hub_credentials(self, household_id: str) -> MqttCredentials:
        """The household hub's MQTT credentials for Home Assistant (admin or owner)."""
        path = f"/v1/households/{_segment(household_id)}/hub"
        return _mqtt(_Reader(await self._authed("GET", path), "hub"))

    async def rotate_hub_credentials(self, household_id: str) -> MqttCredentials:
        """A new hub password (admin or owner); the old one stops working."""
        path = f"/v1/households/{_segment(household_id)}/hub/rotate"
        return _mqtt(_Reader(await self._authed("POST", path), "hub"))

    # --- devices ----------------------------------------------------------------------------------

    async def devices(self, household_id: str) -> list[DeviceSummary]:
        """Owned and shared devices."""
        path = f"/v1/households/{_segment(household_id)}/devices"
        reader = _Reader(await self._authed("GET", path), "devices")
        return [_device_summary(item) for item in reader.items("devices")]

    def _device_path(self, household_id: str, device_id: str) -> str:
        return f"/v1/households/{_segment(household_id)}/devices/{_segment(device_id)}"

    async def device(self, household_id: str, device_id: str) -> Device:
        """One device with its model's metadata."""
        path = self._device_path(household_id, device_id)
        return _device(_Reader(await self._authed("GET", path), "device"))

    async def release_device(self, household_id: str, device_id: str) -> None:
        """Unclaim (admin or owner): credentials are revoked at once."""
        await self._authed("POST", self._device_path(household_id, device_id) + "/release")

    async def rotate_device_credentials(
        self, household_id: str, device_id: str
    ) -> DeviceCredentials:
        """A new MQTT password for the device (admin or owner)."""
        path = self._device_path(household_id, device_id) + "/credentials"
        reader = _Reader(await self._authed("POST", path), "device credentials")
        return DeviceCredentials(device_id=reader.text("device_id"), mqtt=_mqtt(reader.obj("mqtt")))

    async def shares(self, household_id: str, device_id: str) -> list[Share]:
        """Households the device is shared with (admin or owner)."""
        path = self._device_path(household_id, device_id) + "/shares"
        reader = _Reader(await self._authed("GET", path), "shares")
        return [_share(item) for item in reader.items("shares")]

    async def share_device(
        self, household_id: str, device_id: str, target_household_id: str, access: ShareAccess
    ) -> Share:
        """Share read-only or with control (admin or owner)."""
        path = self._device_path(household_id, device_id) + (
            f"/shares/{_segment(target_household_id)}"
        )
        return _share(_Reader(await self._authed("PUT", path, {"access": access.value}), "share"))

    async def unshare_device(
        self, household_id: str, device_id: str, target_household_id: str
    ) -> None:
        """End a share (admin or owner)."""
        path = self._device_path(household_id, device_id) + (
            f"/shares/{_segment(target_household_id)}"
        )
        await self._authed("DELETE", path)

    async def offer_transfer(
        self, household_id: str, device_id: str, to_household_id: str
    ) -> Transfer:
        """Offer the device to another household (owner); it accepts or declines."""
        path = self._device_path(household_id, device_id) + "/transfers"
        body = {"to_household_id": to_household_id}
        return _transfer(_Reader(await self._authed("POST", path, body), "transfer"))

    async def transfers(self, household_id: str) -> list[Transfer]:
        """Pending transfers to and from the household (admin or owner)."""
        path = f"/v1/households/{_segment(household_id)}/transfers"
        reader = _Reader(await self._authed("GET", path), "transfers")
        return [_transfer(item) for item in reader.items("transfers")]

    def _transfer_path(self, household_id: str, transfer_id: str) -> str:
        return f"/v1/households/{_segment(household_id)}/transfers/{_segment(transfer_id)}"

    async def accept_transfer(self, household_id: str, transfer_id: str) -> Transfer:
        """Accept a device offered to this household (admin or owner)."""
        path = self._transfer_path(household_id, transfer_id) + "/accept"
        return _transfer(_Reader(await self._authed("POST", path), "transfer"))

    async def decline_transfer(self, household_id: str, transfer_id: str) -> None:
        """Decline an offer (admin or owner of the recipient)."""
        await self._authed("POST", self._transfer_path(household_id, transfer_id) + "/decline")

    async def cancel_transfer(self, household_id: str, transfer_id: str) -> None:
        """Withdraw an offer (owner of the offering household)."""
        await self._authed("POST", self._transfer_path(household_id, transfer_id) + "/cancel")

    async def audit(
        self,
        household_id: str,
        *,
        device_id: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> AuditPage:
        """The household's (or one device's) audit events, newest first (admin or owner)."""
        path = (
            f"/v1/households/{_segment(household_id)}/audit"
            if device_id is None
            else self._device_path(household_id, device_id) + "/audit"
        )
        params = {"limit": str(limit)}
        if cursor is not None:
            params["cursor"] = cursor
        return _audit_page(_Reader(await self._authed("GET", path, params=params), "audit"))

    # --- models -----------------------------------------------------------------------------------

    async def models(self) -> list[DeviceModel]:
        """Every device model and its metadata."""
        reader = _Reader(await self._authed("GET", "/v1/models"), "models")
        return [_model(item) for item in reader.items("models")]

    async def model(self, model: str) -> DeviceModel:
        """One device model."""
        return _model(_Reader(await self._authed("GET", f"/v1/models/{_segment(model)}"), "model"))
