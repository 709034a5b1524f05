"""What the broker should hold, and the dynamic-security commands that get it there.

Pure functions, no I/O: the Mosquitto adapter reads the broker (``getClient``/``getRole`` for
one client, ``listClients``/``listRoles`` for a reconcile) and hands the observations here;
what comes back is the list of commands to send and what they change. Keeping the diff here
lets it be tested without a broker and keeps ``put_*`` and ``reconcile`` from drifting apart:
both converge a client through :func:`plan_principal`.

Every IoT Onboard client holds exactly one role of its own (``iob-device-<id>`` or
``iob-hub-<household>``), no groups, is enabled, and is bound to the MQTT client id equal to its
username (dynsec's ``clientid``: the broker refuses the credential with any other client id, so
nobody can connect under another device's id and take its session over). Commands that make
Mosquitto kick a live session (``modifyClient``) are only planned when something actually
differs, so converging a client that is already right never disconnects it.

Passwords: dynamic security never reports one, and a client bound to its client id cannot be
probed by logging in (a login with the right id would take the real session over, one with any
other id is refused whatever the password). So every client carries, in its
``textdescription``, a verifier of the password this module set (:func:`password_verifier`: a
SHA-256 over the username and the password, which is a random 256-bit token); a client whose
verifier is missing or differs gets the password set again. A password changed behind the
account service's back (``mosquitto_ctrl dynsec setClientPassword``) leaves the verifier stale
and is not noticed; delete such a client and reconcile recreates it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, Final

from .errors import BrokerProtocolError, InvalidCredentialError, InvalidIdentifierError
from .model import (
    BrokerState,
    DeviceCredential,
    HubCredential,
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

TOPIC_ROOT: Final = "iob"
DEVICE_ROLE_PREFIX: Final = "iob-device-"
HUB_ROLE_PREFIX: Final = "iob-hub-"
#: Below every allow: a hub receives nothing under ``iob/`` that its role does not list, even
#: on a subscription made while a since-revoked share was still in place.
FALLBACK_PRIORITY: Final = -1
#: Prefix of the password verifier in an IoT Onboard client's ``textdescription``.
VERIFIER_PREFIX: Final = "iob-password-sha256:"


class AclType(StrEnum):
    """The dynamic-security ACL types this layout uses."""

    PUBLISH_SEND = "publishClientSend"
    PUBLISH_RECEIVE = "publishClientReceive"
    SUBSCRIBE_PATTERN = "subscribePattern"


@dataclass(frozen=True, slots=True, order=True)
class Acl:
    """One ACL entry of a role, as dynamic security stores it."""

    acltype: str
    topic: str
    allow: bool = True
    priority: int = 0

    def to_json(self) -> dict[str, Any]:
        """The entry in a ``createRole``/``modifyRole`` command."""
        return {
            "acltype": self.acltype,
            "topic": self.topic,
            "allow": self.allow,
            "priority": self.priority,
        }


@dataclass(frozen=True, slots=True)
class Principal:
    """A client the broker should hold: username, password, client id, one role and its ACLs."""

    username: str
    password: str = field(repr=False)
    rolename: str
    acls: frozenset[Acl]
    textname: str
    #: Roles the client holds besides its own (a tool holds its household's hub role).
    extra_roles: tuple[str, ...] = ()
    #: The client's priority for its own role; None leaves dynsec's default.
    role_priority: int | None = None

    @property
    def role_names(self) -> frozenset[str]:
        """Every role the client holds."""
        return frozenset({self.rolename, *self.extra_roles})

    @property
    def ranked_roles(self) -> frozenset[tuple[str, int]]:
        """The roles held with an explicit priority."""
        if self.role_priority is None:
            return frozenset()
        return frozenset({(self.rolename, self.role_priority)})

    def roles_json(self) -> list[dict[str, Any]]:
        """The ``roles`` of a ``createClient``/``modifyClient`` command."""
        own: dict[str, Any] = {"rolename": self.rolename}
        if self.role_priority is not None:
            own["priority"] = self.role_priority
        return [own, *({"rolename": role} for role in self.extra_roles)]

    @property
    def client_id(self) -> str:
        """The only MQTT client id the broker accepts for this client: its username."""
        return client_id_of(self.username)

    @property
    def verifier(self) -> str:
        """The ``textdescription`` recording which password was set."""
        return password_verifier(self.username, self.password)


@dataclass(frozen=True, slots=True)
class ObservedClient:
    """A client as the broker reported it (passwords are never reported)."""

    username: str
    roles: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    #: The roles the broker reported with an explicit priority (not its default, -1).
    ranked_roles: frozenset[tuple[str, int]] = frozenset()
    disabled: bool = False
    clientid: str | None = None
    textdescription: str | None = None


@dataclass(frozen=True, slots=True)
class ObservedRole:
    """A role as the broker reported it."""

    rolename: str
    acls: frozenset[Acl] = frozenset()


class Change(Enum):
    """What converging one client did."""

    NONE = "none"
    CREATED = "created"
    UPDATED = "updated"


@dataclass(frozen=True, slots=True)
class PrincipalPlan:
    """The commands that converge one client, in the order they must run."""

    commands: tuple[dict[str, Any], ...]
    change: Change


@dataclass(frozen=True, slots=True)
class ReconcilePlan:
    """The commands that make the broker's IoT Onboard clients exactly the desired ones."""

    commands: tuple[dict[str, Any], ...]
    report: ReconcileReport


