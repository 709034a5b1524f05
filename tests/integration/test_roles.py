"""The role matrix: owner/admin/member/viewer/unmapped users and automations x every action.

Entity actions (switch, button, number) and IoT Onboard actions are checked against the
caller's household role (members read from the account service), before anything is sent.
Refusals are translated ServiceValidationErrors. The account service is the real one
(``real_account_service``): members, shares and transfers are made and checked through its API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from homeassistant.auth.models import User
from homeassistant.const import ATTR_ENTITY_ID, EVENT_STATE_CHANGED
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    MockUser,
    async_capture_events,
)

from custom_components.iot_onboard.account_client import Role, ShareAccess
from custom_components.iot_onboard.const import (
    CONF_AUTOMATION_ROLE,
    CONF_UNMAPPED_ROLE,
    DOMAIN,
    EXTERNAL_ID_PREFIX,
)
from custom_components.iot_onboard.helpers import find_device
from tests.integration.runtime_helpers import (
    DeviceProcesses,
    RealAccount,
    kitchen_relay_off,
    setup_entry,
    start_claimed_device,
    wait_for,
)

ROLES = ("owner", "admin", "member", "viewer")
#: action -> the lowest role allowed.
NEEDS = {
    "switch": "member",
    "button": "member",
    "number": "member",
    "identify": "member",
    "share": "admin",
    "release": "admin",
    "transfer": "owner",
}
RANK = {"viewer": 0, "member": 1, "admin": 2, "owner": 3}


@dataclass(frozen=True)
class Ready:
    """A household with one claimed device, one HA user per role and a neighbour household."""

    entry: MockConfigEntry
    users: dict[str, User]
    device: str
    neighbour: str


async def _call(hass: HomeAssistant, ready: Ready, action: str, context: Context) -> None:
    """Run ``action`` as ``context``; the device answers (real account service and broker)."""
    device = find_device(hass, ready.device, ready.entry.entry_id)
    assert device is not None
    calls: dict[str, tuple[str, str, dict[str, Any]]] = {
        "switch": ("switch", "turn_on", {ATTR_ENTITY_ID: "switch.kitchen_sensor_relay"}),
        "button": ("button", "press", {ATTR_ENTITY_ID: "button.kitchen_sensor_identify"}),
        "number": (
            "number",
            "set_value",
            {ATTR_ENTITY_ID: "number.kitchen_sensor_setpoint", "value": 21.0},
        ),
        "identify": (DOMAIN, "identify", {"device_id": device.id}),
        "share": (
            DOMAIN,
            "share",
            {"device_id": device.id, "household_id": ready.neighbour, "access": "read"},
        ),
        "release": (DOMAIN, "release", {"device_id": device.id}),
        "transfer": (DOMAIN, "transfer", {"device_id": device.id, "household_id": ready.neighbour}),
    }
    domain, service, data = calls[action]
    await hass.services.async_call(domain, service, data, blocking=True, context=context)


async def _users(hass: HomeAssistant, account: RealAccount) -> dict[str, User]:
    """One HA user per role, mapped as household members at the service; plus one unmapped."""
    users: dict[str, User] = {}
    for role in (*ROLES, "unmapped"):
        users[role] = await hass.auth.async_create_user(f"{role} user", group_ids=["system-users"])
    household, owner = account.household_id, account.owner
    members = await owner.members(household)
    mine = next(m for m in members if m.role is Role.OWNER)
    await owner.update_member(
        household, mine.member_id, external_id=EXTERNAL_ID_PREFIX + users["owner"].id
    )
    for role in (Role.ADMIN, Role.MEMBER, Role.VIEWER):
        await owner.add_member(
            household, external_id=EXTERNAL_ID_PREFIX + users[role].id, display_name=role, role=role
        )
    return users


async def _entities(hass: HomeAssistant) -> None:
    await kitchen_relay_off(hass)


async def _neighbour(account: RealAccount) -> RealAccount:
    """Another owner's household at the same service."""
    return await RealAccount.sign_up(account.service, account.http)


