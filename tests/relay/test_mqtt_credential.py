"""``POST /v1/device/mqtt-credential``: a rotated password reaches the device (both databases,
the real broker)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from iob_protocol.claim import CREDENTIAL_MAX_AGE_SECONDS, MqttCredentialRequest
from iob_protocol.identity import DeviceIdentity

from cloud_relay.broker.mosquitto import MosquittoDynsecAdapter
from cloud_relay.config import Limit, RateLimits
from tests.plugins.clock import FakeClock
from tests.plugins.mosquitto import MosquittoBroker
from tests.plugins.relay_config import GENEROUS

from .conftest import AppFactory, make_config
from .helpers import Api, FakeDevice, Reply
from .mqtt import connect_code

PATH = "/v1/device/mqtt-credential"


def signed(identity: DeviceIdentity, now: int) -> MqttCredentialRequest:
    return MqttCredentialRequest.create(identity, clock=lambda: now)


def as_object(request: MqttCredentialRequest) -> dict[str, Any]:
    value = json.loads(request.to_json())
    assert isinstance(value, dict)
    return value


async def fetch(api: Api, request: MqttCredentialRequest | dict[str, Any] | str) -> Reply:
    body = as_object(request) if isinstance(request, MqttCredentialRequest) else request
    return await api.request("POST", PATH, json_body={"request": body})


async def owned_device(api: Api) -> tuple[str, str, FakeDevice, dict[str, Any]]:
    owner, household = await api.owner_household()
    device = await api.device()
    owned = await api.claim(owner, household, device)
    return owner.token, household, device, owned


async def test_owner_device_fetches_the_rotated_credential(
    api: Api, broker: MosquittoBroker
) -> None:
    token, household, device, owned = await owned_device(api)
    # Before any rotation: the grant the claim made, unchanged on the broker.
    first = await fetch(api, signed(device.identity, api.now()))
    assert first.status == 200, first.body
    assert first.body == owned
    rotated = await api.request(
        "POST",
        f"/v1/households/{household}/devices/{device.id}/credentials",
        token=token,
        expect=200,
    )
    new_mqtt = rotated.body["mqtt"]
    assert new_mqtt["password"] != owned["mqtt"]["password"]
    assert await connect_code(broker, owned["mqtt"]) != 0  # the old password is refused

    reply = await fetch(api, signed(device.identity, api.now()))
    assert reply.status == 200, reply.body
    assert reply.body == {
        "status": "owned",
        "device_id": device.id,
        "household_id": household,
        "mqtt": new_mqtt,
    }
    assert await connect_code(broker, reply.body["mqtt"]) == 0
    # The canonical text form is accepted too (Home Assistant could relay it verbatim).
    text = signed(device.identity, api.now()).to_json().decode()
    assert (await fetch(api, text)).body == reply.body

    audit = await api.request(
        "GET", f"/v1/households/{household}/devices/{device.id}/audit", token=token, expect=200
    )
    fetched = [e for e in audit.body["events"] if e["action"] == "device.credentials_fetched"]
    assert len(fetched) == 3
    assert {e["actor"] for e in fetched} == {f"device:{device.id}"}
    versions = sorted(e["details"]["credential_version"] for e in fetched)
    assert versions == [versions[0], versions[0] + 1, versions[0] + 1]  # before, after rotation
    assert new_mqtt["password"] not in json.dumps(audit.body)


async def test_broker_behind_the_database_is_repaired_by_the_fetch(
    api: Api, broker: MosquittoBroker, broker_adapter: MosquittoDynsecAdapter
) -> None:
    """The device noticed first: its fetch puts the current password back on the broker."""
    _token, _household, device, owned = await owned_device(api)
    await broker_adapter.remove_device(device.id)
    assert await connect_code(broker, owned["mqtt"]) != 0
    reply = await fetch(api, signed(device.identity, api.now()))
    assert reply.body == owned
    assert await connect_code(broker, owned["mqtt"]) == 0


async def refused(api: Api, request: MqttCredentialRequest | dict[str, Any]) -> Reply:
    reply = await fetch(api, request)
    assert (reply.status, reply.code) == (403, "credential_refused"), reply.body
    return reply


async def test_refusals_are_uniform(api: Api) -> None:
    """Unknown, forged, foreign-key and replayed (also of a released device): one answer, word
    for word. Only the genuine device hears that it is not owned (next test)."""
    token, household, device, _owned = await owned_device(api)
    now = api.now()
    answers: list[Reply] = []

    # A replay of a request the service already answered.
    request = signed(device.identity, now)
    assert (await fetch(api, request)).status == 200
    answers.append(await refused(api, request))
    # A signature by another key (a registered device's, and one the registry never saw).
    other = await api.device()
    for key in (other.identity, DeviceIdentity.generate()):
        forged = replace(signed(key, now), device_id=device.id)
        answers.append(await refused(api, forged))
    # The owner's request with a byte of the signature changed.
    genuine = signed(device.identity, now)
    flipped = bytes([genuine.signature[0] ^ 1]) + genuine.signature[1:]
    answers.append(await refused(api, replace(genuine, signature=flipped)))
    # A device the registry does not know at all.
    answers.append(await refused(api, signed(DeviceIdentity.generate(), now)))
    # Released by its owner: a stranger (forged, another key, a replay of the genuine
    # "unowned" request) still learns nothing.
    await api.request(
        "POST", f"/v1/households/{household}/devices/{device.id}/release", token=token, expect=200
    )
    genuine = signed(device.identity, now)
    forgeries = [
        *(replace(signed(key, now), device_id=device.id) for key in (other.identity,)),
        replace(signed(DeviceIdentity.generate(), now), device_id=device.id),
        replace(genuine, signature=flipped_signature(genuine)),
    ]
    answers.extend([await refused(api, forged) for forged in forgeries])
    assert (await fetch(api, genuine)).body["status"] == "unowned"
    answers.append(await refused(api, genuine))  # its replay
    assert len({json.dumps(answer.body, sort_keys=True) for answer in answers}) == 1


def flipped_signature(request: MqttCredentialRequest) -> bytes:
    return bytes([request.signature[0] ^ 1]) + request.signature[1:]


async def test_genuine_device_hears_it_is_not_owned(api: Api, broker: MosquittoBroker) -> None:
    """The device's own fresh request, after a release or never claimed: 200 ``unowned``."""
    token, household, device, owned = await owned_device(api)
    await api.request(
        "POST", f"/v1/households/{household}/devices/{device.id}/release", token=token, expect=200
    )
    reply = await fetch(api, signed(device.identity, api.now()))
    assert (reply.status, reply.body) == (200, {"status": "unowned", "device_id": device.id})
    # Nothing was given back: the broker still refuses the device's old credential.
    assert await connect_code(broker, owned["mqtt"]) != 0
    # Registered but never claimed: the same answer, to the same key only.
    never = await api.device()
    reply = await fetch(api, signed(never.identity, api.now()))
    assert (reply.status, reply.body) == (200, {"status": "unowned", "device_id": never.id})
    # Audited without a household (no household owns it); no credential in the trail.
    async with api.relay.ctx.storage.read() as conn:
        rows = await conn.fetch(
            "SELECT actor, household_id FROM audit_log WHERE action = 'device.told_unowned' "
            "AND device_id = $1",
            device.id,
        )
    assert [(row["actor"], row["household_id"]) for row in rows] == [(f"device:{device.id}", None)]
    # A transferred device stays owned: the new household's grant, still the same password.
    token2, household2, device2, owned2 = await owned_device(api)
    other_owner, other_household = await api.owner_household()
    offer = await api.request(
        "POST",
        f"/v1/households/{household2}/devices/{device2.id}/transfers",
        token=token2,
        json_body={"to_household_id": other_household},
        expect=201,
    )
    await api.request(
        "POST",
        f"/v1/households/{other_household}/transfers/{offer.body['transfer_id']}/accept",
        token=other_owner.token,
        expect=200,
    )
    reply = await fetch(api, signed(device2.identity, api.now()))
    assert reply.status == 200, reply.body
    assert (reply.body["status"], reply.body["household_id"]) == ("owned", other_household)
    assert reply.body["mqtt"] == owned2["mqtt"]


