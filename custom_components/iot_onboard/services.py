"""IoT Onboard actions: identify, share, transfer, release, factory reset, rotate credentials.

Registered once in ``async_setup`` (they exist while no entry is loaded, and say so). Every
action checks the caller's household role first (``roles.py``), then calls the account
service or the device; failures are translated errors with the next step.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import voluptuous as vol
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import (
    HomeAssistant,
    ServiceCall,
    ServiceResponse,
    SupportsResponse,
    callback,
)
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers import device_registry as dr

from .account_client import AccountServiceError, DeviceAccess, ShareAccess
from .const import (
    ATTR_ACCESS,
    ATTR_CONFIG_ENTRY_ID,
    ATTR_DEVICE_ID,
    ATTR_HOUSEHOLD_ID,
    DOMAIN,
    SERVICE_FACTORY_RESET,
    SERVICE_IDENTIFY,
    SERVICE_RELEASE,
    SERVICE_ROTATE_CREDENTIALS,
    SERVICE_ROTATE_DEVICE_CREDENTIALS,
    SERVICE_SHARE,
    SERVICE_TRANSFER,
)
from .coordinator import IotOnboardConfigEntry, IotOnboardCoordinator
from .helpers import device_entry_ids, translate_error
from .hub import HubError
from .roles import Action

ACCESS_NONE = "none"
_DEVICE = {vol.Required(ATTR_DEVICE_ID): cv.string}
DEVICE_SCHEMA = vol.Schema(_DEVICE)
SHARE_SCHEMA = vol.Schema(
    {
        **_DEVICE,
        vol.Required(ATTR_HOUSEHOLD_ID): cv.string,
        vol.Required(ATTR_ACCESS): vol.In([ShareAccess.READ, ShareAccess.CONTROL, ACCESS_NONE]),
    }
)
TRANSFER_SCHEMA = vol.Schema({**_DEVICE, vol.Required(ATTR_HOUSEHOLD_ID): cv.string})
ROTATE_SCHEMA = vol.Schema({vol.Required(ATTR_CONFIG_ENTRY_ID): cv.string})


def _loaded_entry(hass: HomeAssistant, entry_id: str) -> IotOnboardConfigEntry | None:
    entry = hass.config_entries.async_get_entry(entry_id)
    if entry is None or entry.domain != DOMAIN or entry.state is not ConfigEntryState.LOADED:
        return None
    return entry


def _target(hass: HomeAssistant, call: ServiceCall) -> tuple[IotOnboardCoordinator, str, str]:
    """The entry's coordinator, the IoT Onboard device id and its name for a device action."""
    registry_id: str = call.data[ATTR_DEVICE_ID]
    device = dr.async_get(hass).async_get(registry_id)
    device_id = (
        next((i for d, i in device.identifiers if d == DOMAIN), None)
        if device is not None
        else None
    )
    if device is None or device_id is None:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="invalid_device",
            translation_placeholders={"device_id": registry_id},
        )
    name = device.name_by_user or device.name or device_id
    for entry_id in device_entry_ids(device):
        entry = _loaded_entry(hass, entry_id)
        if entry is not None:
            return entry.runtime_data.coordinator, device_id, name
    raise ServiceValidationError(
        translation_domain=DOMAIN,
        translation_key="entry_not_loaded",
        translation_placeholders={"device": name},
    )


async def _translated[T](work: Awaitable[T]) -> T:
    try:
        return await work
    except (HubError, AccountServiceError) as err:
        raise translate_error(err) from err


async def _check(
    coordinator: IotOnboardCoordinator, call: ServiceCall, action: Action, device_id: str, name: str
) -> None:
    await coordinator.roles.async_check(
        call.context,
        action,
        device_name=name,
        device_access=coordinator.access.get(device_id, DeviceAccess.READ),
    )


def _device_command(coordinator: IotOnboardCoordinator, device_id: str, command: str) -> bool:
    data = coordinator.device(device_id)
    return data is not None and data.meta is not None and command in data.meta.commands


async def _identify(hass: HomeAssistant, call: ServiceCall) -> ServiceResponse:
    coordinator, device_id, name = _target(hass, call)
    await _check(coordinator, call, Action.CONTROL, device_id, name)
    data = coordinator.device(device_id)
    button = next(
        (
            entity.key
            for entity in (data.meta.entities if data is not None and data.meta else ())
            if entity.platform == "button" and entity.device_class == "identify"
        ),
        None,
    )
    if button is not None:
        await _translated(coordinator.async_send_command(device_id, button, "press"))
    elif _device_command(coordinator, device_id, "identify"):
        await _translated(coordinator.async_send_command(device_id, "_identify", "identify"))
    else:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="identify_unsupported",
            translation_placeholders={"device": name},
        )
    return None


