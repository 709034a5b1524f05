"""The Mosquitto adapter beyond the contract: its dynsec layout, wire use, errors and recovery."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest

from cloud_relay.broker import (
    AdapterClosedError,
    BrokerAuthenticationError,
    BrokerPermissionError,
    BrokerState,
    BrokerTimeoutError,
    BrokerUnavailableError,
    DeviceCredential,
    HubCredential,
    HubState,
    InvalidIdentifierError,
    ReconcileReport,
)
from cloud_relay.broker import mosquitto as mosquitto_module
from cloud_relay.broker.mosquitto import CONTROL_TOPIC, MosquittoDynsecAdapter
from cloud_relay.broker.reconcile import ObservedClient, ObservedRole, Principal
from tests.plugins.mosquitto import dynsec_command
from tests.plugins.ports import free_port

from .harness import (
    MosquittoHarness,
    assert_connected,
    assert_disconnected,
    connect_code,
    next_message,
)


@pytest.fixture
async def adapter(mosquitto: MosquittoHarness) -> AsyncIterator[MosquittoDynsecAdapter]:
    async with mosquitto.adapter() as connected:
        yield connected


async def dynsec(
    harness: MosquittoHarness, *commands: dict[str, Any], check: bool = True
) -> list[dict[str, Any]]:
    return await dynsec_command(harness.broker, list(commands), check=check)


async def test_dynsec_layout_is_the_documented_one(
    mosquitto: MosquittoHarness, adapter: MosquittoDynsecAdapter
) -> None:
    """Pins the layout described in docs/broker.md and the module docstring."""
    await adapter.put_device(DeviceCredential("DEVA", "pw"))
    await adapter.put_hub(HubCredential("home", "pw"), {"DEVA": True, "DEVB": False})
    device_client, device_role, hub_client, hub_role, defaults = await dynsec(
        mosquitto,
        {"command": "getClient", "username": "DEVA"},
        {"command": "getRole", "rolename": "iob-device-DEVA"},
        {"command": "getClient", "username": "hub-home"},
        {"command": "getRole", "rolename": "iob-hub-home"},
        {"command": "getDefaultACLAccess"},
    )

    assert device_client["data"]["client"]["roles"] == [{"rolename": "iob-device-DEVA"}]
    assert device_client["data"]["client"]["groups"] == []
    assert _acls(device_role) == {
        ("publishClientSend", "iob/DEVA/#", True, 0),
        ("subscribePattern", "iob/DEVA/#", True, 0),
        ("publishClientReceive", "iob/DEVA/#", True, 0),
    }
    assert hub_client["data"]["client"]["roles"] == [{"rolename": "iob-hub-home"}]
    assert _acls(hub_role) == {
        ("subscribePattern", "iob/DEVA/#", True, 0),
        ("publishClientReceive", "iob/DEVA/#", True, 0),
        ("publishClientSend", "iob/DEVA/cmd/#", True, 0),
        ("subscribePattern", "iob/DEVB/#", True, 0),
        ("publishClientReceive", "iob/DEVB/#", True, 0),
        ("publishClientReceive", "iob/#", False, -1),
    }
    # The adapter relies on the plugin's defaults and never changes them.
    assert {a["acltype"]: a["allow"] for a in defaults["data"]["acls"]} == {
        "publishClientSend": False,
        "publishClientReceive": True,
        "subscribe": False,
        "unsubscribe": True,
    }


def _acls(answer: dict[str, Any]) -> set[tuple[str, str, bool, int]]:
    return {
        (acl["acltype"], acl["topic"], acl["allow"], acl["priority"])
        for acl in answer["data"]["role"]["acls"]
    }


async def test_a_client_made_behind_the_adapters_back_is_taken_over(
    mosquitto: MosquittoHarness, adapter: MosquittoDynsecAdapter
) -> None:
    """ "Client already exists" is an update: password, roles, ACLs, groups, disabled flag."""
    await dynsec(
        mosquitto,
        {"command": "createGroup", "groupname": "everything"},
        {
            "command": "createRole",
            "rolename": "iob-device-DEVA",
            "acls": [{"acltype": "subscribePattern", "topic": "#", "allow": True}],
        },
        {"command": "createClient", "username": "DEVA", "password": "stale", "roles": []},
        {"command": "addGroupClient", "groupname": "everything", "username": "DEVA"},
        {"command": "disableClient", "username": "DEVA"},
    )

    await adapter.put_device(DeviceCredential("DEVA", "fresh"))

    client, role = await dynsec(
        mosquitto,
        {"command": "getClient", "username": "DEVA"},
        {"command": "getRole", "rolename": "iob-device-DEVA"},
    )
    assert client["data"]["client"]["roles"] == [{"rolename": "iob-device-DEVA"}]
    assert client["data"]["client"]["groups"] == []
    assert "disabled" not in client["data"]["client"]
    assert ("subscribePattern", "#", True, 0) not in _acls(role)
    assert await connect_code(mosquitto, "DEVA", "fresh") == 0
    assert await connect_code(mosquitto, "DEVA", "stale") != 0


async def test_a_stale_read_is_read_again(
    mosquitto: MosquittoHarness,
    adapter: MosquittoDynsecAdapter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another writer created the client between our read and our write."""
    await adapter.put_device(DeviceCredential("DEVA", "first"))
    real_read = adapter._read
    reads: list[str] = []

    async def stale_then_real(
        principal: Principal,
    ) -> tuple[ObservedClient | None, ObservedRole | None]:
        reads.append(principal.username)
        if len(reads) == 1:
            return None, None  # as if read before the other writer's createClient
        return await real_read(principal)

    monkeypatch.setattr(adapter, "_read", stale_then_real)
    await adapter.put_device(DeviceCredential("DEVA", "second"))

    assert reads == ["DEVA", "DEVA"]  # "already exists" → read again → update
    assert await connect_code(mosquitto, "DEVA", "second") == 0


