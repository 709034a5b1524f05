"""A device the household no longer has loses its record, so discovery offers it again.

The config flow refuses a device that a household entry has a record of (``already_configured``,
with its address refreshed). A device that was released, factory reset or is simply no longer
in the account service's list must not stay refused: the runtime drops its record along with
its registry entry. Runs the real runtime against the fake account service, a real Mosquitto
and fake device processes.
"""

from __future__ import annotations

import asyncio
from typing import Any
from unittest.mock import AsyncMock, patch

import pytest
from homeassistant.config_entries import SOURCE_ZEROCONF, ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import area_registry as ar
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.service_info.zeroconf import ZeroconfServiceInfo
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_time_changed

from custom_components.iot_onboard.account_client import AccountConnectionError
from custom_components.iot_onboard.const import (
    CONF_DEVICE_ID,
    CONF_DEVICES,
    CONF_HOUSEHOLD_ID,
    DEVICE_ADDED_AT,
    DEVICE_HOST,
    DEVICE_MODEL,
    DEVICE_OWNER_SECRET,
    DEVICE_PORT,
    DEVICE_PUBLIC_KEY,
    DOMAIN,
)
from custom_components.iot_onboard.coordinator import SYNC_INTERVAL
from custom_components.iot_onboard.helpers import (
    device_entries,
    device_entry,
    device_entry_ids,
    find_device,
)
from custom_components.iot_onboard.iob_protocol import DeviceIdentity, OwnerSecret, b64url_encode
from tests.integration.fake_account import FakeAccountService
from tests.integration.runtime_helpers import (
    DeviceProcesses,
    device_advertisement,
    entity_ids,
    observer,
    owner_context,
    setup_entry,
    start_device,
    wait_for,
)


def _record(identity: DeviceIdentity, host: str) -> dict[str, Any]:
    """What the config flow stored when it onboarded the device."""
    return {
        DEVICE_HOST: host,
        DEVICE_PORT: 8423,
        DEVICE_MODEL: "pi-sensor",
        DEVICE_PUBLIC_KEY: b64url_encode(identity.public_key),
        DEVICE_OWNER_SECRET: OwnerSecret.generate().encode(),
        DEVICE_ADDED_AT: 1,
    }


def _advertisement(device_id: str, host: str, state: str) -> ZeroconfServiceInfo:
    return device_advertisement(device_id, host=host, model="pi-sensor", state=state)


async def _discover(hass: HomeAssistant, device_id: str, host: str, state: str) -> Any:
    return await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=_advertisement(device_id, host, state)
    )


async def test_released_reset_and_unlisted_devices_can_be_discovered_again(
    hass: HomeAssistant, fake_account: FakeAccountService, device_processes: DeviceProcesses
) -> None:
    """Release (action), factory reset (the device releases itself), dropped from the list."""
    identities = {way: DeviceIdentity.generate() for way in ("released", "reset", "unlisted")}
    ids = {way: identity.device_id for way, identity in identities.items()}
    hosts = {"released": "192.0.2.11", "reset": "192.0.2.12", "unlisted": "192.0.2.13"}
    owner = await owner_context(hass, fake_account)
    for way, device_id in ids.items():
        await start_device(
            fake_account,
            device_processes,
            device_id,
            name=f"Sensor {way}",
            commands=["identify", "factory_reset"],
        )
    records = {ids[way]: _record(identities[way], hosts[way]) for way in ids}
    # A version-1 entry: the migration gives each record its own device entry.
    entry = await setup_entry(hass, fake_account, extra_data={CONF_DEVICES: records})
    await wait_for(hass, lambda: len(device_entries(hass)) == 3, "the three device entries")
    registry = dr.async_get(hass)
    await wait_for(
        hass,
        lambda: all(
            find_device(hass, device_id, device_entry_id(hass, device_id))
            for device_id in ids.values()
        ),
        "the three devices in the registry, each under its own entry",
    )
    # While a device is the household's, its record refuses discovery (address refreshed).
    result = await _discover(hass, ids["unlisted"], "192.0.2.99", "online")
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    unlisted = device_entry(hass, ids["unlisted"])
    assert unlisted is not None
    assert unlisted.data[DEVICE_HOST] == "192.0.2.99"
    hosts["unlisted"] = "192.0.2.99"

    # Released with the action.
    released = find_device(hass, ids["released"])
    assert released is not None
    await hass.services.async_call(
        DOMAIN, "release", {"device_id": released.id}, blocking=True, context=owner
    )
    # Factory reset: the command reaches the device, which then releases itself at the
    # account service (here: the fake service drops it, as the real device's release does).
    reset = find_device(hass, ids["reset"])
    assert reset is not None
    async with await observer(fake_account.broker) as watcher:
        await watcher.subscribe(f"iob/{ids['reset']}/cmd/#", qos=1)
        await hass.services.async_call(
            DOMAIN, "factory_reset", {"device_id": reset.id}, blocking=True, context=owner
        )
        async with asyncio.timeout(10):
            message = await anext(aiter(watcher.messages))
    assert str(message.topic) == f"iob/{ids['reset']}/cmd/_factory_reset"
    await fake_account.drop_device(ids["reset"])
    # No longer listed (released elsewhere, transferred, unshared).
    await fake_account.drop_device(ids["unlisted"])
    # The periodic sync notices both.
    async_fire_time_changed(hass, dt_util.utcnow() + SYNC_INTERVAL)
    await wait_for(
        hass,
        lambda: not device_entries(hass),
        "the entries of the removed devices to be dropped",
    )
    await hass.async_block_till_done()
    assert dr.async_entries_for_config_entry(registry, entry.entry_id) == []
    for way, device_id in ids.items():
        assert find_device(hass, device_id) is None, way
        # Back to unclaimed, it advertises itself: the onboarding flow starts again.
        result = await _discover(hass, device_id, hosts[way], "unclaimed")
        assert result["type"] is FlowResultType.FORM, (way, result)
        assert result["step_id"] == "discovery_confirm"
        hass.config_entries.flow.async_abort(result["flow_id"])


