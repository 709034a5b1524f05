"""AccountClient against the scripted service (tests/plugins) speaking the /v1 API's shapes.

The same client also runs against the real account service in test_onboarding_e2e.py; here
each method's request (method, path, body) and parsing, the token rotation rules and every
error mapping are pinned.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import pytest

from custom_components.iot_onboard.account_client import (
    Account,
    AccountApiError,
    AccountClient,
    AccountConnectionError,
    AccountResponseError,
    AlreadyOwnedError,
    AuthenticationError,
    ClaimExpiredError,
    ClaimRejectedError,
    ClaimState,
    ClockSkewError,
    ConflictError,
    DeviceAccess,
    DeviceKeyNotFoundError,
    EmailTakenError,
    ForbiddenError,
    InvalidCredentialsError,
    InvalidRequestError,
    NotFoundError,
    RateLimitedError,
    Role,
    ServiceUnavailableError,
    ShareAccess,
    TokenSet,
    TransferStatus,
    WeakPasswordError,
)
from custom_components.iot_onboard.const import (
    CONF_ACCESS_EXPIRES_AT,
    CONF_ACCESS_TOKEN,
    CONF_REFRESH_EXPIRES_AT,
    CONF_REFRESH_TOKEN,
)
from custom_components.iot_onboard.iob_protocol import DiagnosticCode, b64url_encode
from tests.plugins.scripted_service import Answer, Received, ScriptedService, error

pytestmark = pytest.mark.usefixtures("socket_enabled")

NOW = 1_800_000_000
HID = "a" * 32
DID = "0123456789ABCDEF"
ACCOUNT = {
    "account_id": "b" * 32,
    "email": "ada@example.com",
    "display_name": "",
    "is_admin": False,
}


def token_pair(n: int) -> dict[str, Any]:
    return {
        "token_type": "Bearer",
        "access_token": f"access-{n}-" + "x" * 30,
        "expires_in": 900,
        "refresh_token": f"refresh-{n}-" + "y" * 30,
        "refresh_expires_in": 86400,
        "account": ACCOUNT,
    }


type Http = aiohttp.ClientSession


class TokenRules:
    """The account service's token rules, as the scripted service's gate: a refresh rotates
    the pair (counted; ``refresh_error`` refuses it), and once an access token is known, a
    token it does not know is refused with 401."""

    def __init__(self) -> None:
        self.valid_access: set[str] = set()
        self.refreshes = 0
        self.refresh_error: str | None = None

    def __call__(self, request: Received) -> Answer | None:
        if request.path == "/v1/auth/refresh":
            if self.refresh_error is not None:
                return error(401, self.refresh_error, "revoked")
            self.refreshes += 1
            pair = token_pair(100 + self.refreshes)
            self.valid_access.add(pair["access_token"])
            return Answer(200, pair, delay=0.01)  # let concurrent callers pile up behind the lock
        token = request.token
        if token is not None and self.valid_access and token not in self.valid_access:
            return error(401, "invalid_token", "expired")
        return None


@pytest.fixture
def service(scripted_service: ScriptedService) -> ScriptedService:
    """The fault-injecting service (tests/plugins) with the account service's token rules."""
    scripted_service.gate = TokenRules()
    return scripted_service


def rules(service: ScriptedService) -> TokenRules:
    assert isinstance(service.gate, TokenRules)
    return service.gate


def answer_json(
    service: ScriptedService, method: str, path: str, body: Any, status: int = 200
) -> None:
    """Answer ``method path`` with JSON ``body`` (None: no content, the API's 204)."""
    service.answer(method, path, Answer(204 if body is None and status == 200 else status, body))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def fresh_tokens(n: int = 1, *, access_at: int = NOW + 900) -> TokenSet:
    pair = token_pair(n)
    return TokenSet(
        access_token=pair["access_token"],
        access_expires_at=access_at,
        refresh_token=pair["refresh_token"],
        refresh_expires_at=NOW + 86400,
    )


