"""Repair issues: a device offline (with its reason), hub credentials refused, Wi-Fi lost.

* ``device_offline_<id>`` -- the device's will said ``offline`` and it stayed so for
  ``coordinator.OFFLINE_ISSUE_DELAY``. The reason shown is the device's last diagnostic code
  (``iob/<id>/diag`` events may carry ``code``, one of the DiagnosticCodes) with its next step,
  or the generic checks. Deleted when the device is back.
* ``hub_refused_<entry>`` -- the broker or the account service refuses the household hub's
  credentials (the signed-in account lost its admin role, or the broker lost the hub). Fixable:
  the fix flow starts a new sign-in (reauth).
* ``wifi_lost_<id>`` -- the device lost the saved Wi-Fi and reopened provisioning for its
  owner (reported by the config flow's Bluetooth discovery through
  :func:`async_report_wifi_lost`). Fixable: the fix flow starts the config flow's Wi-Fi
  reconfiguration for that device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import voluptuous as vol
from homeassistant.components.repairs import RepairsFlow
from homeassistant.config_entries import (
    SOURCE_RECONFIGURE,
    ConfigEntry,
    ConfigEntryState,
    ConfigFlowContext,
)
from homeassistant.core import HomeAssistant, callback
from homeassistant.data_entry_flow import FlowResult, FlowResultType
from homeassistant.helpers import issue_registry as ir

from .const import CONF_DEVICE_ID, DOMAIN
from .helpers import device_entry_ids, find_device
from .iob_protocol import DiagnosticCode

if TYPE_CHECKING:
    from .hub import DeviceData

OFFLINE: str = "device_offline"
HUB_REFUSED: str = "hub_refused"
HOUSEHOLD_DELETED: str = "household_deleted"
WIFI_LOST: str = "wifi_lost"


def _issue_id(kind: str, subject: str) -> str:
    return f"{kind}_{subject}"


def diagnostic_code(data: DeviceData) -> DiagnosticCode | None:
    """The DiagnosticCode of the device's last diagnostic event, if it named one."""
    event = data.last_diagnostic or {}
    code = event.get("code")
    return DiagnosticCode(code) if isinstance(code, str) and code in DiagnosticCode else None


@callback
def async_create_offline_issue(
    hass: HomeAssistant, entry: ConfigEntry, device_id: str, name: str, data: DeviceData
) -> None:
    """The device has been offline for a while; say why when it told us."""
    code = diagnostic_code(data)
    ir.async_create_issue(
        hass,
        DOMAIN,
        _issue_id(OFFLINE, device_id),
        is_fixable=False,
        is_persistent=False,
        severity=ir.IssueSeverity.WARNING,
        translation_key="device_offline" if code is None else "device_offline_diagnosed",
        translation_placeholders={
            "name": name,
            "device_id": device_id,
            "code": code.value if code is not None else "",
            "message": code.message if code is not None else "",
            "next_step": code.next_step if code is not None else "",
        },
        data={"entry_id": entry.entry_id, "device_id": device_id},
    )


@callback
def async_delete_offline_issue(hass: HomeAssistant, device_id: str) -> None:
    """The device is back."""
    ir.async_delete_issue(hass, DOMAIN, _issue_id(OFFLINE, device_id))


@callback
def _async_create_entry_issue(
    hass: HomeAssistant, entry: ConfigEntry, kind: str, *, fixable: bool, **placeholders: str
) -> None:
    """An error issue about the household entry (its title is a placeholder)."""
    ir.async_create_issue(
        hass,
        DOMAIN,
        _issue_id(kind, entry.entry_id),
        is_fixable=fixable,
        is_persistent=False,
        severity=ir.IssueSeverity.ERROR,
        translation_key=kind,
        translation_placeholders={"title": entry.title, **placeholders},
        data={"entry_id": entry.entry_id},
    )


@callback
def async_create_hub_refused_issue(hass: HomeAssistant, entry: ConfigEntry, reason: str) -> None:
    """The hub's credentials are refused; signing in again fixes it."""
    _async_create_entry_issue(hass, entry, HUB_REFUSED, fixable=True, reason=reason)


@callback
def async_delete_hub_refused_issue(hass: HomeAssistant, entry: ConfigEntry) -> None:
    """The hub works again."""
    ir.async_delete_issue(hass, DOMAIN, _issue_id(HUB_REFUSED, entry.entry_id))


@callback
def async_create_household_deleted_issue(hass: HomeAssistant, entry: ConfigEntry) -> None:
    """The account service has no such household any more (deleted elsewhere)."""
    _async_create_entry_issue(hass, entry, HOUSEHOLD_DELETED, fixable=False)


@callback
def async_delete_entry_issues(hass: HomeAssistant, entry_id: str) -> None:
    """The household entry is removed: its issues (hub refused, household deleted) go too."""
    for kind in (HUB_REFUSED, HOUSEHOLD_DELETED):
        ir.async_delete_issue(hass, DOMAIN, _issue_id(kind, entry_id))


