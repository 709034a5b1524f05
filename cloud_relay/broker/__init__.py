"""Broker adapters: the account service's per-device and per-household MQTT credentials.

The Mosquitto adapter lives in :mod:`cloud_relay.broker.mosquitto`; ``docs/broker.md`` has the
ACL layout, reconcile semantics and the boundary a clustered broker's adapter would implement.
:mod:`cloud_relay.broker.local` runs a local Mosquitto with dynamic security (self-hosting on one
machine, the demo stack, the tests' broker fixtures); it is not imported here.
"""

from .adapter import BrokerAdapter
from .errors import (
    AdapterClosedError,
    BrokerAuthenticationError,
    BrokerCommandError,
    BrokerConflictError,
    BrokerError,
    BrokerPermissionError,
    BrokerProtocolError,
    BrokerTimeoutError,
    BrokerUnavailableError,
    InvalidCredentialError,
    InvalidIdentifierError,
)
from .model import (
    BrokerState,
    DeviceCredential,
    HubCredential,
    HubState,
    ReconcileReport,
    ToolCredential,
    client_id_of,
    device_username,
    hub_username,
    tool_username,
    validate_device_id,
    validate_household_id,
    validate_topic_id,
)

__all__ = [
    "AdapterClosedError",
    "BrokerAdapter",
    "BrokerAuthenticationError",
    "BrokerCommandError",
    "BrokerConflictError",
    "BrokerError",
    "BrokerPermissionError",
    "BrokerProtocolError",
    "BrokerState",
    "BrokerTimeoutError",
    "BrokerUnavailableError",
    "DeviceCredential",
    "HubCredential",
    "HubState",
    "InvalidCredentialError",
    "InvalidIdentifierError",
    "ReconcileReport",
    "ToolCredential",
    "client_id_of",
    "device_username",
    "hub_username",
    "tool_username",
    "validate_device_id",
    "validate_household_id",
    "validate_topic_id",
]
