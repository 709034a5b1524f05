"""Exporting and deleting the entry's account from its options, against the real account
service (issue 16 item 5, Home Assistant's side).

What the service says is checked at the service itself; what a deletion revokes is tried on
the session's real Mosquitto with the device's, the hub's and a tool's own credentials.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import stat
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.iot_onboard.account_client import (
    AccountClient,
    AccountExport,
    AuthenticationError,
    MqttAccess,
    MqttCredentials,
    Role,
)
from custom_components.iot_onboard.account_lifecycle import EXPORT_PREFIX
from custom_components.iot_onboard.const import (
    CONF_ACCOUNT_ID,
    CONF_DEVICE_ID,
    CONF_EMAIL,
    CONF_HOUSEHOLD_ID,
    DOMAIN,
)

from .runtime_helpers import RealAccount, setup_entry
from .test_options_household import (
    _open,
    _registry_owner,
    _submit,
    _suggested,
    assert_not_loaded_after_reload,
)

type Result = dict[str, Any]


async def _connects(mqtt: MqttCredentials) -> None:
    """Connect with a broker account as its holder would (its bound client id)."""
    async with aiomqtt.Client(
        mqtt.host,
        mqtt.port,
        username=mqtt.username,
        password=mqtt.password,
        identifier=mqtt.client_id or mqtt.username,
    ):
        pass


async def _add_device_entry(hass: HomeAssistant, device_id: str, household_id: str) -> None:
    """The device's entry, as onboarding from this Home Assistant leaves it."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title=f"Sensor {device_id[-4:]}",
        unique_id=device_id,
        data={CONF_DEVICE_ID: device_id, CONF_HOUSEHOLD_ID: household_id},
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED


async def _invite(host: RealAccount, household_id: str, guest: RealAccount) -> None:
    """``guest``'s account joins ``host``'s household as an admin (an invitation it accepts;
    only an admin or the owner gets the hub's credentials, so only they have an entry)."""
    path = f"/v1/households/{household_id}/invitations"
    invitation = await host._post(path, {"role": "admin"}, host.signed_in)
    await guest._post("/v1/invitations/accept", {"token": invitation["token"]}, guest.signed_in)


def _exports(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"{EXPORT_PREFIX}*.json"))


# --- export -----------------------------------------------------------------------------------


async def test_the_export_is_the_accounts_data_in_a_private_file(
    hass: HomeAssistant,
    real_account_service: RealAccount,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The file holds the account's own data (profile, households, devices, its audit events)
    and nobody else's secret or address; mode 0600, named with the date, never overwritten."""
    caplog.set_level(logging.INFO)
    hass.config.config_dir = str(tmp_path)
    account = real_account_service
    owned = await account.claim_new_device()
    alice = await account.join("admin", "Alice")
    tool = await account.owner.create_mqtt_credential(
        account.household_id, "Node-RED", MqttAccess.READ
    )
    hub = await account.hub_credentials()
    entry = await setup_entry(hass, account)

    form = await _open(hass, entry, "export_account")
    assert (form["type"], form["step_id"]) == (FlowResultType.FORM, "export_account")
    assert form["description_placeholders"]["email"] == account.signed_in.account.email
    assert form["description_placeholders"]["directory"] == str(tmp_path)
    assert _exports(tmp_path) == []  # nothing is fetched or written before the confirm
    done = await _submit(hass, form, {})
    assert (done["type"], done["reason"]) == (FlowResultType.ABORT, "account_exported")

    [path] = _exports(tmp_path)
    today = dt_util.now().strftime("%Y-%m-%d")
    assert path.name == f"{EXPORT_PREFIX}{today}.json"
    placeholders = done["description_placeholders"]
    assert placeholders["path"] == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text(encoding="utf-8")
    export = AccountExport.parse(json.loads(text))
    me = account.signed_in.account
    assert (export.account.account_id, export.account.email) == (me.account_id, me.email)
    assert [(m.household_name, m.role) for m in export.memberships] == [("Home", Role.OWNER)]
    [home] = export.households
    assert [d.device_id for d in home.devices] == [owned.device_id]
    assert {e.action for e in export.audit_events} >= {"household.created", "claim.created"}
    assert (placeholders["email"], placeholders["households"]) == (me.email, "1")
    assert placeholders["events"] == str(len(export.audit_events))
    # Nobody else's address, and no secret: not the entry's tokens, nor any MQTT password.
    secrets = {
        alice.signed_in.account.email,
        *account.signed_in.tokens.as_entry_data().values(),
        *entry.data.values(),
        owned.mqtt.password,
        tool.mqtt.password,
        hub.password,
    } - {me.email, me.account_id, account.household_id, account.service.url}
    leaked = [s for s in secrets if isinstance(s, str) and s in text]
    assert leaked == []
    assert f"Account data exported to {path}" in caplog.text
    assert me.email not in caplog.text

    again = await _submit(hass, await _open(hass, entry, "export_account"), {})
    assert again["reason"] == "account_exported"
    assert {p.name for p in _exports(tmp_path)} == {path.name, f"{path.stem}-2.json"}
    assert path.read_text(encoding="utf-8") == text  # the first one is left as it was


async def test_an_export_that_cannot_be_saved_or_fetched_says_why(
    hass: HomeAssistant, real_account_service_own_broker: RealAccount, tmp_path: Path
) -> None:
    """A configuration folder that cannot take the file (missing, full): the form names the
    OS error and leaves nothing behind; the service down: cannot_connect, nothing written;
    the entry not loaded: not_loaded."""
    account = real_account_service_own_broker
    entry = await setup_entry(hass, account)
    hass.config.config_dir = str(tmp_path / "missing")
    form = await _open(hass, entry, "export_account")
    failed = await _submit(hass, form, {})
    assert (failed["type"], failed["errors"]) == (
        FlowResultType.FORM,
        {"base": "export_not_written"},
    )
    assert "No such file or directory" in failed["description_placeholders"]["error"]
    hass.config.config_dir = str(tmp_path)

    def full_disk(descriptor: int) -> None:
        del descriptor
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "fsync", full_disk)
        failed = await _submit(hass, failed, {})
    assert failed["errors"] == {"base": "export_not_written"}
    assert "No space left on device" in failed["description_placeholders"]["error"]
    assert _exports(tmp_path) == []  # the part written is removed

    account.service.stop()
    down = await _submit(hass, failed, {})
    assert (down["type"], down["errors"]) == (FlowResultType.FORM, {"base": "cannot_connect"})
    assert _exports(tmp_path) == []
    refused = await _open(hass, entry, "delete_account")
    assert (refused["type"], refused["reason"]) == (FlowResultType.ABORT, "cannot_connect")
    await assert_not_loaded_after_reload(hass, entry, ("export_account", "delete_account"))


