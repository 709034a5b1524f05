"""Endpoints under ``/v1/households/{household_id}``: every one checks role and household."""

from __future__ import annotations

from aiohttp import web
from iob_protocol.account_api import (
    AddMemberRequest,
    ClaimRequest,
    DeviceKeyRequest,
    DeviceList,
    HouseholdList,
    HouseholdRequest,
    InvitationList,
    InviteRequest,
    MemberList,
    MqttAccessList,
    MqttAccessRequest,
    Released,
    ShareAccess,
    ShareList,
    ShareRequest,
    TransferList,
    TransferRequest,
    UpdateMemberRequest,
)

from cloud_relay.errors import (
    DeviceNotFoundError,
    HouseholdNotFoundError,
    InvitationInvalidError,
    MemberNotFoundError,
    MqttCredentialNotFoundError,
    TransferNotFoundError,
)

from .common import (
    account,
    client_address,
    no_content,
    ok,
    page_params,
    path_id,
    read_body,
    relay,
)

routes = web.RouteTableDef()
_HOUSEHOLD = "/v1/households/{household_id}"
_DEVICE = _HOUSEHOLD + "/devices/{device_id}"


def _household(request: web.Request) -> str:
    return path_id(request, "household_id", HouseholdNotFoundError)


def _device(request: web.Request) -> str:
    return path_id(request, "device_id", DeviceNotFoundError)


# --- households -----------------------------------------------------------------------------


@routes.get("/v1/households")
async def list_households(request: web.Request) -> web.Response:
    """The caller's households with its role in each."""
    caller = await account(request)
    households = await relay(request).households.list_for(caller)
    return ok(HouseholdList(households=tuple(households)))


@routes.post("/v1/households")
async def create_household(request: web.Request) -> web.Response:
    """A new household owned by the caller."""
    caller = await account(request)
    body = await read_body(request, HouseholdRequest)
    household = await relay(request).households.create(caller, body.name)
    return ok(household, status=201)


@routes.get(_HOUSEHOLD)
async def get_household(request: web.Request) -> web.Response:
    """One household (any member)."""
    caller = await account(request)
    return ok(await relay(request).households.get(caller, _household(request)))


@routes.patch(_HOUSEHOLD)
async def rename_household(request: web.Request) -> web.Response:
    """Rename (admin or owner)."""
    caller = await account(request)
    household_id = _household(request)
    body = await read_body(request, HouseholdRequest)
    return ok(await relay(request).households.rename(caller, household_id, body.name))


# --- members --------------------------------------------------------------------------------


@routes.get(_HOUSEHOLD + "/members")
async def list_members(request: web.Request) -> web.Response:
    """Every member (any member)."""
    caller = await account(request)
    members = await relay(request).households.members(caller, _household(request))
    return ok(MemberList(members=tuple(members)))


@routes.post(_HOUSEHOLD + "/members")
async def add_member(request: web.Request) -> web.Response:
    """A member standing for a Home Assistant user (admin or owner)."""
    caller = await account(request)
    household_id = _household(request)
    body = await read_body(request, AddMemberRequest)
    member = await relay(request).households.add_external_member(
        caller,
        household_id,
        external_id=body.external_id,
        display_name=body.display_name,
        role=body.role,
    )
    return ok(member, status=201)


@routes.patch(_HOUSEHOLD + "/members/{member_id}")
async def update_member(request: web.Request) -> web.Response:
    """Change role, name or external id (admin or owner)."""
    caller = await account(request)
    household_id = _household(request)
    member_id = path_id(request, "member_id", MemberNotFoundError)
    body = await read_body(request, UpdateMemberRequest)
    member = await relay(request).households.update_member(
        caller,
        household_id,
        member_id,
        role=body.role,
        display_name=body.display_name,
        external_id=body.external_id,
    )
    return ok(member)


@routes.delete(_HOUSEHOLD + "/members/{member_id}")
async def remove_member(request: web.Request) -> web.Response:
    """Remove a member (admin or owner)."""
    caller = await account(request)
    household_id = _household(request)
    member_id = path_id(request, "member_id", MemberNotFoundError)
    await relay(request).households.remove_member(caller, household_id, member_id)
    return no_content()


# --- invitations ----------------------------------------------------------------------------


@routes.get(_HOUSEHOLD + "/invitations")
async def list_invitations(request: web.Request) -> web.Response:
    """Open invitations (admin or owner)."""
    caller = await account(request)
    invitations = await relay(request).households.invitations(caller, _household(request))
    return ok(InvitationList(invitations=tuple(invitations)))


