"""Config flow for IoT Onboard: household accounts, and onboarding devices into them.

One config entry per household (unique id = household id). Devices are not entries: a flow
that onboards one ends by adding it to its household entry (data ``devices``) and reloading
that entry (``device_added``) - or, when Home Assistant has no household yet, by creating the
household entry with the device already in it, after signing in inside the same flow.

Steps::

    user ──(household entries exist)──▶ menu: account | manual_device
    account ─▶ household (none or several) ─▶ CREATE_ENTRY        (sign in, or create an account)
    reauth ─▶ reauth_confirm ─▶ abort reauth_successful             (same account and household)
    reconfigure ─▶ menu: reconfigure_account | device_select
    zeroconf ─▶ discovery_confirm ─┐
    bluetooth ─▶ bluetooth_confirm ─┤  (unclaimed, window open; the QR code names the device)
    manual_device ─────────────────┴▶ [account ─▶ household | pick_household] ─▶ credentials
    credentials (QR text or manual code) ─▶ wifi ─▶ provision (progress) ─▶ finish
        finish ─▶ abort device_added (entry updated, reloaded) | CREATE_ENTRY (new household)
    device_select (owner secret, no label) ─▶ wifi ─▶ provision ─▶ finish ─▶ wifi_changed
    bluetooth (our device, Wi-Fi lost) ─┬▶ wifi_lost_confirm (owner secret over BLE) ─▶ wifi …
    reconfigure (repair, seen over BLE) ┘     (the repair ``wifi_lost_<id>`` is raised too)
    wifi ◀── provision: a diagnostic code (message and next step shown; retry in place)

Security order: the setup code's key check happens inside the handshake, against the QR
fingerprint or the registry key from the account service (manual code), before anything
secret is sent; Wi-Fi passphrase, claim token and the owner secret only travel in the
encrypted session. The owner secret (generated here per device, sent with ``set_claim``, kept
in the entry) is afterwards the only credential the claimed device accepts.
One flow per device: every discovery (zeroconf, Bluetooth, the manual add) uses the first 8
characters of the device id as the flow's unique id, the only part both discoveries know (the
BLE advertisement carries just these 8, docs/ble.md). Home Assistant's own unique-id rules then
keep one flow per device whichever source sees it first, and one "ignore" covers both.
No half-onboarded device: after ``set_claim`` a failed or abandoned commit rolls the device
back by itself (fail-safe timer), and a claim that was not used expires on its own in at most
ten minutes (the service has no cancel); the failure messages say so. A claim the service
recorded while its answer to the device was lost converges: the device retries by itself, and
a retry of this flow that finds its claim owned (or gets ``already_owned`` for a new one) adds
a device that finished, or hands the same claim to one that rolled back (docs/relay.md). If
the flow was closed instead, a new flow onboards the device again: the service gives a claim
for the household's own device, and a stale record of it does not stop the manual add.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import voluptuous as vol
from bleak.backends.device import BLEDevice
from homeassistant.components import bluetooth
from homeassistant.components.bluetooth import BluetoothServiceInfoBleak
from homeassistant.config_entries import (
    SOURCE_IGNORE,
    ConfigEntry,
    ConfigEntryState,
    ConfigFlow,
    ConfigFlowResult,
)
from homeassistant.data_entry_flow import AbortFlow
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.selector import (
    BooleanSelector,
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    SelectOptionDict,
    SelectSelector,
    SelectSelectorConfig,
    SelectSelectorMode,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)
from homeassistant.helpers.service_info.zeroconf import ZeroconfServiceInfo
from yarl import URL

from . import account_client, repairs
from .account_client import (
    AccountApiError,
    AccountClient,
    AccountConnectionError,
    AccountServiceError,
    AlreadyOwnedError,
    AuthenticationError,
    Claim,
    ClaimRejectedError,
    ClaimState,
    DeviceKeyNotFoundError,
    EmailTakenError,
    ForbiddenError,
    Household,
    InvalidCredentialsError,
    NotFoundError,
    RateLimitedError,
    ServiceUnavailableError,
    SignedIn,
    TokenSet,
    WeakPasswordError,
)
from .ble_client import BleTransport
from .const import (
    CONF_ACCOUNT_ID,
    CONF_ACCOUNT_URL,
    CONF_DEVICES,
    CONF_EMAIL,
    CONF_HOUSEHOLD_ID,
    CONTEXT_DEVICE_ID,
    DEFAULT_DEVICE_PORT,
    DEVICE_ADDED_AT,
    DEVICE_HOST,
    DEVICE_MODEL,
    DEVICE_OWNER_SECRET,
    DEVICE_PORT,
    DEVICE_PUBLIC_KEY,
    DOMAIN,
    RUNTIME_ACCOUNT_ATTR,
    SUPPORTED_PROTOCOL,
)
from .coordinator import IotOnboardConfigEntry
from .device_client import (
    Credential,
    CredentialRefusedClientError,
    DeviceClient,
    DeviceClientError,
    DeviceCommandError,
    DeviceConnectionError,
    DeviceKeyMismatchClientError,
    DeviceLink,
    DeviceTransport,
    HandshakeRefusedError,
    SessionLostError,
    SetupCodeRejectedError,
    open_link,
    parse_setup_credential,
)
from .iob_protocol import (
    AdvertisedState,
    BlePhase,
    DeviceState,
    DiagnosticCode,
    InvalidPassphraseError,
    ManualCode,
    OwnerSecret,
    PayloadCheckError,
    ProtocolError,
    QrPayload,
    StatusResult,
    WifiNetwork,
    WifiSecurity,
    WireFormatError,
    b64url_decode,
    b64url_encode,
    display_ssid,
    validate_device_id,
    validate_passphrase,
)
from .iob_protocol.ble import SERVICE_UUID, SHORT_ID_CHARS
from .options_flow import IotOnboardOptionsFlow

_LOGGER = logging.getLogger(__name__)

_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

CONF_PASSWORD: Final = "password"  # noqa: S105 - a field name
CONF_CREATE_ACCOUNT: Final = "create_account"
CONF_HOUSEHOLD: Final = "household"
CONF_HOUSEHOLD_NAME: Final = "household_name"
CONF_ENTRY: Final = "entry"
CONF_SETUP_CODE: Final = "setup_code"
CONF_HOST: Final = "host"
CONF_PORT: Final = "port"
CONF_DEVICE: Final = "device"
CONF_NETWORK: Final = "network"
CONF_HIDDEN_SSID: Final = "hidden_ssid"
CONF_PASSPHRASE: Final = "passphrase"  # noqa: S105 - a field name

NEW_HOUSEHOLD: Final = "new_household"
HIDDEN_NETWORK: Final = "hidden_network"
KEEP_ETHERNET: Final = "keep_ethernet"
SSID_PREFIX: Final = "ssid:"
_MAX_SSID_BYTES: Final = 32

#: Seconds between status polls while the device commits.
POLL_INTERVAL: Final = 1.0
#: The first poll after the commit: a device on a good network is done in a few hundred ms, so
#: the polls start fast and back off to POLL_INTERVAL (0.25, 0.5, 1, 1, … s).
FIRST_POLL: Final = 0.25
#: Time added to the device's fail-safe timer before the flow stops waiting.
COMMIT_MARGIN: Final = 30.0
#: A claim with less life left than a commit needs is replaced before ``set_claim``.
CLAIM_MIN_LIFETIME: Final = 240

_SECURITY_LABELS: Final = {
    WifiSecurity.OPEN: "open",
    WifiSecurity.WEP: "WEP",
    WifiSecurity.WPA_PERSONAL: "WPA2",
    WifiSecurity.WPA3_PERSONAL: "WPA3",
    WifiSecurity.ENTERPRISE: "Enterprise",
}
#: What an unclaimed device advertises: the zeroconf TXT ``state`` and the BLE phase.
_UNCLAIMED_TXT_STATES: Final = frozenset({"unclaimed", "provisioning"})
_UNCLAIMED_PHASES: Final = frozenset({BlePhase.UNCLAIMED, BlePhase.PROVISIONING})
#: A claim check that failed this way may work again: the device's verdict is awaited.
_TRANSIENT_ACCOUNT_ERRORS: Final = (
    AccountConnectionError,
    ServiceUnavailableError,
    RateLimitedError,
)
_SUPPORTED_SECURITY: Final = frozenset(
    {WifiSecurity.OPEN, WifiSecurity.WPA_PERSONAL, WifiSecurity.WPA3_PERSONAL}
)
_PASSWORD_SCHEMA: Final = vol.Schema(
    {
        vol.Required(CONF_PASSWORD): TextSelector(
            TextSelectorConfig(type=TextSelectorType.PASSWORD, autocomplete="current-password")
        )
    }
)
_SETUP_CODE_SCHEMA: Final = vol.Schema({vol.Required(CONF_SETUP_CODE): TextSelector()})
_PORT_SELECTOR: Final = NumberSelector(
    NumberSelectorConfig(min=1, max=65535, step=1, mode=NumberSelectorMode.BOX)
)


def normalize_account_url(raw: str) -> str | None:
    """Return the canonical account service URL, or None when it is not acceptable.

    Plain http is only accepted on loopback (a self-hosted service on the HA host):
    tokens and claims must never cross a network unencrypted.
    """
    try:
        url = URL(raw.strip())
    except ValueError:
        return None
    if not url.is_absolute() or url.host is None or url.user or url.query_string:
        return None
    if url.scheme == "https" or (url.scheme == "http" and url.host in _LOOPBACK_HOSTS):
        return str(url.with_fragment(None)).rstrip("/")
    return None


def diagnostic_error(code: DiagnosticCode) -> str:
    """The ``config.error`` translation key that shows ``code``'s message and next step."""
    return code.value.lower()


