"""Account lifecycle: owner hand-over, household deletion, account export and deletion.

Each runs on SQLite and PostgreSQL with the real Mosquitto: a deleted household's devices are
released exactly as a release does (client gone, live session cut, claimable again), and the
audit chain still verifies after an account is deleted, with nothing left that names it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiomqtt

from cloud_relay.broker.mosquitto import MosquittoDynsecAdapter
from tests.plugins.mosquitto import MosquittoBroker

from .failing_broker import FailingBroker
from .helpers import Api, User
from .mqtt import client_exists, connect_code, hub_topics, mqtt_client


def _household_path(household_id: str) -> str:
    return f"/v1/households/{household_id}"


async def _member_id(api: Api, user: User, household_id: str, account_id: str) -> str:
    members = await api.request(
        "GET", _household_path(household_id) + "/members", token=user.token, expect=200
    )
    return str(
        next(m["member_id"] for m in members.body["members"] if m["account_id"] == account_id)
    )


async def _hand_over(api: Api, user: User, household_id: str, member_id: str) -> Any:
    return await api.request(
        "POST",
        _household_path(household_id) + "/owner",
        json_body={"member_id": member_id},
        token=user.token,
    )


async def _delete_household(api: Api, user: User, household_id: str, name: str) -> Any:
    return await api.request(
        "DELETE",
        _household_path(household_id),
        json_body={"confirm_name": name},
        token=user.token,
    )


async def _delete_account(api: Api, user: User, password: str) -> Any:
    return await api.request(
        "DELETE", "/v1/account", json_body={"password": password}, token=user.token
    )


async def _hub(api: Api, user: User, household_id: str) -> dict[str, Any]:
    reply = await api.request(
        "GET", _household_path(household_id) + "/hub", token=user.token, expect=200
    )
    return dict(reply.body)


async def _kicked(client: aiomqtt.Client) -> bool:
    """Whether the broker ends the client's session (within the wait for its messages)."""
    try:
        async with asyncio.timeout(5):
            async for _ in client.messages:
                pass
    except aiomqtt.MqttError:
        return True
    return False


async def _gone_for(api: Api, users: list[User], household_id: str) -> None:
    """The household is gone for each of ``users``: not found, not listed."""
    for user in users:
        reply = await api.request("GET", _household_path(household_id), token=user.token)
        assert (reply.status, reply.code) == (404, "household_not_found")
        listed = await api.request("GET", "/v1/households", token=user.token, expect=200)
        assert listed.body["households"] == []


async def test_owner_hands_over_to_a_member(api: Api) -> None:
    owner, home = await api.owner_household()
    admin = await api.join(owner, home, "admin")
    viewer = await api.join(owner, home, "viewer")
    external = await api.request(
        "POST",
        _household_path(home) + "/members",
        json_body={"external_id": "ha-user-1", "display_name": "Kid", "role": "member"},
        token=owner.token,
        expect=201,
    )
    admin_member = await _member_id(api, owner, home, admin.account_id)
    owner_member = await _member_id(api, owner, home, owner.account_id)

    for user in (admin, viewer):
        reply = await _hand_over(api, user, home, admin_member)
        assert (reply.status, reply.code) == (403, "forbidden")
    reply = await _hand_over(api, owner, home, external.body["member_id"])
    assert (reply.status, reply.code) == (400, "invalid_request")
    assert "account" in reply.body["error"]["message"]
    reply = await _hand_over(api, owner, home, owner_member)
    assert (reply.status, reply.code) == (400, "invalid_request")
    reply = await _hand_over(api, owner, home, "0" * 32)
    assert (reply.status, reply.code) == (404, "member_not_found")
    stranger = await api.sign_up()
    reply = await _hand_over(api, stranger, home, admin_member)
    assert (reply.status, reply.code) == (404, "household_not_found")

    reply = await _hand_over(api, owner, home, admin_member)
    assert reply.status == 200, reply.body
    assert (reply.body["member_id"], reply.body["role"]) == (admin_member, "owner")
    roles = {
        m["account_id"]: m["role"]
        for m in (
            await api.request("GET", _household_path(home) + "/members", token=admin.token)
        ).body["members"]
    }
    assert roles[owner.account_id] == "admin"
    assert roles[admin.account_id] == "owner"
    # The former owner is an admin now: neither a second hand-over nor a deletion.
    reply = await _hand_over(api, owner, home, owner_member)
    assert (reply.status, reply.code) == (403, "forbidden")
    reply = await _delete_household(api, owner, home, "Home")
    assert (reply.status, reply.code) == (403, "forbidden")
    audit = await api.request("GET", _household_path(home) + "/audit", token=admin.token)
    changed = [e for e in audit.body["events"] if e["action"] == "household.owner_changed"]
    assert [e["details"] for e in changed] == [
        {"from_member_id": owner_member, "to_member_id": admin_member}
    ]
    assert changed[0]["actor"] == f"account:{owner.account_id}"


