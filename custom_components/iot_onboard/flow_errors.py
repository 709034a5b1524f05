"""What every failure of the config flow shows: one table, no Home Assistant imports.

A failure becomes either a form error (a ``config.error`` translation key on a field, usually
``base``) or an abort (a ``config.abort`` reason). The row is found by the flow's stage (the
same exception means different things while signing in and while committing) and the
exception's class, most specific first; a stage may fall back to others. Device refusals that
carry a code (``HandshakeRefusedError``, ``CredentialRefusedClientError``) and commit failures
that carry a diagnostic code are resolved from the code. A form shown again after an error keeps
what the user typed except the field the error blames (:func:`wrong_fields`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from .account_client import (
    AccountApiError,
    AccountConnectionError,
    AccountServiceError,
    AlreadyOwnedError,
    AuthenticationError,
    ClaimRejectedError,
    DeviceKeyNotFoundError,
    EmailTakenError,
    ForbiddenError,
    InvalidCredentialsError,
    NotFoundError,
    ProvisioningTokenInvalidError,
    RateLimitedError,
    WeakPasswordError,
)
from .device_client import (
    CredentialRefusedClientError,
    DeviceClientError,
    DeviceConnectionError,
    DeviceKeyMismatchClientError,
    HandshakeRefusedError,
    SessionLostError,
    SetupCodeRejectedError,
)
from .iob_protocol import DiagnosticCode

_LOGGER = logging.getLogger(__name__)

#: Form field names the table refers to (the flow's schemas use the same).
FIELD_BASE: Final = "base"
FIELD_PASSWORD: Final = "password"  # noqa: S105 - a field name
FIELD_SETUP_CODE: Final = "setup_code"
FIELD_PASSPHRASE: Final = "passphrase"  # noqa: S105 - a field name
FIELD_WPS: Final = "wps"
#: The device rejected the household's remembered Wi-Fi password (not one the user typed).
REMEMBERED_WIFI_REJECTED: Final = "remembered_wifi_rejected"
#: WPS was chosen for a network it cannot join (open, hidden, not seen, or Ethernet).
WPS_NOT_POSSIBLE: Final = "wps_not_possible"
#: The abort that also starts the entry's reauth flow (the flow does that part).
REAUTH_REQUIRED: Final = "reauth_required"


class Stage(StrEnum):
    """What the flow was doing when the failure happened."""

    #: Probing an account service: is it one, is it reachable, does the stored session work.
    SERVICE = "service"
    #: Using the stored session at a new address of the service.
    STORED_SESSION = "stored_session"
    #: Signing in or creating an account.
    SIGN_IN = "sign_in"
    #: Redeeming the add-on's one-time provisioning token (Home Assistant OS).
    ADDON = "addon"
    #: Any other account-service call a retry may fix (households, claim status).
    ACCOUNT = "account"
    #: Creating a claim: refusals a retry cannot fix end the flow.
    CLAIM = "claim"
    #: The registry key for a typed (manual) setup code, then the claim.
    DEVICE_KEY = "device_key"
    #: Reading an address the user typed: is a device there.
    PROBE = "probe"
    #: The handshake with a setup code (QR or manual).
    HANDSHAKE = "handshake"
    #: The handshake with the owner secret (a Wi-Fi change): never typed by the user.
    OWNER_HANDSHAKE = "owner_handshake"
    #: Reading the device after the handshake (info, Wi-Fi scan).
    READ = "read"
    #: Wi-Fi, claim, commit and the wait for the verdict.
    COMMIT = "commit"


@dataclass(frozen=True, slots=True)
class FlowError:
    """A form error on ``field``, or (``abort`` set) the end of the flow."""

    error: str | None = None
    field: str = FIELD_BASE
    abort: str | None = None
    #: Not a case the user can act on knowingly: log the cause (one line).
    log: bool = False

    def as_errors(self) -> dict[str, str]:
        """The form's ``errors`` mapping."""
        return {} if self.error is None else {self.field: self.error}


