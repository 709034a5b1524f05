"""The household hub's MQTT client: devices' capability descriptors, availability and state.

HA-free (no ``homeassistant`` import): :class:`MqttHub` connects with the household hub
credentials from the account service, keeps what the devices publish (retained meta,
availability, state, the last diagnostic event) and tells a :class:`HubListener` about every
change as it arrives: nothing is polled.

Subscriptions: the wildcards ``iob/+/meta``, ``iob/+/availability``, ``iob/+/state/+`` and
``iob/+/diag`` first; the broker delivers only the devices the hub's role may receive. A broker
whose hub role allows only per-device patterns (``iob/<id>/#``) refuses the wildcards (SUBACK
0x87); the hub then subscribes per device, for the ids :meth:`MqttHub.set_devices` names.

Connection losses are retried with jittered exponential backoff (1 s to 60 s). Refused
credentials are fetched again once through ``credentials_provider`` (the account service
re-creates a hub client the broker lost); refused again, :meth:`MqttHub.run` ends with
:class:`HubCredentialsRefusedError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.reasoncodes import ReasonCode

from .iob_protocol import MalformedMessageError, load_json
from .iob_protocol.account_api import MqttCredentials

_LOGGER = logging.getLogger(__name__)

BACKOFF_BASE: Final = 1.0
BACKOFF_CAP: Final = 60.0
ONLINE: Final = "online"
OFFLINE: Final = "offline"
WILDCARD_FILTERS: Final = ("iob/+/meta", "iob/+/availability", "iob/+/state/+", "iob/+/diag")
#: CONNACK reason codes for refused credentials: MQTT 5 0x86/0x87 (Mosquitto 2.0 sends 0x87;
#: paho 2 maps MQTT 3.1.1's return codes 4 and 5 to these). A plain int 4 on another error is
#: paho's MQTT_ERR_NO_CONN: the connection is gone (a broker crash), nothing was refused.
_AUTH_REASONS: Final = frozenset({0x86, 0x87})
_SUBACK_FAILURE: Final = 0x80
_MAX_META_BYTES: Final = 64 * 1024
_MAX_STATE_BYTES: Final = 1024
_TOPIC_PARTS_DEVICE: Final = 3
_TOPIC_PARTS_KEYED: Final = 4
_JITTER: Final = random.SystemRandom()
PLATFORMS: Final = frozenset({"sensor", "binary_sensor", "switch", "button", "number"})
#: Device-level commands a device may list in its meta (``commands``); sent on
#: ``iob/<id>/cmd/_<command>`` (a leading underscore cannot collide with an entity key).
DEVICE_COMMANDS: Final = frozenset({"identify", "factory_reset"})


class HubError(Exception):
    """Base of every error of the hub client."""


class HubNotConnectedError(HubError):
    """No broker connection right now (a command cannot be sent)."""


class HubCommandError(HubError):
    """A command could not be published (connection lost or timed out)."""


class HubCredentialsRefusedError(HubError):
    """The broker refused the hub credentials, also after fetching them again."""


class HubCredentialsUnavailableError(HubError):
    """The credentials could not be fetched again right now (the account service is down)."""


class MetaError(HubError):
    """A capability descriptor that cannot be used."""


#: The household hub's MQTT account, as the account service hands it out: the shared wire
#: model's one credentials type (``client_id`` None: the hub's own ``client_id``).
HubCredentials = MqttCredentials


@dataclass(frozen=True, slots=True, kw_only=True)
class EntityMeta:
    """One entity of a device's capability descriptor (``entities[]`` of ``iob/<id>/meta``)."""

    key: str
    platform: str
    name: str
    translation_key: str | None = None
    device_class: str | None = None
    unit: str | None = None
    state_class: str | None = None
    entity_category: str | None = None
    icon: str | None = None
    suggested_display_precision: int | None = None
    min: float | None = None
    max: float | None = None
    step: float | None = None

    @classmethod
    def from_json(cls, data: Any) -> EntityMeta:
        """Parse one entity; raise MetaError for anything HA could not build."""
        if not isinstance(data, dict):
            raise MetaError("an entity is not an object")
        key, platform, name = data.get("key"), data.get("platform"), data.get("name")
        if not isinstance(key, str) or not key or "/" in key or key.startswith("_"):
            raise MetaError(f"entity key {key!r} is not usable")
        if platform not in PLATFORMS:
            raise MetaError(f"entity {key}: unknown platform {platform!r}")
        numbers = {n: _optional_number(data, n, key) for n in ("min", "max", "step")}
        entity = cls(
            key=key,
            platform=str(platform),
            name=name if isinstance(name, str) and name else key,
            translation_key=_optional_text(data, "translation_key"),
            device_class=_optional_text(data, "device_class"),
            unit=_optional_text(data, "unit"),
            state_class=_optional_text(data, "state_class"),
            entity_category=_optional_text(data, "entity_category"),
            icon=_optional_text(data, "icon"),
            suggested_display_precision=_optional_int(data, "suggested_display_precision"),
            **numbers,
        )
        if platform == "number" and (
            entity.min is None
            or entity.max is None
            or entity.step is None
            or not entity.min < entity.max
            or entity.step <= 0
        ):
            raise MetaError(f"number {key} needs min < max and a positive step")
        return entity


