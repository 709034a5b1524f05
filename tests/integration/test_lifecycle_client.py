"""The account client's lifecycle calls against the real account service (issue 16 item 5)."""

from __future__ import annotations

import logging
import secrets

import pytest
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir

from custom_components.iot_onboard.account_client import (
    AccountClient,
    ClaimExpiredError,
    ConfirmationMismatchError,
    HouseholdDeletedError,
    HouseholdNotFoundError,
    PasswordMismatchError,
)
from custom_components.iot_onboard.const import DOMAIN

from .runtime_helpers import RealAccount, setup_entry


async def test_household_deletion_is_confirmed_by_name_and_its_replay_is_not_a_claim(
    real_account_service: RealAccount,
) -> None:
    """A wrong name deletes nothing; the right one deletes; afterwards 410 household_deleted
    is its own error, never read as an expired claim."""
    owner, household_id = real_account_service.owner, real_account_service.household_id
    with pytest.raises(ConfirmationMismatchError):
        await owner.delete_household(household_id, "Not home")
    assert [h.household_id for h in await owner.households()] == [household_id]
    deleted = await owner.delete_household(household_id, "Home")
    assert deleted.household_id == household_id
    with pytest.raises(HouseholdNotFoundError):
        await owner.devices(household_id)
    with pytest.raises(HouseholdDeletedError) as caught:
        await owner.delete_household(household_id, "Home")
    assert not isinstance(caught.value, ClaimExpiredError)
    assert caught.value.status == 410
    assert await owner.households() == []


async def test_account_export_and_deletion(real_account_service: RealAccount) -> None:
    """The export names the account; a wrong password deletes nothing; the right one does."""
    service, http = real_account_service.service, real_account_service.http
    client = AccountClient(service.url, session=http)
    email, password = f"gone-{secrets.token_hex(4)}@example.com", secrets.token_urlsafe(16)
    await client.sign_up(email, password)
    export = await client.export_account()
    assert export.account.email == email
    with pytest.raises(PasswordMismatchError):
        await client.delete_account(password + "x")
    await client.delete_account(password)
    again = AccountClient(service.url, session=http)
    with pytest.raises(Exception, match="invalid_credentials"):
        await again.sign_in(email, password)


def _tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Records a user sees (INFO and up) that carry a traceback; newer Home Assistant logs
    the cause of a ConfigEntryNotReady at DEBUG ("Full exception"), which is not one."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO and r.exc_info]


async def test_a_household_deleted_elsewhere_raises_a_repair_not_a_reauth(
    hass: HomeAssistant, real_account_service: RealAccount, caplog: pytest.LogCaptureFixture
) -> None:
    """The next device-list refresh after a deletion elsewhere (404 household_not_found) raises
    the "household deleted" repair issue: no re-authentication, no traceback."""
    entry = await setup_entry(hass, real_account_service)
    assert entry.state is ConfigEntryState.LOADED
    await real_account_service.owner.delete_household(real_account_service.household_id, "Home")
    await entry.runtime_data.coordinator.async_request_sync()
    await hass.async_block_till_done(wait_background_tasks=True)
    issue = ir.async_get(hass).async_get_issue(DOMAIN, f"household_deleted_{entry.entry_id}")
    assert issue is not None
    assert issue.translation_placeholders == {"title": "Home"}
    assert not hass.config_entries.flow.async_progress_by_handler(DOMAIN)  # no reauth flow
    assert not _tracebacks(caplog)
    assert "was deleted at the account service" in caplog.text
    # Set up again (a restart): the entry waits with the same cause and issue, no traceback.
    await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()
    reloaded = hass.config_entries.async_get_entry(entry.entry_id)
    assert reloaded is not None
    assert reloaded.state is ConfigEntryState.SETUP_RETRY
    assert "Household Home was deleted" in (reloaded.reason or "")
    assert not _tracebacks(caplog)
    # Removing the entry, as the issue says, takes the issue with it.
    await hass.config_entries.async_remove(entry.entry_id)
    await hass.async_block_till_done()
    assert ir.async_get(hass).async_get_issue(DOMAIN, f"household_deleted_{entry.entry_id}") is None
