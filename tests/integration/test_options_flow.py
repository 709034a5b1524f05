"""The options flow's less travelled paths (options_flow.py is gated at 100 % coverage).

The everyday paths (policies, mapping users and the owner) are in test_init.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from pytest_homeassistant_custom_component.common import MockConfigEntry, MockUser

from custom_components.iot_onboard import wifi_memory
from custom_components.iot_onboard.account_client import Role
from custom_components.iot_onboard.const import (
    CONF_ACCOUNT_URL,
    CONF_HOUSEHOLD_ID,
    CONF_REMEMBERED_WIFI,
    DOMAIN,
    EXTERNAL_ID_PREFIX,
)
from custom_components.iot_onboard.wifi_memory import RememberedWifi
from tests.integration.fake_account import FakeAccountService, member
from tests.integration.runtime_helpers import set_up, setup_entry

#: The menu's steps after the roles and the Wi-Fi (test_options_household.py).
_HOUSEHOLD_OPTIONS = [
    "mqtt_access",
    "hand_over",
    "delete_household",
    "export_account",
    "delete_account",
]


async def _user_role_form(hass: HomeAssistant, entry: MockConfigEntry) -> dict[str, Any]:
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["type"] is FlowResultType.MENU
    return dict(
        await hass.config_entries.options.async_configure(
            result["flow_id"], {"next_step_id": "user_role"}
        )
    )


def _user_options(form: dict[str, Any]) -> dict[str, str]:
    selector = form["data_schema"].schema["user"]
    return {option["value"]: option["label"] for option in selector.config["options"]}


async def test_user_roles_need_a_loaded_entry(
    hass: HomeAssistant, fake_account: FakeAccountService, mock_config_entry: MockConfigEntry
) -> None:
    """Roles live at the account service: without a loaded entry there is nothing to map."""
    await fake_account.stop()
    entry = mock_config_entry
    assert await set_up(hass, entry) is ConfigEntryState.SETUP_RETRY
    result = await _user_role_form(hass, entry)
    assert (result["type"], result["reason"]) == (FlowResultType.ABORT, "not_loaded")


async def test_the_user_list_names_people_and_their_roles(
    hass: HomeAssistant, fake_account: FakeAccountService, hass_owner_user: MockUser
) -> None:
    """Active people only, each with the role they act with now; the creator as owner.

    The household's owner record links no Home Assistant user yet (as after the first device's
    flow): Home Assistant's owner stands for it. A Home Assistant administrator who is not a
    member acts as admin; anyone else who is not a member gets the non-member option's role.
    """
    alice = await hass.auth.async_create_user("Alice", group_ids=["system-users"])
    bob = await hass.auth.async_create_user("Bob", group_ids=["system-users"])
    carol = await hass.auth.async_create_user("Carol", group_ids=["system-admin"])
    gone = await hass.auth.async_create_user("Gone", group_ids=["system-users"])
    await hass.auth.async_deactivate_user(gone)
    system = await hass.auth.async_create_system_user("Supervisor")
    fake_account.members.append(
        member("m-alice", None, EXTERNAL_ID_PREFIX + alice.id, "Alice", Role.MEMBER)
    )
    entry = await setup_entry(hass, fake_account)
    form = await _user_role_form(hass, entry)
    assert form["type"] is FlowResultType.FORM
    assert _user_options(form) == {
        alice.id: "Alice — member",
        bob.id: "Bob — viewer (not a member)",
        carol.id: "Carol — admin (Home Assistant administrator, not a member)",
        hass_owner_user.id: "Mock User — owner",
    }
    assert gone.id not in _user_options(form)
    assert system.id not in _user_options(form)

    # The owner's role is fixed; choosing owner links the record to the user for good.
    result = await hass.config_entries.options.async_configure(
        form["flow_id"], {"user": hass_owner_user.id, "role": "member"}
    )
    assert result["errors"] == {"role": "owner_fixed"}
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"user": hass_owner_user.id, "role": "owner"}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert fake_account.owner().external_id == EXTERNAL_ID_PREFIX + hass_owner_user.id


async def test_the_owner_linked_elsewhere_or_not_ours_is_not_home_assistants_owner(
    hass: HomeAssistant, fake_account: FakeAccountService, hass_owner_user: MockUser
) -> None:
    """Home Assistant's owner stands only for an unlinked owner of this entry's own account."""
    olga = await hass.auth.async_create_user("Olga", group_ids=["system-users"])
    fake_account.link_owner(EXTERNAL_ID_PREFIX + olga.id)
    entry = await setup_entry(hass, fake_account)
    options = _user_options(await _user_role_form(hass, entry))
    assert options[olga.id] == "Olga — owner"
    assert options[hass_owner_user.id] == (
        "Mock User — admin (Home Assistant administrator, not a member)"
    )

    # The household belongs to another account (this entry signed in as an admin of it).
    fake_account.members[:] = [
        member("m-owner", "a-someone-else", None, "Owner", Role.OWNER)
        if m.role is Role.OWNER
        else m
        for m in fake_account.members
    ]
    await entry.runtime_data.roles.async_refresh()
    options = _user_options(await _user_role_form(hass, entry))
    assert options[olga.id] == "Olga — viewer (not a member)"
    assert options[hass_owner_user.id] == (
        "Mock User — admin (Home Assistant administrator, not a member)"
    )


async def test_a_user_removed_while_the_form_is_open(
    hass: HomeAssistant, fake_account: FakeAccountService
) -> None:
    """The form listed the user; by the submit the user is gone: an error on the user field."""
    # The first person may be Home Assistant's owner, whom newer versions refuse to remove.
    await hass.auth.async_create_user("Olga", group_ids=["system-admin"])
    carol = await hass.auth.async_create_user("Carol", group_ids=["system-users"])
    entry = await setup_entry(hass, fake_account)
    form = await _user_role_form(hass, entry)
    assert carol.id in _user_options(form)
    await hass.auth.async_remove_user(carol)
    result = await hass.config_entries.options.async_configure(
        form["flow_id"], {"user": carol.id, "role": "member"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"user": "unknown_user"}
    assert not any(m.external_id == EXTERNAL_ID_PREFIX + carol.id for m in fake_account.members)


async def test_a_refusal_of_the_account_service_is_shown_on_the_form(
    hass: HomeAssistant, fake_account: FakeAccountService
) -> None:
    """The member was removed elsewhere: the service answers 404 and the form says so."""
    dave = await hass.auth.async_create_user("Dave", group_ids=["system-users"])
    fake_account.members.append(
        member("m-dave", None, EXTERNAL_ID_PREFIX + dave.id, "Dave", Role.MEMBER)
    )
    entry = await setup_entry(hass, fake_account)
    form = await _user_role_form(hass, entry)
    fake_account.members[:] = [m for m in fake_account.members if m.member_id != "m-dave"]
    result = await hass.config_entries.options.async_configure(
        form["flow_id"], {"user": dave.id, "role": "admin"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "account_refused"}
    placeholders = result["description_placeholders"]
    assert placeholders is not None
    assert "No such member" in placeholders["error"]
    assert entry.options == {}


async def test_forget_the_remembered_wifi(
    hass: HomeAssistant, hass_storage: dict[str, Any]
) -> None:
    """Offered only while a Wi-Fi is remembered; forgetting drops the sealed copy and the key."""
    household_id = "h" * 32
    entry = MockConfigEntry(
        domain=DOMAIN,
        version=2,
        title="Home",
        unique_id=household_id,
        data={CONF_ACCOUNT_URL: "https://onboard.example", CONF_HOUSEHOLD_ID: household_id},
    )
    entry.add_to_hass(hass)
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["menu_options"] == ["policies", "user_role", *_HOUSEHOLD_OPTIONS]
    hass.config_entries.options.async_abort(result["flow_id"])

    wifi = RememberedWifi(b"HomeNet", "correct horse battery", hidden=False)
    await wifi_memory.async_remember(hass, entry, wifi)
    sealed = entry.data[CONF_REMEMBERED_WIFI]
    assert await wifi_memory.async_recall(hass, entry) == wifi
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["type"] is FlowResultType.MENU
    assert result["menu_options"] == ["policies", "user_role", "forget_wifi", *_HOUSEHOLD_OPTIONS]
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "forget_wifi"}
    )
    assert (result["type"], result["reason"]) == (FlowResultType.ABORT, "wifi_forgotten")
    assert result["description_placeholders"] == {"household": "Home"}
    assert CONF_REMEMBERED_WIFI not in entry.data
    assert entry.options == {}
    assert await wifi_memory.async_recall(hass, entry) is None
    # The key is gone: a copy of the entry made before does not open any more.
    assert hass_storage[wifi_memory.STORAGE_KEY]["data"]["keys"] == {}
    copy = MockConfigEntry(
        domain=DOMAIN, data={**entry.data, CONF_REMEMBERED_WIFI: sealed}, title="Home"
    )
    assert await wifi_memory.async_recall(hass, copy) is None


async def test_flows_remembering_at_once_get_the_same_key(hass: HomeAssistant) -> None:
    """Two devices of a household finishing together: one key, not one each (the later
    write would leave the other's sealed value without its key)."""

    def slow_to_load() -> wifi_memory.WifiKeys:
        """A real store reads its file in an executor: others run before the result is in."""
        keys = wifi_memory.WifiKeys(hass)
        store = keys._store
        load = store.async_load

        async def yielding_load() -> dict[str, Any] | None:
            data = await load()
            await asyncio.sleep(0)
            return data

        store.async_load = yielding_load  # type: ignore[method-assign]
        return keys

    keys = slow_to_load()
    first, second = await asyncio.gather(
        keys.async_get_or_create("h" * 32), keys.async_get_or_create("h" * 32)
    )
    assert first == second
    assert await keys.async_get("h" * 32) == first
    # A flow reading the keys while another creates one does not lose the new key.
    keys = slow_to_load()
    created, _ = await asyncio.gather(keys.async_get_or_create("i" * 32), keys.async_get("i" * 32))
    assert await keys.async_get("i" * 32) == created
