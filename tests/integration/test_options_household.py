"""The household entry's options against the real account service (issue 16 items 5 and 6):
MQTT credentials for other tools, handing the household over, deleting it.

The credentials' passwords are tried on the session's real Mosquitto (the broker the service
manages); roles, hand-over and deletion are checked at the service itself.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import aiomqtt
import pytest
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import issue_registry as ir
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.iot_onboard.account_client import (
    AccountClient,
    DeviceAccess,
    HouseholdNotFoundError,
    MqttAccess,
    Role,
    ShareAccess,
)
from custom_components.iot_onboard.const import CONF_DEVICE_ID, CONF_HOUSEHOLD_ID, DOMAIN
from custom_components.iot_onboard.iob_protocol.account_api import RegistryDevice
from custom_components.iot_onboard.options_flow import MQTT_TOOLS_DOCS

from .runtime_helpers import OPERATOR, RealAccount, setup_entry

type Result = dict[str, Any]


async def _open(hass: HomeAssistant, entry: MockConfigEntry, step: str) -> Result:
    """The options flow of ``entry``, past its menu to ``step``."""
    menu = await hass.config_entries.options.async_init(entry.entry_id)
    assert menu["type"] is FlowResultType.MENU
    assert step in menu["menu_options"]
    return dict(
        await hass.config_entries.options.async_configure(menu["flow_id"], {"next_step_id": step})
    )


async def assert_not_loaded_after_reload(
    hass: HomeAssistant, entry: MockConfigEntry, steps: tuple[str, ...]
) -> None:
    """With the service down, a reload leaves ``entry`` not loaded: each step says so."""
    await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.SETUP_RETRY
    for step in steps:
        unloaded = await _open(hass, entry, step)
        assert (unloaded["type"], unloaded["reason"]) == (FlowResultType.ABORT, "not_loaded")


async def _submit(hass: HomeAssistant, form: Result, user_input: dict[str, Any]) -> Result:
    return dict(await hass.config_entries.options.async_configure(form["flow_id"], user_input))


def _options(form: Result, field: str) -> list[Any]:
    """The choices a form's select field offers."""
    options: list[Any] = form["data_schema"].schema[field].config["options"]
    return options


def _suggested(form: Result, field: str) -> Any:
    """What a form shows pre-filled in ``field`` (None: empty)."""
    key = next(k for k in form["data_schema"].schema if k == field)
    return (key.description or {}).get("suggested_value")


async def _connects(mqtt: Result) -> None:
    """Connect to the broker with a credential as a tool would, and subscribe to ``iob/#``."""
    login = {key: mqtt[key] for key in ("username", "password")}
    host, port = mqtt["host"], int(mqtt["port"])
    async with aiomqtt.Client(host, port, identifier=mqtt["client_id"], **login) as client:
        await client.subscribe("iob/#")


async def _registry_owner(account: RealAccount, device_id: str) -> str | None:
    """The household that owns ``device_id``, as the service's operator sees it (registry)."""
    operator = await AccountClient(account.service.url, session=account.http).sign_in(*OPERATOR)
    async with account.http.get(
        f"{account.service.url}/v1/admin/registry/devices/{device_id}",
        headers={"Authorization": f"Bearer {operator.tokens.access_token}"},
    ) as reply:
        assert reply.status == 200, await reply.text()
        return RegistryDevice.parse(await reply.json()).household_id


async def _create_form(hass: HomeAssistant, entry: MockConfigEntry) -> Result:
    menu = await _open(hass, entry, "mqtt_access")
    return await _submit(hass, menu, {"next_step_id": "mqtt_create"})


async def _mint(hass: HomeAssistant, entry: MockConfigEntry, label: str, access: str) -> Result:
    return await _submit(hass, await _create_form(hass, entry), {"label": label, "access": access})


