"""IoT Onboard actions against the real account service and a real broker.

The devices are claimed at the real service (``start_claimed_device``) and run as fake device
processes with the broker accounts it made; only the unreachable service is the fault injector.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiomqtt
import pytest
from aiomqtt.exceptions import MqttConnectError
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import device_registry as dr
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.iot_onboard.const import DOMAIN
from custom_components.iot_onboard.helpers import find_device
from custom_components.iot_onboard.iob_protocol.account_api import MqttCredentials, Owned
from tests.integration.fake_account import FakeAccountService
from tests.integration.runtime_helpers import (
    DeviceProcesses,
    RealAccount,
    entity_ids,
    kitchen_relay_off,
    observer,
    owner_context,
    real_owner_context,
    setup_entry,
    start_claimed_device,
    start_device,
    wait_for,
)


async def _entities_of(hass: HomeAssistant, entry: MockConfigEntry, device: str) -> str:
    """Wait for the device's entities; the registry device's id."""
    await kitchen_relay_off(hass)
    registered = find_device(hass, device, entry.entry_id)
    assert registered is not None
    return registered.id


async def _ready(
    hass: HomeAssistant,
    account: RealAccount,
    device_processes: DeviceProcesses,
    **meta_extra: Any,
) -> tuple[MockConfigEntry, str, Owned, Context]:
    """The owner linked, a device claimed and running, the entry set up: (entry, registry
    device id, the service's claim answer, the owner's context)."""
    context = await real_owner_context(hass, account)
    owned = await start_claimed_device(account, device_processes, **meta_extra)
    entry = await setup_entry(hass, account)
    return entry, await _entities_of(hass, entry, owned.device_id), owned, context


def _device_client(mqtt: MqttCredentials) -> aiomqtt.Client:
    """A connection as the device (its account and bound client id), as a second session."""
    return aiomqtt.Client(
        mqtt.host,
        mqtt.port,
        username=mqtt.username,
        password=mqtt.password,
        identifier=mqtt.client_id,
    )


async def _device_ids(account: RealAccount) -> set[str]:
    return {d.device_id for d in await account.owner.devices(account.household_id)}


async def test_share_transfer_and_unshare_reach_the_account_service(
    hass: HomeAssistant, real_account_service: RealAccount, device_processes: DeviceProcesses
) -> None:
    _entry, registered, owned, owner = await _ready(hass, real_account_service, device_processes)
    device = owned.device_id
    neighbour = await RealAccount.sign_up(real_account_service.service, real_account_service.http)
    share = await hass.services.async_call(
        DOMAIN,
        "share",
        {"device_id": registered, "household_id": neighbour.household_id, "access": "control"},
        blocking=True,
        context=owner,
        return_response=True,
    )
    assert share == {
        "device_id": device,
        "household_id": neighbour.household_id,
        "access": "control",
    }
    assert await _device_ids(neighbour) == {device}
    await hass.services.async_call(
        DOMAIN,
        "share",
        {"device_id": registered, "household_id": neighbour.household_id, "access": "none"},
        blocking=True,
        context=owner,
    )
    assert await _device_ids(neighbour) == set()
    transfer = await hass.services.async_call(
        DOMAIN,
        "transfer",
        {"device_id": registered, "household_id": neighbour.household_id},
        blocking=True,
        context=owner,
        return_response=True,
    )
    assert transfer is not None
    assert (transfer["to_household_id"], transfer["status"]) == (
        neighbour.household_id,
        "pending",
    )
    assert await _device_ids(real_account_service) == {device}  # until the neighbour accepts


async def test_release_removes_the_device_at_once(
    hass: HomeAssistant, real_account_service: RealAccount, device_processes: DeviceProcesses
) -> None:
    entry, registered, owned, owner = await _ready(hass, real_account_service, device_processes)
    await hass.services.async_call(
        DOMAIN, "release", {"device_id": registered}, blocking=True, context=owner
    )
    assert dr.async_get(hass).async_get(registered) is None
    assert entity_ids(hass, entry) == []
    assert owned.device_id not in await _device_ids(real_account_service)
    with pytest.raises(ServiceValidationError) as error:
        await hass.services.async_call(
            DOMAIN, "release", {"device_id": registered}, blocking=True, context=owner
        )
    assert error.value.translation_key == "invalid_device"


async def _command_seen(
    hass: HomeAssistant,
    account: RealAccount,
    ready: tuple[MockConfigEntry, str, Owned, Context],
    action: str,
) -> tuple[str, bytes]:
    """Call ``action`` on the device as its owner; the command the broker carried to it."""
    _entry, registered, owned, owner = ready
    device = owned.device_id
    async with await observer(account.service.broker, f"observer-{device}") as watcher:
        await watcher.subscribe(f"iob/{device}/cmd/#", qos=1)
        await hass.services.async_call(
            DOMAIN,
            action,
            {"device_id": registered},
            blocking=True,
            context=owner,
        )
        async with asyncio.timeout(10):
            message = await anext(aiter(watcher.messages))
    return str(message.topic), bytes(message.payload)


async def test_identify_presses_the_identify_entity(
    hass: HomeAssistant, real_account_service: RealAccount, device_processes: DeviceProcesses
) -> None:
    ready = await _ready(hass, real_account_service, device_processes)
    seen = await _command_seen(hass, real_account_service, ready, "identify")
    assert seen == (f"iob/{ready[2].device_id}/cmd/identify", b"press")


async def test_device_commands_need_firmware_support(
    hass: HomeAssistant, real_account_service: RealAccount, device_processes: DeviceProcesses
) -> None:
    _entry, registered, _device, owner = await _ready(hass, real_account_service, device_processes)
    with pytest.raises(ServiceValidationError) as error:
        await hass.services.async_call(
            DOMAIN, "factory_reset", {"device_id": registered}, blocking=True, context=owner
        )
    assert error.value.translation_key == "factory_reset_unsupported"


async def test_factory_reset_when_the_firmware_offers_it(
    hass: HomeAssistant, real_account_service: RealAccount, device_processes: DeviceProcesses
) -> None:
    ready = await _ready(
        hass, real_account_service, device_processes, commands=["identify", "factory_reset"]
    )
    seen = await _command_seen(hass, real_account_service, ready, "factory_reset")
    assert seen == (f"iob/{ready[2].device_id}/cmd/_factory_reset", b"factory_reset")


async def test_rotate_credentials_reconnects_the_hub(
    hass: HomeAssistant, real_account_service: RealAccount, device_processes: DeviceProcesses
) -> None:
    entry, _registered, _device, owner = await _ready(hass, real_account_service, device_processes)
    old = (await real_account_service.hub_credentials()).password
    coordinator = entry.runtime_data.coordinator
    await hass.services.async_call(
        DOMAIN,
        "rotate_credentials",
        {"config_entry_id": entry.entry_id},
        blocking=True,
        context=owner,
    )
    new = (await real_account_service.hub_credentials()).password
    assert new != old
    assert coordinator.hub.credentials.password == new
    # The broker kicked the old session; the hub is back with the new password.
    await wait_for(hass, lambda: not coordinator.connected, "the old session kicked")
    await wait_for(hass, lambda: coordinator.connected, "the hub back with the new password")


async def test_rotate_device_credentials_reaches_the_account_service(
    hass: HomeAssistant, real_account_service: RealAccount, device_processes: DeviceProcesses
) -> None:
    """The device's own password is rotated there (the device then fetches it by itself): the
    broker refuses the old one from then on."""
    entry, registered, owned, owner = await _ready(hass, real_account_service, device_processes)
    old = owned.mqtt
    async with _device_client(old):  # the old password works until the rotation
        pass
    await hass.services.async_call(
        DOMAIN, "rotate_device_credentials", {"device_id": registered}, blocking=True, context=owner
    )
    with pytest.raises(MqttConnectError):
        async with _device_client(old):
            pass
    # An unmapped non-admin user (the viewer role by default) may not.
    viewer = await hass.auth.async_create_user("guest", group_ids=["system-users"])
    with pytest.raises(ServiceValidationError) as refused:
        await hass.services.async_call(
            DOMAIN,
            "rotate_device_credentials",
            {"device_id": registered},
            blocking=True,
            context=Context(user_id=viewer.id),
        )
    assert refused.value.translation_key == "permission_denied_unmapped"
    assert find_device(hass, owned.device_id, entry.entry_id) is not None


async def test_account_service_errors_are_translated(
    hass: HomeAssistant, fake_account: FakeAccountService, device_processes: DeviceProcesses
) -> None:
    """A fault: the fault-injecting stand-in stops answering (the real service is not killed)."""
    context = await owner_context(hass, fake_account)
    await start_device(fake_account, device_processes, "dev1")
    entry = await setup_entry(hass, fake_account)
    device_id = await _entities_of(hass, entry, "dev1")
    await fake_account.stop()  # the account service goes away
    with pytest.raises(HomeAssistantError) as error:
        await hass.services.async_call(
            DOMAIN,
            "share",
            {"device_id": device_id, "household_id": "h2", "access": "read"},
            blocking=True,
            context=context,
        )
    assert error.value.translation_key == "account_unreachable"


async def test_actions_on_unknown_devices_and_entries(
    hass: HomeAssistant, real_account_service: RealAccount, device_processes: DeviceProcesses
) -> None:
    _entry, _registered, _device, owner = await _ready(hass, real_account_service, device_processes)
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