def client_for(
    service: ScriptedService,
    http: Http,
    tokens: TokenSet | None = None,
    saved: list[TokenSet] | None = None,
    **kwargs: Any,
) -> AccountClient:
    if tokens is not None:
        rules(service).valid_access.add(tokens.access_token)
    return AccountClient(
        service.url + "/",
        session=http,
        tokens=tokens,
        on_tokens=saved.append if saved is not None else None,
        clock=lambda: NOW,
        **kwargs,
    )


# --- auth and tokens ----------------------------------------------------------------------------


async def test_sign_in_stores_tokens_and_reports_them(service: ScriptedService, http: Http) -> None:
    answer_json(service, "POST", "/v1/auth/sign-in", token_pair(1))
    saved: list[TokenSet] = []
    client = client_for(service, http, saved=saved)
    assert client.base_url == service.url
    signed_in = await client.sign_in("ada@example.com", "pw")
    assert signed_in.account == Account(
        account_id="b" * 32, email="ada@example.com", display_name="", is_admin=False
    )
    assert signed_in.tokens.access_expires_at == NOW + 900
    assert signed_in.tokens.refresh_expires_at == NOW + 86400
    assert saved == [signed_in.tokens] == [client.tokens]
    assert service.requests[-1].body == {"email": "ada@example.com", "password": "pw"}
    assert signed_in.tokens.access_token not in repr(signed_in.tokens)  # never in logs
    assert signed_in.tokens.refresh_token not in repr(signed_in.tokens)


async def test_sign_up_sends_the_display_name_only_when_given(
    service: ScriptedService, http: Http
) -> None:
    answer_json(service, "POST", "/v1/auth/sign-up", token_pair(1), status=201)
    client = client_for(service, http)
    await client.sign_up("ada@example.com", "pw")
    assert service.requests[-1].body == {"email": "ada@example.com", "password": "pw"}
    await client.sign_up("ada@example.com", "pw", "Ada")
    assert service.requests[-1].body["display_name"] == "Ada"


def test_token_set_round_trips_through_entry_data() -> None:
    tokens = fresh_tokens()
    data = tokens.as_entry_data()
    assert set(data) == {
        CONF_ACCESS_TOKEN,
        CONF_ACCESS_EXPIRES_AT,
        CONF_REFRESH_TOKEN,
        CONF_REFRESH_EXPIRES_AT,
    }
    assert TokenSet.from_entry_data(data) == tokens


async def test_expiring_access_token_is_refreshed_before_the_call(
    service: ScriptedService, http: Http
) -> None:
    answer_json(service, "GET", "/v1/auth/me", ACCOUNT)
    saved: list[TokenSet] = []
    client = client_for(service, http, fresh_tokens(access_at=NOW + 30), saved)
    assert (await client.me()).email == "ada@example.com"
    assert rules(service).refreshes == 1
    refresh, call = service.requests
    assert refresh.body == {"refresh_token": token_pair(1)["refresh_token"]}
    assert call.token == token_pair(101)["access_token"]
    assert saved == [client.tokens]


async def test_unexpected_401_refreshes_once_and_retries(
    service: ScriptedService, http: Http
) -> None:
    answer_json(service, "GET", "/v1/households", {"households": []})
    client = client_for(service, http, fresh_tokens())
    rules(service).valid_access = {"something-else"}  # the service revoked our access token early
    assert await client.households() == []
    assert [r.path for r in service.requests] == [
        "/v1/households",
        "/v1/auth/refresh",
        "/v1/households",
    ]


async def test_concurrent_callers_share_one_refresh(service: ScriptedService, http: Http) -> None:
    """A rotating refresh token spent twice revokes the session: refresh exactly once."""
    answer_json(service, "GET", "/v1/auth/me", ACCOUNT)
    client = client_for(service, http, fresh_tokens(access_at=NOW))
    await asyncio.gather(*(client.me() for _ in range(5)))
    assert rules(service).refreshes == 1


