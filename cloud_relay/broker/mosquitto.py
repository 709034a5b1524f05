"""The broker adapter for Mosquitto's dynamic-security plugin.

The account service drives the plugin over MQTT: it publishes ``{"commands": [...]}`` to
``$CONTROL/dynamic-security/v1`` as the plugin's admin and reads the answers on
``.../response``. The plugin broadcasts every answer to every subscriber of that topic, so each
command carries a ``correlationData`` tag unique to this adapter and answers are matched by tag.

ACL layout (the plugin's default ACL access stays deny for ``publishClientSend`` and
``subscribe``; ``publishClientReceive`` keeps its default, allow):

* device ``<id>``: client username ``<id>`` holding only role ``iob-device-<id>``, which allows
  ``publishClientSend``, ``subscribePattern`` and ``publishClientReceive`` on ``iob/<id>/#``.
  The device's retained will on ``iob/<id>/availability`` is covered by the first: Mosquitto
  checks a will against ``publishClientSend`` when it sends it (not at CONNECT).
* household ``<h>``: client ``hub-<h>`` holding only role ``iob-hub-<h>``, which allows, per
  device in its access map, ``subscribePattern`` and ``publishClientReceive`` on
  ``iob/<dev>/#``, plus ``publishClientSend`` on ``iob/<dev>/cmd/#`` where control is granted
  (viewer shares are subscribe-only). A ``publishClientReceive`` deny on ``iob/#`` at priority
  -1 sits below the allows: Mosquitto does not drop existing subscriptions when a role changes,
  so without it a hub would keep receiving a device whose share was revoked.
* every IoT Onboard client is bound to the client id equal to its username (dynsec's
  ``clientid``): the broker refuses its credential under any other client id, and no credential
  may take a client id bound to another client, so nobody can take over another device's (or a
  hub's) session. Its ``textdescription`` is a verifier of its password (see
  :mod:`cloud_relay.broker.reconcile`).
* a household's tool credential ``tool-<id>`` (Node-RED, Telegraf): its own role
  ``iob-tool-<id>`` at client priority 1 and the household's hub role, so it reaches what the
  hub reaches (and follows it as devices come and go) minus what its own role denies.
* nothing else: IoT Onboard clients hold no groups and no other roles; every other client
  (the admin among them) is never touched.

Behaviour of Mosquitto (2.0.11 to 2.0.20) this relies on: ``deleteClient``,
``setClientPassword``, ``modifyClient`` and ``disableClient`` close every live session of the
username before answering, without sending its will; ``modifyRole`` disconnects nobody. So this
adapter sends the kicking commands only when something differs (or to kick, ``kick_hub``): an
existing client's password is checked against its verifier (dynamic security never reveals a
password, and a bound client cannot be probed by logging in without taking its session over),
and converging a client that is already right disconnects nothing, which is what
lets ``reconcile`` run against a live fleet.

Robustness: one persistent MQTT v5 connection, opened lazily (or by ``connect()``) and
reopened after the broker restarts; a request in flight when the connection breaks is sent again
on the next one (every command sequence here is safe to repeat). Every broker round trip (a
request, a connection) runs under ``asyncio.timeout(timeout)``. Calls may come
from many tasks at once; calls for the same username run one after another, and ``reconcile``
runs alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import secrets
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

import aiomqtt
from paho.mqtt.reasoncodes import ReasonCode

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
    InvalidIdentifierError,
)
from .model import (
    BrokerState,
    DeviceCredential,
    HubCredential,
    ReconcileReport,
    ToolCredential,
    device_username,
    hub_username,
    validate_device_id,
    validate_household_id,
)
from .reconcile import (
    TOOL_ROLE_PREFIX,
    ObservedClient,
    ObservedRole,
    Principal,
    desired_principals,
    device_principal,
    device_rolename,
    hub_device_acls,
    hub_principal,
    hub_rolename,
    owner_of_role,
    parse_client,
    parse_role,
    plan_principal,
    plan_reconcile,
    plan_removal,
    tool_names,
    tool_principal,
)

__all__ = ["CONTROL_TOPIC", "RESPONSE_TOPIC", "MosquittoDynsecAdapter"]

_LOGGER = logging.getLogger(__name__)

CONTROL_TOPIC: Final = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC: Final = f"{CONTROL_TOPIC}/response"
#: CONNACK codes for refused credentials: v5 0x86/0x87 (paho maps v3.1.1's 4 and 5 to them).
_CREDENTIALS_REFUSED: Final = frozenset({0x86, 0x87})
#: Answers meaning "already as wanted" for a delete.
_ABSENT: Final = frozenset({"Client not found", "Role not found"})
#: ``addRoleACL``'s answer for an entry (type and topic) the role has; a hub's per-device
#: entries are all allows, so an existing one is the one wanted.
_ACL_EXISTS: Final = frozenset({"ACL with this topic already exists"})
_ROLE_MISSING: Final = "Role not found"
#: Answers meaning the broker changed between our read and our write.
_STALE: Final = frozenset(
    {
        "Client already exists",
        "Role already exists",
        "Client not found",
        "Role not found",
        "Role does not exist",
    }
)
_ATTEMPTS: Final = 3
#: Calls for one username are serialised by one of these locks. Many, so that calls for
#: different usernames rarely share one: with 64, concurrent claims queued behind each other's
#: whole put (claim p99 on SQLite 1.77 s; 1.31 s with 1024). ``reconcile`` takes them all.
_LOCK_STRIPES: Final = 1024
_RECONCILE_CHUNK: Final = 100
_PENDING_CALLS_WARNING: Final = 1000
_RECONNECT_DELAY: Final = 0.05
_RECONNECT_DELAY_MAX: Final = 0.5
#: With a reconnect hook set, a lost connection is retried in the background this often (at
#: most) until the broker is back.
_RECOVERY_DELAY_MAX: Final = 5.0


class _LinkLostError(Exception):
    """The connection broke before the answer came (the request is sent again)."""


class _StaleReadError(Exception):
    """The broker changed between reading a client and writing it (read and plan again)."""


class _ConnectAttemptError(Exception):
    """One connection attempt failed in a way worth retrying (the cause is chained)."""


class _Link:
    """One MQTT connection, its response reader, and the requests waiting on it."""

    def __init__(self, client: aiomqtt.Client, stack: contextlib.AsyncExitStack) -> None:
        self._client = client
        self._stack = stack
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.cause: BaseException | None = None
        self._reader = asyncio.create_task(self._read(), name="iob-dynsec-response-reader")

    async def _read(self) -> None:
        try:
            async for message in self._client.messages:
                self._dispatch(message.payload)
        except aiomqtt.MqttError as err:
            self.cause = err
            _LOGGER.info("Lost the connection to the broker: %s", err)
        finally:
            if not self.lost.done():
                self.lost.set_result(None)

    def _dispatch(self, payload: object) -> None:
        if not isinstance(payload, bytes | str):
            return
        try:
            answer = json.loads(payload)
        except ValueError:
            _LOGGER.warning("Ignoring a non-JSON message on %s", RESPONSE_TOPIC)
            return
        responses = answer.get("responses") if isinstance(answer, dict) else None
        if not isinstance(responses, list):
            return
        for response in responses:
            tag = response.get("correlationData") if isinstance(response, dict) else None
            future = self._pending.get(tag) if isinstance(tag, str) else None
            if future is not None and not future.done():
                future.set_result(response)

    async def exchange(self, payload: str, tags: Sequence[str]) -> list[dict[str, Any]]:
        """Publish one request and wait for the answer to each of its tagged commands."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in tags]
        self._pending.update(zip(tags, futures, strict=True))
        try:
            # QoS 0: the answer is the acknowledgement, and a QoS 1 publish on a connection
            # that died would wait for a PUBACK that never comes.
            await self._until_lost(
                asyncio.ensure_future(self._client.publish(CONTROL_TOPIC, payload, qos=0))
            )
            answers = asyncio.gather(*futures)
            await self._until_lost(answers)
            return answers.result()
        finally:
            for tag in tags:
                self._pending.pop(tag, None)
            for future in futures:
                future.cancel()

    async def _until_lost(self, work: asyncio.Future[Any]) -> None:
        """Wait for ``work`` unless the connection breaks first."""
        try:
            done, _ = await asyncio.wait({work, self.lost}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            work.cancel()
            raise
        if work not in done:
            work.cancel()
            raise _LinkLostError from self.cause
        try:
            work.result()
        except aiomqtt.MqttError as err:
            raise _LinkLostError from err

    async def close(self, timeout: float) -> None:  # noqa: ASYNC109 - bounds the goodbye only
        """Stop reading and disconnect (quietly: the connection may already be gone)."""
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        with contextlib.suppress(aiomqtt.MqttError, OSError, TimeoutError):
            async with asyncio.timeout(timeout):
                await self._stack.aclose()


class MosquittoDynsecAdapter(BrokerAdapter):
    """Per-device and per-household clients on Mosquitto, through dynamic security.

    Usage::

        async with MosquittoDynsecAdapter("127.0.0.1", 1883, "admin", password) as broker:
            await broker.put_device(DeviceCredential(device_id, device_password))
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        *,
        tls_context: ssl.SSLContext | None = None,
        client_id: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        """Prepare; nothing connects until ``connect()`` or the first call.

        Args:
            host: the broker's address.
            port: its MQTT port.
            username: a dynamic-security admin (``mosquitto_ctrl dynsec init`` makes one).
            password: that admin's password.
            tls_context: for a TLS listener; None for plain TCP (only on a trusted network).
            client_id: the MQTT client id; a random ``iob-relay-dynsec-…`` one when None, so
                several relay processes never take over each other's session.
            timeout: seconds for each round trip to the broker (request, connection).
        """
        self._host = host
        self._port = port
        self._username = username
        self._password = password
        self._tls_context = tls_context
        self._client_id = client_id or f"iob-relay-dynsec-{secrets.token_hex(4)}"
        self._timeout = timeout
        self._tag_prefix = f"iob-{secrets.token_hex(6)}-"
        self._tags = itertools.count()
        self._link: _Link | None = None
        self._connecting: asyncio.Task[_Link] | None = None
        self._closed = False
        self._last_error: BaseException | None = None
        self._stripes = tuple(asyncio.Lock() for _ in range(_LOCK_STRIPES))
        self._links_made = 0
        self._reconnect_hook: Callable[[], Awaitable[None]] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._recovering: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        """``host:port`` of the broker, for messages."""
        return f"{self._host}:{self._port}"

    # -- lifecycle -------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect now (calls connect lazily too, and reconnect after a broker restart).

        Raises:
            BrokerAuthenticationError: the admin username or password is wrong.
            BrokerPermissionError: the user is not the dynamic-security admin.
            BrokerUnavailableError: the broker cannot be reached (``BrokerTimeoutError`` when
                it did not answer in time).
        """
        async with self._deadline("connecting"):
            await self._current_link()

    def set_reconnect_hook(self, hook: Callable[[], Awaitable[None]] | None) -> None:
        """Run ``hook`` each time a connection is made after an earlier one was lost.

        With a hook set, a lost connection (the broker restarted or crashed) is not left for
        the next call to notice: the adapter reconnects in the background, retrying every few
        seconds until the broker is back, then runs the hook (the account service's reconcile).
        A hook that fails is logged; it runs again after the next reconnect.
        """
        self._reconnect_hook = hook
        link = self._link
        if hook is not None and link is not None and link.lost.done():
            self._recover()

    async def aclose(self) -> None:
        """Disconnect; the adapter cannot be used afterwards. Idempotent."""
        self._closed = True
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.wait(self._background)
        connecting, self._connecting = self._connecting, None
        if connecting is not None and not connecting.done():
            # Let a connection attempt finish (it is bounded) rather than cancel it in the
            # middle of paho's blocking connect, which would leak its socket.
            await asyncio.wait({connecting}, timeout=self._timeout)
            connecting.cancel()
        link, self._link = self._link, None
        if link is not None:
            await link.close(self._timeout)

    # -- the BrokerAdapter interface -----------------------------------------------------------

    async def put_device(self, credential: DeviceCredential) -> None:
        """Create the device's client and role, or bring them back to what they should be.

        A changed password replaces the old one and disconnects the device's live session;
        a repeated call with the same credential changes and disconnects nothing.
        """
        await self._put(device_principal(credential))

    async def remove_device(self, device_id: str) -> None:
        """Delete the device's client (kicking its live session) and its role. Idempotent."""
        checked = validate_device_id(device_id)
        await self._remove(device_username(checked), device_rolename(checked))

    async def put_hub(self, credential: HubCredential, access: Mapping[str, bool]) -> None:
        """Create or update the household's hub client and its ACLs (see the module docs).

        Changing ``access`` alone does not disconnect the hub; a device dropped from it stops
        reaching the hub at once, even on subscriptions the hub already holds.
        """
        await self._put(hub_principal(credential, access))

    async def grant_device(
        self, credential: HubCredential, device_id: str, *, control: bool
    ) -> bool:
        """``addRoleACL`` for the device's entries in the hub's role, in one publish.

        The role's other entries stay as they are (``put_hub``'s ``modifyRole`` sends and
        rewrites them all, a household's worth per claim); nobody is disconnected. False when
        the hub's role does not exist (nothing was changed: put the hub).
        """
        checked = validate_device_id(device_id)
        household_id = validate_household_id(credential.household_id)
        username = hub_username(household_id)
        self._refuse_admin(username)
        commands = tuple(
            {"command": "addRoleACL", "rolename": hub_rolename(household_id), **acl.to_json()}
            for acl in sorted(hub_device_acls(checked, control=control))
        )
        async with self._serialised(username):
            answers = await self._request(commands, f"granting {checked!r} to {username!r}")
        failures = _failures(commands, answers, ignore=_ACL_EXISTS)
        if failures and all(failure["error"] == _ROLE_MISSING for failure in failures):
            return False
        if failures:
            raise BrokerCommandError(
                f"the broker refused {_describe(failures)} while granting {checked!r} to "
                f"{username!r}",
                failures,
            )
        return True

    async def remove_hub(self, household_id: str) -> None:
        """Delete the hub's client (kicking its live sessions) and its role. Idempotent.

        The household's tool clients hold the hub's role and are deleted first: Mosquitto
        2.0.11's ``deleteRole`` leaves a dangling entry in every client still holding the role
        (``getClient`` then shows freed memory, and deleting such a client crashes the broker).
        Finding them takes one listing of every client; a hub is removed rarely (household
        deleted, or a failed creation undone).
        """
        checked = validate_household_id(household_id)
        rolename = hub_rolename(checked)
        clients, _ = await self._list()
        for client in sorted(clients.values(), key=lambda c: c.username):
            own = [role for role in client.roles if owner_of_role(role) == client.username]
            if rolename in client.roles and own and own[0].startswith(TOOL_ROLE_PREFIX):
                await self._remove(client.username, own[0])
        await self._remove(hub_username(checked), rolename)

    async def put_tool(self, credential: ToolCredential) -> None:
        """Create or update a tool's client: its own role (priority 1) and its hub's role.

        The hub's role must exist (``put_hub`` first), else the broker refuses the client.
        """
        await self._put(tool_principal(credential))

    async def remove_tool(self, credential_id: str) -> None:
        """Delete the tool's client (kicking its live session) and its own role. Idempotent."""
        await self._remove(*tool_names(credential_id))

    async def kick_hub(self, household_id: str) -> None:
        """Disconnect the hub's live sessions: ``disableClient`` then ``enableClient``.

        Both commands go in one publish, which the plugin handles in one go, so no connection
        attempt can fall between them; if the second one failed, the hub would stay disabled
        until the next ``put_hub`` or ``reconcile`` (both enable it), and this raises.
        """
        checked = validate_household_id(household_id)
        username = hub_username(checked)
        self._refuse_admin(username)
        commands = (
            {"command": "disableClient", "username": username},
            {"command": "enableClient", "username": username},
        )
        async with self._serialised(username):
            answers = await self._request(commands, f"disconnecting {username!r}")
        failures = _failures(commands, answers, ignore=_ABSENT)
        if failures:
            raise BrokerCommandError(
                f"the broker refused {_describe(failures)} while disconnecting {username!r}",
                failures,
            )

    async def reconcile(self, desired: BrokerState) -> ReconcileReport:
        """Make the broker's IoT Onboard clients and roles exactly ``desired``.

        Creates what is missing, fixes roles, role ACLs, groups, disabled flags, client id
        bindings and passwords that differ (a client made before client ids were bound gets its
        binding and password verifier here, one disconnect each), and deletes IoT Onboard
        clients (kicking them) and roles that ``desired`` does not hold. Clients without an
        IoT Onboard role of their own, and the admin, are left alone.

        Raises:
            InvalidIdentifierError: ``desired`` holds an unusable id (nothing was changed).
            BrokerCommandError: some commands failed; the others were applied. Run it again.
        """
        principals = desired_principals(desired)
        for username in principals:
            self._refuse_admin(username)
        async with self._exclusive():
            clients, roles = await self._list()
            plan = plan_reconcile(principals, clients, roles, protected={self._username})
            failures: list[dict[str, Any]] = []
            for start in range(0, len(plan.commands), _RECONCILE_CHUNK):  # batched() is 3.12+
                chunk = plan.commands[start : start + _RECONCILE_CHUNK]
                answers = await self._request(chunk, "reconciling")
                failures.extend(_failures(chunk, answers, ignore=_ABSENT))
        if failures:
            raise BrokerCommandError(
                f"reconcile: {len(failures)} of {len(plan.commands)} commands failed "
                f"({_describe(failures)}); the others were applied. Run reconcile again; if it "
                "keeps failing, check the broker's log.",
                failures,
            )
        if plan.report.changed:
            _LOGGER.info(
                "Reconciled the broker: created %s, updated %s, removed %s",
                plan.report.created,
                plan.report.updated,
                plan.report.removed,
            )
        return plan.report

    # -- converging one client --------------------------------------------------------------

    async def _put(self, principal: Principal) -> None:
        self._refuse_admin(principal.username)
        async with self._serialised(principal.username):
            for _ in range(_ATTEMPTS):
                client, role = await self._read(principal)
                plan = plan_principal(principal, client, role)
                if not plan.commands:
                    return
                action = f"writing {principal.username!r}"
                answers = await self._request(plan.commands, action)
                failures = _failures(plan.commands, answers)
                if not failures:
                    return
                if any(failure["error"] not in _STALE for failure in failures):
                    raise BrokerCommandError(
                        f"the broker refused {_describe(failures)} while {action}",
                        failures,
                    )
                # Someone changed this client between our read and our write: read again.
        raise BrokerConflictError(
            f"{principal.username!r} kept changing on the broker while it was being written "
            f"({_ATTEMPTS} attempts); another process is writing it too. Try again."
        )

    async def _read(
        self, principal: Principal
    ) -> tuple[ObservedClient | None, ObservedRole | None]:
        commands = (
            {"command": "getClient", "username": principal.username},
            {"command": "getRole", "rolename": principal.rolename},
        )
        client_answer, role_answer = await self._request(
            commands, f"reading {principal.username!r}"
        )
        failures = _failures(commands, (client_answer, role_answer), ignore=_ABSENT)
        if failures:
            raise BrokerCommandError(f"the broker refused {_describe(failures)}", failures)
        client = None if "error" in client_answer else parse_client(_data(client_answer, "client"))
        role = None if "error" in role_answer else parse_role(_data(role_answer, "role"))
        return client, role

    async def _remove(self, username: str, rolename: str) -> None:
        self._refuse_admin(username)
        commands = plan_removal(username, rolename)
        async with self._serialised(username):
            answers = await self._request(commands, f"removing {username!r}")
        failures = _failures(commands, answers, ignore=_ABSENT)
        if failures:
            raise BrokerCommandError(
                f"the broker refused {_describe(failures)} while removing {username!r}", failures
            )

    async def _list(self) -> tuple[dict[str, ObservedClient], dict[str, ObservedRole]]:
        commands = (
            {"command": "listClients", "verbose": True},
            {"command": "listRoles", "verbose": True},
        )
        answers = await self._request(commands, "listing clients and roles")
        failures = _failures(commands, answers)
        if failures:
            raise BrokerCommandError(f"the broker refused {_describe(failures)}", failures)
        client_list = _data(answers[0], "clients")
        role_list = _data(answers[1], "roles")
        if not isinstance(client_list, list) or not isinstance(role_list, list):
            raise BrokerProtocolError(f"unexpected listing from the broker: {answers!r}")
        clients = {c.username: c for c in map(parse_client, client_list)}
        roles = {r.rolename: r for r in map(parse_role, role_list)}
        return clients, roles

    # -- requests ----------------------------------------------------------------------------

    async def _request(
        self, commands: Sequence[Mapping[str, Any]], action: str
    ) -> list[dict[str, Any]]:
        """Send ``commands`` in one publish and return one answer per command, in order."""
        tags = [f"{self._tag_prefix}{next(self._tags)}" for _ in commands]
        payload = json.dumps(
            {
                "commands": [
                    {**command, "correlationData": tag}
                    for command, tag in zip(commands, tags, strict=True)
                ]
            }
        )
        async with self._deadline(action):
            for _ in range(_ATTEMPTS):
                link = await self._current_link()
                try:
                    answers = await link.exchange(payload, tags)
                except _LinkLostError as err:
                    self._last_error = err.__cause__ or err
                    continue
                return [
                    {key: value for key, value in answer.items() if key != "correlationData"}
                    for answer in answers
                ]
            raise self._unavailable(action, self._last_error) from self._last_error

    async def _current_link(self) -> _Link:
        if self._closed:
            raise AdapterClosedError("the broker adapter was closed; create a new one")
        link = self._link
        if link is not None and not link.lost.done():
            return link
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.create_task(self._reconnect(), name="iob-dynsec-connect")
            self._connecting.add_done_callback(_consume_result)
        return await asyncio.shield(self._connecting)

    async def _reconnect(self) -> _Link:
        """Open a new connection, retrying for up to ``timeout`` seconds.

        Runs as its own task, shared by every caller waiting for the connection, so a caller
        that gives up never cancels paho's connect half-way.
        """
        old, self._link = self._link, None
        if old is not None:
            await old.close(self._timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        delay = _RECONNECT_DELAY
        while True:
            try:
                link = await self._open()
            except _ConnectAttemptError as err:
                self._last_error = err.__cause__
                if loop.time() + delay >= deadline:
                    raise self._unavailable("connecting", err.__cause__) from err.__cause__
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RECONNECT_DELAY_MAX)
                continue
            if self._closed:
                await link.close(self._timeout)
                raise AdapterClosedError("the broker adapter was closed while connecting")
            self._link = link
            self._last_error = None
            self._links_made += 1
            link.lost.add_done_callback(self._link_lost)
            _LOGGER.debug("Connected to the broker at %s as %s", self.address, self._client_id)
            if self._links_made > 1 and self._reconnect_hook is not None:
                _LOGGER.info("The connection to the broker at %s is back", self.address)
                self._spawn(self._run_hook(self._reconnect_hook), "iob-dynsec-reconnected")
            return link

    def _link_lost(self, _lost: asyncio.Future[None]) -> None:
        if not self._closed and self._reconnect_hook is not None:
            self._recover()

    def _recover(self) -> None:
        """Reconnect in the background (once at a time) until the broker is back."""
        if self._recovering is None or self._recovering.done():
            self._recovering = self._spawn(self._reconnect_until_back(), "iob-dynsec-recover")

    def _spawn(self, work: Awaitable[None], name: str) -> asyncio.Task[None]:
        async def run() -> None:
            await work

        task = asyncio.get_running_loop().create_task(run(), name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _reconnect_until_back(self) -> None:
        delay = _RECONNECT_DELAY_MAX
        while not self._closed:
            try:
                await self.connect()
            except AdapterClosedError:
                return
            except BrokerError as err:
                _LOGGER.warning(
                    "The broker at %s is still unreachable (%s); retrying in %g s",
                    self.address,
                    err,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RECOVERY_DELAY_MAX)
                continue
            return

    async def _run_hook(self, hook: Callable[[], Awaitable[None]]) -> None:
        try:
            await hook()
        except Exception:
            _LOGGER.exception(
                "The broker reconnect hook failed; it runs again after the next reconnect"
            )

    async def _open(self) -> _Link:
        client = aiomqtt.Client(
            self._host,
            self._port,
            username=self._username,
            password=self._password,
            identifier=self._client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            tls_context=self._tls_context,
            timeout=self._timeout,
        )
        # Many tasks publishing at once is normal here, not a sign of a stuck connection.
        client.pending_calls_threshold = _PENDING_CALLS_WARNING
        stack = contextlib.AsyncExitStack()
        try:
            await stack.enter_async_context(client)
        except aiomqtt.MqttCodeError as err:
            if _credentials_refused(err):
                raise BrokerAuthenticationError(
                    f"Mosquitto at {self.address} refused the username {self._username!r} or its "
                    "password. Check the broker admin credentials in the account service's "
                    "configuration (mosquitto_ctrl dynsec init creates the admin)."
                ) from err
            raise _ConnectAttemptError from err
        except aiomqtt.MqttError as err:
            raise _ConnectAttemptError from err
        try:
            granted = await client.subscribe(RESPONSE_TOPIC, qos=1)
        except aiomqtt.MqttError as err:
            await _close_quietly(stack)
            raise _ConnectAttemptError from err
        except BaseException:
            await _close_quietly(stack)
            raise
        if any(isinstance(code, ReasonCode) and code.is_failure for code in granted) or any(
            isinstance(code, int) and code >= 0x80  # noqa: PLR2004 - v3.1.1 SUBACK failure
            for code in granted
        ):
            await _close_quietly(stack)
            raise BrokerPermissionError(
                f"{self._username!r} may not subscribe to {RESPONSE_TOPIC} on {self.address}: it "
                "is not the dynamic-security admin. Configure the account service with the "
                "admin that mosquitto_ctrl dynsec init created (or one holding its role)."
            )
        return _Link(client, stack)

    @contextlib.asynccontextmanager
    async def _deadline(self, action: str) -> AsyncIterator[None]:
        """Bound one round trip; say what timed out and what was last seen failing."""
        try:
            async with asyncio.timeout(self._timeout):
                yield
        except TimeoutError as err:
            cause = self._last_error
            detail = f" (last error: {cause})" if cause is not None else ""
            raise BrokerTimeoutError(
                f"Mosquitto at {self.address} did not answer within {self._timeout:g} s while "
                f"{action}{detail}. Check that the broker is running and reachable, that its "
                f"dynamic-security plugin is loaded and that {self._username!r} is its admin."
            ) from cause or err

    def _unavailable(self, action: str, cause: BaseException | None) -> BrokerUnavailableError:
        detail = f": {cause}" if cause is not None else ""
        return BrokerUnavailableError(
            f"cannot reach Mosquitto at {self.address} while {action}{detail}. Check that the "
            "broker is running and that the account service's broker address is right."
        )

    def _refuse_admin(self, username: str) -> None:
        if username == self._username:
            raise InvalidIdentifierError(
                f"{username!r} is the broker adapter's own admin username; it cannot be a device "
                "or hub"
            )

    @contextlib.asynccontextmanager
    async def _serialised(self, username: str) -> AsyncIterator[None]:
        """Calls for one username run one after another (read, plan and write stay atomic)."""
        async with self._stripes[zlib.crc32(username.encode()) % _LOCK_STRIPES]:
            yield

    @contextlib.asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[None]:
        """No other call of this adapter changes the broker meanwhile (locks taken in order)."""
        async with contextlib.AsyncExitStack() as stack:
            for lock in self._stripes:
                await stack.enter_async_context(lock)
            yield


def _credentials_refused(err: aiomqtt.MqttCodeError) -> bool:
    code = err.rc.value if isinstance(err.rc, ReasonCode) else err.rc
    return code in _CREDENTIALS_REFUSED


def _data(answer: Mapping[str, Any], key: str) -> object:
    data = answer.get("data")
    if not isinstance(data, dict) or key not in data:
        raise BrokerProtocolError(f"the broker's answer has no data.{key}: {answer!r}")
    return data[key]


def _failures(
    commands: Sequence[Mapping[str, Any]],
    answers: Sequence[Mapping[str, Any]],
    *,
    ignore: frozenset[str] = frozenset(),
) -> list[dict[str, Any]]:
    """Each failed command (passwords removed) with the broker's error."""
    if len(answers) != len(commands):
        raise BrokerProtocolError(
            f"the broker answered {len(answers)} times to {len(commands)} commands"
        )
    failures: list[dict[str, Any]] = []
    for command, answer in zip(commands, answers, strict=True):
        error = answer.get("error")
        if error is None or error in ignore:
            continue
        shown = {key: value for key, value in command.items() if key in {"command", "username"}}
        if "rolename" in command:
            shown["rolename"] = command["rolename"]
        failures.append({**shown, "error": str(error)})
    return failures


def _describe(failures: Sequence[Mapping[str, Any]]) -> str:
    return "; ".join(
        f"{failure['command']} {failure.get('username') or failure.get('rolename')!r}: "
        f"{failure['error']}"
        for failure in failures[:5]
    ) + (f"; and {len(failures) - 5} more" if len(failures) > 5 else "")  # noqa: PLR2004


async def _close_quietly(stack: contextlib.AsyncExitStack) -> None:
    with contextlib.suppress(aiomqtt.MqttError, OSError):
        await stack.aclose()


def _consume_result(task: asyncio.Task[_Link]) -> None:
    """Mark a connection task's failure as seen: the callers that awaited it got it already."""
    if not task.cancelled():
        task.exception()
