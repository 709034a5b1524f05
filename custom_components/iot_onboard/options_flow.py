"""Options of a household entry: who may do what, other tools, the household itself.

``policies``: the role of Home Assistant users who are not household members, and the role of
automations (actions without a user). ``user_role``: map one Home Assistant user to a household
role; the change is made at the account service (the source of truth) at once, and checked by
Home Assistant from the next action on. ``forget_wifi`` (offered while the household remembers
a Wi-Fi): delete the sealed Wi-Fi from the entry and destroy its key (wifi_memory.py).
``mqtt_access``: the household's MQTT credentials for other tools (Node-RED, mosquitto_sub):
list, create (the password is shown on the result screen only, never stored), revoke.
``hand_over`` and ``delete_household`` (the owner only): make another member with an account
the owner, or delete the household (its name typed again); after a deletion the household's
entries are removed. ``export_account`` (any entry): the entry's account's data from the
account service, written as a private JSON file in the config directory (account_lifecycle.py).
``delete_account``: says what will happen and asks for the account's password; refused up front
while the account owns a household another account belongs to (hand it over or delete it
first); afterwards every household entry of the account is removed. Reached through
``async_get_options_flow`` in config_flow.py.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Final

import voluptuous as vol
from homeassistant.config_entries import ConfigEntryState, ConfigFlowResult, OptionsFlow
from homeassistant.core import Context
from homeassistant.helpers.selector import (
    SelectOptionDict,
    SelectSelector,
    SelectSelectorConfig,
    SelectSelectorMode,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)
from homeassistant.util import dt as dt_util

from . import account_lifecycle, wifi_memory
from .account_client import (
    AccountConnectionError,
    AccountServiceError,
    AuthenticationError,
    ConfirmationMismatchError,
    DeviceAccess,
    ForbiddenError,
    Household,
    HouseholdDeletedError,
    HouseholdNotFoundError,
    InvalidRequestError,
    MqttAccess,
    MqttAccessSummary,
    MqttCredentialLimitError,
    MqttCredentialNotFoundError,
    OwnerHandoverRequiredError,
    PasswordMismatchError,
    RateLimitedError,
    Role,
    ServiceUnavailableError,
)
from .const import (
    CONF_ACCOUNT_ID,
    CONF_AUTOMATION_ROLE,
    CONF_EMAIL,
    CONF_HOUSEHOLD_ID,
    CONF_REMEMBERED_WIFI,
    CONF_UNMAPPED_ROLE,
    DEFAULT_AUTOMATION_ROLE,
    DEFAULT_UNMAPPED_ROLE,
)
from .coordinator import IotOnboardConfigEntry, IotOnboardData
from .flow_errors import FIELD_BASE, FIELD_PASSWORD, wrong_fields

_LOGGER = logging.getLogger(__name__)

CONF_USER: Final = "user"
CONF_ROLE: Final = "role"
ROLE_NONE: Final = "none"
CONF_LABEL: Final = "label"
CONF_ACCESS: Final = "access"
CONF_CREDENTIAL: Final = "credential"
CONF_MEMBER: Final = "member"
CONF_CONFIRM_NAME: Final = "confirm_name"
CONF_PASSWORD: Final = FIELD_PASSWORD
#: How other tools read the household's devices (topics, Node-RED, mosquitto_sub, Telegraf).
MQTT_TOOLS_DOCS: Final = (
    "https://github.com/iot-onboard/iot-onboard/blob/main/docs/mqtt.md"
    "#other-mqtt-tools-node-red-telegraf"
)
#: A failed account-service call → its key in ``options.error`` and ``options.abort`` (most
#: specific first; a refusal of the role is the step's own key, see :func:`_refusal`).
_REFUSALS: Final[tuple[tuple[type[AccountServiceError], str], ...]] = (
    (AccountConnectionError, "cannot_connect"),
    (ServiceUnavailableError, "cannot_connect"),
    (RateLimitedError, "rate_limited"),
    (HouseholdNotFoundError, "household_gone"),
    (HouseholdDeletedError, "household_gone"),
    (AuthenticationError, "auth_expired"),
)
_POLICY_ROLES: Final = [Role.VIEWER.value, Role.MEMBER.value, Role.ADMIN.value]
_USER_ROLES: Final = [ROLE_NONE, *(role.value for role in Role)]
#: How a user's label shows their role, per ``Caller.kind``.
_ROLE_NOTES: Final = {
    "user": "{role}",
    "ha_admin": "{role} (Home Assistant administrator, not a member)",
    "unmapped": "{role} (not a member)",
}


def _refusal(err: AccountServiceError, forbidden: str) -> str:
    """What the user sees for ``err``; ``forbidden`` names who may do it (a 403)."""
    if isinstance(err, ForbiddenError):
        return forbidden
    return next((key for cls, key in _REFUSALS if isinstance(err, cls)), "service_refused")


def _credential_line(credential: MqttAccessSummary) -> str:
    """One credential as listed: label, access, username, when it was made (local time)."""
    created = dt_util.as_local(dt_util.utc_from_timestamp(credential.created_at))
    return (
        f"{credential.label} ({credential.access.value}, {credential.username}, "
        f"{created:%Y-%m-%d %H:%M})"
    )


def _select(options: dict[str, str]) -> SelectSelector:
    return SelectSelector(
        SelectSelectorConfig(
            options=[
                SelectOptionDict(value=value, label=label) for value, label in options.items()
            ],
            mode=SelectSelectorMode.DROPDOWN,
        )
    )


def _bullets(lines: list[str]) -> str:
    """Lines as a Markdown list after a colon in a description; "none." when empty."""
    return "".join(f"\n- {line}" for line in lines) if lines else " none."


@dataclass(slots=True)
class _AccountEffects:
    """What deleting the account would do, as the deletion step lists it."""

    #: Households the account owns alone (or with Home Assistant users only): deleted.
    deleted: list[str] = field(default_factory=list)
    #: Households the account belongs to without owning them: it leaves them.
    left: list[str] = field(default_factory=list)
    #: Households the account owns that other accounts belong to: the deletion is refused.
    blocking: list[str] = field(default_factory=list)


def _role_selector(options: list[str]) -> SelectSelector:
    return SelectSelector(
        SelectSelectorConfig(
            options=options, translation_key="role", mode=SelectSelectorMode.DROPDOWN
        )
    )


class IotOnboardOptionsFlow(OptionsFlow):
    """Roles, other tools' MQTT access, and the household's hand-over and deletion."""

    #: The loaded entry's account client and coordinator, taken when a step that needs them
    #: opens (the entry may be unloaded while a form is open; these objects stay usable).
    _runtime: IotOnboardData
    #: The household as the account service names it (hand-over, deletion).
    _household: Household
    #: credential id → its listed line (revoke).
    _tools: dict[str, str]
    #: The credential chosen for revoking.
    _revoking: str
    #: member id → its label (hand-over).
    _candidates: dict[str, str]
    #: What deleting the account does (listed on its step).
    _effects: _AccountEffects

    @property
    def _entry(self) -> IotOnboardConfigEntry:
        entry: IotOnboardConfigEntry = self.config_entry
        return entry

    @property
    def _household_id(self) -> str:
        household_id: str = self._entry.data[CONF_HOUSEHOLD_ID]
        return household_id

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Choose what to change."""
        del user_input
        options = ["policies", "user_role"]
        if CONF_REMEMBERED_WIFI in self._entry.data:
            options.append("forget_wifi")
        options += [
            "mqtt_access",
            "hand_over",
            "delete_household",
            "export_account",
            "delete_account",
        ]
        return self.async_show_menu(step_id="init", menu_options=options)

    def _take_runtime(self) -> bool:
        """Keep the entry's runtime for the next steps; False while it is not loaded."""
        if self._entry.state is not ConfigEntryState.LOADED:
            return False
        self._runtime = self._entry.runtime_data
        return True

    def _abort_refused(self, err: AccountServiceError, forbidden: str) -> ConfigFlowResult:
        return self.async_abort(
            reason=_refusal(err, forbidden), description_placeholders={"error": str(err)}
        )

    def _form(
        self,
        step_id: str,
        schema: vol.Schema,
        user_input: dict[str, Any] | None,
        errors: dict[str, str],
        placeholders: dict[str, str],
    ) -> ConfigFlowResult:
        """A form shown (again): what was typed is kept but the fields an error blames."""
        kept = {k: v for k, v in (user_input or {}).items() if k not in wrong_fields(errors)}
        return self.async_show_form(
            step_id=step_id,
            data_schema=self.add_suggested_values_to_schema(schema, kept),
            errors=errors,
            description_placeholders=placeholders,
        )

    # --- MQTT credentials for other tools ---------------------------------------------------

    async def async_step_mqtt_access(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """The household's credentials for other tools; create one, or revoke one."""
        del user_input
        if not self._take_runtime():
            return self.async_abort(reason="not_loaded")
        try:
            listed = await self._runtime.account.mqtt_credentials(self._household_id)
        except AccountServiceError as err:
            return self._abort_refused(err, "mqtt_forbidden")
        self._tools = {tool.credential_id: _credential_line(tool) for tool in listed}
        options = ["mqtt_create", "mqtt_revoke"] if listed else ["mqtt_create"]
        return self.async_show_menu(
            step_id="mqtt_access",
            menu_options=options,
            description_placeholders={
                "count": str(len(listed)),
                "credentials": "".join(f"\n- {line}" for line in self._tools.values()),
                "docs": MQTT_TOOLS_DOCS,
            },
        )

    def _control_makes_sense(self) -> bool:
        """Control is offered unless every device of the household is a read-only share.

        With no device yet it is offered: a credential follows the devices claimed later.
        """
        access = self._runtime.coordinator.access
        return not access or any(a is not DeviceAccess.READ for a in access.values())

    async def async_step_mqtt_create(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """A label and read or control; the credential is shown on the next screen, once."""
        errors: dict[str, str] = {}
        placeholders = {"error": ""}
        if user_input is not None:
            try:
                created = await self._runtime.account.create_mqtt_credential(
                    self._household_id, user_input[CONF_LABEL], MqttAccess(user_input[CONF_ACCESS])
                )
            except MqttCredentialLimitError:
                errors[FIELD_BASE] = "mqtt_credential_limit"
            except InvalidRequestError as err:
                errors[CONF_LABEL] = "invalid_label"
                placeholders["error"] = str(err)
            except AccountServiceError as err:
                errors[FIELD_BASE] = _refusal(err, "mqtt_forbidden")
                placeholders["error"] = str(err)
            else:
                mqtt = created.mqtt
                return self.async_abort(
                    reason="mqtt_created",
                    description_placeholders={
                        "label": created.label,
                        "access": created.access.value,
                        "host": mqtt.host,
                        "port": str(mqtt.port),
                        "tls": str(mqtt.tls).lower(),
                        "username": mqtt.username,
                        "password": mqtt.password,
                        "client_id": mqtt.client_id or mqtt.username,
                        "docs": MQTT_TOOLS_DOCS,
                    },
                )
        accesses = [MqttAccess.READ.value]
        if self._control_makes_sense():
            accesses.append(MqttAccess.CONTROL.value)
        schema = vol.Schema(
            {
                vol.Required(CONF_LABEL): TextSelector(),
                vol.Required(CONF_ACCESS, default=MqttAccess.READ.value): SelectSelector(
                    SelectSelectorConfig(
                        options=accesses,
                        translation_key="mqtt_access",
                        mode=SelectSelectorMode.LIST,
                    )
                ),
            }
        )
        return self._form("mqtt_create", schema, user_input, errors, placeholders)

    async def async_step_mqtt_revoke(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Choose the credential to revoke."""
        if user_input is not None:
            self._revoking = user_input[CONF_CREDENTIAL]
            return await self.async_step_mqtt_revoke_confirm()
        schema = vol.Schema({vol.Required(CONF_CREDENTIAL): _select(self._tools)})
        return self.async_show_form(step_id="mqtt_revoke", data_schema=schema)

    async def async_step_mqtt_revoke_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Revoke it: a tool using it is disconnected at once and cannot connect again."""
        errors: dict[str, str] = {}
        placeholders = {"credential": self._tools[self._revoking], "error": ""}
        if user_input is not None:
            try:
                # Revoked meanwhile (another screen, the API): what the user wants anyway.
                with contextlib.suppress(MqttCredentialNotFoundError):
                    await self._runtime.account.revoke_mqtt_credential(
                        self._household_id, self._revoking
                    )
            except AccountServiceError as err:
                errors[FIELD_BASE] = _refusal(err, "mqtt_forbidden")
                placeholders["error"] = str(err)
            else:
                return self.async_abort(
                    reason="mqtt_revoked", description_placeholders=placeholders
                )
        return self._form("mqtt_revoke_confirm", vol.Schema({}), None, errors, placeholders)

    # --- the household: hand-over and deletion (the owner only) -----------------------------

    async def _async_open_as_owner(self, *, members: bool = False) -> ConfigFlowResult | None:
        """Take the account and the household; an abort unless the account is its owner.

        With ``members``: the members with an account who could own it (``_candidates``).
        """
        if not self._take_runtime():
            return self.async_abort(reason="not_loaded")
        try:
            households = await self._runtime.account.households()
            listed = await self._runtime.account.members(self._household_id) if members else []
        except AccountServiceError as err:
            return self._abort_refused(err, "owner_only")
        self._candidates = {
            m.member_id: f"{m.display_name} ({m.role.value})"
            for m in listed
            if m.account_id is not None and m.role is not Role.OWNER
        }
        ours = next((h for h in households if h.household_id == self._household_id), None)
        if ours is None:
            return self.async_abort(reason="household_gone")
        self._household = ours
        if ours.role is not Role.OWNER:
            return self.async_abort(reason="owner_only")
        return None

    async def async_step_hand_over(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Make another member with an account the owner; this account becomes an admin."""
        errors: dict[str, str] = {}
        placeholders = {"household": "", "error": ""}
        if user_input is None:
            if (refused := await self._async_open_as_owner(members=True)) is not None:
                return refused
            if not self._candidates:
                return self.async_abort(reason="no_hand_over_candidate")
        else:
            member_id: str = user_input[CONF_MEMBER]
            try:
                await self._runtime.account.hand_over(self._household_id, member_id)
            except AccountServiceError as err:
                errors[FIELD_BASE] = _refusal(err, "owner_only")
                placeholders["error"] = str(err)
            else:
                # Roles come from the member list: re-read it (quietly, debounced).
                await self._runtime.coordinator.async_request_sync()
                return self.async_abort(
                    reason="handed_over",
                    description_placeholders={
                        "household": self._household.name,
                        "member": self._candidates[member_id],
                    },
                )
        placeholders["household"] = self._household.name
        schema = vol.Schema({vol.Required(CONF_MEMBER): _select(self._candidates)})
        return self._form("hand_over", schema, user_input, errors, placeholders)

    async def async_step_delete_household(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Delete the household at the account service (its name typed again), then its entries."""
        errors: dict[str, str] = {}
        placeholders = {"household": "", "error": ""}
        if user_input is None:
            if (refused := await self._async_open_as_owner()) is not None:
                return refused
        else:
            try:
                deleted = await self._runtime.account.delete_household(
                    self._household_id, user_input[CONF_CONFIRM_NAME]
                )
            except ConfirmationMismatchError:
                errors[CONF_CONFIRM_NAME] = "confirmation_mismatch"
            except AccountServiceError as err:
                errors[FIELD_BASE] = _refusal(err, "owner_only")
                placeholders["error"] = str(err)
            else:
                _LOGGER.info(
                    "Household %s deleted at the account service (%d device(s) released); "
                    "removing its entries",
                    self._household.name,
                    deleted.devices_released,
                )
                await account_lifecycle.async_remove_household_entries(self.hass, [self._entry])
                return self.async_abort(
                    reason="household_deleted",
                    description_placeholders={
                        "household": self._household.name,
                        "devices": str(deleted.devices_released),
                    },
                )
        placeholders["household"] = self._household.name
        schema = vol.Schema({vol.Required(CONF_CONFIRM_NAME): TextSelector()})
        return self._form("delete_household", schema, user_input, errors, placeholders)

    # --- the account: export and deletion ----------------------------------------------------

    async def async_step_export_account(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Say what the export holds and where it goes; on submit fetch it and write the file."""
        errors: dict[str, str] = {}
        placeholders = {
            "email": self._entry.data.get(CONF_EMAIL, ""),
            "directory": self.hass.config.config_dir,
            "error": "",
        }
        if user_input is None:
            if not self._take_runtime():
                return self.async_abort(reason="not_loaded")
        else:
            try:
                export = await self._runtime.account.export_account()
                path = await account_lifecycle.async_write_export(self.hass, export)
            except AccountServiceError as err:
                errors[FIELD_BASE] = _refusal(err, "service_refused")
                placeholders["error"] = str(err)
            except OSError as err:
                errors[FIELD_BASE] = "export_not_written"
                placeholders["error"] = str(err)
            else:
                _LOGGER.info("Account data exported to %s", path)
                return self.async_abort(
                    reason="account_exported",
                    description_placeholders={
                        "path": str(path),
                        "email": export.account.email,
                        "households": str(len(export.memberships)),
                        "events": str(len(export.audit_events)),
                    },
                )
        return self._form("export_account", vol.Schema({}), None, errors, placeholders)

    async def _async_account_effects(self) -> _AccountEffects:
        """The account's households, sorted by what deleting the account does to each."""
        account = self._runtime.account
        own_id = self._entry.data.get(CONF_ACCOUNT_ID)
        effects = _AccountEffects()
        for household in await account.households():
            if household.role is not Role.OWNER:
                effects.left.append(f"{household.name} ({household.role.value})")
                continue
            members = await account.members(household.household_id)
            others = [m.display_name for m in members if m.account_id not in {None, own_id}]
            if others:
                effects.blocking.append(f"{household.name} (also: {', '.join(others)})")
                continue
            devices = await account.devices(household.household_id)
            owned = sum(1 for device in devices if device.access is DeviceAccess.OWNER)
            effects.deleted.append(f"{household.name} ({owned} device(s) released)")
        return effects

    async def _async_open_delete_account(self) -> ConfigFlowResult | None:
        """Take the runtime and what a deletion would do; an abort when it cannot be done."""
        if account_lifecycle.is_provisioned(self._entry):
            return self.async_abort(
                reason="account_provisioned",
                description_placeholders={"household": self._entry.title},
            )
        if not self._take_runtime():
            return self.async_abort(reason="not_loaded")
        try:
            self._effects = await self._async_account_effects()
        except AccountServiceError as err:
            return self._abort_refused(err, "service_refused")
        if self._effects.blocking:
            return self.async_abort(
                reason="owner_handover_required",
                description_placeholders={"households": _bullets(self._effects.blocking)},
            )
        return None

    async def async_step_delete_account(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Delete the entry's account (its password entered again), then its entries here."""
        errors: dict[str, str] = {}
        placeholders = {"email": self._entry.data.get(CONF_EMAIL, ""), "error": ""}
        if user_input is None:
            if (refused := await self._async_open_delete_account()) is not None:
                return refused
        else:
            try:
                await self._runtime.account.delete_account(user_input[CONF_PASSWORD])
            except PasswordMismatchError:
                errors[CONF_PASSWORD] = "password_mismatch"
            except OwnerHandoverRequiredError:
                # Another account joined a household this one owns while the form was open:
                # look again, and name the households to hand over (as when opening).
                return await self.async_step_delete_account()
            except AccountServiceError as err:
                errors[FIELD_BASE] = _refusal(err, "service_refused")
                placeholders["error"] = str(err)
            else:
                return await self._async_account_deleted()
        entries = account_lifecycle.account_entries(self.hass, self._entry)
        placeholders |= {
            "deleted": _bullets(self._effects.deleted),
            "left": _bullets(self._effects.left),
            "entries": _bullets([entry.title for entry in entries]),
        }
        schema = vol.Schema(
            {
                vol.Required(CONF_PASSWORD): TextSelector(
                    TextSelectorConfig(
                        type=TextSelectorType.PASSWORD, autocomplete="current-password"
                    )
                )
            }
        )
        # Never pre-filled: a password is not sent back to the browser.
        return self._form("delete_account", schema, None, errors, placeholders)

    async def _async_account_deleted(self) -> ConfigFlowResult:
        """The account is gone at the service: remove every household entry signed in to it."""
        entries = account_lifecycle.account_entries(self.hass, self._entry)
        email = self._entry.data.get(CONF_EMAIL, "")
        _LOGGER.info(
            "Account deleted at the account service (%d household(s) deleted with it); "
            "removing its household entries: %s",
            len(self._effects.deleted),
            ", ".join(entry.title for entry in entries),
        )
        await account_lifecycle.async_remove_household_entries(self.hass, entries)
        return self.async_abort(
            reason="account_deleted",
            description_placeholders={
                "email": email,
                "deleted": _bullets(self._effects.deleted),
                "left": _bullets(self._effects.left),
                "entries": _bullets([entry.title for entry in entries]),
            },
        )

    async def async_step_forget_wifi(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Delete the remembered Wi-Fi: the sealed copy in the entry and the key."""
        del user_input
        await wifi_memory.async_forget(self.hass, self._entry)
        return self.async_abort(
            reason="wifi_forgotten", description_placeholders={"household": self._entry.title}
        )

    async def async_step_policies(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Unmapped users and automations."""
        if user_input is not None:
            return self.async_create_entry(data={**self._entry.options, **user_input})
        schema = vol.Schema(
            {
                vol.Required(CONF_UNMAPPED_ROLE): _role_selector(_POLICY_ROLES),
                vol.Required(CONF_AUTOMATION_ROLE): _role_selector(_POLICY_ROLES),
            }
        )
        current = {
            CONF_UNMAPPED_ROLE: self._entry.options.get(CONF_UNMAPPED_ROLE, DEFAULT_UNMAPPED_ROLE),
            CONF_AUTOMATION_ROLE: self._entry.options.get(
                CONF_AUTOMATION_ROLE, DEFAULT_AUTOMATION_ROLE
            ),
        }
        return self.async_show_form(
            step_id="policies", data_schema=self.add_suggested_values_to_schema(schema, current)
        )

    async def async_step_user_role(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Map one Home Assistant user to a household role (at the account service)."""
        entry = self._entry
        if entry.state is not ConfigEntryState.LOADED:
            return self.async_abort(reason="not_loaded")
        roles = entry.runtime_data.roles
        users = {
            user.id: user.name or user.id
            for user in await self.hass.auth.async_get_users()
            if not user.system_generated and user.is_active
        }
        errors: dict[str, str] = {}
        placeholders: dict[str, str] = {"error": ""}
        if user_input is not None:
            user_id: str = user_input[CONF_USER]
            choice: str = user_input[CONF_ROLE]
            role = None if choice == ROLE_NONE else Role(choice)
            current = await roles.async_member(user_id)
            if user_id not in users:
                errors[CONF_USER] = "unknown_user"
            elif current is not None and current.role is Role.OWNER and role is not Role.OWNER:
                errors[CONF_ROLE] = "owner_fixed"
            else:
                try:
                    await roles.async_set_user_role(user_id, users[user_id], role)
                except AccountServiceError as err:
                    errors["base"] = "account_refused"
                    placeholders["error"] = str(err)
                else:
                    return self.async_create_entry(data=dict(entry.options))
        schema = vol.Schema(
            {
                vol.Required(CONF_USER): SelectSelector(
                    SelectSelectorConfig(
                        options=[
                            SelectOptionDict(value=user_id, label=await self._label(user_id, name))
                            for user_id, name in sorted(users.items(), key=lambda item: item[1])
                        ],
                        mode=SelectSelectorMode.DROPDOWN,
                    )
                ),
                vol.Required(CONF_ROLE): _role_selector(_USER_ROLES),
            }
        )
        return self.async_show_form(
            step_id="user_role",
            data_schema=self.add_suggested_values_to_schema(schema, user_input or {}),
            errors=errors,
            description_placeholders=placeholders,
        )

    async def _label(self, user_id: str, name: str) -> str:
        """The user and the role they act with now (what the role check would say)."""
        caller = await self._entry.runtime_data.roles.async_caller(Context(user_id=user_id))
        role = caller.role.value if caller.role is not None else "no role"
        return f"{name} — {_ROLE_NOTES[caller.kind].format(role=role)}"
