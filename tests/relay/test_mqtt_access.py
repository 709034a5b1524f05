"""``/v1/households/{id}/mqtt-credentials``: MQTT credentials for other tools (Node-RED,
Telegraf), scoped to the household's devices (both databases, the real broker)."""

from __future__ import annotations

import json
import logging
from typing import Any

import aiomqtt
import pytest

from cloud_relay.broker.mosquitto import MosquittoDynsecAdapter
from cloud_relay.config import RelayConfig
from cloud_relay.mqtt_access import MAX_PER_HOUSEHOLD
from tests.plugins.mosquitto import MosquittoBroker, dynsec_command

from .broker.harness import (
    CREDENTIALS_REFUSED,
    GRANTED_QOS1,
    NOT_AUTHORIZED,
    next_message,
    record_puback_codes,
)
from .broker.harness import subscribe_code as suback
from .conftest import AppFactory
from .failing_broker import FailingBroker
from .helpers import Api, FakeDevice, User
from .mqtt import client_exists, connect_code, mqtt_client
from .test_hub_kick import kicked


def path(household: str, credential_id: str | None = None) -> str:
    base = f"/v1/households/{household}/mqtt-credentials"
    return base if credential_id is None else f"{base}/{credential_id}"


async def post(
    api: Api, user: User, household: str, access: str, label: str, *, expect: int
) -> dict[str, Any]:
    body = {"label": label, "access": access}
    reply = await api.request("POST", path(household), json_body=body, token=user.token)
    assert reply.status == expect, reply.body
    return dict(reply.body)


async def mint(
    api: Api, user: User, household: str, access: str, *, label: str = "Node-RED"
) -> dict[str, Any]:
    return await post(api, user, household, access, label, expect=201)


async def household_with_device(api: Api) -> tuple[User, str, FakeDevice, dict[str, Any]]:
    owner, household = await api.owner_household()
    device = await api.device()
    owned = await api.claim(owner, household, device)
    return owner, household, device, owned["mqtt"]


def client(broker: MosquittoBroker, mqtt: dict[str, Any]) -> aiomqtt.Client:
    return mqtt_client(broker, mqtt, timeout=10)


async def test_read_credential_receives_its_devices_and_publishes_nothing(
    api: Api, broker: MosquittoBroker
) -> None:
    owner, home, device, device_mqtt = await household_with_device(api)
    _, _, stranger, stranger_mqtt = await household_with_device(api)
    reader = await mint(api, owner, home, "read")
    assert reader["access"] == "read"
    assert reader["mqtt"]["username"] == reader["username"] == f"tool-{reader['credential_id']}"
    assert reader["mqtt"]["client_id"] == reader["username"]
    async with client(broker, device_mqtt) as own, client(broker, stranger_mqtt) as other:
        # Retained before the tool subscribes: another household's must not be replayed.
        await other.publish(f"iob/{stranger.id}/state/t", b"theirs", qos=1, retain=True)
        await own.publish(f"iob/{device.id}/state/t", b"21.5", qos=1, retain=True)
        await own.subscribe(f"iob/{device.id}/cmd/#", qos=1)
        async with client(broker, reader["mqtt"]) as tool:
            pubacks = record_puback_codes(tool)
            assert await suback(tool, "iob/#") == GRANTED_QOS1
            assert await next_message(tool) == (f"iob/{device.id}/state/t", b"21.5")
            await tool.publish(f"iob/{device.id}/cmd/on", b"on", qos=1)
            await other.publish(f"iob/{stranger.id}/state/t", b"theirs-live", qos=1)
            await own.publish(f"iob/{device.id}/state/t", b"22", qos=1)
            assert await next_message(tool) == (f"iob/{device.id}/state/t", b"22")
            assert pubacks == [NOT_AUTHORIZED]
            # The refused command never reached the device: its next command is its own.
            await own.publish(f"iob/{device.id}/cmd/marker", b"m", qos=1)
            assert await next_message(own) == (f"iob/{device.id}/cmd/marker", b"m")


