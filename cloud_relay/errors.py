"""Every error the account service raises.

One base, :class:`RelayError`; each subclass carries the HTTP status and a stable snake_case
``code`` that clients (Home Assistant, the device) switch on, so codes never change once
released. The message is English and says what to do next.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import ClassVar

from iob_protocol.account_api import ErrorCode
from iob_protocol.boundedjson import MAX_JSON_DEPTH
from iob_protocol.diagnostics import DiagnosticCode


class RelayError(Exception):
    """Base of every error in the account service."""

    status: ClassVar[int] = 500
    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL_ERROR
    default_message: ClassVar[str] = "The service failed unexpectedly; try again later."
    #: What a device shows for this error, where one fits.
    diagnostic: ClassVar[DiagnosticCode | None] = None

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        """Use ``message`` or the class's default; ``retry_after`` for 429 and 503."""
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        self.retry_after = retry_after


# --- requests -----------------------------------------------------------------------------------


class InvalidRequestError(RelayError):
    """The body or a parameter does not follow the API's schema."""

    status = 400
    code = ErrorCode.INVALID_REQUEST
    default_message = "The request is malformed; check it against /openapi.json."


class JsonTooDeepError(InvalidRequestError):
    """The body's JSON nests arrays and objects deeper than any request of this API."""

    code = ErrorCode.JSON_TOO_DEEP
    default_message = (
        f"The JSON is nested deeper than {MAX_JSON_DEPTH} levels; no request of this API "
        "nests that deep."
    )


class UnsupportedMediaTypeError(RelayError):
    """The body is not declared as JSON (``Content-Type: application/json``, UTF-8)."""

    status = 415
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE
    default_message = "Send the body as JSON with 'Content-Type: application/json' (UTF-8)."


class RequestTooLargeError(RelayError):
    """The body is larger than the endpoint accepts."""

    status = 413
    code = ErrorCode.REQUEST_TOO_LARGE
    default_message = "The request body is too large; send a smaller body."


class NotFoundError(RelayError):
    """No such route or resource."""

    status = 404
    code = ErrorCode.NOT_FOUND
    default_message = "Nothing here; check the path against /openapi.json."


class MethodNotAllowedError(RelayError):
    """The route exists but not for this method."""

    status = 405
    code = ErrorCode.METHOD_NOT_ALLOWED
    default_message = "This method is not allowed here; see /openapi.json."


class RateLimitedError(RelayError):
    """Too many requests for one account, address or device."""

    status = 429
    code = ErrorCode.RATE_LIMITED
    default_message = "Too many attempts; wait before trying again (see Retry-After)."


class ConflictError(RelayError):
    """The request clashes with the current state."""

    status = 409
    code = ErrorCode.CONFLICT
    default_message = "The request conflicts with the current state; reload and try again."


# --- authentication -----------------------------------------------------------------------------


class AuthenticationRequiredError(RelayError):
    """No access token was given."""

    status = 401
    code = ErrorCode.AUTHENTICATION_REQUIRED
    default_message = "Sign in and send the access token as 'Authorization: Bearer <token>'."


class InvalidTokenError(RelayError):
    """The access token is unknown, expired or revoked."""

    status = 401
    code = ErrorCode.INVALID_TOKEN
    default_message = (
        "The access token is expired or revoked; refresh it with /v1/auth/refresh or sign in."
    )


class InvalidCredentialsError(RelayError):
    """Wrong e-mail or password (never says which)."""

    status = 401
    code = ErrorCode.INVALID_CREDENTIALS
    default_message = "The e-mail address or password is wrong; check both and try again."


class RefreshTokenInvalidError(RelayError):
    """The refresh token is unknown, expired or its session was revoked."""

    status = 401
    code = ErrorCode.REFRESH_TOKEN_INVALID
    default_message = "The refresh token is no longer valid; sign in again."


class RefreshTokenReusedError(RelayError):
    """A rotated refresh token came back: the session may be stolen, so it is revoked."""

    status = 401
    code = ErrorCode.REFRESH_TOKEN_REUSED
    default_message = (
        "This refresh token was already used, so the session was revoked to protect the "
        "account; sign in again."
    )


class ProvisioningTokenInvalidError(RelayError):
    """The provisioning token is unknown, spent or expired (or this service has none)."""

    status = 401
    code = ErrorCode.PROVISIONING_TOKEN_INVALID
    default_message = (
        "This provisioning token is unknown, already used or expired; restart the IoT Onboard "
        "add-on (it announces a new one), or sign in with an e-mail and password instead."
    )