@callback
def async_report_wifi_lost(hass: HomeAssistant, device_id: str) -> bool:
    """Raise the Wi-Fi repair for a claimed device that reopened provisioning.

    For the config flow's Bluetooth (or zeroconf) discovery of a device that one of the
    household entries already has. Returns False when no loaded entry has the device.
    """
    device = find_device(hass, device_id)
    if device is None:
        return False
    entry = next(
        (
            entry
            for entry_id in device_entry_ids(device)
            if (entry := hass.config_entries.async_get_entry(entry_id)) is not None
            and entry.domain == DOMAIN
            and entry.state is ConfigEntryState.LOADED
        ),
        None,
    )
    if entry is None:
        return False
    ir.async_create_issue(
        hass,
        DOMAIN,
        _issue_id(WIFI_LOST, device_id),
        is_fixable=True,
        is_persistent=False,
        severity=ir.IssueSeverity.WARNING,
        translation_key=WIFI_LOST,
        translation_placeholders={"name": device.name_by_user or device.name or device_id},
        data={"entry_id": entry.entry_id, "device_id": device_id},
    )
    return True


@callback
def async_delete_wifi_lost_issue(hass: HomeAssistant, device_id: str) -> None:
    """The device is back on the network."""
    ir.async_delete_issue(hass, DOMAIN, _issue_id(WIFI_LOST, device_id))


@callback
def async_delete_device_issues(hass: HomeAssistant, device_id: str) -> None:
    """The device left the household: none of its issues apply any more."""
    async_delete_offline_issue(hass, device_id)
    async_delete_wifi_lost_issue(hass, device_id)


class HubRefusedRepairFlow(RepairsFlow):
    """Confirm, then start the entry's reauth (a sign-in with an owner or admin account)."""

    def __init__(self, entry_id: str) -> None:
        """Remember the entry."""
        self._entry_id = entry_id

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> FlowResult:
        """The fix starts here (with the issue as input): go to the confirmation."""
        del user_input
        return await self.async_step_confirm()

    async def async_step_confirm(self, user_input: dict[str, Any] | None = None) -> FlowResult:
        """Explain and confirm."""
        entry = self.hass.config_entries.async_get_entry(self._entry_id)
        if entry is None:
            return self.async_abort(reason="entry_removed")
        if user_input is not None:
            entry.async_start_reauth(self.hass)
            return self.async_create_entry(data={})
        return self.async_show_form(
            step_id="confirm",
            data_schema=vol.Schema({}),
            description_placeholders={"title": entry.title},
        )


class WifiLostRepairFlow(RepairsFlow):
    """Confirm, then start the config flow's Wi-Fi change for the device."""

    def __init__(self, entry_id: str, device_id: str) -> None:
        """Remember entry and device."""
        self._entry_id = entry_id
        self._device_id = device_id

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> FlowResult:
        """The fix starts here (with the issue as input): go to the confirmation."""
        del user_input
        return await self.async_step_confirm()

    async def async_step_confirm(self, user_input: dict[str, Any] | None = None) -> FlowResult:
        """Explain and confirm; the issue stays until the device is back online."""
        entry = self.hass.config_entries.async_get_entry(self._entry_id)
        if entry is None:
            return self.async_abort(reason="entry_removed")
        if user_input is not None:
            # The Wi-Fi change is the device entry's reconfigure flow.
            onboarded = next(
                (
                    candidate
                    for candidate in self.hass.config_entries.async_entries(DOMAIN)
                    if candidate.unique_id == self._device_id
                    and candidate.data.get(CONF_DEVICE_ID) == self._device_id
                ),
                None,
            )
            if onboarded is None:
                return self.async_abort(
                    reason="reconfigure_failed",
                    description_placeholders={"reason": "unknown_device"},
                )
            context = cast(
                "ConfigFlowContext",
                {"source": SOURCE_RECONFIGURE, "entry_id": onboarded.entry_id},
            )
            result = await self.hass.config_entries.flow.async_init(DOMAIN, context=context)
            if result["type"] is FlowResultType.ABORT:
                return self.async_abort(
                    reason="reconfigure_failed",
                    description_placeholders={"reason": str(result.get("reason"))},
                )
            return self.async_abort(reason="reconfigure_started")
        return self.async_show_form(step_id="confirm", data_schema=vol.Schema({}))


async def async_create_fix_flow(
    hass: HomeAssistant,
    issue_id: str,
    data: dict[str, str | int | float | None] | None,
) -> RepairsFlow:
    """The fix flow of a fixable issue."""
    del hass
    data = data or {}
    entry_id = str(data.get("entry_id"))
    if issue_id.startswith(f"{WIFI_LOST}_"):
        return WifiLostRepairFlow(entry_id, str(data.get("device_id")))
    if issue_id.startswith(f"{HUB_REFUSED}_"):
        return HubRefusedRepairFlow(entry_id)
    raise ValueError(f"unknown issue {issue_id}")