# -- naming and layout ---------------------------------------------------------------------------


def device_rolename(device_id: str) -> str:
    """The role that confines a device to its own subtree."""
    return f"{DEVICE_ROLE_PREFIX}{device_id}"


def hub_rolename(household_id: str) -> str:
    """The role that lists what a household's hub may reach."""
    return f"{HUB_ROLE_PREFIX}{household_id}"


#: A tool credential's own role (the hub's role is its other one).
TOOL_ROLE_PREFIX: Final = "iob-tool-"


def tool_rolename(credential_id: str) -> str:
    """The role that narrows a tool credential's hub access (read-only, no factory reset)."""
    return f"{TOOL_ROLE_PREFIX}{credential_id}"


def device_subtree(device_id: str) -> str:
    """Every topic of one device."""
    return f"{TOPIC_ROOT}/{device_id}/#"


def device_acls(device_id: str) -> frozenset[Acl]:
    """Publish, subscribe and receive in the device's own subtree, nothing else.

    Publishing covers the device's retained will on ``iob/<id>/availability``: Mosquitto checks
    a will against ``publishClientSend`` when it sends it.
    """
    subtree = device_subtree(device_id)
    return frozenset(
        {
            Acl(AclType.PUBLISH_SEND, subtree),
            Acl(AclType.SUBSCRIBE_PATTERN, subtree),
            Acl(AclType.PUBLISH_RECEIVE, subtree),
        }
    )


def hub_device_acls(device_id: str, *, control: bool) -> frozenset[Acl]:
    """A hub's entries for one device: subscribe and receive; commands with control."""
    subtree = device_subtree(device_id)
    acls = {Acl(AclType.SUBSCRIBE_PATTERN, subtree), Acl(AclType.PUBLISH_RECEIVE, subtree)}
    if control:
        acls.add(Acl(AclType.PUBLISH_SEND, f"{TOPIC_ROOT}/{device_id}/cmd/#"))
    return frozenset(acls)


def hub_acls(access: Mapping[str, bool]) -> frozenset[Acl]:
    """Subscribe and receive every listed device; publish commands where control is granted."""
    acls = {
        Acl(AclType.PUBLISH_RECEIVE, f"{TOPIC_ROOT}/#", allow=False, priority=FALLBACK_PRIORITY)
    }
    for device_id, control in access.items():
        acls |= hub_device_acls(device_id, control=control)
    return frozenset(acls)


def tool_acls(*, control: bool) -> frozenset[Acl]:
    """What a tool's own role adds to, and takes from, its household's hub role.

    Adds: subscribing to ``iob/#`` (dynsec matches a wildcard subscription only against an
    identical pattern, and a tool cannot list the household's devices); what it then receives
    is still decided per message by the hub role's receive ACLs, whose fallback denies every
    device the household does not reach. Takes: commands and diagnostics are not delivered to
    it; read-only publishes nothing; control may command but never factory-reset a device.
    """
    root = f"{TOPIC_ROOT}/#"
    acls = {
        Acl(AclType.SUBSCRIBE_PATTERN, root),
        Acl(AclType.PUBLISH_RECEIVE, f"{TOPIC_ROOT}/+/cmd/#", allow=False),
        Acl(AclType.PUBLISH_RECEIVE, f"{TOPIC_ROOT}/+/diag/#", allow=False),
    }
    if control:
        acls.add(Acl(AclType.PUBLISH_SEND, f"{TOPIC_ROOT}/+/cmd/_factory_reset", allow=False))
    else:
        acls.add(Acl(AclType.PUBLISH_SEND, "#", allow=False))
    return frozenset(acls)


