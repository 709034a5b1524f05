"""IoT Onboard actions against the fake account service and a real broker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import device_registry as dr
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.iot_onboard.const import DOMAIN
from custom_components.iot_onboard.helpers import find_device
from tests.integration.fake_account import FakeAccountService
from tests.integration.runtime_helpers import (
    DeviceProcesses,
    entity_ids,
    observer,
    owner_context,
    setup_entry,
    start_device,
    state_of,
    wait_for,
)


async def _ready(
    hass: HomeAssistant,
    fake_account: FakeAccountService,
    device_processes: DeviceProcesses,
    **meta_extra: Any,
) -> tuple[MockConfigEntry, str, Context]:
    context = await owner_context(hass, fake_account)
    await start_device(fake_account, device_processes, "dev1", **meta_extra)
    entry = await setup_entry(hass, fake_account)
    await wait_for(
        hass,
        lambda: (
            hass.states.get("switch.kitchen_sensor_relay") is not None
            and state_of(hass, "switch.kitchen_sensor_relay") == "off"
        ),
        "the device's entities",
    )
    device = find_device(hass, "dev1", entry.entry_id)
    assert device is not None
    return entry, device.id, context


async def test_share_transfer_and_unshare_reach_the_account_service(
    hass: HomeAssistant, fake_account: FakeAccountService, device_processes: DeviceProcesses
) -> None:
    _entry, device_id, owner = await _ready(hass, fake_account, device_processes)
    share = await hass.services.async_call(
        DOMAIN,
        "share",
        {"device_id": device_id, "household_id": "h2", "access": "control"},
        blocking=True,
        context=owner,
        return_response=True,
    )
    assert share == {"device_id": "dev1", "household_id": "h2", "access": "control"}
    await hass.services.async_call(
        DOMAIN,
        "share",
        {"device_id": device_id, "household_id": "h2", "access": "none"},
        blocking=True,
        context=owner,
    )
    transfer = await hass.services.async_call(
        DOMAIN,
        "transfer",
        {"device_id": device_id, "household_id": "h3"},
        blocking=True,
        context=owner,
        return_response=True,
    )
    assert transfer is not None
    assert (transfer["to_household_id"], transfer["status"]) == ("h3", "pending")
    prefix = f"/v1/households/{fake_account.household_id}/devices/dev1"
    assert [c for c in fake_account.calls if c[0] != "GET"] == [
        ("PUT", f"{prefix}/shares/h2"),
        ("DELETE", f"{prefix}/shares/h2"),
        ("POST", f"{prefix}/transfers"),
    ]


async def test_release_removes_the_device_at_once(
    hass: HomeAssistant, fake_account: FakeAccountService, device_processes: DeviceProcesses
) -> None:
    entry, device_id, owner = await _ready(hass, fake_account, device_processes)
    await hass.services.async_call(
        DOMAIN, "release", {"device_id": device_id}, blocking=True, context=owner
    )
    assert dr.async_get(hass).async_get(device_id) is None
    assert entity_ids(hass, entry) == []
    assert "dev1" not in fake_account.devices  # the broker client is gone (session kicked)
    with pytest.raises(ServiceValidationError) as error:
        await hass.services.async_call(
            DOMAIN, "release", {"device_id": device_id}, blocking=True, context=owner
        )
    assert error.value.translation_key == "invalid_device"


async def test_identify_presses_the_identify_entity(
    hass: HomeAssistant, fake_account: FakeAccountService, device_processes: DeviceProcesses
) -> None:
    _entry, device_id, owner = await _ready(hass, fake_account, device_processes)
    async with await observer(fake_account.broker) as watcher:
        await watcher.subscribe("iob/dev1/cmd/#", qos=1)
        await hass.services.async_call(
            DOMAIN, "identify", {"device_id": device_id}, blocking=True, context=owner
        )
        async with asyncio.timeout(10):
            message = await anext(aiter(watcher.messages))
    assert (str(message.topic), message.payload) == ("iob/dev1/cmd/identify", b"press")


async def test_device_commands_need_firmware_support(
    hass: HomeAssistant, fake_account: FakeAccountService, device_processes: DeviceProcesses
) -> None:
    _entry, device_id, owner = await _ready(hass, fake_account, device_processes)
    with pytest.raises(ServiceValidationError) as error:
        await hass.services.async_call(
            DOMAIN, "factory_reset", {"device_id": device_id}, blocking=True, context=owner
        )
    assert error.value.translation_key == "factory_reset_unsupported"


async def test_factory_reset_when_the_firmware_offers_it(
    hass: HomeAssistant, fake_account: FakeAccountService, device_processes: DeviceProcesses
) -> None:
    _entry, device_id, owner = await _ready(
        hass, fake_account, device_processes, commands=["identify", "factory_reset"]
    )
    async with await observer(fake_account.broker) as watcher:
        await watcher.subscribe("iob/dev1/cmd/#", qos=1)
        await hass.services.async_call(
            DOMAIN, "factory_reset", {"device_id": device_id}, blocking=True, context=owner
        )
        async with asyncio.timeout(10):
            message = await anext(aiter(watcher.messages))
    assert (str(message.topic), message.payload) == (
        "iob/dev1/cmd/_factory_reset",
        b"factory_reset",
    )


async def test_rotate_credentials_reconnects_the_hub(
    hass: HomeAssistant, fake_account: FakeAccountService, device_processes: DeviceProcesses
) -> None:
    entry, _device_id, owner = await _ready(hass, fake_account, device_processes)
    old = fake_account.hub_password
    coordinator = entry.runtime_data.coordinator
    await hass.services.async_call(
        DOMAIN,
        "rotate_credentials",
        {"config_entry_id": entry.entry_id},
        blocking=True,
        context=owner,
    )
    assert fake_account.hub_password != old
    assert coordinator.hub.credentials.password == fake_account.hub_password
    # The broker kicked the old session; the hub is back with the new password.
    await wait_for(hass, lambda: not coordinator.connected, "the old session kicked")
    await wait_for(hass, lambda: coordinator.connected, "the hub back with the new password")


async def test_rotate_device_credentials_reaches_the_account_service(
    hass: HomeAssistant, fake_account: FakeAccountService, device_processes: DeviceProcesses
) -> None:
    """The device's own password is rotated there (the device then fetches it by itself)."""
    _entry, device_id, owner = await _ready(hass, fake_account, device_processes)
    old = fake_account.device_passwords["dev1"]
    fake_account.calls.clear()
    await hass.services.async_call(
        DOMAIN, "rotate_device_credentials", {"device_id": device_id}, blocking=True, context=owner
    )
    path = f"/v1/households/{fake_account.household_id}/devices/dev1/credentials"
    assert ("POST", path) in fake_account.calls
    assert fake_account.device_passwords["dev1"] != old
    # An unmapped non-admin user (the viewer role by default) may not.
    viewer = await hass.auth.async_create_user("guest", group_ids=["system-users"])
    fake_account.calls.clear()
    with pytest.raises(ServiceValidationError) as refused:
        await hass.services.async_call(
            DOMAIN,
            "rotate_device_credentials",
            {"device_id": device_id},
            blocking=True,
            context=Context(user_id=viewer.id),
        )
    assert refused.value.translation_key == "permission_denied_unmapped"
    assert not [c for c in fake_account.calls if c[0] != "GET"]


