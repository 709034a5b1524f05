"""What the account service wants the broker to hold: per-device and per-household clients."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Final

from .errors import InvalidIdentifierError

#: Longest device or household id accepted (ids are topic levels, usernames and role names).
MAX_ID_LENGTH: Final = 128
HUB_USERNAME_PREFIX: Final = "hub-"
#: Usernames of a household's credentials for other MQTT tools (Node-RED, Telegraf).
TOOL_USERNAME_PREFIX: Final = "tool-"
_RESERVED_PREFIXES: Final = (HUB_USERNAME_PREFIX, TOOL_USERNAME_PREFIX)
_TOPIC_SPECIAL: Final = frozenset("+#/")


def validate_topic_id(value: object, what: str = "id") -> str:
    """Return ``value`` if it can be one MQTT topic level, a username and part of a role name.

    ``+``, ``#`` and ``/`` would widen the ACLs built from the id to other devices' topics, and
    control characters and whitespace have no place in a username; refusing them here means a
    bad id never reaches the broker.

    Raises:
        InvalidIdentifierError: the id is not usable; the message says why.
    """
    if not isinstance(value, str):
        raise InvalidIdentifierError(f"{what} must be a string, not {type(value).__name__}")
    if not value:
        raise InvalidIdentifierError(f"{what} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidIdentifierError(f"{what} is longer than {MAX_ID_LENGTH} characters")
    bad = sorted(
        {
            char
            for char in value
            if char in _TOPIC_SPECIAL
            or char.isspace()
            or unicodedata.category(char) in {"Cc", "Cs", "Cn"}
        }
    )
    if bad:
        raise InvalidIdentifierError(
            f"{what} {value!r} contains {', '.join(repr(c) for c in bad)}: ids must not contain "
            "MQTT wildcards (+ #), the topic separator (/), whitespace or control characters"
        )
    return value


def validate_device_id(device_id: object) -> str:
    """A topic id that cannot be mistaken for a hub's username."""
    checked = validate_topic_id(device_id, "device id")
    if checked.startswith(_RESERVED_PREFIXES):
        raise InvalidIdentifierError(
            f"device id {checked!r} starts with {checked.split('-', 1)[0]!r}-, which is "
            "reserved for household hub and tool usernames"
        )
    return checked


def validate_household_id(household_id: object) -> str:
    """A topic id for a household (its hub's username is ``hub-<household_id>``)."""
    return validate_topic_id(household_id, "household id")


def device_username(device_id: str) -> str:
    """The MQTT username of a device: its id (it appears in the broker's logs as such)."""
    return device_id


def hub_username(household_id: str) -> str:
    """The MQTT username of a household's hub client (used by its Home Assistant)."""
    return f"{HUB_USERNAME_PREFIX}{household_id}"


def tool_username(credential_id: str) -> str:
    """The MQTT username of a household's credential for another MQTT tool."""
    return f"{TOOL_USERNAME_PREFIX}{credential_id}"


def client_id_of(username: str) -> str:
    """The only MQTT client id the broker accepts for an IoT Onboard username: the username.

    Binding each client to one client id keeps anyone from connecting under another device's
    (public) id and taking its session over; a device's client id is its device id, a hub's
    ``hub-<household id>``.
    """
    return username


class _BoundClient:
    """A client bound to the client id equal to its username (see :func:`client_id_of`)."""

    __slots__ = ()

    @property
    def username(self) -> str:
        """The MQTT username."""
        raise NotImplementedError

    @property
    def client_id(self) -> str:
        """The MQTT client id the broker binds this client to (its username)."""
        return client_id_of(self.username)


@dataclass(frozen=True, slots=True)
class DeviceCredential(_BoundClient):
    """A device's own MQTT client: it may touch only ``iob/<device_id>/#``."""

    device_id: str
    password: str = field(repr=False)

    @property
    def username(self) -> str:
        """The MQTT username (and client id): the device id."""
        return device_username(self.device_id)


@dataclass(frozen=True, slots=True)
class HubCredential(_BoundClient):
    """A household's hub client, subscribing to the devices it owns or that are shared with it."""

    household_id: str
    password: str = field(repr=False)

    @property
    def username(self) -> str:
        """The MQTT username (and client id): ``hub-<household id>``."""
        return hub_username(self.household_id)


@dataclass(frozen=True, slots=True)
class ToolCredential(_BoundClient):
    """A household's credential for another MQTT tool (Node-RED, Telegraf, ...).

    It reaches what the household's hub reaches (it holds the hub's role, so devices joining
    or leaving the household need no change to it), read-only unless ``control``; see
    docs/broker.md.
    """

    credential_id: str
    household_id: str
    control: bool
    password: str = field(repr=False)

    @property
    def username(self) -> str:
        """The MQTT username (and client id): ``tool-<credential id>``."""
        return tool_username(self.credential_id)


@dataclass(frozen=True, slots=True)
class HubState:
    """A hub client and what it may reach: device id → may it publish commands (control)."""

    credential: HubCredential
    access: dict[str, bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BrokerState:
    """The complete desired broker state, built from the database for ``broker reconcile``."""

    devices: dict[str, DeviceCredential] = field(default_factory=dict)
    hubs: dict[str, HubState] = field(default_factory=dict)
    #: Tool credentials by credential id; each one's household must be in ``hubs``.
    tools: dict[str, ToolCredential] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    """What a reconcile changed on the broker (each a username)."""

    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        """Whether the broker differed from the database."""
        return bool(self.created or self.updated or self.removed)
