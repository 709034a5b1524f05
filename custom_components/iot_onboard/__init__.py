"""The IoT Onboard integration: onboard devices securely and expose them over MQTT."""

from __future__ import annotations

from dataclasses import dataclass

from homeassistant.config_entries import ConfigEntry
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant

from .const import CONF_ACCOUNT_URL

# Entity platforms arrive with the MQTT-backed entities (issue 6).
PLATFORMS: list[Platform] = []


@dataclass(slots=True)
class IotOnboardData:
    """What a household entry holds while it is loaded."""

    account_url: str


type IotOnboardConfigEntry = ConfigEntry[IotOnboardData]


async def async_setup_entry(hass: HomeAssistant, entry: IotOnboardConfigEntry) -> bool:
    """Set up a household account from a config entry."""
    entry.runtime_data = IotOnboardData(account_url=entry.data[CONF_ACCOUNT_URL])
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    return True


async def async_unload_entry(hass: HomeAssistant, entry: IotOnboardConfigEntry) -> bool:
    """Unload a config entry."""
    return await hass.config_entries.async_unload_platforms(entry, PLATFORMS)
