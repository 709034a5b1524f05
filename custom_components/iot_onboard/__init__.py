"""The IoT Onboard integration: onboard devices securely and expose them over MQTT."""

from __future__ import annotations

from homeassistant.const import Platform
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import ConfigEntryAuthFailed
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.typing import ConfigType

from .account_client import AccountClient, TokenSet
from .const import CONF_ACCOUNT_URL, CONF_HOUSEHOLD_ID, DOMAIN
from .coordinator import IotOnboardConfigEntry, IotOnboardCoordinator, IotOnboardData
from .roles import RoleManager
from .services import async_setup_services

__all__ = ["IotOnboardConfigEntry", "IotOnboardData"]

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
    """Set up a household: account client, first refresh, hub, platforms."""
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
    return True


async def async_unload_entry(hass: HomeAssistant, entry: IotOnboardConfigEntry) -> bool:
    """Unload a config entry (the hub task and timers end with it)."""
    return await hass.config_entries.async_unload_platforms(entry, PLATFORMS)


async def async_remove_config_entry_device(
    hass: HomeAssistant, entry: IotOnboardConfigEntry, device: dr.DeviceEntry
) -> bool:
    """Let the user delete a device the household no longer has (stale); keep current ones."""
    del hass
    return not any(
        domain == DOMAIN and identifier in entry.runtime_data.coordinator.access
        for domain, identifier in device.identifiers
    )
