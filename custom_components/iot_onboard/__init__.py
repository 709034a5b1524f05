"""The IoT Onboard integration: onboard devices securely and expose them over MQTT."""

from __future__ import annotations

import logging
from typing import Any

from homeassistant.config_entries import SOURCE_IMPORT, ConfigEntryState
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import ConfigEntryAuthFailed, ConfigEntryNotReady
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.typing import ConfigType

from . import repairs
from .account_client import AccountClient, AccountServiceError, TokenSet
from .const import (
    CONF_ACCOUNT_URL,
    CONF_DEVICE_ID,
    CONF_DEVICES,
    CONF_HOUSEHOLD_ID,
    CONF_SUPERSEDED,
    DEVICE_MODEL,
    DOMAIN,
    ENTRY_VERSION,
)
from .coordinator import IotOnboardConfigEntry, IotOnboardCoordinator, IotOnboardData
from .helpers import (
    device_entries,
    device_title,
    find_device,
    household_entry,
    is_device_entry,
)
from .roles import RoleManager
from .services import async_setup_services
from .wifi_memory import wifi_keys

__all__ = ["IotOnboardConfigEntry", "IotOnboardData"]

_LOGGER = logging.getLogger(__name__)

PLATFORMS: list[Platform] = [
    Platform.BINARY_SENSOR,
    Platform.BUTTON,
    Platform.NUMBER,
    Platform.SENSOR,
    Platform.SWITCH,
]
CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Register the integration's actions (they exist even while no entry is loaded)."""
    del config
    async_setup_services(hass)
    return True


async def async_setup_entry(hass: HomeAssistant, entry: IotOnboardConfigEntry) -> bool:
    """Set up a household (account client, first refresh, hub, platforms) or a device."""
    if is_device_entry(entry):
        return await _async_setup_device_entry(hass, entry)
    try:
        tokens = TokenSet.from_entry_data(entry.data)
        household_id: str = entry.data[CONF_HOUSEHOLD_ID]
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigEntryAuthFailed(
            translation_domain=DOMAIN, translation_key="auth_expired"
        ) from err

    @callback
    def save_tokens(new: TokenSet) -> None:
        hass.config_entries.async_update_entry(entry, data={**entry.data, **new.as_entry_data()})

    account = AccountClient(
        entry.data[CONF_ACCOUNT_URL],
        session=async_get_clientsession(hass),
        tokens=tokens,
        on_tokens=save_tokens,
    )
    roles = RoleManager(hass, entry, account, household_id)
    coordinator = IotOnboardCoordinator(hass, entry, account, roles)
    await coordinator.async_setup()
    entry.runtime_data = IotOnboardData(account=account, coordinator=coordinator, roles=roles)
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    for waiting in device_entries(hass, household_id):
        # Device entries that found their hub not loaded yet (after a restart, a migration).
        if waiting.state is ConfigEntryState.SETUP_RETRY:
            hass.config_entries.async_schedule_reload(waiting.entry_id)
    return True


async def _async_setup_device_entry(hass: HomeAssistant, entry: IotOnboardConfigEntry) -> bool:
    """A device entry: its device's entities, served by its household entry's hub.

    The registry device and the entities belong to this entry, so the device shows on the
    flow's success screen (with the area picker) and on this entry's page; the household's hub
    (which must be loaded first) brings their state.
    """
    hub: IotOnboardConfigEntry | None = household_entry(hass, entry.data[CONF_HOUSEHOLD_ID])
    if hub is None or hub.state is not ConfigEntryState.LOADED:
        raise ConfigEntryNotReady(translation_domain=DOMAIN, translation_key="hub_not_loaded")
    device_id: str = entry.data[CONF_DEVICE_ID]
    coordinator = hub.runtime_data.coordinator
    # Just onboarded: the hub learns of it from the account service now. If the service is
    # unreachable (it may have gone down right after the claim), this entry retries with Home
    # Assistant's backoff until the hub has the device and its entities.
    await coordinator.async_ensure_device(device_id)
    # Entities the household entry made for the device before this entry existed (a v1
    # entry's devices, a sync that came first) move here with their registry device.
    await coordinator.async_hand_over(device_id, entry.entry_id)
    if find_device(hass, device_id, entry.entry_id) is None:
        dr.async_get(hass).async_get_or_create(
            config_entry_id=entry.entry_id,
            identifiers={(DOMAIN, device_id)},
            manufacturer="IoT Onboard",
            model=entry.data.get(DEVICE_MODEL),
            name=entry.title,
            serial_number=device_id,
        )
    entry.runtime_data = hub.runtime_data
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    return True


