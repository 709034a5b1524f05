"""The authorisation matrix: every endpoint, every role, another household, anonymous.

Household endpoints: anonymous → 401, a stranger (owner of another household) → 404 exactly
as for an id that does not exist, a role below the endpoint's minimum → 403, the minimum role
and above → success. A rejected call changes nothing: the world's audit head is compared
before and after. Mutating endpoints get a fresh world for every allowed role.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .helpers import Api, FakeDevice, Reply, User

ROLES = ("viewer", "member", "admin", "owner")


@dataclass
class World:
    users: dict[str, User]
    household: str
    other: str  # the stranger's household
    device: FakeDevice  # owned by `household`
    free_device: FakeDevice  # unclaimed
    other_device: FakeDevice  # owned by `other`
    claim_id: str
    external_member: str
    invitation: str
    transfer_in: str  # offered by `other` to `household`
    transfer_out: str  # offered by `household` to `other`
    admin_member: str  # the admin's member id in `household`


async def build_world(api: Api, *, with_code: bool = False) -> World:
    owner, household = await api.owner_household()
    users = {"owner": owner}
    for role in ("admin", "member", "viewer"):
        users[role] = await api.join(owner, household, role)
    stranger = await api.sign_up()
    users["stranger"] = stranger
    other = await api.household(stranger)
    device = await api.device(with_code=with_code)  # a real verifier only where needed (scrypt)
    free_device, other_device = await api.device(), await api.device()
    await api.claim(owner, household, device)
    await api.claim(stranger, other, other_device)
    claim = await api.start_claim(owner, household, free_device)
    member = await api.request(
        "POST",
        f"/v1/households/{household}/members",
        json_body={"external_id": "ha-user-1", "display_name": "Kid", "role": "viewer"},
        token=owner.token,
        expect=201,
    )
    invitation = await api.invite(owner, household, "viewer")
    await api.share(owner, household, device, other, "read", expect=200)
    transfer_in = await api.offer_transfer(stranger, other, other_device, household)
    transfer_out = await api.offer_transfer(owner, household, device, other)
    members = await api.request("GET", f"/v1/households/{household}/members", token=owner.token)
    admin_member = next(m for m in members.body["members"] if m["role"] == "admin")["member_id"]
    return World(
        users,
        household,
        other,
        device,
        free_device,
        other_device,
        claim.body["claim_id"],
        member.body["member_id"],
        invitation.body["invitation_id"],
        transfer_in.body["transfer_id"],
        transfer_out.body["transfer_id"],
        admin_member,
    )


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: Callable[[World, str], str]  # (world, household id) → path
    minimum: str  # lowest role allowed
    ok: int
    body: Callable[[World], Any] | None = None
    mutates: bool = True
    #: A stranger's 404 code when it uses its own household with this world's resource.
    foreign_code: str | None = None
    #: The world's device needs its real setup code (the manual-code key lookup).
    with_code: bool = False
    #: That foreign 404 is audited by design (the key lookup records every refused guess).
    audits_foreign_refusal: bool = False


def H(suffix: str = "") -> Callable[[World, str], str]:  # noqa: N802 - reads like a path
    return lambda _world, household: f"/v1/households/{household}{suffix}"


def D(suffix: str = "") -> Callable[[World, str], str]:  # noqa: N802
    return lambda world, household: f"/v1/households/{household}/devices/{world.device.id}{suffix}"


ENDPOINTS: list[Endpoint] = [
    Endpoint("GET", H(), "viewer", 200, mutates=False),
    Endpoint("PATCH", H(), "admin", 200, body=lambda _w: {"name": "Renamed"}),
    Endpoint("GET", H("/members"), "viewer", 200, mutates=False),
    Endpoint(
        "POST",
        H("/members"),
        "admin",
        201,
        body=lambda _w: {"external_id": "ha-user-2", "display_name": "Guest", "role": "viewer"},
    ),
    Endpoint(
        "PATCH",
        lambda w, h: f"/v1/households/{h}/members/{w.external_member}",
        "admin",
        200,
        body=lambda _w: {"role": "member"},
        foreign_code="member_not_found",
    ),
    Endpoint(
        "DELETE",
        lambda w, h: f"/v1/households/{h}/members/{w.external_member}",
        "admin",
        204,
        foreign_code="member_not_found",
    ),
    Endpoint("GET", H("/invitations"), "admin", 200, mutates=False),
    Endpoint("POST", H("/invitations"), "admin", 201, body=lambda _w: {"role": "member"}),
    Endpoint(
        "DELETE",
        lambda w, h: f"/v1/households/{h}/invitations/{w.invitation}",
        "admin",
        204,
        foreign_code="invitation_invalid",
    ),
    Endpoint("POST", H("/claims"), "admin", 201, body=lambda w: {"device_id": w.free_device.id}),
    Endpoint(
        "POST",
        H("/device-keys"),
        "member",
        200,
        body=lambda w: {"device_id": w.device.id, "manual_code": w.device.manual_code},
        mutates=False,
        # The stranger has the right code, but the device is this world's household's.
        foreign_code="device_not_found_or_code_wrong",
        with_code=True,
        audits_foreign_refusal=True,
    ),
    Endpoint("GET", H("/devices"), "viewer", 200, mutates=False),
    # (GET of the device by the stranger via its own household works: it is shared there.)
    Endpoint("GET", D(), "viewer", 200, mutates=False),
    Endpoint("POST", D("/release"), "admin", 200, foreign_code="device_not_found"),
    Endpoint("POST", D("/credentials"), "admin", 200, foreign_code="device_not_found"),
    Endpoint("GET", D("/shares"), "admin", 200, mutates=False, foreign_code="device_not_found"),
    Endpoint(
        "PUT",
        lambda w, h: f"/v1/households/{h}/devices/{w.device.id}/shares/{w.other}",
        "admin",
        200,
        body=lambda _w: {"access": "read"},
        foreign_code="device_not_found",
    ),
    Endpoint(
        "DELETE",
        lambda w, h: f"/v1/households/{h}/devices/{w.device.id}/shares/{w.other}",
        "admin",
        204,
        foreign_code="device_not_found",
    ),
    Endpoint(
        "POST",
        D("/transfers"),
        "owner",
        201,
        body=lambda w: {"to_household_id": w.other},
        foreign_code="device_not_found",
    ),
    Endpoint("GET", D("/audit"), "admin", 200, mutates=False, foreign_code=None),
    Endpoint("GET", H("/transfers"), "admin", 200, mutates=False),
    Endpoint(
        "POST",
        lambda w, h: f"/v1/households/{h}/transfers/{w.transfer_in}/accept",
        "admin",
        200,
        foreign_code="transfer_not_found",
    ),
    Endpoint(
        "POST",
        lambda w, h: f"/v1/households/{h}/transfers/{w.transfer_in}/decline",
        "admin",
        204,
        foreign_code="transfer_not_found",
    ),
    Endpoint(
        "POST",
        lambda w, h: f"/v1/households/{h}/transfers/{w.transfer_out}/cancel",
        "owner",
        204,
        foreign_code="transfer_not_found",
    ),
    Endpoint("GET", H("/hub"), "admin", 200),
    Endpoint("POST", H("/hub/rotate"), "admin", 200),
    Endpoint("GET", H("/audit"), "admin", 200, mutates=False),
    Endpoint(
        "POST",
        H("/owner"),
        "owner",
        200,
        body=lambda w: {"member_id": w.admin_member},
        foreign_code="member_not_found",
    ),
    Endpoint("DELETE", H(), "owner", 200, body=lambda _w: {"confirm_name": "Home"}),
]


async def _audit_head(api: Api) -> int:
    """How many audit events there are (every chain's)."""
    async with api.relay.ctx.storage.read() as conn:
        return int(await conn.fetchval("SELECT COUNT(*) FROM audit_log"))


async def _call(
    api: Api, endpoint: Endpoint, world: World, household: str, token: str | None
) -> Reply:
    return await api.request(
        endpoint.method,
        endpoint.path(world, household),
        json_body=endpoint.body(world) if endpoint.body else None,
        token=token,
    )


async def test_household_endpoint_matrix(api: Api) -> None:
    checked = 0
    for endpoint in ENDPOINTS:
        world = await build_world(api, with_code=endpoint.with_code)
        head = await _audit_head(api)
        rank = ROLES.index(endpoint.minimum)
        label = f"{endpoint.method} {endpoint.path(world, '{household_id}')}"

        reply = await _call(api, endpoint, world, world.household, None)
        assert (reply.status, reply.code) == (401, "authentication_required"), label
        reply = await _call(api, endpoint, world, world.household, "x" * 43)
        assert (reply.status, reply.code) == (401, "invalid_token"), label

        # Another household: the same 404 as for a household that does not exist.
        stranger = world.users["stranger"].token
        reply = await _call(api, endpoint, world, world.household, stranger)
        missing = await _call(api, endpoint, world, "f" * 32, stranger)
        assert (reply.status, reply.code) == (404, "household_not_found"), label
        assert reply.body == missing.body, label
        if endpoint.foreign_code is not None:
            # Its own household with this world's resource: that resource is not there.
            reply = await _call(api, endpoint, world, world.other, stranger)
            assert (reply.status, reply.code) == (404, endpoint.foreign_code), label
            if endpoint.audits_foreign_refusal:
                head += 1

        for role in ROLES[:rank]:
            reply = await _call(api, endpoint, world, world.household, world.users[role].token)
            assert (reply.status, reply.code) == (403, "forbidden"), f"{label} as {role}"
        assert await _audit_head(api) == head, f"{label}: a refused call changed something"

        for index, role in enumerate(ROLES[rank:]):
            if endpoint.mutates and index:
                world = await build_world(api, with_code=endpoint.with_code)
            reply = await _call(api, endpoint, world, world.household, world.users[role].token)
            assert reply.status == endpoint.ok, f"{label} as {role}: {reply.body}"
            checked += 1
    assert checked >= len(ENDPOINTS)


async def test_claim_status_matrix(api: Api) -> None:
    world = await build_world(api)
    path = f"/v1/claims/{world.claim_id}"
    assert (await api.request("GET", path)).status == 401
    reply = await api.request("GET", path, token=world.users["stranger"].token)
    assert (reply.status, reply.code) == (404, "claim_not_found")
    for role in ROLES:
        await api.request("GET", path, token=world.users[role].token, expect=200)


async def test_account_endpoints_need_a_session(api: Api) -> None:
    user = await api.sign_up()
    for method, path, body in [
        ("GET", "/v1/auth/me", None),
        ("GET", "/v1/households", None),
        ("POST", "/v1/households", {"name": "x"}),
        ("GET", "/v1/models", None),
        ("GET", "/v1/models/pi-sensor", None),
        ("POST", "/v1/invitations/accept", {"token": "A" * 43}),
        ("GET", "/v1/account/export", None),
        ("DELETE", "/v1/account", {"password": "not the password"}),
        ("POST", "/v1/auth/sign-out", None),
    ]:
        reply = await api.request(method, path, json_body=body)
        assert (reply.status, reply.code) == (401, "authentication_required"), path
        reply = await api.request(method, path, json_body=body, token=user.token)
        refusals = {"invitation_invalid", "model_not_found", "password_mismatch"}
        assert reply.status < 400 or reply.code in refusals, (
            path,
            reply.body,
        )


async def test_admin_endpoints(api: Api) -> None:
    world = await build_world(api)
    admin = await api.admin()
    record = FakeDevice().record()
    cases = [
        ("POST", "/v1/admin/registry/import", {"records": [record]}, 200),
        ("GET", f"/v1/admin/registry/devices/{world.device.id}", None, 200),
        (
            "PUT",
            f"/v1/admin/registry/devices/{world.free_device.id}/preassignment",
            {"household_id": world.household},
            200,
        ),
        ("DELETE", f"/v1/admin/registry/devices/{world.free_device.id}/preassignment", None, 204),
        ("GET", "/v1/admin/models", None, 200),
        ("PUT", "/v1/admin/models/pi-sensor", {"name": "Pi sensor", "metadata": {}}, 200),
        ("GET", "/v1/admin/audit", None, 200),
        (
            "POST",
            f"/v1/admin/accounts/{world.users['viewer'].account_id}/revoke-sessions",
            None,
            200,
        ),
    ]
    for method, path, body, ok in cases:
        reply = await api.request(method, path, json_body=body)
        assert reply.status == 401, path
        for role in (*ROLES, "stranger"):
            reply = await api.request(method, path, json_body=body, token=world.users[role].token)
            assert (reply.status, reply.code) == (403, "admin_required"), (path, role)
        await api.request(method, path, json_body=body, token=admin.token, expect=ok)
