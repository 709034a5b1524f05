"""Households, roles, members standing for HA users, invitations, unicode names."""

from __future__ import annotations

from tests.plugins.clock import FakeClock

from .helpers import Api


async def test_roles_and_external_members(api: Api) -> None:
    owner = await api.sign_up()
    home = await api.household(owner, "Zuhause 🏠 — Ünïcødé")
    admin = await api.join(owner, home, "admin")
    listed = await api.request("GET", "/v1/households", token=admin.token, expect=200)
    assert listed.body["households"][0]["name"] == "Zuhause 🏠 — Ünïcødé"
    assert listed.body["households"][0]["role"] == "admin"

    kid = await api.request(
        "POST",
        f"/v1/households/{home}/members",
        json_body={"external_id": "ha-user-Ü1", "display_name": "Kid ☃", "role": "viewer"},
        token=admin.token,
        expect=201,
    )
    assert kid.body["external_id"] == "ha-user-Ü1"
    dup = await api.request(
        "POST",
        f"/v1/households/{home}/members",
        json_body={"external_id": "ha-user-Ü1", "display_name": "Again", "role": "viewer"},
        token=admin.token,
    )
    assert (dup.status, dup.code) == (409, "conflict")
    # An admin cannot grant admin; the owner can. Nobody grants owner.
    path = f"/v1/households/{home}/members/{kid.body['member_id']}"
    reply = await api.request("PATCH", path, json_body={"role": "admin"}, token=admin.token)
    assert (reply.status, reply.code) == (403, "forbidden")
    await api.request("PATCH", path, json_body={"role": "member"}, token=admin.token, expect=200)
    await api.request("PATCH", path, json_body={"role": "admin"}, token=owner.token, expect=200)
    reply = await api.request("PATCH", path, json_body={"role": "owner"}, token=owner.token)
    assert (reply.status, reply.code) == (400, "invalid_request")
    # The kid is an admin now: only the owner may remove them.
    reply = await api.request("DELETE", path, token=admin.token)
    assert (reply.status, reply.code) == (403, "forbidden")
    await api.request("DELETE", path, token=owner.token, expect=204)

    members = await api.request("GET", f"/v1/households/{home}/members", token=owner.token)
    owner_member = next(m for m in members.body["members"] if m["role"] == "owner")
    reply = await api.request(
        "PATCH",
        f"/v1/households/{home}/members/{owner_member['member_id']}",
        json_body={"role": "viewer"},
        token=owner.token,
    )
    assert (reply.status, reply.code) == (400, "invalid_request")
    audit = await api.request("GET", f"/v1/households/{home}/audit", token=owner.token)
    assert "member.role_changed" in {e["action"] for e in audit.body["events"]}


async def test_invitations(api: Api, clock: FakeClock[int]) -> None:
    owner, home = await api.owner_household()
    invited = await api.sign_up("invitee@example.com")
    wrong = await api.sign_up()
    invitation = await api.invite(
        owner, home, "member", email="invitee@example.com", external_id="ha-7"
    )
    token = invitation.body["token"]
    reply = await api.request(
        "POST", "/v1/invitations/accept", json_body={"token": token}, token=wrong.token
    )
    assert (reply.status, reply.code) == (404, "invitation_invalid")
    member = await api.accept(invited, token, expect=201)
    assert (member.body["role"], member.body["external_id"]) == ("member", "ha-7")
    reply = await api.request(
        "POST", "/v1/invitations/accept", json_body={"token": token}, token=invited.token
    )
    assert reply.code == "invitation_invalid"  # single use

    expiring = await api.invite(owner, home, "viewer")
    listed = await api.request(
        "GET", f"/v1/households/{home}/invitations", token=owner.token, expect=200
    )
    assert [i["invitation_id"] for i in listed.body["invitations"]] == [
        expiring.body["invitation_id"]
    ]
    clock.advance(7 * 86400 + 1)
    late = await api.sign_up()
    reply = await api.accept(late, expiring.body["token"])
    assert reply.code == "invitation_invalid"


async def test_revoked_invitation(api: Api) -> None:
    owner, home = await api.owner_household()
    guest = await api.sign_up()
    invitation = await api.invite(owner, home, "viewer")
    await api.request(
        "DELETE",
        f"/v1/households/{home}/invitations/{invitation.body['invitation_id']}",
        token=owner.token,
        expect=204,
    )
    reply = await api.accept(guest, invitation.body["token"])
    assert reply.code == "invitation_invalid"


async def test_names_are_validated(api: Api) -> None:
    owner = await api.sign_up()
    for name in ["", "   ", "a\x00b", "bell\x07", "x" * 101, "\ud800"]:
        reply = await api.request(
            "POST", "/v1/households", json_body={"name": name}, token=owner.token
        )
        assert (reply.status, reply.code) == (400, "invalid_request"), repr(name)
