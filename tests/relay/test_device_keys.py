"""The manual-code key lookup: POST /v1/households/{hid}/device-keys.

Every response goes through the validating client (helpers.Api), so each case is also checked
against /openapi.json.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from iob_protocol.canonical import b64url_encode
from iob_protocol.identity import format_fingerprint
from iob_protocol.payload import ManualCode, SetupVerifier, is_trivial_passcode, verhoeff_digit

from cloud_relay.broker.mosquitto import MosquittoDynsecAdapter
from cloud_relay.config import Limit, RateLimits
from tests.plugins.mosquitto import MosquittoBroker
from tests.plugins.relay_config import GENEROUS

from .conftest import AppFactory, make_config
from .helpers import Api, FakeDevice, Reply, User

NOT_FOUND = "device_not_found_or_code_wrong"


async def lookup(api: Api, user: User | None, household: str, device_id: str, code: str) -> Reply:
    return await api.request(
        "POST",
        f"/v1/households/{household}/device-keys",
        json_body={"device_id": device_id, "manual_code": code},
        token=None if user is None else user.token,
    )


def wrong_code(device: FakeDevice) -> str:
    """A well-formed manual code that is not the device's."""
    assert device.code is not None
    candidate = int(device.code.passcode)
    while True:
        candidate = (candidate + 1) % 10**9
        if not is_trivial_passcode(passcode := f"{candidate:09d}"):
            return ManualCode(passcode).format()


async def audit_actions(api: Api) -> list[str]:
    async with api.relay.ctx.storage.read() as conn:
        rows = await conn.fetch("SELECT action, details FROM audit_log ORDER BY seq")
    return [row["action"] for row in rows]


async def test_member_gets_the_key_of_a_free_device(api: Api) -> None:
    owner, household = await api.owner_household()
    member = await api.join(owner, household, "member")
    device = await api.device("pi-relay", with_code=True)
    for user in (owner, member):
        reply = await lookup(api, user, household, device.id, device.manual_code)
        assert reply.status == 200, reply.body
        assert reply.body == {
            "device_id": device.id,
            "public_key": b64url_encode(device.identity.public_key),
            "fingerprint": format_fingerprint(device.identity.fingerprint),
            "model": "pi-relay",
        }
    # Hyphens and spaces are ignored, as on the device.
    spaced = device.manual_code.replace("-", " ")
    assert (await lookup(api, owner, household, device.id, spaced)).status == 200
    compact = device.manual_code.replace("-", "")
    assert (await lookup(api, owner, household, device.id, compact)).status == 200


async def test_reonboarding_a_device_of_this_household(api: Api) -> None:
    owner, household = await api.owner_household()
    device = await api.device(with_code=True)
    await api.claim(owner, household, device)
    reply = await lookup(api, owner, household, device.id, device.manual_code)
    assert reply.status == 200
    assert reply.body["public_key"] == b64url_encode(device.identity.public_key)


async def test_refusals_are_indistinguishable_and_audited(api: Api) -> None:
    owner, household = await api.owner_household()
    neighbour = await api.sign_up()
    elsewhere = await api.household(neighbour)
    free = await api.device(with_code=True)
    owned_elsewhere = await api.device(with_code=True)
    await api.claim(neighbour, elsewhere, owned_elsewhere)
    preassigned = await api.device(with_code=True)
    await api.relay.registry.preassign(preassigned.id, elsewhere, "order-1", "test")
    unknown = FakeDevice(with_code=True)  # never imported
    before = await audit_actions(api)

    replies = [
        await lookup(api, owner, household, free.id, wrong_code(free)),
        await lookup(api, owner, household, unknown.id, unknown.manual_code),
        await lookup(api, owner, household, owned_elsewhere.id, owned_elsewhere.manual_code),
        await lookup(api, owner, household, preassigned.id, preassigned.manual_code),
    ]
    for reply in replies:
        assert (reply.status, reply.code) == (404, NOT_FOUND), reply.body
        assert reply.body == replies[0].body
        assert reply.headers.get("Retry-After") is None
    assert "label" in replies[0].body["error"]["message"]

    async with api.relay.ctx.storage.read() as conn:
        events = await conn.fetch(
            "SELECT actor, household_id, device_id, details FROM audit_log WHERE action = $1 "
            "ORDER BY seq",
            "device.key_lookup_refused",
        )
    assert len(await audit_actions(api)) == len(before) + 4
    assert [event["device_id"] for event in events] == [
        free.id,
        unknown.id,
        owned_elsewhere.id,
        preassigned.id,
    ]
    assert {event["household_id"] for event in events} == {household}
    assert {event["actor"] for event in events} == {f"account:{owner.account_id}"}
    # The code is never written down, right or wrong.
    assert {event["details"] for event in events} == {"{}"}
    # The owner of the device still gets its key: nothing was locked by the refusals.
    reply = await lookup(api, neighbour, elsewhere, owned_elsewhere.id, owned_elsewhere.manual_code)
    assert reply.status == 200


