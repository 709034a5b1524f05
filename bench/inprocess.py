"""The account service in the benchmark's own process, as ``bench_relay`` and ``bench_household``
start it: the real app on a free loopback port, over a real Mosquitto (dynamic security), with
rate limits no benchmark reaches and the benchmark's devices in its registry, and one account.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from iob_protocol.claim import ClaimConfirmation
from iob_protocol.identity import DeviceIdentity

from cloud_relay.api.common import RELAY
from cloud_relay.app import create_app
from cloud_relay.broker.mosquitto import MosquittoDynsecAdapter
from cloud_relay.config import Limit, RateLimits
from cloud_relay.registry import FactoryRecord
from tests.plugins.mosquitto import MosquittoProcess
from tests.plugins.relay_config import relay_test_config

#: A verifier of the shape the registry takes (the benchmarks' devices have no manual code).
VERIFIER = "iob-verifier-v1$scrypt$14$8$1$" + "A" * 22 + "$" + "A" * 43 + "$" + "A" * 43


@dataclass(frozen=True, slots=True)
class RunningService:
    """Where the service answers, and an account's headers for it."""

    base: str
    headers: dict[str, str]


@contextlib.asynccontextmanager
async def running_service(
    database_url: str, broker: MosquittoProcess, identities: Sequence[DeviceIdentity]
) -> AsyncIterator[RunningService]:
    """The service over ``database_url`` and ``broker``, ``identities`` registered, signed up."""
    details = broker.broker
    unlimited = Limit(10**9, 1)
    config = relay_test_config(
        database_url,
        details,
        limits=RateLimits(**dict.fromkeys(RateLimits.__dataclass_fields__, unlimited)),
    )
    adapter = MosquittoDynsecAdapter(
        details.host, details.port, details.admin_username, details.admin_password
    )
    await adapter.connect()
    app = create_app(config, broker=adapter, purge_interval=None)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
        base = f"http://127.0.0.1:{port}"
        await app[RELAY].registry.import_records(
            [FactoryRecord(i.device_id, "bench", i.public_key, VERIFIER) for i in identities],
            "bench",
        )
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{base}/v1/auth/sign-up",
                json={"email": "bench@example.com", "password": "benchmark password"},
            ) as response,
        ):
            token = (await response.json())["access_token"]
        yield RunningService(base, {"Authorization": f"Bearer {token}"})
    finally:
        await runner.cleanup()
        await adapter.aclose()


async def claim(
    session: aiohttp.ClientSession,
    service: RunningService,
    household: str,
    identity: DeviceIdentity,
) -> None:
    """One full claim over HTTP: created by the account, confirmed by the device's signature."""
    async with session.post(
        f"{service.base}/v1/households/{household}/claims",
        json={"device_id": identity.device_id},
        headers=service.headers,
    ) as response:
        body = await response.json()
        if response.status != 201:
            raise RuntimeError(f"claim failed: {body}")
    confirmation = ClaimConfirmation.create(identity, body["token"])
    async with session.post(
        f"{service.base}/v1/claims/confirm",
        json={"confirmation": json.loads(confirmation.to_json())},
    ) as response:
        owned = await response.json()
        if response.status != 200:
            raise RuntimeError(f"confirm failed: {owned}")