async def test_a_version_1_entry_moves_its_devices_into_their_own_entries(
    hass: HomeAssistant, fake_account: FakeAccountService, device_processes: DeviceProcesses
) -> None:
    """Migration 1 -> 2: one device entry per record, holding its registry device and entities.

    The v1 household entry's registry (a device in an area, an entity the user renamed) moves
    to the device's entry as it is: same registry device, area, entity ids and unique ids.
    """
    identities = [DeviceIdentity.generate() for _ in range(2)]
    for identity in identities:
        await start_device(fake_account, device_processes, identity.device_id)
    records = {i.device_id: _record(i, "192.0.2.20") for i in identities}
    entry = MockConfigEntry(
        domain=DOMAIN,
        version=1,
        title="Home",
        unique_id=fake_account.household_id,
        data={**fake_account.entry_data(), CONF_DEVICES: records},
    )
    entry.add_to_hass(hass)
    # What version 1 left in the registries: both under the household entry.
    kitchen = ar.async_get(hass).async_create("Kitchen")
    first = identities[0].device_id
    old_device = dr.async_get(hass).async_get_or_create(
        config_entry_id=entry.entry_id, identifiers={(DOMAIN, first)}, name="pi-sensor"
    )
    dr.async_get(hass).async_update_device(old_device.id, area_id=kitchen.id)
    old_entity = er.async_get(hass).async_get_or_create(
        "sensor",
        DOMAIN,
        f"{first}_temperature",
        config_entry=entry,
        device_id=old_device.id,
        suggested_object_id="kitchen_temperature",
    )
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.version == 2
    assert CONF_DEVICES not in entry.data
    await wait_for(
        hass,
        lambda: all(
            (found := device_entry(hass, i.device_id)) is not None
            and found.state is ConfigEntryState.LOADED
            for i in identities
        ),
        "one loaded device entry per record",
    )
    registry = er.async_get(hass)
    for identity in identities:
        moved = device_entry(hass, identity.device_id)
        assert moved is not None
        assert moved.data[CONF_HOUSEHOLD_ID] == fake_account.household_id
        assert moved.data[DEVICE_OWNER_SECRET] == records[identity.device_id][DEVICE_OWNER_SECRET]
        assert moved.title == f"pi-sensor {identity.device_id[-4:]}"
        await wait_for(
            hass,
            lambda moved=moved: len(entity_ids(hass, moved)) > 1,  # type: ignore[misc]
            "the device's entities under its own entry",
        )
        # The device and its entities belong to its own entry only (what its page lists).
        device = find_device(hass, identity.device_id, moved.entry_id)
        assert device is not None
        assert device_entry_ids(device) == [moved.entry_id]
        unique_ids = {
            e.unique_id for e in er.async_entries_for_config_entry(registry, moved.entry_id)
        }
        assert unique_ids
        assert all(uid.startswith(f"{identity.device_id}_") for uid in unique_ids)
    # Nothing of them is left under the household entry.
    assert entity_ids(hass, entry) == []
    assert dr.async_entries_for_config_entry(dr.async_get(hass), entry.entry_id) == []
    # The v1 registry device and entity moved as they were.
    kept = dr.async_get(hass).async_get(old_device.id)
    assert kept is not None
    assert kept.area_id == kitchen.id
    moved_entity = registry.async_get(old_entity.entity_id)
    assert moved_entity is not None
    assert moved_entity.entity_id == "sensor.kitchen_temperature"
    assert moved_entity.config_entry_id == device_entry_id(hass, first)
    assert hass.states.get("sensor.kitchen_temperature") is not None
    assert not any(path.endswith("/release") for _method, path in fake_account.calls)
    # A reload of the hub reloads its device entries (they use its hub); everything returns.
    assert await hass.config_entries.async_reload(entry.entry_id)
    await wait_for(
        hass,
        lambda: all(
            (found := device_entry(hass, i.device_id)) is not None
            and found.state is ConfigEntryState.LOADED
            and (state := hass.states.get("sensor.kitchen_temperature")) is not None
            and state.state == "21.5"
            for i in identities
        ),
        "the device entries loaded again, their entities live",
    )
    assert entity_ids(hass, entry) == []