async def test_refused_refresh_means_reauth(service: ScriptedService, http: Http) -> None:
    client = client_for(service, http, fresh_tokens(access_at=NOW))
    rules(service).refresh_error = "refresh_token_reused"
    with pytest.raises(AuthenticationError) as caught:
        await client.me()
    assert caught.value.code == "refresh_token_reused"


async def test_refresh_token_expired_locally_needs_no_request(
    service: ScriptedService, http: Http
) -> None:
    tokens = TokenSet(
        access_token="a" * 40, access_expires_at=NOW, refresh_token="r" * 40, refresh_expires_at=NOW
    )
    client = client_for(service, http, tokens)
    with pytest.raises(AuthenticationError):
        await client.me()
    assert service.requests == []


async def test_not_signed_in(service: ScriptedService, http: Http) -> None:
    client = client_for(service, http)
    with pytest.raises(AuthenticationError):
        await client.households()
    with pytest.raises(AuthenticationError):
        await client.me()
    assert client.tokens is None


async def test_invalid_credentials_are_not_retried(service: ScriptedService, http: Http) -> None:
    """Only a token problem is worth a refresh; a wrong password is the user's to fix."""
    answer_json(
        service,
        "GET",
        "/v1/households",
        {"error": {"code": "invalid_credentials", "message": "no"}},
        status=401,
    )
    client = client_for(service, http, fresh_tokens())
    with pytest.raises(InvalidCredentialsError):
        await client.households()
    assert rules(service).refreshes == 0


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "expected", "diagnostic"),
    [
        (400, "invalid_request", InvalidRequestError, None),
        (400, "weak_password", WeakPasswordError, None),
        (400, "clock_skew", ClockSkewError, DiagnosticCode.CLOCK_SKEW),
        (400, "bad_signature", ClaimRejectedError, DiagnosticCode.CLAIM_REJECTED),
        (401, "invalid_credentials", InvalidCredentialsError, None),
        (403, "forbidden", ForbiddenError, None),
        (404, "device_not_found", NotFoundError, None),
        (409, "email_taken", EmailTakenError, None),
        (409, "already_owned", AlreadyOwnedError, None),
        (409, "claim_rejected", ClaimRejectedError, DiagnosticCode.CLAIM_REJECTED),
        (409, "conflict", ConflictError, None),
        (410, "claim_expired", ClaimExpiredError, DiagnosticCode.CLAIM_EXPIRED),
        (503, "broker_unavailable", ServiceUnavailableError, DiagnosticCode.RELAY_UNREACHABLE),
    ],
)
async def test_error_codes_map_to_exceptions(  # noqa: PLR0917 - parametrized
    service: ScriptedService,
    http: Http,
    status: int,
    code: str,
    expected: type[AccountApiError],
    diagnostic: DiagnosticCode | None,
) -> None:
    answer_json(
        service, "POST", "/v1/auth/sign-in", {"error": {"code": code, "message": "m"}}, status
    )
    client = client_for(service, http)
    with pytest.raises(expected) as caught:
        await client.sign_in("a@example.com", "pw")
    assert type(caught.value) is expected
    assert (caught.value.status, caught.value.code, caught.value.message) == (status, code, "m")
    assert caught.value.diagnostic is diagnostic


async def test_rate_limit_carries_retry_after(service: ScriptedService, http: Http) -> None:
    limited = error(429, "rate_limited", "slow down")
    service.answer("POST", "/v1/auth/sign-in", replace(limited, headers={"Retry-After": "42"}))
    with pytest.raises(RateLimitedError) as caught:
        await client_for(service, http).sign_in("a@example.com", "pw")
    assert caught.value.retry_after == 42


