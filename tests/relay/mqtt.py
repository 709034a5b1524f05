"""Looking at the real broker: can these credentials connect, does a client exist."""

from __future__ import annotations

from typing import Any

import aiomqtt
from paho.mqtt.reasoncodes import ReasonCode

from cloud_relay.broker.reconcile import hub_rolename
from tests.plugins.mosquitto import MosquittoBroker, dynsec_command


def mqtt_client(broker: MosquittoBroker, mqtt: dict[str, Any], *, timeout: int) -> aiomqtt.Client:
    """An MQTT v5 client for ``broker`` with the credentials of a service reply's ``mqtt``."""
    return aiomqtt.Client(
        broker.host,
        int(mqtt["port"]),
        username=mqtt["username"],
        password=mqtt["password"],
        identifier=mqtt["client_id"],
        protocol=aiomqtt.ProtocolVersion.V5,
        timeout=timeout,
    )


async def connect_code(broker: MosquittoBroker, mqtt: dict[str, Any]) -> int:
    """0 when the credentials connect, else the CONNACK reason code."""
    try:
        async with mqtt_client(broker, mqtt, timeout=5):
            return 0
    except aiomqtt.MqttCodeError as err:
        code = err.rc
    if not isinstance(code, ReasonCode):
        raise TypeError(f"unexpected CONNACK code {code!r}")
    return int(code.value)


async def client_exists(broker: MosquittoBroker, username: str) -> bool:
    """Whether the broker's dynamic security has a client ``username``."""
    (answer,) = await dynsec_command(
        broker, [{"command": "getClient", "username": username}], check=False
    )
    if "error" in answer:
        assert answer["error"] == "Client not found", answer
        return False
    return True


async def hub_topics(broker: MosquittoBroker, household_id: str) -> set[str]:
    """Topics in the hub role's ACLs (which devices the household's hub reaches)."""
    (answer,) = await dynsec_command(
        broker, [{"command": "getRole", "rolename": hub_rolename(household_id)}], check=False
    )
    if "error" in answer:
        return set()
    return {acl["topic"] for acl in answer["data"]["role"].get("acls", []) if acl.get("allow")}