class EmailTakenError(ConflictError):
    """Sign-up with an e-mail address that has an account."""

    code = ErrorCode.EMAIL_TAKEN
    default_message = "An account with this e-mail address exists; sign in instead."


class WeakPasswordError(InvalidRequestError):
    """The password is too short or too simple."""

    code = ErrorCode.WEAK_PASSWORD
    default_message = "Choose a password of at least 10 characters that is not your e-mail."


# --- authorisation ------------------------------------------------------------------------------


class ForbiddenError(RelayError):
    """The account's role in the household does not allow this."""

    status = 403
    code = ErrorCode.FORBIDDEN
    default_message = "Your role in this household does not allow this; ask its owner or an admin."


class AdminRequiredError(ForbiddenError):
    """Only service administrators may do this."""

    code = ErrorCode.ADMIN_REQUIRED
    default_message = "Only administrators of this service may do this."


class HouseholdNotFoundError(NotFoundError):
    """No such household, or the account is not a member (never says which)."""

    code = ErrorCode.HOUSEHOLD_NOT_FOUND
    default_message = "No such household among yours; check the id or ask to be invited."


class DeviceNotFoundError(NotFoundError):
    """No such device in this household."""

    code = ErrorCode.DEVICE_NOT_FOUND
    default_message = "No such device in this household; check the device id."


class HouseholdDeletedError(RelayError):
    """The caller deleted this household already (a replayed deletion)."""

    status = 410
    code = ErrorCode.HOUSEHOLD_DELETED
    default_message = (
        "You deleted this household already; nothing is left to do. Its devices are unclaimed: "
        "onboard them again from Home Assistant to use them."
    )


class ConfirmationMismatchError(InvalidRequestError):
    """A destructive request's confirmation does not match what it destroys."""

    code = ErrorCode.CONFIRMATION_MISMATCH
    default_message = (
        "confirm_name does not match the household's name; type its name exactly as "
        "GET /v1/households/{id} shows it."
    )


class PasswordMismatchError(ForbiddenError):
    """The password re-entered to confirm a request is wrong."""

    code = ErrorCode.PASSWORD_MISMATCH
    default_message = "The password is wrong; enter your account's current password to confirm."


class OwnerHandoverRequiredError(ConflictError):
    """The account owns households other accounts belong to: they would lose them."""

    code = ErrorCode.OWNER_HANDOVER_REQUIRED
    default_message = (
        "You own a household with other members; hand ownership to one of them or delete "
        "the household first."
    )


class MemberNotFoundError(NotFoundError):
    """No such member in this household."""

    code = ErrorCode.MEMBER_NOT_FOUND
    default_message = "No such member in this household; list the members and try again."


class InvitationInvalidError(NotFoundError):
    """The invitation is unknown, used, revoked or expired."""

    code = ErrorCode.INVITATION_INVALID
    default_message = "This invitation is not valid any more; ask for a new one."


class TransferNotFoundError(NotFoundError):
    """No such pending transfer for this household."""

    code = ErrorCode.TRANSFER_NOT_FOUND
    default_message = "No such pending transfer; ask the owner to offer the device again."


class ShareNotFoundError(NotFoundError):
    """The device is not shared with that household."""

    code = ErrorCode.SHARE_NOT_FOUND
    default_message = "The device is not shared with this household; list its shares."


class ClaimNotFoundError(NotFoundError):
    """No such claim for this account."""

    code = ErrorCode.CLAIM_NOT_FOUND
    default_message = "No such claim; start a new claim."


class DeviceKeyNotFoundError(NotFoundError):
    """The manual-code key lookup failed.

    Deliberately the same for an unknown id, a wrong code and a device owned by (or
    pre-assigned to) another household, so the answer says nothing about which ids exist.
    """

    code = ErrorCode.DEVICE_NOT_FOUND_OR_CODE_WRONG
    default_message = (
        "No device with this id accepts this manual code for your household: check the 10 "
        "digits under the QR code on the device's label (or scan the QR code instead); if the "
        "device belongs to another household, ask its owner to release it."
    )


class ModelNotFoundError(NotFoundError):
    """No such device model in the registry."""

    code = ErrorCode.MODEL_NOT_FOUND
    default_message = "No such device model; create it first or check the name."


class RegistryDeviceNotFoundError(NotFoundError):
    """No such device in the manufacturing registry (admin API only)."""

    code = ErrorCode.REGISTRY_DEVICE_NOT_FOUND
    default_message = "No such device in the registry; import its factory record first."


