"""Claims end to end, on both databases, with the real broker."""

from __future__ import annotations

import asyncio
import json

from iob_protocol.claim import ClaimConfirmation
from iob_protocol.identity import DeviceIdentity

from tests.plugins.clock import FakeClock
from tests.plugins.mosquitto import MosquittoBroker

from .helpers import Api, FakeDevice
from .mqtt import client_exists, connect_code


async def test_claim_end_to_end(api: Api, broker: MosquittoBroker) -> None:
    owner, household, device, started = await api.started_claim()
    assert started.status == 201
    assert len(started.body["token"]) >= 22  # 256 bits, base64url
    assert started.body["expires_at"] - api.now() <= 600

    status = await api.request(
        "GET", f"/v1/claims/{started.body['claim_id']}", token=owner.token, expect=200
    )
    assert status.body["status"] == "pending"

    confirm = device.confirm(started.body["token"], api.now())
    owned = await api.request(
        "POST", "/v1/claims/confirm", json_body={"confirmation": confirm}, expect=200
    )
    assert owned.body["status"] == "owned"
    assert owned.body["household_id"] == household
    assert owned.body["mqtt"]["username"] == device.id
    assert await connect_code(broker, owned.body["mqtt"]) == 0

    status = await api.request(
        "GET", f"/v1/claims/{started.body['claim_id']}", token=owner.token, expect=200
    )
    assert status.body["status"] == "owned"
    devices = await api.request(
        "GET", f"/v1/households/{household}/devices", token=owner.token, expect=200
    )
    assert [d["device_id"] for d in devices.body["devices"]] == [device.id]

    # The token is single use: a replay of the signed confirmation is rejected; a freshly
    # signed retry by the device (it lost the answer) gets the same grant, nothing more
    # (test_claim_reconfirm.py).
    replay = await api.request("POST", "/v1/claims/confirm", json_body={"confirmation": confirm})
    assert (replay.status, replay.code) == (409, "claim_rejected")
    fresh = device.confirm(started.body["token"], api.now())
    again = await api.request("POST", "/v1/claims/confirm", json_body={"confirmation": fresh})
    assert (again.status, again.body) == (200, owned.body)

    # A second claim by its own household is an onboarding again (test_claim_reclaim.py);
    # another household's is refused like an unknown id (test_strangers_cannot_tell_…).
    second = await api.start_claim(owner, household, device)
    assert (second.status, second.body["household_id"]) == (201, household)


async def test_confirmation_as_canonical_text_is_accepted(api: Api) -> None:
    _owner, _household, device, started = await api.started_claim()
    text = ClaimConfirmation.create(device.identity, started.body["token"], clock=api.now).to_json()
    reply = await api.request(
        "POST", "/v1/claims/confirm", json_body={"confirmation": text.decode()}, expect=200
    )
    assert reply.body["device_id"] == device.id


async def test_strangers_cannot_tell_unknown_from_owned(api: Api) -> None:
    owner, home = await api.owner_household()
    device = await api.device()
    await api.claim(owner, home, device)

    stranger, elsewhere = await api.owner_household()
    owned_reply = await api.start_claim(stranger, elsewhere, device)
    unknown_reply = await api.start_claim(stranger, elsewhere, FakeDevice())
    assert owned_reply.status == unknown_reply.status == 409
    assert owned_reply.body == unknown_reply.body
    assert owned_reply.code == "claim_rejected"

    # The device-facing endpoint: an unknown id fails exactly like a forged signature.
    forged = FakeDevice(identity=DeviceIdentity.generate(device.id))
    unknown = FakeDevice()
    token = "A" * 43
    forged_reply = await api.confirm(forged, token)
    unknown_reply = await api.confirm(unknown, token)
    assert forged_reply.status == unknown_reply.status == 400
    assert forged_reply.body == unknown_reply.body
    assert forged_reply.code == "bad_signature"


async def test_bad_signature_and_token_for_another_device(api: Api) -> None:
    owner, household = await api.owner_household()
    device, other = await api.device(), await api.device()
    started = await api.start_claim(owner, household, device)
    token = started.body["token"]

    tampered = device.confirm(token, api.now())
    tampered["timestamp"] += 1
    reply = await api.request("POST", "/v1/claims/confirm", json_body={"confirmation": tampered})
    assert (reply.status, reply.code) == (400, "bad_signature")

    # Another genuine device signing this household's token gets nothing.
    reply = await api.request(
        "POST", "/v1/claims/confirm", json_body={"confirmation": other.confirm(token, api.now())}
    )
    assert (reply.status, reply.code) == (409, "claim_rejected")
    # The right device still can.
    reply = await api.request(
        "POST", "/v1/claims/confirm", json_body={"confirmation": device.confirm(token, api.now())}
    )
    assert reply.status == 200


