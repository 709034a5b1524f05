"""Devices after the claim: hub, shares, transfer, release (owner and device), zero-touch,
credential rotation — each checked on the real broker with real MQTT clients."""

from __future__ import annotations

import asyncio
from typing import Any

import aiomqtt

from tests.plugins.clock import FakeClock
from tests.plugins.mosquitto import MosquittoBroker

from .helpers import Api
from .mqtt import client_exists, connect_code, hub_topics


async def _hub(api: Api, token: str, household: str) -> dict[str, Any]:
    reply = await api.request("GET", f"/v1/households/{household}/hub", token=token, expect=200)
    return dict(reply.body)


async def test_hub_reaches_owned_and_shared_devices(api: Api, broker: MosquittoBroker) -> None:
    owner, home = await api.owner_household()
    hub = await _hub(api, owner.token, home)
    assert hub["username"] == f"hub-{home}"
    assert await connect_code(broker, hub) == 0
    assert (await _hub(api, owner.token, home)) == hub  # stable until rotated

    device = await api.device()
    await api.claim(owner, home, device)
    topics = await hub_topics(broker, home)
    assert f"iob/{device.id}/#" in topics
    assert f"iob/{device.id}/cmd/#" in topics

    neighbour, other = await api.owner_household()
    await _hub(api, neighbour.token, other)
    share = await api.share(owner, home, device, other, "read", expect=200)
    assert share.body["access"] == "read"
    other_topics = await hub_topics(broker, other)
    assert f"iob/{device.id}/#" in other_topics
    assert f"iob/{device.id}/cmd/#" not in other_topics  # viewer share: subscribe only
    listed = await api.request(
        "GET", f"/v1/households/{other}/devices", token=neighbour.token, expect=200
    )
    assert listed.body["devices"][0]["access"] == "read"
    # The sharee can see the device but cannot release it.
    reply = await api.request(
        "POST", f"/v1/households/{other}/devices/{device.id}/release", token=neighbour.token
    )
    assert (reply.status, reply.code) == (404, "device_not_found")

    await api.share(owner, home, device, other, "control", expect=200)
    assert f"iob/{device.id}/cmd/#" in await hub_topics(broker, other)
    await api.request(
        "DELETE",
        f"/v1/households/{home}/devices/{device.id}/shares/{other}",
        token=owner.token,
        expect=204,
    )
    assert not any(device.id in topic for topic in await hub_topics(broker, other))

    rotated = await api.request(
        "POST", f"/v1/households/{home}/hub/rotate", token=owner.token, expect=200
    )
    assert rotated.body["password"] != hub["password"]
    assert await connect_code(broker, hub) != 0
    assert await connect_code(broker, rotated.body) == 0


async def test_release_kicks_the_live_session_and_frees_the_device(
    api: Api, broker: MosquittoBroker
) -> None:
    owner, home = await api.owner_household()
    device = await api.device()
    owned = await api.claim(owner, home, device)
    mqtt = owned["mqtt"]
    async with aiomqtt.Client(
        broker.host,
        mqtt["port"],
        username=mqtt["username"],
        password=mqtt["password"],
        identifier=mqtt["client_id"],
        protocol=aiomqtt.ProtocolVersion.V5,
        timeout=5,
    ) as client:
        await client.subscribe(f"iob/{device.id}/#", qos=1)
        await api.release(owner, home, device, expect=200)
        kicked = False
        try:
            async with asyncio.timeout(5):
                async for _ in client.messages:
                    pass
        except aiomqtt.MqttError:
            kicked = True
        assert kicked
    assert not await client_exists(broker, device.id)
    assert await connect_code(broker, mqtt) != 0
    # Claimable again, by anyone holding it.
    other_owner, other = await api.owner_household()
    again = await api.claim(other_owner, other, device)
    assert again["household_id"] == other
    assert again["mqtt"]["password"] != mqtt["password"]


async def test_release_by_device_after_factory_reset(
    api: Api, broker: MosquittoBroker, clock: FakeClock[int]
) -> None:
    owner, home = await api.owner_household()
    device = await api.device()
    await api.claim(owner, home, device)
    clock.advance(5)
    notice = device.release(api.now())
    reply = await api.request(
        "POST", "/v1/devices/release-by-device", json_body={"release": notice}, expect=200
    )
    assert reply.body == {"status": "released"}
    assert not await client_exists(broker, device.id)
    # Idempotent: the same notice again is still "released".
    await api.request(
        "POST", "/v1/devices/release-by-device", json_body={"release": notice}, expect=200
    )
    # An old notice cannot release the device's next ownership.
    clock.advance(1)
    await api.claim(owner, home, device)
    stale = await api.request(
        "POST", "/v1/devices/release-by-device", json_body={"release": notice}
    )
    assert (stale.status, stale.code) == (409, "release_stale")
    # A forged notice fails like any bad signature.
    forged = device.release(api.now())
    forged["reason"] = "factory_reset"
    forged["timestamp"] += 1
    reply = await api.request(
        "POST", "/v1/devices/release-by-device", json_body={"release": forged}
    )
    assert (reply.status, reply.code) == (400, "bad_signature")
    events = await api.request(
        "GET", f"/v1/households/{home}/devices/{device.id}/audit", token=owner.token, expect=200
    )
    actions = [event["action"] for event in events.body["events"]]
    assert actions.count("device.released") == 1
    assert actions.count("device.claimed") == 2


