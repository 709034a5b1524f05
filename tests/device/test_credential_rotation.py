"""A rotated MQTT password reaches the device: the broker refuses the old one, the device fetches
the current one from the account service with a signed request, saves it and reconnects.

End to end with the REAL account service (``cloud_relay.app.create_app`` on SQLite) and the
REAL Mosquitto; the recovery's backoff against a small scripted service; the saved credential
against power cuts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
from iob_protocol.claim import MqttCredentialRequest
from iob_protocol.identity import DeviceIdentity

from device_firmware.relay_client import CredentialRecovery, NotOwned, RelayClient
from device_firmware.state import MqttCredentials, Phase, StateStore
from device_firmware.supervision import default_runtime_factory
from tests.plugins.clock import MONOTONIC_START, FakeClock
from tests.plugins.scripted_service import Answer, ScriptedService, error

from . import credential_writer
from .commit_helpers import claim_and_commit
from .conftest import CREDENTIAL_PATH, AgentStarter, Provisioned, RunningAgent
from .mqtt_clients import device_mqtt, hub_mqtt
from .power_cut import kill_mid_write, writer_context
from .real_relay import RealRelay

# --- end to end: the real service and broker ----------------------------------------------------


@dataclass
class Observer:
    """Home Assistant's view: the household hub's MQTT session on the device's topics."""

    client: aiomqtt.Client
    device_id: str

    async def wait_for(self, subtopic: str, check: Callable[[bytes], bool]) -> None:
        """Wait (bounded, not timed) for a message on ``iob/<id>/<subtopic>`` that passes."""
        async with asyncio.timeout(60):
            async for message in self.client.messages:
                topic = str(message.topic)
                if topic == f"iob/{self.device_id}/{subtopic}" and check(bytes(message.payload)):
                    return

    async def answers_commands(self) -> None:
        """The device is connected and publishing: it answers a command for an unknown entity.

        Only a live session can answer (commands are not queued for a device that is offline),
        so the probe is repeated until the answer comes; nothing earlier can be mistaken for it.
        """

        async def probe() -> None:
            while True:
                await self.client.publish(f"iob/{self.device_id}/cmd/probe", b"1", qos=1)
                await asyncio.sleep(0.2)

        def rejected_probe(payload: bytes) -> bool:
            event = json.loads(payload)
            return bool(event["event"] == "command_rejected" and event.get("key") == "probe")

        task = asyncio.create_task(probe())
        try:
            await self.wait_for("diag", rejected_probe)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def owned_and_publishing(
    relay: RealRelay, running: RunningAgent, device_id: str
) -> AsyncIterator[Observer]:
    """Claim the device at the real service and wait until it publishes through the broker."""
    hub = await relay.hub()
    async with hub_mqtt(hub) as client:
        await claim_and_commit(running, relay)
        # The hub's ACL covers the device once it is owned: subscribe now; the retained
        # ``online`` arrives once the runtime has announced itself.
        await client.subscribe(f"iob/{device_id}/#", qos=1)
        observer = Observer(client, device_id)
        await observer.wait_for("availability", lambda payload: payload == b"online")
        yield observer


async def refused_by_broker(mqtt: MqttCredentials) -> bool:
    try:
        async with device_mqtt(mqtt, timeout=10):
            return False
    except aiomqtt.MqttCodeError as err:
        return getattr(err.rc, "value", err.rc) in {0x86, 0x87}