async def test_account_service_errors_are_translated(
    hass: HomeAssistant, fake_account: FakeAccountService, device_processes: DeviceProcesses
) -> None:
    _entry, device_id, owner = await _ready(
        hass, fake_account, device_processes, name="Kitchen sensor"
    )
    fake_account.devices["dev1"] = "owner"
    await fake_account.stop()  # the account service goes away
    with pytest.raises(HomeAssistantError) as error:
        await hass.services.async_call(
            DOMAIN,
            "share",
            {"device_id": device_id, "household_id": "h2", "access": "read"},
            blocking=True,
            context=owner,
        )
    assert error.value.translation_key == "account_unreachable"


async def test_actions_on_unknown_devices_and_entries(
    hass: HomeAssistant, fake_account: FakeAccountService, device_processes: DeviceProcesses
) -> None:
    _entry, _device_id, owner = await _ready(hass, fake_account, device_processes)
    with pytest.raises(ServiceValidationError) as error:
        await hass.services.async_call(
            DOMAIN, "identify", {"device_id": "nope"}, blocking=True, context=owner
        )
    assert error.value.translation_key == "invalid_device"
    with pytest.raises(ServiceValidationError) as error:
        await hass.services.async_call(
            DOMAIN, "rotate_credentials", {"config_entry_id": "nope"}, blocking=True, context=owner
        )
    assert error.value.translation_key == "entry_not_loaded"