@routes.post(_HOUSEHOLD + "/invitations")
async def invite(request: web.Request) -> web.Response:
    """An invitation token, shown once (admin or owner)."""
    caller = await account(request)
    household_id = _household(request)
    body = await read_body(request, InviteRequest)
    invitation = await relay(request).households.invite(
        caller,
        household_id,
        role=body.role,
        email=body.email,
        external_id=body.external_id,
    )
    return ok(invitation, status=201)


@routes.delete(_HOUSEHOLD + "/invitations/{invitation_id}")
async def revoke_invitation(request: web.Request) -> web.Response:
    """Withdraw an open invitation (admin or owner)."""
    caller = await account(request)
    household_id = _household(request)
    invitation_id = path_id(request, "invitation_id", InvitationInvalidError)
    await relay(request).households.revoke_invitation(caller, household_id, invitation_id)
    return no_content()


# --- claims ---------------------------------------------------------------------------------


@routes.post(_HOUSEHOLD + "/claims")
async def create_claim(request: web.Request) -> web.Response:
    """A claim token for a device (admin or owner)."""
    caller = await account(request)
    household_id = _household(request)
    body = await read_body(request, ClaimRequest)
    claim = await relay(request).claims.create(
        caller, household_id, body.device_id, client_address(request)
    )
    return ok(claim, status=201)


@routes.post(_HOUSEHOLD + "/device-keys")
async def device_key(request: web.Request) -> web.Response:
    """A device's public key for a member who holds its manual code (member or above)."""
    caller = await account(request)
    household_id = _household(request)
    body = await read_body(request, DeviceKeyRequest)
    key = await relay(request).device_keys.lookup(
        caller,
        household_id,
        body.device_id,
        body.manual_code,
        client_address(request),
    )
    return ok(key.answer())


# --- devices --------------------------------------------------------------------------------


@routes.get(_HOUSEHOLD + "/devices")
async def list_devices(request: web.Request) -> web.Response:
    """Owned and shared devices (any member)."""
    caller = await account(request)
    devices = await relay(request).devices.listing(caller, _household(request))
    return ok(DeviceList(devices=tuple(devices)))


@routes.get(_DEVICE)
async def get_device(request: web.Request) -> web.Response:
    """One device with its model's metadata (any member)."""
    caller = await account(request)
    household_id = _household(request)
    return ok(await relay(request).devices.get(caller, household_id, _device(request)))


@routes.post(_DEVICE + "/release")
async def release(request: web.Request) -> web.Response:
    """Unclaim the device (admin or owner)."""
    caller = await account(request)
    household_id = _household(request)
    await relay(request).devices.release(caller, household_id, _device(request))
    return ok(Released())


@routes.post(_DEVICE + "/credentials")
async def rotate_credentials(request: web.Request) -> web.Response:
    """New MQTT password for the device (admin or owner)."""
    caller = await account(request)
    household_id = _household(request)
    return ok(await relay(request).devices.rotate(caller, household_id, _device(request)))


@routes.get(_DEVICE + "/shares")
async def list_shares(request: web.Request) -> web.Response:
    """Households the device is shared with (admin or owner)."""
    caller = await account(request)
    household_id = _household(request)
    shares = await relay(request).devices.shares(caller, household_id, _device(request))
    return ok(ShareList(shares=tuple(shares)))


@routes.put(_DEVICE + "/shares/{target_household_id}")
async def put_share(request: web.Request) -> web.Response:
    """Share read-only or with control (admin or owner)."""
    caller = await account(request)
    household_id = _household(request)
    device_id = _device(request)
    target = path_id(request, "target_household_id", HouseholdNotFoundError)
    body = await read_body(request, ShareRequest)
    share = await relay(request).devices.share(
        caller, household_id, device_id, target, control=body.access is ShareAccess.CONTROL
    )
    return ok(share)


@routes.delete(_DEVICE + "/shares/{target_household_id}")
async def delete_share(request: web.Request) -> web.Response:
    """End a share (admin or owner)."""
    caller = await account(request)
    household_id = _household(request)
    device_id = _device(request)
    target = path_id(request, "target_household_id", HouseholdNotFoundError)
    await relay(request).devices.unshare(caller, household_id, device_id, target)
    return no_content()


@routes.post(_DEVICE + "/transfers")
async def offer_transfer(request: web.Request) -> web.Response:
    """Offer the device to another household (owner)."""
    caller = await account(request)
    household_id = _household(request)
    device_id = _device(request)
    body = await read_body(request, TransferRequest)
    transfer = await relay(request).devices.offer(
        caller, household_id, device_id, body.to_household_id
    )
    return ok(transfer, status=201)