async def test_transfer_two_party(api: Api, broker: MosquittoBroker) -> None:
    seller, old_home = await api.owner_household()
    buyer = await api.sign_up()
    new_home = await api.household(buyer)
    device = await api.device()
    owned = await api.claim(seller, old_home, device)
    await _hub(api, seller.token, old_home)
    await _hub(api, buyer.token, new_home)

    offer = await api.offer_transfer(seller, old_home, device, new_home)
    incoming = await api.request(
        "GET", f"/v1/households/{new_home}/transfers", token=buyer.token, expect=200
    )
    assert [t["transfer_id"] for t in incoming.body["transfers"]] == [offer.body["transfer_id"]]
    # Nothing moves until the recipient accepts.
    assert (await api.relay.registry.device(device.id)).household_id == old_home
    accepted = await api.request(
        "POST",
        f"/v1/households/{new_home}/transfers/{offer.body['transfer_id']}/accept",
        token=buyer.token,
        expect=200,
    )
    assert accepted.body["status"] == "accepted"
    assert (await api.relay.registry.device(device.id)).household_id == new_home
    assert f"iob/{device.id}/#" in await hub_topics(broker, new_home)
    assert not any(device.id in t for t in await hub_topics(broker, old_home))
    # The device keeps its credentials (no re-onboarding needed).
    assert await connect_code(broker, owned["mqtt"]) == 0
    again = await api.request(
        "POST",
        f"/v1/households/{new_home}/transfers/{offer.body['transfer_id']}/accept",
        token=buyer.token,
    )
    assert (again.status, again.code) == (404, "transfer_not_found")


async def test_transfer_decline_and_cancel(api: Api) -> None:
    seller, old_home = await api.owner_household()
    buyer = await api.sign_up()
    new_home = await api.household(buyer)
    device = await api.device()
    await api.claim(seller, old_home, device)
    for action, actor, household in (
        ("decline", buyer, new_home),
        ("cancel", seller, old_home),
    ):
        offer = await api.offer_transfer(seller, old_home, device, new_home)
        await api.request(
            "POST",
            f"/v1/households/{household}/transfers/{offer.body['transfer_id']}/{action}",
            token=actor.token,
            expect=204,
        )
        accept = await api.request(
            "POST",
            f"/v1/households/{new_home}/transfers/{offer.body['transfer_id']}/accept",
            token=buyer.token,
        )
        assert accept.code == "transfer_not_found"
    assert (await api.relay.registry.device(device.id)).household_id == old_home


async def test_zero_touch(api: Api, broker: MosquittoBroker) -> None:
    admin = await api.admin()
    _buyer, home = await api.owner_household()
    device = await api.device()
    await api.request(
        "PUT",
        f"/v1/admin/registry/devices/{device.id}/preassignment",
        json_body={"household_id": home, "order_ref": "order-42"},
        token=admin.token,
        expect=200,
    )
    statement = device.zero_touch(api.now())
    owned = await api.request(
        "POST", "/v1/zero-touch/confirm", json_body={"confirmation": statement}, expect=200
    )
    assert owned.body["household_id"] == home
    assert await connect_code(broker, owned.body["mqtt"]) == 0
    # A replay of the same statement is refused; a fresh one gets the same credential back.
    replay = await api.request(
        "POST", "/v1/zero-touch/confirm", json_body={"confirmation": statement}
    )
    assert (replay.status, replay.code) == (409, "claim_rejected")
    fresh = await api.request(
        "POST",
        "/v1/zero-touch/confirm",
        json_body={"confirmation": device.zero_touch(api.now())},
        expect=200,
    )
    assert fresh.body["mqtt"] == owned.body["mqtt"]

    # Not pre-assigned, or unknown: the same indistinguishable rejection.
    plain = await api.device()
    unknown_reply = await api.request(
        "POST",
        "/v1/zero-touch/confirm",
        json_body={"confirmation": plain.zero_touch(api.now())},
    )
    assert (unknown_reply.status, unknown_reply.code) == (409, "claim_rejected")


async def test_rotate_device_credentials(api: Api, broker: MosquittoBroker) -> None:
    owner, home = await api.owner_household()
    device = await api.device()
    owned = await api.claim(owner, home, device)
    rotated = await api.request(
        "POST",
        f"/v1/households/{home}/devices/{device.id}/credentials",
        token=owner.token,
        expect=200,
    )
    assert rotated.body["mqtt"]["password"] != owned["mqtt"]["password"]
    assert await connect_code(broker, owned["mqtt"]) != 0
    assert await connect_code(broker, rotated.body["mqtt"]) == 0


async def test_device_details_include_model_metadata(api: Api) -> None:
    admin = await api.admin()
    owner, home = await api.owner_household()
    device = await api.device(model="pi-relay")
    await api.request(
        "PUT",
        "/v1/admin/models/pi-relay",
        json_body={
            "name": "Pi relay board ⚡",
            "manufacturer": "Acme",
            "metadata": {"relays": 4, "docs": "https://example.com/pi-relay"},
        },
        token=admin.token,
        expect=200,
    )
    await api.claim(owner, home, device)
    reply = await api.request(
        "GET", f"/v1/households/{home}/devices/{device.id}", token=owner.token, expect=200
    )
    assert reply.body["model_info"]["name"] == "Pi relay board ⚡"
    assert reply.body["model_info"]["metadata"]["relays"] == 4
    models = await api.request("GET", "/v1/models", token=owner.token, expect=200)
    assert "pi-relay" in {m["model"] for m in models.body["models"]}
