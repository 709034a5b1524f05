"""A claim into a household of 1,000 devices against one into a household of none (issue 18, 1).

Both households have their Home Assistant linked (its hub exists on the broker), so every claim
also gives the hub its new device. The real service (SQLite) and a real Mosquitto with dynamic
security, on 127.0.0.1; claims one after another (create, then the device's signed
confirmation, over HTTP), alternating between the two households in rounds so that the broker's
growing dynamic-security file costs both the same. Rows: the big household's claim latency,
median and p90, as ratios to the empty household's in the same run (1.0: a claim's cost does not
grow with the household). Set-up claims the 1,000 devices first (16 at a time).

Run it from an older checkout too (copy this file there) for a before/after table.

Run: ``.venv/bin/python bench/bench_household.py [--quick] [--json FILE]``
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import Result, finish, isolate, median, parser, percentile, result
from inprocess import RunningService, claim, running_service
from iob_protocol.identity import DeviceIdentity

from tests.plugins.mosquitto import MosquittoProcess

BIG = 1000
ROUNDS = 4
PER_ROUND = 10
FILL_CONCURRENCY = 16


class Service:
    """The account service's HTTP API as the benchmark's account uses it."""

    def __init__(self, running: RunningService, session: aiohttp.ClientSession) -> None:
        self.running = running
        self.session = session

    async def household(self, name: str) -> str:
        """A new household whose Home Assistant is linked (its hub put on the broker)."""
        base, headers = self.running.base, self.running.headers
        async with self.session.post(
            f"{base}/v1/households", json={"name": name}, headers=headers
        ) as response:
            household = str((await response.json())["household_id"])
        async with self.session.get(
            f"{base}/v1/households/{household}/hub", headers=headers
        ) as response:
            if response.status != 200:
                raise RuntimeError(f"hub: {await response.text()}")
        return household

    async def claim(self, household: str, identity: DeviceIdentity) -> float:
        """One claim, create to owned; its seconds."""
        started = time.perf_counter()
        await claim(self.session, self.running, household, identity)
        return time.perf_counter() - started


async def _fill(service: Service, household: str, identities: list[DeviceIdentity]) -> None:
    queue = iter(identities)

    async def worker() -> None:
        for identity in queue:
            await service.claim(household, identity)

    await asyncio.gather(*(worker() for _ in range(FILL_CONCURRENCY)))


async def measure(*, quick: bool) -> list[Result]:
    """Fill the big household, then claim into both in alternating rounds."""
    big, rounds = (200, 2) if quick else (BIG, ROUNDS)
    started = time.perf_counter()
    measured = 2 * rounds * PER_ROUND
    identities = [DeviceIdentity.generate() for _ in range(big + measured)]
    with (
        MosquittoProcess() as broker,
        tempfile.TemporaryDirectory(prefix="iob-bench-") as directory,
    ):
        async with (
            running_service(f"sqlite:///{directory}/relay.db", broker, identities) as running,
            aiohttp.ClientSession() as session,
        ):
            service = Service(running, session)
            empty = await service.household("Empty")
            full = await service.household("Full")
            fill_started = time.perf_counter()
            await _fill(service, full, identities[:big])
            filled = time.perf_counter() - fill_started
            print(f"filled a household with {big} devices in {filled:.1f} s")
            spare = iter(identities[big:])
            times: dict[str, list[float]] = {empty: [], full: []}
            for _ in range(rounds):
                for household in (empty, full):
                    for _ in range(PER_ROUND):
                        times[household].append(await service.claim(household, next(spare)))
    label = "a household of none, same run"
    rows = [
        result(
            f"household: claim into a household of {big}, median",
            median(times[full]) * 1000,
            "ms",
            median(times[empty]) * 1000,
            label,
        ),
        result(
            f"household: claim into a household of {big}, p90",
            percentile(times[full], 0.9) * 1000,
            "ms",
            percentile(times[empty], 0.9) * 1000,
            label,
        ),
    ]
    print(f"total {time.perf_counter() - started:.1f} s")
    return rows


def main() -> None:
    """Measure, print the table, write the JSON when asked."""
    args = parser(__doc__).parse_args()
    isolated = isolate()
    rows = asyncio.run(measure(quick=args.quick))
    finish("household", rows, args, isolated=isolated, big=BIG)


if __name__ == "__main__":
    main()
