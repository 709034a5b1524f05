"""Options of a household entry: who may do what, and forgetting the remembered Wi-Fi.

``policies``: the role of Home Assistant users who are not household members, and the role of
automations (actions without a user). ``user_role``: map one Home Assistant user to a household
role; the change is made at the account service (the source of truth) at once, and checked by
Home Assistant from the next action on. ``forget_wifi`` (offered while the household remembers
a Wi-Fi): delete the sealed Wi-Fi from the entry and destroy its key (wifi_memory.py). Reached
through ``async_get_options_flow`` in
config_flow.py.
"""

from __future__ import annotations

from typing import Any, Final

import voluptuous as vol
from homeassistant.config_entries import ConfigEntryState, ConfigFlowResult, OptionsFlow
from homeassistant.core import Context
from homeassistant.helpers.selector import (
    SelectOptionDict,
    SelectSelector,
    SelectSelectorConfig,
    SelectSelectorMode,
)

from . import wifi_memory
from .account_client import AccountServiceError, Role
from .const import (
    CONF_AUTOMATION_ROLE,
    CONF_REMEMBERED_WIFI,
    CONF_UNMAPPED_ROLE,
    DEFAULT_AUTOMATION_ROLE,
    DEFAULT_UNMAPPED_ROLE,
)
from .coordinator import IotOnboardConfigEntry

CONF_USER: Final = "user"
CONF_ROLE: Final = "role"
ROLE_NONE: Final = "none"
_POLICY_ROLES: Final = [Role.VIEWER.value, Role.MEMBER.value, Role.ADMIN.value]
_USER_ROLES: Final = [ROLE_NONE, *(role.value for role in Role)]
#: How a user's label shows their role, per ``Caller.kind``.
_ROLE_NOTES: Final = {
    "user": "{role}",
    "ha_admin": "{role} (Home Assistant administrator, not a member)",
    "unmapped": "{role} (not a member)",
}


def _role_selector(options: list[str]) -> SelectSelector:
    return SelectSelector(
        SelectSelectorConfig(
            options=options, translation_key="role", mode=SelectSelectorMode.DROPDOWN
        )
    )


class IotOnboardOptionsFlow(OptionsFlow):
    """Roles: policies for unmapped users and automations, and per-user roles."""

    @property
    def _entry(self) -> IotOnboardConfigEntry:
        entry: IotOnboardConfigEntry = self.config_entry
        return entry

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Choose what to change."""
        del user_input
        options = ["policies", "user_role"]
        if CONF_REMEMBERED_WIFI in self._entry.data:
            options.append("forget_wifi")
        return self.async_show_menu(step_id="init", menu_options=options)

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
