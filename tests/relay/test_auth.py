"""Accounts: sign-up, sign-in, rotating refresh tokens, reuse detection, revocation, limits."""

from __future__ import annotations

import pytest

from cloud_relay.broker.mosquitto import MosquittoDynsecAdapter
from cloud_relay.config import Limit, RateLimits
from tests.plugins.clock import FakeClock
from tests.plugins.mosquitto import MosquittoBroker
from tests.plugins.relay_config import GENEROUS

from .conftest import AppFactory, make_config
from .helpers import Api


async def test_sign_up_sign_in_and_me(api: Api) -> None:
    user = await api.sign_up("Ada@Example.com", "correct horse battery")
    assert user.email == "Ada@Example.com"
    me = await api.request("GET", "/v1/auth/me", token=user.token, expect=200)
    assert me.body["email"] == "ada@example.com"
    signed_in = await api.request(
        "POST",
        "/v1/auth/sign-in",
        json_body={"email": "ADA@example.com", "password": "correct horse battery"},
        expect=200,
    )
    assert signed_in.body["token_type"] == "Bearer"  # noqa: S105 - not a secret
    assert signed_in.body["expires_in"] <= 3600
    async with api.relay.ctx.storage.read() as conn:
        stored = await conn.fetchval(
            "SELECT password_hash FROM accounts WHERE email = $1", "ada@example.com"
        )
    assert stored.startswith("$argon2id$")


async def test_sign_up_refusals(api: Api) -> None:
    await api.sign_up("bob@example.com")
    taken = await api.request(
        "POST",
        "/v1/auth/sign-up",
        json_body={"email": "BOB@example.com", "password": "another long one"},
    )
    assert (taken.status, taken.code) == (409, "email_taken")
    weak = await api.request(
        "POST", "/v1/auth/sign-up", json_body={"email": "c@example.com", "password": "short"}
    )
    assert (weak.status, weak.code) == (400, "weak_password")
    bad = await api.request(
        "POST", "/v1/auth/sign-up", json_body={"email": "not-an-email", "password": "x" * 12}
    )
    assert (bad.status, bad.code) == (400, "invalid_request")


async def test_wrong_password_and_unknown_email_look_the_same(api: Api) -> None:
    user = await api.sign_up()
    wrong = await api.request(
        "POST", "/v1/auth/sign-in", json_body={"email": user.email, "password": "wrong password"}
    )
    unknown = await api.request(
        "POST",
        "/v1/auth/sign-in",
        json_body={"email": "nobody@example.com", "password": "wrong password"},
    )
    assert wrong.status == unknown.status == 401
    assert wrong.body == unknown.body
    assert wrong.code == "invalid_credentials"


async def test_access_token_expires(api: Api, clock: FakeClock[int]) -> None:
    user = await api.sign_up()
    clock.advance(901)
    reply = await api.request("GET", "/v1/auth/me", token=user.token)
    assert (reply.status, reply.code) == (401, "invalid_token")


async def test_refresh_rotates_and_reuse_revokes_the_family(api: Api) -> None:
    user = await api.sign_up()
    first = await api.request(
        "POST", "/v1/auth/refresh", json_body={"refresh_token": user.refresh_token}, expect=200
    )
    assert first.body["refresh_token"] != user.refresh_token
    # The rotated token comes back: someone else holds it. The whole session dies.
    reused = await api.request(
        "POST", "/v1/auth/refresh", json_body={"refresh_token": user.refresh_token}
    )
    assert (reused.status, reused.code) == (401, "refresh_token_reused")
    for token in (user.token, first.body["access_token"]):
        reply = await api.request("GET", "/v1/auth/me", token=token)
        assert (reply.status, reply.code) == (401, "invalid_token")
    later = await api.request(
        "POST", "/v1/auth/refresh", json_body={"refresh_token": first.body["refresh_token"]}
    )
    assert (later.status, later.code) == (401, "refresh_token_invalid")
    events = await api.request(
        "GET", "/v1/admin/audit", token=(await api.admin()).token, expect=200
    )
    assert "session.revoked" in {event["action"] for event in events.body["events"]}


