"""Home Assistant users as household members, and the role check behind every action.

The account service is the source of truth: a member whose ``external_id`` is
``ha-user:<HA user id>`` stands for that HA user (the owner's own member record may carry it
too). Until the owner's record names a user, Home Assistant's owner stands for it when the
household belongs to the account this entry signed in with: the person who set up Home
Assistant and created the household through it. Mapping any user to the owner (options) ends
that. Home Assistant reads the members at set-up and at every device sync, changes them only
through the account service (options flow), and checks the caller's role before every entity
action and every IoT Onboard action. The broker enforces the household's rights again (ACLs);
this check adds the per-person part the broker cannot see.

Who is the caller: ``context.user_id``. None means no person (an automation, a script run by a
trigger): the entry's ``automation_role`` option applies. A user without a member record gets
the ``unmapped_role`` option, except a Home Assistant administrator, who acts as the household's
``admin``: an HA administrator can map themselves in the options anyway (the options flow is
admin-only), so refusing them would only make the person who just onboarded a device unable to
switch it. Transferring still needs the mapped owner.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import ServiceValidationError

from .account_client import AccountClient, Member, Role
from .const import (
    CONF_ACCOUNT_ID,
    CONF_AUTOMATION_ROLE,
    CONF_UNMAPPED_ROLE,
    DEFAULT_AUTOMATION_ROLE,
    DEFAULT_UNMAPPED_ROLE,
    DOMAIN,
    EXTERNAL_ID_PREFIX,
)

if TYPE_CHECKING:
    from .account_client import DeviceAccess

_LOGGER = logging.getLogger(__name__)

RANK: Final = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}


class Action(StrEnum):
    """What a caller wants to do; each needs a minimum role."""

    CONTROL = "control"  # switch, press, set a number, identify
    MANAGE = "manage"  # share, release, factory reset, rotate credentials
    TRANSFER = "transfer"  # offer the device to another household


REQUIRED: Final = {
    Action.CONTROL: Role.MEMBER,
    Action.MANAGE: Role.ADMIN,
    Action.TRANSFER: Role.OWNER,
}


def external_id(user_id: str) -> str:
    """The member ``external_id`` standing for a Home Assistant user."""
    return EXTERNAL_ID_PREFIX + user_id


@dataclass(frozen=True, slots=True)
class Caller:
    """Who acts, and with which role (None: no role at all)."""

    kind: str  # "user", "unmapped", "ha_admin" or "automation"
    role: Role | None


class RoleManager:
    """The household's members as Home Assistant sees them, and the checks."""

    def __init__(
        self, hass: HomeAssistant, entry: ConfigEntry, account: AccountClient, household_id: str
    ) -> None:
        """Nothing is fetched until :meth:`async_refresh`."""
        self._hass = hass
        self._entry = entry
        self._account = account
        self._household_id = household_id
        self.members: list[Member] = []

    async def async_refresh(self) -> None:
        """Read the members from the account service (raises AccountServiceError)."""
        self.members = await self._account.members(self._household_id)

    def member_for_user(self, user_id: str) -> Member | None:
        """The member whose record links ``user_id``, if any."""
        wanted = external_id(user_id)
        return next((m for m in self.members if m.external_id == wanted), None)

    async def async_member(self, user_id: str) -> Member | None:
        """The member standing for ``user_id``: linked to it, or the owner for HA's owner."""
        linked = self.member_for_user(user_id)
        if linked is not None:
            return linked
        owner = next((m for m in self.members if m.role is Role.OWNER), None)
        if (
            owner is None
            or (owner.external_id or "").startswith(EXTERNAL_ID_PREFIX)
            or owner.account_id != self._entry.data.get(CONF_ACCOUNT_ID)
        ):
            return None
        ha_owner = await self._hass.auth.async_get_owner()
        return owner if ha_owner is not None and ha_owner.id == user_id else None

    def user_roles(self) -> dict[str, Role]:
        """HA user id → role, for every mapped user."""
        return {
            m.external_id.removeprefix(EXTERNAL_ID_PREFIX): m.role
            for m in self.members
            if m.external_id is not None and m.external_id.startswith(EXTERNAL_ID_PREFIX)
        }

    def _option_role(self, option: str, default: str) -> Role | None:
        value = self._entry.options.get(option, default)
        return Role(value) if value in Role.__members__.values() else None

    async def async_caller(self, context: Context) -> Caller:
        """Who is acting in ``context``."""
        if context.user_id is None:
            return Caller(
                "automation", self._option_role(CONF_AUTOMATION_ROLE, DEFAULT_AUTOMATION_ROLE)
            )
        member = await self.async_member(context.user_id)
        if member is not None:
            return Caller("user", member.role)
        unmapped = self._option_role(CONF_UNMAPPED_ROLE, DEFAULT_UNMAPPED_ROLE)
        user = await self._hass.auth.async_get_user(context.user_id)
        if (
            user is not None
            and user.is_admin
            and (unmapped is None or RANK[unmapped] < RANK[Role.ADMIN])
        ):
            return Caller("ha_admin", Role.ADMIN)
        return Caller("unmapped", unmapped)

    async def async_check(
        self,
        context: Context,
        action: Action,
        *,
        device_name: str,
        device_access: DeviceAccess | None = None,
    ) -> None:
        """Raise a translated ServiceValidationError unless the caller may do ``action``.

        ``device_access`` is the household's access to the device: a read-only share allows
        no control whatever the caller's role (the broker would refuse the command anyway),
        and only an owned device can be managed or transferred.
        """
        caller = await self.async_caller(context)
        needed = REQUIRED[action]
        if caller.role is None or RANK[caller.role] < RANK[needed]:
            _LOGGER.debug("Refused %s on %s for %s (%s)", action, device_name, caller, needed)
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key=f"permission_denied_{caller.kind}",
                translation_placeholders={
                    "action": action.value,
                    "device": device_name,
                    "role": caller.role.value if caller.role is not None else "none",
                    "needed": needed.value,
                },
            )
        if device_access is None:
            return
        if action is Action.CONTROL and device_access == "read":
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="device_read_only",
                translation_placeholders={"device": device_name},
            )
        if action is not Action.CONTROL and device_access != "owner":
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="device_not_owned",
                translation_placeholders={"device": device_name},
            )

    async def async_set_user_role(self, user_id: str, display_name: str, role: Role | None) -> None:
        """Map ``user_id`` to ``role`` at the account service (None: unmap).

        ``owner`` links the household owner's member record to the user (a household has
        exactly one owner; the role itself cannot be granted). Raises AccountServiceError.
        """
        household = self._household_id
        current = self.member_for_user(user_id)
        if role is Role.OWNER:
            owner = next(m for m in self.members if m.role is Role.OWNER)
            if current is not None and current.member_id != owner.member_id:
                await self._account.remove_member(household, current.member_id)
            if owner.external_id != external_id(user_id):
                await self._account.update_member(
                    household, owner.member_id, external_id=external_id(user_id)
                )
        elif role is None:
            if current is not None:
                await self._account.remove_member(household, current.member_id)
        elif current is None:
            await self._account.add_member(
                household, external_id=external_id(user_id), display_name=display_name, role=role
            )
        elif current.role is not role:
            await self._account.update_member(household, current.member_id, role=role)
        await self.async_refresh()