def diagnostic_error(code: DiagnosticCode) -> str:
    """The ``config.error`` translation key that shows ``code``'s message and next step."""
    return code.value.lower()


#: Resolved from the exception's code (``err.code``), not from the row.
FROM_CODE: Final = "<from the error's code>"

#: Stages whose failures may also be those of other stages (looked up in this order).
_FALLBACK: Final[Mapping[Stage, tuple[Stage, ...]]] = {
    Stage.STORED_SESSION: (Stage.SERVICE,),
    Stage.CLAIM: (Stage.ACCOUNT,),
    Stage.DEVICE_KEY: (Stage.ACCOUNT,),
    Stage.COMMIT: (Stage.ACCOUNT,),
    Stage.OWNER_HANDSHAKE: (Stage.HANDSHAKE,),
}

#: The one table: (stage, exception class or device error code) -> what the user sees.
FLOW_ERRORS: Final[Mapping[tuple[Stage, type[Exception] | str], FlowError]] = {
    # An account-service call that a retry may fix.
    (Stage.ACCOUNT, RateLimitedError): FlowError("rate_limited"),
    (Stage.ACCOUNT, AccountConnectionError): FlowError("account_unreachable"),
    (Stage.ACCOUNT, AccountServiceError): FlowError("account_refused", log=True),
    # Probing an address for an account service.
    (Stage.STORED_SESSION, AuthenticationError): FlowError("password_needed", field=FIELD_PASSWORD),
    (Stage.SERVICE, AccountConnectionError): FlowError("cannot_connect"),
    (Stage.SERVICE, AccountServiceError): FlowError("not_account_service"),
    # Signing in or up.
    (Stage.SIGN_IN, InvalidCredentialsError): FlowError("invalid_auth"),
    (Stage.SIGN_IN, EmailTakenError): FlowError("email_taken"),
    (Stage.SIGN_IN, WeakPasswordError): FlowError("weak_password", field=FIELD_PASSWORD),
    (Stage.SIGN_IN, AccountConnectionError): FlowError("cannot_connect"),
    (Stage.SIGN_IN, RateLimitedError): FlowError("rate_limited"),
    (Stage.SIGN_IN, AccountApiError): FlowError("account_refused", log=True),
    (Stage.SIGN_IN, AccountServiceError): FlowError("not_account_service", log=True),
    # The add-on's announcement: its token works once.
    (Stage.ADDON, ProvisioningTokenInvalidError): FlowError(abort="addon_token_invalid"),
    (Stage.ADDON, AccountConnectionError): FlowError("addon_unreachable"),
    (Stage.ADDON, RateLimitedError): FlowError("rate_limited"),
    (Stage.ADDON, AccountServiceError): FlowError("account_refused", log=True),
    # Creating a claim.
    (Stage.CLAIM, AlreadyOwnedError): FlowError(abort="already_owned"),
    (Stage.CLAIM, ClaimRejectedError): FlowError(abort="claim_rejected"),
    (Stage.CLAIM, ForbiddenError): FlowError(abort="not_allowed"),
    (Stage.CLAIM, AuthenticationError): FlowError(abort=REAUTH_REQUIRED),
    # The registry key of a typed setup code.
    (Stage.DEVICE_KEY, DeviceKeyNotFoundError): FlowError(
        "manual_code_not_accepted", field=FIELD_SETUP_CODE
    ),
    (Stage.DEVICE_KEY, NotFoundError): FlowError("manual_code_unsupported", field=FIELD_SETUP_CODE),
    # An address the user typed.
    (Stage.PROBE, DeviceConnectionError): FlowError("cannot_connect"),
    (Stage.PROBE, DeviceClientError): FlowError("not_a_device"),
    # The handshake.
    (Stage.HANDSHAKE, DeviceKeyMismatchClientError): FlowError(abort="device_key_mismatch"),
    (Stage.HANDSHAKE, CredentialRefusedClientError): FlowError(abort=FROM_CODE),
    # The device's state does not match the credential: which abort explains it.
    (Stage.HANDSHAKE, "owner_session_required"): FlowError(abort="device_claimed"),
    (Stage.HANDSHAKE, "setup_code_required"): FlowError(abort="device_reset"),
    (Stage.HANDSHAKE, "no_owner_secret"): FlowError(abort="no_owner_secret"),
    (Stage.HANDSHAKE, SetupCodeRejectedError): FlowError(
        "wrong_setup_code", field=FIELD_SETUP_CODE
    ),
    # The owner secret is never typed: refused means the device holds another one.
    (Stage.OWNER_HANDSHAKE, SetupCodeRejectedError): FlowError("owner_secret_rejected"),
    (Stage.HANDSHAKE, HandshakeRefusedError): FlowError(FROM_CODE),
    (Stage.HANDSHAKE, DeviceConnectionError): FlowError("cannot_connect"),
    (Stage.HANDSHAKE, DeviceClientError): FlowError("device_error", log=True),
    # Reading the device.
    (Stage.READ, DeviceConnectionError): FlowError("cannot_connect"),
    (Stage.READ, DeviceClientError): FlowError("device_error", log=True),
    # The commit (a device error with a diagnostic code shows that code's message).
    (Stage.COMMIT, AuthenticationError): FlowError(abort=REAUTH_REQUIRED),
    (Stage.COMMIT, TimeoutError): FlowError(diagnostic_error(DiagnosticCode.TIMEOUT)),
    (Stage.COMMIT, DeviceConnectionError): FlowError("device_lost"),
    (Stage.COMMIT, SessionLostError): FlowError("device_lost"),
    (Stage.COMMIT, DeviceClientError): FlowError("device_error", log=True),
}