async def test_signed_time_is_checked(api: Api, clock: FakeClock[int]) -> None:
    _token, _household, device, _owned = await owned_device(api)
    now = api.now()
    for timestamp in (now - CREDENTIAL_MAX_AGE_SECONDS - 1, now - 3600, now + 121):
        reply = await fetch(api, signed(device.identity, timestamp))
        assert (reply.status, reply.code) == (400, "clock_skew"), timestamp
    assert (
        await fetch(api, signed(device.identity, now - CREDENTIAL_MAX_AGE_SECONDS))
    ).status == 200
    # A nonce is remembered for its statement's whole life: replaying it later is refused,
    # even once the service's clock has moved (then it is simply too old).
    request = signed(device.identity, now)
    assert (await fetch(api, request)).status == 200
    clock.advance(60)
    await refused(api, request)
    clock.advance(CREDENTIAL_MAX_AGE_SECONDS)
    assert (await fetch(api, request)).code == "clock_skew"


async def test_malformed_requests(api: Api) -> None:
    _token, _household, device, _owned = await owned_device(api)
    good = as_object(signed(device.identity, api.now()))
    for body in (
        {},
        {"request": 1},
        {"request": {**good, "extra": 1}},
        {"request": {k: v for k, v in good.items() if k != "nonce"}},
        {"request": {**good, "nonce": "AAAA"}},
        {"request": good, "more": True},
    ):
        reply = await api.request("POST", PATH, json_body=body)
        assert (reply.status, reply.code) == (400, "invalid_request"), body


async def test_rate_limited_per_device(
    start_api: AppFactory,
    database_url: str,
    broker: MosquittoBroker,
    broker_adapter: MosquittoDynsecAdapter,
) -> None:
    limits = replace(
        RateLimits(**dict.fromkeys(RateLimits.__dataclass_fields__, GENEROUS)),
        confirm_per_device=Limit(3, 3600),
    )
    api: Api = await start_api(make_config(database_url, broker, limits=limits), broker_adapter)
    owner, household = await api.owner_household()
    device = await api.device()
    await api.claim(owner, household, device)  # one of the device's three
    for _ in range(2):
        assert (await fetch(api, signed(device.identity, api.now()))).status == 200
    reply = await fetch(api, signed(device.identity, api.now()))
    assert (reply.status, reply.code) == (429, "rate_limited")
    assert int(reply.headers["Retry-After"]) > 0
    # Another device is not held back by this one.
    other = await api.device()
    assert (await fetch(api, signed(other.identity, api.now()))).body["status"] == "unowned"