async def test_household_deletion_is_for_the_owner_and_confirmed_by_name(
    api: Api, broker: MosquittoBroker
) -> None:
    owner = await api.sign_up()
    home = await api.household(owner, "Flat 3 ✦")
    admin = await api.join(owner, home, "admin")
    member = await api.join(owner, home, "member")
    device = await api.device()
    await api.claim(owner, home, device)
    for user in (admin, member):
        reply = await _delete_household(api, user, home, "Flat 3 ✦")
        assert (reply.status, reply.code) == (403, "forbidden")
    reply = await _delete_household(api, await api.sign_up(), home, "Flat 3 ✦")
    assert (reply.status, reply.code) == (404, "household_not_found")
    reply = await _delete_household(api, owner, home, "Flat 3")
    assert (reply.status, reply.code) == (400, "confirmation_mismatch")
    assert "name" in reply.body["error"]["message"]
    reply = await api.request("DELETE", _household_path(home), token=owner.token)
    assert (reply.status, reply.code) == (415, "unsupported_media_type")  # no confirmation
    reply = await api.request("DELETE", _household_path(home), json_body={}, token=owner.token)
    assert (reply.status, reply.code) == (400, "invalid_request")
    # Nothing happened.
    assert await client_exists(broker, device.id)
    await api.request("GET", _household_path(home), token=member.token, expect=200)
    audit = await api.request("GET", _household_path(home) + "/audit", token=owner.token)
    assert "household.deleted" not in {e["action"] for e in audit.body["events"]}


async def test_household_deletion_releases_everything(api: Api, broker: MosquittoBroker) -> None:
    owner = await api.sign_up()
    home = await api.household(owner, "Flat 3 ✦")
    admin = await api.join(owner, home, "admin")
    member = await api.join(owner, home, "member")
    hub = await _hub(api, owner, home)
    device = await api.device()
    owned = await api.claim(owner, home, device)
    # Shared out to a neighbour, and a neighbour's device shared in.
    neighbour, other = await api.owner_household()
    await _hub(api, neighbour, other)
    await api.share(owner, home, device, other, "control", expect=200)
    theirs = await api.device()
    await api.claim(neighbour, other, theirs)
    await api.share(neighbour, other, theirs, home, "read", expect=200)
    invitation = await api.invite(owner, home, "viewer")
    pending = await api.device()
    claim = await api.start_claim(owner, home, pending)
    assert claim.status == 201

    async with mqtt_client(broker, owned["mqtt"], timeout=5) as client:
        await client.subscribe(f"iob/{device.id}/#", qos=1)
        reply = await _delete_household(api, owner, home, " Flat 3 ✦ ")
        assert reply.status == 200, reply.body
        assert reply.body == {
            "household_id": home,
            "devices_released": 1,
            "members_removed": 3,
            "invitations_revoked": 1,
        }
        assert await _kicked(client)
    assert not await client_exists(broker, device.id)
    assert await connect_code(broker, owned["mqtt"]) != 0
    assert not await client_exists(broker, hub["username"])
    assert await connect_code(broker, hub) != 0
    assert not any(device.id in topic for topic in await hub_topics(broker, other))
    # The neighbour keeps its device and loses only the share.
    shares = await api.request(
        "GET", f"{_household_path(other)}/devices/{theirs.id}/shares", token=neighbour.token
    )
    assert shares.body["shares"] == []
    assert await client_exists(broker, theirs.id)

    await _gone_for(api, [admin, member], home)
    late = await api.request(
        "POST",
        "/v1/invitations/accept",
        json_body={"token": invitation.body["token"]},
        token=(await api.sign_up()).token,
    )
    assert late.code == "invitation_invalid"
    reply = await api.confirm(pending, claim.body["token"])
    assert reply.code == "claim_rejected"
    # A replay is told the household is gone; anyone else learns nothing.
    reply = await _delete_household(api, owner, home, "Flat 3 ✦")
    assert (reply.status, reply.code) == (410, "household_deleted")
    reply = await _delete_household(api, admin, home, "Flat 3 ✦")
    assert (reply.status, reply.code) == (404, "household_not_found")

    # The device is unclaimed: whoever holds it onboards it again.
    again = await api.claim(neighbour, other, device)
    assert again["household_id"] == other
    report = await api.relay.verify_audit()
    assert report.count > 0
    events = await api.request(
        "GET", f"/v1/admin/audit?household_id={home}", token=(await api.admin()).token
    )
    actions = [e["action"] for e in events.body["events"]]
    assert actions[0] == "household.deleted"
    assert "device.released" in actions


