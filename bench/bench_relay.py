"""Full claims per second (create + the device's signed confirmation) and p99 latency at
concurrency 64, on SQLite and on PostgreSQL, each as a ratio to a bare aiohttp JSON endpoint
measured in the same run. Real Mosquitto (dynamic security; a fresh broker per phase) and a
throwaway PostgreSQL cluster, all on 127.0.0.1. Bounded: each phase stops after its time
budget; < 60 s in total.

Run: ``.venv/bin/python bench/bench_relay.py [--quick] [--json FILE]``
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import Result, finish, isolate, parser, percentile, result
from iob_protocol.claim import ClaimConfirmation
from iob_protocol.identity import DeviceIdentity

from cloud_relay.api.common import RELAY
from cloud_relay.app import create_app
from cloud_relay.broker.mosquitto import MosquittoDynsecAdapter
from cloud_relay.config import Limit, RateLimits
from cloud_relay.registry import FactoryRecord
from cloud_relay.storage.postgres import PostgresStorage
from tests.plugins.mosquitto import MosquittoProcess
from tests.plugins.relay_config import relay_test_config
from tests.relay.postgres import PostgresProcess

CONCURRENCY = 64
PHASE_SECONDS = 8.0
DEVICES = 4000
VERIFIER = "iob-verifier-v1$scrypt$14$8$1$" + "A" * 22 + "$" + "A" * 43 + "$" + "A" * 43


async def _drive(
    operation: Callable[[int], Awaitable[None]], seconds: float
) -> tuple[float, float]:
    """(operations per second, p99 latency in ms) for ``operation`` at CONCURRENCY."""
    latencies: list[float] = []
    counter = iter(range(10**9))
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            index = next(counter)
            start = time.perf_counter()
            await operation(index)
            latencies.append(time.perf_counter() - start)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - began
    # Any number of samples (a --quick run on a loaded machine may have fewer than 100).
    p99 = percentile(latencies, 0.99) * 1000
    return len(latencies) / elapsed, p99


async def _baseline(seconds: float) -> tuple[float, float]:
    async def handler(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "time": int(time.time())})

    app = web.Application()
    app.router.add_post("/json", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=CONCURRENCY)
        ) as session:

            async def call(_index: int) -> None:
                for _ in range(2):  # a claim is two requests
                    async with session.post(
                        f"http://127.0.0.1:{port}/json", json={"device_id": "X"}
                    ) as response:
                        await response.read()

            return await _drive(call, seconds / 2)
    finally:
        await runner.cleanup()


async def _relay(
    database_url: str, broker: MosquittoProcess, seconds: float, devices: int
) -> tuple[float, float]:
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
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
    base = f"http://127.0.0.1:{port}"
    identities = [DeviceIdentity.generate() for _ in range(devices)]
    await app[RELAY].registry.import_records(
        [FactoryRecord(i.device_id, "bench", i.public_key, VERIFIER) for i in identities],
        "bench",
    )
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=CONCURRENCY)
        ) as session:
            async with session.post(
                f"{base}/v1/auth/sign-up",
                json={"email": "bench@example.com", "password": "benchmark password"},
            ) as response:
                token = (await response.json())["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            async with session.post(
                f"{base}/v1/households", json={"name": "Bench"}, headers=headers
            ) as response:
                household = (await response.json())["household_id"]

            async def claim(index: int) -> None:
                identity = identities[index % devices]
                async with session.post(
                    f"{base}/v1/households/{household}/claims",
                    json={"device_id": identity.device_id},
                    headers=headers,
                ) as response:
                    body = await response.json()
                    if response.status != 201:
                        raise RuntimeError(f"claim failed: {body}")
                confirmation = ClaimConfirmation.create(identity, body["token"])
                async with session.post(
                    f"{base}/v1/claims/confirm",
                    json={"confirmation": json.loads(confirmation.to_json())},
                ) as response:
                    owned = await response.json()
                    if response.status != 200:
                        raise RuntimeError(f"confirm failed: {owned}")

            return await _drive(claim, seconds)
    finally:
        await runner.cleanup()
        await adapter.aclose()


async def measure(*, quick: bool) -> list[Result]:
    """Baseline, SQLite and PostgreSQL phases; one row per database and figure."""
    seconds, devices = (1.5, 300) if quick else (PHASE_SECONDS, DEVICES)
    started = time.perf_counter()
    postgres = PostgresProcess()
    cluster = postgres.start()
    try:
        import asyncpg  # noqa: PLC0415

        connection = await asyncpg.connect(cluster.dsn())
        await connection.execute("CREATE DATABASE bench")
        await connection.close()
        storage = await PostgresStorage.open(cluster.dsn("bench"), min_size=1, max_size=2)
        await storage.migrate()
        await storage.close()
        base_rate, base_p99 = await _baseline(seconds)
        # A fresh broker per phase: Mosquitto rewrites its whole dynamic-security file on every
        # change, so a phase sharing the broker would pay for the clients the previous phase
        # created (and the second phase's figure would depend on the first one's speed).
        with (
            MosquittoProcess() as broker,
            tempfile.TemporaryDirectory(prefix="iob-bench-") as directory,
        ):
            sqlite_rate, sqlite_p99 = await _relay(
                f"sqlite:///{directory}/relay.db", broker, seconds, devices
            )
        with MosquittoProcess() as broker:
            pg_rate, pg_p99 = await _relay(cluster.dsn("bench"), broker, seconds, devices)
    finally:
        postgres.stop()
    print(f"concurrency {CONCURRENCY}, {seconds:.1f} s per relay phase")
    label = "bare aiohttp, 2 JSON requests"
    rows = []
    for name, rate, p99 in (("SQLite", sqlite_rate, sqlite_p99), ("PostgreSQL", pg_rate, pg_p99)):
        rows += [
            result(f"relay: full claims/s on {name}", rate, "/s", base_rate, label),
            result(f"relay: claim p99 on {name}", p99, "ms", base_p99, label),
        ]
    print(f"total {time.perf_counter() - started:.1f} s")
    return rows


def main() -> None:
    """Measure, print the table, write the JSON when asked."""
    args = parser(__doc__).parse_args()
    isolated = isolate()
    rows = asyncio.run(measure(quick=args.quick))
    finish("relay", rows, args, isolated=isolated, concurrency=CONCURRENCY)


if __name__ == "__main__":
    main()