async def test_answers_that_are_not_the_api(service: ScriptedService, http: Http) -> None:
    def html(request: Received) -> Answer:
        status = 502 if request.path.startswith("/bad-gateway") else 200
        return Answer(status, b"<html>proxy</html>", "text/html")

    teapot = Answer(418, content_type="application/octet-stream")

    service.answer("GET", "/v1/health", html)
    service.answer("POST", "/v1/auth/sign-in", html)
    client = client_for(service, http)
    with pytest.raises(AccountResponseError):
        await client.health()
    bad_gateway = AccountClient(service.url + "/bad-gateway", session=http)
    service.answer("GET", "/bad-gateway/v1/health", html)
    with pytest.raises(ServiceUnavailableError):
        await bad_gateway.health()
    service.answer("GET", "/v1/auth/me", teapot)
    with pytest.raises(AccountApiError) as caught:
        await client_for(service, http, fresh_tokens()).me()
    assert (caught.value.status, caught.value.code) == (418, "http_418")
    answer_json(service, "GET", "/v1/households", {"households": "nope"})
    with pytest.raises(AccountResponseError):
        await client_for(service, http, fresh_tokens()).households()


async def test_a_deeply_nested_answer_is_refused(service: ScriptedService, http: Http) -> None:
    """A hostile service's 100,000-deep answer is a response error, not a RecursionError."""

    service.answer("GET", "/v1/health", Answer(200, b"[" * 100_000))
    with pytest.raises(AccountResponseError, match="nested deeper than 32"):
        await client_for(service, http).health()


async def test_oversized_answer_is_refused(service: ScriptedService, http: Http) -> None:
    answer_json(
        service, "GET", "/v1/health", {"status": "ok", "time": 1, "pad": "x" * (1024 * 1024)}
    )
    with pytest.raises(AccountResponseError):
        await client_for(service, http).health()


async def test_unreachable_and_slow_services(service: ScriptedService, http: Http) -> None:
    with pytest.raises(AccountConnectionError) as caught:
        await AccountClient("http://127.0.0.1:1", session=http).health()
    assert caught.value.diagnostic is DiagnosticCode.RELAY_UNREACHABLE

    service.answer("GET", "/v1/health", Answer(200, {}, delay=5))
    with pytest.raises(AccountConnectionError):
        await client_for(service, http, timeout=0.05).health()


# --- every API method: request and parsing --------------------------------------------------------

HOUSEHOLD = {"household_id": HID, "name": "Home", "role": "owner", "created_at": NOW}
MEMBER = {
    "member_id": "c" * 32,
    "household_id": HID,
    "account_id": None,
    "external_id": "ha-user-1",
    "display_name": "Kid",
    "role": "viewer",
    "created_at": NOW,
}
MQTT = {"host": "broker", "port": 8883, "tls": True, "username": "hub-1", "password": "secret"}
SUMMARY = {
    "device_id": DID,
    "model": "pi",
    "access": "owner",
    "owner_household_id": HID,
    "since": NOW,
}
TRANSFER = {
    "transfer_id": "d" * 32,
    "device_id": DID,
    "from_household_id": HID,
    "to_household_id": "e" * 32,
    "status": "pending",
    "created_at": NOW,
    "expires_at": NOW + 10,
}
SHARE = {"device_id": DID, "household_id": "e" * 32, "access": "read", "created_at": NOW}
CLAIM_STATUS = {
    "claim_id": "1" * 32,
    "status": "owned",
    "device_id": DID,
    "household_id": HID,
    "expires_at": NOW + 600,
    "completed_at": NOW + 5,
}
H = f"/v1/households/{HID}"
D = f"{H}/devices/{DID}"


@dataclass
class Case:
    call: Callable[[AccountClient], Awaitable[Any]]
    method: str
    path: str
    answer: Any
    body: Any = None
    query: dict[str, str] = field(default_factory=dict)
    check: Callable[[Any], bool] = lambda _result: True