@pytest.fixture
async def ready(
    hass: HomeAssistant, real_account_service: RealAccount, device_processes: DeviceProcesses
) -> Ready:
    """A household with one device and one HA user per role."""
    users = await _users(hass, real_account_service)
    owned = await start_claimed_device(real_account_service, device_processes)
    neighbour = await _neighbour(real_account_service)
    entry = await setup_entry(hass, real_account_service)
    await _entities(hass)
    return Ready(entry, users, owned.device_id, neighbour.household_id)


@pytest.mark.parametrize("action", list(NEEDS))
async def test_role_matrix(
    hass: HomeAssistant, real_account_service: RealAccount, ready: Ready, action: str
) -> None:
    users = ready.users
    for role in (*ROLES, "unmapped"):
        recorded = await real_account_service.audit_actions()
        context = Context(user_id=users[role].id)
        allowed = role != "unmapped" and RANK[role] >= RANK[NEEDS[action]]
        if action == "release" and allowed:
            continue  # released once below, by the lowest allowed role
        if allowed:
            await _call(hass, ready, action, context)
            continue
        with pytest.raises(ServiceValidationError) as refused:
            await _call(hass, ready, action, context)
        kind = "unmapped" if role == "unmapped" else "user"
        assert refused.value.translation_key == f"permission_denied_{kind}", role
        placeholders = refused.value.translation_placeholders or {}
        assert placeholders["needed"] == NEEDS[action]
        assert placeholders["role"] == ("viewer" if role == "unmapped" else role)
        # Nothing reached the account service for a refused management action.
        assert await real_account_service.audit_actions() == recorded, role
    if action == "release":
        await _call(hass, ready, "release", Context(user_id=users["admin"].id))
        assert find_device(hass, ready.device, ready.entry.entry_id) is None


async def test_automation_role_follows_the_option(hass: HomeAssistant, ready: Ready) -> None:
    entry = ready.entry
    automation = Context()  # no user: an automation
    await _call(hass, ready, "switch", automation)  # default: member
    with pytest.raises(ServiceValidationError) as refused:
        await _call(hass, ready, "share", automation)
    assert refused.value.translation_key == "permission_denied_automation"

    hass.config_entries.async_update_entry(
        entry, options={CONF_AUTOMATION_ROLE: "viewer", CONF_UNMAPPED_ROLE: "viewer"}
    )
    for action in ("switch", "button", "number"):
        with pytest.raises(ServiceValidationError) as refused:
            await _call(hass, ready, action, automation)
        assert refused.value.translation_key == "permission_denied_automation"

    hass.config_entries.async_update_entry(
        entry, options={CONF_AUTOMATION_ROLE: "admin", CONF_UNMAPPED_ROLE: "viewer"}
    )
    await _call(hass, ready, "share", automation)


async def test_unmapped_users_follow_the_option(hass: HomeAssistant, ready: Ready) -> None:
    entry, users = ready.entry, ready.users
    unmapped = Context(user_id=users["unmapped"].id)
    with pytest.raises(ServiceValidationError):
        await _call(hass, ready, "switch", unmapped)
    hass.config_entries.async_update_entry(
        entry, options={CONF_AUTOMATION_ROLE: "member", CONF_UNMAPPED_ROLE: "member"}
    )
    await _call(hass, ready, "switch", unmapped)
    with pytest.raises(ServiceValidationError) as refused:
        await _call(hass, ready, "release", unmapped)
    assert refused.value.translation_key == "permission_denied_unmapped"


async def test_unmapped_ha_administrators_act_as_household_admin(
    hass: HomeAssistant, real_account_service: RealAccount, ready: Ready
) -> None:
    """The HA admin who just onboarded a device can use it before mapping themselves.

    They could map themselves in the (admin-only) options anyway; only a transfer needs the
    mapped owner. A non-admin unmapped user still gets the option's role (viewer).
    """
    users = ready.users
    admin = await hass.auth.async_create_user("HA admin", group_ids=["system-admin"])
    assert admin.is_admin
    context = Context(user_id=admin.id)
    await _call(hass, ready, "switch", context)
    await _call(hass, ready, "share", context)
    assert "device.shared" in await real_account_service.audit_actions()
    with pytest.raises(ServiceValidationError) as refused:
        await _call(hass, ready, "transfer", context)
    assert refused.value.translation_key == "permission_denied_ha_admin"
    assert (refused.value.translation_placeholders or {})["needed"] == "owner"
    with pytest.raises(ServiceValidationError) as refused:
        await _call(hass, ready, "switch", Context(user_id=users["unmapped"].id))
    assert refused.value.translation_key == "permission_denied_unmapped"


