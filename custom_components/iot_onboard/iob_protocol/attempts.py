"""The steps of an onboarding attempt: one vocabulary for the device and Home Assistant.

The device's ``iob-device attempts`` (``device_firmware/attempts.py``) and the household
entry's diagnostics in Home Assistant (``custom_components/iot_onboard/attempts.py``) record
attempts in the same format; each records the steps it sees (docs/support.md lists them).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

#: The result of a step that went as planned.
OK: Final = "ok"


class Step(StrEnum):
    """One step of an onboarding attempt, in the order they usually come."""

    HANDSHAKE_STARTED = "handshake_started"
    HANDSHAKE_FINISHED = "handshake_finished"
    #: Result: the handshake's error code (wrong code, window closed, locked out, timeout).
    HANDSHAKE_FAILED = "handshake_failed"
    WIFI_SET = "wifi_set"
    CLAIM_SET = "claim_set"
    #: Result: the kind of commit (``claim``, ``resumed``, ``wifi_change``, ``network_only``).
    COMMIT_STARTED = "commit_started"
    #: Device only.
    WIFI_JOINED = "wifi_joined"
    #: Device only. Result: the diagnostic code (``WIFI_AUTH_FAILED``, ...).
    WIFI_FAILED = "wifi_failed"
    #: Device only: the account service answered its health check over TLS, the clocks agree.
    SERVICE_CHECKED = "service_checked"
    #: Device only. A claimed device's Wi-Fi change: the broker is reachable on the new network.
    BROKER_CHECKED = "broker_checked"
    #: Device only: the service is out of reach; Home Assistant relays the confirmation.
    #: Result: why the device could not reach it (``RELAY_UNREACHABLE``, ``NO_INTERNET``, ...).
    CLAIM_RELAYED = "claim_relayed"
    CLAIM_CONFIRMED = "claim_confirmed"
    #: The new network was made permanent (Home Assistant: a Wi-Fi change the device kept).
    COMMITTED = "committed"
    #: Result: the diagnostic code; the previous network is back.
    ROLLED_BACK = "rolled_back"
    #: Device only.
    MQTT_ONLINE = "mqtt_online"
    #: Home Assistant only: the setup dialog stopped waiting; result: its error key
    #: (``timeout``, ``cannot_connect``, ...). The device finishes or rolls back by itself.
    FAILED = "failed"
