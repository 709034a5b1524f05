"""Set-up and unload of a household entry, its failure modes, and the options (roles)."""

from __future__ import annotations

from datetime import timedelta

from homeassistant.config_entries import SOURCE_IGNORE, SOURCE_REAUTH, ConfigEntryState
from homeassistant.const import __version__ as ha_version
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import device_registry as dr
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_time_changed
from yarl import URL

from custom_components.iot_onboard import async_remove_config_entry_device
from custom_components.iot_onboard.const import (
    CONF_ACCOUNT_URL,
    CONF_AUTOMATION_ROLE,
    CONF_DEVICE_ID,
    CONF_HOUSEHOLD_ID,
    CONF_UNMAPPED_ROLE,
    DEVICE_HOST,
    DEVICE_MODEL,
    DEVICE_PORT,
    DOMAIN,
    EXTERNAL_ID_PREFIX,
)
from custom_components.iot_onboard.helpers import device_entry, find_device
from tests.integration.fake_account import FakeAccountService
from tests.integration.runtime_helpers import (
    DeviceProcesses,
    flow_sources,
    set_up,
    setup_entry,
    start_device,
    wait_for,
)


async def test_setup_and_unload_entry(
    hass: HomeAssistant, fake_account: FakeAccountService, init_integration: MockConfigEntry
) -> None:
    entry = init_integration
    assert entry.state is ConfigEntryState.LOADED
    runtime = entry.runtime_data
    assert runtime.account.base_url == fake_account.url
    await wait_for(hass, lambda: runtime.coordinator.connected, "the hub connected")
    # The first refresh read the hub credentials, the devices and the members.
    household = f"/v1/households/{fake_account.household_id}"
    assert ("GET", f"{household}/hub") in fake_account.calls
    assert ("GET", f"{household}/devices") in fake_account.calls
    assert ("GET", f"{household}/members") in fake_account.calls

    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    unloaded = hass.config_entries.async_get_entry(entry.entry_id)
    assert unloaded is not None
    assert unloaded.state is ConfigEntryState.NOT_LOADED
    assert not runtime.coordinator.connected


async def test_refreshed_tokens_are_saved(
    hass: HomeAssistant, fake_account: FakeAccountService, mock_config_entry: MockConfigEntry
) -> None:
    entry = mock_config_entry
    entry.add_to_hass(hass)
    expired = {**entry.data, "access_expires_at": 0}  # expired: refresh first
    hass.config_entries.async_update_entry(entry, data=expired)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.data["refresh_token"] == fake_account.refresh_token
    assert entry.data["access_token"] == fake_account.access_token
    await wait_for(hass, lambda: entry.runtime_data.coordinator.connected, "the hub connected")


async def test_account_service_unreachable_retries(
    hass: HomeAssistant, fake_account: FakeAccountService, mock_config_entry: MockConfigEntry
) -> None:
    await fake_account.stop()
    entry = mock_config_entry
    assert await set_up(hass, entry) is ConfigEntryState.SETUP_RETRY
    assert entry.reason is not None
    assert "cannot be reached" in entry.reason


async def test_a_device_entry_retries_until_its_hub_knows_the_device(
    hass: HomeAssistant, fake_account: FakeAccountService, init_integration: MockConfigEntry
) -> None:
    """The account service went down right after the claim: the device entry retries.

    Its hub learns of a just-onboarded device from the service; until the service answers, the
    device entry is "retrying setup" with the cause, and HA's backoff brings the entities once
    it is back (no 15-minute wait for the periodic sync).
    """
    coordinator = init_integration.runtime_data.coordinator
    await fake_account.add_device("dev1")
    port = URL(fake_account.url).port
    await fake_account.stop()
    onboarded = MockConfigEntry(
        domain=DOMAIN,
        version=2,
        unique_id="dev1",
        title="demo dev1",
        data={
            DEVICE_HOST: "192.0.2.10",
            DEVICE_PORT: 8423,
            DEVICE_MODEL: "demo",
            CONF_DEVICE_ID: "dev1",
            CONF_HOUSEHOLD_ID: fake_account.household_id,
        },
    )
    onboarded.add_to_hass(hass)
    await hass.config_entries.async_setup(onboarded.entry_id)
    await hass.async_block_till_done()
    assert onboarded.state is ConfigEntryState.SETUP_RETRY
    assert onboarded.reason is not None
    assert "cannot be reached" in onboarded.reason
    assert "dev1" not in coordinator.access

    await fake_account.start(port)
    async_fire_time_changed(hass, dt_util.utcnow() + timedelta(minutes=2))
    await wait_for(
        hass, lambda: onboarded.state is ConfigEntryState.LOADED, "the device entry loaded"
    )
    assert coordinator.access == {"dev1": "owner"}
    calls = [call for call in fake_account.calls if call[1].endswith("/devices")]
    # A device the hub knows already needs no sync: reloading its entry reads nothing.
    assert await hass.config_entries.async_reload(onboarded.entry_id)
    assert [call for call in fake_account.calls if call[1].endswith("/devices")] == calls