def _account_error(err: AccountServiceError) -> str:
    """The form error for an account-service failure that a retry may fix."""
    if isinstance(err, RateLimitedError):
        return "rate_limited"
    if isinstance(err, AccountConnectionError):
        return "account_unreachable"
    _LOGGER.warning("Account service refused: %s", err)
    return "account_refused"


def _handshake_errors(err: DeviceClientError, *, owner: bool) -> dict[str, str]:
    """Form errors for a handshake that failed in a way the user can retry."""
    if isinstance(err, SetupCodeRejectedError):
        # The owner secret is never typed: refused means the device holds another one.
        return {"base": "owner_secret_rejected"} if owner else {CONF_SETUP_CODE: "wrong_setup_code"}
    if isinstance(err, HandshakeRefusedError):
        return {"base": err.code}
    if isinstance(err, DeviceConnectionError):
        return {"base": "cannot_connect"}
    _LOGGER.warning("Handshake failed: %s", err)
    return {"base": "device_error"}


def _device_error(err: DeviceClientError) -> str:
    """The Wi-Fi form's error for a device failure during the commit."""
    if err.diagnostic is not None:
        return diagnostic_error(err.diagnostic)
    if isinstance(err, (DeviceConnectionError, SessionLostError)):
        return "device_lost"
    _LOGGER.warning("Device refused: %s", err)
    return "device_error"


def _security_error(network: WifiNetwork, passphrase: str | None) -> tuple[str, str] | None:
    """Whether the device can join ``network`` with what the user typed."""
    if network.security not in _SUPPORTED_SECURITY:
        return (CONF_NETWORK, "unsupported_security")
    if network.security is not WifiSecurity.OPEN and passphrase is None:
        return (CONF_PASSPHRASE, "passphrase_required")
    return None


def _device_verdict(status: StatusResult) -> _Outcome | None:
    """The device ended its commit: committed, or rolled back with a diagnostic code."""
    if status.state is not DeviceState.COMMITTING and status.diagnostic is not None:
        return _Outcome(error=diagnostic_error(status.diagnostic))
    if status.state is DeviceState.COMMITTED:
        return _Outcome()
    return None


def _sign_in_errors(err: AccountServiceError) -> dict[str, str]:
    """Form errors for a failed sign-in or sign-up."""
    if isinstance(err, InvalidCredentialsError):
        return {"base": "invalid_auth"}
    if isinstance(err, EmailTakenError):
        return {"base": "email_taken"}
    if isinstance(err, WeakPasswordError):
        return {CONF_PASSWORD: "weak_password"}
    if isinstance(err, AccountConnectionError):
        return {"base": "cannot_connect"}
    if isinstance(err, AccountApiError):
        return {"base": _account_error(err)}
    _LOGGER.warning("Unexpected answer from the account service: %s", err)
    return {"base": "not_account_service"}


def _account_schema(defaults: Mapping[str, Any]) -> vol.Schema:
    return vol.Schema(
        {
            vol.Required(
                CONF_ACCOUNT_URL, default=defaults.get(CONF_ACCOUNT_URL, vol.UNDEFINED)
            ): TextSelector(TextSelectorConfig(type=TextSelectorType.URL)),
            vol.Required(CONF_EMAIL, default=defaults.get(CONF_EMAIL, vol.UNDEFINED)): TextSelector(
                TextSelectorConfig(type=TextSelectorType.EMAIL, autocomplete="username")
            ),
            vol.Required(CONF_PASSWORD): TextSelector(
                TextSelectorConfig(type=TextSelectorType.PASSWORD, autocomplete="current-password")
            ),
            vol.Required(
                CONF_CREATE_ACCOUNT, default=defaults.get(CONF_CREATE_ACCOUNT, False)
            ): BooleanSelector(),
        }
    )


async def _shielded[T](work: asyncio.Task[T]) -> T:
    """The progress task: waits for ``work`` without cancelling it when it is cancelled."""
    return await asyncio.shield(work)


def _network_label(network: WifiNetwork) -> str:
    """Name, strength and security; the name escaped so a hostile SSID cannot spoof text."""
    security = _SECURITY_LABELS[network.security]
    return f"{display_ssid(network.ssid)} · {network.rssi} dBm · {security}"


class _Mode(StrEnum):
    """What the device part of the flow is for."""

    ONBOARD = "onboard"
    WIFI_CHANGE = "wifi_change"


@dataclass(frozen=True, slots=True)
class _WifiChoice:
    """The network the user picked; ``ssid`` None keeps the wired connection."""

    ssid: bytes | None
    passphrase: str | None
    hidden: bool


@dataclass(frozen=True, slots=True)
class _Outcome:
    """How the provisioning task ended: neither ``error`` nor ``abort`` means success."""

    error: str | None = None
    abort: str | None = None


#: The device's state does not match the credential: which abort explains it.
_CREDENTIAL_ABORTS: Final = {
    "owner_session_required": "device_claimed",  # the label, but the device has an owner
    "setup_code_required": "device_reset",  # the owner secret, but the device was reset
    "no_owner_secret": "no_owner_secret",  # claimed without one: only a factory reset helps
}

#: The same failures over Bluetooth: the next step is range or a proxy, not the network.
_BLUETOOTH_ERRORS: Final = {
    "cannot_connect": "bluetooth_unreachable",
    "device_lost": "bluetooth_lost",
}

_CLAIM_VERDICTS: Final = {
    ClaimState.OWNED: _Outcome(),
    ClaimState.EXPIRED: _Outcome(error=diagnostic_error(DiagnosticCode.CLAIM_EXPIRED)),
    ClaimState.REJECTED: _Outcome(error=diagnostic_error(DiagnosticCode.CLAIM_REJECTED)),
}


