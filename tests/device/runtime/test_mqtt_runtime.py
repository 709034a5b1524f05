"""MqttRuntime against the real Mosquitto with per-device dynamic-security credentials."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import aiomqtt
import jsonschema
import pytest
from aiomqtt.exceptions import MqttConnectError
from hypothesis import given
from hypothesis import strategies as st
from iob_protocol.diagnostics import DiagnosticCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from device_firmware.capabilities import (
    Capability,
    CapabilityError,
    EntityDescriptor,
    Platform,
    StateValue,
)
from device_firmware.capabilities.simulated import (
    SimulatedButton,
    SimulatedMotion,
    SimulatedNumber,
    SimulatedSwitch,
    SimulatedTemperature,
)
from device_firmware.mqtt_runtime import (
    BACKOFF_CAP,
    DeviceInfo,
    MqttRuntime,
    MqttRuntimeError,
    MqttSettings,
    backoff_delay,
    classify_mqtt_error,
    spki_sha256,
)
from tests.plugins.mosquitto import MosquittoBroker, MosquittoProcess, dynsec_command

from .conftest import (
    TcpProxy,
    TlsMosquittoProcess,
    create_device_account,
    create_hub_account,
    observer,
    running,
)

DEVICE = "0123456789ABCDEF"
SCHEMA = json.loads((Path(__file__).parent / "meta.schema.json").read_text())


class FlakySensor(Capability):
    """Fails while ``broken`` is set."""

    def __init__(self) -> None:
        super().__init__(
            EntityDescriptor(key="flaky", platform=Platform.SENSOR, name="Flaky", unit="W")
        )
        self.broken = True
        self.reads = 0

    async def read(self) -> StateValue:
        self.reads += 1
        if self.broken:
            raise CapabilityError("sensor unplugged")
        return 12.5


def _capabilities() -> list[Capability]:
    return [
        SimulatedTemperature(rng=random.Random(7)),  # noqa: S311 - repeatable
        SimulatedMotion(rng=random.Random(7), flip=0.0),  # noqa: S311 - repeatable
        SimulatedSwitch(),
        SimulatedButton(),
        SimulatedNumber(),
    ]


def _runtime(settings: MqttSettings, capabilities: list[Capability] | None = None) -> MqttRuntime:
    return MqttRuntime(
        DEVICE,
        settings,
        _capabilities() if capabilities is None else capabilities,
        device_info=DeviceInfo(name="Demo", model="iob-demo", sw_version="0.1.0"),
        sample_interval=60,  # changes in these tests come from commands and notify_changed
        backoff_base=0.05,
        backoff_cap=0.5,
    )


# --- pure parts -------------------------------------------------------------------------------


@given(attempt=st.integers(min_value=0, max_value=10_000), jitter=st.floats(0.0, 1.0))
def test_backoff_stays_in_the_upper_half_of_a_capped_doubling_ceiling(
    attempt: int, jitter: float
) -> None:
    delay = backoff_delay(attempt, jitter=jitter)
    ceiling = min(BACKOFF_CAP, 2.0**attempt) if attempt < 64 else BACKOFF_CAP
    assert ceiling / 2 <= delay <= ceiling
    assert delay <= BACKOFF_CAP


@given(attempt=st.integers(min_value=0, max_value=100))
def test_backoff_ceiling_never_shrinks(attempt: int) -> None:
    assert backoff_delay(attempt + 1, jitter=1.0) >= backoff_delay(attempt, jitter=1.0)
    assert backoff_delay(attempt + 1, jitter=0.0) >= backoff_delay(attempt, jitter=0.0)


def test_backoff_runs_from_one_second_to_sixty() -> None:
    assert backoff_delay(0, jitter=1.0) == 1.0
    assert backoff_delay(0, jitter=0.0) == 0.5
    assert backoff_delay(6, jitter=1.0) == 60.0  # 64 capped
    assert backoff_delay(1000, jitter=0.0) == 30.0
    assert len({backoff_delay(3, jitter=random.random()) for _ in range(20)}) > 1  # noqa: S311


def test_refused_credentials_only_from_a_connack() -> None:
    not_authorized = ReasonCode(PacketTypes.CONNACK, identifier=0x87)
    bad_password = ReasonCode(PacketTypes.CONNACK, identifier=0x86)
    server_busy = ReasonCode(PacketTypes.CONNACK, identifier=0x89)
    auth_failed = DiagnosticCode.BROKER_AUTH_FAILED
    assert classify_mqtt_error(MqttConnectError(not_authorized)) is auth_failed
    assert classify_mqtt_error(MqttConnectError(bad_password)) is auth_failed
    # paho's MQTT_ERR_NO_CONN (4) and MQTT_ERR_CONN_REFUSED (5): a connection that is gone.
    for code in (4, 5):
        error = aiomqtt.MqttCodeError(code, "Could not publish message")
        assert classify_mqtt_error(error) is DiagnosticCode.BROKER_UNREACHABLE
    assert classify_mqtt_error(MqttConnectError(server_busy)) is not auth_failed
    assert classify_mqtt_error(aiomqtt.MqttError("Connection refused")) is not auth_failed


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match="64 hex"):
        MqttSettings("h", 8883, "u", "p", tls=True, ca_pin="abc")
    with pytest.raises(ValueError, match="needs tls"):
        MqttSettings("h", 1883, "u", "p", tls=False, ca_pin="a" * 64)
    with pytest.raises(ValueError, match="port"):
        MqttSettings("h", 0, "u", "p", tls=False)
    assert "secret" not in repr(MqttSettings("h", 1883, "u", "secret", tls=False))


def test_runtime_refuses_bad_ids_and_duplicate_keys() -> None:
    settings = MqttSettings("h", 1883, "u", "p", tls=False)
    with pytest.raises(ValueError, match="topics"):
        MqttRuntime("dev/+", settings, [])
    with pytest.raises(ValueError, match="unique"):
        MqttRuntime(DEVICE, settings, [SimulatedSwitch(), SimulatedSwitch()])


def test_meta_follows_the_documented_schema() -> None:
    runtime = _runtime(MqttSettings("h", 1883, "u", "p", tls=False))
    meta = runtime.meta()
    jsonschema.validate(meta, SCHEMA)
    assert meta["protocol"] == 1
    assert meta["device"] == {
        "id": DEVICE,
        "manufacturer": "IoT Onboard",
        "model": "iob-demo",
        "name": "Demo",
        "sw_version": "0.1.0",
    }
    by_key = {entity["key"]: entity for entity in meta["entities"]}
    assert by_key["setpoint"] == {
        "key": "setpoint",
        "platform": "number",
        "name": "Setpoint",
        "translation_key": "setpoint",
        "device_class": "temperature",
        "unit": "°C",
        "entity_category": "config",
        "min": 10.0,
        "max": 30.0,
        "step": 0.5,
    }
    assert by_key["temperature"]["state_class"] == "measurement"
    assert by_key["identify"]["platform"] == "button"


# --- against the broker -------------------------------------------------------------------------


async def test_online_meta_and_states_are_retained(
    mosquitto_broker: MosquittoBroker, hub: tuple[str, str]
) -> None:
    account = await create_device_account(mosquitto_broker, DEVICE)
    runtime = _runtime(account.settings(mosquitto_broker))
    async with running(runtime), observer(mosquitto_broker, hub) as watcher:
        retained = await watcher.retained_under(f"iob/{DEVICE}/#", f"iob/{DEVICE}/marker")

    assert retained[f"iob/{DEVICE}/availability"] == b"online"
    meta = json.loads(retained[f"iob/{DEVICE}/meta"])
    assert meta == runtime.meta()
    jsonschema.validate(meta, SCHEMA)
    assert retained[f"iob/{DEVICE}/state/relay"] == b"off"
    assert retained[f"iob/{DEVICE}/state/motion"] == b"off"
    assert retained[f"iob/{DEVICE}/state/setpoint"] == b"20.0"
    assert 15.0 <= float(retained[f"iob/{DEVICE}/state/temperature"]) <= 30.0
    assert f"iob/{DEVICE}/state/identify" not in retained  # buttons have no state


async def test_clean_stop_publishes_offline(
    mosquitto_broker: MosquittoBroker, hub: tuple[str, str]
) -> None:
    account = await create_device_account(mosquitto_broker, DEVICE)
    runtime = _runtime(account.settings(mosquitto_broker))
    async with observer(mosquitto_broker, hub) as watcher:
        await watcher.subscribe(f"iob/{DEVICE}/availability")
        async with running(runtime):
            await watcher.next(f"iob/{DEVICE}/availability", b"online")
        await watcher.next(f"iob/{DEVICE}/availability", b"offline", retained=False)
        assert not runtime.connected
    async with observer(mosquitto_broker, hub) as late:
        retained = await late.retained_under(f"iob/{DEVICE}/#", f"iob/{DEVICE}/marker")
    assert retained[f"iob/{DEVICE}/availability"] == b"offline"


async def test_killed_connection_triggers_will_then_reconnects(
    mosquitto_broker: MosquittoBroker, hub: tuple[str, str]
) -> None:
    account = await create_device_account(mosquitto_broker, DEVICE)
    proxy = TcpProxy(mosquitto_broker.port)
    await proxy.start()
    runtime = _runtime(account.settings(mosquitto_broker, port=proxy.port))
    try:
        async with observer(mosquitto_broker, hub) as watcher:
            await watcher.subscribe(f"iob/{DEVICE}/availability")
            async with running(runtime):
                await watcher.next(f"iob/{DEVICE}/availability", b"online")
                proxy.cut()  # the device vanishes without a DISCONNECT
                # The broker publishes the retained will...
                await watcher.next(f"iob/{DEVICE}/availability", b"offline")
                # ...and the runtime, retrying through the proxy, announces itself again.
                await watcher.next(f"iob/{DEVICE}/availability", b"online")
    finally:
        await proxy.close()


async def test_broker_restart_without_retained_store_is_repopulated(
    mosquitto_process: MosquittoProcess, hub: tuple[str, str]
) -> None:
    broker = mosquitto_process.broker
    account = await create_device_account(broker, DEVICE)
    runtime = _runtime(account.settings(broker))
    async with running(runtime):
        mosquitto_process.stop()
        # Drop the persisted retained messages: whatever is retained after the restart was
        # published again by the runtime.
        (mosquitto_process.data_dir / "mosquitto.db").unlink(missing_ok=True)
        mosquitto_process.start()
        async with observer(broker, hub) as watcher:
            await watcher.subscribe(f"iob/{DEVICE}/meta")
            await watcher.next(f"iob/{DEVICE}/meta")
            async with asyncio.timeout(10):
                await runtime.wait_connected()
            retained = await watcher.retained_under(f"iob/{DEVICE}/#", f"iob/{DEVICE}/marker")
    assert retained[f"iob/{DEVICE}/availability"] == b"online"
    assert json.loads(retained[f"iob/{DEVICE}/meta"]) == runtime.meta()
    assert retained[f"iob/{DEVICE}/state/relay"] == b"off"


async def test_commands_drive_capabilities_and_state(
    mosquitto_broker: MosquittoBroker, hub: tuple[str, str]
) -> None:
    account = await create_device_account(mosquitto_broker, DEVICE)
    switch, button, number = SimulatedSwitch(), SimulatedButton(), SimulatedNumber()
    runtime = _runtime(account.settings(mosquitto_broker), [switch, button, number])
    async with running(runtime), observer(mosquitto_broker, hub) as watcher:
        await watcher.subscribe(f"iob/{DEVICE}/state/#")
        await watcher.subscribe(f"iob/{DEVICE}/diag")
        cmd = f"iob/{DEVICE}/cmd"

        await watcher.client.publish(f"{cmd}/relay", b"ON", qos=1)
        await watcher.next(f"iob/{DEVICE}/state/relay", b"on", retained=False)
        assert await switch.read() is True

        await watcher.client.publish(f"{cmd}/setpoint", b"22.5", qos=1)
        await watcher.next(f"iob/{DEVICE}/state/setpoint", b"22.5", retained=False)

        await watcher.client.publish(f"{cmd}/identify", b"press", qos=1)
        await watcher.client.publish(f"{cmd}/setpoint", b"22.3", qos=1)  # off the 0.5 grid
        rejected = await watcher.next(f"iob/{DEVICE}/diag")
        while json.loads(rejected.payload)["event"] != "command_rejected":
            rejected = await watcher.next(f"iob/{DEVICE}/diag")
        assert json.loads(rejected.payload)["key"] == "setpoint"
        assert button.presses == 1
        assert await number.read() == 22.5  # unchanged by the rejected command

        await watcher.client.publish(f"{cmd}/relay", b"banana", qos=1)
        await watcher.next(f"iob/{DEVICE}/state/relay", b"on", retained=False)  # re-published


async def test_retained_command_is_not_replayed_on_connect(
    mosquitto_broker: MosquittoBroker, hub: tuple[str, str]
) -> None:
    """Someone published a command with retain: executing it on every reconnect would be wrong."""
    account = await create_device_account(mosquitto_broker, DEVICE)
    switch = SimulatedSwitch()
    runtime = _runtime(account.settings(mosquitto_broker), [switch])
    async with observer(mosquitto_broker, hub) as watcher:
        await watcher.client.publish(f"iob/{DEVICE}/cmd/relay", b"on", qos=1, retain=True)
        await watcher.subscribe(f"iob/{DEVICE}/diag")
        async with running(runtime):
            rejected = await watcher.next(f"iob/{DEVICE}/diag")
            while json.loads(rejected.payload)["event"] != "command_rejected":
                rejected = await watcher.next(f"iob/{DEVICE}/diag")
        assert "retained" in json.loads(rejected.payload)["reason"]
        assert await switch.read() is False


async def test_changes_are_pushed_without_waiting_for_the_next_sample(
    mosquitto_broker: MosquittoBroker, hub: tuple[str, str]
) -> None:
    account = await create_device_account(mosquitto_broker, DEVICE)
    motion = SimulatedMotion(flip=0.0)
    runtime = _runtime(account.settings(mosquitto_broker), [motion])  # sample every 60 s
    async with running(runtime), observer(mosquitto_broker, hub) as watcher:
        await watcher.subscribe(f"iob/{DEVICE}/state/motion")
        await watcher.next(f"iob/{DEVICE}/state/motion", b"off", retained=True)
        motion.trigger()
        await watcher.next(f"iob/{DEVICE}/state/motion", b"on", retained=False)


async def test_read_failure_publishes_unknown_and_one_diagnostic(
    mosquitto_broker: MosquittoBroker, hub: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    account = await create_device_account(mosquitto_broker, DEVICE)
    flaky = FlakySensor()
    runtime = _runtime(account.settings(mosquitto_broker), [flaky])
    async with observer(mosquitto_broker, hub) as watcher:
        await watcher.subscribe(f"iob/{DEVICE}/diag")
        await watcher.subscribe(f"iob/{DEVICE}/state/flaky")
        async with running(runtime):
            await watcher.next(f"iob/{DEVICE}/state/flaky", b"unknown")
            flaky.notify_changed()  # a second failing read: no second log line
            flaky.notify_changed()
            flaky.broken = False
            flaky.notify_changed()
            await watcher.next(f"iob/{DEVICE}/state/flaky", b"12.5")
    failures = [m for m in watcher.received if str(m.topic).endswith("/diag")]
    events = [json.loads(m.payload)["event"] for m in failures]
    assert events.count("read_failed") == 1
    assert [r.message for r in caplog.records].count("Reading flaky failed: sensor unplugged") == 1


async def test_bad_credentials_are_broker_auth_failed(mosquitto_broker: MosquittoBroker) -> None:
    account = await create_device_account(mosquitto_broker, DEVICE)
    settings = account.settings(mosquitto_broker, password="not-the-password")  # noqa: S106
    with pytest.raises(MqttRuntimeError) as caught:
        async with asyncio.timeout(10):
            await _runtime(settings).run()
    assert caught.value.code is DiagnosticCode.BROKER_AUTH_FAILED
    assert "not-the-password" not in str(caught.value)


async def test_revoked_device_is_kicked_and_cannot_return(
    mosquitto_broker: MosquittoBroker, hub: tuple[str, str]
) -> None:
    """Release revokes credentials at once: the live session ends, the retry is refused."""
    account = await create_device_account(mosquitto_broker, DEVICE)
    runtime = _runtime(account.settings(mosquitto_broker))
    async with observer(mosquitto_broker, hub) as watcher:
        await watcher.subscribe(f"iob/{DEVICE}/availability")
        task = asyncio.create_task(runtime.run())
        await watcher.next(f"iob/{DEVICE}/availability", b"online")
        await dynsec_command(
            mosquitto_broker, [{"command": "disableClient", "username": account.username}]
        )
        with pytest.raises(MqttRuntimeError) as caught:
            async with asyncio.timeout(10):
                await task
    assert caught.value.code is DiagnosticCode.BROKER_AUTH_FAILED


async def test_clear_retained_after_stop_leaves_nothing(
    mosquitto_broker: MosquittoBroker, hub: tuple[str, str]
) -> None:
    account = await create_device_account(mosquitto_broker, DEVICE)
    runtime = _runtime(account.settings(mosquitto_broker))
    async with running(runtime):
        pass
    await runtime.clear_retained()
    async with observer(mosquitto_broker, hub) as watcher:
        retained = await watcher.retained_under(f"iob/{DEVICE}/#", f"iob/{DEVICE}/marker")
    assert retained == {}


async def test_clear_retained_while_running_uses_the_live_session(
    mosquitto_broker: MosquittoBroker, hub: tuple[str, str]
) -> None:
    account = await create_device_account(mosquitto_broker, DEVICE)
    runtime = _runtime(account.settings(mosquitto_broker))
    async with running(runtime):
        await runtime.clear_retained()
        assert not await runtime.publish_diagnostic("ignored")  # a reset device stays quiet
    # The clean stop after a reset publishes no "offline" either.
    async with observer(mosquitto_broker, hub) as watcher:
        retained = await watcher.retained_under(f"iob/{DEVICE}/#", f"iob/{DEVICE}/marker")
    assert retained == {}


async def test_device_credentials_reach_only_the_own_subtree(
    mosquitto_broker: MosquittoBroker, hub: tuple[str, str]
) -> None:
    """The runtime works with exactly the ACL the account service grants, nothing wider."""
    account = await create_device_account(mosquitto_broker, DEVICE)
    async with aiomqtt.Client(
        mosquitto_broker.host,
        mosquitto_broker.port,
        username=account.username,
        password=account.password,
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as device:
        await device.publish("iob/OTHERDEVICE00001/state/relay", b"on", qos=1, retain=True)
    async with observer(mosquitto_broker, hub) as watcher:
        retained = await watcher.retained_under("iob/#", "iob/marker/marker")
    assert retained == {}


async def test_publish_diagnostic_needs_a_connection(
    mosquitto_broker: MosquittoBroker, hub: tuple[str, str]
) -> None:
    account = await create_device_account(mosquitto_broker, DEVICE)
    runtime = _runtime(account.settings(mosquitto_broker), [])
    assert not await runtime.publish_diagnostic("early")
    async with running(runtime), observer(mosquitto_broker, hub) as watcher:
        await watcher.subscribe(f"iob/{DEVICE}/diag")
        assert await runtime.publish_diagnostic("commit_result", code="DNS_FAILED")
        message = await watcher.next(f"iob/{DEVICE}/diag")
        while json.loads(message.payload)["event"] != "commit_result":
            message = await watcher.next(f"iob/{DEVICE}/diag")
        assert json.loads(message.payload)["code"] == "DNS_FAILED"


# --- TLS and the broker pin -------------------------------------------------------------------


async def test_tls_with_the_right_pin_connects(tls_mosquitto: TlsMosquittoProcess) -> None:
    broker = tls_mosquitto.broker
    account = await create_device_account(broker, DEVICE)
    hub = await create_hub_account(broker)
    pin = spki_sha256(tls_mosquitto.certificate_der)
    settings = account.settings(broker, port=tls_mosquitto.tls_port, tls=True, ca_pin=pin.upper())
    async with running(_runtime(settings)), observer(broker, hub) as watcher:
        retained = await watcher.retained_under(f"iob/{DEVICE}/#", f"iob/{DEVICE}/marker")
    assert retained[f"iob/{DEVICE}/availability"] == b"online"


async def test_tls_with_a_wrong_pin_fails_before_sending_credentials(
    tls_mosquitto: TlsMosquittoProcess,
) -> None:
    broker = tls_mosquitto.broker
    account = await create_device_account(broker, DEVICE)
    settings = account.settings(broker, port=tls_mosquitto.tls_port, tls=True, ca_pin="ab" * 32)
    with pytest.raises(MqttRuntimeError) as caught:
        async with asyncio.timeout(10):
            await _runtime(settings).run()
    assert caught.value.code is DiagnosticCode.TLS_FAILED
    assert "pin" in caught.value.detail
    # The broker never saw an MQTT CONNECT from the device: the password stayed home.
    assert f"as {DEVICE}" not in tls_mosquitto.log_tail(200)


async def test_tls_without_pin_verifies_the_chain(tls_mosquitto: TlsMosquittoProcess) -> None:
    broker = tls_mosquitto.broker
    account = await create_device_account(broker, DEVICE)
    settings = account.settings(broker, port=tls_mosquitto.tls_port, tls=True)
    with pytest.raises(MqttRuntimeError) as caught:
        async with asyncio.timeout(10):
            await _runtime(settings).run()
    assert caught.value.code is DiagnosticCode.TLS_FAILED  # self-signed: not trusted
