"""A device its household already owns, onboarded again into that household (issue 13.1).

Every answer to the device's confirmations was lost for its whole commit timer: the device
rolled back to provisioning while the service recorded it as the household's. The dialog was
closed; a new onboarding by an owner or admin of the same household must succeed (a new claim,
the device's signed confirmation over the new token) instead of a 409 that asks for a factory
reset. Ownership stays; the MQTT password is rotated (the old one stops working on the broker);
``owned_since`` becomes the new claim's completion. Nothing changes for anybody else: another
household still gets the indistinguishable 409 ``claim_rejected``, a member without the admin
role gets 403 as for any claim.

Runs on SQLite and on PostgreSQL (``api`` is parametrised over both) with the real Mosquitto.
"""

from __future__ import annotations

from typing import Any

from tests.plugins.clock import FakeClock
from tests.plugins.mosquitto import MosquittoBroker

from .helpers import Api, FakeDevice, User
from .mqtt import client_exists, connect_code, hub_topics


async def _owned(api: Api) -> tuple[User, str, FakeDevice, dict[str, Any]]:
    """A device owned by a household (the device never heard the answer)."""
    owner, household = await api.owner_household()
    device = await api.device()
    first = await api.claim(owner, household, device)
    return owner, household, device, first


async def _devices(api: Api, user: User, household: str) -> list[dict[str, Any]]:
    reply = await api.request(
        "GET", f"/v1/households/{household}/devices", token=user.token, expect=200
    )
    return list(reply.body["devices"])


async def test_own_household_onboards_its_device_again(
    api: Api, broker: MosquittoBroker, clock: FakeClock[int]
) -> None:
    owner, household, device, first = await _owned(api)
    # The hub exists (Home Assistant fetched it), so its role must stay in step.
    await api.request("GET", f"/v1/households/{household}/hub", token=owner.token, expect=200)
    [before] = await _devices(api, owner, household)
    clock.advance(200)  # the device's commit timer ran out; a new flow starts later
    # A release notice the device signed before this onboarding (delivered late, or replayed).
    early_release = device.release(api.now())
    clock.advance(1)
    admin = await api.join(owner, household, "admin")

    started = await api.start_claim(admin, household, device)
    assert started.status == 201, started.body
    assert started.body["household_id"] == household
    confirmed = await api.confirm(device, started.body["token"])
    assert confirmed.status == 200, confirmed.body
    assert (confirmed.body["status"], confirmed.body["household_id"]) == ("owned", household)
    # A new MQTT password: the one of the lost answer stops working on the broker.
    assert confirmed.body["mqtt"]["username"] == device.id
    assert confirmed.body["mqtt"]["password"] != first["mqtt"]["password"]
    assert await connect_code(broker, confirmed.body["mqtt"]) == 0
    assert await connect_code(broker, first["mqtt"]) != 0
    assert await client_exists(broker, device.id)
    assert f"iob/{device.id}/#" in await hub_topics(broker, household)

    status = await api.request(
        "GET", f"/v1/claims/{started.body['claim_id']}", token=owner.token, expect=200
    )
    assert status.body["status"] == "owned"
    [after] = await _devices(api, owner, household)
    assert after["device_id"] == device.id
    assert after["since"] == status.body["completed_at"] > before["since"]

    events = await api.device_audit(owner, household, device)
    actions = [event["action"] for event in events]
    assert actions.count("device.claimed") == 1
    assert actions.count("device.reclaimed") == 1
    reclaimed = next(e for e in events if e["action"] == "device.reclaimed")
    assert reclaimed["actor"] == f"device:{device.id}"
    assert reclaimed["details"]["claim_id"] == started.body["claim_id"]
    assert reclaimed["details"]["account_id"] == admin.account_id
    await api.relay.verify_audit()

    # The early release notice predates this onboarding: refused, the device stays.
    stale = await api.request(
        "POST", "/v1/devices/release-by-device", json_body={"release": early_release}
    )
    assert (stale.status, stale.code) == (409, "release_stale")
    assert [d["device_id"] for d in await _devices(api, owner, household)] == [device.id]

    # The new answer lost as well: the device's fresh retry gets the same (new) grant, and
    # the old claim's token no longer re-confirms anything.
    retry = await api.confirm(device, started.body["token"], expect=200)
    assert retry.body == confirmed.body


async def test_another_household_still_gets_claim_rejected(
    api: Api, broker: MosquittoBroker
) -> None:
    owner, household, device, first = await _owned(api)
    neighbour, elsewhere = await api.owner_household()
    refused = await api.start_claim(neighbour, elsewhere, device)
    # Indistinguishable from an unknown id (no enumeration), as before.
    unknown = FakeDevice()
    stranger = await api.start_claim(neighbour, elsewhere, unknown)
    assert (refused.status, refused.code) == (409, "claim_rejected")
    assert (refused.body, stranger.status) == (stranger.body, 409)
    # Nothing moved: still the household's, its credential still opens the broker.
    [listed] = await _devices(api, owner, household)
    assert listed["device_id"] == device.id
    assert await connect_code(broker, first["mqtt"]) == 0


async def test_members_without_claim_rights_are_refused(api: Api, broker: MosquittoBroker) -> None:
    owner, household, device, first = await _owned(api)
    for role in ("viewer", "member"):
        user = await api.join(owner, household, role)
        refused = await api.start_claim(user, household, device)
        assert (refused.status, refused.code) == (403, "forbidden")
    assert await connect_code(broker, first["mqtt"]) == 0


async def test_tokens_other_than_the_new_claims_give_nothing(
    api: Api, clock: FakeClock[int]
) -> None:
    """After the re-onboarding, the first claim's token re-confirms nothing (its ownership
    was superseded), and another device cannot use the new token."""
    owner, household, device, first = await api.started_claim()
    assert first.status == 201, first.body
    await api.confirm(device, first.body["token"], expect=200)
    clock.advance(200)  # the commit timer ran out before the new onboarding
    again = await api.start_claim(owner, household, device)
    assert again.status == 201, again.body
    await api.confirm(device, again.body["token"], expect=200)
    stale = await api.confirm(device, first.body["token"])
    assert (stale.status, stale.code) == (409, "claim_rejected")
    other = await api.device()
    stolen = await api.confirm(other, again.body["token"])
    assert (stolen.status, stolen.code) == (409, "claim_rejected")
