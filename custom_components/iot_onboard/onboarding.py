"""The config flow's device part: onboarding a device, and changing a device's Wi-Fi.

The steps live on :class:`DeviceSteps`, the base of the config flow class (config_flow.py has
the discovery and account steps): Home Assistant calls ``async_step_<id>`` on the flow class.
What each stage knows is a frozen dataclass set by the step that learns it and passed on:
:class:`TargetDevice` (discovery, the manual add, the device picked for a Wi-Fi change),
:class:`ExistingHousehold` / :class:`NewHousehold` (where the device goes, and the account
client that goes with it), :class:`~.commit_engine.WifiChoice` (the Wi-Fi form). The commit
itself runs in commit_engine.py (no Home Assistant there); what a failure shows comes from
the table in flow_errors.py.

Steps::

    credentials (QR text or manual code) ─▶ wifi ─▶ provision (progress) ─▶ finish
        finish ─▶ CREATE_ENTRY of the device (after the household's, for a new household)
    device_select (a device entry's reconfigure; owner secret, no label) ─▶ wifi ─▶
        provision ─▶ finish ─▶ wifi_changed
    wifi_lost_confirm (owner secret over BLE) ─▶ wifi …
    wifi ◀── provision: a diagnostic code (message and next step shown; retry in place)
    wifi (WPS chosen) ─▶ wps (press the router's button, submit) ─▶ provision …
    wps ◀── provision: WPS_FAILED (press again; or back to wifi to type the password)

A device that names ``wps`` (over the LAN or Bluetooth) may join a secured network it sees by
the router's WPS push button instead of a typed password: the key goes from the router to the
device, Home Assistant never sees it, and nothing of that network is remembered for the next
devices.

The Wi-Fi form also offers to remember the network for the household's next devices (opt-in; sealed
in the household entry, see wifi_memory.py): a remembered network is preselected and an empty
password means the remembered one; if the device rejects that, the form says so.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Final

import voluptuous as vol
from bleak.backends.device import BLEDevice
from homeassistant.components import bluetooth
from homeassistant.config_entries import (
    SOURCE_IGNORE,
    SOURCE_IMPORT,
    ConfigEntry,
    ConfigFlow,
    ConfigFlowResult,
)
from homeassistant.core import callback
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

from . import account_client, commit_engine, repairs, wifi_memory
from .account_client import (
    AccountClient,
    AccountServiceError,
    Household,
    SignedIn,
    TokenSet,
)
from .attempts import AttemptRecorder, async_get_log, outcome_step
from .ble_client import BleTransport
from .commit_engine import CommitEngine, Outcome, WifiChoice
from .const import (
    CONF_ACCOUNT_ID,
    CONF_ACCOUNT_URL,
    CONF_DEVICE_ID,
    CONF_EMAIL,
    CONF_HOUSEHOLD_ID,
    CONF_SUPERSEDED,
    DEFAULT_DEVICE_PORT,
    DEVICE_ADDED_AT,
    DEVICE_HOST,
    DEVICE_MODEL,
    DEVICE_NAME,
    DEVICE_OWNER_SECRET,
    DEVICE_PORT,
    DEVICE_PUBLIC_KEY,
    DOMAIN,
    RUNTIME_ACCOUNT_ATTR,
)
from .device_client import (
    Credential,
    DeviceClient,
    DeviceClientError,
    DeviceCommandError,
    DeviceLink,
    DeviceTransport,
    SessionLostError,
    open_link,
    parse_setup_credential,
)
from .flow_errors import (
    FIELD_BASE,
    FIELD_PASSPHRASE,
    FIELD_SETUP_CODE,
    FIELD_WPS,
    REAUTH_REQUIRED,
    REMEMBERED_WIFI_REJECTED,
    WPS_NOT_POSSIBLE,
    WPS_STEP_ERRORS,
    FlowError,
    Stage,
    diagnostic_error,
    flow_error,
    wrong_fields,
)
from .helpers import device_entries, household_entries, household_entry
from .iob_protocol import (
    DiagnosticCode,
    InvalidPassphraseError,
    ManualCode,
    OwnerSecret,
    PayloadCheckError,
    ProtocolError,
    QrPayload,
    WifiNetwork,
    WifiSecurity,
    b64url_decode,
    b64url_encode,
    display_ssid,
    validate_passphrase,
)
from .iob_protocol.attempts import Step
from .iob_protocol.ble import SHORT_ID_CHARS
from .wifi_memory import RememberedWifi

_LOGGER = logging.getLogger(__name__)

CONF_ENTRY: Final = "entry"
CONF_SETUP_CODE: Final = FIELD_SETUP_CODE
CONF_HOST: Final = "host"
CONF_PORT: Final = "port"
CONF_DEVICE: Final = "device"
CONF_NETWORK: Final = "network"
CONF_HIDDEN_SSID: Final = "hidden_ssid"
CONF_PASSPHRASE: Final = FIELD_PASSPHRASE
CONF_NAME: Final = "name"
#: The Wi-Fi step's opt-in: remember this network for the household's next devices.
CONF_REMEMBER: Final = "remember_wifi"
#: The discovery's first screen, with a remembered Wi-Fi: show the Wi-Fi form all the same.
CONF_OTHER_WIFI: Final = "other_wifi"
#: The Wi-Fi step's choice (a device that names ``wps``): join by the router's WPS button.
CONF_WPS: Final = FIELD_WPS
#: The WPS step's way back: type the password on the Wi-Fi form instead.
CONF_USE_PASSPHRASE: Final = "use_passphrase"  # noqa: S105 - a field name

HIDDEN_NETWORK: Final = "hidden_network"
KEEP_ETHERNET: Final = "keep_ethernet"
#: The remembered network when the device's scan did not see it (offered all the same).
REMEMBERED_NETWORK: Final = "remembered_network"
SSID_PREFIX: Final = "ssid:"
_MAX_SSID_BYTES: Final = 32

_SECURITY_LABELS: Final = {
    WifiSecurity.OPEN: "open",
    WifiSecurity.WEP: "WEP",
    WifiSecurity.WPA_PERSONAL: "WPA2",
    WifiSecurity.WPA3_PERSONAL: "WPA3",
    WifiSecurity.ENTERPRISE: "Enterprise",
}
_SUPPORTED_SECURITY: Final = frozenset(
    {WifiSecurity.OPEN, WifiSecurity.WPA_PERSONAL, WifiSecurity.WPA3_PERSONAL}
)
#: Seconds to wait for a model's name (the default name falls back to the model id).
MODEL_NAME_TIMEOUT: Final = 5.0
PORT_SELECTOR: Final = NumberSelector(
    NumberSelectorConfig(min=1, max=65535, step=1, mode=NumberSelectorMode.BOX)
)


class Mode(StrEnum):
    """What the device part of the flow is for."""

    ONBOARD = "onboard"
    WIFI_CHANGE = "wifi_change"


@dataclass(frozen=True, slots=True)
class TargetDevice:
    """The device this flow is about, as far as it is known yet.

    A Bluetooth discovery knows only ``short_id`` until the QR code names the device.
    """

    device_id: str = ""
    #: The first 8 characters of the device id (all a BLE advertisement says).
    short_id: str = ""
    model: str = ""
    host: str = ""
    port: int = DEFAULT_DEVICE_PORT
    #: Set when the device is reached over Bluetooth instead of the LAN.
    ble_address: str | None = None
    #: The key to trust: the registry's (manual code) or the one recorded at onboarding.
    known_key: bytes | None = None
    #: The device's own name (zeroconf TXT or ``/iob/v1/info``: its ``name`` setting).
    own_name: str = ""
    #: The model's human name ("Demo sensor"), from the account service.
    model_name: str = ""
    #: The name typed on the setup-code form.
    chosen_name: str = ""

    @property
    def default_name(self) -> str:
        """The device's own name, else its model's and the id's last four characters."""
        if self.own_name:
            return self.own_name
        suffix = self.device_id[-4:] if self.device_id else self.short_id
        return f"{self.model_name or self.model or 'IoT Onboard'} {suffix}".strip()

    @property
    def name(self) -> str:
        """The name the user chose, else :attr:`default_name`."""
        return self.chosen_name or self.default_name