# --- deletion ---------------------------------------------------------------------------------


async def test_deleting_the_account_needs_its_password_and_revokes_everything(
    hass: HomeAssistant, real_account_service: RealAccount, caplog: pytest.LogCaptureFixture
) -> None:
    """The step lists what goes; a wrong password deletes nothing and blames the field; the
    right one deletes the account: its household is deleted with its device released, the
    device's, the hub's and a tool's broker accounts stop working, the household it only
    belonged to stays its owner's, and every entry of the account is removed here."""
    caplog.set_level(logging.INFO)
    account = real_account_service
    owned = await account.claim_new_device()
    tool = await account.owner.create_mqtt_credential(
        account.household_id, "Telegraf", MqttAccess.READ
    )
    hub = await account.hub_credentials()
    for mqtt in (owned.mqtt, tool.mqtt, hub):
        await _connects(mqtt)
    # Another account's household "Cabin" this account is a member of, with its own entry.
    bob = await RealAccount.sign_up(account.service, account.http)
    cabin_household = await bob.owner.create_household("Cabin")
    await _invite(bob, cabin_household.household_id, account)
    home = await setup_entry(hass, account)
    await _add_device_entry(hass, owned.device_id, account.household_id)
    cabin = await setup_entry(hass, account, household=(cabin_household.household_id, "Cabin"))
    assert cabin.state is ConfigEntryState.LOADED

    form = await _open(hass, home, "delete_account")
    assert (form["type"], form["step_id"]) == (FlowResultType.FORM, "delete_account")
    placeholders = form["description_placeholders"]
    assert placeholders["email"] == account.signed_in.account.email
    assert placeholders["deleted"] == "\n- Home (1 device(s) released)"
    assert placeholders["left"] == "\n- Cabin (admin)"
    assert placeholders["entries"] == "\n- Home\n- Cabin"

    wrong = await _submit(hass, form, {"password": account.password + "x"})
    assert (wrong["type"], wrong["errors"]) == (
        FlowResultType.FORM,
        {"password": "password_mismatch"},
    )
    assert _suggested(wrong, "password") is None
    assert (await account.owner.me()).account_id == account.signed_in.account.account_id
    assert await _registry_owner(account, owned.device_id) == account.household_id
    assert home.state is ConfigEntryState.LOADED

    deleted = await _submit(hass, wrong, {"password": account.password})
    assert (deleted["type"], deleted["reason"]) == (FlowResultType.ABORT, "account_deleted")
    assert deleted["description_placeholders"]["entries"] == "\n- Home\n- Cabin"
    await hass.async_block_till_done()
    assert hass.config_entries.async_entries(DOMAIN) == []
    with pytest.raises(AuthenticationError):
        await account.owner.me()
    assert await _registry_owner(account, owned.device_id) is None  # released: claimable again
    for mqtt in (owned.mqtt, tool.mqtt, hub):
        with pytest.raises(aiomqtt.MqttError):
            await _connects(mqtt)
    # Bob's household stays his, without this account.
    members = await bob.owner.members(cabin_household.household_id)
    assert [(m.display_name, m.role) for m in members] == [("Owner", Role.OWNER)]
    assert members[0].account_id == bob.signed_in.account.account_id
    assert "Account deleted at the account service (1 household(s) deleted with it)" in caplog.text
    assert "not released" not in caplog.text
    assert "Releasing" not in caplog.text
    assert account.password not in caplog.text


