"""MQTT clients with the credentials a device or a hub got from the account service."""

from __future__ import annotations

from typing import Any

import aiomqtt

from device_firmware.state import MqttCredentials


def device_mqtt(
    mqtt: MqttCredentials,
    *,
    password: str | None = None,
    identifier: str | None = None,
    timeout: float | None = None,
) -> aiomqtt.Client:
    """A client with the device's saved credentials (``password`` instead, if given); the
    broker binds a device's user to one client id, its device id (= its username)."""
    return aiomqtt.Client(
        mqtt.host,
        mqtt.port,
        username=mqtt.username,
        password=mqtt.password if password is None else password,
        identifier=mqtt.username if identifier is None else identifier,
        timeout=timeout,
    )


def hub_mqtt(hub: dict[str, Any]) -> aiomqtt.Client:
    """A client with a hub credential as the service hands it out (the broker binds the hub
    user to its ``client_id``)."""
    return aiomqtt.Client(
        hub["host"],
        hub["port"],
        username=hub["username"],
        password=hub["password"],
        identifier=hub["client_id"],
    )