async def test_a_tool_credential_is_shown_once_connects_is_listed_and_revoked(
    hass: HomeAssistant, real_account_service: RealAccount, caplog: pytest.LogCaptureFixture
) -> None:
    """Mint (its password connects to the broker and is kept nowhere), list, revoke (it no
    longer connects)."""
    caplog.set_level(logging.DEBUG)
    account = real_account_service
    entry = await setup_entry(hass, account)
    menu = await _open(hass, entry, "mqtt_access")
    assert menu["type"] is FlowResultType.MENU
    assert menu["menu_options"] == ["mqtt_create"]  # nothing to revoke yet
    assert menu["description_placeholders"]["count"] == "0"
    form = await _submit(hass, menu, {"next_step_id": "mqtt_create"})
    assert form["type"] is FlowResultType.FORM
    # No device yet: control is offered (a credential follows the devices claimed later).
    assert _options(form, "access") == ["read", "control"]
    shown = await _submit(hass, form, {"label": "Node-RED", "access": "read"})
    assert (shown["type"], shown["reason"]) == (FlowResultType.ABORT, "mqtt_created")
    mqtt = shown["description_placeholders"]
    assert mqtt["username"].startswith("tool-")
    assert mqtt["client_id"] == mqtt["username"]
    assert (mqtt["label"], mqtt["access"], mqtt["tls"]) == ("Node-RED", "read", "false")
    assert mqtt["docs"] == MQTT_TOOLS_DOCS
    await _connects(mqtt)
    password = mqtt["password"]
    assert password not in json.dumps({**entry.data, **entry.options})
    assert password not in caplog.text

    listed = await _open(hass, entry, "mqtt_access")
    assert listed["menu_options"] == ["mqtt_create", "mqtt_revoke"]
    assert listed["description_placeholders"]["count"] == "1"
    assert (
        f"Node-RED (read, {mqtt['username']}, " in listed["description_placeholders"]["credentials"]
    )
    tools = await account.owner.mqtt_credentials(account.household_id)
    assert [(t.label, t.access, t.username) for t in tools] == [
        ("Node-RED", MqttAccess.READ, mqtt["username"])
    ]

    pick = await _submit(hass, listed, {"next_step_id": "mqtt_revoke"})
    [option] = _options(pick, "credential")
    assert option["value"] == tools[0].credential_id
    assert option["label"].startswith(f"Node-RED (read, {mqtt['username']}, ")
    confirm = await _submit(hass, pick, {"credential": option["value"]})
    assert (confirm["type"], confirm["step_id"]) == (FlowResultType.FORM, "mqtt_revoke_confirm")
    assert confirm["description_placeholders"]["credential"] == option["label"]
    revoked = await _submit(hass, confirm, {})
    assert (revoked["type"], revoked["reason"]) == (FlowResultType.ABORT, "mqtt_revoked")
    with pytest.raises(aiomqtt.MqttError):
        await _connects(mqtt)
    assert await account.owner.mqtt_credentials(account.household_id) == []
    assert password not in caplog.text
    service_log = (account.service.directory / "relay.log").read_text(errors="replace")
    # The service logged the requests (the revocation's path), not the password.
    assert f"mqtt-credentials/{tools[0].credential_id}" in service_log
    assert password not in service_log


async def test_a_credential_revoked_meanwhile_and_a_control_credential(
    hass: HomeAssistant, real_account_service: RealAccount
) -> None:
    """A household that owns a device is offered control; a credential revoked elsewhere while
    the confirmation is open counts as revoked."""
    account = real_account_service
    await account.claim_new_device()
    entry = await setup_entry(hass, account)
    assert set(entry.runtime_data.coordinator.access.values()) == {DeviceAccess.OWNER}
    shown = await _mint(hass, entry, "Automations", "control")
    assert (shown["reason"], shown["description_placeholders"]["access"]) == (
        "mqtt_created",
        "control",
    )
    await _connects(shown["description_placeholders"])
    menu = await _open(hass, entry, "mqtt_access")
    pick = await _submit(hass, menu, {"next_step_id": "mqtt_revoke"})
    [option] = _options(pick, "credential")
    confirm = await _submit(hass, pick, {"credential": option["value"]})
    await account.owner.revoke_mqtt_credential(account.household_id, option["value"])
    revoked = await _submit(hass, confirm, {})
    assert (revoked["type"], revoked["reason"]) == (FlowResultType.ABORT, "mqtt_revoked")


async def test_control_is_not_offered_for_read_only_shares(
    hass: HomeAssistant, real_account_service: RealAccount
) -> None:
    """A household whose only device is shared with it read-only: read only."""
    account = real_account_service
    owned = await account.claim_new_device()
    cabin = await account.owner.create_household("Cabin")
    await account.owner.share_device(
        account.household_id, owned.device_id, cabin.household_id, ShareAccess.READ
    )
    entry = await setup_entry(hass, account, household=(cabin.household_id, "Cabin"))
    assert entry.runtime_data.coordinator.access == {owned.device_id: DeviceAccess.READ}
    menu = await _open(hass, entry, "mqtt_access")
    form = await _submit(hass, menu, {"next_step_id": "mqtt_create"})
    assert _options(form, "access") == ["read"]