async def test_refresh_token_expires(api: Api, clock: FakeClock[int]) -> None:
    user = await api.sign_up()
    clock.advance(30 * 86400 + 1)
    reply = await api.request(
        "POST", "/v1/auth/refresh", json_body={"refresh_token": user.refresh_token}
    )
    assert (reply.status, reply.code) == (401, "refresh_token_invalid")


async def test_sign_out_revokes_the_session_only(api: Api) -> None:
    user = await api.sign_up()
    other_session = await api.request(
        "POST",
        "/v1/auth/sign-in",
        json_body={"email": user.email, "password": user.password},
        expect=200,
    )
    await api.request("POST", "/v1/auth/sign-out", token=user.token, expect=204)
    assert (await api.request("GET", "/v1/auth/me", token=user.token)).status == 401
    refresh = await api.request(
        "POST", "/v1/auth/refresh", json_body={"refresh_token": user.refresh_token}
    )
    assert refresh.code == "refresh_token_invalid"
    await api.request("GET", "/v1/auth/me", token=other_session.body["access_token"], expect=200)


async def test_admin_revokes_every_session(api: Api) -> None:
    user = await api.sign_up()
    admin = await api.admin()
    reply = await api.request(
        "POST",
        f"/v1/admin/accounts/{user.account_id}/revoke-sessions",
        token=admin.token,
        expect=200,
    )
    assert reply.body == {"revoked_sessions": 1}
    assert (await api.request("GET", "/v1/auth/me", token=user.token)).status == 401


@pytest.fixture
async def limited_api(
    start_api: AppFactory,
    database_url: str,
    broker: MosquittoBroker,
    broker_adapter: MosquittoDynsecAdapter,
) -> Api:
    limits = RateLimits(
        sign_in_per_account=Limit(3, 3600),
        sign_in_per_address=Limit(5, 3600),
        sign_up_per_address=GENEROUS,
        claims_per_account=GENEROUS,
        claims_per_address=GENEROUS,
        claims_per_device=Limit(2, 3600),
        confirm_per_address=GENEROUS,
        confirm_per_device=Limit(3, 3600),
    )
    limited: Api = await start_api(make_config(database_url, broker, limits=limits), broker_adapter)
    return limited


async def test_sign_in_is_rate_limited(limited_api: Api) -> None:
    api = limited_api
    user = await api.sign_up()
    for _ in range(3):
        reply = await api.request(
            "POST", "/v1/auth/sign-in", json_body={"email": user.email, "password": "wrong one!"}
        )
        assert reply.code == "invalid_credentials"
    reply = await api.request(
        "POST", "/v1/auth/sign-in", json_body={"email": user.email, "password": user.password}
    )
    assert (reply.status, reply.code) == (429, "rate_limited")
    assert int(reply.headers["Retry-After"]) > 0
    # Per address: other accounts from the same address run out too.
    for index in range(2):
        await api.request(
            "POST",
            "/v1/auth/sign-in",
            json_body={"email": f"x{index}@example.com", "password": "whatever12"},
        )
    reply = await api.request(
        "POST", "/v1/auth/sign-in", json_body={"email": "y@example.com", "password": "whatever12"}
    )
    assert reply.code == "rate_limited"


async def test_claims_are_rate_limited_per_device(limited_api: Api) -> None:
    api = limited_api
    owner, household = await api.owner_household()
    device = await api.device()
    for _ in range(2):
        assert (await api.start_claim(owner, household, device)).status == 201
    reply = await api.start_claim(owner, household, device)
    assert (reply.status, reply.code) == (429, "rate_limited")
    confirmations = [device.confirm("C" * 43, api.now()) for _ in range(4)]
    codes = [
        (await api.request("POST", "/v1/claims/confirm", json_body={"confirmation": c})).code
        for c in confirmations
    ]
    assert codes == ["claim_rejected"] * 3 + ["rate_limited"]