def _temperature_entity(hass: HomeAssistant, device_id: str) -> str:
    """The entity id of the device's temperature sensor ('' while it has none)."""
    return (
        er.async_get(hass).async_get_entity_id("sensor", DOMAIN, f"{device_id}_temperature") or ""
    )


async def test_a_device_entry_takes_over_the_households_live_entities(
    hass: HomeAssistant, fake_account: FakeAccountService, device_processes: DeviceProcesses
) -> None:
    """A device the household had (claimed elsewhere) is onboarded by this HA: one device.

    Its live entities leave the household entry and come back under the device entry with
    the same entity ids (no ``_2`` copies), live; the registry device moves with its area.
    """
    device_id = DeviceIdentity.generate().device_id
    await start_device(fake_account, device_processes, device_id)
    entry = await setup_entry(hass, fake_account)
    await wait_for(hass, lambda: bool(_temperature_entity(hass, device_id)), "the hub's entities")
    temperature = _temperature_entity(hass, device_id)
    before = entity_ids(hass, entry)
    kitchen = ar.async_get(hass).async_create("Kitchen")
    device = find_device(hass, device_id, entry.entry_id)
    assert device is not None
    dr.async_get(hass).async_update_device(device.id, area_id=kitchen.id)

    onboarded = MockConfigEntry(
        domain=DOMAIN,
        version=2,
        unique_id=device_id,
        title=f"pi-sensor {device_id[-4:]}",
        data={
            **_record(DeviceIdentity.generate(), "192.0.2.40"),
            CONF_DEVICE_ID: device_id,
            CONF_HOUSEHOLD_ID: fake_account.household_id,
        },
    )
    onboarded.add_to_hass(hass)
    assert await hass.config_entries.async_setup(onboarded.entry_id)
    await hass.async_block_till_done()
    await wait_for(
        hass,
        lambda: (state := hass.states.get(temperature)) is not None and state.state == "21.5",
        "the temperature live under the device entry",
    )
    assert entity_ids(hass, onboarded) == before  # the same entity ids, all of them
    assert entity_ids(hass, entry) == []
    moved = find_device(hass, device_id, onboarded.entry_id)
    assert moved is not None
    assert moved.id == device.id
    assert moved.area_id == kitchen.id
    assert device_entry_ids(moved) == [onboarded.entry_id]


def device_entry_id(hass: HomeAssistant, device_id: str) -> str:
    """The entry id of ``device_id``'s device entry."""
    found = device_entry(hass, device_id)
    assert found is not None
    return found.entry_id


@pytest.mark.parametrize("service_fails", [False, True])
async def test_removing_a_device_entry_releases_the_device(
    hass: HomeAssistant,
    fake_account: FakeAccountService,
    device_processes: DeviceProcesses,
    caplog: pytest.LogCaptureFixture,
    service_fails: bool,
) -> None:
    """Removing the device from the integration page (its entry) = the release action."""
    identity = DeviceIdentity.generate()
    await start_device(fake_account, device_processes, identity.device_id)
    records = {identity.device_id: _record(identity, "192.0.2.30")}
    entry = await setup_entry(hass, fake_account, extra_data={CONF_DEVICES: records})
    await wait_for(
        hass,
        lambda: (
            (found := device_entry(hass, identity.device_id)) is not None
            and found.state is ConfigEntryState.LOADED
        ),
        "the device entry loaded",
    )
    await wait_for(
        hass,
        lambda: identity.device_id in entry.runtime_data.coordinator.access,
        "the device in the household",
    )
    moved = device_entry(hass, identity.device_id)
    assert moved is not None
    coordinator = entry.runtime_data.coordinator
    if service_fails:
        refused = AsyncMock(side_effect=AccountConnectionError("unreachable"))
        with patch.object(coordinator.account, "release_device", refused):
            await hass.config_entries.async_remove(moved.entry_id)
            await hass.async_block_till_done()
        assert "release it from the account service" in caplog.text
        assert identity.device_id in coordinator.access
        # Still the household's: its entities return under the household entry, live.
        await wait_for(
            hass,
            lambda: (
                (state := hass.states.get(_temperature_entity(hass, identity.device_id)))
                is not None
                and state.state == "21.5"
            ),
            "the device's entities back under the household entry",
        )
        assert any(e.startswith("sensor.") for e in entity_ids(hass, entry))
        return
    await hass.config_entries.async_remove(moved.entry_id)
    await hass.async_block_till_done()
    release = f"/v1/households/{fake_account.household_id}/devices/{identity.device_id}/release"
    assert ("POST", release) in fake_account.calls
    await wait_for(
        hass,
        lambda: identity.device_id not in entry.runtime_data.coordinator.access,
        "the released device gone from the household",
    )