def password_verifier(username: str, password: str) -> str:
    """A verifier of ``password`` for ``username``, kept in the client's ``textdescription``.

    The passwords are random 256-bit tokens (HMAC outputs), so a plain SHA-256 reveals nothing
    a guess could use; the username keeps equal passwords of two clients from looking equal.
    """
    digest = hashlib.sha256(f"iob-mqtt-password\0{username}\0{password}".encode()).hexdigest()
    return f"{VERIFIER_PREFIX}{digest}"


def _check_password(password: object, username: str) -> str:
    if not isinstance(password, str) or not password:
        raise InvalidCredentialError(
            f"the password for {username!r} must be a non-empty string (the broker refuses empty "
            "passwords)"
        )
    return password


def device_principal(credential: DeviceCredential) -> Principal:
    """The client and role for a device credential (validates the id and password)."""
    device_id = validate_device_id(credential.device_id)
    username = device_username(device_id)
    return Principal(
        username=username,
        password=_check_password(credential.password, username),
        rolename=device_rolename(device_id),
        acls=device_acls(device_id),
        textname="IoT Onboard device",
    )


def hub_principal(credential: HubCredential, access: Mapping[str, bool]) -> Principal:
    """The client and role for a household hub (validates every id and the password)."""
    household_id = validate_household_id(credential.household_id)
    checked: dict[str, bool] = {}
    for device_id, control in access.items():
        if not isinstance(control, bool):
            raise InvalidIdentifierError(
                f"access for device {device_id!r} must be True (control) or False (view only), "
                f"not {control!r}"
            )
        checked[validate_device_id(device_id)] = control
    username = hub_username(household_id)
    return Principal(
        username=username,
        password=_check_password(credential.password, username),
        rolename=hub_rolename(household_id),
        acls=hub_acls(checked),
        textname=f"IoT Onboard hub of household {household_id}",
    )


#: A tool's own role is checked before the hub role it also holds (dynsec checks a client's
#: roles from the highest priority down; a role given without one has -1), so its denials
#: narrow what the hub role allows.
TOOL_ROLE_PRIORITY: Final = 1


def tool_names(credential_id: str) -> tuple[str, str]:
    """A tool credential's username and own role name (validates the id)."""
    checked = validate_topic_id(credential_id, "credential id")
    return tool_username(checked), tool_rolename(checked)


def tool_principal(credential: ToolCredential) -> Principal:
    """The client and role for a household's tool credential (validates ids and password)."""
    username, rolename = tool_names(credential.credential_id)
    household_id = validate_household_id(credential.household_id)
    if not isinstance(credential.control, bool):
        raise InvalidIdentifierError(
            f"control of tool {username!r} must be True or False, not {credential.control!r}"
        )
    return Principal(
        username=username,
        password=_check_password(credential.password, username),
        rolename=rolename,
        acls=tool_acls(control=credential.control),
        textname=f"IoT Onboard tool of household {household_id}",
        extra_roles=(hub_rolename(household_id),),
        role_priority=TOOL_ROLE_PRIORITY,
    )


def desired_principals(state: BrokerState) -> dict[str, Principal]:
    """Every client ``state`` asks for, by username (validates everything first).

    Raises:
        InvalidIdentifierError: an id is unusable, a key does not match its credential, or two
            entries would share a username.
    """
    principals: dict[str, Principal] = {}
    for key, device in state.devices.items():
        if key != device.device_id:
            raise InvalidIdentifierError(
                f"BrokerState.devices key {key!r} differs from its credential's device id "
                f"{device.device_id!r}"
            )
        _add_unique(principals, device_principal(device))
    for key, hub in state.hubs.items():
        if key != hub.credential.household_id:
            raise InvalidIdentifierError(
                f"BrokerState.hubs key {key!r} differs from its credential's household id "
                f"{hub.credential.household_id!r}"
            )
        _add_unique(principals, hub_principal(hub.credential, hub.access))
    for key, tool in state.tools.items():
        if key != tool.credential_id:
            raise InvalidIdentifierError(
                f"BrokerState.tools key {key!r} differs from its credential id "
                f"{tool.credential_id!r}"
            )
        if tool.household_id not in state.hubs:
            raise InvalidIdentifierError(
                f"tool credential {key!r} belongs to household {tool.household_id!r}, which "
                "has no hub in the desired state (a tool holds its hub's role)"
            )
        _add_unique(principals, tool_principal(tool))
    return principals