@routes.get(_DEVICE + "/audit")
async def device_audit(request: web.Request) -> web.Response:
    """The household's audit events for one device (admin or owner)."""
    caller = await account(request)
    household_id = _household(request)
    device_id = _device(request)
    cursor, limit = page_params(request)
    page = await relay(request).devices.audit(
        caller, household_id, device_id=device_id, cursor=cursor, limit=limit
    )
    return ok(page.answer())


# --- transfers ------------------------------------------------------------------------------


@routes.get(_HOUSEHOLD + "/transfers")
async def list_transfers(request: web.Request) -> web.Response:
    """Pending transfers to and from the household (admin or owner)."""
    caller = await account(request)
    transfers = await relay(request).devices.transfers(caller, _household(request))
    return ok(TransferList(transfers=tuple(transfers)))


@routes.post(_HOUSEHOLD + "/transfers/{transfer_id}/accept")
async def accept_transfer(request: web.Request) -> web.Response:
    """Accept a device offered to this household (admin or owner)."""
    caller = await account(request)
    household_id = _household(request)
    transfer_id = path_id(request, "transfer_id", TransferNotFoundError)
    return ok(await relay(request).devices.accept(caller, household_id, transfer_id))


@routes.post(_HOUSEHOLD + "/transfers/{transfer_id}/decline")
async def decline_transfer(request: web.Request) -> web.Response:
    """Decline an offer (admin or owner of the recipient)."""
    caller = await account(request)
    household_id = _household(request)
    transfer_id = path_id(request, "transfer_id", TransferNotFoundError)
    await relay(request).devices.close_transfer(caller, household_id, transfer_id, decline=True)
    return no_content()


@routes.post(_HOUSEHOLD + "/transfers/{transfer_id}/cancel")
async def cancel_transfer(request: web.Request) -> web.Response:
    """Withdraw an offer (owner of the offering household)."""
    caller = await account(request)
    household_id = _household(request)
    transfer_id = path_id(request, "transfer_id", TransferNotFoundError)
    await relay(request).devices.close_transfer(caller, household_id, transfer_id, decline=False)
    return no_content()


# --- hub and audit --------------------------------------------------------------------------


@routes.get(_HOUSEHOLD + "/hub")
async def get_hub(request: web.Request) -> web.Response:
    """The hub's MQTT credential for Home Assistant (admin or owner)."""
    caller = await account(request)
    return ok(await relay(request).devices.hub(caller, _household(request), rotate=False))


@routes.post(_HOUSEHOLD + "/hub/rotate")
async def rotate_hub(request: web.Request) -> web.Response:
    """A new hub password (admin or owner)."""
    caller = await account(request)
    return ok(await relay(request).devices.hub(caller, _household(request), rotate=True))


# --- MQTT credentials for other tools ---------------------------------------------------------


_TOOLS = _HOUSEHOLD + "/mqtt-credentials"


@routes.get(_TOOLS)
async def list_mqtt_credentials(request: web.Request) -> web.Response:
    """The household's MQTT credentials for other tools, without passwords (admin or owner)."""
    listed = await relay(request).mqtt_access.listing(await account(request), _household(request))
    return ok(MqttAccessList(credentials=tuple(listed)))


@routes.post(_TOOLS)
async def create_mqtt_credential(request: web.Request) -> web.Response:
    """A new credential for another tool; the password is shown once (admin or owner)."""
    caller, household_id = await account(request), _household(request)
    wanted = await read_body(request, MqttAccessRequest)
    return ok(await relay(request).mqtt_access.create(caller, household_id, wanted), status=201)


@routes.delete(_TOOLS + "/{credential_id}")
async def revoke_mqtt_credential(request: web.Request) -> web.Response:
    """Revoke a credential: its live session is cut at once (admin or owner)."""
    caller, household_id = await account(request), _household(request)
    credential_id = path_id(request, "credential_id", MqttCredentialNotFoundError)
    await relay(request).mqtt_access.revoke(caller, household_id, credential_id)
    return no_content()


@routes.get(_HOUSEHOLD + "/audit")
async def household_audit(request: web.Request) -> web.Response:
    """The household's audit events, newest first (admin or owner)."""
    caller = await account(request)
    household_id = _household(request)
    cursor, limit = page_params(request)
    page = await relay(request).devices.audit(
        caller, household_id, device_id=None, cursor=cursor, limit=limit
    )
    return ok(page.answer())