async def test_the_limit_and_a_refused_label_are_shown_on_the_form(
    hass: HomeAssistant, real_account_service: RealAccount
) -> None:
    """A label the service refuses blames the label (the access stays); at 20 credentials the
    form says to revoke one."""
    account = real_account_service
    entry = await setup_entry(hass, account)
    menu = await _open(hass, entry, "mqtt_access")
    form = await _submit(hass, menu, {"next_step_id": "mqtt_create"})
    refused = await _submit(hass, form, {"label": "bell\x07", "access": "control"})
    assert refused["errors"] == {"label": "invalid_label"}
    assert "invalid_request" in refused["description_placeholders"]["error"]
    assert (_suggested(refused, "label"), _suggested(refused, "access")) == (None, "control")
    for number in range(20):
        await account.owner.create_mqtt_credential(
            account.household_id, f"tool {number}", MqttAccess.READ
        )
    full = await _submit(hass, refused, {"label": "one too many", "access": "read"})
    assert full["errors"] == {"base": "mqtt_credential_limit"}
    assert _suggested(full, "label") == "one too many"
    assert len(await account.owner.mqtt_credentials(account.household_id)) == 20


@pytest.mark.parametrize("role", [Role.MEMBER, Role.VIEWER])
async def test_an_entry_whose_account_lost_its_admin_role_gets_the_role_error(
    hass: HomeAssistant, real_account_service: RealAccount, role: Role
) -> None:
    """The entry's account was an admin when it was set up (only admins and the owner get the
    hub's credentials), then the owner made it a member or viewer: MQTT access and the
    owner's steps say who may do them."""
    account = real_account_service
    admin = await account.join("admin", "Alice")
    entry = await setup_entry(hass, admin)
    assert entry.state is ConfigEntryState.LOADED
    # An admin may manage tool credentials but not hand over or delete the household.
    assert (await _open(hass, entry, "mqtt_access"))["type"] is FlowResultType.MENU
    for step in ("hand_over", "delete_household"):
        refused = await _open(hass, entry, step)
        assert (refused["type"], refused["reason"]) == (FlowResultType.ABORT, "owner_only")
    members = await account.owner.members(account.household_id)
    alice = next(m for m in members if m.account_id == admin.signed_in.account.account_id)
    await account.owner.update_member(account.household_id, alice.member_id, role=role)
    refused = await _open(hass, entry, "mqtt_access")
    assert (refused["type"], refused["reason"]) == (FlowResultType.ABORT, "mqtt_forbidden")
    assert "forbidden" in refused["description_placeholders"]["error"]


async def test_hand_over_makes_a_member_with_an_account_the_owner(
    hass: HomeAssistant, real_account_service: RealAccount
) -> None:
    """Only members with an account are offered; afterwards the entry's account is an admin,
    and a form opened before the hand-over is refused with the owner's error."""
    account = real_account_service
    entry = await setup_entry(hass, account)
    alone = await _open(hass, entry, "hand_over")
    assert (alone["type"], alone["reason"]) == (FlowResultType.ABORT, "no_hand_over_candidate")
    await account.owner.add_member(
        account.household_id, external_id="ha:someone", display_name="Bob", role=Role.ADMIN
    )
    alice = await account.join("member", "Alice")
    early = await _open(hass, entry, "hand_over")  # still the owner's form
    form = await _open(hass, entry, "hand_over")
    assert form["description_placeholders"]["household"] == "Home"
    [option] = _options(form, "member")
    assert option["label"] == "Alice (member)"
    done = await _submit(hass, form, {"member": option["value"]})
    assert (done["type"], done["reason"]) == (FlowResultType.ABORT, "handed_over")
    assert done["description_placeholders"] == {"household": "Home", "member": "Alice (member)"}
    roles = {m.display_name: m.role for m in await account.owner.members(account.household_id)}
    assert roles == {"Alice": Role.OWNER, "Owner": Role.ADMIN, "Bob": Role.ADMIN}
    [home] = await alice.owner.households()
    assert home.role is Role.OWNER
    late = await _submit(hass, early, {"member": option["value"]})
    assert (late["type"], late["errors"]) == (FlowResultType.FORM, {"base": "owner_only"})
    again = await _open(hass, entry, "hand_over")
    assert (again["type"], again["reason"]) == (FlowResultType.ABORT, "owner_only")