#: Errors shown for the whole form that are still about one field: the one to type again.
ABOUT_FIELD: Final[Mapping[str, str]] = {
    diagnostic_error(DiagnosticCode.WIFI_AUTH_FAILED): FIELD_PASSPHRASE,
    REMEMBERED_WIFI_REJECTED: FIELD_PASSPHRASE,
}


#: Commit errors of a WPS join shown on the WPS step (press the button again there); any other
#: failure of a WPS join is shown on the Wi-Fi form, with WPS still chosen.
WPS_STEP_ERRORS: Final = frozenset({diagnostic_error(DiagnosticCode.WPS_FAILED)})


def wrong_fields(errors: Mapping[str, str]) -> set[str]:
    """The fields ``errors`` blame: cleared when the form is shown again, the rest is kept."""
    blamed = {field for field in errors if field != FIELD_BASE}
    return blamed | {ABOUT_FIELD[error] for error in errors.values() if error in ABOUT_FIELD}


#: The same failures over Bluetooth: the next step is range or a proxy, not the network.
BLUETOOTH_ERRORS: Final[Mapping[str, str]] = {
    "cannot_connect": "bluetooth_unreachable",
    "device_lost": "bluetooth_lost",
}


def flow_error(stage: Stage, err: Exception, *, bluetooth: bool = False) -> FlowError:
    """What the user sees for ``err`` raised during ``stage``; unmapped errors propagate."""
    if stage is Stage.COMMIT and isinstance(err, DeviceClientError) and err.diagnostic is not None:
        return FlowError(diagnostic_error(err.diagnostic))
    for looked_up in (stage, *_FALLBACK.get(stage, ())):
        for cls in type(err).__mro__:
            row = FLOW_ERRORS.get((looked_up, cls))
            if row is not None:
                return _resolve(row, looked_up, err, bluetooth=bluetooth)
    raise err


def _resolve(row: FlowError, stage: Stage, err: Exception, *, bluetooth: bool) -> FlowError:
    if row.log:
        _LOGGER.warning("%s failed: %s", stage.value.replace("_", " ").capitalize(), err)
    code = str(getattr(err, "code", ""))
    if row.abort == FROM_CODE:
        return FLOW_ERRORS[Stage.HANDSHAKE, code]
    error = code if row.error == FROM_CODE else row.error
    if bluetooth and error is not None:
        error = BLUETOOTH_ERRORS.get(error, error)
    return FlowError(error=error, field=row.field, abort=row.abort)