async def test_control_credential_commands_its_devices_only(
    api: Api, broker: MosquittoBroker
) -> None:
    owner, home, device, device_mqtt = await household_with_device(api)
    _, _, stranger, _ = await household_with_device(api)
    control = await mint(api, owner, home, "control", label="Telegraf")
    async with client(broker, device_mqtt) as own, client(broker, control["mqtt"]) as tool:
        await own.subscribe(f"iob/{device.id}/cmd/#", qos=1)
        pubacks = record_puback_codes(tool)
        await tool.publish(f"iob/{stranger.id}/cmd/on", b"on", qos=1)
        await tool.publish(f"iob/{device.id}/cmd/_factory_reset", b"factory_reset", qos=1)
        await tool.publish(f"iob/{device.id}/cmd/on", b"on", qos=1)
        assert await next_message(own) == (f"iob/{device.id}/cmd/on", b"on")
        assert pubacks == [NOT_AUTHORIZED, NOT_AUTHORIZED, 0]


async def test_scope_follows_devices_claimed_and_released_later(
    api: Api, broker: MosquittoBroker
) -> None:
    owner, home = await api.owner_household()
    reader = await mint(api, owner, home, "read")  # before the household has any device
    device = await api.device()
    owned = await api.claim(owner, home, device)
    async with client(broker, owned["mqtt"]) as own, client(broker, reader["mqtt"]) as tool:
        assert await suback(tool, "iob/#") == GRANTED_QOS1
        await own.publish(f"iob/{device.id}/state/t", b"1", qos=1)
        assert await next_message(tool) == (f"iob/{device.id}/state/t", b"1")
    await api.release(owner, home, device, expect=200)
    later = await api.device()
    later_owned = await api.claim(owner, home, later)
    async with client(broker, reader["mqtt"]) as tool:
        assert await suback(tool, "iob/#") == GRANTED_QOS1
        async with client(broker, later_owned["mqtt"]) as new:
            await new.publish(f"iob/{later.id}/state/t", b"2", qos=1)
            assert await next_message(tool) == (f"iob/{later.id}/state/t", b"2")


async def test_revoke_cuts_the_live_session_and_refuses_reconnects(
    api: Api, broker: MosquittoBroker
) -> None:
    owner, home = await api.owner_household()
    reader = await mint(api, owner, home, "read")
    kept = await mint(api, owner, home, "control", label="Kept")
    async with client(broker, reader["mqtt"]) as tool:
        await api.request(
            "DELETE", path(home, reader["credential_id"]), token=owner.token, expect=204
        )
        assert await kicked(tool)
    assert await connect_code(broker, reader["mqtt"]) in CREDENTIALS_REFUSED
    assert not await client_exists(broker, reader["username"])
    assert await connect_code(broker, kept["mqtt"]) == 0
    again = await api.request(
        "DELETE", path(home, reader["credential_id"]), token=owner.token, expect=404
    )
    assert again.body["error"]["code"] == "mqtt_credential_not_found"
    listed = await api.request("GET", path(home), token=owner.token, expect=200)
    assert [c["credential_id"] for c in listed.body["credentials"]] == [kept["credential_id"]]


async def test_list_shows_no_password_and_audit_records_both(api: Api) -> None:
    owner, home = await api.owner_household()
    minted = await mint(api, owner, home, "control", label="Node-RED kitchen")
    listed = await api.request("GET", path(home), token=owner.token, expect=200)
    (entry,) = listed.body["credentials"]
    assert entry == {
        key: minted[key]
        for key in ("credential_id", "household_id", "label", "access", "username", "created_at")
    }
    await api.request("DELETE", path(home, minted["credential_id"]), token=owner.token, expect=204)
    audit = await api.request("GET", f"/v1/households/{home}/audit", token=owner.token, expect=200)
    actions = [event["action"] for event in audit.body["events"]]
    assert actions[:2] == ["mqtt_credential.revoked", "mqtt_credential.created"]
    assert minted["mqtt"]["password"] not in json.dumps(audit.body)