def _add_unique(principals: dict[str, Principal], principal: Principal) -> None:
    if principal.username in principals:
        raise InvalidIdentifierError(f"two entries of the desired state use {principal.username!r}")
    principals[principal.username] = principal


def owner_of_role(rolename: str) -> str | None:
    """The username an IoT Onboard role belongs to, or None for anyone else's role."""
    if rolename.startswith(DEVICE_ROLE_PREFIX) and len(rolename) > len(DEVICE_ROLE_PREFIX):
        return device_username(rolename.removeprefix(DEVICE_ROLE_PREFIX))
    if rolename.startswith(HUB_ROLE_PREFIX) and len(rolename) > len(HUB_ROLE_PREFIX):
        return hub_username(rolename.removeprefix(HUB_ROLE_PREFIX))
    if rolename.startswith(TOOL_ROLE_PREFIX) and len(rolename) > len(TOOL_ROLE_PREFIX):
        return tool_username(rolename.removeprefix(TOOL_ROLE_PREFIX))
    return None


def is_managed_client(client: ObservedClient, desired: AbstractSet[str]) -> bool:
    """Whether reconcile may change or delete ``client``.

    Desired usernames are managed; beyond them only a client holding its own IoT Onboard role
    (``iob-device-<username>``, or ``iob-hub-<h>`` for ``hub-<h>``) is, so the admin client and
    any client someone else created are never touched.
    """
    return client.username in desired or any(
        owner_of_role(role) == client.username for role in client.roles
    )


# -- parsing the broker's answers ------------------------------------------------------------


def parse_client(data: object) -> ObservedClient:
    """A client object from ``getClient``/``listClients`` (verbose)."""
    if not isinstance(data, dict) or not isinstance(data.get("username"), str):
        raise BrokerProtocolError(f"unexpected client in the broker's answer: {data!r}")
    return ObservedClient(
        username=data["username"],
        roles=frozenset(_names(data.get("roles", []), "rolename")),
        ranked_roles=_ranked(data.get("roles", [])),
        groups=frozenset(_names(data.get("groups", []), "groupname")),
        disabled=data.get("disabled") is True,
        clientid=_optional_str(data.get("clientid")),
        textdescription=_optional_str(data.get("textdescription")),
    )


def _ranked(entries: object) -> frozenset[tuple[str, int]]:
    """(role, priority) for every role entry with an explicit priority (-1 is the default)."""
    if not isinstance(entries, list):
        return frozenset()
    return frozenset(
        (entry["rolename"], entry["priority"])
        for entry in entries
        if isinstance(entry, dict)
        and isinstance(entry.get("rolename"), str)
        and type(entry.get("priority")) is int
        and entry["priority"] != -1
    )


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_role(data: object) -> ObservedRole:
    """A role object from ``getRole``/``listRoles`` (verbose)."""
    if not isinstance(data, dict) or not isinstance(data.get("rolename"), str):
        raise BrokerProtocolError(f"unexpected role in the broker's answer: {data!r}")
    acls: set[Acl] = set()
    for entry in data.get("acls", []):
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("acltype"), str)
            and isinstance(entry.get("topic"), str)
        ):
            raise BrokerProtocolError(f"unexpected ACL in role {data['rolename']!r}: {entry!r}")
        priority = entry.get("priority", 0)
        acls.add(
            Acl(
                acltype=entry["acltype"],
                topic=entry["topic"],
                allow=entry.get("allow") is True,
                priority=priority if isinstance(priority, int) else 0,
            )
        )
    return ObservedRole(rolename=data["rolename"], acls=frozenset(acls))


def _names(entries: object, key: str) -> Iterable[str]:
    if not isinstance(entries, list):
        raise BrokerProtocolError(f"expected a list of {key}s, got {entries!r}")
    for entry in entries:
        name = entry.get(key) if isinstance(entry, dict) else None
        if not isinstance(name, str):
            raise BrokerProtocolError(f"unexpected entry in a list of {key}s: {entry!r}")
        yield name


# -- planning ---------------------------------------------------------------------------------


