"""Account lifecycle endpoints: owner hand-over, household deletion, account export and deletion."""

from __future__ import annotations

from aiohttp import web
from iob_protocol.account_api import DeleteAccountRequest, DeleteHouseholdRequest, OwnerRequest

from cloud_relay.errors import HouseholdNotFoundError

from .common import account, no_content, ok, path_id, read_body, relay

routes = web.RouteTableDef()
_HOUSEHOLD = "/v1/households/{household_id}"


@routes.post(_HOUSEHOLD + "/owner")
async def hand_over(request: web.Request) -> web.Response:
    """Make another member the owner (owner; the old owner becomes an admin)."""
    caller = await account(request)
    household_id = path_id(request, "household_id", HouseholdNotFoundError)
    body = await read_body(request, OwnerRequest)
    return ok(await relay(request).lifecycle.hand_over(caller, household_id, body.member_id))


@routes.delete(_HOUSEHOLD)
async def delete_household(request: web.Request) -> web.Response:
    """Delete the household, releasing its devices (owner; confirmed by its name)."""
    caller = await account(request)
    household_id = path_id(request, "household_id", HouseholdNotFoundError)
    body = await read_body(request, DeleteHouseholdRequest)
    deleted = await relay(request).lifecycle.delete_household(
        caller, household_id, body.confirm_name
    )
    return ok(deleted)


@routes.get("/v1/account/export")
async def export_account(request: web.Request) -> web.Response:
    """The signed-in account's data as JSON."""
    caller = await account(request)
    return ok(await relay(request).lifecycle.export(caller))


@routes.delete("/v1/account")
async def delete_account(request: web.Request) -> web.Response:
    """Delete the signed-in account (password re-entered)."""
    caller = await account(request)
    body = await read_body(request, DeleteAccountRequest)
    await relay(request).lifecycle.delete_account(caller, body.password)
    return no_content()
