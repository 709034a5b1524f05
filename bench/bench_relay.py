"""Full claims per second (create + the device's signed confirmation) and p99 latency at
concurrency 64, on SQLite and on PostgreSQL, each as a ratio to a bare aiohttp JSON endpoint
measured in the same run. Real Mosquitto (dynamic security; a fresh broker per phase) and a
throwaway PostgreSQL cluster, all on 127.0.0.1. Bounded: each phase stops after its time
budget; < 60 s in total.

Run: ``.venv/bin/python bench/bench_relay.py [--quick] [--json FILE]``
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import Result, finish, isolate, parser, percentile, result
from inprocess import claim, running_service
from iob_protocol.identity import DeviceIdentity

from cloud_relay.storage.postgres import PostgresStorage
from tests.plugins.mosquitto import MosquittoProcess
from tests.relay.postgres import PostgresProcess

CONCURRENCY = 64
PHASE_SECONDS = 8.0
DEVICES = 4000


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
    identities = [DeviceIdentity.generate() for _ in range(devices)]
    async with (
        running_service(database_url, broker, identities) as service,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as session,
    ):
        base, headers = service.base, service.headers
        async with session.post(
            f"{base}/v1/households", json={"name": "Bench"}, headers=headers
        ) as response:
            household = (await response.json())["household_id"]

        async def one(index: int) -> None:
            await claim(session, service, household, identities[index % devices])

        return await _drive(one, seconds)


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