async def test_read_only_share_refuses_control_for_everyone(
    hass: HomeAssistant, real_account_service: RealAccount, device_processes: DeviceProcesses
) -> None:
    """A neighbour's device shared into the household read-only, by the neighbour's owner."""
    users = await _users(hass, real_account_service)
    neighbour = await _neighbour(real_account_service)
    owned = await start_claimed_device(neighbour, device_processes)
    await neighbour.owner.share_device(
        neighbour.household_id,
        owned.device_id,
        real_account_service.household_id,
        ShareAccess.READ,
    )
    entry = await setup_entry(hass, real_account_service)
    await _entities(hass)
    ready = Ready(entry, users, owned.device_id, neighbour.household_id)
    with pytest.raises(ServiceValidationError) as refused:
        await _call(hass, ready, "switch", Context(user_id=users["owner"].id))
    assert refused.value.translation_key == "device_read_only"
    with pytest.raises(ServiceValidationError) as refused:
        await _call(hass, ready, "share", Context(user_id=users["owner"].id))
    assert refused.value.translation_key == "device_not_owned"


@pytest.mark.parametrize(
    ("entity_id", "service", "data"),
    [
        ("switch.kitchen_sensor_relay", "turn_on", {}),
        ("number.kitchen_sensor_setpoint", "set_value", {"value": 25.0}),
    ],
)
async def test_a_refused_control_shows_the_real_state_again(
    hass: HomeAssistant,
    ready: Ready,
    entity_id: str,
    service: str,
    data: dict[str, Any],
) -> None:
    """The frontend shows the requested state until a state_changed event: one comes.

    Home Assistant's toggle switches at once and only goes back when the entity's state object
    changes; an unchanged write would only be "reported". So the refusal re-sends the real state
    as a change, and the viewer sees the switch off again (and the number's real value).
    """
    users = ready.users
    before = hass.states.get(entity_id)
    assert before is not None
    changes = async_capture_events(hass, EVENT_STATE_CHANGED)
    with pytest.raises(ServiceValidationError) as refused:
        await hass.services.async_call(
            entity_id.split(".", maxsplit=1)[0],
            service,
            {ATTR_ENTITY_ID: entity_id, **data},
            blocking=True,
            context=Context(user_id=users["viewer"].id),
        )
    assert refused.value.translation_key == "permission_denied_user"
    mine = [e for e in changes if e.data["entity_id"] == entity_id]
    assert len(mine) == 1, changes
    new_state = mine[0].data["new_state"]
    assert new_state is not None
    assert new_state.state == before.state
    assert new_state.attributes == before.attributes
    assert new_state.last_updated > before.last_updated


async def test_home_assistants_owner_stands_for_an_unlinked_household_owner(
    hass: HomeAssistant,
    real_account_service: RealAccount,
    device_processes: DeviceProcesses,
    hass_owner_user: MockUser,
) -> None:
    """As the roles dialog shows it: whoever created the household here may transfer.

    The owner's record links no user (as after the first device's flow); Home Assistant's
    owner acts as the household's owner, another administrator still as admin.
    """
    other_admin = await hass.auth.async_create_user("Ann", group_ids=["system-admin"])
    owned = await start_claimed_device(real_account_service, device_processes)
    neighbour = await _neighbour(real_account_service)
    entry = await setup_entry(hass, real_account_service)
    await wait_for(
        hass, lambda: hass.states.get("switch.kitchen_sensor_relay") is not None, "the entities"
    )
    ready = Ready(entry, {}, owned.device_id, neighbour.household_id)
    with pytest.raises(ServiceValidationError) as refused:
        await _call(hass, ready, "transfer", Context(user_id=other_admin.id))
    assert refused.value.translation_key == "permission_denied_ha_admin"
    await _call(hass, ready, "transfer", Context(user_id=hass_owner_user.id))
    transfers = (await real_account_service.get("/transfers"))["transfers"]
    assert [(t["device_id"], t["to_household_id"]) for t in transfers] == [
        (owned.device_id, neighbour.household_id)
    ]