async def test_deleting_the_household_needs_its_name_and_removes_its_entries(
    hass: HomeAssistant, real_account_service: RealAccount, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong name deletes nothing and clears only that field; the right name deletes the
    household at the service (404 afterwards), releases its device and removes the household
    entry and the device's entry without trying to release it again."""
    caplog.set_level(logging.INFO)
    account = real_account_service
    owned = await account.claim_new_device()
    entry = await setup_entry(hass, account)
    device_entry = MockConfigEntry(
        domain=DOMAIN,
        title="Kitchen sensor",
        unique_id=owned.device_id,
        data={CONF_DEVICE_ID: owned.device_id, CONF_HOUSEHOLD_ID: account.household_id},
    )
    device_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(device_entry.entry_id)
    await hass.async_block_till_done()
    assert device_entry.state is ConfigEntryState.LOADED

    form = await _open(hass, entry, "delete_household")
    assert form["description_placeholders"]["household"] == "Home"
    wrong = await _submit(hass, form, {"confirm_name": "Hmoe"})
    assert (wrong["type"], wrong["errors"]) == (
        FlowResultType.FORM,
        {"confirm_name": "confirmation_mismatch"},
    )
    assert _suggested(wrong, "confirm_name") is None
    assert [d.device_id for d in await account.owner.devices(account.household_id)] == [
        owned.device_id
    ]
    assert await _registry_owner(account, owned.device_id) == account.household_id
    deleted = await _submit(hass, wrong, {"confirm_name": "Home"})
    assert (deleted["type"], deleted["reason"]) == (FlowResultType.ABORT, "household_deleted")
    assert deleted["description_placeholders"] == {"household": "Home", "devices": "1"}
    await hass.async_block_till_done()
    assert hass.config_entries.async_entries(DOMAIN) == []
    # No repair issue is left about the entry that is gone (the hub may have seen the 404).
    assert not [i for (domain, i) in ir.async_get(hass).issues if domain == DOMAIN]
    with pytest.raises(HouseholdNotFoundError) as gone:
        await account.owner.devices(account.household_id)
    assert gone.value.status == 404
    assert "Household Home deleted at the account service (1 device(s) released)" in caplog.text
    assert (await _registry_owner(account, owned.device_id)) is None  # released: claimable again
    assert "not released" not in caplog.text
    assert "Releasing" not in caplog.text


async def test_a_refusal_after_the_name_keeps_what_was_typed(
    hass: HomeAssistant, real_account_service: RealAccount
) -> None:
    """The household was handed over while the deletion form was open: the service refuses
    (403), the form says only the owner can, and the typed name stays."""
    account = real_account_service
    entry = await setup_entry(hass, account)
    form = await _open(hass, entry, "delete_household")
    alice = await account.join("admin", "Alice")
    members = await account.owner.members(account.household_id)
    to = next(m for m in members if m.account_id == alice.signed_in.account.account_id)
    await account.owner.hand_over(account.household_id, to.member_id)
    refused = await _submit(hass, form, {"confirm_name": "Home"})
    assert refused["errors"] == {"base": "owner_only"}
    assert _suggested(refused, "confirm_name") == "Home"
    assert [h.name for h in await alice.owner.households()] == ["Home"]


async def test_a_household_deleted_elsewhere_is_named_gone(
    hass: HomeAssistant, real_account_service: RealAccount
) -> None:
    """Deleted at the service while the entry is still loaded: every step says so."""
    account = real_account_service
    entry = await setup_entry(hass, account)
    await account.owner.delete_household(account.household_id, "Home")
    for step in ("mqtt_access", "hand_over", "delete_household"):
        gone = await _open(hass, entry, step)
        assert (gone["type"], gone["reason"]) == (FlowResultType.ABORT, "household_gone"), step


async def test_the_service_down_is_cannot_connect_with_the_next_step(
    hass: HomeAssistant, real_account_service_own_broker: RealAccount
) -> None:
    """The service stops while forms are open: each shows cannot_connect and keeps what was
    typed; opening a step then aborts with it; once the entry is not loaded, not_loaded."""
    account = real_account_service_own_broker
    await account.owner.create_mqtt_credential(account.household_id, "Telegraf", MqttAccess.READ)
    entry = await setup_entry(hass, account)
    menu = await _open(hass, entry, "mqtt_access")
    create = await _submit(hass, menu, {"next_step_id": "mqtt_create"})
    menu = await _open(hass, entry, "mqtt_access")
    pick = await _submit(hass, menu, {"next_step_id": "mqtt_revoke"})
    [option] = _options(pick, "credential")
    confirm = await _submit(hass, pick, {"credential": option["value"]})
    delete = await _open(hass, entry, "delete_household")
    account.service.stop()

    created = await _submit(hass, create, {"label": "Node-RED", "access": "read"})
    assert created["errors"] == {"base": "cannot_connect"}
    assert _suggested(created, "label") == "Node-RED"
    revoked = await _submit(hass, confirm, {})
    assert revoked["errors"] == {"base": "cannot_connect"}
    deleted = await _submit(hass, delete, {"confirm_name": "Home"})
    assert deleted["errors"] == {"base": "cannot_connect"}
    assert _suggested(deleted, "confirm_name") == "Home"
    for step in ("mqtt_access", "hand_over"):
        down = await _open(hass, entry, step)
        assert (down["type"], down["reason"]) == (FlowResultType.ABORT, "cannot_connect"), step

    await assert_not_loaded_after_reload(hass, entry, ("mqtt_access", "hand_over"))
