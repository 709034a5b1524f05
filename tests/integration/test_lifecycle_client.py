"""The account client's lifecycle calls against the real account service (issue 16 item 5)."""

from __future__ import annotations

import secrets

import pytest

from custom_components.iot_onboard.account_client import (
    AccountClient,
    ClaimExpiredError,
    ConfirmationMismatchError,
    HouseholdDeletedError,
    HouseholdNotFoundError,
    PasswordMismatchError,
)

from .runtime_helpers import RealAccount


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