async def test_each_call_sends_its_commands_in_one_publish(
    adapter: MosquittoDynsecAdapter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    requests: list[list[str]] = []
    original = aiomqtt.Client.publish

    async def spy(self: aiomqtt.Client, topic: str, payload: Any = None, **kwargs: Any) -> None:
        if topic == CONTROL_TOPIC:
            requests.append([c["command"] for c in json.loads(payload)["commands"]])
        await original(self, topic, payload, **kwargs)

    monkeypatch.setattr(aiomqtt.Client, "publish", spy)
    await adapter.put_device(DeviceCredential("DEVA", "pw"))
    await adapter.remove_device("DEVA")
    assert requests == [
        ["getClient", "getRole"],
        ["createRole", "createClient"],
        ["deleteClient", "deleteRole"],
    ]


async def test_a_partly_existing_device_is_converged(
    mosquitto: MosquittoHarness, adapter: MosquittoDynsecAdapter
) -> None:
    """A role left behind with other ACLs is fixed and the missing client made."""
    await dynsec(
        mosquitto,
        {
            "command": "createRole",
            "rolename": "iob-device-DEVP",
            "acls": [{"acltype": "subscribePattern", "topic": "#", "allow": True}],
        },
    )
    await adapter.put_device(DeviceCredential("DEVP", "pw"))
    client, role = await dynsec(
        mosquitto,
        {"command": "getClient", "username": "DEVP"},
        {"command": "getRole", "rolename": "iob-device-DEVP"},
    )
    assert client["data"]["client"]["roles"] == [{"rolename": "iob-device-DEVP"}]
    assert _acls(role) == {
        ("publishClientSend", "iob/DEVP/#", True, 0),
        ("subscribePattern", "iob/DEVP/#", True, 0),
        ("publishClientReceive", "iob/DEVP/#", True, 0),
    }
    assert await connect_code(mosquitto, "DEVP", "pw") == 0


async def test_answers_to_other_admins_are_ignored(
    mosquitto: MosquittoHarness, adapter: MosquittoDynsecAdapter
) -> None:
    """The plugin broadcasts every answer; only our correlation tags count."""
    async with asyncio.TaskGroup() as group:
        ours = [
            group.create_task(adapter.put_device(DeviceCredential(f"DEV{i}", f"pw{i}")))
            for i in range(10)
        ]
        theirs = [
            group.create_task(
                dynsec(mosquitto, {"command": "getClient", "username": "absent"}, check=False)
            )
            for _ in range(10)
        ]
    assert all(task.result() is None for task in ours)
    assert all(task.result()[0]["error"] == "Client not found" for task in theirs)
    assert await connect_code(mosquitto, "DEV3", "pw3") == 0


async def test_reconcile_repairs_hand_edits_and_leaves_foreign_roles(
    mosquitto: MosquittoHarness, adapter: MosquittoDynsecAdapter
) -> None:
    dev = DeviceCredential("DEVA", "pw")
    household = HubCredential("home", "pw")
    await adapter.put_device(dev)
    await adapter.put_hub(household, {"DEVA": False})
    await dynsec(
        mosquitto,
        # Someone widened the hub by hand, without any kick (modifyRole kicks no one).
        {
            "command": "modifyRole",
            "rolename": "iob-hub-home",
            "acls": [{"acltype": "subscribePattern", "topic": "iob/#", "allow": True}],
        },
        # An orphan role left by a crash between createRole and createClient.
        {"command": "createRole", "rolename": "iob-device-GONE"},
        # Roles that are not ours.
        {"command": "createRole", "rolename": "operators"},
        {"command": "createRole", "rolename": "iob-custom"},
    )

    report = await adapter.reconcile(
        BrokerState(devices={"DEVA": dev}, hubs={"home": HubState(household, {"DEVA": False})})
    )

    assert report == ReconcileReport(updated=("hub-home",), removed=("GONE",))
    (roles,) = await dynsec(mosquitto, {"command": "listRoles"})
    assert set(roles["data"]["roles"]) == {
        "admin",
        "operators",
        "iob-custom",
        "iob-device-DEVA",
        "iob-hub-home",
    }


async def test_reconcile_works_in_chunks_and_checks_every_password(
    mosquitto: MosquittoHarness, adapter: MosquittoDynsecAdapter
) -> None:
    devices = {f"DEV{i:03d}": DeviceCredential(f"DEV{i:03d}", f"pw{i}") for i in range(250)}
    report = await adapter.reconcile(BrokerState(devices=devices))
    assert len(report.created) == 250
    # A rotated password (the database's credential version moved on) is set again.
    devices["DEV123"] = DeviceCredential("DEV123", "rotated")
    assert await adapter.reconcile(BrokerState(devices=devices)) == ReconcileReport(
        updated=("DEV123",)
    )
    assert await connect_code(mosquitto, "DEV123", "rotated") == 0


async def test_the_admin_username_cannot_be_a_device(
    mosquitto: MosquittoHarness, adapter: MosquittoDynsecAdapter
) -> None:
    admin = mosquitto.broker.admin_username
    with pytest.raises(InvalidIdentifierError, match="admin"):
        await adapter.put_device(DeviceCredential(admin, "pw"))
    with pytest.raises(InvalidIdentifierError, match="admin"):
        await adapter.remove_device(admin)
    with pytest.raises(InvalidIdentifierError, match="admin"):
        await adapter.reconcile(BrokerState(devices={admin: DeviceCredential(admin, "pw")}))
    assert await connect_code(mosquitto, admin, mosquitto.broker.admin_password) == 0


async def test_wrong_admin_password_is_an_authentication_error(
    mosquitto: MosquittoHarness,
) -> None:
    broker = mosquitto.broker
    adapter = MosquittoDynsecAdapter(broker.host, broker.port, broker.admin_username, "wrong")
    with pytest.raises(BrokerAuthenticationError, match="admin credentials"):
        await adapter.connect()
    await adapter.aclose()


async def test_a_user_that_is_not_the_dynsec_admin_is_a_permission_error(
    mosquitto: MosquittoHarness,
) -> None:
    await mosquitto.add_foreign_client("not-admin", "pw")
    broker = mosquitto.broker
    adapter = MosquittoDynsecAdapter(broker.host, broker.port, "not-admin", "pw")
    with pytest.raises(BrokerPermissionError, match="not the dynamic-security admin"):
        await adapter.put_device(DeviceCredential("DEVA", "pw"))
    await adapter.aclose()


async def test_a_broker_that_never_answers_times_out() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accept the TCP connection, never send a CONNACK

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    adapter = MosquittoDynsecAdapter("127.0.0.1", port, "iob-admin", "pw", timeout=0.5)
    try:
        with pytest.raises(BrokerTimeoutError, match=r"did not answer within 0\.5 s"):
            await adapter.put_device(DeviceCredential("DEVA", "pw"))
        assert accepted  # it did reach the port
    finally:
        await adapter.aclose()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_nothing_listening_names_the_address_and_the_cause() -> None:
    port = free_port()
    adapter = MosquittoDynsecAdapter("127.0.0.1", port, "iob-admin", "pw", timeout=0.5)
    with pytest.raises(BrokerUnavailableError, match=f"127.0.0.1:{port}") as caught:
        await adapter.remove_device("DEVA")
    assert "Connection refused" in str(caught.value)
    assert caught.value.__cause__ is not None
    await adapter.aclose()


async def test_a_stopped_broker_fails_calls_until_it_is_back(
    mosquitto: MosquittoHarness,
) -> None:
    broker = mosquitto.broker
    async with MosquittoDynsecAdapter(
        broker.host, broker.port, broker.admin_username, broker.admin_password, timeout=0.5
    ) as adapter:
        await adapter.put_device(DeviceCredential("DEVA", "pw"))
        await asyncio.to_thread(mosquitto.process.stop)
        with pytest.raises(BrokerUnavailableError):
            await adapter.put_device(DeviceCredential("DEVB", "pw"))
        await asyncio.to_thread(mosquitto.process.start)
        await adapter.put_device(DeviceCredential("DEVB", "pw"))
    assert await connect_code(mosquitto, "DEVB", "pw") == 0


async def test_calls_during_a_restart_wait_for_the_broker(
    mosquitto: MosquittoHarness, adapter: MosquittoDynsecAdapter
) -> None:
    """Calls racing a restart either finish before it or are sent again after it."""
    await adapter.put_device(DeviceCredential("DEV00", "pw"))
    async with asyncio.TaskGroup() as group:
        group.create_task(mosquitto.restart())
        for index in range(1, 6):
            group.create_task(adapter.put_device(DeviceCredential(f"DEV{index:02d}", "pw")))
            await asyncio.sleep(0.02)
    for index in range(6):
        assert await connect_code(mosquitto, f"DEV{index:02d}", "pw") == 0


async def test_a_closed_adapter_says_so(mosquitto: MosquittoHarness) -> None:
    adapter = mosquitto.adapter()
    await adapter.connect()
    await adapter.aclose()
    await adapter.aclose()  # idempotent
    with pytest.raises(AdapterClosedError):
        await adapter.put_device(DeviceCredential("DEVA", "pw"))


async def test_converging_never_takes_over_the_real_session(
    mosquitto: MosquittoHarness, adapter: MosquittoDynsecAdapter
) -> None:
    """Checking a password never logs in as the device (its verifier is compared)."""
    dev = DeviceCredential("DEVA", secrets.token_urlsafe(8))
    await adapter.put_device(dev)
    async with mosquitto.mqtt(dev.username, dev.password) as session:
        for _ in range(3):
            await adapter.put_device(dev)
        await assert_connected(session, "iob/DEVA/state/x")


def test_failures_never_carry_passwords() -> None:
    commands = [
        {"command": "createClient", "username": "DEVA", "password": "secret", "roles": []},
        {"command": "createRole", "rolename": "iob-device-DEVA", "acls": []},
    ]
    answers = [
        {"command": "createClient", "error": "Client already exists"},
        {"command": "createRole", "error": "Role already exists"},
    ]
    failures = mosquitto_module._failures(commands, answers)
    assert failures == [
        {"command": "createClient", "username": "DEVA", "error": "Client already exists"},
        {"command": "createRole", "rolename": "iob-device-DEVA", "error": "Role already exists"},
    ]
    assert "secret" not in repr(failures)


async def test_a_release_kicks_without_sending_the_will(
    mosquitto: MosquittoHarness, adapter: MosquittoDynsecAdapter
) -> None:
    """deleteClient disconnects without the will: the retained availability stays as it was."""
    released = DeviceCredential("DEVA", "pw-a")
    other = DeviceCredential("DEVB", "pw-b")
    await adapter.put_device(released)
    await adapter.put_device(other)
    will = aiomqtt.Will("iob/DEVA/availability", b"offline", qos=1, retain=True)
    async with (
        mosquitto.observer() as observer,
        mosquitto.mqtt(released.username, released.password, will=will) as session,
        mosquitto.mqtt(other.username, other.password) as marker,
    ):
        await observer.subscribe("iob/#", qos=1)
        await session.publish("iob/DEVA/availability", b"online", qos=1, retain=True)
        assert await next_message(observer) == ("iob/DEVA/availability", b"online")
        await adapter.remove_device("DEVA")
        await assert_disconnected(session)
        await marker.publish("iob/DEVB/state/x", b"marker", qos=1)
        assert await next_message(observer) == ("iob/DEVB/state/x", b"marker")


async def test_the_reconnect_hook_runs_when_the_broker_is_back(
    mosquitto: MosquittoHarness, adapter: MosquittoDynsecAdapter
) -> None:
    """Without any call being made: the adapter notices the loss and reconnects on its own."""
    back = asyncio.Event()
    calls: list[str] = []

    async def hook() -> None:
        calls.append("reconnected")
        back.set()

    adapter.set_reconnect_hook(hook)
    await mosquitto.restart()
    async with asyncio.timeout(30):
        await back.wait()
    assert calls == ["reconnected"]
    await adapter.put_device(DeviceCredential("DEVA", "pw"))  # the connection is usable
    assert calls == ["reconnected"]  # and the hook ran once
