"""A broker that crashes is unreachable, not a refusal of the device's credentials (issue 13.5).

paho reports a publish on a connection that is gone as MQTT_ERR_NO_CONN (4); the runtime used
to read 4 as MQTT 3.1.1's "bad user name or password" and gave up with BROKER_AUTH_FAILED (the
agent then asked the account service for a new credential and recorded a wrong diagnostic).
Only a CONNACK refusing the credential (MQTT 5 reason 0x86/0x87) is BROKER_AUTH_FAILED.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

import aiomqtt
import pytest
from aiomqtt.exceptions import MqttConnectError
from iob_protocol.diagnostics import DiagnosticCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from device_firmware.capabilities import Capability, EntityDescriptor, Platform, StateValue
from device_firmware.mqtt_runtime import MqttRuntime, classify_mqtt_error
from tests.plugins.mosquitto import MosquittoBroker, MosquittoProcess

from .conftest import WAIT, create_device_account, running

DEVICE = "0123456789ABCDEF"
CRASHES = 3


class Counter(Capability):
    """A sensor whose every read is a new value: each notify_changed is one publish."""

    def __init__(self) -> None:
        super().__init__(EntityDescriptor(key="count", platform=Platform.SENSOR, name="Count"))
        self.value = 0

    async def read(self) -> StateValue:
        self.value += 1
        return float(self.value)


async def _reconnected(runtime: MqttRuntime, task: asyncio.Task[None]) -> None:
    """Wait (bounded) until the runtime is connected again, or has ended."""
    connected = asyncio.ensure_future(runtime.wait_connected())
    try:
        async with asyncio.timeout(WAIT):
            await asyncio.wait({task, connected}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        connected.cancel()


async def test_a_killed_broker_is_reconnected_not_refused_credentials(
    mosquitto_process: MosquittoProcess, caplog: pytest.LogCaptureFixture
) -> None:
    broker = mosquitto_process.broker
    account = await create_device_account(broker, DEVICE)
    counter = Counter()
    # The documented backoff (1 s doubling to 60 s): the restarted broker is found within it.
    runtime = MqttRuntime(DEVICE, account.settings(broker), [counter], sample_interval=60)
    caplog.set_level(logging.INFO, logger="device_firmware.mqtt_runtime")
    async with running(runtime) as task:
        for crash in range(CRASHES):
            assert runtime.connected
            os.kill(mosquitto_process.pid or 0, signal.SIGKILL)  # a crash: no DISCONNECT
            # The device keeps publishing while the broker is gone.
            while runtime.diagnostic is None and not task.done():
                counter.notify_changed()
                await asyncio.sleep(0.01)
            for _ in range(5):
                counter.notify_changed()
                await asyncio.sleep(0.01)
            mosquitto_process.stop()  # reap the killed process (by its pid)
            assert not task.done(), f"crash {crash}: the runtime gave up: {task.exception()!r}"
            assert runtime.diagnostic is DiagnosticCode.BROKER_UNREACHABLE
            mosquitto_process.start()  # same port, same data
            await _reconnected(runtime, task)
            assert not task.done(), f"crash {crash}: the runtime gave up: {task.exception()!r}"
            assert runtime.diagnostic is None
    text = caplog.text
    assert DiagnosticCode.BROKER_AUTH_FAILED.value not in text
    assert DiagnosticCode.BROKER_UNREACHABLE.value in text


def _connack(code: int) -> ReasonCode:
    return ReasonCode(PacketTypes.CONNACK, identifier=code)


def test_only_a_connack_refusing_the_credential_is_broker_auth_failed() -> None:
    """The exception objects aiomqtt raises: MqttConnectError for a CONNACK, MqttCodeError with
    paho's int error codes for a publish or subscribe on a dead connection, and with a
    ReasonCode for an unexpected disconnect."""
    for refused in (0x86, 0x87):
        error = MqttConnectError(_connack(refused))
        assert classify_mqtt_error(error) is DiagnosticCode.BROKER_AUTH_FAILED
    unreachable: list[aiomqtt.MqttError] = [
        aiomqtt.MqttCodeError(4, "Could not publish message"),  # MQTT_ERR_NO_CONN
        aiomqtt.MqttCodeError(5, "Could not publish message"),  # MQTT_ERR_CONN_REFUSED
        aiomqtt.MqttCodeError(7, "Could not subscribe to topic"),  # MQTT_ERR_CONN_LOST
        aiomqtt.MqttCodeError(_connack(0x80), "Unexpected disconnection"),
        aiomqtt.MqttCodeError(_connack(0x87), "Unexpected disconnection"),  # not a CONNACK
        MqttConnectError(_connack(0x88)),  # server unavailable
        MqttConnectError(_connack(0x89)),  # server busy
        aiomqtt.MqttError("[Errno 111] Connection refused"),
        aiomqtt.MqttError("Disconnected during message iteration"),
    ]
    for gone in unreachable:
        assert classify_mqtt_error(gone) is DiagnosticCode.BROKER_UNREACHABLE, gone


async def _drain(client: aiomqtt.Client) -> None:
    async with asyncio.timeout(WAIT):
        async for _ in client.messages:
            pass


async def test_a_real_publish_on_a_dead_connection_is_unreachable(
    mosquitto_process: MosquittoProcess,
) -> None:
    """The exception aiomqtt really raises for a publish after the broker was killed: an
    ``MqttCodeError`` whose rc is paho's int MQTT_ERR_NO_CONN, 4 -- not a credential refusal."""
    broker = mosquitto_process.broker
    account = await create_device_account(broker, DEVICE)
    client = aiomqtt.Client(
        broker.host,
        broker.port,
        username=account.username,
        password=account.password,
        identifier=DEVICE,
        protocol=aiomqtt.ProtocolVersion.V5,
    )
    with contextlib.suppress(aiomqtt.MqttError):  # leaving a dead connection raises too
        async with client:
            os.kill(mosquitto_process.pid or 0, signal.SIGKILL)
            mosquitto_process.stop()  # reap it
            with pytest.raises(aiomqtt.MqttError):  # until the client has noticed
                await _drain(client)
            with pytest.raises(aiomqtt.MqttCodeError) as gone:
                await client.publish(f"iob/{DEVICE}/state/x", b"1", qos=1)
    assert gone.value.rc == 4
    assert classify_mqtt_error(gone.value) is DiagnosticCode.BROKER_UNREACHABLE


async def test_a_real_connack_refusal_is_what_the_classifier_sees(
    mosquitto_broker: MosquittoBroker,
) -> None:
    """What aiomqtt really raises for Mosquitto's refusal (not a hand-built exception)."""
    account = await create_device_account(mosquitto_broker, DEVICE)
    client = aiomqtt.Client(
        mosquitto_broker.host,
        mosquitto_broker.port,
        username=account.username,
        password="wrong",  # noqa: S106
        identifier=DEVICE,
        protocol=aiomqtt.ProtocolVersion.V5,
    )
    with pytest.raises(aiomqtt.MqttCodeError) as refused:
        async with client:
            pass
    assert isinstance(refused.value, MqttConnectError)
    assert classify_mqtt_error(refused.value) is DiagnosticCode.BROKER_AUTH_FAILED