@dataclass(frozen=True, slots=True)
class AccountSession:
    """A sign-in (or sign-up) in this flow, and the households the account sees."""

    client: AccountClient
    signed_in: SignedIn
    households: tuple[Household, ...]


@dataclass(frozen=True, slots=True)
class ExistingHousehold:
    """A household entry set up already: the device is added to it."""

    entry: ConfigEntry
    client: AccountClient

    @property
    def household_id(self) -> str:
        """The household's id in the account service."""
        return str(self.entry.data[CONF_HOUSEHOLD_ID])


@dataclass(frozen=True, slots=True)
class NewHousehold:
    """A household signed into in this flow: its entry is created with the device."""

    session: AccountSession
    household: Household

    @property
    def client(self) -> AccountClient:
        """The client signed in in this flow."""
        return self.session.client

    @property
    def household_id(self) -> str:
        """The household's id in the account service."""
        return self.household.household_id

    def entry_data(self) -> dict[str, Any]:
        """The household entry's data."""
        tokens = self.client.tokens or self.session.signed_in.tokens
        return {
            CONF_ACCOUNT_URL: self.client.base_url,
            CONF_ACCOUNT_ID: self.session.signed_in.account.account_id,
            CONF_EMAIL: self.session.signed_in.account.email,
            CONF_HOUSEHOLD_ID: self.household.household_id,
            **tokens.as_entry_data(),
        }


type Target = ExistingHousehold | NewHousehold


#: How long the Wi-Fi step waits for the commit before it shows a progress screen. A LAN commit
#: usually ends well inside it (the flow then goes straight to its result), and a progress
#: screen that ends before the frontend has drawn it is never left: Home Assistant's dialog
#: (2025.4) subscribes to the flow's progress event only once it shows the screen, so it
#: misses an earlier one, spins on, and never fetches the result that creates the entries.
INLINE_COMMIT_WAIT: Final = 2.0
#: A progress screen, once shown, is ended no sooner than this (the same race, for a commit
#: that ends just after INLINE_COMMIT_WAIT).
PROGRESS_MIN_SHOWN: Final = 1.0


async def _shielded[T](work: asyncio.Task[T], min_shown: float) -> T:
    """The progress task: ``work``'s result, no sooner than ``min_shown`` seconds from now.

    Cancelling it (HA does when the dialog closes) leaves ``work`` running.
    """
    started = time.monotonic()
    result = await asyncio.shield(work)
    if (left := min_shown - (time.monotonic() - started)) > 0:
        await asyncio.sleep(left)
    return result


def kept_input(
    user_input: Mapping[str, Any] | None,
    errors: Mapping[str, str],
    *,
    never: Collection[str] = (),
) -> dict[str, Any]:
    """What the user typed, to suggest when the form is shown again after ``errors``.

    All of it but the fields the errors blame (typed again) and ``never`` (an account password
    is not sent back to the browser).
    """
    dropped = wrong_fields(errors) | set(never)
    return {key: value for key, value in (user_input or {}).items() if key not in dropped}


def _network_label(network: WifiNetwork) -> str:
    """Name, strength and security; the name escaped so a hostile SSID cannot spoof text."""
    security = _SECURITY_LABELS[network.security]
    return f"{display_ssid(network.ssid)} · {network.rssi} dBm · {security}"


def _remembered_label(wifi: RememberedWifi) -> str:
    """The remembered network the device's scan did not see."""
    return f"{display_ssid(wifi.ssid)} · remembered, not seen by the device"