class IotOnboardConfigFlow(ConfigFlow, domain=DOMAIN):
    """Household accounts, and onboarding devices into them."""

    VERSION = 1

    # Added by the runtime (issue 6): the options (roles) live in options_flow.py.
    @staticmethod
    def async_get_options_flow(config_entry: IotOnboardConfigEntry) -> IotOnboardOptionsFlow:
        """Roles: who may do what in this household."""
        del config_entry
        return IotOnboardOptionsFlow()

    def __init__(self) -> None:
        """Start empty; each entry point fills in what it knows."""
        self._mode = _Mode.ONBOARD
        self._onboarding = False
        # Household: an existing entry, or one created at the end (signed in in this flow).
        self._entry: ConfigEntry | None = None
        self._account: AccountClient | None = None
        self._signed_in: SignedIn | None = None
        self._households: list[Household] = []
        self._household: Household | None = None
        # Device.
        self._device_id = ""
        #: The first 8 characters of the device id (all a BLE advertisement says).
        self._short_id = ""
        self._model = ""
        self._host = ""
        self._port = DEFAULT_DEVICE_PORT
        #: Set when the device is reached over Bluetooth instead of the LAN.
        self._ble_address: str | None = None
        self._known_key: bytes | None = None
        self._pending_code: str | None = None
        self._credential: Credential | None = None
        self._owner_secret = OwnerSecret.generate()
        self._link: DeviceLink | None = None
        self._claim: Claim | None = None
        self._networks: dict[str, WifiNetwork] = {}
        self._choice: _WifiChoice | None = None
        self._wifi_errors: dict[str, str] = {}
        # The commit runs apart from the progress task HA cancels when the dialog closes: a
        # device that completes anyway must not be left owned without its owner secret.
        self._work: asyncio.Task[_Outcome] | None = None
        self._task: asyncio.Task[_Outcome] | None = None
        self._timer = 0
        self._abort_reason = "unknown"

    # --- household accounts -------------------------------------------------------------------

    def _household_entries(self) -> list[ConfigEntry]:
        return [
            entry
            for entry in self._async_current_entries(include_ignore=False)
            if CONF_HOUSEHOLD_ID in entry.data
        ]

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Add a household account, or (with one set up) a device discovery cannot see."""
        del user_input  # a menu or the account form; nothing is submitted here
        if self._household_entries():
            return self.async_show_menu(step_id="user", menu_options=["account", "manual_device"])
        return await self.async_step_account()

    async def async_step_account(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Sign in to an account service (or create an account there)."""
        errors: dict[str, str] = {}
        if user_input is not None:
            account_url = normalize_account_url(user_input[CONF_ACCOUNT_URL])
            if account_url is None:
                errors[CONF_ACCOUNT_URL] = "invalid_url"
            else:
                client = AccountClient(account_url, session=async_get_clientsession(self.hass))
                errors = await self._async_sign_in(
                    client,
                    user_input[CONF_EMAIL].strip(),
                    user_input[CONF_PASSWORD],
                    create=user_input[CONF_CREATE_ACCOUNT],
                )
                if not errors:
                    self._account = client
                    return await self.async_step_household()
        defaults = {k: v for k, v in (user_input or {}).items() if k != CONF_PASSWORD}
        return self.async_show_form(
            step_id="account", data_schema=_account_schema(defaults), errors=errors
        )

    async def _async_sign_in(
        self, client: AccountClient, email: str, password: str, *, create: bool
    ) -> dict[str, str]:
        """Sign in (or up) and read the households; return form errors."""
        try:
            await client.health()
        except AccountConnectionError:
            return {"base": "cannot_connect"}
        except AccountServiceError:
            return {"base": "not_account_service"}
        try:
            if create:
                self._signed_in = await client.sign_up(email, password)
            else:
                self._signed_in = await client.sign_in(email, password)
            self._households = await client.households()
        except AccountServiceError as err:
            return _sign_in_errors(err)
        return {}

    async def async_step_household(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Choose (or create) the household this entry stands for."""
        account = self._require_account()
        errors: dict[str, str] = {}
        if user_input is None and len(self._households) == 1:
            return await self._async_household_chosen(self._households[0])
        if user_input is not None:
            choice = user_input.get(CONF_HOUSEHOLD, NEW_HOUSEHOLD)
            chosen = next((h for h in self._households if h.household_id == choice), None)
            if chosen is not None:
                return await self._async_household_chosen(chosen)
            name = str(user_input.get(CONF_HOUSEHOLD_NAME, "")).strip()
            if not name:
                errors[CONF_HOUSEHOLD_NAME] = "name_required"
            else:
                try:
                    household = await account.create_household(name)
                except AccountServiceError as err:
                    errors["base"] = _account_error(err)
                else:
                    return await self._async_household_chosen(household)
        schema: dict[Any, Any] = {}
        if self._households:
            options = [
                SelectOptionDict(value=h.household_id, label=f"{h.name} ({h.role.value})")
                for h in self._households
            ]
            options.append(SelectOptionDict(value=NEW_HOUSEHOLD, label=NEW_HOUSEHOLD))
            schema[vol.Required(CONF_HOUSEHOLD, default=options[0]["value"])] = SelectSelector(
                SelectSelectorConfig(
                    options=options, mode=SelectSelectorMode.LIST, translation_key="household"
                )
            )
        schema[vol.Optional(CONF_HOUSEHOLD_NAME, default=self.hass.config.location_name)] = (
            TextSelector()
        )
        return self.async_show_form(
            step_id="household", data_schema=vol.Schema(schema), errors=errors
        )

    async def _async_household_chosen(self, household: Household) -> ConfigFlowResult:
        self._household = household
        if self._onboarding:
            # A discovery or manual add that signed in first: the entry is created at the
            # end with the device in it, unless this household is already set up.
            for entry in self._household_entries():
                if entry.unique_id == household.household_id:
                    return await self._async_use_entry(entry)
            return await self.async_step_credentials()
        await self.async_set_unique_id(household.household_id)
        self._abort_if_unique_id_configured()
        return self.async_create_entry(title=household.name, data=self._new_entry_data({}))

    def _new_entry_data(self, devices: dict[str, Any]) -> dict[str, Any]:
        account = self._require_account()
        if self._signed_in is None or self._household is None:  # pragma: no cover - callers
            raise AbortFlow("unknown")
        tokens = account.tokens or self._signed_in.tokens
        return {
            CONF_ACCOUNT_URL: account.base_url,
            CONF_ACCOUNT_ID: self._signed_in.account.account_id,
            CONF_EMAIL: self._signed_in.account.email,
            CONF_HOUSEHOLD_ID: self._household.household_id,
            **tokens.as_entry_data(),
            CONF_DEVICES: devices,
        }

    def _entry_account(self, entry: ConfigEntry) -> AccountClient:
        """The entry's client: the loaded runtime's (one refresher per session), or a new one."""
        runtime = getattr(entry, "runtime_data", None)
        client = getattr(runtime, RUNTIME_ACCOUNT_ATTR, None)
        # The module's class, not the name imported here (tests patch that one).
        if isinstance(client, account_client.AccountClient):
            return client

        def save(tokens: TokenSet) -> None:
            self.hass.config_entries.async_update_entry(
                entry, data={**entry.data, **tokens.as_entry_data()}
            )

        return AccountClient(
            entry.data[CONF_ACCOUNT_URL],
            session=async_get_clientsession(self.hass),
            tokens=TokenSet.from_entry_data(entry.data),
            on_tokens=save,
        )

    def _household_id(self) -> str:
        if self._entry is not None:
            return str(self._entry.data[CONF_HOUSEHOLD_ID])
        if self._household is None:  # pragma: no cover - set with the account
            raise AbortFlow("unknown")
        return self._household.household_id

    def _require_account(self) -> AccountClient:
        if self._account is None:  # pragma: no cover - every path signs in or picks an entry
            raise AbortFlow("unknown")
        return self._account

    # --- reauth and reconfigure -----------------------------------------------------------------

    async def async_step_reauth(self, entry_data: Mapping[str, Any]) -> ConfigFlowResult:
        """The tokens were revoked or expired: sign in again."""
        del entry_data  # the entry itself is at hand (_get_reauth_entry)
        return await self.async_step_reauth_confirm()

    async def async_step_reauth_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask for the password of the entry's account."""
        entry = self._get_reauth_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            client = AccountClient(
                entry.data[CONF_ACCOUNT_URL], session=async_get_clientsession(self.hass)
            )
            errors = await self._async_sign_in(
                client, entry.data[CONF_EMAIL], user_input[CONF_PASSWORD], create=False
            )
            if not errors and self._signed_in is not None:
                # The unique id is the household: another account, or one that lost its
                # membership, would silently turn this entry into something else.
                await self._async_set_checked_unique_id(entry, self._signed_in.account.account_id)
                self._abort_if_unique_id_mismatch(reason="wrong_account")
                return self._update_and_reload(
                    entry, self._signed_in.tokens.as_entry_data(), reason="reauth_successful"
                )
        return self.async_show_form(
            step_id="reauth_confirm",
            data_schema=_PASSWORD_SCHEMA,
            errors=errors,
            description_placeholders={"email": entry.data[CONF_EMAIL]},
        )

    async def _async_set_checked_unique_id(self, entry: ConfigEntry, account_id: str) -> None:
        """The entry's unique id if the same account still sees the household, else another."""
        visible = {household.household_id for household in self._households}
        same = account_id == entry.data[CONF_ACCOUNT_ID] and entry.unique_id in visible
        await self.async_set_unique_id(entry.unique_id if same else account_id)

    def _update_and_reload(
        self, entry: ConfigEntry, updates: Mapping[str, Any], *, reason: str
    ) -> ConfigFlowResult:
        """Update the entry's data, reload it, end the flow.

        Not ``async_update_reload_and_abort``: newer HA refuses it for entries with update
        listeners, and the runtime may register one for its options.
        """
        self.hass.config_entries.async_update_entry(entry, data={**entry.data, **updates})
        self.hass.config_entries.async_schedule_reload(entry.entry_id)
        return self.async_abort(reason=reason, description_placeholders=self._placeholders())

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Change the account service's address, or a device's Wi-Fi."""
        del user_input  # a menu, or straight to the one form that applies
        entry = self._get_reconfigure_entry()
        wanted = self.context.get(CONTEXT_DEVICE_ID)
        if wanted is not None:
            device_id = str(wanted)
            advert = self._ble_advert(device_id[:SHORT_ID_CHARS])
            if advert is not None and device_id in entry.data.get(CONF_DEVICES, {}):
                # The repair's device is advertising its owner-only window: over Bluetooth.
                self._ble_address = advert.address
                self._prepare_wifi_change(entry, device_id)
                return await self.async_step_wifi_lost_confirm()
            return await self.async_step_device_select({CONF_DEVICE: wanted})
        if entry.data.get(CONF_DEVICES):
            return self.async_show_menu(
                step_id="reconfigure", menu_options=["reconfigure_account", "device_select"]
            )
        return await self.async_step_reconfigure_account()

    async def async_step_reconfigure_account(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """A new address for the same account service (moved, new port, new name)."""
        entry = self._get_reconfigure_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            account_url = normalize_account_url(user_input[CONF_ACCOUNT_URL])
            if account_url is None:
                errors[CONF_ACCOUNT_URL] = "invalid_url"
            else:
                errors = await self._async_check_moved_service(entry, account_url, user_input)
                if not errors:
                    updates: dict[str, Any] = {CONF_ACCOUNT_URL: account_url}
                    tokens = self._require_account().tokens
                    if tokens is not None:
                        updates |= tokens.as_entry_data()
                    return self._update_and_reload(entry, updates, reason="reconfigure_successful")
        return self.async_show_form(
            step_id="reconfigure_account",
            data_schema=self.add_suggested_values_to_schema(
                vol.Schema(
                    {
                        vol.Required(CONF_ACCOUNT_URL): TextSelector(
                            TextSelectorConfig(type=TextSelectorType.URL)
                        ),
                        vol.Optional(CONF_PASSWORD): TextSelector(
                            TextSelectorConfig(type=TextSelectorType.PASSWORD)
                        ),
                    }
                ),
                {CONF_ACCOUNT_URL: entry.data[CONF_ACCOUNT_URL]},
            ),
            errors=errors,
            description_placeholders={"email": entry.data[CONF_EMAIL]},
        )

    async def _async_check_moved_service(
        self, entry: ConfigEntry, account_url: str, user_input: Mapping[str, Any]
    ) -> dict[str, str]:
        """The new address must lead to the same service: same account, same household."""
        session = async_get_clientsession(self.hass)
        password = user_input.get(CONF_PASSWORD)
        if password:
            client = AccountClient(account_url, session=session)
            errors = await self._async_sign_in(
                client, entry.data[CONF_EMAIL], password, create=False
            )
            if errors or self._signed_in is None:
                return errors
            account_id = self._signed_in.account.account_id
        else:
            # Without a password the stored session must work there (tokens are the service's).
            client = AccountClient(
                account_url, session=session, tokens=TokenSet.from_entry_data(entry.data)
            )
            try:
                account_id = (await client.me()).account_id
                self._households = await client.households()
            except AuthenticationError:
                return {CONF_PASSWORD: "password_needed"}
            except AccountConnectionError:
                return {"base": "cannot_connect"}
            except AccountServiceError:
                return {"base": "not_account_service"}
        self._account = client
        await self._async_set_checked_unique_id(entry, account_id)
        self._abort_if_unique_id_mismatch(reason="wrong_account")
        return {}

    async def async_step_device_select(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Pick the device whose Wi-Fi changes, and where it can be reached now."""
        entry = self._get_reconfigure_entry()
        devices: dict[str, Any] = entry.data.get(CONF_DEVICES, {})
        errors: dict[str, str] = {}
        if user_input is not None:
            device_id = user_input[CONF_DEVICE]
            record = devices.get(device_id)
            if record is None:
                return self.async_abort(reason="unknown_device")
            self._mode = _Mode.WIFI_CHANGE
            self._entry = entry
            self._account = self._entry_account(entry)
            self._device_id = device_id
            self._model = record[DEVICE_MODEL]
            self._host = str(user_input.get(CONF_HOST, record[DEVICE_HOST])).strip()
            self._port = int(user_input.get(CONF_PORT, record[DEVICE_PORT]))
            self._known_key = b64url_decode(record[DEVICE_PUBLIC_KEY])
            if DEVICE_OWNER_SECRET not in record:
                return self.async_abort(
                    reason="no_owner_secret", description_placeholders=self._placeholders()
                )
            # A claimed device takes only its owner's secret; the label opens nothing.
            self._credential = OwnerSecret.decode(record[DEVICE_OWNER_SECRET])
            if CONF_HOST in user_input:
                errors = await self._async_connect() or await self._async_read_device()
                if not errors:
                    return await self.async_step_wifi()
        options = [
            SelectOptionDict(value=device_id, label=f"{record[DEVICE_MODEL]} {device_id}")
            for device_id, record in devices.items()
        ]
        selected = self._device_id or options[0]["value"]
        return self.async_show_form(
            step_id="device_select",
            data_schema=vol.Schema(
                {
                    vol.Required(CONF_DEVICE, default=selected): SelectSelector(
                        SelectSelectorConfig(options=options)
                    ),
                    vol.Required(CONF_HOST, default=devices[selected][DEVICE_HOST]): TextSelector(),
                    vol.Required(CONF_PORT, default=devices[selected][DEVICE_PORT]): _PORT_SELECTOR,
                }
            ),
            errors=errors,
            description_placeholders=self._placeholders(),
        )

    # --- discovery and the manual add -------------------------------------------------------

    async def async_step_zeroconf(self, discovery_info: ZeroconfServiceInfo) -> ConfigFlowResult:
        """An unclaimed device advertises itself on the LAN."""
        properties = discovery_info.properties
        try:
            device_id = validate_device_id(str(properties.get("id", "")))
        except ProtocolError:
            return self.async_abort(reason="invalid_discovery_info")
        if str(properties.get("protocol", "")) != SUPPORTED_PROTOCOL:
            return self.async_abort(reason="unsupported_protocol")
        host = discovery_info.host
        port = discovery_info.port or DEFAULT_DEVICE_PORT
        await self._async_set_discovery_id(device_id)
        if str(properties.get("state", "")) not in _UNCLAIMED_TXT_STATES:
            # An unclaimed device is nobody's, whatever record is left: after a factory reset
            # it says so seconds before the runtime drops the record, and no later update
            # would start a flow. The label's handshake still proves the device.
            self._abort_if_device_owned(device_id, host, port)
        self._device_id = device_id
        self._model = str(properties.get("model") or "IoT Onboard")
        self._host = host
        self._port = port
        self.context["title_placeholders"] = {"name": self._device_name()}
        return await self.async_step_discovery_confirm()

    async def _async_set_discovery_id(self, device_id: str) -> None:
        """One flow per device, whichever discovery saw it first (see the module docstring).

        Aborts when a flow for the device is in progress or its discovery was ignored (also
        an "ignore" from before the unique id was the short id: the whole device id).
        """
        await self.async_set_unique_id(device_id[:SHORT_ID_CHARS])
        self._abort_if_unique_id_configured()
        for entry in self._async_current_entries(include_ignore=True):
            if entry.source == SOURCE_IGNORE and entry.unique_id == device_id:
                raise AbortFlow("already_configured")

    def _abort_if_device_owned(self, device_id: str, host: str, port: int) -> None:
        """A device one of our households onboarded: refresh its address, then abort.

        Devices are not entries, so ``_abort_if_unique_id_configured(updates=...)`` cannot
        find them; this is the same idea for a device record inside a household entry (no
        reload: the address is only used for a later Wi-Fi change).
        """
        for entry in self._household_entries():
            devices: dict[str, Any] = entry.data.get(CONF_DEVICES, {})
            record = devices.get(device_id)
            if record is None:
                continue
            if (record[DEVICE_HOST], record[DEVICE_PORT]) != (host, port):
                updated = {**record, DEVICE_HOST: host, DEVICE_PORT: port}
                self.hass.config_entries.async_update_entry(
                    entry, data={**entry.data, CONF_DEVICES: {**devices, device_id: updated}}
                )
            raise AbortFlow("already_configured")

    async def async_step_discovery_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Show which device was found before anything is sent to it."""
        if user_input is None:
            self._set_confirm_only()
            return self.async_show_form(
                step_id="discovery_confirm", description_placeholders=self._placeholders()
            )
        return await self._async_start_onboarding()

    async def async_step_bluetooth(
        self, discovery_info: BluetoothServiceInfoBleak
    ) -> ConfigFlowResult:
        """A device advertises its provisioning window over Bluetooth LE.

        Unclaimed: onboarding over BLE (the QR code names the device). One of our devices
        (its short id is in a loaded household entry): it lost its Wi-Fi and opened an
        owner-only window, so raise the repair and offer the Wi-Fi change over BLE. Anything
        else (window closed, mid-commit, a stranger's claimed device) is not for us.
        """
        try:
            advertised = AdvertisedState.parse(discovery_info.service_data.get(SERVICE_UUID, b""))
        except WireFormatError:
            return self.async_abort(reason="invalid_discovery_info")
        if not advertised.window_open:
            return self.async_abort(reason="window_not_open")
        await self.async_set_unique_id(advertised.short_id)
        self._abort_if_unique_id_configured()
        self._short_id = advertised.short_id
        self._ble_address = discovery_info.address
        # Unclaimed comes first: a record left from before a factory reset does not make
        # the device ours (as in the zeroconf step).
        if advertised.phase not in _UNCLAIMED_PHASES:
            owned = self._owned_device(advertised.short_id)
            if owned is None:
                return self.async_abort(reason="device_claimed")
            entry, device_id = owned
            if entry.state is not ConfigEntryState.LOADED:
                return self.async_abort(reason="already_configured")
            repairs.async_report_wifi_lost(self.hass, device_id)
            self._prepare_wifi_change(entry, device_id)
            self.context["title_placeholders"] = {"name": self._device_name()}
            return await self.async_step_wifi_lost_confirm()
        self._model = "IoT Onboard"
        self.context["title_placeholders"] = {"name": self._device_name()}
        return await self.async_step_bluetooth_confirm()

    def _owned_device(self, short_id: str) -> tuple[ConfigEntry, str] | None:
        """The household entry and device id of ours that ``short_id`` names, if any."""
        for entry in self._household_entries():
            for device_id in entry.data.get(CONF_DEVICES, {}):
                if device_id[:SHORT_ID_CHARS] == short_id:
                    return entry, device_id
        return None

    async def async_step_bluetooth_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Show the device found nearby before anything is sent to it."""
        if user_input is None:
            self._set_confirm_only()
            return self.async_show_form(
                step_id="bluetooth_confirm", description_placeholders=self._placeholders()
            )
        return await self._async_start_onboarding()

    async def async_step_wifi_lost_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Our device lost its Wi-Fi: connect over BLE with its owner secret, then new Wi-Fi."""
        errors: dict[str, str] = {}
        if user_input is not None:
            if self._credential is None:
                return self.async_abort(
                    reason="no_owner_secret", description_placeholders=self._placeholders()
                )
            errors = await self._async_connect() or await self._async_read_device()
            if not errors:
                return await self.async_step_wifi()
        return self.async_show_form(
            step_id="wifi_lost_confirm",
            data_schema=vol.Schema({}),
            errors=errors,
            description_placeholders=self._placeholders(),
        )

    def _prepare_wifi_change(self, entry: ConfigEntry, device_id: str) -> None:
        """The Wi-Fi change of a device of ``entry``: its record, key and owner secret."""
        record: dict[str, Any] = entry.data[CONF_DEVICES][device_id]
        self._mode = _Mode.WIFI_CHANGE
        self._entry = entry
        self._account = self._entry_account(entry)
        self._device_id = device_id
        self._short_id = device_id[:SHORT_ID_CHARS]
        self._model = record[DEVICE_MODEL]
        self._host = str(record.get(DEVICE_HOST, ""))
        self._port = int(record.get(DEVICE_PORT, DEFAULT_DEVICE_PORT))
        self._known_key = b64url_decode(record[DEVICE_PUBLIC_KEY])
        # A claimed device takes only its owner's secret; the label opens nothing.
        secret = record.get(DEVICE_OWNER_SECRET)
        self._credential = None if secret is None else OwnerSecret.decode(secret)

    def _ble_advert(self, short_id: str) -> BluetoothServiceInfoBleak | None:
        """A connectable advertisement of the device with ``short_id`` and its window open."""
        if "bluetooth" not in self.hass.config.components:
            return None
        for info in bluetooth.async_discovered_service_info(self.hass, connectable=True):
            try:
                advertised = AdvertisedState.parse(info.service_data.get(SERVICE_UUID, b""))
            except WireFormatError:
                continue
            if advertised.short_id == short_id and advertised.window_open:
                return info
        return None

    async def async_step_manual_device(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """A device discovery cannot see (another VLAN): its address and setup code."""
        errors: dict[str, str] = {}
        if user_input is not None:
            host = str(user_input[CONF_HOST]).strip()
            port = int(user_input[CONF_PORT])
            try:
                advertisement = await DeviceClient(
                    host, port, session=async_get_clientsession(self.hass)
                ).fetch_info()
            except DeviceConnectionError:
                errors["base"] = "cannot_connect"
            except DeviceClientError:
                errors["base"] = "not_a_device"
            else:
                await self._async_set_discovery_id(advertisement.device_id)
                if advertisement.state not in _UNCLAIMED_TXT_STATES:
                    # As for zeroconf: a record left from an onboarding the device never
                    # finished (every answer lost, it rolled back) does not make it ours.
                    self._abort_if_device_owned(advertisement.device_id, host, port)
                self._device_id = advertisement.device_id
                self._model = advertisement.model
                self._host, self._port = host, port
                self._pending_code = user_input[CONF_SETUP_CODE]
                return await self._async_start_onboarding()
        return self.async_show_form(
            step_id="manual_device",
            data_schema=self.add_suggested_values_to_schema(
                vol.Schema(
                    {
                        vol.Required(CONF_HOST): TextSelector(),
                        vol.Required(CONF_PORT, default=DEFAULT_DEVICE_PORT): _PORT_SELECTOR,
                        vol.Required(CONF_SETUP_CODE): TextSelector(),
                    }
                ),
                user_input,
            ),
            errors=errors,
        )

    async def _async_start_onboarding(self) -> ConfigFlowResult:
        """Find the household to add the device to (signing in first if there is none)."""
        self._onboarding = True
        entries = self._household_entries()
        if not entries:
            return await self.async_step_account()
        if len(entries) == 1:
            return await self._async_use_entry(entries[0])
        return await self.async_step_pick_household()

    async def async_step_pick_household(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Several households are set up: which one gets the device."""
        entries = {entry.entry_id: entry for entry in self._household_entries()}
        if user_input is not None:
            return await self._async_use_entry(entries[user_input[CONF_ENTRY]])
        options = [
            SelectOptionDict(value=entry_id, label=entry.title)
            for entry_id, entry in entries.items()
        ]
        return self.async_show_form(
            step_id="pick_household",
            data_schema=vol.Schema(
                {vol.Required(CONF_ENTRY): SelectSelector(SelectSelectorConfig(options=options))}
            ),
            description_placeholders=self._placeholders(),
        )

    async def _async_use_entry(self, entry: ConfigEntry) -> ConfigFlowResult:
        self._entry = entry
        self._account = self._entry_account(entry)
        return await self.async_step_credentials()

    # --- the device: setup code, Wi-Fi, commit -----------------------------------------------

    async def async_step_credentials(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """The setup code: the QR payload (pasted) or the manual code from the label."""
        errors: dict[str, str] = {}
        code = user_input[CONF_SETUP_CODE] if user_input is not None else self._pending_code
        self._pending_code = None
        if code is not None:
            errors = await self._async_open_session(code)
            if not errors:
                return await self.async_step_wifi()
        return self.async_show_form(
            step_id="credentials",
            data_schema=_SETUP_CODE_SCHEMA,
            errors=errors,
            description_placeholders=self._placeholders(),
        )

    async def _async_open_session(self, code: str) -> dict[str, str]:
        """Parse the code, get the key to trust, run the handshake, read the device."""
        try:
            credential = parse_setup_credential(code)
        except PayloadCheckError:
            return {CONF_SETUP_CODE: "setup_code_typo"}
        except ProtocolError:
            return {CONF_SETUP_CODE: "invalid_setup_code"}
        errors = self._check_names_device(credential) or await self._async_prevalidate(credential)
        if errors:
            return errors
        self._credential = credential
        return await self._async_connect() or await self._async_read_device()

    def _check_names_device(self, credential: QrPayload | ManualCode) -> dict[str, str]:
        """The QR code must be this device's; over BLE it is what names the device."""
        if self._ble_address is not None and not self._device_id:
            # The advertisement has only 8 characters of the id; a typed code has none.
            if not isinstance(credential, QrPayload):
                return {CONF_SETUP_CODE: "bluetooth_needs_qr"}
            if credential.device_id[:SHORT_ID_CHARS] != self._short_id:
                return {CONF_SETUP_CODE: "qr_other_device"}
            self._device_id = credential.device_id
        if isinstance(credential, QrPayload) and credential.device_id != self._device_id:
            return {CONF_SETUP_CODE: "qr_other_device"}
        return {}

    async def _async_prevalidate(self, credential: QrPayload | ManualCode) -> dict[str, str]:
        """Ask the service first: can the device be ours, and (manual code) its key."""
        try:
            await self._async_new_claim()
            if isinstance(credential, ManualCode):
                # A typed code carries no fingerprint: the registry key is the trust anchor.
                key = await self._require_account().device_key(
                    self._household_id(), self._device_id, credential.format()
                )
                self._known_key = key.public_key
        except DeviceKeyNotFoundError:
            return {CONF_SETUP_CODE: "manual_code_not_accepted"}
        except NotFoundError:
            return {CONF_SETUP_CODE: "manual_code_unsupported"}
        except AccountServiceError as err:
            return {"base": _account_error(err)}
        return {}

    async def _async_new_claim(self) -> Claim:
        """Create a claim; refusals a retry cannot fix end the flow (``AbortFlow``)."""
        account = self._require_account()
        try:
            self._claim = await account.create_claim(self._household_id(), self._device_id)
        except AlreadyOwnedError:
            raise self._abort("already_owned") from None
        except ClaimRejectedError:
            raise self._abort("claim_rejected") from None
        except ForbiddenError:
            raise self._abort("not_allowed") from None
        except AuthenticationError:
            raise self._abort(self._reauth()) from None
        return self._claim

    def _reauth(self) -> str:
        """The session was revoked: ask for the password again (when an entry has one)."""
        if self._entry is not None:
            self._entry.async_start_reauth(self.hass)
        return "reauth_required"

    def _abort(self, reason: str) -> AbortFlow:
        return AbortFlow(reason, description_placeholders=self._placeholders())

    async def _async_connect(self) -> dict[str, str]:
        """Handshake with the device; every refusal has its own message."""
        if self._credential is None:  # pragma: no cover - set before
            return {"base": "unknown"}
        if self._link is not None:
            # A retry: the earlier session (and its connection) is not used again.
            await self._link.aclose()
            self._link = None
        try:
            if self._ble_address is not None:
                self._link = await open_link(
                    self._ble_transport(self._ble_address),
                    self._credential,
                    device_id=self._device_id,
                    device_public_key=self._known_key,
                )
            else:
                client = DeviceClient(
                    self._host, self._port, session=async_get_clientsession(self.hass)
                )
                self._link = await client.connect(
                    self._credential, device_id=self._device_id, device_public_key=self._known_key
                )
        except DeviceKeyMismatchClientError:
            raise self._abort("device_key_mismatch") from None
        except CredentialRefusedClientError as err:
            raise self._abort(_CREDENTIAL_ABORTS[err.code]) from None
        except DeviceClientError as err:
            errors = _handshake_errors(err, owner=isinstance(self._credential, OwnerSecret))
            return {key: self._over_transport(error) for key, error in errors.items()}
        return {}

    def _over_transport(self, error: str) -> str:
        """Connection errors over Bluetooth name its range and proxies, not the network."""
        if self._ble_address is None:
            return error
        return _BLUETOOTH_ERRORS.get(error, error)

    def _ble_transport(self, address: str) -> DeviceTransport:
        """The device's GATT service through HA's adapters and connectable proxies."""

        def lookup() -> BLEDevice | None:
            return bluetooth.async_ble_device_from_address(self.hass, address, connectable=True)

        return BleTransport(address, lookup, name=self._device_name())

    async def _async_read_device(self) -> dict[str, str]:
        """Check who answered, then read its Wi-Fi scan."""
        if self._link is None:  # pragma: no cover - set by _async_connect
            return {"base": "unknown"}
        try:
            info = await self._link.info()
            if info.device_id != self._device_id:
                raise self._abort("device_id_mismatch")
            if self._mode is _Mode.ONBOARD and info.claimed:
                raise self._abort("device_claimed")
            self._model = info.model
            try:
                networks = await self._link.scan_wifi()
            except DeviceCommandError as err:
                _LOGGER.info("Wi-Fi scan on %s failed: %s", self._device_id, err)
                networks = ()
        except DeviceConnectionError:
            return {"base": self._over_transport("cannot_connect")}
        except DeviceClientError as err:
            _LOGGER.warning("Reading %s failed: %s", self._device_id, err)
            return {"base": "device_error"}
        # While the user picks a network: a BLE link frees its adapter or proxy slot (the
        # device keeps the session and the next command reconnects).
        await self._link.release()
        self._networks = {}
        for network in networks:
            self._networks.setdefault(SSID_PREFIX + network.ssid.hex(), network)
        return {}

    async def async_step_wifi(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """The network from the device's own scan (or a hidden one, or keep Ethernet)."""
        errors, self._wifi_errors = self._wifi_errors, {}
        if user_input is not None:
            errors = self._parse_wifi(user_input)
            if not errors:
                return await self.async_step_provision()
        return self.async_show_form(
            step_id="wifi",
            data_schema=self._wifi_schema(user_input),
            errors=errors,
            description_placeholders=self._placeholders(),
        )

    def _wifi_schema(self, user_input: Mapping[str, Any] | None) -> vol.Schema:
        options = [
            SelectOptionDict(value=value, label=_network_label(network))
            for value, network in self._networks.items()
        ]
        options.append(SelectOptionDict(value=HIDDEN_NETWORK, label=HIDDEN_NETWORK))
        if self._mode is _Mode.ONBOARD:
            options.append(SelectOptionDict(value=KEEP_ETHERNET, label=KEEP_ETHERNET))
        schema = vol.Schema(
            {
                vol.Required(CONF_NETWORK, default=options[0]["value"]): SelectSelector(
                    SelectSelectorConfig(
                        options=options, mode=SelectSelectorMode.LIST, translation_key="network"
                    )
                ),
                vol.Optional(CONF_HIDDEN_SSID): TextSelector(),
                vol.Optional(CONF_PASSPHRASE): TextSelector(
                    TextSelectorConfig(type=TextSelectorType.PASSWORD)
                ),
            }
        )
        suggested = {k: v for k, v in (user_input or {}).items() if k != CONF_PASSPHRASE}
        return self.add_suggested_values_to_schema(schema, suggested)

    def _parse_wifi(self, user_input: Mapping[str, Any]) -> dict[str, str]:
        """Turn the form into a :class:`_WifiChoice`; return form errors."""
        choice = user_input[CONF_NETWORK]
        passphrase: str | None = user_input.get(CONF_PASSPHRASE) or None
        # The selector only offers (and accepts) what the schema listed for this mode.
        if choice == KEEP_ETHERNET:
            self._choice = _WifiChoice(ssid=None, passphrase=None, hidden=False)
            return {}
        if choice == HIDDEN_NETWORK:
            ssid = str(user_input.get(CONF_HIDDEN_SSID, "")).encode()
            error = None if 0 < len(ssid) <= _MAX_SSID_BYTES else (CONF_HIDDEN_SSID, "invalid_ssid")
            hidden = True
        else:
            network = self._networks[choice]
            ssid, hidden = network.ssid, False
            error = _security_error(network, passphrase)
            if network.security is WifiSecurity.OPEN:
                passphrase = None
        if error is None:
            try:
                validate_passphrase(passphrase)
            except InvalidPassphraseError:
                error = (CONF_PASSPHRASE, "invalid_passphrase")
        if error is not None:
            return dict([error])
        self._choice = _WifiChoice(ssid=ssid, passphrase=passphrase, hidden=hidden)
        return {}

    async def async_step_provision(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Hand over Wi-Fi and claim, commit, and wait for the outcome."""
        del user_input  # a progress step takes no input
        if self._task is None:
            self._work = self.hass.async_create_background_task(
                self._async_provision(), f"{DOMAIN} commit {self._device_id}", eager_start=False
            )
            self._task = self.hass.async_create_task(_shielded(self._work), eager_start=False)
        if not self._task.done():
            return self.async_show_progress(
                step_id="provision",
                progress_action="provision",
                progress_task=self._task,
                description_placeholders=self._placeholders(),
            )
        outcome = self._task.result()
        self._task = None
        if outcome.abort is not None:
            self._abort_reason = outcome.abort
            return self.async_show_progress_done(next_step_id="failed")
        if outcome.error is not None:
            self._wifi_errors = {"base": outcome.error}
            return self.async_show_progress_done(next_step_id="wifi")
        return self.async_show_progress_done(next_step_id="finish")

    async def async_step_failed(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """End the flow after a failure that a retry here cannot fix."""
        del user_input  # reached through show_progress_done
        return self.async_abort(
            reason=self._abort_reason, description_placeholders=self._placeholders()
        )

    async def _async_provision(self) -> _Outcome:
        """The progress task: every failure becomes an outcome, never an exception."""
        try:
            return await self._async_commit()
        except AbortFlow as err:
            return _Outcome(abort=err.reason)
        except TimeoutError:
            return _Outcome(error=diagnostic_error(DiagnosticCode.TIMEOUT))
        except DeviceClientError as err:
            _LOGGER.debug("Commit of %s failed: %s", self._device_id, err)
            return _Outcome(error=self._over_transport(_device_error(err)))
        except AuthenticationError:
            return _Outcome(abort=self._reauth())
        except AccountServiceError as err:
            return _Outcome(error=_account_error(err))

    async def _async_commit(self) -> _Outcome:
        link = await self._async_ensure_link()
        choice = self._choice
        if choice is None:  # pragma: no cover - set by the wifi step
            return _Outcome(error="unknown")
        claim: Claim | None = None
        owned_already = False
        if self._mode is _Mode.ONBOARD:
            claim, owned_already = await self._async_fresh_claim()
            if owned_already:
                converged = await self._async_converged(link, claim)
                if converged is not None:
                    return converged
        if choice.ssid is not None:
            await link.set_wifi(choice.ssid, choice.passphrase, hidden=choice.hidden)
        if claim is not None:
            account_url = self._require_account().base_url
            await link.set_claim(
                account_url,
                claim.token,
                owner_secret=self._owner_secret,
                allow_insecure_http=URL(account_url).scheme == "http",
            )
        self._timer = await link.commit()
        async with asyncio.timeout(self._timer + COMMIT_MARGIN):
            return await self._async_wait(link, claim, owned_already=owned_already)

    async def _async_converged(self, link: DeviceLink, claim: Claim) -> _Outcome | None:
        """This household owns the device already: done, unless it still needs the token.

        None: the device is back in provisioning (it never heard the answer) and gets the
        same claim again.
        """
        try:
            state = (await link.status()).state
        except (DeviceConnectionError, SessionLostError):
            # Gone from this network (or the link): the service's word decides, as while
            # waiting for a commit; the device finishes (or resumes) its claim by itself.
            return _Outcome()
        if state is DeviceState.COMMITTED:
            # The device already finished this flow's claim by itself (it retried the
            # confirmation whose answer was lost, or fetched its credential).
            return _Outcome()
        if state is DeviceState.COMMITTING:  # still at it: its verdict decides
            async with asyncio.timeout((self._timer or 180) + COMMIT_MARGIN):
                return await self._async_wait(link, claim, owned_already=True)
        return None

    async def _async_wait(
        self, link: DeviceLink, claim: Claim | None, *, owned_already: bool = False
    ) -> _Outcome:
        """Poll the device (the failure code) and the claim (the success) until one decides.

        ``owned_already``: the claim was owned before this commit (its answer to the device
        was lost), so it tells nothing about this commit while the device can still be asked.
        """
        verdict: _Outcome | None = None
        device_reachable = True
        committing = False
        delay = FIRST_POLL
        while verdict is None:
            await asyncio.sleep(min(delay, POLL_INTERVAL))
            delay *= 2
            if device_reachable:
                try:
                    status = await link.status()
                except (DeviceConnectionError, SessionLostError):
                    if claim is None and not self._wifi_lost_reported():
                        raise
                    # It may have left this network (or Bluetooth) for the new one: the
                    # claim tells, or (a Wi-Fi change) the device coming back online.
                    device_reachable = committing = False
                else:
                    committing = status.state is DeviceState.COMMITTING
                    verdict = _device_verdict(status)
            if verdict is None and claim is not None and not (owned_already and device_reachable):
                verdict = await self._async_claim_verdict(claim, device_committing=committing)
            elif verdict is None and not device_reachable and not self._wifi_lost_reported():
                # The runtime deletes the Wi-Fi-lost repair once the device is online again.
                verdict = _Outcome()
        return verdict

    async def _async_claim_verdict(
        self, claim: Claim, *, device_committing: bool
    ) -> _Outcome | None:
        """The claim's verdict; None while it is pending.

        The account service failing while the device still commits says nothing yet: the
        device reaches it (or not) by itself, and if it cannot it rolls back and reports why
        (``RELAY_UNREACHABLE``). Stopping here would show an error while the device is still
        busy, and a retry right away would find it committing.
        """
        try:
            state = (await self._require_account().claim_status(claim.claim_id)).status
        except _TRANSIENT_ACCOUNT_ERRORS as err:
            if not device_committing:
                raise
            _LOGGER.debug("Claim check failed while %s commits: %s", self._device_id, err)
            return None
        return _CLAIM_VERDICTS.get(state)

    def _wifi_lost_reported(self) -> bool:
        """A Wi-Fi change over BLE of a device whose Wi-Fi-lost repair is still open."""
        if self._ble_address is None or self._mode is not _Mode.WIFI_CHANGE:
            return False
        issue_id = f"{repairs.WIFI_LOST}_{self._device_id}"
        return ir.async_get(self.hass).async_get_issue(DOMAIN, issue_id) is not None

    async def _async_ensure_link(self) -> DeviceLink:
        """The session, re-established with the same code if the device dropped it."""
        if self._link is None or not self._link.usable:
            errors = await self._async_connect()
            if errors or self._link is None:
                raise SessionLostError(f"cannot re-establish the session: {errors}")
        return self._link

    async def _async_fresh_claim(self) -> tuple[Claim, bool]:
        """The claim to hand over, and whether the household owns the device already.

        The pre-validated claim while it is pending and has time left; a new one if it was
        used up or is about to expire. Owned already: an earlier commit of this flow confirmed
        it and the answer never reached the device (the connection dropped after the service's
        commit), so the device rolled back. The same claim is handed over again: the device's
        fresh confirmation within the TTL gets the same grant, after it the device fetches its
        credential by its own signed request; either way it ends owned by this household.
        """
        claim = self._claim
        if claim is not None and claim.expires_at - time.time() > CLAIM_MIN_LIFETIME:
            state = (await self._require_account().claim_status(claim.claim_id)).status
            if state is ClaimState.PENDING:
                return claim, False
            if state is ClaimState.OWNED:
                _LOGGER.info("%s is this household's already: converging", self._device_id)
                return claim, True
        try:
            return await self._async_new_claim(), False
        except AbortFlow as err:
            if err.reason != "already_owned" or claim is None:
                raise
            # This household owns the device (the service says so only to its own members):
            # through this flow's claim, confirmed while the device heard nothing.
            _LOGGER.info("%s is this household's already: converging", self._device_id)
            return claim, True

    async def async_step_finish(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Record the device in its household entry (or create the entry with it)."""
        del user_input  # reached through show_progress_done
        link = self._link
        if link is None:  # pragma: no cover - set before the progress step
            return self.async_abort(reason="unknown")
        await link.aclose()
        if self._mode is _Mode.WIFI_CHANGE:
            return self.async_abort(
                reason="wifi_changed", description_placeholders=self._placeholders()
            )
        record = self._device_record(link)
        for ignored in self._async_current_entries(include_ignore=True):
            # An earlier "ignore" of this device's discovery no longer applies.
            if ignored.source == SOURCE_IGNORE and ignored.unique_id in {
                self._device_id,
                self._device_id[:SHORT_ID_CHARS],
            }:
                await self.hass.config_entries.async_remove(ignored.entry_id)
        self._drop_stale_records()
        if self._entry is not None:
            devices = {**self._entry.data.get(CONF_DEVICES, {}), self._device_id: record}
            return self._update_and_reload(
                self._entry, {CONF_DEVICES: devices}, reason="device_added"
            )
        if self._household is None:  # pragma: no cover - set by the household step
            return self.async_abort(reason="unknown")
        await self.async_set_unique_id(self._household.household_id, raise_on_progress=False)
        return self.async_create_entry(
            title=self._household.name,
            data=self._new_entry_data({self._device_id: record}),
            description_placeholders=self._placeholders(),
        )

    def _drop_stale_records(self) -> None:
        """Forget the device in other households: it was reset and is now this one's.

        The record in the household it joins is replaced by the new one; another entry's
        runtime would drop its record at its next sync anyway (the device left its list).
        """
        target = None if self._entry is None else self._entry.entry_id
        for entry in self._household_entries():
            devices: dict[str, Any] = entry.data.get(CONF_DEVICES, {})
            if entry.entry_id != target and self._device_id in devices:
                kept = {key: value for key, value in devices.items() if key != self._device_id}
                self.hass.config_entries.async_update_entry(
                    entry, data={**entry.data, CONF_DEVICES: kept}
                )

    def _device_record(self, link: DeviceLink) -> dict[str, Any]:
        return {
            DEVICE_HOST: self._host,
            DEVICE_PORT: self._port,
            DEVICE_MODEL: self._model,
            DEVICE_PUBLIC_KEY: b64url_encode(link.device_public_key),
            DEVICE_OWNER_SECRET: self._owner_secret.encode(),
            DEVICE_ADDED_AT: int(time.time()),
        }

    def _record_late(self, work: asyncio.Task[_Outcome]) -> None:
        """The dialog was closed mid-commit and the device got owned anyway: keep its secret."""
        link, entry = self._link, self._entry
        if link is None or entry is None:  # pragma: no cover - checked before it was attached
            return
        if not work.cancelled() and work.exception() is None and work.result() == _Outcome():
            devices = {
                **entry.data.get(CONF_DEVICES, {}),
                self._device_id: self._device_record(link),
            }
            self.hass.config_entries.async_update_entry(
                entry, data={**entry.data, CONF_DEVICES: devices}
            )
            _LOGGER.info("%s was onboarded after its setup dialog was closed", self._device_id)
        self._close_link(link)

    # --- helpers --------------------------------------------------------------------------------

    def _device_name(self) -> str:
        # A Bluetooth discovery knows only the first 8 characters until the QR code is read.
        suffix = self._device_id[-4:] if self._device_id else self._short_id
        return f"{self._model or 'IoT Onboard'} {suffix}".strip()

    def _placeholders(self) -> dict[str, str]:
        return {
            "name": self._device_name(),
            "device_id": self._device_id or self._short_id,
            "model": self._model,
            "host": self._host,
            "timeout": str(self._timer or 180),
        }

    def async_remove(self) -> None:
        """The dialog was closed: a commit of a new device finishes, anything else stops.

        A device mid-commit completes or rolls back by itself either way. Onboarding into an
        entry, the flow keeps waiting, so that if the device ends up owned its owner secret is
        saved (else only a factory reset could reopen it); otherwise it just lets go.
        """
        work = self._work
        if work is not None and not work.done():
            if self._mode is _Mode.ONBOARD and self._entry is not None:
                work.add_done_callback(self._record_late)
                return
            work.cancel()
        if self._link is not None:
            self._close_link(self._link)

    def _close_link(self, link: DeviceLink) -> None:
        """Forget the session and disconnect (always, also BLE) without waiting here."""
        link.close()
        self.hass.async_create_background_task(
            link.aclose(), f"{DOMAIN} disconnect {self._device_id}", eager_start=True
        )