async def test_roles_and_authentication(api: Api) -> None:
    owner, household = await api.owner_household()
    viewer = await api.join(owner, household, "viewer")
    stranger = await api.sign_up()
    await api.household(stranger)
    device = await api.device(with_code=True)
    before = await audit_actions(api)

    reply = await lookup(api, None, household, device.id, device.manual_code)
    assert (reply.status, reply.code) == (401, "authentication_required")
    reply = await lookup(api, viewer, household, device.id, device.manual_code)
    assert (reply.status, reply.code) == (403, "forbidden")
    reply = await lookup(api, stranger, household, device.id, device.manual_code)
    missing = await lookup(api, stranger, "f" * 32, device.id, device.manual_code)
    assert (reply.status, reply.code) == (404, "household_not_found")
    assert reply.body == missing.body
    assert await audit_actions(api) == before


async def test_malformed_requests(api: Api) -> None:
    owner, household = await api.owner_household()
    device = await api.device(with_code=True)
    code = device.manual_code
    typo = code[:-1] + str((int(code[-1]) + 1) % 10)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"device_id": device.id.lower(), "manual_code": code}, "device_id"),
        ({"device_id": device.id, "manual_code": typo}, "check digit"),
        (
            {"device_id": device.id, "manual_code": "123456789" + verhoeff_digit("123456789")},
            "easy",
        ),
        ({"device_id": device.id, "manual_code": "12345"}, "10 digits"),
        ({"device_id": device.id}, "manual_code is required"),
        ({"device_id": device.id, "manual_code": code, "pin": "1"}, "unknown field"),
    ]
    for body, fragment in cases:
        reply = await api.request(
            "POST",
            f"/v1/households/{household}/device-keys",
            json_body=body,
            token=owner.token,
        )
        assert (reply.status, reply.code) == (400, "invalid_request"), body
        assert fragment in reply.body["error"]["message"], reply.body


async def test_scrypt_runs_off_the_event_loop(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    owner, household = await api.owner_household()
    device = await api.device(with_code=True)
    threads: list[int] = []
    original = SetupVerifier.verify

    def recording(self: SetupVerifier, *args: Any) -> bool:
        threads.append(threading.get_ident())
        return original(self, *args)

    monkeypatch.setattr(SetupVerifier, "verify", recording)
    await lookup(api, owner, household, device.id, device.manual_code)  # known device
    await lookup(api, owner, household, FakeDevice(with_code=True).id, device.manual_code)
    assert len(threads) == 2
    assert threading.get_ident() not in threads


@pytest.fixture
async def limited(
    start_api: AppFactory,
    database_url: str,
    broker: MosquittoBroker,
    broker_adapter: MosquittoDynsecAdapter,
    request: pytest.FixtureRequest,
) -> Api:
    """The relay with one key-lookup budget of 3 (the one named by the test's parameter)."""
    limits = dict.fromkeys(RateLimits.__dataclass_fields__, GENEROUS)
    limits[f"key_lookups_per_{request.param}"] = Limit(3, 900)
    config = make_config(database_url, broker, limits=RateLimits(**limits))
    result: Api = await start_api(config, broker_adapter)
    return result


@pytest.mark.parametrize("limited", ["device"], indirect=True)
async def test_per_device_budget_counts_every_attempt(limited: Api) -> None:
    api = limited
    owner, household = await api.owner_household()
    other_member = await api.join(owner, household, "admin")
    device = await api.device(with_code=True)
    spare = await api.device(with_code=True)
    codes = [
        (await lookup(api, owner, household, device.id, wrong_code(device))).code for _ in range(3)
    ]
    assert codes == [NOT_FOUND] * 3
    # Spent: even the right code, from another account, is refused without being checked.
    reply = await lookup(api, other_member, household, device.id, device.manual_code)
    assert (reply.status, reply.code) == (429, "rate_limited")
    assert int(reply.headers["Retry-After"]) > 0
    # Another device has its own budget.
    assert (await lookup(api, owner, household, spare.id, spare.manual_code)).status == 200


@pytest.mark.parametrize("limited", ["device"], indirect=True)
async def test_concurrent_guesses_cannot_overrun_the_budget(limited: Api) -> None:
    api = limited
    owner, household = await api.owner_household()
    device = await api.device(with_code=True)
    replies = await asyncio.gather(
        *(lookup(api, owner, household, device.id, wrong_code(device)) for _ in range(8))
    )
    codes = sorted(str(reply.code) for reply in replies)
    assert codes == [NOT_FOUND] * 3 + ["rate_limited"] * 5


@pytest.mark.parametrize("limited", ["account", "address"], indirect=True)
async def test_per_account_and_per_address_budgets(limited: Api, request: Any) -> None:
    api = limited
    owner, household = await api.owner_household()
    devices = [await api.device(with_code=True) for _ in range(4)]
    for device in devices[:3]:
        assert (await lookup(api, owner, household, device.id, device.manual_code)).status == 200
    reply = await lookup(api, owner, household, devices[3].id, devices[3].manual_code)
    assert (reply.status, reply.code) == (429, "rate_limited")
    # A second account of the household: its own budget per account, the same per address.
    second = await api.join(owner, household, "member")
    reply = await lookup(api, second, household, devices[3].id, devices[3].manual_code)
    expected = 200 if request.node.callspec.params["limited"] == "account" else 429
    assert reply.status == expected