async def async_unload_entry(hass: HomeAssistant, entry: IotOnboardConfigEntry) -> bool:
    """Unload a config entry (the hub task and timers end with it).

    A household's device entries use its hub: they are reloaded after it and wait (retrying)
    until it is loaded again.
    """
    unloaded = await hass.config_entries.async_unload_platforms(entry, PLATFORMS)
    if unloaded and not is_device_entry(entry) and not hass.is_stopping:
        for onboarded in device_entries(hass, entry.data[CONF_HOUSEHOLD_ID]):
            if onboarded.state is ConfigEntryState.LOADED:
                hass.config_entries.async_schedule_reload(onboarded.entry_id)
    return unloaded


async def async_remove_entry(hass: HomeAssistant, entry: IotOnboardConfigEntry) -> None:
    """A device entry the user removed: release the device (as the ``release`` action does).

    Not when the household no longer has it (the hub removed the entry) or a newer
    onboarding of the same device replaced the entry. A household entry: the key of its
    remembered Wi-Fi is destroyed (copies of the entry stay sealed) and its repair issues go.
    """
    if not is_device_entry(entry):
        repairs.async_delete_entry_issues(hass, entry.entry_id)
        if household_id := entry.data.get(CONF_HOUSEHOLD_ID):
            await wifi_keys(hass).async_delete(household_id)
        return
    if entry.data.get(CONF_SUPERSEDED):
        return
    hub = household_entry(hass, entry.data[CONF_HOUSEHOLD_ID])
    device_id: str = entry.data[CONF_DEVICE_ID]
    if hub is None or hub.state is not ConfigEntryState.LOADED:
        _LOGGER.warning(
            "%s was not released: its household entry is not loaded; release it from the "
            "account service or factory-reset it",
            device_id,
        )
        return
    coordinator = hub.runtime_data.coordinator
    if device_id not in coordinator.access:
        return
    try:
        await coordinator.account.release_device(coordinator.household_id, device_id)
    except AccountServiceError as err:
        _LOGGER.warning(
            "Releasing %s failed: %s; release it from the account service", device_id, err
        )
        # Still the household's: its entities return to the household entry, once Home
        # Assistant has cleared this entry's registry entries (right after this returns).
        hass.loop.call_soon(coordinator.async_take_back, device_id)
        return
    await coordinator.async_request_sync()


async def async_migrate_entry(hass: HomeAssistant, entry: IotOnboardConfigEntry) -> bool:
    """Version 1 kept devices inside the household entry: each becomes its own entry."""
    if entry.version > ENTRY_VERSION:  # a downgrade: this code cannot read the entry
        return False
    records: dict[str, Any] = dict(entry.data.get(CONF_DEVICES, {}))
    data = {key: value for key, value in entry.data.items() if key != CONF_DEVICES}
    hass.config_entries.async_update_entry(entry, data=data, version=ENTRY_VERSION)
    for device_id, record in records.items():
        await hass.config_entries.flow.async_init(
            DOMAIN,
            context={"source": SOURCE_IMPORT},
            data={
                "title": device_title(record.get(DEVICE_MODEL, ""), device_id),
                "data": {
                    **record,
                    CONF_DEVICE_ID: device_id,
                    CONF_HOUSEHOLD_ID: entry.data[CONF_HOUSEHOLD_ID],
                },
            },
        )
    return True


async def async_remove_config_entry_device(
    hass: HomeAssistant, entry: IotOnboardConfigEntry, device: dr.DeviceEntry
) -> bool:
    """Let the user delete a device the household no longer has (stale); keep current ones.

    A device entry's device goes with its entry (removing the entry releases the device).
    """
    del hass
    if is_device_entry(entry):
        return False
    return not any(
        domain == DOMAIN and identifier in entry.runtime_data.coordinator.access
        for domain, identifier in device.identifiers
    )
