"""Client of the IoT Onboard account service's ``/v1`` API (no Home Assistant import).

Modelled on python-wled: an injected ``aiohttp`` session (in Home Assistant always
``async_get_clientsession``), ``asyncio.timeout`` around every request, one exception base
(:class:`AccountServiceError`). Bodies and answers are the shared wire model
(``iob_protocol.account_api``, mashumaro): the service answers with the same models, so an answer
that does not fit its model is an :class:`AccountResponseError`, and errors map by ``ErrorCode``.
Only the calls the integration makes are here.

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
from typing import Any, Final, Self, cast
from urllib.parse import quote

import aiohttp

from .const import (
    CONF_ACCESS_EXPIRES_AT,
    CONF_ACCESS_TOKEN,
    CONF_REFRESH_EXPIRES_AT,
    CONF_REFRESH_TOKEN,
)
from .iob_protocol import (
    ClaimConfirmation,
    DiagnosticCode,
    EncodingError,
    MalformedMessageError,
    b64url_decode,
    load_json,
)
from .iob_protocol import (
    account_api as api,
)
from .iob_protocol.account_api import (
    DeviceList,
    ErrorBody,
    ErrorCode,
    Health,
    HouseholdList,
    MemberList,
    Provisioned,
    Released,
    TokenPair,
    WireFormatError,
    WireModel,
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


class ProvisioningTokenInvalidError(AuthenticationError):
    """401 ``provisioning_token_invalid``: the add-on's one-time token is spent or expired."""


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


class HouseholdDeletedError(AccountApiError):
    """410 ``household_deleted``: this account deleted the household; remove the entry."""


class HouseholdNotFoundError(NotFoundError):
    """404 ``household_not_found``: no such household for us (deleted, or never ours)."""


class ConfirmationMismatchError(InvalidRequestError):
    """400 ``confirmation_mismatch``: the typed name is not the household's; nothing deleted."""


class OwnerHandoverRequiredError(ConflictError):
    """409 ``owner_handover_required``: hand the owned household over first."""


class PasswordMismatchError(ForbiddenError):
    """403 ``password_mismatch``: the password entered again is wrong; nothing deleted."""


class MqttCredentialLimitError(ConflictError):
    """409 ``mqtt_credential_limit``: the household has the most tool credentials it may have."""


class MqttCredentialNotFoundError(NotFoundError):
    """404 ``mqtt_credential_not_found``: no such tool credential (revoked already)."""


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
    ErrorCode.WEAK_PASSWORD: WeakPasswordError,
    ErrorCode.CLOCK_SKEW: ClockSkewError,
    ErrorCode.BAD_SIGNATURE: ClaimRejectedError,
    ErrorCode.INVALID_CREDENTIALS: InvalidCredentialsError,
    ErrorCode.PROVISIONING_TOKEN_INVALID: ProvisioningTokenInvalidError,
    ErrorCode.EMAIL_TAKEN: EmailTakenError,
    ErrorCode.ALREADY_OWNED: AlreadyOwnedError,
    ErrorCode.CLAIM_REJECTED: ClaimRejectedError,
    ErrorCode.CLAIM_EXPIRED: ClaimExpiredError,
    ErrorCode.DEVICE_NOT_FOUND_OR_CODE_WRONG: DeviceKeyNotFoundError,
    ErrorCode.HOUSEHOLD_DELETED: HouseholdDeletedError,
    ErrorCode.HOUSEHOLD_NOT_FOUND: HouseholdNotFoundError,
    ErrorCode.CONFIRMATION_MISMATCH: ConfirmationMismatchError,
    ErrorCode.OWNER_HANDOVER_REQUIRED: OwnerHandoverRequiredError,
    ErrorCode.PASSWORD_MISMATCH: PasswordMismatchError,
    ErrorCode.MQTT_CREDENTIAL_LIMIT: MqttCredentialLimitError,
    ErrorCode.MQTT_CREDENTIAL_NOT_FOUND: MqttCredentialNotFoundError,
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
# The answers are the shared wire model's (iob_protocol.account_api); the names below are what
# the rest of the integration imports from here.

ServiceHealth = Health
Account = api.Account
AccountExport = api.AccountExport
HouseholdDeleted = api.HouseholdDeleted
Claim = api.Claim
ClaimState = api.ClaimState
ClaimStatus = api.ClaimStatus
DeviceAccess = api.DeviceAccess
DeviceCredentials = api.DeviceCredentials
DeviceSummary = api.DeviceSummary
Household = api.Household
Member = api.Member
Model = api.Model
MqttAccess = api.MqttAccess
MqttAccessCredential = api.MqttAccessCredential
MqttAccessSummary = api.MqttAccessSummary
MqttCredentials = api.MqttCredentials
Role = api.Role
Share = api.Share
ShareAccess = api.ShareAccess
Transfer = api.Transfer
TransferStatus = api.TransferStatus


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
class SignedIn:
    """What sign-in and sign-up return."""

    account: Account
    tokens: TokenSet


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