async def test_entry_without_tokens_asks_to_sign_in(hass: HomeAssistant) -> None:
    entry = MockConfigEntry(
        domain=DOMAIN,
        unique_id="h1",
        data={
            CONF_ACCOUNT_URL: "https://onboard.example",
            "household_id": "h1",
            "email": "owner@example.com",
        },
    )
    assert await set_up(hass, entry) is ConfigEntryState.SETUP_ERROR
    assert flow_sources(hass) == [SOURCE_REAUTH]


async def test_stale_devices_can_be_deleted_current_ones_cannot(
    hass: HomeAssistant, fake_account: FakeAccountService, device_processes: DeviceProcesses
) -> None:
    await start_device(fake_account, device_processes, "dev1")
    entry = await setup_entry(hass, fake_account)
    await wait_for(
        hass, lambda: find_device(hass, "dev1", entry.entry_id) is not None, "dev1 registered"
    )
    device = find_device(hass, "dev1", entry.entry_id)
    assert device is not None
    assert not await async_remove_config_entry_device(hass, entry, device)
    stale = dr.async_get(hass).async_get_or_create(
        config_entry_id=entry.entry_id, identifiers={(DOMAIN, "gone")}, name="Gone"
    )
    assert await async_remove_config_entry_device(hass, entry, stale)


async def test_options_policies(hass: HomeAssistant, init_integration: MockConfigEntry) -> None:
    entry = init_integration
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["type"] is FlowResultType.MENU
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "policies"}
    )
    assert result["type"] is FlowResultType.FORM
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {CONF_UNMAPPED_ROLE: "member", CONF_AUTOMATION_ROLE: "viewer"}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options == {CONF_UNMAPPED_ROLE: "member", CONF_AUTOMATION_ROLE: "viewer"}


async def test_options_map_users_at_the_account_service(
    hass: HomeAssistant, fake_account: FakeAccountService
) -> None:
    # Olga is Home Assistant's owner (its first user), so she stands for the household's owner
    # until someone is mapped to it; mapping her links the owner's record to her.
    owner_user = await hass.auth.async_create_user("Olga", group_ids=["system-users"])
    alice = await hass.auth.async_create_user("Alice", group_ids=["system-users"])
    assert owner_user.is_owner
    entry = await setup_entry(hass, fake_account)

    async def choose(user_id: str, role: str) -> dict[str, object]:
        result = await hass.config_entries.options.async_init(entry.entry_id)
        result = await hass.config_entries.options.async_configure(
            result["flow_id"], {"next_step_id": "user_role"}
        )
        assert result["type"] is FlowResultType.FORM
        return dict(
            await hass.config_entries.options.async_configure(
                result["flow_id"], {"user": user_id, "role": role}
            )
        )

    assert (await choose(alice.id, "member"))["type"] is FlowResultType.CREATE_ENTRY
    roles = entry.runtime_data.roles
    assert roles.user_roles() == {alice.id: "member"}
    assert (await choose(alice.id, "viewer"))["type"] is FlowResultType.CREATE_ENTRY
    assert roles.user_roles() == {alice.id: "viewer"}
    assert (await choose(owner_user.id, "owner"))["type"] is FlowResultType.CREATE_ENTRY
    assert fake_account.owner().external_id == EXTERNAL_ID_PREFIX + owner_user.id
    refused = await choose(owner_user.id, "member")
    assert refused["type"] is FlowResultType.FORM
    assert refused["errors"] == {"role": "owner_fixed"}
    assert (await choose(alice.id, "none"))["type"] is FlowResultType.CREATE_ENTRY
    assert roles.user_roles() == {owner_user.id: "owner"}


def test_reports_home_assistant_version() -> None:
    """Print the HA version so both runs show which version they tested."""
    print(f"Home Assistant {ha_version}")  # noqa: T201
    assert ha_version


async def test_device_entry_is_found_by_unique_id_not_by_an_ignored_discovery(
    hass: HomeAssistant,
) -> None:
    """The device entry of an id; not a household entry, not an ignored discovery of it.

    An ignored discovery with the device's id that the unique-id index lists first must not
    hide the device's own entry (nor be taken for it).
    """
    ignored = MockConfigEntry(domain=DOMAIN, unique_id="dev1", source=SOURCE_IGNORE, data={})
    ignored.add_to_hass(hass)
    assert device_entry(hass, "dev1") is None
    onboarded = MockConfigEntry(
        domain=DOMAIN,
        version=2,
        unique_id="dev1",
        title="demo dev1",
        data={CONF_DEVICE_ID: "dev1", CONF_HOUSEHOLD_ID: "household"},
    )
    onboarded.add_to_hass(hass)
    household = MockConfigEntry(
        domain=DOMAIN, version=2, unique_id="household", data={CONF_HOUSEHOLD_ID: "household"}
    )
    household.add_to_hass(hass)
    assert device_entry(hass, "dev1") is onboarded
    assert device_entry(hass, "household") is None
    assert device_entry(hass, "dev2") is None