async def _share(hass: HomeAssistant, call: ServiceCall) -> ServiceResponse:
    coordinator, device_id, name = _target(hass, call)
    await _check(coordinator, call, Action.MANAGE, device_id, name)
    target: str = call.data[ATTR_HOUSEHOLD_ID]
    access: str = call.data[ATTR_ACCESS]
    account, household = coordinator.account, coordinator.household_id
    if access == ACCESS_NONE:
        await _translated(account.unshare_device(household, device_id, target))
        return None
    share = await _translated(
        account.share_device(household, device_id, target, ShareAccess(access))
    )
    return {
        "device_id": share.device_id,
        "household_id": share.household_id,
        "access": share.access.value,
    }


async def _transfer(hass: HomeAssistant, call: ServiceCall) -> ServiceResponse:
    coordinator, device_id, name = _target(hass, call)
    await _check(coordinator, call, Action.TRANSFER, device_id, name)
    transfer = await _translated(
        coordinator.account.offer_transfer(
            coordinator.household_id, device_id, call.data[ATTR_HOUSEHOLD_ID]
        )
    )
    return {
        "transfer_id": transfer.transfer_id,
        "to_household_id": transfer.to_household_id,
        "status": transfer.status.value,
        "expires_at": transfer.expires_at,
    }


async def _release(hass: HomeAssistant, call: ServiceCall) -> ServiceResponse:
    coordinator, device_id, name = _target(hass, call)
    await _check(coordinator, call, Action.MANAGE, device_id, name)
    await _translated(coordinator.account.release_device(coordinator.household_id, device_id))
    coordinator.async_remove_device(device_id)
    return None


async def _factory_reset(hass: HomeAssistant, call: ServiceCall) -> ServiceResponse:
    coordinator, device_id, name = _target(hass, call)
    await _check(coordinator, call, Action.MANAGE, device_id, name)
    if not _device_command(coordinator, device_id, "factory_reset"):
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="factory_reset_unsupported",
            translation_placeholders={"device": name},
        )
    await _translated(coordinator.async_send_command(device_id, "_factory_reset", "factory_reset"))
    # The device releases itself at the account service; the next sync removes it here.
    await coordinator.async_request_sync()
    return None


async def _rotate_credentials(hass: HomeAssistant, call: ServiceCall) -> ServiceResponse:
    entry = _loaded_entry(hass, call.data[ATTR_CONFIG_ENTRY_ID])
    if entry is None:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="entry_not_loaded",
            translation_placeholders={"device": call.data[ATTR_CONFIG_ENTRY_ID]},
        )
    coordinator = entry.runtime_data.coordinator
    await coordinator.roles.async_check(call.context, Action.MANAGE, device_name=entry.title)
    await _translated(coordinator.async_rotate_hub_credentials())
    return None


async def _rotate_device_credentials(hass: HomeAssistant, call: ServiceCall) -> ServiceResponse:
    """A new MQTT password for one device: the broker drops the old one at once.

    The device fetches the new password from the account service by itself (a request signed
    with its own key), so it reconnects within seconds; use this for a device you suspect.
    """
    coordinator, device_id, name = _target(hass, call)
    await _check(coordinator, call, Action.MANAGE, device_id, name)
    await _translated(
        coordinator.account.rotate_device_credentials(coordinator.household_id, device_id)
    )
    return None


_ACTIONS: dict[
    str,
    tuple[
        vol.Schema,
        Callable[[HomeAssistant, ServiceCall], Awaitable[ServiceResponse]],
        SupportsResponse,
    ],
] = {
    SERVICE_IDENTIFY: (DEVICE_SCHEMA, _identify, SupportsResponse.NONE),
    SERVICE_SHARE: (SHARE_SCHEMA, _share, SupportsResponse.OPTIONAL),
    SERVICE_TRANSFER: (TRANSFER_SCHEMA, _transfer, SupportsResponse.OPTIONAL),
    SERVICE_RELEASE: (DEVICE_SCHEMA, _release, SupportsResponse.NONE),
    SERVICE_FACTORY_RESET: (DEVICE_SCHEMA, _factory_reset, SupportsResponse.NONE),
    SERVICE_ROTATE_CREDENTIALS: (ROTATE_SCHEMA, _rotate_credentials, SupportsResponse.NONE),
    SERVICE_ROTATE_DEVICE_CREDENTIALS: (
        DEVICE_SCHEMA,
        _rotate_device_credentials,
        SupportsResponse.NONE,
    ),
}


@callback
def async_setup_services(hass: HomeAssistant) -> None:
    """Register every action of the integration."""
    for name, (schema, handler, supports) in _ACTIONS.items():

        async def run(
            call: ServiceCall,
            handler: Callable[[HomeAssistant, ServiceCall], Awaitable[ServiceResponse]] = handler,
        ) -> ServiceResponse:
            return await handler(hass, call)

        hass.services.async_register(DOMAIN, name, run, schema=schema, supports_response=supports)


__all__ = ["HomeAssistantError", "async_setup_services"]
