"""The Mosquitto fixture: a real broker whose dynamic-security ACLs confine each device."""

from __future__ import annotations

import asyncio
import json
import secrets
import textwrap
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.reasoncodes import ReasonCode

from cloud_relay.broker import local
from tests.plugins import mosquitto
from tests.plugins.mosquitto import (
    MosquittoBroker,
    MosquittoNotInstalledError,
    MosquittoProcess,
    dynsec_command,
)

pytest_plugins = ["pytester", "tests.plugins.mosquitto"]

NOT_AUTHORIZED = 0x87  # MQTT v5 reason code (SUBACK, PUBACK, CONNACK)
V311_SUBACK_FAILURE = 0x80
WAIT = 2.0  # seconds; every wait below ends early on the expected message


async def add_device(broker: MosquittoBroker, device_id: str) -> str:
    """Create the device's role (its own subtree only) and client; return its password."""
    password = secrets.token_urlsafe(16)
    await dynsec_command(
        broker,
        [
            {
                "command": "createRole",
                "rolename": f"device-{device_id}",
                "acls": [
                    {"acltype": "publishClientSend", "topic": f"iob/{device_id}/#", "allow": True},
                    {"acltype": "subscribePattern", "topic": f"iob/{device_id}/#", "allow": True},
                ],
            },
            {
                "command": "createClient",
                "username": device_id,
                "password": password,
                "roles": [{"rolename": f"device-{device_id}"}],
            },
        ],
    )
    return password


def client(
    broker: MosquittoBroker,
    username: str,
    password: str,
    protocol: aiomqtt.ProtocolVersion = aiomqtt.ProtocolVersion.V5,
) -> aiomqtt.Client:
    return aiomqtt.Client(
        broker.host,
        broker.port,
        username=username,
        password=password,
        identifier=f"{username}-{secrets.token_hex(4)}",
        protocol=protocol,
        timeout=WAIT,
    )


def admin(broker: MosquittoBroker) -> aiomqtt.Client:
    """The dynsec admin may subscribe to and receive every topic (it cannot publish)."""
    return client(broker, broker.admin_username, broker.admin_password)


def record_puback_codes(mqtt_client: aiomqtt.Client) -> list[ReasonCode]:
    """aiomqtt drops PUBACK reason codes; catch them from the paho client underneath."""
    codes: list[ReasonCode] = []
    paho = mqtt_client._client
    original = paho.on_publish
    assert original is not None

    def on_publish(*args: Any) -> None:
        codes.append(args[3])
        original(*args)

    paho.on_publish = on_publish
    return codes


async def next_message(mqtt_client: aiomqtt.Client) -> tuple[str, bytes]:
    async with asyncio.timeout(WAIT):
        message = await anext(mqtt_client.messages)
    assert isinstance(message.payload, bytes)
    return str(message.topic), message.payload


@pytest.mark.parametrize(
    "protocol", [aiomqtt.ProtocolVersion.V5, aiomqtt.ProtocolVersion.V311], ids=["v5", "v311"]
)
async def test_device_acl_allows_own_subtree_and_denies_foreign(
    mosquitto_broker: MosquittoBroker, protocol: aiomqtt.ProtocolVersion
) -> None:
    broker = mosquitto_broker
    dev1_password = await add_device(broker, "dev1")
    dev2_password = await add_device(broker, "dev2")
    v5 = protocol is aiomqtt.ProtocolVersion.V5

    async with (
        admin(broker) as observer,
        client(broker, "dev1", dev1_password, protocol) as dev1,
        client(broker, "dev2", dev2_password, protocol) as dev2,
    ):
        await observer.subscribe("iob/#", qos=1)
        dev1_pubacks = record_puback_codes(dev1)

        # Subscribing: own subtree granted, the other device's refused in the SUBACK.
        (own,) = await dev1.subscribe("iob/dev1/#", qos=1)
        (foreign,) = await dev1.subscribe("iob/dev2/#", qos=1)
        assert isinstance(own, ReasonCode)
        assert isinstance(foreign, ReasonCode)
        assert own.value == 1  # granted QoS 1
        assert foreign.is_failure
        assert foreign.value == (NOT_AUTHORIZED if v5 else V311_SUBACK_FAILURE)

        # Own subtree: delivered to the allowed observer and back to the device itself.
        await dev1.publish("iob/dev1/state/x", b"own", qos=1)
        assert await next_message(observer) == ("iob/dev1/state/x", b"own")
        assert await next_message(dev1) == ("iob/dev1/state/x", b"own")

        # Foreign subtree: refused (v5 PUBACK "not authorized"; v3.1.1 acks and drops it). The
        # observer's next message is the device's following one, so the foreign one never came.
        await dev1.publish("iob/dev2/state/x", b"forged", qos=1)
        await dev1.publish("iob/dev1/state/after", b"after", qos=1)
        assert await next_message(observer) == ("iob/dev1/state/after", b"after")
        assert [code.value for code in dev1_pubacks] == (
            [0, NOT_AUTHORIZED, 0] if v5 else [0, 0, 0]
        )
        assert await next_message(dev1) == ("iob/dev1/state/after", b"after")

        # dev2's own messages reach the observer (positive control) but not dev1, whose next
        # message is its own marker published after dev2's publish was acknowledged.
        await dev2.publish("iob/dev2/state/x", b"dev2", qos=1)
        assert await next_message(observer) == ("iob/dev2/state/x", b"dev2")
        await dev1.publish("iob/dev1/state/marker", b"marker", qos=1)
        assert await next_message(dev1) == ("iob/dev1/state/marker", b"marker")