async def test_rotation_reaches_the_device_by_itself(
    start_agent: AgentStarter,
    provisioned: Provisioned,
    account_service: RealRelay,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Rotate via the household API → the broker kicks the device and refuses its old password →
    the device fetches, saves and reconnects with the new one, and publishes again."""
    caplog.set_level(logging.DEBUG)
    factory = default_runtime_factory(simulated=True, model="pi-test", firmware="0.1.0")
    relay = account_service
    device_id = provisioned.device.identity.device_id
    async with (
        start_agent(runtime_factory=factory) as running,
        owned_and_publishing(relay, running, device_id) as observer,
    ):
        before = running.agent.store.current.mqtt
        assert before is not None
        status, rotated = await relay.call(
            "POST",
            f"/v1/households/{relay.household_id}/devices/{device_id}/credentials",
            token=relay.user_token,
        )
        assert status == 200, rotated
        assert rotated["mqtt"]["password"] != before.password

        await observer.answers_commands()  # on its own: nobody told the device anything

        after = running.agent.store.current
        assert after.phase is Phase.ONLINE
        assert after.diagnostic is None
        assert after.mqtt == replace(before, password=rotated["mqtt"]["password"])
        # Saved, not only in memory: a reboot starts with the new password.
        assert StateStore(running.provisioned.config.state_file).load().mqtt == after.mqtt
        assert await refused_by_broker(before)
        assert not await refused_by_broker(after.mqtt)
    # The device asked with its own signature, and the owner's audit shows it.
    status, audit = await relay.call(
        "GET",
        f"/v1/households/{relay.household_id}/devices/{device_id}/audit",
        token=relay.user_token,
    )
    assert status == 200, audit
    actions = [event["action"] for event in audit["events"]]
    assert "device.credentials_rotated" in actions
    assert "device.credentials_fetched" in actions
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert rotated["mqtt"]["password"] not in logged
    assert before.password not in logged


# A released device returns to unclaimed (the service answers "unowned"): test_release.py.


# --- the recovery's backoff, against a scripted service -----------------------------------------


def grant(device_id: str, password: str) -> Answer:
    return Answer(
        200,
        {
            "status": "owned",
            "device_id": device_id,
            "household_id": "hh",
            "mqtt": {
                "host": "127.0.0.1",
                "port": 1883,
                "tls": False,
                "username": device_id,
                "password": password,
            },
        },
    )


def asked(service: ScriptedService) -> list[dict[str, Any]]:
    """The credential requests the service got (their bodies)."""
    return [request.body for request in service.received("POST", CREDENTIAL_PATH)]


async def test_recovery_fetches_once_per_refusal_and_backs_off(
    scripted_service: ScriptedService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    service, url = scripted_service, scripted_service.url
    identity = DeviceIdentity.generate()
    device_id = identity.device_id
    clock = FakeClock(MONOTONIC_START)
    async with aiohttp.ClientSession() as http:
        recovery = CredentialRecovery(
            identity,
            lambda base: RelayClient(base, session=http),
            clock=clock,
            first_retry=60,
            max_retry=200,
        )

        async def fetch(refused: str = "old") -> str | None:
            got = await recovery.fetch(url, refused_password=refused)
            assert not isinstance(got, NotOwned)
            return None if got is None else got.password

        service.answer("POST", CREDENTIAL_PATH, grant(device_id, "new-password"))
        assert await fetch() == "new-password"
        # The request is the device's own signature over a fresh nonce.
        sent = MqttCredentialRequest.from_json(
            json.dumps(asked(service)[0]["request"], sort_keys=True, separators=(",", ":")).encode()
        )
        sent.verify(identity.public_key, now=sent.timestamp)

        # Nothing new (the service answers the refused password): back off 60 s, then 120 s.
        service.answer("POST", CREDENTIAL_PATH, grant(device_id, "old"))
        assert await fetch() is None
        assert await fetch() is None  # too soon: not even asked
        clock.now += 59
        assert await fetch() is None
        assert len(asked(service)) == 2
        clock.now += 1
        service.answer("POST", CREDENTIAL_PATH, error(403, "credential_refused"))
        assert await fetch() is None
        assert len(asked(service)) == 3
        clock.now += 119
        assert await fetch() is None
        assert len(asked(service)) == 3
        # Doubling stops at max_retry (200 s, not 240 s); a failure of the service counts too.
        clock.now += 1
        service.answer("POST", CREDENTIAL_PATH, error(503, "broker_unavailable"))
        assert await fetch() is None
        clock.now += 200
        service.answer("POST", CREDENTIAL_PATH, grant(device_id, "newer-password"))
        assert await fetch() == "newer-password"
        assert len(asked(service)) == 5
        # After a success the next refusal is answered at once again.
        service.answer("POST", CREDENTIAL_PATH, grant(device_id, "newest-password"))
        assert await fetch("newer-password") == "newest-password"
        # An answer for another device is refused, like a claim's.
        clock.now += 1000
        service.answer("POST", CREDENTIAL_PATH, grant("0123456789ABCDEF", "stolen"))
        assert await fetch() is None
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for password in ("new-password", "newer-password", "newest-password", "stolen"):
        assert password not in logged
    assert "set it up again from Home Assistant" in logged


async def test_only_the_exact_unowned_answer_means_not_owned(
    scripted_service: ScriptedService,
) -> None:
    """The answer that unclaims a device must be exactly the service's: anything that merely
    resembles it (another device, extra or missing fields, an error status) is a failure."""
    service, url = scripted_service, scripted_service.url
    identity = DeviceIdentity.generate()
    device_id = identity.device_id
    clock = FakeClock(MONOTONIC_START)
    async with aiohttp.ClientSession() as http:
        recovery = CredentialRecovery(
            identity, lambda base: RelayClient(base, session=http), clock=clock
        )
        refused = "old"
        lookalikes: list[tuple[int, dict[str, Any]]] = [
            (200, {"status": "unowned", "device_id": "0123456789ABCDEF"}),
            (200, {"status": "unowned"}),
            (200, {"status": "unowned", "device_id": device_id, "household_id": "hh"}),
            (409, {"status": "unowned", "device_id": device_id}),
            (409, {"error": {"code": "unowned", "message": "scripted"}}),
            (500, {"status": "unowned", "device_id": device_id}),
        ]
        for answer in lookalikes:
            clock.now += 10_000  # past any backoff: every answer is asked for
            service.answer("POST", CREDENTIAL_PATH, Answer(*answer))
            assert await recovery.fetch(url, refused_password=refused) is None, answer
        clock.now += 10_000
        service.answer(
            "POST", CREDENTIAL_PATH, Answer(200, {"status": "unowned", "device_id": device_id})
        )
        assert await recovery.fetch(url, refused_password=refused) == NotOwned(device_id=device_id)
    assert len(asked(service)) == len(lookalikes) + 1


async def test_unreachable_service_is_a_quiet_failure() -> None:
    identity = DeviceIdentity.generate()
    async with aiohttp.ClientSession() as http:
        recovery = CredentialRecovery(
            identity, lambda base: RelayClient(base, session=http, timeout=10)
        )
        # Port 9 on loopback: nothing listens (connection refused at once).
        refused = "old"
        assert await recovery.fetch("http://127.0.0.1:9", refused_password=refused) is None


# --- the saved credential -----------------------------------------------------------------------


async def test_replace_mqtt_only_swaps_the_expected_credential(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    store.write(credential_writer.ONLINE)
    old, new = credential_writer.OLD, credential_writer.NEW
    assert await store.replace_mqtt(old, new)
    assert store.load().mqtt == new
    # Someone else changed it meanwhile (a new claim): nothing is written.
    generation = store.current.generation
    assert not await store.replace_mqtt(old, replace(new, password="x" * 43))
    assert store.load().generation == generation
    # Reset to unclaimed meanwhile: nothing is written either.
    store.write(replace(store.current, phase=Phase.UNCLAIMED, ownership=None, mqtt=None))
    assert not await store.replace_mqtt(new, old)
    assert store.load().mqtt is None


def test_power_cut_while_saving_a_fetched_credential(tmp_path: Path) -> None:
    """SIGKILL a writer that swaps the credential 40 times at random instants: every restart
    finds the old or the new credential, never neither, never a broken file."""
    path = tmp_path / "state.json"
    StateStore(path).write(credential_writer.ONLINE)
    context = writer_context("tests.device.credential_writer")
    rng = random.Random(20261124)  # noqa: S311 - reproducible kill times, not crypto
    last = StateStore(path).load().generation
    seen: set[str] = set()
    killed_mid_write = 0
    for _ in range(40):
        killed_mid_write += kill_mid_write(context, credential_writer.swap_forever, path, last, rng)
        record = StateStore(path).recover()  # the restart: must never raise
        assert record.phase is Phase.ONLINE
        assert record.mqtt in {credential_writer.OLD, credential_writer.NEW}
        assert record.generation > last
        last = record.generation
        seen.add(record.mqtt.password)
        assert list(tmp_path.glob(".state.json.*.tmp")) == []
    # Meaningful only if kills landed inside writes and both credentials were written.
    assert killed_mid_write > 0
    assert len(seen) == 2
