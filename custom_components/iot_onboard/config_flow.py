"""Config flow for IoT Onboard: household accounts, discovery, and where devices go.

This module has the entry points (the user, zeroconf, Bluetooth and the manual add), the
account steps (sign in or up, household, reauth, reconfigure) and the class Home Assistant
registers. Onboarding a device and changing its Wi-Fi are in onboarding.py (the class's base,
:class:`~.onboarding.DeviceSteps`); the commit itself is in commit_engine.py (no Home
Assistant there); what each failure shows is the table in flow_errors.py.

Config entries (version 2, docs/architecture.md): one per household (unique id = household id;
the hub) and one per onboarded device (unique id = device id). A flow that onboards a device
ends on the device's ``create_entry`` (Home Assistant's success screen, with the area picker);
when Home Assistant has no household yet it signs in inside the same flow and creates the
household entry first (an import flow). The Wi-Fi change is the device entry's reconfigure.

Steps::

    user ──(household entries exist)──▶ menu: account | manual_device
    account ─▶ household (none or several) ─▶ CREATE_ENTRY        (sign in, or create an account)
    reauth ─▶ reauth_confirm ─▶ abort reauth_successful             (same account and household)
    reconfigure (household entry) ─▶ reconfigure_account
    reconfigure (device entry) ─▶ device_select | wifi_lost_confirm (seen over BLE)
    import ─▶ CREATE_ENTRY                      (a household or device entry made by us)
    zeroconf ─▶ discovery_confirm ─┐
    bluetooth ─▶ bluetooth_confirm ─┤  (unclaimed, window open; the QR code names the device)
    manual_device ─────────────────┴▶ [account ─▶ household | pick_household] ─▶ credentials
    credentials (QR text or manual code) ─▶ wifi ─▶ provision (progress) ─▶ finish
        finish ─▶ CREATE_ENTRY of the device (after the household's, for a new household)
    device_select (owner secret, no label) ─▶ wifi ─▶ provision ─▶ finish ─▶ wifi_changed
    bluetooth (our device, Wi-Fi lost) ─┬▶ wifi_lost_confirm (owner secret over BLE) ─▶ wifi …
    reconfigure (repair, seen over BLE) ┘     (the repair ``wifi_lost_<id>`` is raised too)
    wifi ◀── provision: a diagnostic code (message and next step shown; retry in place)
    discovery_confirm takes the setup code and name (optional; empty: the credentials form):
        one household set up ─▶ checked there; the household's remembered Wi-Fi seen by the
        device and "another network" off ─▶ provision (no Wi-Fi form), else ─▶ wifi
        none (or several) ─▶ account | pick_household ─▶ credentials only if the code is wrong

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
from collections.abc import Mapping
from typing import Any, Final, cast

import voluptuous as vol
from homeassistant.components import bluetooth
from homeassistant.components.bluetooth import BluetoothServiceInfoBleak
from homeassistant.config_entries import (
    SOURCE_HASSIO,
    SOURCE_IGNORE,
    SOURCE_ZEROCONF,
    ConfigEntry,
    ConfigEntryState,
    ConfigFlowResult,
)
from homeassistant.core import callback
from homeassistant.data_entry_flow import AbortFlow
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.hassio import is_hassio
from homeassistant.helpers.selector import (
    BooleanSelector,
    SelectOptionDict,
    SelectSelector,
    SelectSelectorConfig,
    SelectSelectorMode,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)
from homeassistant.helpers.service_info.hassio import HassioServiceInfo
from homeassistant.helpers.service_info.zeroconf import ZeroconfServiceInfo
from yarl import URL

from . import repairs
from .account_client import AccountClient, AccountServiceError, Household, TokenSet
from .addon import ADDON_NAME, AddonAnnouncement, AddonSetupError, async_set_up_addon
from .const import (
    CONF_ACCOUNT_ID,
    CONF_ACCOUNT_SERVICE,
    CONF_ACCOUNT_URL,
    CONF_DEVICE_ID,
    CONF_EMAIL,
    CONF_HOUSEHOLD_ID,
    DEFAULT_DEVICE_PORT,
    DEVICE_HOST,
    DEVICE_PORT,
    DOMAIN,
    ENTRY_VERSION,
    LOOPBACK_HOSTS,
    SUPPORTED_PROTOCOL,
)
from .coordinator import IotOnboardConfigEntry
from .device_client import DeviceClient, DeviceClientError
from .flow_errors import FIELD_PASSWORD, Stage, flow_error
from .helpers import device_entries, device_entry, household_entry, is_device_entry
from .iob_protocol import (
    AdvertisedState,
    BlePhase,
    ProtocolError,
    WireFormatError,
    display_ssid,
    validate_device_id,
)
from .iob_protocol.ble import SERVICE_UUID, SHORT_ID_CHARS
from .onboarding import (
    CONF_HOST,
    CONF_NAME,
    CONF_OTHER_WIFI,
    CONF_PORT,
    CONF_SETUP_CODE,
    PORT_SELECTOR,
    AccountSession,
    DeviceSteps,
    ExistingHousehold,
    NewHousehold,
    TargetDevice,
    kept_input,
)
from .options_flow import IotOnboardOptionsFlow

_LOGGER = logging.getLogger(__name__)

CONF_PASSWORD: Final = FIELD_PASSWORD
CONF_CREATE_ACCOUNT: Final = "create_account"
CONF_HOUSEHOLD: Final = "household"
CONF_HOUSEHOLD_NAME: Final = "household_name"

NEW_HOUSEHOLD: Final = "new_household"

#: The account service's own zeroconf record (cloud_relay/announce.py; manifest.json).
RELAY_SERVICE_TYPE: Final = "_iob-relay._tcp.local."
RELAY_API: Final = "v1"

#: What an unclaimed device advertises: the zeroconf TXT ``state`` and the BLE phase.
_UNCLAIMED_TXT_STATES: Final = frozenset({"unclaimed", "provisioning"})
_UNCLAIMED_PHASES: Final = frozenset({BlePhase.UNCLAIMED, BlePhase.PROVISIONING})
_PASSWORD_SCHEMA: Final = vol.Schema(
    {
        vol.Required(CONF_PASSWORD): TextSelector(
            TextSelectorConfig(type=TextSelectorType.PASSWORD, autocomplete="current-password")
        )
    }
)


def addon_url(raw: object) -> str | None:
    """The URL the add-on announced through the Supervisor, or None when it is not one.

    Plain http is accepted here: the Supervisor's discovery is trusted (only an add-on can
    post it, and only Home Assistant can read it) and the add-on answers on the host's
    internal add-on network, where the official add-ons' links are plain http too.
    """
    if not isinstance(raw, str):
        return None
    try:
        url = URL(raw.strip())
    except ValueError:
        return None
    if url.scheme not in {"http", "https"} or not url.host or url.user or url.query_string:
        return None
    return str(url.with_fragment(None)).rstrip("/")


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
    if url.scheme == "https" or (url.scheme == "http" and url.host in LOOPBACK_HOSTS):
        return str(url.with_fragment(None)).rstrip("/")
    return None


_URL_FIELD: Final = {
    vol.Required(CONF_ACCOUNT_URL): TextSelector(TextSelectorConfig(type=TextSelectorType.URL))
}
_SIGN_IN_FIELDS: Final = {
    vol.Required(CONF_EMAIL): TextSelector(
        TextSelectorConfig(type=TextSelectorType.EMAIL, autocomplete="username")
    ),
    vol.Required(CONF_PASSWORD): TextSelector(
        TextSelectorConfig(type=TextSelectorType.PASSWORD, autocomplete="current-password")
    ),
    vol.Required(CONF_CREATE_ACCOUNT, default=False): BooleanSelector(),
}


def relay_url(discovery_info: ZeroconfServiceInfo) -> str | None:
    """The account service URL an ``_iob-relay._tcp`` record names, if it is acceptable.

    The service speaks plain http on its own port (TXT ``path``); :func:`normalize_account_url`
    accepts that on this host only, as for a typed URL. On a LAN the record names the https
    address of a TLS proxy in front of it (TXT ``url``, ``serve --announce-url``), held to the
    same rule.
    """
    public = discovery_info.properties.get("url")
    if public:
        return normalize_account_url(str(public))
    path = str(discovery_info.properties.get("path") or "/")
    if not path.startswith("/"):
        return None
    url = URL.build(scheme="http", host=discovery_info.host, port=discovery_info.port, path=path)
    return normalize_account_url(str(url))


class IotOnboardConfigFlow(DeviceSteps, domain=DOMAIN):
    """Household accounts, and onboarding devices into them."""

    VERSION = ENTRY_VERSION

    #: The sign-in of this flow: set by the account step before the household step.
    _session: AccountSession
    #: The add-on's announcement: set by the hassio step before its confirm.
    _addon: AddonAnnouncement
    #: Installing and starting the add-on (the install_addon progress step).
    _addon_task: asyncio.Task[dict[str, Any]] | None = None
    #: An announced account service the user confirmed: its URL is not asked (relay_confirm).
    _fixed_url: str | None = None
    #: That service's zeroconf instance name, kept in the entry to follow its address.
    _account_service: str | None = None

    # Added by the runtime (issue 6): the options (roles) live in options_flow.py.
    @staticmethod
    def async_get_options_flow(config_entry: IotOnboardConfigEntry) -> IotOnboardOptionsFlow:
        """Roles: who may do what in this household."""
        del config_entry
        return IotOnboardOptionsFlow()

    @classmethod
    @callback
    def async_supports_options_flow(cls, config_entry: ConfigEntry) -> bool:
        """Roles belong to the household entry; a device entry has no options."""
        return not is_device_entry(config_entry)

    async def async_step_import(self, import_data: dict[str, Any]) -> ConfigFlowResult:
        """An entry the integration makes itself, from ``{"title": ..., "data": ...}``.

        A household (a device's flow creates it first), a device that finished after its
        dialog was closed, or one moved out of a version-1 household entry by the migration.
        """
        data: dict[str, Any] = import_data["data"]
        unique_id = data[CONF_DEVICE_ID] if CONF_DEVICE_ID in data else data[CONF_HOUSEHOLD_ID]
        await self.async_set_unique_id(unique_id)
        self._abort_if_unique_id_configured()
        if CONF_DEVICE_ID not in data:
            data = self._adopt_announced_service(data)
        return self.async_create_entry(title=import_data["title"], data=data)

    def _adopt_announced_service(self, data: dict[str, Any]) -> dict[str, Any]:
        """A new household entry on an announced account service ends that service's card.

        Its "account service found" card would otherwise offer to add what is set up now; the
        service's instance name goes into the entry, so a move of the service is followed as
        for an entry made from the card itself.
        """
        flows = self.hass.config_entries.flow.async_progress_by_handler(
            DOMAIN, include_uninitialized=True, match_context={"source": SOURCE_ZEROCONF}
        )
        for flow in flows:
            context = flow["context"]
            url = context.get("configuration_url")
            if url is None or url != data[CONF_ACCOUNT_URL] or flow["flow_id"] == self.flow_id:
                continue
            if CONF_ACCOUNT_SERVICE not in data and context.get("unique_id"):
                data = {**data, CONF_ACCOUNT_SERVICE: context["unique_id"]}
            self.hass.config_entries.flow.async_abort(flow["flow_id"])
        return data

    # --- household accounts -------------------------------------------------------------------

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Add a household account, or (with one set up) a device discovery cannot see.

        On Home Assistant OS without a household, the add-on is offered first: installed,
        started and linked from here, nothing typed.
        """
        del user_input  # a menu or the account form; nothing is submitted here
        if self._household_entries():
            return self.async_show_menu(step_id="user", menu_options=["account", "manual_device"])
        if is_hassio(self.hass):
            return self.async_show_menu(step_id="user", menu_options=["install_addon", "account"])
        return await self.async_step_account()

    async def async_step_account(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Sign in to an account service (or create an account there), household included.

        The URL is not asked when an announced service was confirmed (relay_confirm), and
        suggested when one is announced. A new household is created under the name on this
        form when the account has none; with one, that one is used; only an account with
        several shows a second form (the household step), as they are known after sign-in.
        """
        errors: dict[str, str] = {}
        if user_input is not None:
            account_url = self._fixed_url or normalize_account_url(user_input[CONF_ACCOUNT_URL])
            if account_url is None:
                errors[CONF_ACCOUNT_URL] = "invalid_url"
            else:
                client = AccountClient(account_url, session=async_get_clientsession(self.hass))
                signed_in = await self._async_sign_in(
                    client,
                    user_input[CONF_EMAIL].strip(),
                    user_input[CONF_PASSWORD],
                    create=user_input[CONF_CREATE_ACCOUNT],
                )
                if isinstance(signed_in, AccountSession):
                    self._session = signed_in
                    if signed_in.households:
                        return await self.async_step_household()
                    name = user_input.get(CONF_HOUSEHOLD_NAME, "")
                    return await self.async_step_household({CONF_HOUSEHOLD_NAME: name})
                errors = signed_in
        fields: dict[Any, Any] = {} if self._fixed_url else dict(_URL_FIELD)
        fields |= _SIGN_IN_FIELDS
        fields[vol.Optional(CONF_HOUSEHOLD_NAME, default=self.hass.config.location_name)] = (
            TextSelector()
        )
        announced = None if self._fixed_url else self._announced_url()
        suggested = {CONF_ACCOUNT_URL: announced} if announced else {}
        return self.async_show_form(
            step_id="account",
            data_schema=self.add_suggested_values_to_schema(
                vol.Schema(fields),
                {**suggested, **kept_input(user_input, errors, never={CONF_PASSWORD})},
            ),
            errors=errors,
        )

    def _announced_url(self) -> str | None:
        """The URL of an account service announced on the LAN (its discovery card's flow)."""
        flows = self.hass.config_entries.flow.async_progress_by_handler(
            DOMAIN, include_uninitialized=True, match_context={"source": SOURCE_ZEROCONF}
        )
        urls = (flow["context"].get("configuration_url") for flow in flows)
        return next((url for url in urls if url), None)

    async def _async_sign_in(
        self, client: AccountClient, email: str, password: str, *, create: bool
    ) -> AccountSession | dict[str, str]:
        """Sign in (or up) and read the households; or form errors."""
        try:
            await client.health()
        except AccountServiceError as err:
            return flow_error(Stage.SERVICE, err).as_errors()
        try:
            if create:
                signed_in = await client.sign_up(email, password)
            else:
                signed_in = await client.sign_in(email, password)
            households = tuple(await client.households())
        except AccountServiceError as err:
            return flow_error(Stage.SIGN_IN, err).as_errors()
        return AccountSession(client, signed_in, households)

    async def async_step_household(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Choose (or create) the household this entry stands for."""
        session = self._session
        errors: dict[str, str] = {}
        if user_input is None and len(session.households) == 1:
            return await self._async_household_chosen(session, session.households[0])
        if user_input is not None:
            choice = user_input.get(CONF_HOUSEHOLD, NEW_HOUSEHOLD)
            chosen = next((h for h in session.households if h.household_id == choice), None)
            if chosen is not None:
                return await self._async_household_chosen(session, chosen)
            name = str(user_input.get(CONF_HOUSEHOLD_NAME, "")).strip()
            if not name:
                errors[CONF_HOUSEHOLD_NAME] = "name_required"
            else:
                try:
                    household = await session.client.create_household(name)
                except AccountServiceError as err:
                    errors = flow_error(Stage.ACCOUNT, err).as_errors()
                else:
                    return await self._async_household_chosen(session, household)
        schema: dict[Any, Any] = {}
        if session.households:
            options = [
                SelectOptionDict(value=h.household_id, label=f"{h.name} ({h.role.value})")
                for h in session.households
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
            step_id="household",
            data_schema=self.add_suggested_values_to_schema(
                vol.Schema(schema), kept_input(user_input, errors)
            ),
            errors=errors,
        )

    async def _async_household_chosen(
        self, session: AccountSession, household: Household
    ) -> ConfigFlowResult:
        target = NewHousehold(session, household)
        if self._onboarding:
            # A discovery or manual add that signed in first: the entry is created at the
            # end with the device in it, unless this household is already set up.
            for entry in self._household_entries():
                if entry.unique_id == household.household_id:
                    return await self._async_use_entry(entry)
            self._target = target
            return await self.async_step_credentials()
        await self.async_set_unique_id(household.household_id)
        self._abort_if_unique_id_configured()
        data = target.entry_data()
        if self._account_service is not None:
            data[CONF_ACCOUNT_SERVICE] = self._account_service
        return self.async_create_entry(
            title=household.name, data=self._adopt_announced_service(data)
        )

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
            signed_in = await self._async_sign_in(
                client, entry.data[CONF_EMAIL], user_input[CONF_PASSWORD], create=False
            )
            if isinstance(signed_in, AccountSession):
                # The unique id is the household: another account, or one that lost its
                # membership, would silently turn this entry into something else.
                await self._async_set_checked_unique_id(
                    entry, signed_in.signed_in.account.account_id, signed_in.households
                )
                self._abort_if_unique_id_mismatch(reason="wrong_account")
                return self._update_and_reload(
                    entry, signed_in.signed_in.tokens.as_entry_data(), reason="reauth_successful"
                )
            errors = signed_in
        return self.async_show_form(
            step_id="reauth_confirm",
            data_schema=_PASSWORD_SCHEMA,
            errors=errors,
            description_placeholders={"email": entry.data[CONF_EMAIL]},
        )

    async def _async_set_checked_unique_id(
        self, entry: ConfigEntry, account_id: str, households: tuple[Household, ...]
    ) -> None:
        """The entry's unique id if the same account still sees the household, else another."""
        visible = {household.household_id for household in households}
        same = account_id == entry.data[CONF_ACCOUNT_ID] and entry.unique_id in visible
        await self.async_set_unique_id(entry.unique_id if same else account_id)

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """A household entry: the account service's address; a device entry: its Wi-Fi."""
        del user_input  # straight to the one form that applies
        entry = self._get_reconfigure_entry()
        if not is_device_entry(entry):
            return await self.async_step_reconfigure_account()
        advert = self._ble_advert(str(entry.data[CONF_DEVICE_ID])[:SHORT_ID_CHARS])
        if advert is not None:
            # The device is advertising its owner-only window (it lost its Wi-Fi): over BLE.
            self._prepare_wifi_change(entry, ble_address=advert.address)
            return await self.async_step_wifi_lost_confirm()
        return await self.async_step_device_select()

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
                moved = await self._async_check_moved_service(entry, account_url, user_input)
                if isinstance(moved, dict):
                    errors = moved
                else:
                    updates: dict[str, Any] = {CONF_ACCOUNT_URL: account_url}
                    if moved.tokens is not None:
                        updates |= moved.tokens.as_entry_data()
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
                {
                    CONF_ACCOUNT_URL: entry.data[CONF_ACCOUNT_URL],
                    **kept_input(user_input, errors, never={CONF_PASSWORD}),
                },
            ),
            errors=errors,
            description_placeholders={"email": entry.data[CONF_EMAIL]},
        )

    async def _async_check_moved_service(
        self, entry: ConfigEntry, account_url: str, user_input: Mapping[str, Any]
    ) -> AccountClient | dict[str, str]:
        """The new address must lead to the same service: same account, same household.

        The client signed in there, or form errors.
        """
        session = async_get_clientsession(self.hass)
        password = user_input.get(CONF_PASSWORD)
        if password:
            client = AccountClient(account_url, session=session)
            signed_in = await self._async_sign_in(
                client, entry.data[CONF_EMAIL], password, create=False
            )
            if not isinstance(signed_in, AccountSession):
                return signed_in
            account_id = signed_in.signed_in.account.account_id
            households = signed_in.households
        else:
            # Without a password the stored session must work there (tokens are the service's).
            client = AccountClient(
                account_url, session=session, tokens=TokenSet.from_entry_data(entry.data)
            )
            try:
                account_id = (await client.me()).account_id
                households = tuple(await client.households())
            except AccountServiceError as err:
                return flow_error(Stage.STORED_SESSION, err).as_errors()
        await self._async_set_checked_unique_id(entry, account_id, households)
        self._abort_if_unique_id_mismatch(reason="wrong_account")
        return client

    # --- the add-on (Home Assistant OS) ---------------------------------------------------------

    async def async_step_hassio(self, discovery_info: HassioServiceInfo) -> ConfigFlowResult:
        """The IoT Onboard add-on announced its account service and a one-time token."""
        url = addon_url(discovery_info.config.get("url"))
        token = discovery_info.config.get("token")
        if url is None or not isinstance(token, str) or not token:
            return self.async_abort(reason="invalid_discovery_info")
        for entry in self._household_entries():
            if entry.data.get(CONF_ACCOUNT_URL) == url:
                return self.async_abort(reason="already_configured")
        await self.async_set_unique_id(f"addon_{discovery_info.slug}")
        self._abort_if_unique_id_configured()
        self._addon = AddonAnnouncement(url=url, token=token, name=discovery_info.name)
        self.context["title_placeholders"] = {"name": discovery_info.name}
        return await self.async_step_hassio_confirm()

    async def async_step_hassio_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """One confirm links this Home Assistant to a new household on the add-on's service."""
        errors: dict[str, str] = {}
        if user_input is not None:
            linked, errors = await self._async_link_addon()
            if linked is not None:
                return linked
        return self._addon_confirm_form(errors)

    def _addon_confirm_form(self, errors: dict[str, str]) -> ConfigFlowResult:
        self._set_confirm_only()
        return self.async_show_form(
            step_id="hassio_confirm",
            description_placeholders={"addon": self._addon.name, "url": self._addon.url},
            errors=errors,
        )

    async def _async_link_addon(self) -> tuple[ConfigFlowResult | None, dict[str, str]]:
        """Redeem the add-on's token for a new household: the entry or an abort, else errors."""
        addon = self._addon
        for entry in self._household_entries():
            if entry.data.get(CONF_ACCOUNT_URL) == addon.url:
                return self.async_abort(reason="already_configured"), {}
        client = AccountClient(addon.url, session=async_get_clientsession(self.hass))
        try:
            signed_in, household = await client.redeem_provisioning(
                addon.token, self.hass.config.location_name or "Home"
            )
        except AccountServiceError as err:
            failure = flow_error(Stage.ADDON, err)
            if failure.abort is not None:
                return self.async_abort(reason=failure.abort), {}
            return None, failure.as_errors()
        for flow in self._async_in_progress():
            # The add-on's own discovery card: this flow used its token.
            if flow["context"].get("source") == SOURCE_HASSIO:
                self.hass.config_entries.flow.async_abort(flow["flow_id"])
        session = AccountSession(client, signed_in, (household,))
        return await self._async_household_chosen(session, household), {}

    async def async_step_install_addon(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Add the repository, install and start the add-on, wait for its announcement."""
        del user_input  # a progress step
        if self._addon_task is None:
            self._addon_task = self.hass.async_create_task(
                async_set_up_addon(self.hass), eager_start=False
            )
        if not self._addon_task.done():
            return self.async_show_progress(
                step_id="install_addon",
                progress_action="install_addon",
                description_placeholders={"addon": ADDON_NAME},
                progress_task=self._addon_task,
            )
        return self.async_show_progress_done(next_step_id="addon_installed")

    async def async_step_addon_installed(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """The add-on announced itself: link this Home Assistant to it (nothing to confirm)."""
        del user_input  # reached from the progress step only
        # Reached only from the progress step, which set the task and saw it done.
        task = cast("asyncio.Task[dict[str, Any]]", self._addon_task)
        self._addon_task = None
        try:
            config = task.result()
        except AddonSetupError as err:
            _LOGGER.warning("%s add-on: %s", ADDON_NAME, err)
            return self.async_abort(reason=err.reason)
        except TimeoutError:
            _LOGGER.warning("%s add-on: no announcement after it started", ADDON_NAME)
            return self.async_abort(reason="addon_not_announced")
        url, token = addon_url(config.get("url")), config.get("token")
        if url is None or not isinstance(token, str) or not token:
            return self.async_abort(reason="invalid_discovery_info")
        self._addon = AddonAnnouncement(url=url, token=token, name=ADDON_NAME)
        linked, errors = await self._async_link_addon()
        # Started but not answering yet: the one-confirm step says so and retries in place.
        return self._addon_confirm_form(errors) if linked is None else linked

    # --- discovery and the manual add -------------------------------------------------------

    async def async_step_zeroconf(self, discovery_info: ZeroconfServiceInfo) -> ConfigFlowResult:
        """An unclaimed device advertises itself on the LAN (or an account service does)."""
        if discovery_info.type == RELAY_SERVICE_TYPE:
            return await self._async_relay_discovered(discovery_info)
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
        self._device = TargetDevice(
            device_id=device_id,
            model=str(properties.get("model") or "IoT Onboard"),
            host=host,
            port=port,
            own_name=str(properties.get("name") or "").strip(),
        )
        loaded = (self._loaded_account(entry) for entry in self._household_entries())
        client = next((client for client in loaded if client is not None), None)
        if client is not None:
            # The card shows the model's name (the account service's) for a nameless device;
            # a loaded household's client only (one token refresher per session).
            await self._async_learn_model_name(client)
        self.context["title_placeholders"] = {"name": self._device.name}
        return await self.async_step_discovery_confirm()

    async def _async_relay_discovered(
        self, discovery_info: ZeroconfServiceInfo
    ) -> ConfigFlowResult:
        """An account service announces itself (``serve --announce``): offer to sign in there.

        Its instance name is the flow's unique id (one card per service, "ignore" works) and
        is kept in the household entry, so a service announced at a new address updates the
        entry's URL (as ``_abort_if_unique_id_configured(updates=...)`` does for core
        integrations; the entry's unique id is the household's, hence done by hand).
        """
        if str(discovery_info.properties.get("api", "")) != RELAY_API:
            return self.async_abort(reason="unsupported_protocol")
        url = relay_url(discovery_info)
        if url is None:
            return self.async_abort(
                reason="insecure_account_service",
                description_placeholders={"host": discovery_info.host},
            )
        service = discovery_info.name
        for entry in self._household_entries():
            if entry.data.get(CONF_ACCOUNT_SERVICE) == service:
                if entry.data[CONF_ACCOUNT_URL] != url:
                    return self._update_and_reload(
                        entry, {CONF_ACCOUNT_URL: url}, reason="already_configured"
                    )
                return self.async_abort(reason="already_configured")
            if entry.data[CONF_ACCOUNT_URL] == url:
                return self.async_abort(reason="already_configured")
        await self.async_set_unique_id(service)
        self._abort_if_unique_id_configured()
        self._fixed_url, self._account_service = url, service
        # configuration_url: where other flows find the announced URL (_announced_url).
        self.context["configuration_url"] = url
        self.context["title_placeholders"] = {"name": url}
        return await self.async_step_relay_confirm()

    async def async_step_relay_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Show the announced account service before signing in there."""
        if user_input is None:
            self._set_confirm_only()
            return self.async_show_form(
                step_id="relay_confirm", description_placeholders={"url": str(self._fixed_url)}
            )
        return await self.async_step_account()

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
        """A device this Home Assistant onboarded: refresh its address, then abort.

        The flow's unique id is the short id (one flow per device whichever discovery sees
        it), the device entry's the whole id, so ``_abort_if_unique_id_configured(updates=...)``
        cannot find it; this is the same idea (no reload: the address is only used for a later
        Wi-Fi change).
        """
        entry = device_entry(self.hass, device_id)
        if entry is None:
            return
        if (entry.data[DEVICE_HOST], entry.data[DEVICE_PORT]) != (host, port):
            self.hass.config_entries.async_update_entry(
                entry, data={**entry.data, DEVICE_HOST: host, DEVICE_PORT: port}
            )
        raise AbortFlow("already_configured")

    async def async_step_discovery_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """The device found, with its setup code and name: a later device's only form.

        Nothing is sent to the device before this is submitted. With one household set up,
        the code is checked here (its errors shown on this form) and, when the household
        remembers a Wi-Fi network the device sees, that one is joined (unless "another
        network" is on). Without one, the code waits for the sign-in (the credentials form
        shows what is wrong with it); without a code, the credentials form asks for it.
        """
        errors: dict[str, str] = {}
        if user_input is None:
            await self._async_existing_household()
        else:
            self._choose_name(user_input)
            self._use_remembered = not user_input.get(CONF_OTHER_WIFI, False)
            code = user_input.get(CONF_SETUP_CODE) or None
            target = getattr(self, "_target", None)
            entries = self._household_entries()
            if (
                code is None
                or not isinstance(target, ExistingHousehold)
                or entries != [target.entry]
            ):
                # The household is found (or signed in to) again, and its Wi-Fi read there.
                self._pending_code, self._use_remembered = code, False
                self._remembered, self._recalled = None, False
                return await self._async_start_onboarding()
            self._onboarding = True
            errors = await self._async_open_session(code)
            if not errors:
                return await self._async_session_opened()
        remembered = self._remembered
        return self.async_show_form(
            step_id="discovery_confirm",
            data_schema=self._code_schema(
                user_input or {}, errors, required=False, other_wifi=remembered is not None
            ),
            errors=errors,
            description_placeholders={
                **self._placeholders(),
                "wifi": "" if remembered is None else display_ssid(remembered.ssid),
            },
        )

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
        self._device = TargetDevice(
            short_id=advertised.short_id, ble_address=discovery_info.address
        )
        # Unclaimed comes first: a record left from before a factory reset does not make
        # the device ours (as in the zeroconf step).
        if advertised.phase not in _UNCLAIMED_PHASES:
            owned = self._owned_device(advertised.short_id)
            if owned is None:
                return self.async_abort(reason="device_claimed")
            hub, entry = owned
            if hub.state is not ConfigEntryState.LOADED:
                return self.async_abort(reason="already_configured")
            repairs.async_report_wifi_lost(self.hass, entry.data[CONF_DEVICE_ID])
            self._prepare_wifi_change(entry, ble_address=discovery_info.address)
            self.context["title_placeholders"] = {"name": self._device.name}
            return await self.async_step_wifi_lost_confirm()
        self._device = TargetDevice(
            short_id=advertised.short_id, model="IoT Onboard", ble_address=discovery_info.address
        )
        self.context["title_placeholders"] = {"name": self._device.name}
        return await self.async_step_bluetooth_confirm()

    def _owned_device(self, short_id: str) -> tuple[ConfigEntry, ConfigEntry] | None:
        """The household entry and the device entry of ours that ``short_id`` names, if any."""
        for entry in device_entries(self.hass):
            hub = household_entry(self.hass, entry.data[CONF_HOUSEHOLD_ID])
            if hub is not None and str(entry.unique_id)[:SHORT_ID_CHARS] == short_id:
                return hub, entry
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
            except DeviceClientError as err:
                errors = flow_error(Stage.PROBE, err).as_errors()
            else:
                await self._async_set_discovery_id(advertisement.device_id)
                if advertisement.state not in _UNCLAIMED_TXT_STATES:
                    # As for zeroconf: a record left from an onboarding the device never
                    # finished (every answer lost, it rolled back) does not make it ours.
                    self._abort_if_device_owned(advertisement.device_id, host, port)
                self._device = TargetDevice(
                    device_id=advertisement.device_id,
                    model=advertisement.model,
                    host=host,
                    port=port,
                    own_name=advertisement.name or "",
                    chosen_name=str(user_input.get(CONF_NAME, "")).strip(),
                )
                self._pending_code = user_input[CONF_SETUP_CODE]
                return await self._async_start_onboarding()
        return self.async_show_form(
            step_id="manual_device",
            data_schema=self.add_suggested_values_to_schema(
                vol.Schema(
                    {
                        vol.Required(CONF_HOST): TextSelector(),
                        vol.Required(CONF_PORT, default=DEFAULT_DEVICE_PORT): PORT_SELECTOR,
                        vol.Required(CONF_SETUP_CODE): TextSelector(),
                        vol.Optional(CONF_NAME): TextSelector(),
                    }
                ),
                kept_input(user_input, errors),
            ),
            errors=errors,
        )