async def test_a_failed_deletion_leaves_the_household_whole_and_a_retry_completes(
    failing: tuple[Api, FailingBroker], broker: MosquittoBroker
) -> None:
    api, wrapper = failing
    owner, home = await api.owner_household()
    hub = await _hub(api, owner, home)
    device = await api.device()
    owned = await api.claim(owner, home, device)
    wrapper.fail.add("remove_hub")  # after every device was removed from the broker
    reply = await _delete_household(api, owner, home, "Home")
    assert (reply.status, reply.code) == (503, "broker_unavailable")
    # Compensated: the device's client was put back after the rollback.
    assert wrapper.calls[-3:] == ["remove_hub", "put_device", "put_hub"]
    # Nothing of it remains: the household, its device and both credentials work as before.
    await api.request("GET", _household_path(home), token=owner.token, expect=200)
    listed = await api.request("GET", _household_path(home) + "/devices", token=owner.token)
    assert [d["device_id"] for d in listed.body["devices"]] == [device.id]
    assert await connect_code(broker, owned["mqtt"]) == 0
    assert await connect_code(broker, hub) == 0
    await api.relay.verify_audit()

    wrapper.fail.clear()
    reply = await _delete_household(api, owner, home, "Home")
    assert reply.status == 200, reply.body
    assert await connect_code(broker, owned["mqtt"]) != 0
    assert await connect_code(broker, hub) != 0


async def test_a_crash_between_broker_and_commit_is_completed_by_a_retry(
    api: Api, broker_adapter: MosquittoDynsecAdapter
) -> None:
    owner, home = await api.owner_household()
    await _hub(api, owner, home)
    device = await api.device()
    await api.claim(owner, home, device)
    # What a deletion that crashed before its commit leaves: the broker calls made, no commit.
    await broker_adapter.remove_device(device.id)
    await broker_adapter.remove_hub(home)
    listed = await api.request("GET", _household_path(home) + "/devices", token=owner.token)
    assert [d["device_id"] for d in listed.body["devices"]] == [device.id]

    reply = await _delete_household(api, owner, home, "Home")
    assert reply.status == 200, reply.body
    assert reply.body["devices_released"] == 1
    await _gone_for(api, [owner], home)
    await api.relay.verify_audit()
    neighbour, other = await api.owner_household()
    assert (await api.claim(neighbour, other, device))["household_id"] == other


async def test_deletion_ends_the_households_zero_touch_orders(api: Api) -> None:
    owner, home = await api.owner_household()
    ordered = await api.device()
    await api.relay.registry.preassign(ordered.id, home, "order-1", "test")
    await api.request(
        "DELETE", "/v1/account", json_body={"password": owner.password}, expect=401
    )  # signed in or nothing
    reply = await _delete_household(api, owner, home, "Home")
    assert reply.status == 200, reply.body
    entry = await api.request(
        "GET", f"/v1/admin/registry/devices/{ordered.id}", token=(await api.admin()).token
    )
    assert (entry.body["preassigned_household_id"], entry.body["order_ref"]) == (None, None)


async def test_account_export_holds_the_data_and_no_secret(api: Api) -> None:
    owner, home = await api.owner_household()
    device = await api.device()
    await api.claim(owner, home, device)
    neighbour, other = await api.owner_household()
    invitation = await api.invite(neighbour, other, "viewer", external_id="ha-42")
    await api.accept(owner, invitation.body["token"], expect=201)

    reply = await api.request("GET", "/v1/account/export", token=owner.token, expect=200)
    export = reply.body
    assert export["account"]["account_id"] == owner.account_id
    assert export["account"]["email"] == owner.email
    assert {(m["household_id"], m["role"]) for m in export["memberships"]} == {
        (home, "owner"),
        (other, "viewer"),
    }
    assert [h["household_id"] for h in export["households"]] == [home]
    assert [d["device_id"] for d in export["households"][0]["devices"]] == [device.id]
    assert len(export["sessions"]) == 1
    assert export["sessions"][0]["revoked_at"] is None
    actions = [e["action"] for e in export["audit_events"]]
    assert actions[:2] == ["account.created", "household.created"]
    assert "member.joined" in actions
    assert all(e["actor"] == f"account:{owner.account_id}" for e in export["audit_events"])
    text = json.dumps(export)
    for secret in (owner.token, owner.refresh_token, owner.password, "argon2"):
        assert secret not in text
    reply = await api.request("GET", "/v1/account/export")
    assert reply.code == "authentication_required"