def _security_error(network: WifiNetwork, passphrase: str | None) -> tuple[str, str] | None:
    """Whether the device can join ``network`` with what the user typed."""
    if network.security not in _SUPPORTED_SECURITY:
        return (CONF_NETWORK, "unsupported_security")
    if network.security is not WifiSecurity.OPEN and passphrase is None:
        return (CONF_PASSPHRASE, "passphrase_required")
    return None


class DeviceSteps(ConfigFlow):
    """Onboarding a device into a household, and changing a device's Wi-Fi.

    The stage state below is set by the step that learns it, before any step that reads it
    can run (Home Assistant only calls the step a form or progress named).
    """

    #: Sign in first (config_flow.py): onboarding with no household set up.
    async_step_account: Callable[..., Awaitable[ConfigFlowResult]]
    #: See INLINE_COMMIT_WAIT (tests that step through the progress screen set 0).
    inline_commit_wait: float = INLINE_COMMIT_WAIT

    #: Where the device goes (and the account client for it): set before ``credentials``.
    _target: Target
    #: The commit engine of this device: set with the credential, before any claim.
    _engine: CommitEngine
    #: The network picked on the Wi-Fi form.
    _choice: WifiChoice
    #: The key of the device the session was opened with (recorded at ``finish``).
    _device_key: bytes

    def __init__(self) -> None:
        """Start empty; each entry point fills in what it knows."""
        self._mode = Mode.ONBOARD
        self._onboarding = False
        self._device = TargetDevice()
        self._pending_code: str | None = None
        #: A Wi-Fi change: the owner secret in the device's record (None: it has none).
        self._stored_secret: OwnerSecret | None = None
        #: Generated per device, sent with ``set_claim``, kept in the entry.
        self._owner_secret = OwnerSecret.generate()
        self._link: DeviceLink | None = None
        self._networks: dict[str, WifiNetwork] = {}
        #: The device joins by WPS push button if asked (it names ``wps``; LAN only).
        self._wps_offered = False
        #: The Wi-Fi form as last submitted, shown again after the commit failed.
        self._wifi_input: dict[str, Any] = {}
        self._wifi_errors: dict[str, str] = {}
        #: The household's remembered Wi-Fi (read once, at the first Wi-Fi form).
        self._remembered: RememberedWifi | None = None
        self._recalled = False
        #: The device rejected the remembered password: the user types the current one.
        self._remembered_rejected = False
        #: The last Wi-Fi form: its box, and whether its password was the remembered one.
        self._remember = False
        self._from_memory = False
        #: The first screen left "another network" off: a remembered network the device
        #: sees is joined without the Wi-Fi form.
        self._use_remembered = False
        # The commit runs apart from the progress task HA cancels when the dialog closes: a
        # device that completes anyway must not be left owned without its owner secret.
        self._work: asyncio.Task[Outcome] | None = None
        self._task: asyncio.Task[Outcome] | None = None
        self._abort_reason = "unknown"
        #: Models whose human name was asked for (once each, answered or not).
        self._models_asked: set[str] = set()
        #: This flow's onboarding attempts, for the diagnostics (from the first handshake).
        self._attempts: AttemptRecorder | None = None

    # --- household entries ------------------------------------------------------------------

    def _household_entries(self) -> list[ConfigEntry]:
        return household_entries(self.hass)

    def _entry_account(self, entry: ConfigEntry) -> AccountClient:
        """The entry's client: the loaded runtime's (one refresher per session), or a new one."""
        client = self._loaded_account(entry)
        if client is not None:
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

    @staticmethod
    def _loaded_account(entry: ConfigEntry) -> AccountClient | None:
        """The client of a loaded household entry's runtime, if it is loaded."""
        runtime = getattr(entry, "runtime_data", None)
        client = getattr(runtime, RUNTIME_ACCOUNT_ATTR, None)
        # The module's class, not the name imported here (tests patch that one).
        return client if isinstance(client, account_client.AccountClient) else None

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
        self._target = ExistingHousehold(entry, self._entry_account(entry))
        return await self.async_step_credentials()

    # --- a Wi-Fi change -----------------------------------------------------------------------

    async def async_step_device_select(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Where the device (this reconfigure's entry) can be reached now, for its new Wi-Fi."""
        entry = self._get_reconfigure_entry()
        self._prepare_wifi_change(entry)
        if self._stored_secret is None:
            return self.async_abort(
                reason="no_owner_secret", description_placeholders=self._placeholders()
            )
        errors: dict[str, str] = {}
        if user_input is not None:
            self._device = replace(
                self._device,
                host=str(user_input[CONF_HOST]).strip(),
                port=int(user_input[CONF_PORT]),
            )
            errors = await self._async_open(self._stored_secret)
            if not errors:
                return await self.async_step_wifi()
        return self.async_show_form(
            step_id="device_select",
            # The address typed last (after an error) or the last known one.
            data_schema=self.add_suggested_values_to_schema(
                vol.Schema(
                    {
                        vol.Required(CONF_HOST): TextSelector(),
                        vol.Required(CONF_PORT, default=DEFAULT_DEVICE_PORT): PORT_SELECTOR,
                    }
                ),
                {CONF_HOST: self._device.host, CONF_PORT: self._device.port},
            ),
            errors=errors,
            description_placeholders=self._placeholders(),
        )

    async def async_step_wifi_lost_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Our device lost its Wi-Fi: connect over BLE with its owner secret, then new Wi-Fi."""
        errors: dict[str, str] = {}
        if user_input is not None:
            secret = self._stored_secret
            if secret is None:
                return self.async_abort(
                    reason="no_owner_secret", description_placeholders=self._placeholders()
                )
            errors = await self._async_open(secret)
            if not errors:
                return await self.async_step_wifi()
        return self.async_show_form(
            step_id="wifi_lost_confirm",
            data_schema=vol.Schema({}),
            errors=errors,
            description_placeholders=self._placeholders(),
        )

    def _prepare_wifi_change(self, entry: ConfigEntry, *, ble_address: str | None = None) -> None:
        """The Wi-Fi change of the device of ``entry``: its record, key and owner secret."""
        record: Mapping[str, Any] = entry.data
        device_id: str = record[CONF_DEVICE_ID]
        hub = household_entry(self.hass, record[CONF_HOUSEHOLD_ID])
        if hub is None:
            raise self._abort("household_missing")
        self._mode = Mode.WIFI_CHANGE
        self._target = ExistingHousehold(hub, self._entry_account(hub))
        self._device = TargetDevice(
            device_id=device_id,
            short_id=device_id[:SHORT_ID_CHARS],
            model=record[DEVICE_MODEL],
            host=str(record.get(DEVICE_HOST, "")),
            port=int(record.get(DEVICE_PORT, DEFAULT_DEVICE_PORT)),
            ble_address=ble_address,
            known_key=b64url_decode(record[DEVICE_PUBLIC_KEY]),
        )
        # A claimed device takes only its owner's secret; the label opens nothing.
        secret = record.get(DEVICE_OWNER_SECRET)
        self._stored_secret = None if secret is None else OwnerSecret.decode(secret)

    # --- the device: setup code, Wi-Fi, commit -----------------------------------------------

    async def async_step_credentials(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """The setup code (the QR payload, pasted, or the label's manual code), and a name."""
        errors: dict[str, str] = {}
        code = user_input[CONF_SETUP_CODE] if user_input is not None else self._pending_code
        self._pending_code = None
        await self._async_learn_model_name()
        if user_input is not None:
            self._choose_name(user_input)
        if code is not None:
            errors = await self._async_open_session(code)
            if not errors:
                return await self._async_session_opened()
        return self.async_show_form(
            step_id="credentials",
            data_schema=self._code_schema({CONF_SETUP_CODE: code}, errors, required=True),
            errors=errors,
            description_placeholders=self._placeholders(),
        )

    def _choose_name(self, user_input: Mapping[str, Any]) -> None:
        """The name typed on a form with the setup code."""
        chosen = str(user_input.get(CONF_NAME, "")).strip()
        # The default as offered is no choice: it is worked out again when more is known
        # (over BLE the model comes with the handshake).
        if chosen == self._device.default_name:
            chosen = ""
        self._device = replace(self._device, chosen_name=chosen)

    def _code_schema(
        self,
        typed: Mapping[str, Any],
        errors: Mapping[str, str],
        *,
        required: bool,
        other_wifi: bool = False,
    ) -> vol.Schema:
        """The setup code and the name (and "another network"), with what was typed kept."""
        code = vol.Required(CONF_SETUP_CODE) if required else vol.Optional(CONF_SETUP_CODE)
        fields: dict[Any, Any] = {code: TextSelector(), vol.Optional(CONF_NAME): TextSelector()}
        if other_wifi:
            fields[vol.Optional(CONF_OTHER_WIFI, default=False)] = BooleanSelector()
        kept = {key: value for key, value in typed.items() if value is not None}
        return self.add_suggested_values_to_schema(
            vol.Schema(fields),
            {
                # Over BLE before the QR code names the device: nothing worth offering.
                CONF_NAME: self._device.name if self._device.device_id else "",
                **kept_input(kept, errors, never={CONF_NAME}),
            },
        )

    async def _async_existing_household(self) -> None:
        """One household set up: it gets the device, and its remembered Wi-Fi is read.

        Asked each time the discovery's first screen is shown (Home Assistant computes the
        form again when the card is opened): the household may be new since the discovery.
        """
        entries = self._household_entries()
        if len(entries) != 1:
            return
        self._target = ExistingHousehold(entries[0], self._entry_account(entries[0]))
        self._recalled = True
        await self._async_recall_wifi()
        await self._async_learn_model_name()

    async def _async_session_opened(self) -> ConfigFlowResult:
        """The Wi-Fi form, unless the remembered network is to be used and the device sees it."""
        remembered = self._remembered_key()
        if self._use_remembered and remembered is not None and remembered != REMEMBERED_NETWORK:
            # As if the Wi-Fi form was submitted untouched: the remembered network and password.
            self._wifi_input = {CONF_NETWORK: remembered}
            if not self._parse_wifi({**self._wifi_input, CONF_REMEMBER: True}):
                return await self.async_step_provision()
        return await self.async_step_wifi()

    async def _async_learn_model_name(self, client: AccountClient | None = None) -> None:
        """The model's human name for the default name, once (none: the model id is used).

        ``client``: before the household is chosen (the discovery card), a household's.
        """
        device = self._device
        if device.model_name or device.own_name or not device.device_id:
            return
        if device.model in self._models_asked:
            return
        self._models_asked.add(device.model)
        try:
            # A nicety: a slow service must not hold up the card or the form for long.
            async with asyncio.timeout(MODEL_NAME_TIMEOUT):
                model = await (client or self._target.client).model(device.model)
        except (AccountServiceError, TimeoutError) as err:
            _LOGGER.debug("No name for model %s: %r", device.model, err)
            return
        self._device = replace(device, model_name=model.name)

    async def _async_open_session(self, code: str) -> dict[str, str]:
        """Parse the code, get the key to trust, run the handshake, read the device."""
        try:
            credential = parse_setup_credential(code)
        except PayloadCheckError:
            return {CONF_SETUP_CODE: "setup_code_typo"}
        except ProtocolError:
            return {CONF_SETUP_CODE: "invalid_setup_code"}
        errors = self._check_names_device(credential) or await self._async_prevalidate(credential)
        return errors or await self._async_open(credential)

    def _check_names_device(self, credential: QrPayload | ManualCode) -> dict[str, str]:
        """The QR code must be this device's; over BLE it is what names the device."""
        device = self._device
        if device.ble_address is not None and not device.device_id:
            # The advertisement has only 8 characters of the id; a typed code has none.
            if not isinstance(credential, QrPayload):
                return {CONF_SETUP_CODE: "bluetooth_needs_qr"}
            if credential.device_id[:SHORT_ID_CHARS] != device.short_id:
                return {CONF_SETUP_CODE: "qr_other_device"}
            self._device = replace(device, device_id=credential.device_id)
        if isinstance(credential, QrPayload) and credential.device_id != self._device.device_id:
            return {CONF_SETUP_CODE: "qr_other_device"}
        return {}

    async def _async_prevalidate(self, credential: QrPayload | ManualCode) -> dict[str, str]:
        """Ask the service first: can the device be ours, and (manual code) its key."""
        engine = self._new_engine(credential)
        stage = Stage.CLAIM
        try:
            await engine.async_new_claim()
            if isinstance(credential, ManualCode):
                # A typed code carries no fingerprint: the registry key is the trust anchor.
                stage = Stage.DEVICE_KEY
                key = await self._target.client.device_key(
                    self._target.household_id, self._device.device_id, credential.format()
                )
                self._device = replace(self._device, known_key=key.public_key)
        except AccountServiceError as err:
            return self._shown(flow_error(stage, err))
        return {}

    def _new_engine(self, credential: Credential) -> CommitEngine:
        """The commit engine for this device; it re-opens the session with ``credential``."""
        device = self._device
        self._engine = CommitEngine(
            self._target.client,
            household_id=self._target.household_id,
            device_id=device.device_id,
            owner_secret=self._owner_secret if self._mode is Mode.ONBOARD else None,
            ensure_link=functools.partial(self._async_ensure_link, credential),
            bluetooth=device.ble_address is not None,
            wifi_lost_reported=self._wifi_lost_reported,
            record=self._record,
            watch_online=self._watch_online,
        )
        return self._engine

    def _watch_online(self, notify: Callable[[], None]) -> Callable[[], None]:
        """Call ``notify`` when the household's running hub sees the device come online.

        The engine then asks the claim at once instead of at its next poll. A household
        entry not loaded (or created by this flow) has no hub: nothing is watched.
        """
        target = self._target
        if not isinstance(target, ExistingHousehold):
            return lambda: None
        coordinator = getattr(getattr(target.entry, "runtime_data", None), "coordinator", None)
        if coordinator is None:
            return lambda: None
        device_id = self._device.device_id
        was_online = False

        @callback
        def changed() -> None:
            nonlocal was_online
            data = coordinator.device(device_id)
            online = data is not None and data.online is True
            if online and not was_online:
                notify()
            was_online = online

        remove: Callable[[], None] = coordinator.async_add_device_listener(device_id, changed)
        return remove

    def _shown(self, shown: FlowError) -> dict[str, str]:
        """Form errors; an abort ends the flow (``reauth_required`` starts the reauth)."""
        if shown.abort is not None:
            raise self._abort(self._reauth() if shown.abort == REAUTH_REQUIRED else shown.abort)
        return shown.as_errors()

    def _reauth(self) -> str:
        """The session was revoked: ask for the password again (when an entry has one)."""
        target = getattr(self, "_target", None)
        if isinstance(target, ExistingHousehold):
            target.entry.async_start_reauth(self.hass)
        return REAUTH_REQUIRED

    def _abort(self, reason: str) -> AbortFlow:
        return AbortFlow(reason, description_placeholders=self._placeholders())

    async def _async_open(self, credential: Credential) -> dict[str, str]:
        """Handshake with the device, then read it; every refusal has its own message."""
        if self._mode is Mode.WIFI_CHANGE:
            self._new_engine(credential)
        link = await self._async_connect(credential)
        if isinstance(link, dict):
            return link
        return await self._async_read_device(link)

    async def _async_connect(self, credential: Credential) -> DeviceLink | dict[str, str]:
        """The handshake: the new session's link, or form errors."""
        # A retry: the earlier session (and its connection) is not used again.
        await self._async_drop_link()
        device = self._device
        await self._async_start_recording()
        self._record(Step.HANDSHAKE_STARTED, via="lan" if device.ble_address is None else "ble")
        try:
            if device.ble_address is not None:
                link = await open_link(
                    self._ble_transport(device.ble_address),
                    credential,
                    device_id=device.device_id,
                    device_public_key=device.known_key,
                )
            else:
                client = DeviceClient(
                    device.host, device.port, session=async_get_clientsession(self.hass)
                )
                link = await client.connect(
                    credential, device_id=device.device_id, device_public_key=device.known_key
                )
        except DeviceClientError as err:
            owner = isinstance(credential, OwnerSecret)
            stage = Stage.OWNER_HANDSHAKE if owner else Stage.HANDSHAKE
            shown = flow_error(stage, err, bluetooth=device.ble_address is not None)
            self._record(Step.HANDSHAKE_FAILED, str(shown.error or shown.abort))
            return self._shown(shown)
        self._record(Step.HANDSHAKE_FINISHED)
        self._link = link
        self._device_key = link.device_public_key
        return link

    async def _async_drop_link(self) -> None:
        """Forget the session and close its connection (a retry, or the flow is done)."""
        link, self._link = self._link, None
        if link is not None:
            link.close()
            await link.aclose()

    def _ble_transport(self, address: str) -> DeviceTransport:
        """The device's GATT service through HA's adapters and connectable proxies."""

        def lookup() -> BLEDevice | None:
            return bluetooth.async_ble_device_from_address(self.hass, address, connectable=True)

        return BleTransport(address, lookup, name=self._device.name)

    async def _async_read_device(self, link: DeviceLink) -> dict[str, str]:
        """Check who answered, then read its Wi-Fi scan."""
        device = self._device
        try:
            info = await link.info()
            if info.device_id != device.device_id:
                raise self._abort("device_id_mismatch")
            if self._mode is Mode.ONBOARD and info.claimed:
                raise self._abort("device_claimed")
            self._device = replace(device, model=info.model)
            try:
                networks = await link.scan_wifi()
            except DeviceCommandError as err:
                _LOGGER.info("Wi-Fi scan on %s failed: %s", device.device_id, err)
                networks = ()
        except DeviceClientError as err:
            return self._shown(
                flow_error(Stage.READ, err, bluetooth=device.ble_address is not None)
            )
        # While the user picks a network: a BLE link frees its adapter or proxy slot (the
        # device keeps the session and the next command reconnects).
        await link.release()
        self._wps_offered = link.supports_wps
        self._networks = {}
        for network in networks:
            self._networks.setdefault(SSID_PREFIX + network.ssid.hex(), network)
        return {}

    async def async_step_wifi(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """The network from the device's own scan (or a hidden one, or keep Ethernet)."""
        errors, self._wifi_errors = self._wifi_errors, {}
        if not self._recalled:
            self._recalled = True
            await self._async_recall_wifi()
        if user_input is not None:
            self._wifi_input = dict(user_input)
            wps = self._wps_offered and bool(user_input.get(CONF_WPS, False))
            errors = self._parse_wps(user_input) if wps else self._parse_wifi(user_input)
            if not errors and self._choice.wps:
                # Nothing typed for it is kept: the router hands the key to the device.
                self._wifi_input.pop(CONF_PASSPHRASE, None)
                return await self.async_step_wps()
            if not errors:
                return await self.async_step_provision()
        return self.async_show_form(
            step_id="wifi",
            # After a failed commit too: the device's verdict rarely blames what was typed.
            data_schema=self._wifi_schema(
                kept_input(self._wifi_input, errors, never={CONF_REMEMBER})
            ),
            errors=errors,
            description_placeholders=self._placeholders(),
        )

    async def _async_recall_wifi(self) -> None:
        """The household's remembered Wi-Fi, if it has one this Home Assistant can open."""
        target = self._target
        if isinstance(target, ExistingHousehold):
            self._remembered = await wifi_memory.async_recall(self.hass, target.entry)
            # Remembered once: the box stays ticked, so a new password replaces the old one.
            self._remember = self._remembered is not None

    def _remembered_key(self) -> str | None:
        """The network option of the remembered Wi-Fi (seen by the device or not)."""
        remembered = self._remembered
        if remembered is None:
            return None
        seen = SSID_PREFIX + remembered.ssid.hex()
        return seen if seen in self._networks else REMEMBERED_NETWORK

    def _wifi_schema(self, kept: Mapping[str, Any]) -> vol.Schema:
        remembered, remembered_key = self._remembered, self._remembered_key()
        options = [
            SelectOptionDict(
                value=value,
                label=_network_label(network)
                + (" · remembered" if value == remembered_key else ""),
            )
            for value, network in self._networks.items()
        ]
        if remembered is not None and remembered_key == REMEMBERED_NETWORK:
            options.insert(
                0, SelectOptionDict(value=REMEMBERED_NETWORK, label=_remembered_label(remembered))
            )
        options.append(SelectOptionDict(value=HIDDEN_NETWORK, label=HIDDEN_NETWORK))
        if self._mode is Mode.ONBOARD:
            options.append(SelectOptionDict(value=KEEP_ETHERNET, label=KEEP_ETHERNET))
        # A device that names "wps" (LAN): the router's button instead of the password.
        wps: dict[vol.Marker, Any] = (
            {vol.Optional(CONF_WPS, default=False): BooleanSelector()} if self._wps_offered else {}
        )
        schema = vol.Schema(
            {
                vol.Required(
                    CONF_NETWORK, default=remembered_key or options[0]["value"]
                ): SelectSelector(
                    SelectSelectorConfig(
                        options=options, mode=SelectSelectorMode.LIST, translation_key="network"
                    )
                ),
                vol.Optional(CONF_HIDDEN_SSID): TextSelector(),
                # Never prefilled: a remembered password does not go back to the browser.
                vol.Optional(CONF_PASSPHRASE): TextSelector(
                    TextSelectorConfig(type=TextSelectorType.PASSWORD)
                ),
                **wps,
                vol.Optional(CONF_REMEMBER, default=self._remember): BooleanSelector(),
            }
        )
        return self.add_suggested_values_to_schema(schema, kept)

    def _parse_wifi(self, user_input: Mapping[str, Any]) -> dict[str, str]:
        """Turn the form into a :class:`WifiChoice`; return form errors."""
        choice = user_input[CONF_NETWORK]
        passphrase: str | None = user_input.get(CONF_PASSPHRASE) or None
        self._remember = bool(user_input.get(CONF_REMEMBER, False))
        self._from_memory = False
        remembered = None if self._remembered_rejected else self._remembered
        # Nothing typed for the remembered network: its remembered password.
        if remembered is not None and passphrase is None and choice == self._remembered_key():
            passphrase, self._from_memory = remembered.passphrase, True
        # The selector only offers (and accepts) what the schema listed for this mode.
        if choice == KEEP_ETHERNET:
            self._choice = WifiChoice(ssid=None, passphrase=None, hidden=False)
            return {}
        if choice == REMEMBERED_NETWORK and self._remembered is not None:
            ssid, hidden, error = self._remembered.ssid, self._remembered.hidden, None
            if passphrase is None and self._remembered.passphrase is not None:
                error = (CONF_PASSPHRASE, "passphrase_required")
        elif choice == HIDDEN_NETWORK:
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
        self._choice = WifiChoice(ssid=ssid, passphrase=passphrase, hidden=hidden)
        return {}

    def _parse_wps(self, user_input: Mapping[str, Any]) -> dict[str, str]:
        """WPS chosen: a secured network the device sees by name, and no password at all.

        A typed (or remembered) password is not used: the router hands the key to the device.
        """
        self._remember = bool(user_input.get(CONF_REMEMBER, False))  # kept for a retry typed
        self._from_memory = False
        network = self._networks.get(user_input[CONF_NETWORK])
        # Not a scanned network (hidden, remembered but unseen, Ethernet), or an open one.
        if network is None or network.security is WifiSecurity.OPEN:
            return {FIELD_BASE: WPS_NOT_POSSIBLE}
        if network.security not in _SUPPORTED_SECURITY:
            return {CONF_NETWORK: "unsupported_security"}
        self._choice = WifiChoice(ssid=network.ssid, passphrase=None, hidden=False, wps=True)
        return {}

    async def async_step_wps(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Join by WPS: the user presses the router's button, then submits within two minutes.

        Shown again with the error when the router handed over no key (WPS_FAILED); its
        ``use_passphrase`` box goes back to the Wi-Fi form to type the password instead.
        """
        errors, self._wifi_errors = self._wifi_errors, {}
        if user_input is not None:
            if user_input.get(CONF_USE_PASSPHRASE, False):
                # The same network on the Wi-Fi form, WPS no longer chosen.
                self._wifi_input = {**self._wifi_input, CONF_WPS: False}
                return await self.async_step_wifi()
            return await self.async_step_provision()
        return self.async_show_form(
            step_id="wps",
            data_schema=vol.Schema(
                {vol.Optional(CONF_USE_PASSPHRASE, default=False): BooleanSelector()}
            ),
            errors=errors,
            description_placeholders=self._placeholders(),
        )

    async def async_step_provision(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Hand over Wi-Fi and claim, commit, and wait for the outcome."""
        del user_input  # a progress step takes no input
        # Called again by HA once the progress task ended (or by a reopened dialog before).
        shown = self._task is not None
        if self._task is None:
            work = self._work = self.hass.async_create_background_task(
                self._async_provision(self._choice),
                f"{DOMAIN} commit {self._device.device_id}",
                eager_start=False,
            )
            if self.inline_commit_wait > 0:  # 0: always the progress screen
                await asyncio.wait({work}, timeout=self.inline_commit_wait)
            if work.done():
                outcome = work.result()
            else:
                self._task = self.hass.async_create_task(
                    _shielded(work, PROGRESS_MIN_SHOWN), eager_start=False
                )
        if self._task is not None:
            if not self._task.done():
                return self.async_show_progress(
                    step_id="provision",
                    # A Wi-Fi change claims nothing: its own text.
                    progress_action="wifi_change"
                    if self._mode is Mode.WIFI_CHANGE
                    else "provision",
                    progress_task=self._task,
                    description_placeholders=self._placeholders(),
                )
            outcome = self._task.result()
            self._task = None
        next_step = self._after_commit(outcome)
        if shown:
            return self.async_show_progress_done(next_step_id=next_step)
        # No progress screen was shown: this answer is the next step itself.
        if next_step == "finish":
            return await self.async_step_finish()
        if next_step == "wifi":
            return await self.async_step_wifi()
        if next_step == "wps":
            return await self.async_step_wps()
        return await self.async_step_failed()

    def _after_commit(self, outcome: Outcome) -> str:
        """The step that follows the commit's ``outcome``."""
        if outcome.abort is not None:
            self._abort_reason = outcome.abort
            return "failed"
        if outcome.error is not None:
            if self._from_memory and outcome.error == diagnostic_error(
                DiagnosticCode.WIFI_AUTH_FAILED
            ):
                # Not a password the user typed: say so, and do not try it again.
                self._remembered_rejected = True
                self._wifi_errors = {"base": REMEMBERED_WIFI_REJECTED}
                return "wifi"
            self._wifi_errors = {"base": outcome.error}
            if self._choice.wps and outcome.error in WPS_STEP_ERRORS:
                return "wps"  # the router handed over no key: press its button again
            return "wifi"
        return "finish"

    async def async_step_failed(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """End the flow after a failure that a retry here cannot fix."""
        del user_input  # reached through show_progress_done
        return self.async_abort(
            reason=self._abort_reason, description_placeholders=self._placeholders()
        )

    async def _async_provision(self, choice: WifiChoice) -> Outcome:
        """The progress task: the engine's outcome (an abort of the flow becomes one too)."""
        try:
            outcome = await self._engine.async_run(choice)
        except AbortFlow as err:  # re-opening the session found another device or state
            outcome = Outcome(abort=err.reason)
        self._record(
            *outcome_step(outcome.error, outcome.abort, claimed=self._mode is Mode.ONBOARD)
        )
        if outcome.abort == REAUTH_REQUIRED:
            self._reauth()
        return outcome

    async def _async_start_recording(self) -> None:
        """Record this flow's attempts in its household's log (once the device is known)."""
        target: Target | None = getattr(self, "_target", None)
        if self._attempts is None and target is not None and self._device.device_id:
            log = await async_get_log(self.hass)
            self._attempts = AttemptRecorder(log, target.household_id, self._device.device_id)

    def _record(self, step: Step, result: str = "ok", *, via: str = "session") -> None:
        """One step of the current attempt (with its debug log line)."""
        if self._attempts is not None:
            self._attempts.record(step, result, via=via)

    def _wifi_lost_reported(self) -> bool:
        """A Wi-Fi change over BLE of a device whose Wi-Fi-lost repair is still open."""
        if self._device.ble_address is None or self._mode is not Mode.WIFI_CHANGE:
            return False
        issue_id = f"{repairs.WIFI_LOST}_{self._device.device_id}"
        return ir.async_get(self.hass).async_get_issue(DOMAIN, issue_id) is not None

    async def _async_ensure_link(self, credential: Credential) -> DeviceLink:
        """The session, re-established with the same code if the device dropped it."""
        if self._link is not None and self._link.usable:
            return self._link
        link = await self._async_connect(credential)
        if isinstance(link, dict):
            raise SessionLostError(f"cannot re-establish the session: {link}")
        return link

    async def async_step_finish(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Create the device's entry (after its household's, for a new household)."""
        del user_input  # reached through show_progress_done
        await self._async_drop_link()
        if isinstance(self._target, ExistingHousehold):
            await self._async_remember_wifi(self._target.entry)
        if self._mode is Mode.WIFI_CHANGE:
            return self.async_abort(
                reason="wifi_changed", description_placeholders=self._placeholders()
            )
        device_id = self._device.device_id
        await self._async_learn_model_name()  # over BLE the model is known only now
        record = self._device_record()
        for ignored in self._async_current_entries(include_ignore=True):
            # An earlier "ignore" of this device's discovery no longer applies.
            if ignored.source == SOURCE_IGNORE and ignored.unique_id in {
                device_id,
                device_id[:SHORT_ID_CHARS],
            }:
                await self.hass.config_entries.async_remove(ignored.entry_id)
        target = self._target
        if isinstance(target, NewHousehold):
            # The first device of a household: its entry (the hub) first, then the device's.
            await self.hass.config_entries.flow.async_init(
                DOMAIN,
                context={"source": SOURCE_IMPORT},
                data={"title": target.household.name, "data": target.entry_data()},
            )
            if (created := household_entry(self.hass, target.household_id)) is not None:
                await self._async_remember_wifi(created)
        await self._async_supersede(device_id)
        await self.async_set_unique_id(device_id, raise_on_progress=False)
        return self.async_create_entry(
            title=self._device.name,
            data=record,
            description_placeholders=self._placeholders(),
        )

    async def _async_remember_wifi(self, entry: ConfigEntry) -> None:
        """The box was ticked: the network just joined becomes the household's remembered one.

        Not after a WPS join: Home Assistant never had that network's password, and an absent
        one must not be remembered as if the network were open.
        """
        choice = self._choice
        if not self._remember or choice.ssid is None or choice.wps:
            return
        wifi = RememberedWifi(ssid=choice.ssid, passphrase=choice.passphrase, hidden=choice.hidden)
        if wifi != self._remembered:
            await wifi_memory.async_remember(self.hass, entry, wifi)

    async def _async_supersede(self, device_id: str) -> None:
        """An older entry of the device (it was reset and onboarded again) goes, unreleased."""
        for entry in device_entries(self.hass):
            if entry.unique_id == device_id:
                self.hass.config_entries.async_update_entry(
                    entry, data={**entry.data, CONF_SUPERSEDED: True}
                )
                await self.hass.config_entries.async_remove(entry.entry_id)

    def _device_record(self) -> dict[str, Any]:
        """The device entry's data."""
        device = self._device
        return {
            CONF_DEVICE_ID: device.device_id,
            CONF_HOUSEHOLD_ID: self._target.household_id,
            DEVICE_HOST: device.host,
            DEVICE_PORT: device.port,
            DEVICE_MODEL: device.model,
            DEVICE_PUBLIC_KEY: b64url_encode(self._device_key),
            DEVICE_OWNER_SECRET: self._owner_secret.encode(),
            DEVICE_ADDED_AT: int(time.time()),
            # Only a typed name: by default the device's own name (its descriptor's) names it.
            **({DEVICE_NAME: device.chosen_name} if device.chosen_name else {}),
        }

    def _record_late(self, work: asyncio.Task[Outcome]) -> None:
        """The dialog was closed mid-commit and the device got owned anyway: keep its secret."""
        if not work.cancelled() and work.exception() is None and work.result() == Outcome():
            device_id = self._device.device_id
            self.hass.async_create_task(
                self.hass.config_entries.flow.async_init(
                    DOMAIN,
                    context={"source": SOURCE_IMPORT},
                    data={"title": self._device.name, "data": self._device_record()},
                ),
                f"{DOMAIN} record {device_id}",
            )
            _LOGGER.info("%s was onboarded after its setup dialog was closed", device_id)
        self._close_link()

    # --- helpers --------------------------------------------------------------------------------

    def _placeholders(self) -> dict[str, str]:
        engine: CommitEngine | None = getattr(self, "_engine", None)
        return {
            "name": self._device.name,
            "device_id": self._device.device_id or self._device.short_id,
            "model": self._device.model,
            "host": self._device.host,
            "timeout": str(commit_engine.DEFAULT_TIMER if engine is None else engine.timeout),
            "household": self._household_name(),
        }

    def _household_name(self) -> str:
        """The name of the household the device goes to (empty before it is known)."""
        target: Target | None = getattr(self, "_target", None)
        if isinstance(target, ExistingHousehold):
            return target.entry.title
        return "" if target is None else target.household.name

    def async_remove(self) -> None:
        """The dialog was closed: a commit of a new device finishes, anything else stops.

        A device mid-commit completes or rolls back by itself either way. Onboarding into an
        entry, the flow keeps waiting, so that if the device ends up owned its owner secret is
        saved (else only a factory reset could reopen it); otherwise it just lets go.
        """
        work = self._work
        if work is not None and not work.done():
            target = self._target
            if self._mode is Mode.ONBOARD and isinstance(target, ExistingHousehold):
                work.add_done_callback(self._record_late)
                return
            work.cancel()
        self._close_link()

    def _close_link(self) -> None:
        """Forget the session and disconnect (always, also BLE) without waiting here."""
        link, self._link = self._link, None
        if link is None:
            return
        link.close()
        self.hass.async_create_background_task(
            link.aclose(), f"{DOMAIN} disconnect {self._device.device_id}", eager_start=True
        )
