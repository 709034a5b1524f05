"""Rate limits shared by every service process on one PostgreSQL database.

Several ``serve`` processes behind a load balancer must spend one budget: otherwise N processes
give an attacker N times the sign-in guesses and N times the manual code's lookups. Each test
here runs two services (two apps, two connection pools, as two processes would) over one fresh
PostgreSQL database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from cloud_relay.broker.mosquitto import MosquittoDynsecAdapter
from cloud_relay.config import Limit, RateLimits
from cloud_relay.errors import RateLimitedError
from cloud_relay.ratelimit import RateLimiter, hit_all, purge_shared
from cloud_relay.storage import Storage, open_storage
from tests.plugins.mosquitto import MosquittoBroker
from tests.plugins.relay_config import GENEROUS

from .conftest import AppFactory, make_config
from .helpers import Api
from .test_device_keys import NOT_FOUND, lookup, wrong_code


@pytest.fixture
def postgres_url(fresh_postgres: Callable[[bool], str]) -> str:
    """A fresh, migrated PostgreSQL database."""
    return fresh_postgres(True)


@pytest.fixture
async def two_storages(postgres_url: str) -> AsyncIterator[tuple[Storage, Storage]]:
    """Two pools on one database: what two service processes hold."""
    first = await open_storage(postgres_url)
    second = await open_storage(postgres_url)
    yield first, second
    await first.close()
    await second.close()


@pytest.fixture
async def two_services(
    start_api: AppFactory,
    postgres_url: str,
    broker: MosquittoBroker,
    broker_adapter: MosquittoDynsecAdapter,
) -> tuple[Api, Api]:
    """Two account services over one database and one broker, tight sign-in and lookup limits."""
    limits = RateLimits(
        sign_in_per_account=Limit(3, 3600),
        sign_in_per_address=GENEROUS,
        sign_up_per_address=GENEROUS,
        claims_per_account=GENEROUS,
        claims_per_address=GENEROUS,
        claims_per_device=Limit(2, 3600),
        confirm_per_address=GENEROUS,
        confirm_per_device=GENEROUS,
        key_lookups_per_account=GENEROUS,
        key_lookups_per_address=GENEROUS,
        key_lookups_per_device=Limit(3, 3600),
    )
    config = make_config(postgres_url, broker, limits=limits)
    first: Api = await start_api(config, broker_adapter)
    second: Api = await start_api(config, broker_adapter)
    return first, second


async def _sign_in(api: Api, email: str, password: str) -> str:
    reply = await api.request(
        "POST", "/v1/auth/sign-in", json_body={"email": email, "password": password}
    )
    return reply.code or str(reply.status)


async def test_two_processes_spend_one_sign_in_budget(two_services: tuple[Api, Api]) -> None:
    first, second = two_services
    assert first.relay.ctx.limiters.sign_in_per_account.shared
    user = await first.sign_up()
    codes = [await _sign_in(api, user.email, "wrong one!") for api in (first, second, first)]
    assert codes == ["invalid_credentials"] * 3
    # The right password, through the process that has seen one guess only: refused.
    assert await _sign_in(second, user.email, user.password) == "rate_limited"
    assert await _sign_in(first, user.email, user.password) == "rate_limited"


async def test_a_successful_sign_in_resets_the_budget_for_every_process(
    two_services: tuple[Api, Api],
) -> None:
    first, second = two_services
    user = await first.sign_up()
    for api in (first, second):
        assert await _sign_in(api, user.email, "wrong one!") == "invalid_credentials"
    assert await _sign_in(first, user.email, user.password) == "200"
    # Three fresh guesses again, counted across both processes.
    codes = [await _sign_in(api, user.email, "wrong one!") for api in (second, first, second)]
    assert codes == ["invalid_credentials"] * 3
    assert await _sign_in(first, user.email, user.password) == "rate_limited"


async def test_two_processes_spend_one_claim_budget_per_device(
    two_services: tuple[Api, Api],
) -> None:
    first, second = two_services
    owner, household = await first.owner_household()
    device = await first.device()
    assert (await first.start_claim(owner, household, device)).status == 201
    assert (await second.start_claim(owner, household, device)).status == 201
    reply = await first.start_claim(owner, household, device)
    assert (reply.status, reply.code) == (429, "rate_limited")
    assert int(reply.headers["Retry-After"]) > 0


async def test_the_manual_codes_guesses_are_counted_across_processes(
    two_services: tuple[Api, Api],
) -> None:
    """The manual code has about 30 bits: its per-device budget must not grow per process."""
    first, second = two_services
    owner, household = await first.owner_household()
    device = await first.device(with_code=True)
    guesses = await asyncio.gather(
        *(
            lookup(api, owner, household, device.id, wrong_code(device))
            for api in (first, second) * 4
        )
    )
    assert sorted(str(reply.code) for reply in guesses) == [NOT_FOUND] * 3 + ["rate_limited"] * 5
    assert device.manual_code is not None
    right = await lookup(second, owner, household, device.id, device.manual_code)
    assert (right.status, right.code) == (429, "rate_limited")


async def test_concurrent_hits_from_two_processes_never_overspend(
    two_storages: tuple[Storage, Storage],
) -> None:
    limiters = [RateLimiter("burst", Limit(5, 3600), storage=s) for s in two_storages]

    async def one(index: int) -> bool:
        try:
            await limiters[index % 2].hit("device-1")
        except RateLimitedError:
            return False
        return True

    allowed = await asyncio.gather(*(one(index) for index in range(40)))
    assert sum(allowed) == 5


async def test_a_refused_check_counts_on_none_of_its_budgets(
    two_storages: tuple[Storage, Storage],
) -> None:
    first, second = two_storages
    per_device = RateLimiter("per_device", Limit(1, 3600), storage=first)
    per_account = RateLimiter("per_account", Limit(2, 3600), storage=first)
    await hit_all([(per_account, "ada"), (per_device, "dev-1")])
    with pytest.raises(RateLimitedError) as refused:
        await hit_all([(per_account, "ada"), (per_device, "dev-1")])
    assert refused.value.retry_after is not None
    assert refused.value.retry_after > 3000
    # The account's second event was not spent by the refused check: another device may.
    other_process = RateLimiter("per_account", Limit(2, 3600), storage=second)
    await other_process.hit("ada")
    with pytest.raises(RateLimitedError):
        await other_process.hit("ada")


async def test_purge_drops_only_budgets_that_are_whole_again(
    two_storages: tuple[Storage, Storage],
) -> None:
    storage, _ = two_storages
    short = RateLimiter("short", Limit(1, 0.2), storage=storage)
    long = RateLimiter("long", Limit(1, 3600), storage=storage)
    await short.hit("a")
    await long.hit("b")
    await asyncio.sleep(0.3)
    assert await purge_shared(storage) == 1
    async with storage.read() as conn:
        rows = await conn.fetch("SELECT budget, key FROM rate_limits")
    assert rows == [{"budget": "long", "key": "b"}]
    with pytest.raises(RateLimitedError):
        await long.hit("b")
    await short.hit("a")
