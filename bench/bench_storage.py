"""Storage cost of a claim: full claims per second and process CPU per claim, at concurrency 1
and 64, on SQLite and on PostgreSQL, as ratios to durable SQLite commits per second measured in
the same run (an empty ``BEGIN IMMEDIATE; INSERT; COMMIT`` with ``synchronous=FULL``, inline).

The claims run in process through the service's own code (create, then the device's signed
confirmation), round-robin into 16 households, with the broker replaced by a no-op adapter,
so the figures are the database's and the service's CPU, not Mosquitto's (``bench_relay.py``
measures the whole stack). Run it from an older checkout too (copy this file there) for a
before/after table. CPU per claim is this process's (PostgreSQL's server processes are not
counted). Bounded: 4 s per phase, ≈ 1.5 minutes in total with set-up.

Run: ``.venv/bin/python bench/bench_storage.py [--quick] [--json FILE]``
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import Result, finish, isolate, parser, result
from iob_protocol.claim import ClaimConfirmation
from iob_protocol.identity import DeviceIdentity

from cloud_relay.broker import BrokerAdapter, BrokerState, ReconcileReport
from cloud_relay.broker.model import DeviceCredential, HubCredential, ToolCredential
from cloud_relay.config import Limit, RateLimits
from cloud_relay.context import Context
from cloud_relay.registry import FactoryRecord
from cloud_relay.relay import Relay
from cloud_relay.storage import open_storage
from tests.plugins.relay_config import relay_test_config
from tests.relay.postgres import PostgresProcess

PHASE_SECONDS = 4.0
CONCURRENCIES = (1, 64)
#: Claims go round-robin into this many households of one account (a service's many homes).
HOUSEHOLDS = 16
VERIFIER = "iob-verifier-v1$scrypt$14$8$1$" + "A" * 22 + "$" + "A" * 43 + "$" + "A" * 43


class NullBroker(BrokerAdapter):
    """Accepts every change at once: the benchmark measures the database, not the broker."""

    async def put_device(self, credential: DeviceCredential) -> None:
        del credential

    async def remove_device(self, device_id: str) -> None:
        del device_id

    async def put_hub(self, credential: HubCredential, access: Mapping[str, bool]) -> None:
        del credential, access

    async def remove_hub(self, household_id: str) -> None:
        del household_id

    async def kick_hub(self, household_id: str) -> None:
        del household_id

    async def put_tool(self, credential: ToolCredential) -> None:
        del credential

    async def remove_tool(self, credential_id: str) -> None:
        del credential_id

    async def reconcile(self, desired: BrokerState) -> ReconcileReport:
        del desired
        return ReconcileReport()

    async def aclose(self) -> None:
        """Nothing to close."""


def _durable_commits(directory: str, seconds: float) -> float:
    """Commits per second of the smallest durable SQLite transaction, inline."""
    connection = sqlite3.connect(f"{directory}/baseline.db", isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("CREATE TABLE t (v INTEGER)")
    count, deadline = 0, time.perf_counter() + seconds
    began = time.perf_counter()
    while time.perf_counter() < deadline:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("INSERT INTO t (v) VALUES (?)", (count,))
        connection.execute("COMMIT")
        count += 1
    elapsed = time.perf_counter() - began
    connection.close()
    return count / elapsed


async def _claims(url: str, concurrency: int, seconds: float) -> tuple[float, float]:
    """(full claims per second, process CPU ms per claim) at ``concurrency``."""
    unlimited = Limit(10**9, 1)
    broker = SimpleNamespace(
        host="127.0.0.1",
        port=1,
        admin_username="bench",
        admin_password="bench",  # noqa: S106 - never used
    )
    config = relay_test_config(
        url,
        cast("Any", broker),
        limits=RateLimits(**dict.fromkeys(RateLimits.__dataclass_fields__, unlimited)),
    )
    storage = await open_storage(url)
    await storage.migrate()
    relay = Relay(Context(config=config, storage=storage, broker=NullBroker()))
    try:
        tokens = await relay.accounts.sign_up(
            f"bench{concurrency}@example.com", "benchmark password", "Bench", "127.0.0.1"
        )
        account = await relay.accounts.authenticate(tokens.access_token)
        households = [
            (await relay.households.create(account, f"Bench {n}")).household_id
            for n in range(HOUSEHOLDS)
        ]
        # More devices than the phase can claim (measured: < 150/s at c1, < 15/s per worker
        # at c64); a phase that ran out would end early, and its rate still holds.
        count = int(max(concurrency * 15, 150) * seconds) + 100
        identities = [DeviceIdentity.generate() for _ in range(count)]
        await relay.registry.import_records(
            [FactoryRecord(i.device_id, "bench", i.public_key, VERIFIER) for i in identities],
            "bench",
        )
        counter = iter(range(len(identities)))
        done = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                index = next(counter, None)
                if index is None:
                    return
                identity = identities[index]
                household = households[index % HOUSEHOLDS]
                claim = await relay.claims.create(
                    account, household, identity.device_id, "127.0.0.1"
                )
                confirmation = ClaimConfirmation.create(identity, claim.token)
                await relay.claims.confirm(json.loads(confirmation.to_json()))
                done += 1

        cpu, began = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    finally:
        await storage.close()
    return done / elapsed, cpu / max(done, 1) * 1000


async def measure(*, quick: bool) -> list[Result]:
    """Baseline, then each engine at each concurrency; one row per figure."""
    seconds = 1.0 if quick else PHASE_SECONDS
    started = time.perf_counter()
    rows: list[Result] = []
    postgres = PostgresProcess()
    cluster = postgres.start()
    try:
        import asyncpg  # noqa: PLC0415

        with tempfile.TemporaryDirectory(prefix="iob-bench-") as directory:
            base = _durable_commits(directory, seconds)
            label = "durable SQLite commits/s (inline sqlite3, synchronous=FULL)"
            for concurrency in CONCURRENCIES:
                database = f"bench{concurrency}"
                connection = await asyncpg.connect(cluster.dsn())
                await connection.execute(f"CREATE DATABASE {database}")
                await connection.close()
                for name, url in (
                    ("SQLite", f"sqlite:///{directory}/relay{concurrency}.db"),
                    ("PostgreSQL", cluster.dsn(database)),
                ):
                    rate, cpu = await _claims(url, concurrency, seconds)
                    rows += [
                        result(
                            f"storage: claims/s on {name}, c{concurrency}", rate, "/s", base, label
                        ),
                        result(
                            f"storage: CPU per claim on {name}, c{concurrency}",
                            cpu,
                            "ms",
                            1000 / base,
                            "ms per durable SQLite commit",
                        ),
                    ]
    finally:
        postgres.stop()
    print(f"{seconds:.1f} s per phase; total {time.perf_counter() - started:.1f} s")
    return rows


def main() -> None:
    """Measure, print the table, write the JSON when asked."""
    args = parser(__doc__).parse_args()
    isolated = isolate()
    rows = asyncio.run(measure(quick=args.quick))
    finish("storage", rows, args, isolated=isolated)


if __name__ == "__main__":
    main()