@pytest.mark.parametrize("role", ["viewer", "member"])
async def test_below_admin_may_neither_mint_list_nor_revoke(api: Api, role: str) -> None:
    owner, home = await api.owner_household()
    minted = await mint(api, owner, home, "read")
    user = await api.join(owner, home, role)
    for access in ("read", "control"):
        refused = await api.request(
            "POST",
            path(home),
            json_body={"label": "mine", "access": access},
            token=user.token,
            expect=403,
        )
        assert "admin role or higher" in refused.body["error"]["message"]
    await api.request("GET", path(home), token=user.token, expect=403)
    await api.request("DELETE", path(home, minted["credential_id"]), token=user.token, expect=403)
    listed = await api.request("GET", path(home), token=owner.token, expect=200)
    assert len(listed.body["credentials"]) == 1


async def test_an_admin_may_and_a_stranger_learns_nothing(api: Api) -> None:
    owner, home = await api.owner_household()
    admin = await api.join(owner, home, "admin")
    minted = await mint(api, admin, home, "control")
    stranger, theirs = await api.owner_household()
    missing = await api.request("GET", path(home), token=stranger.token, expect=404)
    assert missing.body["error"]["code"] == "household_not_found"
    # Another household's admin cannot revoke it through their own household either.
    other = await api.request(
        "DELETE", path(theirs, minted["credential_id"]), token=stranger.token, expect=404
    )
    assert other.body["error"]["code"] == "mqtt_credential_not_found"
    await api.request("DELETE", path(home, minted["credential_id"]), token=owner.token, expect=204)


@pytest.mark.parametrize(
    "body",
    [
        {"label": "x", "access": "owner"},
        {"label": "", "access": "read"},
        {"label": "x" * 101, "access": "read"},
        {"label": "x", "access": "read", "password": "mine"},
        {"access": "read"},
    ],
)
async def test_malformed_requests_are_refused(api: Api, body: dict[str, Any]) -> None:
    owner, home = await api.owner_household()
    reply = await api.request("POST", path(home), json_body=body, token=owner.token, expect=400)
    assert reply.body["error"]["code"] == "invalid_request"


async def test_a_household_holds_a_bounded_number(api: Api) -> None:
    owner, home = await api.owner_household()
    for number in range(MAX_PER_HOUSEHOLD):
        await mint(api, owner, home, "read", label=f"tool {number}")
    refused = await post(api, owner, home, "read", "one more", expect=409)
    assert refused["error"]["code"] == "mqtt_credential_limit"
    assert "revoke one" in refused["error"]["message"]


async def test_the_password_is_never_logged(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    owner, home = await api.owner_household()
    minted = await mint(api, owner, home, "read")
    await api.request("DELETE", path(home, minted["credential_id"]), token=owner.token, expect=204)
    assert caplog.records
    assert not [r for r in caplog.records if minted["mqtt"]["password"] in r.getMessage()]


async def test_reconcile_restores_a_lost_tool_client(api: Api, broker: MosquittoBroker) -> None:
    owner, home = await api.owner_household()
    minted = await mint(api, owner, home, "read")
    await dynsec_command(broker, [{"command": "deleteClient", "username": minted["username"]}])
    assert await connect_code(broker, minted["mqtt"]) in CREDENTIALS_REFUSED
    report = await api.relay.reconcile()
    assert minted["username"] in report.created
    assert await connect_code(broker, minted["mqtt"]) == 0


async def test_a_failed_broker_call_leaves_nothing_behind(
    start_api: AppFactory,
    relay_config: RelayConfig,
    broker_adapter: MosquittoDynsecAdapter,
    broker: MosquittoBroker,
) -> None:
    """The client was made, then the call failed: the row, the audit event and the client go."""
    wrapper = FailingBroker(broker_adapter)
    api: Api = await start_api(relay_config, wrapper)
    owner, home = await api.owner_household()
    wrapper.fail = {"put_tool"}
    reply = await post(api, owner, home, "read", "Node-RED", expect=503)
    assert reply["error"]["code"] == "broker_unavailable"
    assert "put_tool" in wrapper.calls
    wrapper.fail = set()
    listed = await api.request("GET", path(home), token=owner.token, expect=200)
    assert listed.body["credentials"] == []
    (answer,) = await dynsec_command(broker, [{"command": "listClients", "verbose": True}])
    households = [client.get("textname", "") for client in answer["data"]["clients"]]
    assert f"IoT Onboard tool of household {home}" not in households