CASES = [
    Case(
        lambda c: c.households(),
        "GET",
        "/v1/households",
        {"households": [HOUSEHOLD]},
        check=lambda r: r[0].role is Role.OWNER and r[0].role.can_manage,
    ),
    Case(
        lambda c: c.create_household("Home"),
        "POST",
        "/v1/households",
        HOUSEHOLD,
        body={"name": "Home"},
        check=lambda r: r.name == "Home",
    ),
    Case(
        lambda c: c.members(HID),
        "GET",
        H + "/members",
        {"members": [MEMBER]},
        check=lambda r: r[0].role is Role.VIEWER and not r[0].role.can_manage,
    ),
    Case(
        lambda c: c.add_member(HID, external_id="ha-user-1", display_name="Kid", role=Role.VIEWER),
        "POST",
        H + "/members",
        MEMBER,
        body={"external_id": "ha-user-1", "display_name": "Kid", "role": "viewer"},
    ),
    Case(
        lambda c: c.update_member(
            HID, "c" * 32, role=Role.MEMBER, display_name="K", external_id="u2"
        ),
        "PATCH",
        H + "/members/" + "c" * 32,
        MEMBER,
        body={"role": "member", "display_name": "K", "external_id": "u2"},
    ),
    Case(
        lambda c: c.update_member(HID, "c" * 32),
        "PATCH",
        H + "/members/" + "c" * 32,
        MEMBER,
        body={},
    ),
    Case(lambda c: c.remove_member(HID, "c" * 32), "DELETE", H + "/members/" + "c" * 32, None),
    Case(
        lambda c: c.device_key(HID, DID, "12345-67890"),
        "POST",
        H + "/device-keys",
        {
            "device_id": DID,
            "public_key": b64url_encode(bytes(range(32))),
            "fingerprint": "F" * 32,
            "model": "pi",
        },
        body={"device_id": DID, "manual_code": "12345-67890"},
        check=lambda r: r.public_key == bytes(range(32)) and r.model == "pi",
    ),
    Case(
        lambda c: c.create_claim(HID, DID),
        "POST",
        H + "/claims",
        {
            "claim_id": "1" * 32,
            "device_id": DID,
            "household_id": HID,
            "token": "k" * 43,
            "expires_at": NOW + 600,
        },
        body={"device_id": DID},
        check=lambda r: r.token == "k" * 43 and "k" * 43 not in repr(r),
    ),
    Case(
        lambda c: c.claim_status("1" * 32),
        "GET",
        "/v1/claims/" + "1" * 32,
        CLAIM_STATUS,
        check=lambda r: r.status is ClaimState.OWNED and r.completed_at == NOW + 5,
    ),
    Case(
        lambda c: c.hub_credentials(HID),
        "GET",
        H + "/hub",
        MQTT,
        check=lambda r: r.username == "hub-1" and "secret" not in repr(r),
    ),
    Case(lambda c: c.rotate_hub_credentials(HID), "POST", H + "/hub/rotate", MQTT),
    Case(
        lambda c: c.devices(HID),
        "GET",
        H + "/devices",
        {"devices": [SUMMARY]},
        check=lambda r: r[0].access is DeviceAccess.OWNER,
    ),
    Case(lambda c: c.release_device(HID, DID), "POST", D + "/release", {"status": "released"}),
    Case(
        lambda c: c.rotate_device_credentials(HID, DID),
        "POST",
        D + "/credentials",
        {"device_id": DID, "mqtt": MQTT},
        check=lambda r: r.device_id == DID,
    ),
    Case(
        lambda c: c.share_device(HID, DID, "e" * 32, ShareAccess.CONTROL),
        "PUT",
        D + "/shares/" + "e" * 32,
        SHARE,
        body={"access": "control"},
    ),
    Case(lambda c: c.unshare_device(HID, DID, "e" * 32), "DELETE", D + "/shares/" + "e" * 32, None),
    Case(
        lambda c: c.offer_transfer(HID, DID, "e" * 32),
        "POST",
        D + "/transfers",
        TRANSFER,
        body={"to_household_id": "e" * 32},
        check=lambda r: r.status is TransferStatus.PENDING,
    ),
    Case(
        lambda c: c.health(),
        "GET",
        "/v1/health",
        {"status": "ok", "time": NOW},
        check=lambda r: r.time == NOW,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.method} {c.path}" for c in CASES])
async def test_api_method(service: ScriptedService, http: Http, case: Case) -> None:
    answer_json(service, case.method, case.path, case.answer)
    client = client_for(service, http, fresh_tokens())
    result = await case.call(client)
    request = service.requests[-1]
    assert (request.method, request.path, request.body) == (case.method, case.path, case.body)
    assert request.query == case.query
    if case.path != "/v1/health":
        assert request.token == fresh_tokens().access_token
    assert case.check(result)


KEY = {"device_id": DID, "public_key": "", "fingerprint": "F", "model": "pi"}


@pytest.mark.parametrize(
    "answer",
    [
        {**KEY, "public_key": "!!"},
        {**KEY, "public_key": "AAAA"},
        {k: v for k, v in KEY.items() if k != "model"},
        ["not", "an", "object"],
    ],
)
async def test_malformed_device_keys_are_refused(
    service: ScriptedService, http: Http, answer: Any
) -> None:
    answer_json(service, "POST", H + "/device-keys", answer)
    with pytest.raises(AccountResponseError):
        await client_for(service, http, fresh_tokens()).device_key(HID, DID, "12345-67890")


async def test_wrong_manual_code_is_its_own_error(service: ScriptedService, http: Http) -> None:
    answer_json(
        service,
        "POST",
        H + "/device-keys",
        {"error": {"code": "device_not_found_or_code_wrong", "message": "check the code"}},
        status=404,
    )
    with pytest.raises(DeviceKeyNotFoundError):
        await client_for(service, http, fresh_tokens()).device_key(HID, DID, "12345-67890")


@pytest.mark.parametrize(
    "answer",
    [
        {"claim_id": "1", "device_id": DID, "household_id": HID, "token": "k", "expires_at": True},
        {"claim_id": 1},
        {"claim_id": "1"},
    ],
)
async def test_malformed_claims_are_refused(
    service: ScriptedService, http: Http, answer: Any
) -> None:
    answer_json(service, "POST", H + "/claims", answer)
    with pytest.raises(AccountResponseError):
        await client_for(service, http, fresh_tokens()).create_claim(HID, DID)


@pytest.mark.parametrize(
    "answer",
    [
        {**HOUSEHOLD, "role": "emperor"},
        {**HOUSEHOLD, "name": None},
        {**HOUSEHOLD, "created_at": "yesterday"},
    ],
)
async def test_malformed_households_are_refused(
    service: ScriptedService, http: Http, answer: Any
) -> None:
    answer_json(service, "POST", "/v1/households", answer)
    with pytest.raises(AccountResponseError):
        await client_for(service, http, fresh_tokens()).create_household("Home")


async def test_malformed_nested_fields_are_refused(service: ScriptedService, http: Http) -> None:
    client = client_for(service, http, fresh_tokens())
    answer_json(service, "GET", H + "/hub", {**MQTT, "tls": "yes"})
    with pytest.raises(AccountResponseError):
        await client.hub_credentials(HID)
    answer_json(
        service, "POST", D + "/credentials", {"device_id": DID, "mqtt": {**MQTT, "port": "1"}}
    )
    with pytest.raises(AccountResponseError):
        await client.rotate_device_credentials(HID, DID)
    answer_json(service, "GET", H + "/devices", {"devices": [{**SUMMARY, "access": "emperor"}]})
    with pytest.raises(AccountResponseError):
        await client.devices(HID)


async def test_path_segments_are_escaped(service: ScriptedService, http: Http) -> None:
    answer_json(
        service, "GET", "/v1/households/a/b/members", {"members": []}
    )  # decoded by the server
    await client_for(service, http, fresh_tokens()).members("a/b")
    assert service.requests[-1].raw_path == "/v1/households/a%2Fb/members"


async def test_an_answer_with_an_unknown_field_is_refused(
    service: ScriptedService, http: Http
) -> None:
    """The wire model is closed: a field the model does not know is a response error."""
    answer_json(service, "GET", H + "/hub", {**MQTT, "client_id": "hub-1", "qos": 2})
    with pytest.raises(AccountResponseError, match="qos"):
        await client_for(service, http, fresh_tokens()).hub_credentials(HID)