# --- claims and devices -------------------------------------------------------------------------


class ClaimRejectedError(RelayError):
    """The device cannot be claimed by this request.

    Deliberately the same for an unknown id, a device owned elsewhere and a used token, so a
    stranger cannot enumerate which ids exist or who owns them.
    """

    status = 409
    code = ErrorCode.CLAIM_REJECTED
    default_message = (
        "This device cannot be claimed: check the device id; if it belongs to another "
        "household, ask its owner to release or transfer it."
    )
    diagnostic = DiagnosticCode.CLAIM_REJECTED


class ClaimExpiredError(RelayError):
    """The claim's time ran out before the device confirmed it."""

    status = 410
    code = ErrorCode.CLAIM_EXPIRED
    default_message = "The claim expired; start the setup again from Home Assistant."
    diagnostic = DiagnosticCode.CLAIM_EXPIRED


class ClockSkewError(RelayError):
    """The device's signed time is too far from the service's clock."""

    status = 400
    code = ErrorCode.CLOCK_SKEW
    default_message = (
        "The device's clock is too far from the service's; let the device reach an NTP "
        "server (UDP 123) and try again."
    )
    diagnostic = DiagnosticCode.CLOCK_SKEW


class BadSignatureError(RelayError):
    """The device's signature does not verify against the registry key."""

    status = 400
    code = ErrorCode.BAD_SIGNATURE
    default_message = (
        "The device's signature does not verify; the device may not be genuine or its "
        "identity was reset: contact support with the device id."
    )


class CredentialRefusedError(RelayError):
    """A device-signed credential request the service will not answer.

    Deliberately the same for an unknown id, a signature that does not verify and a replayed
    request, so the answer tells no one which. (A genuine, fresh request for a device nobody
    owns is answered ``unowned`` instead: only the device's own key can ask that.)
    """

    status = 403
    code = ErrorCode.CREDENTIAL_REFUSED
    default_message = (
        "The service has no MQTT credential for this request: the device is unknown here, or "
        "the request is not the device's own fresh one. Check the device's service address, or "
        "factory-reset the device and set it up again from Home Assistant."
    )
    diagnostic = DiagnosticCode.BROKER_AUTH_FAILED


class ReleaseStaleError(ConflictError):
    """A device-signed release older than the current ownership (a replay or late delivery)."""

    code = ErrorCode.RELEASE_STALE
    default_message = (
        "This release notice predates the device's current owner and was ignored; release "
        "the device from its household instead."
    )


# --- infrastructure -----------------------------------------------------------------------------


class BrokerUnavailableError(RelayError):
    """The MQTT broker did not accept the change; nothing was stored."""

    status = 503
    code = ErrorCode.BROKER_UNAVAILABLE
    default_message = (
        "The MQTT broker is unreachable, so nothing was changed; try again in a minute."
    )
    diagnostic = DiagnosticCode.BROKER_AUTH_FAILED


class StorageError(RelayError):
    """The database failed (connection, constraint, migration)."""

    status = 503
    code = ErrorCode.STORAGE_UNAVAILABLE
    default_message = "The database is unavailable; try again in a minute."


class StorageConflictError(StorageError):
    """A unique or foreign-key constraint refused a write."""

    status = 409
    code = ErrorCode.CONFLICT
    default_message = "The request conflicts with the current state; reload and try again."


class ConfigError(RelayError):
    """The configuration is missing or invalid (at start-up, never over HTTP)."""

    code = ErrorCode.CONFIG_ERROR
    default_message = "The configuration is invalid."


class RegistryImportError(InvalidRequestError):
    """A factory-provision record cannot be imported."""

    code = ErrorCode.INVALID_RECORD
    default_message = "A factory record is malformed; see the line number and fix the file."


class AuditChainError(RelayError):
    """The audit log's hash chain is broken (an edit or deletion)."""

    code = ErrorCode.AUDIT_CHAIN_BROKEN
    default_message = "The audit log was edited or truncated; restore it from a backup."


def exit_status(
    command: Callable[[], int], errors: tuple[type[RelayError], ...] = (RelayError,)
) -> int:
    """``command()``'s exit status; one of ``errors`` or an OSError is one ``error:`` line, 1."""
    try:
        return command()
    except errors as err:
        sys.stderr.write(f"error: {err.message}\n")
        return 1
    except OSError as err:
        sys.stderr.write(f"error: {err}\n")
        return 1