# --- parsing ----------------------------------------------------------------------------------


def _parse[M: WireModel](model: type[M], document: Any) -> M:
    """``document`` as ``model``; anything else is an :class:`AccountResponseError`."""
    try:
        return model.parse(document)
    except WireFormatError as err:
        raise AccountResponseError(f"unexpected answer: {err}") from err


def _granted(role: Role) -> api.GrantedRole:
    """A role that can be granted; the owner role cannot (the service would refuse it)."""
    if role is Role.ADMIN:
        return "admin"
    if role is Role.MEMBER:
        return "member"
    if role is Role.VIEWER:
        return "viewer"
    raise InvalidRequestError(400, ErrorCode.INVALID_REQUEST, "the owner role cannot be granted")


def _signed_in(pair: TokenPair, now: float) -> SignedIn:
    issued = int(now)
    return SignedIn(
        account=pair.account,
        tokens=TokenSet(
            access_token=pair.access_token,
            access_expires_at=issued + pair.expires_in,
            refresh_token=pair.refresh_token,
            refresh_expires_at=issued + pair.refresh_expires_in,
        ),
    )


def _device_key(key: api.DeviceKey) -> DeviceKey:
    try:
        public_key = b64url_decode(key.public_key)
    except EncodingError as err:
        raise AccountResponseError(f"device key: public_key is not base64url: {err}") from err
    if len(public_key) != _PUBLIC_KEY_SIZE:
        raise AccountResponseError("device key: public_key must be 32 bytes")
    return DeviceKey(
        device_id=key.device_id, public_key=public_key, fingerprint=key.fingerprint, model=key.model
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
    try:
        error = ErrorBody.parse(document).error
        code, message = error.code, error.message
    except WireFormatError:  # a proxy's page, or no body: the status says enough
        code, message = f"http_{status}", ""
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
            raise AuthenticationError(401, ErrorCode.AUTHENTICATION_REQUIRED, "not signed in")
        if tokens.access_expires_at - REFRESH_MARGIN > self._clock():
            return tokens.access_token
        return await self._refresh_unless_done(tokens.access_token)

    async def _refresh_unless_done(self, stale_access_token: str) -> str:
        """Refresh once for everyone who saw ``stale_access_token``; return the new token."""
        async with self._refresh_lock:
            tokens = self._tokens
            if tokens is None:
                raise AuthenticationError(401, ErrorCode.AUTHENTICATION_REQUIRED, "not signed in")
            if tokens.access_token != stale_access_token:
                return tokens.access_token  # another caller refreshed meanwhile
            return (await self._refresh(tokens)).access_token

    async def _refresh(self, tokens: TokenSet) -> TokenSet:
        if tokens.refresh_expires_at <= self._clock():
            raise AuthenticationError(
                401, ErrorCode.REFRESH_TOKEN_INVALID, "the session has expired"
            )
        body = api.RefreshRequest(refresh_token=tokens.refresh_token).body()
        document = await self._request("POST", "/v1/auth/refresh", body)
        signed_in = _signed_in(_parse(TokenPair, document), self._clock())
        self._set_tokens(signed_in.tokens)
        return signed_in.tokens

    # --- service and auth ---------------------------------------------------------------------

    async def health(self) -> ServiceHealth:
        """``GET /v1/health``: is this an account service, and its clock."""
        return _parse(Health, await self._request("GET", "/v1/health"))

    async def sign_up(self, email: str, password: str, display_name: str = "") -> SignedIn:
        """Create an account and sign in."""
        body = api.SignUpRequest(email=email, password=password, display_name=display_name or None)
        pair = _parse(TokenPair, await self._request("POST", "/v1/auth/sign-up", body.body()))
        signed_in = _signed_in(pair, self._clock())
        self._set_tokens(signed_in.tokens)
        return signed_in

    async def sign_in(self, email: str, password: str) -> SignedIn:
        """Sign in with e-mail and password."""
        body = api.SignInRequest(email=email, password=password).body()
        pair = _parse(TokenPair, await self._request("POST", "/v1/auth/sign-in", body))
        signed_in = _signed_in(pair, self._clock())
        self._set_tokens(signed_in.tokens)
        return signed_in

    async def redeem_provisioning(
        self, token: str, household_name: str
    ) -> tuple[SignedIn, Household]:
        """Spend the add-on's one-time token: a new owner account, signed in, and its household."""
        body = api.ProvisioningRequest(token=token, household_name=household_name).body()
        answer = _parse(Provisioned, await self._request("POST", "/v1/provisioning/redeem", body))
        signed_in = _signed_in(answer.tokens, self._clock())
        self._set_tokens(signed_in.tokens)
        return signed_in, answer.household

    async def me(self) -> Account:
        """The signed-in account."""
        return _parse(Account, await self._authed("GET", "/v1/auth/me"))

    # --- households and members -----------------------------------------------------------------

    async def households(self) -> list[Household]:
        """The account's households with its role in each."""
        answer = _parse(HouseholdList, await self._authed("GET", "/v1/households"))
        return list(answer.households)

    async def create_household(self, name: str) -> Household:
        """A new household owned by the account."""
        body = api.HouseholdRequest(name=name).body()
        return _parse(Household, await self._authed("POST", "/v1/households", body))

    async def members(self, household_id: str) -> list[Member]:
        """Every member."""
        path = f"/v1/households/{_segment(household_id)}/members"
        return list(_parse(MemberList, await self._authed("GET", path)).members)

    async def add_member(
        self, household_id: str, *, external_id: str, display_name: str, role: Role
    ) -> Member:
        """A member standing for a Home Assistant user (admin or owner)."""
        path = f"/v1/households/{_segment(household_id)}/members"
        body = api.AddMemberRequest(
            external_id=external_id, display_name=display_name, role=_granted(role)
        )
        return _parse(Member, await self._authed("POST", path, body.body()))

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
        body = api.UpdateMemberRequest(
            role=None if role is None else _granted(role),
            display_name=display_name,
            external_id=external_id,
        )
        return _parse(Member, await self._authed("PATCH", path, body.body()))

    async def remove_member(self, household_id: str, member_id: str) -> None:
        """Remove a member (admin or owner)."""
        path = f"/v1/households/{_segment(household_id)}/members/{_segment(member_id)}"
        await self._authed("DELETE", path)

    async def hand_over(self, household_id: str, member_id: str) -> Member:
        """Make a member with an account the owner (owner); the caller becomes an admin."""
        path = f"/v1/households/{_segment(household_id)}/owner"
        body = api.OwnerRequest(member_id=member_id).body()
        return _parse(Member, await self._authed("POST", path, body))

    async def delete_household(self, household_id: str, confirm_name: str) -> HouseholdDeleted:
        """Delete the household, releasing every device (owner; its name typed again)."""
        path = f"/v1/households/{_segment(household_id)}"
        body = api.DeleteHouseholdRequest(confirm_name=confirm_name).body()
        return _parse(HouseholdDeleted, await self._authed("DELETE", path, body))

    async def export_account(self) -> AccountExport:
        """Everything the service holds about the signed-in account."""
        return _parse(AccountExport, await self._authed("GET", "/v1/account/export"))

    async def delete_account(self, password: str) -> None:
        """Delete the signed-in account (its password entered again); its tokens die with it."""
        body = api.DeleteAccountRequest(password=password).body()
        await self._authed("DELETE", "/v1/account", body)

    # --- claims -----------------------------------------------------------------------------------

    async def create_claim(self, household_id: str, device_id: str) -> Claim:
        """A single-use claim token for ``device_id`` (admin or owner).

        Raises :class:`ClaimRejectedError` (unknown, or owned by another household: the service
        does not say which) or :class:`AlreadyOwnedError` (already this household's).
        """
        path = f"/v1/households/{_segment(household_id)}/claims"
        body = api.ClaimRequest(device_id=device_id).body()
        return _parse(Claim, await self._authed("POST", path, body))

    async def device_key(self, household_id: str, device_id: str, manual_code: str) -> DeviceKey:
        """The registry key of ``device_id``, for a member who holds its manual code.

        Raises :class:`DeviceKeyNotFoundError` for a wrong code, an unknown id or another
        household's device alike; attempts are rate limited per device.
        """
        path = f"/v1/households/{_segment(household_id)}/device-keys"
        body = api.DeviceKeyRequest(device_id=device_id, manual_code=manual_code).body()
        return _device_key(_parse(api.DeviceKey, await self._authed("POST", path, body)))

    async def claim_status(self, claim_id: str) -> ClaimStatus:
        """``pending``, ``owned``, ``expired`` or ``rejected``."""
        path = f"/v1/claims/{_segment(claim_id)}"
        return _parse(ClaimStatus, await self._authed("GET", path))

    async def relay_claim_confirmation(self, confirmation: ClaimConfirmation) -> dict[str, Any]:
        """Post a device's signed confirmation for it (a device without internet).

        The answer is returned as the service sent it, for the device: its ``grant_mac`` (keyed
        by the claim token) lets the device check it; HA only carries it. Errors as for any
        call (:class:`ClaimRejectedError`, :class:`ClaimExpiredError`, :class:`ClockSkewError`).
        """
        body = api.ConfirmationRequest(
            confirmation=load_json(confirmation.to_json(), max_bytes=MAX_RESPONSE_SIZE),
            relayed=True,
        ).body()
        document = await self._request("POST", "/v1/claims/confirm", body)
        _parse(api.RelayedOwned, document)
        return cast("dict[str, Any]", document)

    # --- device models ----------------------------------------------------------------------------

    async def model(self, model: str) -> Model:
        """A device model's registry entry (its human name: "Demo sensor"); any account."""
        return _parse(Model, await self._authed("GET", f"/v1/models/{_segment(model)}"))

    # --- hub credentials --------------------------------------------------------------------------

    async def hub_credentials(self, household_id: str) -> MqttCredentials:
        """The household hub's MQTT credentials for Home Assistant (admin or owner)."""
        path = f"/v1/households/{_segment(household_id)}/hub"
        return _parse(MqttCredentials, await self._authed("GET", path))

    async def rotate_hub_credentials(self, household_id: str) -> MqttCredentials:
        """A new hub password (admin or owner); the old one stops working."""
        path = f"/v1/households/{_segment(household_id)}/hub/rotate"
        return _parse(MqttCredentials, await self._authed("POST", path))

    # --- MQTT credentials for other tools ----------------------------------------------------

    def _tools_path(self, household_id: str) -> str:
        return f"/v1/households/{_segment(household_id)}/mqtt-credentials"

    async def mqtt_credentials(self, household_id: str) -> list[MqttAccessSummary]:
        """The household's credentials for other tools, without passwords (admin or owner)."""
        answer = _parse(
            api.MqttAccessList, await self._authed("GET", self._tools_path(household_id))
        )
        return list(answer.credentials)

    async def create_mqtt_credential(
        self, household_id: str, label: str, access: MqttAccess
    ) -> MqttAccessCredential:
        """A credential for another tool (admin or owner); its password is in this answer only.

        Raises :class:`MqttCredentialLimitError` when the household has the most it may have.
        """
        body = api.MqttAccessRequest(label=label, access=access).body()
        document = await self._authed("POST", self._tools_path(household_id), body)
        return _parse(MqttAccessCredential, document)

    async def revoke_mqtt_credential(self, household_id: str, credential_id: str) -> None:
        """Revoke a tool credential (admin or owner); its live session is cut at once."""
        path = f"{self._tools_path(household_id)}/{_segment(credential_id)}"
        await self._authed("DELETE", path)

    # --- devices ----------------------------------------------------------------------------------

    async def devices(self, household_id: str) -> list[DeviceSummary]:
        """Owned and shared devices."""
        path = f"/v1/households/{_segment(household_id)}/devices"
        return list(_parse(DeviceList, await self._authed("GET", path)).devices)

    def _device_path(self, household_id: str, device_id: str) -> str:
        return f"/v1/households/{_segment(household_id)}/devices/{_segment(device_id)}"

    async def release_device(self, household_id: str, device_id: str) -> None:
        """Unclaim (admin or owner): credentials are revoked at once."""
        path = self._device_path(household_id, device_id) + "/release"
        _parse(Released, await self._authed("POST", path))

    async def rotate_device_credentials(
        self, household_id: str, device_id: str
    ) -> DeviceCredentials:
        """A new MQTT password for the device (admin or owner)."""
        path = self._device_path(household_id, device_id) + "/credentials"
        return _parse(DeviceCredentials, await self._authed("POST", path))

    async def share_device(
        self, household_id: str, device_id: str, target_household_id: str, access: ShareAccess
    ) -> Share:
        """Share read-only or with control (admin or owner)."""
        path = self._device_path(household_id, device_id) + (
            f"/shares/{_segment(target_household_id)}"
        )
        body = api.ShareRequest(access=access).body()
        return _parse(Share, await self._authed("PUT", path, body))

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
        body = api.TransferRequest(to_household_id=to_household_id).body()
        return _parse(Transfer, await self._authed("POST", path, body))
