"""The HA-free hub core: descriptor parsing, backoff, credentials refused and re-fetched."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
from dataclasses import replace
from typing import Any

import aiomqtt
import pytest
from aiomqtt.exceptions import MqttConnectError
from homeassistant.exceptions import HomeAssistantError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from custom_components.iot_onboard.account_client import (
    AccountConnectionError,
    AuthenticationError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
)
from custom_components.iot_onboard.helpers import translate_error
from custom_components.iot_onboard.hub import (
    HubCommandError,
    HubCredentials,
    HubCredentialsRefusedError,
    HubCredentialsUnavailableError,
    HubNotConnectedError,
    MetaError,
    MqttHub,
    _Client,
    backoff_delay,
    hub_client_id,
    parse_meta,
    refused_credentials,
)
from tests.integration.runtime_helpers import META, RealAccount, meta_for
from tests.plugins.mosquitto import MosquittoProcess


class Recorder:
    """A HubListener that records what it is told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []
        self.connected = asyncio.Event()
        self.lost = asyncio.Event()

    def hub_connection_changed(self, *, connected: bool) -> None:
        self.events.append(("connection", str(connected)))
        if connected:
            self.connected.set()
        else:
            self.lost.set()

    def device_meta_changed(self, device_id: str) -> None:
        self.events.append(("meta", device_id))

    def device_availability_changed(self, device_id: str) -> None:
        self.events.append(("availability", device_id))

    def device_state_changed(self, device_id: str, key: str) -> None:
        self.events.append(("state", device_id, key))

    def device_diagnostic(self, device_id: str, event: dict[str, Any]) -> None:
        self.events.append(("diag", device_id, str(event.get("event"))))


def test_parse_meta_keeps_what_home_assistant_can_build() -> None:
    document = meta_for("dev1")
    document["entities"] += [
        {"key": "no_range", "platform": "number", "name": "No range"},
        {"key": "bad/key", "platform": "sensor"},
        {"key": "thing", "platform": "camera"},
        {"key": "temperature", "platform": "sensor"},  # duplicate: the first one wins
        "not an object",
    ]
    document["commands"] = ["identify", "self_destruct", "factory_reset"]
    meta = parse_meta("dev1", json.dumps(document).encode())
    assert [e.key for e in meta.entities] == [e["key"] for e in META["entities"]]
    assert meta.commands == frozenset({"identify", "factory_reset"})
    assert (meta.name, meta.model, meta.sw_version) == ("Kitchen sensor", "pi-sensor", "1.2.0")
    setpoint = meta.entity("setpoint")
    assert setpoint is not None
    assert (setpoint.min, setpoint.max, setpoint.step) == (10.0, 30.0, 0.5)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"{", "not JSON"),
        (b"[]", "not a JSON object"),
        (json.dumps({"device": {"id": "other"}}).encode(), "names device"),
        (b"x" * (64 * 1024 + 1), "over"),
        # A recursion error in json before the bounded loader (a device's own topic).
        (b"[" * 60_000, "nested deeper than 32"),
        (b'{"device": {}, "device": {}}', "duplicate key"),
    ],
)
def test_parse_meta_refuses(payload: bytes, message: str) -> None:
    with pytest.raises(MetaError, match=message):
        parse_meta("dev1", payload)


def test_backoff_doubles_to_the_cap_with_jitter() -> None:
    assert backoff_delay(0, base=1.0, cap=60.0, jitter=0.0) == 0.5
    assert backoff_delay(0, base=1.0, cap=60.0, jitter=1.0) == 1.0
    assert backoff_delay(3, base=1.0, cap=60.0, jitter=0.5) == 6.0
    assert backoff_delay(100, base=1.0, cap=60.0, jitter=0.99) <= 60.0
    assert backoff_delay(100, base=1.0, cap=60.0, jitter=0.0) == 30.0


