"""Turn hub and account service errors into translated Home Assistant errors."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Concatenate

from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import device_registry as dr

from .account_client import (
    AccountApiError,
    AccountConnectionError,
    AccountServiceError,
    AuthenticationError,
    ForbiddenError,
    NotFoundError,
)
from .const import DOMAIN
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
