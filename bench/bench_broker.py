"""The broker side of a claim: Mosquitto's dynamic security vs RabbitMQ asking the database.

On Mosquitto a claim writes the device's client into dynsec (``put_device``); on RabbitMQ with
the HTTP auth backend it writes nothing, and the broker asks the service's endpoints
(:mod:`cloud_relay.api.broker_auth`, from SQLite) at the device's CONNECT. Rows, each a ratio
measured in this run:

* claim → first CONNECT accepted, RabbitMQ (row update + cache invalidation) vs Mosquitto
  (``put_device``), sequential;
* CONNECTs per second on RabbitMQ with 10,000 devices registered vs 100 (the database lookup
  must not grow with the fleet), and RabbitMQ vs Mosquitto;
* publish → receive round trip (QoS 1, one client subscribed to its own topic), median.

Mosquitto's clients speak MQTT 5, RabbitMQ 3.10's MQTT 3.1.1 (all it has). One RabbitMQ node
(≈ 20 s to start) and one Mosquitto, on 127.0.0.1.

Run: ``.venv/bin/python bench/bench_broker.py [--quick] [--json FILE]``
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Self

import aiomqtt
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import Result, finish, isolate, parser, result

from cloud_relay.api.broker_auth import BrokerAuthority, broker_auth_app
from cloud_relay.broker import DeviceCredential
from cloud_relay.broker.mosquitto import MosquittoDynsecAdapter
from cloud_relay.storage import Storage, open_storage
from cloud_relay.tokens import mqtt_password
from tests.plugins.mosquitto import MosquittoBroker, MosquittoProcess
from tests.relay.broker.rabbitmq import AUTH_SECRET, RabbitNode, mqtt_client, running_node

KEY = b"b" * 32
SMALL, LARGE = 100, 10_000


def _pw(device_id: str) -> str:
    return mqtt_password(KEY, "device", device_id, 1)


async def _database(path: Path, devices: int, owned: int) -> Storage:
    """``devices`` registered, the first ``owned`` owned by household h."""
    storage = await open_storage(f"sqlite:///{path}")
    await storage.migrate()
    async with storage.transaction() as conn:
        await conn.execute("INSERT INTO households (id, name, created_at) VALUES ('h', 'h', 0)")
        await conn.execute(
            "INSERT INTO device_models (model, name, manufacturer, metadata, created_at, "
            "updated_at) VALUES ('m', 'm', 'm', '{}', 0, 0)"
        )
        for index in range(devices):
            await conn.execute(
                "INSERT INTO devices (device_id, model, public_key, setup_verifier, imported_at, "
                "household_id, credential_version, updated_at) "
                "VALUES ($1, 'm', $2, 'v', 0, $3, 1, 0)",
                f"dev{index}",
                b"\0" * 32,
                "h" if index < owned else None,
            )
    return storage


def _mosquitto_client(broker: MosquittoBroker, device_id: str) -> aiomqtt.Client:
    return aiomqtt.Client(
        broker.host, broker.port, username=device_id, password=_pw(device_id),
        identifier=device_id, protocol=aiomqtt.ProtocolVersion.V5, timeout=10,
    )  # fmt: skip


async def _timed(steps: int, step: Callable[[int], Awaitable[None]]) -> list[float]:
    """Seconds per call of ``step(0..steps-1)``, run one after another."""
    times = []
    for index in range(steps):
        started = time.perf_counter()
        await step(index)
        times.append(time.perf_counter() - started)
    return times


async def _round_trips(client: aiomqtt.Client, topic: str, count: int) -> list[float]:
    await client.subscribe(topic, qos=1)
    times = []
    for index in range(count):
        started = time.perf_counter()
        await client.publish(topic, str(index).encode(), qos=1)
        async with asyncio.timeout(10):
            await anext(client.messages)
        times.append(time.perf_counter() - started)
    return times


class _Rabbit:
    """The node asking a database of ``devices`` devices (the first ``owned`` owned)."""

    def __init__(self, node: RabbitNode, storage: Storage) -> None:
        self.node = node
        self.storage = storage
        self.authority = BrokerAuthority(storage, KEY, cache_seconds=0.0)
        self._runner = web.AppRunner(broker_auth_app(self.authority, AUTH_SECRET))

    async def __aenter__(self) -> Self:
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.node.auth_port).start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._runner.cleanup()
        await self.storage.close()

    def client(self, device_id: str) -> aiomqtt.Client:
        return mqtt_client(self.node, device_id, _pw(device_id))

    async def connect(self, device_id: str) -> None:
        async with self.client(device_id):
            pass

    async def claim_then_connect(self, device_id: str) -> None:
        async with self.storage.transaction() as conn:
            await conn.execute(
                "UPDATE devices SET household_id = 'h' WHERE device_id = $1", device_id
            )
        self.authority.invalidate(device_id)
        await self.connect(device_id)


async def measure(
    node: RabbitNode, mosquitto: MosquittoProcess, work: Path, *, quick: bool
) -> list[Result]:
    """The four rows (module docs), each against its baseline from this run."""
    steps = 20 if quick else 100
    broker = mosquitto.broker
    adapter = MosquittoDynsecAdapter(
        broker.host, broker.port, broker.admin_username, broker.admin_password
    )
    async with adapter:
        for index in range(steps):  # the devices the connect rows use
            await adapter.put_device(DeviceCredential(f"dev{index}", _pw(f"dev{index}")))

        async def mosquitto_claim(index: int) -> None:
            device_id = f"new{index}"
            await adapter.put_device(DeviceCredential(device_id, _pw(device_id)))
            async with _mosquitto_client(broker, device_id):
                pass

        async def mosquitto_connect(index: int) -> None:
            async with _mosquitto_client(broker, f"dev{index}"):
                pass

        mosq_claim = await _timed(steps, mosquitto_claim)
        mosq_connect = await _timed(steps, mosquitto_connect)
        async with _mosquitto_client(broker, "dev0") as client:
            mosq_trip = await _round_trips(client, "iob/dev0/state", steps)

    async with _Rabbit(node, await _database(work / "small.db", SMALL, SMALL)) as rabbit:
        await _timed(5, lambda i: rabbit.connect(f"dev{i}"))  # warm-up, not counted
        small_connect = await _timed(steps, lambda i: rabbit.connect(f"dev{i}"))
    async with _Rabbit(node, await _database(work / "large.db", LARGE, LARGE - steps)) as rabbit:
        large_connect = await _timed(steps, lambda i: rabbit.connect(f"dev{i}"))
        rabbit_claim = await _timed(
            steps, lambda i: rabbit.claim_then_connect(f"dev{LARGE - steps + i}")
        )
        async with rabbit.client("dev0") as client:
            rabbit_trip = await _round_trips(client, "iob/dev0/state", steps)

    def rate(times: list[float]) -> float:
        return len(times) / sum(times)

    def ms(times: list[float]) -> float:
        return statistics.median(times) * 1000

    return [
        result(
            "broker: claim → CONNECT accepted, RabbitMQ (10,000 devices)",
            ms(rabbit_claim), "ms",
            ms(mosq_claim), f"Mosquitto put_device + CONNECT ({steps} clients)",
            note="median; RabbitMQ: row update + invalidate, no broker write",
        ),
        result(
            "broker: CONNECT/s, RabbitMQ, 10,000 devices registered",
            rate(large_connect), "/s", rate(small_connect), "RabbitMQ, 100 devices",
        ),
        result(
            "broker: CONNECT/s, RabbitMQ (HTTP auth from SQLite)",
            rate(small_connect), "/s", rate(mosq_connect), "Mosquitto dynsec",
        ),
        result(
            "broker: publish → receive, RabbitMQ (QoS 1)",
            ms(rabbit_trip), "ms", ms(mosq_trip), "Mosquitto", note="median round trip",
        ),
    ]  # fmt: skip


def main() -> None:
    args = parser(__doc__).parse_args()
    isolate()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "rabbitmq").mkdir()
        with running_node(work / "rabbitmq") as node, MosquittoProcess() as mosquitto:
            results = asyncio.run(measure(node, mosquitto, work, quick=args.quick))
        start = round(node.start_seconds, 1)
    finish("broker", results, args, rabbitmq_start_seconds=start)


if __name__ == "__main__":
    main()