def _optional_text(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) and value else None


def _optional_int(data: dict[str, Any], name: str) -> int | None:
    value = data.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _optional_number(data: dict[str, Any], name: str, key: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MetaError(f"entity {key}: {name} is not a number")
    return float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceMeta:
    """A device's retained capability descriptor."""

    device_id: str
    manufacturer: str | None = None
    name: str | None = None
    model: str | None = None
    sw_version: str | None = None
    hw_version: str | None = None
    entities: tuple[EntityMeta, ...] = ()
    commands: frozenset[str] = frozenset()

    def entity(self, key: str) -> EntityMeta | None:
        """The entity with ``key``, if the descriptor has it."""
        return next((entity for entity in self.entities if entity.key == key), None)


def parse_meta(device_id: str, payload: bytes) -> DeviceMeta:
    """Parse ``iob/<id>/meta``; entities that cannot be built are left out (and logged)."""
    if len(payload) > _MAX_META_BYTES:
        raise MetaError(f"meta is over {_MAX_META_BYTES} bytes")
    try:
        document = load_json(payload, max_bytes=_MAX_META_BYTES)
    except MalformedMessageError as err:
        raise MetaError(f"meta is not JSON: {err}") from err
    if not isinstance(document, dict):
        raise MetaError("meta is not a JSON object")
    device = document.get("device")
    device = device if isinstance(device, dict) else {}
    if device.get("id") not in (None, device_id):
        raise MetaError(f"meta names device {device.get('id')!r}, not {device_id!r}")
    entities: list[EntityMeta] = []
    seen: set[str] = set()
    raw_entities = document.get("entities")
    for raw in raw_entities if isinstance(raw_entities, list) else []:
        try:
            entity = EntityMeta.from_json(raw)
        except MetaError as err:
            _LOGGER.warning("Device %s: entity skipped: %s", device_id, err)
            continue
        if entity.key not in seen:
            seen.add(entity.key)
            entities.append(entity)
    raw_commands = document.get("commands")
    commands = frozenset(
        command
        for command in (raw_commands if isinstance(raw_commands, list) else [])
        if command in DEVICE_COMMANDS
    )
    return DeviceMeta(
        device_id=device_id,
        manufacturer=_optional_text(device, "manufacturer"),
        name=_optional_text(device, "name"),
        model=_optional_text(device, "model"),
        sw_version=_optional_text(device, "sw_version"),
        hw_version=_optional_text(device, "hw_version"),
        entities=tuple(entities),
        commands=commands,
    )


@dataclass(slots=True)
class DeviceData:
    """Everything the hub has received about one device."""

    device_id: str
    meta: DeviceMeta | None = None
    #: True online, False offline, None never heard (or the retained message was cleared).
    online: bool | None = None
    states: dict[str, str] = field(default_factory=dict)
    last_diagnostic: dict[str, Any] | None = None


class HubListener(Protocol):
    """Receives every change as the hub sees it (called from the hub's task)."""

    def hub_connection_changed(self, *, connected: bool) -> None:
        """The broker connection came up or went down."""

    def device_meta_changed(self, device_id: str) -> None:
        """A capability descriptor arrived, changed or was cleared."""

    def device_availability_changed(self, device_id: str) -> None:
        """``iob/<id>/availability`` changed."""

    def device_state_changed(self, device_id: str, key: str) -> None:
        """``iob/<id>/state/<key>`` changed."""

    def device_diagnostic(self, device_id: str, event: dict[str, Any]) -> None:
        """An event arrived on ``iob/<id>/diag``."""


def backoff_delay(attempt: int, *, base: float, cap: float, jitter: float) -> float:
    """Seconds before reconnection ``attempt``: a doubling ceiling, drawn from its upper half."""
    ceiling = min(cap, base * 2.0 ** min(max(attempt, 0), 62))
    return ceiling / 2 + ceiling / 2 * min(max(jitter, 0.0), 1.0)


def hub_client_id(household_id: str) -> str:
    """The hub's MQTT client id, the one the broker binds its user ``hub-<household>`` to."""
    return f"hub-{household_id}"


def refused_credentials(err: BaseException) -> bool:
    """Whether an aiomqtt error is the broker refusing the username or password.

    Only a CONNACK does that: aiomqtt raises ``MqttConnectError`` with its ``ReasonCode``.
    Anything else (a lost connection, a subscribe or publish on a connection that is gone,
    ``MqttCodeError`` with paho's int 4) is the broker being unreachable: retried with backoff,
    never a reason to fetch new credentials.
    """
    if not isinstance(err, MqttConnectError):
        return False
    rc = err.rc
    return isinstance(rc, ReasonCode) and rc.value in _AUTH_REASONS


def _suback_failed(result: Any) -> bool:
    codes = result if isinstance(result, list | tuple) else [result]
    for code in codes:
        value = getattr(code, "value", code)
        if isinstance(value, int) and value >= _SUBACK_FAILURE:
            return True
    return False


class _Client(aiomqtt.Client):
    """aiomqtt's client, whose wait for a writable socket lets a socket closed meanwhile be.

    paho asks for that wait with every packet it queues; aiomqtt schedules ``add_writer`` on
    the socket's number for later, and when the broker closed the connection before then (it
    drops the hub as the household is deleted elsewhere, while the hub sends its subscriptions)
    the loop logs ``EBADF`` with a traceback. Here the socket is asked for its number when the
    wait is set up: a closed one has none, and the broker's close is reported by the reader.
    """

    def _on_socket_register_write(
        self,
        client: Any,
        userdata: Any,  # noqa: ARG002 - paho's callback signature
        sock: Any,
    ) -> None:
        def write() -> None:
            # As aiomqtt's own: a failed write (a broken pipe) ends the connection at once.
            try:
                client.loop_write()
            except Exception as err:  # noqa: BLE001 - every failure ends the session
                if not self._disconnected.done():
                    self._disconnected.set_exception(err)

        def wait_for_writable() -> None:
            fileno = sock.fileno()
            if fileno != -1:
                self._loop.add_writer(fileno, write)

        # paho may call this from the thread aiomqtt connects in: only the loop touches it.
        self._loop.call_soon_threadsafe(wait_for_writable)


class _QuietLogger(logging.Logger):
    """paho's own log, demoted to debug: connection errors are logged once, by the hub."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        """Log at debug whatever paho thinks the level is."""
        del level
        super().log(logging.DEBUG, msg, *args, **kwargs)


_PAHO_LOGGER: Final = _QuietLogger(f"{__name__}.paho")
_PAHO_LOGGER.parent = _LOGGER


def _retrieve_disconnect_error(client: aiomqtt.Client) -> None:
    """Mark the error of a lost connection as seen.

    aiomqtt 2.5 stores it in a future that only its message iterator reads; a connection lost
    during a subscribe or publish (or after the session ended) would otherwise be logged as
    "Future exception was never retrieved" on every reconnection attempt.
    """
    future: asyncio.Future[None] = client._disconnected  # noqa: SLF001 - see docstring

    def retrieve(done: asyncio.Future[None]) -> None:
        if not done.cancelled():
            done.exception()

    future.add_done_callback(retrieve)


class MqttHub:
    """One household's MQTT view of its devices, kept current until cancelled."""

    def __init__(
        self,
        credentials: HubCredentials,
        listener: HubListener,
        *,
        credentials_provider: Callable[[], Awaitable[HubCredentials]],
        client_id: str,
        tls_context: ssl.SSLContext | None = None,
        backoff_base: float = BACKOFF_BASE,
        backoff_cap: float = BACKOFF_CAP,
        keepalive: int = 30,
        timeout: float = 10.0,
    ) -> None:
        """Prepare; nothing connects until :meth:`run`.

        Args:
            credentials: the hub's MQTT account.
            listener: told about every change.
            credentials_provider: fetches the credentials again (the broker refused them).
            client_id: the MQTT client id when ``credentials`` name none: the broker accepts
                the hub user only with its own fixed id, ``hub-<household id>``
                (:func:`hub_client_id`); any other id is refused as bad credentials.
            tls_context: used when ``credentials.tls`` (the caller's, never created here:
                creating one reads CA files).
            backoff_base: first reconnection delay ceiling, in seconds.
            backoff_cap: largest reconnection delay, in seconds.
            keepalive: MQTT keepalive in seconds.
            timeout: seconds for one broker round trip.
        """
        self._credentials = credentials
        self._listener = listener
        self._provider = credentials_provider
        self._client_id = client_id
        self._tls_context = tls_context
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._keepalive = keepalive
        self._timeout = timeout
        self._client: aiomqtt.Client | None = None
        self._connected = False
        self._per_device = False
        self._wanted: set[str] = set()
        self._subscribed: set[str] = set()
        self._subscription_lock = asyncio.Lock()
        self.devices: dict[str, DeviceData] = {}

    @property
    def credentials(self) -> HubCredentials:
        """The credentials in use."""
        return self._credentials

    @property
    def connected(self) -> bool:
        """Whether the broker session is up and subscribed."""
        return self._connected

    @property
    def subscription_mode(self) -> str:
        """``wildcard`` or ``per_device`` (what the broker's hub role allowed)."""
        return "per_device" if self._per_device else "wildcard"

    def use_credentials(self, credentials: HubCredentials) -> None:
        """Use new credentials from the next connection on.

        After a rotation the broker kicks the session that used the old password, so the
        next connection is moments away.
        """
        self._credentials = credentials

    # --- the connection loop --------------------------------------------------------------

    async def run(self) -> None:
        """Stay connected until cancelled.

        Raises:
            HubCredentialsRefusedError: the broker refused credentials fetched just now.
            HubError: ``credentials_provider`` failed with anything but
                :class:`HubCredentialsUnavailableError` (its own error, passed on).
        """
        attempt = 0
        outage = False
        refetched = False
        while True:
            established = False
            try:
                async for _ in self._session():
                    established = True
                    refetched = False
                    attempt = 0
                    if outage:
                        _LOGGER.info("MQTT connection to %s is back", self._credentials.host)
                        outage = False
            except aiomqtt.MqttError as err:
                if not established and refused_credentials(err):
                    if refetched:
                        raise HubCredentialsRefusedError(
                            f"broker {self._credentials.host}:{self._credentials.port} refused "
                            f"the hub user {self._credentials.username!r}"
                        ) from err
                    try:
                        self._credentials = await self._provider()
                    except HubCredentialsUnavailableError as unavailable:
                        err = aiomqtt.MqttError(f"{err}; fetching new credentials: {unavailable}")
                    else:
                        refetched = True
                        continue
                if not outage:
                    _LOGGER.warning(
                        "MQTT connection to %s:%s %s (%s); retrying with backoff",
                        self._credentials.host,
                        self._credentials.port,
                        "lost" if established else "cannot be established",
                        err,
                    )
                    outage = True
            await asyncio.sleep(
                backoff_delay(
                    attempt,
                    base=self._backoff_base,
                    cap=self._backoff_cap,
                    jitter=_JITTER.random(),
                )
            )
            attempt += 1

    async def _session(self) -> AsyncIterator[None]:
        """Connect, subscribe, yield once established, then dispatch until the session ends."""
        credentials = self._credentials
        client = _Client(
            credentials.host,
            credentials.port,
            username=credentials.username,
            password=credentials.password,
            identifier=credentials.client_id or self._client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=True,
            keepalive=self._keepalive,
            timeout=self._timeout,
            tls_context=self._tls_context if credentials.tls else None,
            logger=_PAHO_LOGGER,
        )
        try:
            await self._connect(client)
            try:
                self._client = client
                self._subscribed = set()
                await self._subscribe_all(client)
                self._set_connected(connected=True)
                yield
                async for message in client.messages:
                    self._dispatch(str(message.topic), message.payload)
            finally:
                self._client = None
                self._set_connected(connected=False)
                # Let socket callbacks aiomqtt scheduled from paho (a write registered by the
                # last subscribe or publish) run before the disconnect closes the socket.
                await asyncio.sleep(0)
                await client.__aexit__(None, None, None)
        finally:
            _retrieve_disconnect_error(client)

    async def _connect(self, client: aiomqtt.Client) -> None:
        """Connect; a cancellation (unload) lets the attempt finish first, then disconnects.

        aiomqtt connects in a worker thread that schedules socket callbacks on the loop;
        abandoning it mid-way lets those callbacks touch a closed socket (logged as errors).
        The attempt is bounded by the client's timeout.
        """
        entering = asyncio.ensure_future(client.__aenter__())
        try:
            await asyncio.shield(entering)
        except asyncio.CancelledError:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                async with asyncio.timeout(self._timeout):
                    await entering
                await client.__aexit__(None, None, None)
            raise

    def _set_connected(self, *, connected: bool) -> None:
        if self._connected != connected:
            self._connected = connected
            self._listener.hub_connection_changed(connected=connected)

    async def _subscribe_all(self, client: aiomqtt.Client) -> None:
        result = await client.subscribe([(topic, 1) for topic in WILDCARD_FILTERS])
        if not _suback_failed(result):
            self._per_device = False
            return
        if not self._per_device:
            _LOGGER.info(
                "The broker refused wildcard subscriptions for the hub; subscribing per device"
            )
        self._per_device = True
        # Only what the broker granted (it refuses all of them where patterns are refused).
        granted = [
            topic
            for topic, code in zip(WILDCARD_FILTERS, list(result), strict=False)
            if not _suback_failed([code])
        ]
        if granted:
            await client.unsubscribe(granted)
        await self._sync_device_subscriptions(client)

    async def set_devices(self, device_ids: Iterable[str]) -> None:
        """The devices the household may see (per-device subscriptions follow this set)."""
        self._wanted = set(device_ids)
        client = self._client
        if client is not None and self._per_device:
            try:
                await self._sync_device_subscriptions(client)
            except aiomqtt.MqttError as err:
                # The session is ending; the next one subscribes from _wanted.
                _LOGGER.debug("Subscription update skipped: %s", err)

    async def _sync_device_subscriptions(self, client: aiomqtt.Client) -> None:
        async with self._subscription_lock:
            added = sorted(self._wanted - self._subscribed)
            removed = sorted(self._subscribed - self._wanted)
            if added:
                result = await client.subscribe([(f"iob/{device}/#", 1) for device in added])
                for device, code in zip(added, list(result), strict=False):
                    if _suback_failed([code]):
                        _LOGGER.warning("The broker refused the subscription to device %s", device)
                    else:
                        self._subscribed.add(device)
            if removed:
                await client.unsubscribe([f"iob/{device}/#" for device in removed])
                self._subscribed.difference_update(removed)

    # --- incoming messages ----------------------------------------------------------------

    def _dispatch(self, topic: str, payload: Any) -> None:
        parts = topic.split("/")
        if len(parts) < _TOPIC_PARTS_DEVICE or parts[0] != "iob" or not parts[1]:
            return
        device_id, kind = parts[1], parts[2]
        data = payload if isinstance(payload, bytes) else str(payload or "").encode()
        if len(parts) == _TOPIC_PARTS_DEVICE:
            if kind == "meta":
                self._on_meta(device_id, data)
            elif kind == "availability":
                self._on_availability(device_id, data)
            elif kind == "diag":
                self._on_diag(device_id, data)
        elif len(parts) == _TOPIC_PARTS_KEYED and kind == "state" and parts[3]:
            self._on_state(device_id, parts[3], data)

    def _device(self, device_id: str) -> DeviceData:
        device = self.devices.get(device_id)
        if device is None:
            device = self.devices[device_id] = DeviceData(device_id)
        return device

    def _on_meta(self, device_id: str, payload: bytes) -> None:
        device = self._device(device_id)
        if not payload:
            meta = None  # cleared by a factory reset
        else:
            try:
                meta = parse_meta(device_id, payload)
            except MetaError as err:
                _LOGGER.warning("Device %s published an unusable descriptor: %s", device_id, err)
                return
        if meta != device.meta:
            device.meta = meta
            self._listener.device_meta_changed(device_id)

    def _on_availability(self, device_id: str, payload: bytes) -> None:
        device = self._device(device_id)
        text = payload.decode(errors="replace").strip().lower()
        online = True if text == ONLINE else (False if text == OFFLINE else None)
        if online != device.online:
            device.online = online
            self._listener.device_availability_changed(device_id)

    def _on_state(self, device_id: str, key: str, payload: bytes) -> None:
        if len(payload) > _MAX_STATE_BYTES:
            _LOGGER.debug("Device %s: state %s is too long, ignored", device_id, key)
            return
        device = self._device(device_id)
        if not payload:
            if device.states.pop(key, None) is not None:
                self._listener.device_state_changed(device_id, key)
            return
        value = payload.decode(errors="replace").strip()
        if device.states.get(key) != value:
            device.states[key] = value
            self._listener.device_state_changed(device_id, key)

    def _on_diag(self, device_id: str, payload: bytes) -> None:
        try:
            event = load_json(payload, max_bytes=_MAX_META_BYTES) if payload else None
        except MalformedMessageError:
            return
        if isinstance(event, dict):
            self._device(device_id).last_diagnostic = event
            self._listener.device_diagnostic(device_id, event)

    def forget(self, device_id: str) -> None:
        """Drop what is known about a device (released or removed)."""
        self.devices.pop(device_id, None)

    # --- commands -------------------------------------------------------------------------

    async def publish_command(self, device_id: str, key: str, payload: str) -> None:
        """Send ``payload`` to ``iob/<device_id>/cmd/<key>`` (QoS 1, never retained).

        Raises:
            HubNotConnectedError: no broker session now.
            HubCommandError: the publish failed or was not acknowledged in time.
        """
        client = self._client
        if client is None or not self._connected:
            raise HubNotConnectedError("the hub is not connected to the broker")
        try:
            await client.publish(
                f"iob/{device_id}/cmd/{key}", payload.encode(), qos=1, retain=False
            )
        except aiomqtt.MqttError as err:
            raise HubCommandError(f"command to {device_id}/{key} failed: {err}") from err
