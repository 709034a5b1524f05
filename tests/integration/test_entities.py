"""Entities from a device's capability descriptor, fed by a real Mosquitto.

A fake device process (its own dynamic-security client, retained will) publishes meta,
availability and state; the hub (household hub credentials from the fake account service)
receives them and the entities follow.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from homeassistant.config_entries import RELOAD_AFTER_UPDATE_DELAY, ConfigEntryState
from homeassistant.const import (
    ATTR_ENTITY_ID,
    EVENT_STATE_CHANGED,
    STATE_ON,
    STATE_UNAVAILABLE,
    STATE_UNKNOWN,
    EntityCategory,
)
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.entity_platform import async_get_platforms
from homeassistant.helpers.event import EventStateChangedData
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_time_changed
from syrupy.assertion import SnapshotAssertion

from custom_components.iot_onboard import entity
from custom_components.iot_onboard.const import (
    CONF_DEVICE_ID,
    CONF_HOUSEHOLD_ID,
    DEVICE_HOST,
    DEVICE_MODEL,
    DEVICE_NAME,
    DEVICE_PORT,
    DOMAIN,
)
from custom_components.iot_onboard.coordinator import SYNC_INTERVAL
from custom_components.iot_onboard.helpers import find_device
from custom_components.iot_onboard.iob_protocol.account_api import Owned
from tests.integration.fake_account import FakeAccountService
from tests.integration.runtime_helpers import (
    DISABLED_KEYS,
    ENTITY_COUNT,
    DeviceProcesses,
    RealAccount,
    entity_ids,
    meta_for,
    observer,
    publish_as_device,
    publish_with,
    setup_entry,
    start_claimed_device,
    start_device,
    state_of,
    wait_for,
)
from tests.plugins.mosquitto import MosquittoProcess

_ATTRIBUTES = (
    "device_class",
    "unit_of_measurement",
    "state_class",
    "min",
    "max",
    "step",
    "friendly_name",
    "icon",
)


def all_reported(hass: HomeAssistant, entry: MockConfigEntry) -> bool:
    """Every entity exists; the enabled ones are available and (buttons aside) have a state."""
    ids = entity_ids(hass, entry, enabled_only=True)
    states = [hass.states.get(entity_id) for entity_id in ids]
    return len(entity_ids(hass, entry)) == ENTITY_COUNT and all(
        state is not None
        and state.state != STATE_UNAVAILABLE
        and (state.domain == "button" or state.state != STATE_UNKNOWN)
        for state in states
    )


def normalised(hass: HomeAssistant, entity_id: str) -> dict[str, Any]:
    """What a snapshot holds of an entity (stable across HA versions)."""
    registry_entry = er.async_get(hass).async_get(entity_id)
    assert registry_entry is not None
    state = hass.states.get(entity_id)
    assert state is not None
    return {
        "unique_id": registry_entry.unique_id,
        "translation_key": registry_entry.translation_key,
        "original_name": registry_entry.original_name,
        "entity_category": registry_entry.entity_category,
        "original_device_class": registry_entry.original_device_class,
        "state": state.state,
        "attributes": {k: state.attributes[k] for k in _ATTRIBUTES if k in state.attributes},
    }


@pytest.mark.parametrize("wildcard_hub", [False, True], ids=["per_device", "wildcard"])
async def test_entities_from_descriptor(
    hass: HomeAssistant,
    fake_account: FakeAccountService,
    device_processes: DeviceProcesses,
    snapshot: SnapshotAssertion,
    wildcard_hub: bool,
) -> None:
    fake_account.wildcard_hub = wildcard_hub
    await start_device(fake_account, device_processes, "dev1")
    entry = await setup_entry(hass, fake_account)

    await wait_for(hass, lambda: all_reported(hass, entry), "every entity of dev1 with its state")
    hub = entry.runtime_data.coordinator.hub
    assert hub.subscription_mode == ("wildcard" if wildcard_hub else "per_device")
    device = find_device(hass, "dev1", entry.entry_id)
    assert device is not None
    assert (device.name, device.model, device.sw_version, device.serial_number) == (
        "Kitchen sensor",
        "pi-sensor",
        "1.2.0",
        "dev1",
    )
    enabled = entity_ids(hass, entry, enabled_only=True)
    assert {e: normalised(hass, e) for e in enabled} == snapshot


async def test_diagnostic_sensors_are_disabled_by_default(
    hass: HomeAssistant, fake_account: FakeAccountService, device_processes: DeviceProcesses
) -> None:
    """Load, memory, disk, CPU temperature, last boot …: registered, disabled, no state.

    The quality scale's entity-disabled-by-default rule; once the user enables one, it reports
    the device's value like any other entity.
    """
    entry = await _ready(hass, fake_account, device_processes)
    registry = er.async_get(hass)
    disabled = {
        e.unique_id.removeprefix("dev1_"): e
        for e in er.async_entries_for_config_entry(registry, entry.entry_id)
        if e.disabled
    }
    assert set(disabled) == DISABLED_KEYS == {"cpu_temperature", "last_boot"}
    for registry_entry in disabled.values():
        assert registry_entry.entity_category is EntityCategory.DIAGNOSTIC
        assert registry_entry.disabled_by is er.RegistryEntryDisabler.INTEGRATION
        assert hass.states.get(registry_entry.entity_id) is None
    # Enabled by the user: Home Assistant reloads the entry and the sensor reports.
    cpu = disabled["cpu_temperature"].entity_id
    registry.async_update_entity(cpu, disabled_by=None)
    async_fire_time_changed(
        hass, dt_util.utcnow() + timedelta(seconds=RELOAD_AFTER_UPDATE_DELAY + 1)
    )
    await wait_for(hass, lambda: state_of(hass, cpu) == "48.2", "the enabled CPU temperature")


async def _ready(
    hass: HomeAssistant, fake_account: FakeAccountService, device_processes: DeviceProcesses
) -> MockConfigEntry:
    await start_device(fake_account, device_processes, "dev1")
    entry = await setup_entry(hass, fake_account)
    await wait_for(hass, lambda: all_reported(hass, entry), "every entity of dev1 with its state")
    return entry


async def _claimed(
    hass: HomeAssistant, account: RealAccount, device_processes: DeviceProcesses
) -> tuple[MockConfigEntry, Owned]:
    """A device claimed at the real account service, running, with every entity reported."""
    owned = await start_claimed_device(account, device_processes)
    entry = await setup_entry(hass, account)
    await wait_for(hass, lambda: all_reported(hass, entry), "every entity with its state")
    return entry, owned


async def test_state_change_is_pushed(
    hass: HomeAssistant, fake_account: FakeAccountService, device_processes: DeviceProcesses
) -> None:
    """States published beside the running device: only the stand-in's accounts allow a second
    client id (the real broker binds the device's)."""
    await _ready(hass, fake_account, device_processes)
    await publish_as_device(fake_account, "dev1", "state/temperature", b"23.25")
    await publish_as_device(fake_account, "dev1", "state/motion", b"on")
    await wait_for(
        hass,
        lambda: (
            state_of(hass, "sensor.kitchen_sensor_temperature") == "23.25"
            and state_of(hass, "binary_sensor.kitchen_sensor_motion") == STATE_ON
        ),
        "the pushed states",
    )
    # A state the device cannot read right now is unknown, not a stale value.
    await publish_as_device(fake_account, "dev1", "state/temperature", b"unknown")
    await wait_for(
        hass,
        lambda: state_of(hass, "sensor.kitchen_sensor_temperature") == STATE_UNKNOWN,
        "temperature unknown",
    )


async def test_will_makes_entities_unavailable_and_logs_once(
    hass: HomeAssistant,
    real_account_service: RealAccount,
    device_processes: DeviceProcesses,
    caplog: pytest.LogCaptureFixture,
) -> None:
    entry, owned = await _claimed(hass, real_account_service, device_processes)
    device_processes.kill(owned.device_id)  # the broker publishes the retained will: offline
    await wait_for(
        hass,
        lambda: all(
            state_of(hass, e) == STATE_UNAVAILABLE
            for e in entity_ids(hass, entry, enabled_only=True)
        ),
        "every entity unavailable after the will",
    )
    await publish_with(owned.mqtt, "availability", b"offline")
    await publish_with(owned.mqtt, "availability", b"online")
    await wait_for(
        hass,
        lambda: state_of(hass, "sensor.kitchen_sensor_temperature") == "21.5",
        "back online with the retained state",
    )
    offline = [r for r in caplog.records if r.getMessage() == "Device Kitchen sensor is offline"]
    back = [r for r in caplog.records if r.getMessage() == "Device Kitchen sensor is back online"]
    assert (len(offline), len(back)) == (1, 1)


async def test_actions_publish_commands(
    hass: HomeAssistant, real_account_service: RealAccount, device_processes: DeviceProcesses
) -> None:
    entry, owned = await _claimed(hass, real_account_service, device_processes)
    device = owned.device_id
    broker = real_account_service.service.broker
    async with await observer(broker, f"observer-{device}") as watcher:
        await watcher.subscribe(f"iob/{device}/cmd/#", qos=1)
        await hass.services.async_call(
            "switch", "turn_on", {ATTR_ENTITY_ID: "switch.kitchen_sensor_relay"}, blocking=True
        )
        await hass.services.async_call(
            "number",
            "set_value",
            {ATTR_ENTITY_ID: "number.kitchen_sensor_setpoint", "value": 22.5},
            blocking=True,
        )
        await hass.services.async_call(
            "button", "press", {ATTR_ENTITY_ID: "button.kitchen_sensor_identify"}, blocking=True
        )
        seen: list[tuple[str, bytes]] = []
        async with asyncio.timeout(10):
            async for message in watcher.messages:
                assert isinstance(message.payload, bytes)
                seen.append((str(message.topic), message.payload))
                if len(seen) == 3:
                    break
    assert seen == [
        (f"iob/{device}/cmd/relay", b"on"),
        (f"iob/{device}/cmd/setpoint", b"22.5"),
        (f"iob/{device}/cmd/identify", b"press"),
    ]
    # The device answers with its new state; HA shows what the device reports.
    await wait_for(
        hass,
        lambda: (
            state_of(hass, "switch.kitchen_sensor_relay") == STATE_ON
            and state_of(hass, "number.kitchen_sensor_setpoint") == "22.5"
        ),
        "the device's new states",
    )
    coordinator = entry.runtime_data.coordinator
    await wait_for(
        hass,
        lambda: (coordinator.device(device).last_diagnostic or {}).get("event") == "pressed",
        "the device's diagnostic event for the press",
    )


async def test_command_while_disconnected_is_a_translated_error(
    hass: HomeAssistant,
    fake_account: FakeAccountService,
    device_processes: DeviceProcesses,
    mosquitto_process: MosquittoProcess,
) -> None:
    entry = await _ready(hass, fake_account, device_processes)
    mosquitto_process.stop()
    await wait_for(
        hass,
        lambda: all(
            state_of(hass, e) == STATE_UNAVAILABLE
            for e in entity_ids(hass, entry, enabled_only=True)
        ),
        "every entity unavailable while the hub is disconnected",
    )
    # HA skips unavailable entities in actions; a press racing the disconnection gets this:
    button = _entity(hass, "button.kitchen_sensor_identify")
    with pytest.raises(HomeAssistantError) as error:
        await button.async_press()
    assert error.value.translation_key == "hub_not_connected"


async def test_broker_restart_entities_come_back(
    hass: HomeAssistant,
    fake_account: FakeAccountService,
    device_processes: DeviceProcesses,
    mosquitto_process: MosquittoProcess,
    caplog: pytest.LogCaptureFixture,
) -> None:
    entry = await _ready(hass, fake_account, device_processes)
    coordinator = entry.runtime_data.coordinator
    mosquitto_process.restart()  # blocks the loop: the hub notices once it runs again
    await wait_for(hass, lambda: not coordinator.connected, "the hub noticing the restart")
    await wait_for(
        hass,
        lambda: coordinator.connected and all_reported(hass, entry),
        "the hub reconnected and every entity back",
        timeout=30,
    )
    # The whole path works again: command out, the device's new state back (the device
    # process reconnects on its own, so retry until it is there).
    async with asyncio.timeout(30):
        while state_of(hass, "switch.kitchen_sensor_relay") != STATE_ON:
            await hass.services.async_call(
                "switch", "turn_on", {ATTR_ENTITY_ID: "switch.kitchen_sensor_relay"}, blocking=True
            )
            await wait_for(hass, lambda: True, "a moment")
            await asyncio.sleep(0.2)
    # The outage is logged once when it starts and once when it ends, not per retry.
    hub_logger = "custom_components.iot_onboard.hub"
    lost = [r for r in caplog.records if r.name == hub_logger and " lost " in r.getMessage()]
    back = [r for r in caplog.records if r.name == hub_logger and r.getMessage().endswith("back")]
    assert (len(lost), len(back)) == (1, 1)
    assert lost[0].levelname == "WARNING"


def _entity(hass: HomeAssistant, entity_id: str) -> Any:
    for platform in async_get_platforms(hass, DOMAIN):
        if entity_id in platform.entities:
            return platform.entities[entity_id]
    raise AssertionError(f"{entity_id} is not an entity of {DOMAIN}")


@pytest.mark.parametrize("wildcard_hub", [False, True], ids=["per_device", "wildcard"])
async def test_device_added_later_gets_entities(
    hass: HomeAssistant,
    fake_account: FakeAccountService,
    device_processes: DeviceProcesses,
    wildcard_hub: bool,
) -> None:
    fake_account.wildcard_hub = wildcard_hub
    entry = await _ready(hass, fake_account, device_processes)
    await start_device(fake_account, device_processes, "dev2", name="Hall sensor")
    if not wildcard_hub:
        # Per-device subscriptions follow the account service's list: the onboarding flow
        # asks for a sync when it finishes (and the periodic sync would catch it too).
        await entry.runtime_data.coordinator.async_request_sync()
    await wait_for(
        hass,
        lambda: (
            hass.states.get("sensor.hall_sensor_temperature") is not None
            and state_of(hass, "sensor.hall_sensor_temperature") == "21.5"
        ),
        "entities of the device added later",
    )
    assert len(entity_ids(hass, entry)) == 2 * ENTITY_COUNT


def _device_entry(
    hass: HomeAssistant, fake_account: FakeAccountService, device_id: str, title: str
) -> MockConfigEntry:
    """The entry the onboarding flow creates for ``device_id`` (no name typed), added."""
    onboarded = MockConfigEntry(
        domain=DOMAIN,
        version=2,
        unique_id=device_id,
        title=title,
        data={
            DEVICE_HOST: "192.0.2.10",
            DEVICE_PORT: 8423,
            DEVICE_MODEL: "pi-sensor",
            CONF_DEVICE_ID: device_id,
            CONF_HOUSEHOLD_ID: fake_account.household_id,
        },
    )
    onboarded.add_to_hass(hass)
    return onboarded


async def _onboard_hall_sensor(
    hass: HomeAssistant, fake_account: FakeAccountService, device_processes: DeviceProcesses
) -> MockConfigEntry:
    """Device ``dev2`` running and its entry set up (as the flow's ``create_entry`` does)."""
    await start_device(fake_account, device_processes, "dev2", name="Hall sensor")
    onboarded = _device_entry(hass, fake_account, "dev2", "Hall sensor")
    assert await hass.config_entries.async_setup(onboarded.entry_id)
    await wait_for(
        hass,
        lambda: state_of(hass, "sensor.hall_sensor_temperature") == "21.5",
        "the new device's entities, on the running hub",
    )
    return onboarded


async def test_a_device_entry_joins_the_running_hub_and_the_others_stay_available(
    hass: HomeAssistant, fake_account: FakeAccountService, device_processes: DeviceProcesses
) -> None:
    """A device just onboarded (its entry set up, as the flow's ``create_entry`` does) is added
    to the running hub and platforms: the household entry is not reloaded and no entity of the
    devices it already had goes unavailable, not even for a moment.
    """
    entry = await _ready(hass, fake_account, device_processes)
    running = entry.runtime_data  # a reload would build a new one
    others = set(entity_ids(hass, entry))
    went_unavailable: list[str] = []

    @callback
    def watch(event: Event[EventStateChangedData]) -> None:
        new = event.data["new_state"]
        if event.data["entity_id"] in others and (new is None or new.state == STATE_UNAVAILABLE):
            went_unavailable.append(event.data["entity_id"])

    stop = hass.bus.async_listen(EVENT_STATE_CHANGED, watch)
    onboarded = await _onboard_hall_sensor(hass, fake_account, device_processes)
    await hass.async_block_till_done()
    stop()
    assert went_unavailable == []
    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data is running
    assert onboarded.runtime_data is running
    assert len(entity_ids(hass, onboarded)) == ENTITY_COUNT
    assert set(entity_ids(hass, entry)) == others


async def test_a_device_added_to_the_running_hub_writes_no_other_entity(
    hass: HomeAssistant, fake_account: FakeAccountService, device_processes: DeviceProcesses
) -> None:
    """Adding a device (its entry set up, the account service's list read again) writes the
    state of its own entities only: the other devices' entities are not written again, not even
    unchanged (``last_reported`` moves on every write; at 1,000 devices that was 5,000 writes).
    """
    entry = await _ready(hass, fake_account, device_processes)
    others = entity_ids(hass, entry, enabled_only=True)

    def last_written() -> dict[str, Any]:
        states = {entity_id: hass.states.get(entity_id) for entity_id in others}
        return {
            entity_id: state.last_reported if state is not None else None
            for entity_id, state in states.items()
        }

    before = last_written()
    assert all(before.values())
    await _onboard_hall_sensor(hass, fake_account, device_processes)
    await entry.runtime_data.coordinator.async_sync_now()  # a later sync writes none either
    await hass.async_block_till_done()
    assert last_written() == before


async def test_the_name_chosen_in_the_flow_names_the_device_and_its_entity_ids(
    hass: HomeAssistant, fake_account: FakeAccountService, device_processes: DeviceProcesses
) -> None:
    """The device entry's name wins over the descriptor's, also when a descriptor comes later.

    Entity ids are made from the registry device's name when an entity is first registered;
    every entity added passes its ``DeviceInfo`` name on to the registry device.
    """
    await start_device(fake_account, device_processes, "dev1")  # descriptor: "Kitchen sensor"
    onboarded = MockConfigEntry(
        domain=DOMAIN,
        version=2,
        unique_id="dev1",
        title="Porch light",
        data={
            DEVICE_HOST: "192.0.2.10",
            DEVICE_PORT: 8423,
            DEVICE_MODEL: "pi-sensor",
            DEVICE_NAME: "Porch light",
            CONF_DEVICE_ID: "dev1",
            CONF_HOUSEHOLD_ID: fake_account.household_id,
        },
    )
    onboarded.add_to_hass(hass)
    await setup_entry(hass, fake_account)
    await wait_for(
        hass,
        lambda: state_of(hass, "sensor.porch_light_temperature") == "21.5",
        "the device entry's entities, named after the chosen name",
    )
    assert len(entity_ids(hass, onboarded)) == ENTITY_COUNT
    # A new descriptor (firmware update: one entity more) brings a new entity, not a new name.
    meta = meta_for("dev1")
    meta["entities"].append({"key": "relay2", "platform": "switch", "name": "Second relay"})
    await publish_as_device(fake_account, "dev1", "meta", json.dumps(meta).encode())
    await wait_for(
        hass,
        lambda: hass.states.get("switch.porch_light_second_relay") is not None,
        "the new entity",
    )
    device = find_device(hass, "dev1", onboarded.entry_id)
    assert device is not None
    assert (device.name, device.name_by_user) == ("Porch light", None)


async def test_a_device_without_a_name_is_named_after_its_entry(
    hass: HomeAssistant, fake_account: FakeAccountService, device_processes: DeviceProcesses
) -> None:
    """No name typed, none in the descriptor: the entry's title (model's name and short id)."""
    await start_device(fake_account, device_processes, "dev1", name="")
    _device_entry(hass, fake_account, "dev1", "Test sensor DEV1")
    await setup_entry(hass, fake_account)
    await wait_for(
        hass,
        lambda: state_of(hass, "sensor.test_sensor_dev1_temperature") == "21.5",
        "entities named after the device entry's title",
    )


async def test_device_released_elsewhere_is_removed_at_the_next_sync(
    hass: HomeAssistant,
    real_account_service: RealAccount,
    device_processes: DeviceProcesses,
) -> None:
    entry, owned = await _claimed(hass, real_account_service, device_processes)
    device = owned.device_id
    # Released from another client: the owner's own session, through the /v1 API.
    await real_account_service.owner.release_device(real_account_service.household_id, device)
    async_fire_time_changed(hass, dt_util.utcnow() + SYNC_INTERVAL)
    await wait_for(
        hass,
        lambda: find_device(hass, device, entry.entry_id) is None and not entity_ids(hass, entry),
        "the device and its entities removed",
    )
    assert hass.states.get("sensor.kitchen_sensor_temperature") is None


def test_translated_keys_are_the_shipped_translations() -> None:
    """An entity is named from a translation exactly when en.json ships one for its key."""
    translations = json.loads(
        (Path(entity.__file__).parent / "translations" / "en.json").read_text(encoding="utf-8")
    )["entity"]
    shipped = {platform: frozenset(keys) for platform, keys in translations.items()}
    assert shipped == entity.TRANSLATED