async def _run_until(hub: MqttHub, done: asyncio.Event) -> asyncio.Task[None]:
    task = asyncio.get_running_loop().create_task(hub.run())
    async with asyncio.timeout(15):
        waiter = asyncio.ensure_future(done.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
    return task


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_refused_credentials_are_fetched_again_once(
    real_account_service: RealAccount,
) -> None:
    good = await real_account_service.hub_credentials()
    wrong = replace(good, password="not-the-password")  # noqa: S106 - a wrong one on purpose
    fetched: list[str] = []

    async def provider() -> HubCredentials:
        fetched.append("fetch")
        return good

    recorder = Recorder()
    hub = MqttHub(
        wrong,
        recorder,
        credentials_provider=provider,
        client_id=hub_client_id(real_account_service.household_id),
    )
    with pytest.raises(HubNotConnectedError):
        await hub.publish_command("dev1", "relay", "on")
    task = await _run_until(hub, recorder.connected)
    try:
        assert fetched == ["fetch"]
        assert hub.connected
        assert hub.credentials.password == good.password
        assert hub.subscription_mode == "per_device"
    finally:
        await _stop(task)
    assert recorder.events == [("connection", "True"), ("connection", "False")]


async def test_the_hub_connects_only_with_its_bound_client_id(
    real_account_service: RealAccount,
) -> None:
    """The broker binds ``hub-<household>`` to that client id (issue 12.1): the id the account
    service names wins over the hub's own; any other id is refused like a wrong password."""
    named = await real_account_service.hub_credentials()
    assert named.client_id == hub_client_id(real_account_service.household_id)
    assert named.client_id == named.username

    async def provider() -> HubCredentials:
        return named

    recorder = Recorder()
    hub = MqttHub(named, recorder, credentials_provider=provider, client_id="ha-some-entry")
    task = await _run_until(hub, recorder.connected)
    try:
        assert hub.connected
    finally:
        await _stop(task)

    unnamed = replace(named, client_id=None)

    async def same() -> HubCredentials:
        return unnamed

    other_id = MqttHub(unnamed, Recorder(), credentials_provider=same, client_id="ha-some-entry")
    with pytest.raises(HubCredentialsRefusedError, match="refused the hub user"):
        async with asyncio.timeout(15):
            await other_id.run()


def _connack(code: int) -> ReasonCode:
    return ReasonCode(PacketTypes.CONNACK, identifier=code)


def test_only_a_connack_refusal_is_refused_credentials() -> None:
    """The exceptions aiomqtt raises: MqttConnectError for a CONNACK; MqttCodeError with
    paho's int error codes (4 = MQTT_ERR_NO_CONN) for a subscribe or publish on a connection
    that is gone, and with a ReasonCode for an unexpected disconnect (issue 13.5)."""
    for refused in (0x86, 0x87):
        assert refused_credentials(
            MqttConnectError(ReasonCode(PacketTypes.CONNACK, identifier=refused))
        )
    for gone in (
        aiomqtt.MqttCodeError(4, "Could not subscribe to topic"),
        aiomqtt.MqttCodeError(5, "Could not publish message"),
        aiomqtt.MqttCodeError(
            ReasonCode(PacketTypes.CONNACK, identifier=0x80), "Unexpected disconnection"
        ),
        MqttConnectError(ReasonCode(PacketTypes.CONNACK, identifier=0x88)),  # server unavailable
        aiomqtt.MqttError("Disconnected during message iteration"),
    ):
        assert not refused_credentials(gone), gone


async def test_a_killed_broker_is_reconnected_without_new_credentials(
    real_account_service_own_broker: RealAccount, mosquitto_process: MosquittoProcess
) -> None:
    """Mosquitto killed by its pid under a connected hub, then restarted on the same port: the
    real error of a subscribe on the dead connection is no credential refusal, and the hub
    reconnects with the credentials it has."""
    credentials = await real_account_service_own_broker.hub_credentials()
    fetched: list[str] = []

    async def provider() -> HubCredentials:
        fetched.append("fetch")
        return credentials

    recorder = Recorder()
    hub = MqttHub(
        credentials,
        recorder,
        credentials_provider=provider,
        client_id=hub_client_id(real_account_service_own_broker.household_id),
        backoff_base=0.05,
        backoff_cap=0.5,
    )
    task = await _run_until(hub, recorder.connected)
    try:
        client = hub._client
        assert client is not None
        recorder.connected.clear()
        os.kill(mosquitto_process.pid or 0, signal.SIGKILL)
        mosquitto_process.stop()  # reap it
        async with asyncio.timeout(15):
            await recorder.lost.wait()
        with pytest.raises(aiomqtt.MqttCodeError) as gone:
            await client.subscribe("iob/x/meta", qos=1)
        assert gone.value.rc == 4
        assert not refused_credentials(gone.value)
        mosquitto_process.start()
        async with asyncio.timeout(15):
            await recorder.connected.wait()
        assert hub.connected
        assert not task.done()
        assert fetched == []
    finally:
        await _stop(task)


async def test_refused_again_ends_the_hub(real_account_service: RealAccount) -> None:
    wrong = replace(
        await real_account_service.hub_credentials(),
        password="still-wrong",  # noqa: S106 - a wrong one on purpose
        client_id=None,
    )

    async def provider() -> HubCredentials:
        return wrong

    hub = MqttHub(
        wrong,
        Recorder(),
        credentials_provider=provider,
        client_id=hub_client_id(real_account_service.household_id),
    )
    with pytest.raises(HubCredentialsRefusedError, match="refused the hub user"):
        async with asyncio.timeout(15):
            await hub.run()


async def test_account_service_down_keeps_retrying(real_account_service: RealAccount) -> None:
    wrong = replace(
        await real_account_service.hub_credentials(),
        password="stale",  # noqa: S106 - a wrong one on purpose
        client_id=None,
    )
    attempts = asyncio.Event()
    calls: list[int] = []

    async def provider() -> HubCredentials:
        calls.append(1)
        if len(calls) >= 2:
            attempts.set()
        raise HubCredentialsUnavailableError("account service down")

    hub = MqttHub(
        wrong,
        Recorder(),
        credentials_provider=provider,
        client_id=hub_client_id(real_account_service.household_id),
        backoff_base=0.05,
    )
    task = await _run_until(hub, attempts)
    try:
        assert not task.done()  # still retrying, not ended
        assert len(calls) >= 2
    finally:
        await _stop(task)


@pytest.mark.parametrize(
    ("error", "key"),
    [
        (HubNotConnectedError("x"), "hub_not_connected"),
        (HubCommandError("x"), "command_failed"),
        (MetaError("x"), "hub_error"),
        (AuthenticationError(401, "expired", "x"), "auth_expired"),
        (ForbiddenError(403, "forbidden", "needs admin"), "account_forbidden"),
        (NotFoundError(404, "device_not_found", "x"), "account_not_found"),
        (InvalidRequestError(400, "invalid_request", "bad"), "account_refused"),
        (AccountConnectionError("down"), "account_unreachable"),
    ],
)
def test_errors_are_translated(error: Exception, key: str) -> None:
    translated = translate_error(error)
    assert isinstance(translated, HomeAssistantError)
    assert translated.translation_domain == "iot_onboard"
    assert translated.translation_key == key


@pytest.mark.parametrize(("client_type", "errors_logged"), [(_Client, 0), (aiomqtt.Client, 1)])
async def test_a_write_wait_for_a_socket_closed_meanwhile_is_dropped(
    client_type: type[aiomqtt.Client], errors_logged: int
) -> None:
    """paho asks to wait for a writable socket with every packet it queues; when the broker
    closed the connection before the loop got to it (it drops the hub as its household is
    deleted elsewhere, while the hub subscribes), the hub's client registers nothing and the
    loop logs nothing; aiomqtt 2.5.1's own client logs EBADF with a traceback (why the hub has
    its own). An open socket is still waited for."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    closed, _peer = socket.socketpair()
    writable, _other = socket.socketpair()
    try:
        client = client_type("127.0.0.1", 1883)
        client._on_socket_register_write(client._client, None, closed)
        closed.close()
        client._on_socket_register_write(client._client, None, writable)
        await asyncio.sleep(0.05)
        assert len(errors) == errors_logged, errors
        assert all(isinstance(error.get("exception"), OSError) for error in errors), errors
        assert loop.remove_writer(writable.fileno()) is True
    finally:
        loop.set_exception_handler(previous)
        for sock in (_peer, writable, _other):
            sock.close()
