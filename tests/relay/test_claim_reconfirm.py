"""A lost confirmation answer: the device's retry within the TTL gets the same grant.

Runs on SQLite and on PostgreSQL (``api`` is parametrised over both databases) with the real
Mosquitto: the retry's credential logs in, the audit log records the re-confirmation and its
chain still verifies, and everything outside "same device, same token, within the TTL, the
ownership that claim made" fails closed as before.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.plugins.clock import FakeClock
from tests.plugins.lossy_proxy import ProxyFactory
from tests.plugins.mosquitto import MosquittoBroker

from .helpers import Api, FakeDevice, User
from .mqtt import connect_code


async def _claimed(api: Api) -> tuple[User, str, FakeDevice, dict[str, Any], dict[str, Any]]:
    """A claim whose first confirmation committed (its answer is what the device lost)."""
    owner, household, device, started = await api.started_claim()
    assert started.status == 201, started.body
    first = await api.confirm(device, started.body["token"], expect=200)
    return owner, household, device, started.body, first.body


async def test_retry_within_the_ttl_gets_the_same_grant(
    api: Api, broker: MosquittoBroker, clock: FakeClock[int]
) -> None:
    owner, household, device, claim, first = await _claimed(api)
    clock.advance(30)  # the device's backoff

    retry = await api.confirm(device, claim["token"])
    assert retry.status == 200, retry.body
    assert retry.body == first  # same household, same MQTT credential material
    assert await connect_code(broker, retry.body["mqtt"]) == 0

    status = await api.request(
        "GET", f"/v1/claims/{claim['claim_id']}", token=owner.token, expect=200
    )
    assert status.body["status"] == "owned"
    events = await api.device_audit(owner, household, device)
    actions = [event["action"] for event in events]
    assert actions.count("device.claimed") == 1
    assert actions.count("device.claim_reconfirmed") == 1
    reconfirmed = next(e for e in events if e["action"] == "device.claim_reconfirmed")
    assert reconfirmed["actor"] == f"device:{device.id}"
    assert reconfirmed["details"]["claim_id"] == claim["claim_id"]
    report = await api.relay.verify_audit()
    assert report.count >= 4


async def test_retry_after_a_rotation_gets_the_current_credential(
    api: Api, broker: MosquittoBroker
) -> None:
    owner, household, device, claim, first = await _claimed(api)
    await api.request(
        "POST",
        f"/v1/households/{household}/devices/{device.id}/credentials",
        token=owner.token,
        expect=200,
    )
    retry = await api.confirm(device, claim["token"], expect=200)
    assert retry.body["household_id"] == household
    assert retry.body["mqtt"]["password"] != first["mqtt"]["password"]
    assert await connect_code(broker, retry.body["mqtt"]) == 0
    assert await connect_code(broker, first["mqtt"]) != 0


async def test_replays_gain_nothing(api: Api) -> None:
    _owner, _household, device, claim, _first = await _claimed(api)
    captured = device.confirm(claim["token"], api.now())
    retry = await api.request(
        "POST", "/v1/claims/confirm", json_body={"confirmation": captured}, expect=200
    )
    assert retry.body["status"] == "owned"
    # The same signed confirmation again (a third party that captured it): refused.
    replay = await api.request("POST", "/v1/claims/confirm", json_body={"confirmation": captured})
    assert (replay.status, replay.code) == (409, "claim_rejected")
    # Another genuine device signing the spent token: refused.
    other = await api.device()
    stolen = await api.confirm(other, claim["token"])
    assert (stolen.status, stolen.code) == (409, "claim_rejected")
    # A changed byte (no device signature): refused before the token is read.
    forged = device.confirm(claim["token"], api.now())
    forged["timestamp"] += 1
    bad = await api.request("POST", "/v1/claims/confirm", json_body={"confirmation": forged})
    assert (bad.status, bad.code) == (400, "bad_signature")


async def test_first_confirmation_replayed_is_refused(api: Api) -> None:
    _owner, _household, device, started = await api.started_claim()
    confirmation = device.confirm(started.body["token"], api.now())
    await api.request(
        "POST", "/v1/claims/confirm", json_body={"confirmation": confirmation}, expect=200
    )
    replay = await api.request(
        "POST", "/v1/claims/confirm", json_body={"confirmation": confirmation}
    )
    assert (replay.status, replay.code) == (409, "claim_rejected")


async def test_retry_after_the_ttl_fails_closed(api: Api, clock: FakeClock[int]) -> None:
    _owner, _household, device, claim, _first = await _claimed(api)
    clock.advance(api.relay.ctx.config.claim_ttl + 1)
    late = await api.confirm(device, claim["token"])
    assert (late.status, late.code) == (409, "claim_rejected")


async def test_retry_after_release_or_a_new_claim_fails_closed(api: Api) -> None:
    owner, household, device, claim, _first = await _claimed(api)
    await api.release(owner, household, device, expect=200)
    released = await api.confirm(device, claim["token"])
    assert (released.status, released.code) == (409, "claim_rejected")

    # Claimed again by another household: the old token (another household's) gives nothing.
    neighbour, elsewhere = await api.owner_household()
    second = await api.claim(neighbour, elsewhere, device)
    assert second["household_id"] == elsewhere
    stale = await api.confirm(device, claim["token"])
    assert (stale.status, stale.code) == (409, "claim_rejected")


async def test_answer_lost_on_the_wire_then_retried(
    api: Api, broker: MosquittoBroker, lossy_proxy_factory: ProxyFactory
) -> None:
    """The connection drops after the service committed (the lossy proxy); the retry gets
    the grant the device never saw, and it opens the broker."""
    owner, household, device, started = await api.started_claim()
    server = api.client.server
    async with (
        lossy_proxy_factory(server.host, server.port, drop=1) as proxy,
        aiohttp.ClientSession() as http,
    ):
        url = proxy.url + "/v1/claims/confirm"
        first = {"confirmation": device.confirm(started.body["token"], api.now())}
        with pytest.raises(aiohttp.ClientError):
            async with http.post(url, json=first) as reply:
                await reply.read()
        assert proxy.dropped == 1
        status = await api.request(
            "GET", f"/v1/claims/{started.body['claim_id']}", token=owner.token, expect=200
        )
        assert status.body["status"] == "owned"  # committed, though nobody heard
        retry = {"confirmation": device.confirm(started.body["token"], api.now())}
        async with http.post(url, json=retry) as reply:
            assert reply.status == 200
            body = await reply.json()
    assert (body["status"], body["household_id"]) == ("owned", household)
    assert body["mqtt"]["username"] == device.id
    assert await connect_code(broker, body["mqtt"]) == 0
    await api.relay.verify_audit()
