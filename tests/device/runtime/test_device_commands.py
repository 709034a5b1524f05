"""Device-level MQTT commands (``cmd/_identify``, ``cmd/_factory_reset``) through the real
Mosquitto: the runtime's routing and diag events, then the whole agent doing what HA asks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import jsonschema
from iob_protocol.diagnostics import DiagnosticCode

from device_firmware.capabilities.simulated import SimulatedSwitch
from device_firmware.errors import DiagnosedError
from device_firmware.hardware import LedPattern
from device_firmware.mqtt_runtime import MqttRuntime, MqttSettings
from device_firmware.state import DeviceStateRecord, MqttCredentials, Ownership, Phase, StateStore
from device_firmware.supervision import default_runtime_factory
from tests.device.conftest import RELEASE_PATH, AgentStarter, Provisioned
from tests.plugins.mosquitto import MosquittoBroker
from tests.plugins.scripted_service import ScriptedService

from .conftest import Observer, create_device_account, observer, running

DEVICE = "0123456789ABCDEF"
SCHEMA = json.loads((Path(__file__).parent / "meta.schema.json").read_text())


async def until(condition: Callable[[], bool]) -> None:
    """Poll (bounded) for an effect in the agent's loops."""
    async with asyncio.timeout(10):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


async def next_diag(watcher: Observer, topic: str, event: str) -> dict[str, object]:
    while True:
        message = await watcher.next(topic)
        assert isinstance(message.payload, bytes)
        document: dict[str, object] = json.loads(message.payload)
        if document["event"] == event:
            return document


async def test_runtime_routes_device_commands_before_entity_keys(
    mosquitto_broker: MosquittoBroker, hub: tuple[str, str]
) -> None:
    calls: list[str] = []

    async def identify() -> None:
        calls.append("identify")

    async def factory_reset() -> None:
        calls.append("factory_reset")
        raise DiagnosedError(DiagnosticCode.RELAY_UNREACHABLE, "service down")

    account = await create_device_account(mosquitto_broker, DEVICE)
    runtime = MqttRuntime(
        DEVICE,
        account.settings(mosquitto_broker),
        [SimulatedSwitch()],
        device_commands={"identify": identify, "factory_reset": factory_reset},
        sample_interval=60,
    )
    meta = runtime.meta()
    jsonschema.validate(meta, SCHEMA)
    assert meta["commands"] == ["factory_reset", "identify"]
    diag, cmd = f"iob/{DEVICE}/diag", f"iob/{DEVICE}/cmd"
    async with running(runtime), observer(mosquitto_broker, hub) as watcher:
        await watcher.subscribe(diag)
        await watcher.client.publish(f"{cmd}/_identify", b"identify", qos=1)
        await watcher.client.publish(f"{cmd}/_identify", b"press", qos=1)
        rejected = await next_diag(watcher, diag, "command_rejected")
        assert rejected["key"] == "_identify"
        assert calls == ["identify"]  # MQTT keeps one publisher's order

        await watcher.client.publish(f"{cmd}/_reboot", b"reboot", qos=1)
        rejected = await next_diag(watcher, diag, "command_rejected")
        assert (rejected["key"], rejected["reason"]) == ("_reboot", "unknown device command")

        await watcher.client.publish(f"{cmd}/_factory_reset", b"factory_reset", qos=1)
        failed = await next_diag(watcher, diag, "command_failed")
        assert (failed["key"], failed["code"]) == ("_factory_reset", "RELAY_UNREACHABLE")
        assert calls == ["identify", "factory_reset"]


def test_runtime_without_device_commands_lists_none() -> None:
    runtime = MqttRuntime(
        DEVICE, MqttSettings("127.0.0.1", 1883, "u", "p", tls=False), [SimulatedSwitch()]
    )
    assert "commands" not in runtime.meta()
    jsonschema.validate(runtime.meta(), SCHEMA)


async def test_agent_identifies_and_factory_resets_on_home_assistants_command(
    start_agent: AgentStarter,
    provisioned: Provisioned,
    scripted_service: ScriptedService,
    mosquitto_broker: MosquittoBroker,
    hub: tuple[str, str],
) -> None:
    device_id = provisioned.device.identity.device_id
    account = await create_device_account(mosquitto_broker, device_id)
    StateStore(provisioned.config.state_file).write(
        DeviceStateRecord(
            phase=Phase.ONLINE,
            ownership=Ownership(household_id="hh", service_url=scripted_service.url, claimed_at=1),
            mqtt=MqttCredentials(
                host=mosquitto_broker.host,
                port=mosquitto_broker.port,
                tls=False,
                username=account.username,
                password=account.password,
            ),
        )
    )
    base = f"iob/{device_id}"
    factory = default_runtime_factory(simulated=True)
    async with (
        start_agent(runtime_factory=factory) as running_agent,
        observer(mosquitto_broker, hub) as watcher,
    ):
        await watcher.subscribe(f"{base}/meta")
        meta_message = await watcher.next(f"{base}/meta")
        assert isinstance(meta_message.payload, bytes)
        meta = json.loads(meta_message.payload)
        jsonschema.validate(meta, SCHEMA)
        assert meta["commands"] == ["factory_reset", "identify"]

        await watcher.client.publish(f"{base}/cmd/_identify", b"identify", qos=1)
        # Flashed, then back to the state's pattern (the driver runs the sequence).
        await until(lambda: LedPattern.IDENTIFY in running_agent.hardware.history)

        await watcher.client.publish(f"{base}/cmd/_factory_reset", b"factory_reset", qos=1)
        # The reset clears the retained meta (an empty retained payload) ...
        await watcher.next(f"{base}/meta", b"")
        await until(lambda: running_agent.agent.store.current.phase is Phase.UNCLAIMED)
        record = running_agent.agent.store.current
        assert (record.ownership, record.mqtt) == (None, None)
        # ... and releases the device at the account service, as the CLI reset does.
        assert len(scripted_service.received("POST", RELEASE_PATH)) == 1, (
            "the account service was not told"
        )
