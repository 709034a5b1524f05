"""Set-up and unload of a household entry."""

from __future__ import annotations

from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import __version__ as ha_version
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.iot_onboard.const import CONF_ACCOUNT_URL, DOMAIN


async def test_setup_and_unload_entry(hass: HomeAssistant) -> None:
    entry = MockConfigEntry(
        domain=DOMAIN,
        unique_id="https://onboard.example",
        data={CONF_ACCOUNT_URL: "https://onboard.example"},
    )
    entry.add_to_hass(hass)

    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data.account_url == "https://onboard.example"

    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    unloaded = hass.config_entries.async_get_entry(entry.entry_id)
    assert unloaded is not None
    assert unloaded.state is ConfigEntryState.NOT_LOADED


def test_reports_home_assistant_version() -> None:
    """Print the HA version so both runs show which version they tested."""
    print(f"Home Assistant {ha_version}")  # noqa: T201
    assert ha_version