async def test_an_owned_household_with_other_accounts_must_be_handed_over_first(
    hass: HomeAssistant, real_account_service: RealAccount
) -> None:
    """Refused up front, naming the household and who else is in it; refused again when
    someone joined while the form was open; after a hand-over the account leaves the
    household (its device stays with it, not released) and is deleted."""
    account = real_account_service
    owned = await account.claim_new_device()
    entry = await setup_entry(hass, account)
    await _add_device_entry(hass, owned.device_id, account.household_id)
    early = await _open(hass, entry, "delete_account")
    assert early["description_placeholders"]["deleted"] == "\n- Home (1 device(s) released)"

    alice = await account.join("admin", "Alice")
    refused = await _open(hass, entry, "delete_account")
    assert (refused["type"], refused["reason"]) == (FlowResultType.ABORT, "owner_handover_required")
    assert refused["description_placeholders"] == {"households": "\n- Home (also: Alice)"}
    late = await _submit(hass, early, {"password": account.password})
    assert (late["type"], late["reason"]) == (FlowResultType.ABORT, "owner_handover_required")
    assert late["description_placeholders"] == {"households": "\n- Home (also: Alice)"}
    assert (await account.owner.me()).account_id == account.signed_in.account.account_id

    hand_over = await _open(hass, entry, "hand_over")
    [option] = hand_over["data_schema"].schema["member"].config["options"]
    assert (await _submit(hass, hand_over, {"member": option["value"]}))["reason"] == "handed_over"
    form = await _open(hass, entry, "delete_account")
    assert form["description_placeholders"]["deleted"] == " none."
    assert form["description_placeholders"]["left"] == "\n- Home (admin)"
    deleted = await _submit(hass, form, {"password": account.password})
    assert deleted["reason"] == "account_deleted"
    await hass.async_block_till_done()
    assert hass.config_entries.async_entries(DOMAIN) == []
    # The household and its device stay Alice's.
    assert await _registry_owner(account, owned.device_id) == account.household_id
    members = await alice.owner.members(account.household_id)
    assert [(m.display_name, m.role) for m in members] == [("Alice", Role.OWNER)]


async def test_the_service_down_while_deleting_keeps_the_account_and_the_entry(
    hass: HomeAssistant, real_account_service_own_broker: RealAccount
) -> None:
    """The service stops with the form open: cannot_connect on the form, the password not
    kept, the entry still here; back up, the account is still there."""
    account = real_account_service_own_broker
    entry = await setup_entry(hass, account)
    form = await _open(hass, entry, "delete_account")
    account.service.stop()
    down = await _submit(hass, form, {"password": account.password})
    assert (down["type"], down["errors"]) == (FlowResultType.FORM, {"base": "cannot_connect"})
    assert _suggested(down, "password") is None
    assert hass.config_entries.async_entries(DOMAIN) == [entry]
    account.service.start()
    assert (await account.owner.me()).account_id == entry.data[CONF_ACCOUNT_ID]


async def test_the_add_ons_account_cannot_be_deleted_with_a_password(
    hass: HomeAssistant, real_account_service: RealAccount
) -> None:
    """The owner account the add-on's one-time token makes has a password nobody knows: the
    step says so and what to do instead (delete the household, uninstall the add-on)."""
    service = real_account_service.service
    token = service.cli("provisioning-token").strip()
    client = AccountClient(service.url, session=real_account_service.http)
    signed_in, household = await client.redeem_provisioning(token, "Flat")
    provisioned = RealAccount(
        service, real_account_service.http, client, signed_in, household.household_id
    )
    entry = await setup_entry(hass, provisioned)
    assert re.fullmatch(r"home-assistant-\w+@provisioned\.invalid", entry.data[CONF_EMAIL])
    refused = await _open(hass, entry, "delete_account")
    assert (refused["type"], refused["reason"]) == (FlowResultType.ABORT, "account_provisioned")
    assert refused["description_placeholders"] == {"household": "Home"}
    # Its export works like any account's.
    assert (await _open(hass, entry, "export_account"))["type"] is FlowResultType.FORM