async def test_account_deletion(api: Api, broker: MosquittoBroker) -> None:
    owner = await api.sign_up()
    home = await api.household(owner, "Home")
    device = await api.device()
    owned = await api.claim(owner, home, device)
    partner = await api.join(owner, home, "admin")
    await api.request(
        "POST",
        _household_path(home) + "/members",
        json_body={"external_id": "ha-user-7", "display_name": "Guest", "role": "viewer"},
        token=owner.token,
        expect=201,
    )
    neighbour, other = await api.owner_household()
    invitation = await api.invite(neighbour, other, "member")
    await api.accept(owner, invitation.body["token"], expect=201)
    addressed = await api.invite(neighbour, other, "viewer", email=owner.email)

    reply = await _delete_account(api, owner, "not the password")
    assert (reply.status, reply.code) == (403, "password_mismatch")
    reply = await _delete_account(api, owner, owner.password)
    assert (reply.status, reply.code) == (409, "owner_handover_required")
    message = reply.body["error"]["message"]
    assert home in message
    assert f"/v1/households/{home}/owner" in message
    await api.request("GET", "/v1/auth/me", token=owner.token, expect=200)  # nothing changed

    # The partner leaves; the household has only the Home Assistant user left: it goes too.
    partner_member = await _member_id(api, owner, home, partner.account_id)
    await api.request(
        "DELETE",
        f"{_household_path(home)}/members/{partner_member}",
        token=owner.token,
        expect=204,
    )
    reply = await _delete_account(api, owner, owner.password)
    assert reply.status == 204, reply.body
    assert await connect_code(broker, owned["mqtt"]) != 0
    assert not await client_exists(broker, device.id)

    # Every session ends; the e-mail address signs in to nothing.
    reply = await api.request("GET", "/v1/auth/me", token=owner.token)
    assert reply.code == "invalid_token"
    reply = await api.request(
        "POST", "/v1/auth/refresh", json_body={"refresh_token": owner.refresh_token}
    )
    assert reply.code == "refresh_token_invalid"
    reply = await api.request(
        "POST", "/v1/auth/sign-in", json_body={"email": owner.email, "password": owner.password}
    )
    assert reply.code == "invalid_credentials"
    # A replay: the token is gone with the account.
    reply = await _delete_account(api, owner, owner.password)
    assert (reply.status, reply.code) == (401, "invalid_token")

    members = await api.request(
        "GET", _household_path(other) + "/members", token=neighbour.token, expect=200
    )
    assert owner.account_id not in {m["account_id"] for m in members.body["members"]}
    open_invitations = await api.request(
        "GET", _household_path(other) + "/invitations", token=neighbour.token, expect=200
    )
    assert addressed.body["invitation_id"] not in {
        i["invitation_id"] for i in open_invitations.body["invitations"]
    }

    # The chain verifies; it names the account only by its id, which maps to nobody now.
    await api.relay.verify_audit()
    async with api.relay.ctx.storage.read() as conn:
        rows = await conn.fetch("SELECT actor, action, details FROM audit_log")
        assert (
            await conn.fetchval("SELECT count(*) FROM accounts WHERE id = $1", owner.account_id)
            == 0
        )
        for table in ("invitations", "members", "audit_log"):
            text = json.dumps(await conn.fetch(f"SELECT * FROM {table}"), default=str)  # noqa: S608
            assert owner.email not in text, table
    mine = [row["action"] for row in rows if row["actor"] == f"account:{owner.account_id}"]
    assert mine[0] == "account.created"
    assert mine[-1] == "account.deleted"
    assert "household.deleted" in mine
    assert "member.left" in mine
    # The e-mail address is free for a new account.
    again = await api.sign_up(owner.email)
    assert again.account_id != owner.account_id