def plan_principal(
    desired: Principal,
    client: ObservedClient | None,
    role: ObservedRole | None,
) -> PrincipalPlan:
    """Commands that make one client and its role exactly ``desired``.

    The password is taken as set when the client's verifier (``textdescription``) is the
    desired password's; a client without a verifier (made before client ids were bound, or by
    hand) gets it set again.
    """
    commands: list[dict[str, Any]] = []
    acls = [acl.to_json() for acl in sorted(desired.acls)]
    if role is None:
        commands.append(
            {
                "command": "createRole",
                "rolename": desired.rolename,
                "textname": desired.textname,
                "acls": acls,
            }
        )
    elif role.acls != desired.acls:
        # Replaces the whole ACL list; Mosquitto does not kick the role's clients for it.
        commands.append({"command": "modifyRole", "rolename": desired.rolename, "acls": acls})

    if client is None:
        commands.append(
            {
                "command": "createClient",
                "username": desired.username,
                "password": desired.password,
                "clientid": desired.client_id,
                "textname": desired.textname,
                "textdescription": desired.verifier,
                "roles": desired.roles_json(),
            }
        )
        return PrincipalPlan(tuple(commands), Change.CREATED)

    if client.disabled:
        commands.append({"command": "enableClient", "username": desired.username})
    password_matches = client.textdescription == desired.verifier
    if (
        client.roles != desired.role_names
        or client.ranked_roles != desired.ranked_roles
        or client.groups
        or client.clientid != desired.client_id
        or not password_matches
    ):
        # One modifyClient (and so one kick) for roles, groups, the client id binding and, if
        # needed, the password with its verifier.
        modify: dict[str, Any] = {
            "command": "modifyClient",
            "username": desired.username,
            "clientid": desired.client_id,
            "roles": desired.roles_json(),
            "groups": [],
        }
        if not password_matches:
            modify["password"] = desired.password
            modify["textdescription"] = desired.verifier
        commands.append(modify)
    return PrincipalPlan(tuple(commands), Change.UPDATED if commands else Change.NONE)


def plan_removal(username: str, rolename: str) -> tuple[dict[str, Any], ...]:
    """Delete a client (Mosquitto kicks its live sessions) and then its role."""
    return (
        {"command": "deleteClient", "username": username},
        {"command": "deleteRole", "rolename": rolename},
    )


def plan_reconcile(
    desired: Mapping[str, Principal],
    clients: Mapping[str, ObservedClient],
    roles: Mapping[str, ObservedRole],
    *,
    protected: AbstractSet[str] = frozenset(),
) -> ReconcilePlan:
    """Commands that make the broker's IoT Onboard clients and roles exactly ``desired``.

    Args:
        desired: what the database says, by username (see :func:`desired_principals`).
        clients: every client on the broker, by username.
        roles: every role on the broker, by name.
        protected: usernames never to touch (the adapter's own admin).

    Raises:
        InvalidIdentifierError: ``desired`` asks for a protected username.
    """
    clash = sorted(set(desired) & protected)
    if clash:
        raise InvalidIdentifierError(
            f"the desired state uses {clash[0]!r}, the broker adapter's own admin username; "
            "rename the device or household, or give the adapter another admin"
        )
    commands: list[dict[str, Any]] = []
    created: list[str] = []
    updated: list[str] = []
    # Tools last: their clients name their hub's role, which must exist by then.
    for username, principal in sorted(
        desired.items(), key=lambda item: (bool(item[1].extra_roles), item[0])
    ):
        plan = plan_principal(
            principal,
            clients.get(username),
            roles.get(principal.rolename),
        )
        commands.extend(plan.commands)
        if plan.change is Change.CREATED:
            created.append(username)
        elif plan.change is Change.UPDATED:
            updated.append(username)

    desired_roles = {principal.rolename for principal in desired.values()}
    removed: set[str] = set()
    for username, client in sorted(clients.items()):
        if username in protected or username in desired:
            continue
        if is_managed_client(client, desired.keys()):
            commands.append({"command": "deleteClient", "username": username})
            removed.add(username)
    for rolename in sorted(roles):
        owner = owner_of_role(rolename)
        if owner is None or rolename in desired_roles:
            continue
        commands.append({"command": "deleteRole", "rolename": rolename})
        removed.add(owner)
    return ReconcilePlan(
        tuple(commands),
        ReconcileReport(
            created=tuple(created), updated=tuple(updated), removed=tuple(sorted(removed))
        ),
    )