async def test_expired_claim(api: Api, clock: FakeClock[int]) -> None:
    owner, household, device, started = await api.started_claim()
    clock.advance(601)
    reply = await api.confirm(device, started.body["token"])
    assert (reply.status, reply.code) == (410, "claim_expired")
    status = await api.request(
        "GET", f"/v1/claims/{started.body['claim_id']}", token=owner.token, expect=200
    )
    assert status.body["status"] == "expired"
    # And the device is still free: a new claim works.
    assert (await api.claim(owner, household, device))["status"] == "owned"


async def test_signed_time_checks(api: Api) -> None:
    owner, household = await api.owner_household()
    device = await api.device()
    token = (await api.start_claim(owner, household, device)).body["token"]

    ahead = await api.request(
        "POST",
        "/v1/claims/confirm",
        json_body={"confirmation": device.confirm(token, api.now() + 3600)},
    )
    assert (ahead.status, ahead.code) == (400, "clock_skew")
    stale = await api.request(
        "POST",
        "/v1/claims/confirm",
        json_body={"confirmation": device.confirm(token, api.now() - 650)},
    )
    assert (stale.status, stale.code) == (410, "claim_expired")
    never_synced = await api.request(
        "POST",
        "/v1/claims/confirm",
        json_body={"confirmation": device.confirm(token, 86400)},
    )
    assert (never_synced.status, never_synced.code) == (400, "clock_skew")


async def test_malformed_confirmations(api: Api) -> None:
    device = await api.device()
    good = device.confirm("B" * 43, api.now())
    cases = [
        {"confirmation": {**good, "extra": 1}},
        {"confirmation": {k: v for k, v in good.items() if k != "nonce"}},
        {"confirmation": {**good, "nonce": "!!"}},
        {"confirmation": {**good, "timestamp": 1.5}},
        {"confirmation": {**good, "device_id": "lower-case-id-00"}},
        {"confirmation": 42},
        {"confirmation": "{not json"},
        {"confirmation": json.dumps(good, indent=1)},  # valid JSON, not canonical
        {},
        {"confirmation": good, "more": True},
    ]
    for body in cases:
        reply = await api.request("POST", "/v1/claims/confirm", json_body=body)
        assert (reply.status, reply.code) == (400, "invalid_request"), body


async def test_hundred_concurrent_claims_one_owner(api: Api, broker: MosquittoBroker) -> None:
    device = await api.device()
    starts = []
    for _ in range(10):
        user, household = await api.owner_household()
        for _ in range(10):
            started = await api.start_claim(user, household, device)
            assert started.status == 201
            starts.append(started.body)
    confirmations = [device.confirm(s["token"], api.now()) for s in starts]
    replies = await asyncio.gather(
        *(
            api.request("POST", "/v1/claims/confirm", json_body={"confirmation": c})
            for c in confirmations
        )
    )
    winners = [r for r in replies if r.status == 200]
    assert len(winners) == 1
    assert all((r.status, r.code) == (409, "claim_rejected") for r in replies if r.status != 200)
    owner_household = winners[0].body["household_id"]
    registry = await api.relay.registry.device(device.id)
    assert registry.household_id == owner_household
    assert await client_exists(broker, device.id)
    async with api.relay.ctx.storage.read() as conn:
        owned = await conn.fetch("SELECT id FROM claims WHERE status = 'owned'")
        pending = await conn.fetch("SELECT id FROM claims WHERE status = 'pending'")
        events = await conn.fetch("SELECT seq FROM audit_log WHERE action = 'device.claimed'")
    assert len(owned) == 1
    assert pending == []
    assert len(events) == 1


async def test_claim_rejected_for_device_preassigned_elsewhere(api: Api) -> None:
    admin = await api.admin()
    buyer, buyer_home = await api.owner_household()
    device = await api.device()
    await api.request(
        "PUT",
        f"/v1/admin/registry/devices/{device.id}/preassignment",
        json_body={"household_id": buyer_home, "order_ref": "order-1"},
        token=admin.token,
        expect=200,
    )
    stranger, elsewhere = await api.owner_household()
    reply = await api.start_claim(stranger, elsewhere, device)
    assert (reply.status, reply.code) == (409, "claim_rejected")
    # The buyer may still claim it by hand (a device without Ethernet).
    assert (await api.claim(buyer, buyer_home, device))["household_id"] == buyer_home


async def test_claim_status_is_private(api: Api) -> None:
    _owner, _household, _device, started = await api.started_claim()
    stranger = await api.sign_up()
    reply = await api.request("GET", f"/v1/claims/{started.body['claim_id']}", token=stranger.token)
    assert (reply.status, reply.code) == (404, "claim_not_found")
