"""Diagnostics of a household entry: hub state, devices as pushed, roles; secrets redacted."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Final

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.core import HomeAssistant

from .attempts import async_get_log
from .const import (
    CONF_ACCESS_TOKEN,
    CONF_DEVICE_ID,
    CONF_EMAIL,
    CONF_HOUSEHOLD_ID,
    CONF_REFRESH_TOKEN,
    CONF_REMEMBERED_WIFI,
    DEVICE_OWNER_SECRET,
    DEVICE_PUBLIC_KEY,
)
from .coordinator import IotOnboardConfigEntry
from .helpers import device_entries, is_device_entry
from .hub import DeviceMeta

TO_REDACT: Final = {
    CONF_ACCESS_TOKEN,
    CONF_REFRESH_TOKEN,
    CONF_EMAIL,
    # Sealed, and its key is not in the entry: redacted all the same (never shared).
    CONF_REMEMBERED_WIFI,
    DEVICE_OWNER_SECRET,
    DEVICE_PUBLIC_KEY,
    "password",
    "username",
}


def _meta(meta: DeviceMeta | None) -> dict[str, Any] | None:
    if meta is None:
        return None
    document = asdict(meta)
    document["commands"] = sorted(meta.commands)
    document["entities"] = list(document["entities"])
    return document


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: IotOnboardConfigEntry
) -> dict[str, Any]:
    """What support needs to see why a device or entity misbehaves (no secrets).

    ``onboarding_attempts``: the last attempts the setup dialog saw, by device, step by step
    in the device's ``iob-device attempts`` format (attempts.py; docs/support.md).
    """
    log = await async_get_log(hass)
    if is_device_entry(entry):
        attempts = log.attempts(entry.data[CONF_HOUSEHOLD_ID], entry.data[CONF_DEVICE_ID])
        return {
            "entry": {"data": async_redact_data(dict(entry.data), TO_REDACT)},
            "onboarding_attempts": async_redact_data(attempts, TO_REDACT),
        }
    runtime = entry.runtime_data
    coordinator = runtime.coordinator
    hub = coordinator.hub
    credentials = hub.credentials
    return {
        "entry": {
            "data": async_redact_data(dict(entry.data), TO_REDACT),
            "options": dict(entry.options),
        },
        # The devices this Home Assistant onboarded (each its own entry since version 2).
        "device_entries": {
            str(device.unique_id): async_redact_data(dict(device.data), TO_REDACT)
            for device in device_entries(hass, runtime.coordinator.household_id)
        },
        "hub": {
            "connected": hub.connected,
            "subscription_mode": hub.subscription_mode,
            "broker": async_redact_data(
                {
                    "host": credentials.host,
                    "port": credentials.port,
                    "tls": credentials.tls,
                    "username": credentials.username,
                    "password": credentials.password,
                },
                TO_REDACT,
            ),
        },
        "devices": {
            device_id: {
                "access": str(coordinator.access[device_id])
                if device_id in coordinator.access
                else None,
                "online": data.online,
                "meta": _meta(data.meta),
                "states": dict(sorted(data.states.items())),
                "last_diagnostic": data.last_diagnostic,
            }
            for device_id, data in sorted(hub.devices.items())
        },
        "members": [
            {
                "role": member.role.value,
                "linked_to_home_assistant_user": member.external_id is not None,
                "has_account": member.account_id is not None,
            }
            for member in runtime.roles.members
        ],
        "onboarding_attempts": async_redact_data(log.attempts(coordinator.household_id), TO_REDACT),
    }
