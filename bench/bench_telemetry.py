"""Telemetry latency: a device's state publish until Home Assistant's state has the new value.

One device of a household loaded in Home Assistant (the real stack, see bench_memory.py for
what a light device is) publishes a new temperature on ``iob/<id>/state/temperature``, as the
agent does (QoS 1, retained). Two observers see the same publish: Home Assistant (its
``state_changed`` event for the sensor, delivered on its websocket API, as the frontend sees
it) and a bare subscriber on the same broker as its admin (the hub's credential is bound to
Home Assistant's client id; the raw Mosquitto publish -> subscribe round trip, the baseline).
One publish at a time.

    .venv/bin/python bench/bench_telemetry.py [--samples 500] [--quick] [--json FILE]
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import aiomqtt
from clients import Mqtt, claim_light_devices, entities_ready, mqtt_client, wait_for
from common import BenchError, Result, finish, isolate, parser, percentile, result, say
from stack import BenchStack, household_in_ha, maker_api, running_stack

ENTITIES: Final = 5
SAMPLE_TIMEOUT: Final = 30.0
GAP: Final = 0.02


def _key(value: object) -> str:
    """The same number as Home Assistant's state and as the payload (``30.0`` vs ``30.000``)."""
    if isinstance(value, bytes | bytearray):
        value = value.decode()
    try:
        return f"{float(str(value)):.3f}"
    except ValueError:
        return str(value)


@dataclass(frozen=True, slots=True)
class _HaEvents:
    """Home Assistant's websocket, subscribed to state_changed; the sensor to watch."""

    ws: aiohttp.ClientWebSocketResponse
    entity_id: str


async def _both_seen(
    value: str, seen: tuple[dict[str, float], dict[str, float]], readers: list[asyncio.Task[None]]
) -> None:
    """Until both observers saw ``value`` (a reader that failed raises its error)."""
    while any(value not in observer for observer in seen):
        for reader in readers:
            if reader.done():
                reader.result()
        await asyncio.sleep(0.001)


async def _sample(
    publisher: aiomqtt.Client, topic: str, samples: int, raw: aiomqtt.Client, ha: _HaEvents
) -> tuple[list[float], list[float]]:
    """Publish ``samples`` values one at a time; (HA ms, raw ms) per publish."""
    raw_seen: dict[str, float] = {}
    ha_seen: dict[str, float] = {}

    async def read_raw() -> None:
        async for message in raw.messages:
            raw_seen.setdefault(_key(message.payload), time.perf_counter())

    async def read_ha() -> None:
        while True:
            data = (await ha.ws.receive_json()).get("event", {}).get("data", {})
            if data.get("entity_id") == ha.entity_id and data.get("new_state"):
                ha_seen.setdefault(_key(data["new_state"]["state"]), time.perf_counter())

    readers = [asyncio.create_task(read_raw()), asyncio.create_task(read_ha())]
    ha_ms: list[float] = []
    raw_ms: list[float] = []
    value = ""
    try:
        for number in range(samples):
            value = _key(30 + number / 1000)
            sent = time.perf_counter()
            await publisher.publish(topic, value, qos=1, retain=True)
            async with asyncio.timeout(SAMPLE_TIMEOUT):
                await _both_seen(value, (raw_seen, ha_seen), readers)
            raw_ms.append((raw_seen[value] - sent) * 1000)
            ha_ms.append((ha_seen[value] - sent) * 1000)
            await asyncio.sleep(GAP)
    except TimeoutError as err:
        raise BenchError(
            f"publish {len(ha_ms) + 1} was not seen within {SAMPLE_TIMEOUT:.0f} s "
            f"(raw subscriber: {value in raw_seen}, Home Assistant: {value in ha_seen})"
        ) from err
    finally:
        for reader in readers:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
    return ha_ms, raw_ms


async def measure(stack: BenchStack, samples: int) -> tuple[list[Result], dict[str, Any]]:
    """``samples`` publishes, each seen by Home Assistant and by the bare subscriber."""
    async with aiohttp.ClientSession() as session:
        home = await household_in_ha(stack, session, "telemetry")
        maker = await maker_api(stack, session)
        (device,) = await claim_light_devices(home.relay, maker, home.household_id, 1)
        hub = await home.relay.hub(home.household_id)
        # The broker binds the hub user to one client id, which Home Assistant's hub holds:
        # the bare subscriber is the broker's admin instead (it may read every topic).
        broker = stack.broker
        if broker is None:
            raise BenchError("the stack's broker is not running")
        observer = Mqtt(hub.host, hub.port, broker.admin_username, broker.admin_password)
        async with (
            device.connected() as publisher,
            mqtt_client(observer) as raw,
            home.ha.websocket() as ws,
        ):
            await home.ha.reload_household()
            await wait_for(
                "Home Assistant showing the device's entities",
                lambda: home.ha.device_states(device.device_id),
                lambda states: entities_ready(states, ENTITIES),
                120,
            )
            entity_id = await home.ha.entity_id(device.device_id, "temperature")
            topic = device.topic("state/temperature")
            await raw.subscribe(topic, qos=1)
            await ws.send_json({"id": 1, "type": "subscribe_events", "event_type": "state_changed"})
            if not (await ws.receive_json()).get("success"):
                raise BenchError("Home Assistant refused the state_changed subscription")
            say(f"{samples} publishes on {topic}")
            ha_ms, raw_ms = await _sample(publisher, topic, samples, raw, _HaEvents(ws, entity_id))
    label = "raw publish→subscribe, same broker"
    rows = [
        result(
            "telemetry: device → HA state, p50",
            percentile(ha_ms, 0.5),
            "ms",
            percentile(raw_ms, 0.5),
            label,
        ),
        result(
            "telemetry: device → HA state, p99",
            percentile(ha_ms, 0.99),
            "ms",
            percentile(raw_ms, 0.99),
            label,
        ),
    ]
    return rows, {"samples": samples}


def main() -> None:
    """Start the stack, measure, print and write the results."""
    options = parser(__doc__)
    options.add_argument("--samples", type=int, help="publishes (500; --quick: 20)")
    args = options.parse_args()
    samples = args.samples or (20 if args.quick else 500)
    isolated = isolate()
    with running_stack(label="telemetry") as stack:
        rows, facts = asyncio.run(measure(stack, samples))
    finish("telemetry", rows, args, isolated=isolated, **facts)


if __name__ == "__main__":
    main()
