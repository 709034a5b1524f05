"""The broker's questions answered from the database (RabbitMQ's ``rabbitmq_auth_backend_http``).

With a broker that asks the service who may connect and which topics they touch, the database
is the one source of truth and a claim needs no broker write: the device's first CONNECT after
the claim commits is answered from the new row. RabbitMQ's MQTT plugin asks four questions, as
form-encoded POSTs (``auth_http.http_method = post``), and reads a plain ``allow`` or ``deny``:

* ``user``: ``username``, ``password``, ``client_id``. The password is the one the service
  derives (:func:`~cloud_relay.tokens.mqtt_password`) at the row's credential version, and the
  client id must equal the username (docs/broker.md "Client id binding").
* ``vhost``: only ``/``.
* ``resource``: the ``amq.topic`` exchange (read, write) and the client's own subscription
  queues ``mqtt-subscription-<client id>qos0|1`` (configure, read, write).
* ``topic``: ``routing_key`` is the MQTT topic with ``/`` turned into ``.`` and ``+`` into
  ``*`` (a subscription's filter, ``read``; a publish's topic, ``write``). RabbitMQ checks a
  subscription's filter once and never the messages it then delivers, so every filter here must
  be one whose every match the client may receive: a hub or tool subscribes device by device,
  and a tool's filter must name a subtree other than ``cmd`` and ``diag``, which it may not
  receive (Mosquitto's per-message checks let a tool subscribe to ``iob/#``).

Ids containing ``.`` are refused: RabbitMQ 3.10 does not escape it, so ``iob/a.b/x`` and
``iob/a/b/x`` map to the same routing key and the topic would be ambiguous.

The answers come from a small cache (a few seconds, invalidated by :meth:`invalidate` on
release and rotation) so a reconnect storm costs few queries. The endpoints live on their own
app, meant for a loopback listener, under a secret path segment: only the broker may ask.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from cloud_relay.broker.model import HUB_USERNAME_PREFIX, TOOL_USERNAME_PREFIX
from cloud_relay.broker_sync import hub_access
from cloud_relay.storage import Connection, Storage
from cloud_relay.tokens import mqtt_password

#: Seconds an answer about one username is reused; release and rotation invalidate at once.
CACHE_SECONDS: Final = 5.0
#: Bound on cached usernames (a flood of unknown names must not grow memory).
CACHE_SIZE: Final = 10_000
TOPIC_ROOT: Final = "iob"
EXCHANGE: Final = "amq.topic"
VHOST: Final = "/"
#: Subtrees a tool credential never receives (it receives neither commands nor diagnostics).
TOOL_HIDDEN: Final = frozenset({"cmd", "diag"})
FACTORY_RESET: Final = "_factory_reset"
_WILDCARDS: Final = frozenset({"*", "#"})
#: The MQTT plugin's subscription queues: ``<prefix><client id>qos0`` and ``...qos1``.
QUEUE_PREFIX: Final = "mqtt-subscription-"


@dataclass(frozen=True, slots=True)
class Subject:
    """What one MQTT username is, per the database."""

    password: str
    #: The device's own id, for a device; None for a hub or tool.
    device: str | None = None
    #: Device id → control, for a hub or tool (what the household reaches).
    access: Mapping[str, bool] = field(default_factory=dict)
    tool: bool = False
    #: A tool's own control flag (a hub's control is per device, in ``access``).
    control: bool = False


class BrokerAuthority:
    """Answers the broker's questions from the database, through a short-lived cache."""

    def __init__(
        self,
        storage: Storage,
        secret_key: bytes,
        *,
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Answer from ``storage``; passwords are derived from ``secret_key``."""
        self._storage = storage
        self._secret_key = secret_key
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, Subject | None]] = {}

    def invalidate(self, username: str | None = None) -> None:
        """Forget one username (release, rotation, access change), or every one."""
        if username is None:
            self._cache.clear()
        else:
            self._cache.pop(username, None)

    async def subject(self, username: str) -> Subject | None:
        """The database's view of ``username``, or None when it may not connect."""
        now = self._clock()
        cached = self._cache.get(username)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = await self._load(username)
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[username] = (now + self._cache_seconds, found)
        return found

    async def _load(self, username: str) -> Subject | None:
        if not username or "." in username:
            return None
        async with self._storage.read() as conn:
            if username.startswith(HUB_USERNAME_PREFIX):
                return await self._hub(conn, username.removeprefix(HUB_USERNAME_PREFIX))
            if username.startswith(TOOL_USERNAME_PREFIX):
                return await self._tool(conn, username.removeprefix(TOOL_USERNAME_PREFIX))
            version = await conn.fetchval(
                "SELECT credential_version FROM devices "
                "WHERE device_id = $1 AND household_id IS NOT NULL",
                username,
            )
        if version is None:
            return None
        password = mqtt_password(self._secret_key, "device", username, version)
        return Subject(password, device=username)

    async def _hub(self, conn: Connection, household_id: str) -> Subject | None:
        version = await conn.fetchval(
            "SELECT credential_version FROM hubs WHERE household_id = $1", household_id
        )
        if version is None:
            return None
        password = mqtt_password(self._secret_key, "hub", household_id, version)
        return Subject(password, access=await hub_access(conn, household_id))

    async def _tool(self, conn: Connection, credential_id: str) -> Subject | None:
        row = await conn.fetchrow(
            "SELECT c.household_id, c.control FROM mqtt_credentials c "
            "JOIN hubs h ON h.household_id = c.household_id WHERE c.id = $1",
            credential_id,
        )
        if row is None:
            return None
        return Subject(
            mqtt_password(self._secret_key, "tool", credential_id, 1),
            access=await hub_access(conn, row["household_id"]),
            tool=True,
            control=bool(row["control"]),
        )

    async def user(self, username: str, password: str, client_id: str | None) -> bool:
        """May ``username`` connect with ``password`` under ``client_id``?"""
        if client_id is not None and client_id != username:
            return False
        found = await self.subject(username)
        return found is not None and hmac.compare_digest(found.password.encode(), password.encode())

    async def vhost(self, username: str, vhost: str) -> bool:
        """Only the default vhost, for a known username."""
        return vhost == VHOST and await self.subject(username) is not None

    async def resource(self, username: str, resource: str, name: str, permission: str) -> bool:
        """The topic exchange, and the client's own subscription queues."""
        if await self.subject(username) is None:
            return False
        if resource == "exchange":
            return name == EXCHANGE and permission in {"read", "write"}
        if resource == "queue":
            return name in {
                f"mqtt-subscription-{username}qos0",
                f"mqtt-subscription-{username}qos1",
            }
        return False

    async def topic(self, username: str, permission: str, routing_key: str) -> bool:
        """May ``username`` publish to (write) or subscribe with (read) ``routing_key``?"""
        found = await self.subject(username)
        levels = routing_key.split(".")
        if (
            found is None
            or permission not in {"read", "write"}
            or len(levels) < 2  # noqa: PLR2004 - the root and a device id
            or levels[0] != TOPIC_ROOT
            or levels[1] in _WILDCARDS
        ):
            return False
        device, rest = levels[1], levels[2:]
        if found.device is not None:
            return device == found.device
        if device not in found.access:
            return False
        if permission == "write":
            return _may_command(found, device, rest)
        # A tool's filter must not match commands or diagnostics: it names another subtree.
        return not found.tool or (bool(rest) and rest[0] not in _WILDCARDS | TOOL_HIDDEN)


def _may_command(hub: Subject, device: str, rest: list[str]) -> bool:
    """A hub (or control tool) publishes only commands, only where it has control."""
    if not rest or rest[0] != "cmd" or not hub.access[device]:
        return False
    return not hub.tool or (hub.control and FACTORY_RESET not in rest)


#: The app key of the authority behind the endpoints, and of the path secret.
AUTHORITY: Final = web.AppKey("broker_authority", BrokerAuthority)
PATH_SECRET: Final = web.AppKey("broker_auth_secret", str)


async def _fields(request: web.Request) -> Mapping[str, str]:
    """The question's fields: RabbitMQ sends them as a form (POST) or a query (GET)."""
    if not hmac.compare_digest(
        request.match_info["secret"].encode(), request.app[PATH_SECRET].encode()
    ):
        raise web.HTTPNotFound
    if request.method == "POST":
        form = await request.post()
        return {key: value for key, value in form.items() if isinstance(value, str)}
    return dict(request.query)


def _answer(allowed: bool) -> web.Response:  # noqa: FBT001 - a verdict is a boolean
    return web.Response(text="allow" if allowed else "deny")


async def _user(request: web.Request) -> web.Response:
    q = await _fields(request)
    authority = request.app[AUTHORITY]
    return _answer(
        await authority.user(q.get("username", ""), q.get("password", ""), q.get("client_id"))
    )


async def _vhost(request: web.Request) -> web.Response:
    q = await _fields(request)
    return _answer(await request.app[AUTHORITY].vhost(q.get("username", ""), q.get("vhost", "")))


async def _resource(request: web.Request) -> web.Response:
    q = await _fields(request)
    return _answer(
        await request.app[AUTHORITY].resource(
            q.get("username", ""),
            q.get("resource", ""),
            q.get("name", ""),
            q.get("permission", ""),
        )
    )


async def _topic(request: web.Request) -> web.Response:
    q = await _fields(request)
    allowed = q.get("name") == EXCHANGE and await request.app[AUTHORITY].topic(
        q.get("username", ""), q.get("permission", ""), q.get("routing_key", "")
    )
    return _answer(allowed)


def broker_auth_app(authority: BrokerAuthority, secret: str) -> web.Application:
    """The endpoints under ``/<secret>/``; serve them on a loopback listener of their own.

    RabbitMQ's ``auth_http.user_path`` is then ``http://127.0.0.1:<port>/<secret>/user`` (and
    ``vhost``, ``resource``, ``topic``). A wrong secret answers 404, like a path that does not
    exist, so the listener reveals nothing to anyone else on the host.
    """
    if len(secret) < 16:  # noqa: PLR2004
        raise ValueError("the broker auth path secret must have at least 16 characters")
    app = web.Application()
    app[AUTHORITY] = authority
    app[PATH_SECRET] = secret
    for name, handler in (
        ("user", _user),
        ("vhost", _vhost),
        ("resource", _resource),
        ("topic", _topic),
    ):
        app.router.add_route("*", f"/{{secret}}/{name}", handler)
    return app
