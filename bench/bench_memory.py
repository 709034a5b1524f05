"""Memory per connected device of the account service, the broker and Home Assistant.

The real stack (scripts/demo_stack.py's processes: Mosquitto with dynamic security, the account
service, Home Assistant with the integration) holds one household whose entry is loaded in
Home Assistant. The RSS of each process (with its children) is read with that household empty,
then again after N light devices joined it: each registered, claimed through the account
service's real API, connected to the broker with its own credential and publishing what the
simulated agent publishes (availability, its 5-entity descriptor, states), until Home Assistant
shows every device's entities as available. Per device = (RSS with N - RSS with 0) / N; the
baseline is the idle RSS (0 devices) and the ratio RSS(N) / RSS(0).

Then one more device, a real agent started with the stack, is onboarded through Home Assistant's
config flow (as bench_onboarding.py does) into that household of N while the other entities'
states are sampled without pause: a row says the smallest share of them seen available at once
(it must be 1: the device is added to the running hub and platforms, nothing is reloaded); its
note has the most seen unavailable and the seconds from the device's discovery flow to its
entities available. Another row counts the other entities whose state was written while the
device was added (their ``last_reported`` moved: any write, also one that changes nothing): the
new device must not re-write the rest of the household (it should be 0).

    .venv/bin/python bench/bench_memory.py [--devices 1000] [--quick] [--json FILE]
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from dataclasses import dataclass
from typing import Final

import aiohttp
from bench_onboarding import through_ha
from clients import HaApi, claim_light_devices, entities_ready, wait_for
from common import Result, finish, isolate, parser, rss_kib, say
from demo_stack import DeviceFacts
from stack import BenchStack, household_in_ha, maker_api, running_stack

ENTITIES_PER_DEVICE: Final = 5
CONNECT_BATCH: Final = 50
#: Bounds, not expectations.
HOLD_TIMEOUT: Final = 1800.0
#: Seconds the other entities are still watched after the device was added: longer than the
#: integration's sync cooldown (5 s), so a device-list re-read it deferred is seen too.
WRITES_SETTLE: Final = 6.0
PROCESSES: Final = (("relay", "account service"), ("mosquitto", "broker"), ("homeassistant", "HA"))


def _all_held(devices: int, states: list[str]) -> bool:
    return entities_ready(states, devices * ENTITIES_PER_DEVICE)


def _rss(stack: BenchStack) -> dict[str, int]:
    return {key: rss_kib(stack.pids[key]) for key, _ in PROCESSES}


@dataclass(frozen=True, slots=True)
class Added:
    """What adding one device to the household did to the others."""

    seconds: float
    worst_unavailable: int
    samples: int
    others: int
    written: int


async def add_one_device(ha: HaApi, device: DeviceFacts) -> Added:
    """Onboard ``device`` through Home Assistant while sampling every other entity's state.

    Seconds from its discovery flow to its entities available, the most other entities seen
    unavailable in one sample, the number of samples, and how many of the other entities had
    their state written meanwhile or within :data:`WRITES_SETTLE` after (of how many).
    """
    since = await ha.now()
    worst = samples = 0
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal worst, samples
        while not done.is_set():
            worst = max(worst, await ha.unavailable_except(device.device_id))
            samples += 1

    sampler = asyncio.create_task(sample())
    try:
        seconds = (await through_ha(ha, device))["total"]
    finally:
        done.set()
        await sampler
    await asyncio.sleep(WRITES_SETTLE)
    written, others = await ha.written_since_except(device.device_id, since)
    return Added(seconds, worst, samples, others, written)


async def measure(
    stack: BenchStack, count: int, settle: float
) -> tuple[list[Result], dict[str, object]]:
    """RSS at 0 and at ``count`` devices; rows per process."""
    async with aiohttp.ClientSession() as session:
        home = await household_in_ha(stack, session, "memory")
        await wait_for(
            "the household entry loaded",
            lambda: home.ha.call("/api/config/config_entries/entry"),
            lambda entries: any(
                e["domain"] == "iot_onboard" and e["state"] == "loaded" for e in entries
            ),
            120,
        )
        await asyncio.sleep(settle)
        idle = _rss(stack)
        say(f"idle RSS (KiB): {idle}; claiming {count} devices")
        maker = await maker_api(stack, session)
        started = time.monotonic()
        devices = await claim_light_devices(home.relay, maker, home.household_id, count)
        claimed = time.monotonic() - started
        say(f"claimed in {claimed:.1f} s; Home Assistant re-reads the device list")
        # Home Assistant subscribes to every device first; then the devices come online in
        # batches, each waited for. (All at once, their retained messages would be delivered
        # to the hub in one burst on subscribe, and Mosquitto's default max_queued_messages of
        # 1000 drops what does not fit: see docs/development.md, Benchmarks.)
        await home.ha.reload_household()
        async with contextlib.AsyncExitStack() as connections:
            for start in range(0, len(devices), CONNECT_BATCH):
                batch = devices[start : start + CONNECT_BATCH]
                await asyncio.gather(
                    *(connections.enter_async_context(device.connected()) for device in batch)
                )
                online = start + len(batch)
                await wait_for(
                    f"Home Assistant holding {online} devices' entities, available",
                    home.ha.entity_states,
                    functools.partial(_all_held, online),
                    HOLD_TIMEOUT,
                    poll=1.0,
                )
                say(f"{online} devices online and in Home Assistant")
            held = time.monotonic() - started
            await asyncio.sleep(settle)
            loaded = _rss(stack)
            say(f"onboarding one more device into the household of {count}")
            add = await add_one_device(home.ha, stack.devices[0])
            added, unavailable, samples = add.seconds, add.worst_unavailable, add.samples
            say(
                f"added in {added:.2f} s; {unavailable} others unavailable at most; "
                f"{add.written} of {add.others} others written"
            )
            available = 1.0 - unavailable / (count * ENTITIES_PER_DEVICE)
    rows = []
    for key, name in PROCESSES:
        per_device = (loaded[key] - idle[key]) / count
        note = f"ratio = RSS with {count} / RSS with 0"
        if count < 1000:
            extra = per_device * 1000 / 1024
            note += f"; at 1000 devices about {extra:.0f} MiB more (extrapolated)"
        rows.append(
            Result(
                metric=f"memory: {name} per device (N={count})",
                value=per_device,
                unit="KiB",
                baseline=idle[key] / 1024,
                baseline_unit="MiB",
                baseline_label="its RSS with 0 devices",
                ratio=loaded[key] / idle[key],
                note=note,
            )
        )
    rows.append(
        Result(
            metric=f"adding a device to a household of {count}: other entities available, min",
            value=available,
            unit="share",
            baseline=1.0,
            baseline_label="required: all",
            ratio=available,
            note=(
                f"{samples} samples of {count * ENTITIES_PER_DEVICE} entities while it was added;"
                f" at most {unavailable} unavailable at once; the device's discovery → entities"
                f" {added:.2f} s (bench_onboarding.py measures that against the bare LAN commit)"
            ),
        )
    )
    rows.append(
        Result(
            metric=f"adding a device to a household of {count}: other entities written",
            value=add.written,
            unit="entities",
            baseline=add.others,
            baseline_label="the other entities (required: none written)",
            ratio=add.written / max(add.others, 1),
            note=(
                f"{add.written} of {add.others} other entities had their state written"
                f" (last_reported moved) while the device was added or within {WRITES_SETTLE:.0f} s"
                " after; ratio = the share written"
            ),
        )
    )
    facts: dict[str, object] = {
        "devices": count,
        "rss_idle_kib": idle,
        "rss_loaded_kib": loaded,
        "seconds_to_claim": round(claimed, 1),
        "seconds_until_ha_held_all": round(held, 1),
        "seconds_to_add_one_more": round(added, 3),
        "others_unavailable_max": unavailable,
        "others_written": add.written,
    }
    return rows, facts


def main() -> None:
    """Start the stack, measure, print and write the results."""
    options = parser(__doc__)
    options.add_argument("--devices", type=int, help="devices to connect (1000; --quick: 5)")
    args = options.parse_args()
    count = args.devices or (5 if args.quick else 1000)
    isolated = isolate()
    with running_stack(label="memory", agents=1, batch=1) as stack:
        rows, facts = asyncio.run(measure(stack, count, 1.0 if args.quick else 10.0))
    finish("memory", rows, args, isolated=isolated, **facts)


if __name__ == "__main__":
    main()
