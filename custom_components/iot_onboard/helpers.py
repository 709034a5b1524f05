"""Turn hub and account service errors into translated Home Assistant errors."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate

from homeassistant.config_entries import SOURCE_IGNORE, ConfigEntry
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er

from .account_client import (
    AccountApiError,
    AccountConnectionError,
    AccountServiceError,
    AuthenticationError,
    ForbiddenError,
    NotFoundError,
)
from .const import CONF_ACCOUNT_URL, CONF_DEVICE_ID, CONF_HOUSEHOLD_ID, DOMAIN
from .hub import HubCommandError, HubError, HubNotConnectedError


def translate_error(err: Exception) -> HomeAssistantError:
    """The translated error a user sees for a hub or account service failure."""
    key: str
    placeholders: dict[str, str] = {"error": str(err)}
    match err:
        case HubNotConnectedError():
            key = "hub_not_connected"
        case HubCommandError():
            key = "command_failed"
        case HubError():
            key = "hub_error"
        case AuthenticationError():
            key = "auth_expired"
        case ForbiddenError():
            key = "account_forbidden"
            placeholders["error"] = err.message
        case NotFoundError():
            key = "account_not_found"
        case AccountApiError():
            key = "account_refused"
            placeholders["error"] = err.message or err.code
        case AccountConnectionError():
            key = "account_unreachable"
        case _:
            key = "account_error"
    return HomeAssistantError(
        translation_domain=DOMAIN, translation_key=key, translation_placeholders=placeholders
    )


def iot_onboard_exception_handler[EntityT, **P](
    func: Callable[Concatenate[EntityT, P], Coroutine[Any, Any, Any]],
) -> Callable[Concatenate[EntityT, P], Coroutine[Any, Any, None]]:
    """Decorate an entity action: library errors become translated HomeAssistantErrors."""

    async def handler(self: EntityT, /, *args: P.args, **kwargs: P.kwargs) -> None:
        try:
            await func(self, *args, **kwargs)
        except (HubError, AccountServiceError) as err:
            raise translate_error(err) from err

    return handler


def find_device(
    hass: HomeAssistant, device_id: str, entry_id: str | None = None
) -> dr.DeviceEntry | None:
    """The registry device of an IoT Onboard device id (of ``entry_id`` when given).

    Newer Home Assistant keeps identifiers unique per config entry only and deprecates
    ``async_get_device``; older versions have only that.
    """
    registry = dr.async_get(hass)
    identifier = (DOMAIN, device_id)
    by_identifier = getattr(registry, "async_get_device_by_identifier", None)
    if by_identifier is None:
        return registry.async_get_device(identifiers={identifier})
    if entry_id is not None:
        found: dr.DeviceEntry | None = by_identifier(identifier, entry_id)
        return found
    devices: list[dr.DeviceEntry] = getattr(registry, "async_get_devices")(  # noqa: B009
        identifiers={identifier}
    )
    return devices[0] if devices else None


def device_entry_ids(device: dr.DeviceEntry) -> list[str]:
    """The config entries a registry device belongs to, on every supported Home Assistant.

    Newer Home Assistant gives a device a single ``config_entry_id`` and deprecates the
    ``config_entries`` set that older versions have only.
    """
    single = getattr(device, "config_entry_id", None)
    if isinstance(single, str):
        return [single]
    return sorted(getattr(device, "config_entries", ()))


def move_device(hass: HomeAssistant, device: dr.DeviceEntry, to_entry_id: str) -> None:
    """Move a registry device and its entities (area, names, ids kept) to ``to_entry_id``.

    Newer Home Assistant gives a device one config entry and moves it with
    ``new_config_entry_id`` (adding and removing entries is deprecated there); older versions
    only know adding the new entry and removing the others.
    """
    # The entities first: a device leaving an entry takes that entry's entities with it.
    entities = er.async_get(hass)
    for entity in er.async_entries_for_device(entities, device.id, include_disabled_entities=True):
        if entity.platform == DOMAIN and entity.config_entry_id != to_entry_id:
            entities.async_update_entity(entity.entity_id, config_entry_id=to_entry_id)
    registry = dr.async_get(hass)
    if "new_config_entry_id" in inspect.signature(registry.async_update_device).parameters:
        registry.async_update_device(device.id, new_config_entry_id=to_entry_id)  # type: ignore[call-arg,unused-ignore]
        return
    registry.async_update_device(device.id, add_config_entry_id=to_entry_id)
    for entry_id in device_entry_ids(device):
        if entry_id != to_entry_id:
            registry.async_update_device(device.id, remove_config_entry_id=entry_id)


def is_device_entry(entry: ConfigEntry) -> bool:
    """A device entry (one per onboarded device), not a household entry."""
    return CONF_DEVICE_ID in entry.data


def household_entries(hass: HomeAssistant) -> list[ConfigEntry]:
    """The household entries (the hubs), ignored discoveries left out."""
    return [
        entry
        for entry in hass.config_entries.async_entries(DOMAIN, include_ignore=False)
        if CONF_ACCOUNT_URL in entry.data
    ]


def device_entries(hass: HomeAssistant, household_id: str | None = None) -> list[ConfigEntry]:
    """The device entries (of ``household_id`` when given)."""
    return [
        entry
        for entry in hass.config_entries.async_entries(DOMAIN, include_ignore=False)
        if is_device_entry(entry)
        and (household_id is None or entry.data.get(CONF_HOUSEHOLD_ID) == household_id)
    ]


def device_entry(hass: HomeAssistant, device_id: str) -> ConfigEntry | None:
    """The device entry of ``device_id``, if this Home Assistant onboarded it.

    Home Assistant's unique-id index first: a platform asks this for every device of the
    household when it is set up, so a scan of every entry would cost O(devices²) at 1,000.
    """
    indexed = hass.config_entries.async_entry_for_domain_unique_id(DOMAIN, device_id)
    if indexed is None:
        return None
    if is_device_entry(indexed) and indexed.source != SOURCE_IGNORE:
        return indexed
    # Another entry with the same unique id (an ignored discovery) came first in the index.
    return next((e for e in device_entries(hass) if e.unique_id == device_id), None)


def household_entry(hass: HomeAssistant, household_id: str) -> ConfigEntry | None:
    """The household entry of ``household_id``."""
    return next((e for e in household_entries(hass) if e.unique_id == household_id), None)


def device_title(model: str, device_id: str) -> str:
    """A device entry's title: the model and the id's last four characters."""
    return f"{model or 'IoT Onboard'} {device_id[-4:]}".strip()