@pytest.mark.parametrize(
    "protocol", [aiomqtt.ProtocolVersion.V5, aiomqtt.ProtocolVersion.V311], ids=["v5", "v311"]
)
async def test_wrong_password_is_refused(
    mosquitto_broker: MosquittoBroker, protocol: aiomqtt.ProtocolVersion
) -> None:
    broker = mosquitto_broker
    password = await add_device(broker, "dev1")

    async with client(broker, "dev1", password, protocol):
        pass  # the right password connects

    for username, wrong in (("dev1", password + "x"), ("nobody-such", password), ("", "")):
        with pytest.raises(aiomqtt.MqttCodeError) as refusal:
            async with client(broker, username, wrong, protocol):
                pass
        # Mosquitto 2.0.11 refuses bad credentials with 0x87 "not authorized" (v5), not 0x86
        # "bad user name or password"; paho maps v3.1.1's CONNACK 5 to the same reason code.
        assert isinstance(refusal.value.rc, ReasonCode)
        assert refusal.value.rc.value == NOT_AUTHORIZED


async def test_dynsec_changes_and_retained_messages_survive_restart(
    mosquitto_process: MosquittoProcess,
) -> None:
    broker = mosquitto_process.broker
    password = await add_device(broker, "dev1")

    # Saved to the JSON file by the broker itself (as the `mosquitto` user when run as root).
    saved = json.loads(broker.dynsec_path.read_text())
    assert "dev1" in [c["username"] for c in saved["clients"]]
    assert "device-dev1" in [r["rolename"] for r in saved["roles"]]

    async with client(broker, "dev1", password) as dev1:
        await dev1.publish("iob/dev1/availability", b"online", qos=1, retain=True)

    restarted = mosquitto_process.restart()
    assert restarted.pid != broker.pid
    assert (restarted.host, restarted.port) == (broker.host, broker.port)
    assert "error" not in mosquitto_process.log_tail().lower()

    (answer,) = await dynsec_command(restarted, [{"command": "getClient", "username": "dev1"}])
    assert answer["data"]["client"]["roles"] == [{"rolename": "device-dev1"}]
    async with client(restarted, "dev1", password) as dev1, admin(restarted) as observer:
        await observer.subscribe("iob/+/availability", qos=1)
        assert await next_message(observer) == ("iob/dev1/availability", b"online")
        await dev1.subscribe("iob/dev1/#", qos=1)
        assert await next_message(dev1) == ("iob/dev1/availability", b"online")


async def test_dynsec_command_reports_failures(mosquitto_broker: MosquittoBroker) -> None:
    responses = await dynsec_command(
        mosquitto_broker,
        [{"command": "getClient", "username": "absent"}, {"command": "listClients"}],
        check=False,
    )
    assert responses[0] == {"command": "getClient", "error": "Client not found"}
    assert mosquitto_broker.admin_username in responses[1]["data"]["clients"]
    with pytest.raises(mosquitto.DynsecError, match="Client not found"):
        await dynsec_command(mosquitto_broker, [{"command": "getClient", "username": "absent"}])


async def test_session_broker_is_shared(
    mosquitto_broker_session: MosquittoBroker, mosquitto_session_process: MosquittoProcess
) -> None:
    assert mosquitto_session_process.broker == mosquitto_broker_session
    password = await add_device(mosquitto_broker_session, f"dev-{secrets.token_hex(4)}")
    assert password


def test_missing_mosquitto_names_scripts_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "_which", lambda _name, _fallbacks: None)
    monkeypatch.setattr(local, "_PLUGIN_GLOBS", ("/nonexistent/mosquitto_dynsec.so",))
    with pytest.raises(MosquittoNotInstalledError, match="scripts/setup"):
        MosquittoProcess().start()


def _is_running(pid: int) -> bool:
    try:
        return b"mosquitto" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False


def test_fixtures_stop_the_broker_and_fail_without_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run the fixtures in an inner pytest session; afterwards no broker is left running."""
    pids = pytester.path / "pids.txt"
    pytester.makepyfile(
        test_inner=textwrap.dedent(
            f"""
            def test_function(mosquitto_broker, mosquitto_process):
                assert mosquitto_process.running
                with open({str(pids)!r}, "a") as f:
                    f.write(f"{{mosquitto_broker.pid}} {{mosquitto_broker.data_dir}}\\n")

            def test_session(mosquitto_broker_session):
                with open({str(pids)!r}, "a") as f:
                    f.write(f"{{mosquitto_broker_session.pid}} "
                            f"{{mosquitto_broker_session.data_dir}}\\n")
            """
        ),
        test_inner_missing=textwrap.dedent(
            """
            import pytest
            from cloud_relay.broker import local

            @pytest.fixture
            def iob_socket_allowed(monkeypatch):
                monkeypatch.setattr(local, "_which", lambda _name, _fallbacks: None)

            def test_without_mosquitto(mosquitto_broker):
                raise AssertionError("unreachable: the fixture must fail")
            """
        ),
    )
    # Only this plugin in the inner session: no Home Assistant plugin, and a faster start.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = pytester.runpytest_inprocess("-p", "tests.plugins.mosquitto", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)  # failed, not skipped, without mosquitto
    result.stdout.fnmatch_lines(["*Mosquitto could not be started*scripts/setup*"])

    started = [line.split() for line in pids.read_text().splitlines()]
    assert len(started) == 2
    for pid, data_dir in started:
        assert not _is_running(int(pid))
        assert not Path(data_dir).exists()
