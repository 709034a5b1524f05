"""The device's MQTT life once it is owned: availability, capability descriptor, state, commands.

Topics (the device's credentials allow only ``iob/<device_id>/#``):

* ``iob/<id>/availability`` -- retained ``online``; the broker publishes the retained will
  ``offline`` when the connection dies, and a clean stop publishes ``offline`` itself.
* ``iob/<id>/meta`` -- retained JSON capability descriptor (schema in docs/mqtt.md).
* ``iob/<id>/state/<key>`` -- retained state, on change and every ``republish_interval``.
* ``iob/<id>/cmd/<key>`` -- commands (``on``/``off``, ``press``, a number); validated, then the
  new state is published at once. Retained commands are ignored (they would replay on every
  reconnect).
* ``iob/<id>/cmd/_identify``, ``iob/<id>/cmd/_factory_reset`` -- device-level commands (payload:
  the command's name), listed in meta's ``commands``; routed before any entity key (keys start
  with a letter) to the actions the agent supplies.
* ``iob/<id>/diag`` -- JSON events (connected, command rejected, read failed), not retained;
  ``code`` carries the diagnostic code where one fits (``TIMEOUT``, a failed device command's).

Connection losses are retried with jittered exponential backoff (1 s to 60 s), logged once
when the connection is lost (with BROKER_UNREACHABLE, also :attr:`MqttRuntime.diagnostic` until
the connection is back) and once when it is back. A broker that crashed or restarted is that: a
lost connection, never refused credentials (:func:`classify_mqtt_error`). Every
(re)connection re-publishes availability, meta and all states, so a broker that lost its
retained store (restart without persistence) is repopulated. Bad credentials (only a CONNACK
refusing them, MQTT 5 reason 0x86/0x87) and TLS failures end :meth:`MqttRuntime.run` with an
:class:`MqttRuntimeError` carrying the diagnostic code: retrying cannot fix them. For
BROKER_AUTH_FAILED the agent then asks the account service for the current credential (the
owner may have rotated the password; ``relay_client.CredentialRecovery``) and starts a new
runtime with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import random
import re
import ssl
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, TypeAlias, TypeVar

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from iob_protocol.diagnostics import DiagnosticCode
from paho.mqtt.reasoncodes import ReasonCode

from .capabilities.base import (
    Capability,
    CapabilityError,
    CommandRejectedError,
    format_state,
)
from .errors import DiagnosedError

_LOGGER = logging.getLogger(__name__)

#: Version of the topic layout and the meta document.
META_PROTOCOL: Final = 1
ONLINE: Final = b"online"
OFFLINE: Final = b"offline"
BACKOFF_BASE: Final = 1.0
BACKOFF_CAP: Final = 60.0
#: CONNACK reason codes for refused credentials: MQTT 5 "bad user name or password" (0x86) and
#: "not authorized" (0x87, what Mosquitto 2.0 sends; paho 2 maps MQTT 3.1.1's return codes 4
#: and 5 to these too). A plain int 4 or 5 on any other error is paho's MQTT_ERR_NO_CONN or
#: MQTT_ERR_CONN_REFUSED: the connection is gone, nothing was refused.
_AUTH_REASONS: Final = frozenset({0x86, 0x87})
_DEVICE_ID: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PIN: Final = re.compile(r"^[0-9a-fA-F]{64}$")
_STOP_TIMEOUT: Final = 5.0
#: Device-level commands Home Assistant may send (``iob/<id>/cmd/_<name>``, payload ``<name>``).
DEVICE_COMMANDS: Final = frozenset({"identify", "factory_reset"})
#: Entity keys start with a letter, so a leading underscore names a device-level command.
_DEVICE_COMMAND_PREFIX: Final = "_"

#: A device-level command's action; a :class:`DiagnosedError` is reported with its code.
DeviceCommand: TypeAlias = Callable[[], Awaitable[None]]
_JITTER: Final = random.SystemRandom()
_T = TypeVar("_T")

if sys.version_info < (3, 12):

    class _Client(aiomqtt.Client):
        """aiomqtt's client waiting as Python 3.12's ``asyncio.wait_for`` does.

        On 3.11 (Raspberry Pi OS Bookworm) ``wait_for`` drops a cancellation that arrives
        together with the awaited reply (fixed in 3.12), so a stop during a publish was lost.
        """

        async def _wait_for(self, fut: Awaitable[_T], timeout: float | None) -> _T:  # noqa: ASYNC109 - overrides aiomqtt
            if timeout is None:
                timeout = self.timeout
            try:
                async with asyncio.timeout(None if timeout == math.inf else timeout):
                    return await fut
            except TimeoutError:
                raise aiomqtt.MqttError("Operation timed out") from None

else:
    _Client = aiomqtt.Client


class MqttRuntimeError(DiagnosedError):
    """The runtime cannot continue; ``code`` says what the user is shown."""


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """Where and how the device connects: per-device credentials from the account service.

    ``ca_pin`` is the hex SHA-256 of the broker certificate's SubjectPublicKeyInfo. When set,
    the certificate chain is not checked against CAs (a self-hosted broker's certificate is
    usually self-signed); the key must match the pin instead, and the match is checked right
    after the TLS handshake, before the credentials are sent.
    """

    host: str
    port: int
    username: str
    password: str = field(repr=False)
    tls: bool
    ca_pin: str | None = None

    def __post_init__(self) -> None:
        """Refuse settings that could only fail at connection time."""
        if not 1 <= self.port <= 65535:  # noqa: PLR2004 - the TCP port range
            raise ValueError("port must be 1-65535")
        if self.ca_pin is not None:
            if not self.tls:
                raise ValueError("ca_pin needs tls")
            if not _PIN.match(self.ca_pin):
                raise ValueError("ca_pin must be 64 hex digits (SHA-256 of the broker's SPKI)")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceInfo:
    """What Home Assistant shows about the device (the ``device`` object of meta)."""

    name: str | None = None
    model: str | None = None
    manufacturer: str = "IoT Onboard"
    sw_version: str | None = None
    hw_version: str | None = None


def backoff_delay(
    attempt: int,
    *,
    base: float = BACKOFF_BASE,
    cap: float = BACKOFF_CAP,
    jitter: float,
) -> float:
    """Seconds to wait before reconnection ``attempt`` (0 for the first retry).

    The ceiling doubles from ``base`` up to ``cap``; the delay is drawn from the upper half of
    the ceiling with ``jitter`` in [0, 1), so a fleet that lost the same broker does not come
    back in lockstep, and no delay is ever shorter than half the ceiling.
    """
    ceiling = min(cap, base * 2.0 ** min(max(attempt, 0), 62))
    fraction = min(max(jitter, 0.0), 1.0)
    return ceiling / 2 + ceiling / 2 * fraction


def spki_sha256(certificate_der: bytes) -> str:
    """The pin of a certificate: hex SHA-256 of its DER SubjectPublicKeyInfo."""
    certificate = x509.load_der_x509_certificate(certificate_der)
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


class PinMismatchError(ssl.SSLError):
    """The broker's key is not the pinned one (a different broker, or interception)."""


def _pinned_socket_class(pin: str) -> type[ssl.SSLSocket]:
    expected = pin.lower()

    class PinnedSSLSocket(ssl.SSLSocket):
        """Checks the pin as soon as the handshake completes, before any MQTT byte is sent."""

        def do_handshake(self, block: bool = False) -> None:  # noqa: FBT001, FBT002 - ssl's API
            super().do_handshake(block)
            certificate = self.getpeercert(binary_form=True)
            if certificate is None or not hmac.compare_digest(spki_sha256(certificate), expected):
                self.close()
                raise PinMismatchError("the broker's public key does not match the pin")

    return PinnedSSLSocket


def build_tls_context(settings: MqttSettings) -> ssl.SSLContext:
    """A client TLS context: system CAs and hostname check, or the pin (blocking: CA files)."""
    if settings.ca_pin is None:
        context = ssl.create_default_context()
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the pin replaces chain validation
        context.sslsocket_class = _pinned_socket_class(settings.ca_pin)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def classify_mqtt_error(err: BaseException) -> DiagnosticCode:
    """What an aiomqtt error means for the device.

    BROKER_AUTH_FAILED only for a CONNACK refusing the credential: aiomqtt raises
    ``MqttConnectError`` with the CONNACK's ``ReasonCode``, 0x86 or 0x87. TLS_FAILED when a TLS
    error is behind it. Everything else -- the broker crashed or restarted (``Unexpected
    disconnection``, ``Disconnected during message iteration``), a publish or subscribe on a
    connection that is gone (``MqttCodeError`` with paho's int ``MQTT_ERR_NO_CONN``, 4), a
    refused TCP connection, a broker that is unavailable or busy -- is BROKER_UNREACHABLE:
    retried with backoff.
    """
    if isinstance(err, MqttConnectError):
        rc = err.rc
        if isinstance(rc, ReasonCode) and rc.value in _AUTH_REASONS:
            return DiagnosticCode.BROKER_AUTH_FAILED
    if _tls_failure(err) is not None:
        return DiagnosticCode.TLS_FAILED
    return DiagnosticCode.BROKER_UNREACHABLE


def _tls_failure(err: BaseException) -> ssl.SSLError | None:
    """The TLS error behind an aiomqtt error (aiomqtt raises ``from None``: look at context)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _payload_bytes(payload: Any) -> bytes | None:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode()
    return None


class MqttRuntime:
    """Publishes one device's entities and executes their commands, until cancelled."""

    def __init__(
        self,
        device_id: str,
        settings: MqttSettings,
        capabilities: Sequence[Capability],
        *,
        device_info: DeviceInfo | None = None,
        sample_interval: float = 5.0,
        republish_interval: float = 300.0,
        backoff_base: float = BACKOFF_BASE,
        backoff_cap: float = BACKOFF_CAP,
        keepalive: int = 30,
        io_timeout: float = 10.0,
        device_commands: Mapping[str, DeviceCommand] | None = None,
    ) -> None:
        """Prepare; nothing connects until :meth:`run`.

        Args:
            device_id: the device id (also the MQTT client id and the topic prefix).
            settings: broker address and the device's own credentials.
            capabilities: the entities, with unique keys.
            device_info: name, model and versions for Home Assistant's device registry.
            sample_interval: seconds between reads; changes are published at once.
            republish_interval: seconds between re-publications of every state.
            backoff_base: first reconnection delay ceiling, in seconds.
            backoff_cap: largest reconnection delay, in seconds.
            keepalive: MQTT keepalive; the broker publishes the will after 1.5 times it.
            io_timeout: seconds for one broker round trip, one read and one command.
            device_commands: actions for device-level commands (names in
                :data:`DEVICE_COMMANDS`), listed in meta's ``commands``.
        """
        if not _DEVICE_ID.match(device_id):
            raise ValueError(f"device id {device_id!r} cannot name MQTT topics")
        keys = [capability.key for capability in capabilities]
        if len(set(keys)) != len(keys):
            raise ValueError(f"capability keys must be unique: {sorted(keys)}")
        commands = dict(device_commands or {})
        if not set(commands) <= DEVICE_COMMANDS:
            raise ValueError(f"unknown device commands: {sorted(set(commands) - DEVICE_COMMANDS)}")
        self._device_commands = commands
        self.device_id = device_id
        self._settings = settings
        self._capabilities = list(capabilities)
        self._by_key = {capability.key: capability for capability in capabilities}
        self._device_info = device_info or DeviceInfo()
        self._sample_interval = sample_interval
        self._republish_interval = republish_interval
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._keepalive = keepalive
        self._io_timeout = io_timeout
        self._base = f"iob/{device_id}"
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._wake = asyncio.Event()
        self._running = False
        self._cleared = False
        self._published: dict[str, bytes] = {}
        self._read_failures: set[str] = set()
        self._sessions = 0
        self._diagnostic: DiagnosticCode | None = None

    # --- topics and documents -----------------------------------------------------------------

    @property
    def availability_topic(self) -> str:
        """Retained ``online``/``offline``; the will."""
        return f"{self._base}/availability"

    @property
    def meta_topic(self) -> str:
        """Retained capability descriptor."""
        return f"{self._base}/meta"

    @property
    def diag_topic(self) -> str:
        """Diagnostic events."""
        return f"{self._base}/diag"

    def state_topic(self, key: str) -> str:
        """Retained state of one entity."""
        return f"{self._base}/state/{key}"

    def command_topic(self, key: str) -> str:
        """Commands for one entity."""
        return f"{self._base}/cmd/{key}"

    def meta(self) -> dict[str, Any]:
        """The capability descriptor published on ``iob/<id>/meta``."""
        info = self._device_info
        optional = {
            "name": info.name,
            "model": info.model,
            "sw_version": info.sw_version,
            "hw_version": info.hw_version,
        }
        device: dict[str, Any] = {
            "id": self.device_id,
            "manufacturer": info.manufacturer,
            **{name: value for name, value in optional.items() if value is not None},
        }
        document: dict[str, Any] = {
            "protocol": META_PROTOCOL,
            "device": device,
            "entities": [capability.descriptor.to_json() for capability in self._capabilities],
        }
        if self._device_commands:
            document["commands"] = sorted(self._device_commands)
        return document

    @property
    def connected(self) -> bool:
        """Whether a session is up and has published availability, meta and states."""
        return self._connected.is_set()

    @property
    def diagnostic(self) -> DiagnosticCode | None:
        """BROKER_UNREACHABLE while the runtime retries a lost connection, else None."""
        return self._diagnostic

    async def wait_connected(self) -> None:
        """Return once the runtime is connected (and has published everything)."""
        await self._connected.wait()

    # --- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Stay connected and publishing until cancelled; a cancel stops cleanly (``offline``).

        Raises:
            MqttRuntimeError: BROKER_AUTH_FAILED (credentials refused) or TLS_FAILED.
        """
        if self._running:
            raise RuntimeError("MqttRuntime.run is already running")
        self._running = True
        tls = (
            await asyncio.to_thread(build_tls_context, self._settings)
            if self._settings.tls
            else None
        )
        for capability in self._capabilities:
            capability.set_listener(self._wake.set)
        attempt = 0
        outage = False
        try:
            while True:
                established = False

                def on_established() -> None:
                    nonlocal established, outage, attempt
                    established = True
                    if outage:
                        _LOGGER.info("MQTT connection to %s is back", self._settings.host)
                    outage = False
                    attempt = 0
                    self._diagnostic = None

                try:
                    await self._session(tls, on_established)
                except aiomqtt.MqttError as err:
                    self._raise_if_permanent(err)
                    self._diagnostic = DiagnosticCode.BROKER_UNREACHABLE
                    if not outage:
                        what = "lost" if established else "cannot be established"
                        _LOGGER.warning(
                            "%s: MQTT connection to %s:%s %s (%s); retrying with backoff",
                            DiagnosticCode.BROKER_UNREACHABLE.value,
                            self._settings.host,
                            self._settings.port,
                            what,
                            err,
                        )
                    outage = True
                delay = backoff_delay(
                    attempt,
                    base=self._backoff_base,
                    cap=self._backoff_cap,
                    jitter=_JITTER.random(),
                )
                attempt += 1
                await asyncio.sleep(delay)
        finally:
            for capability in self._capabilities:
                capability.set_listener(None)
            self._running = False

    def _raise_if_permanent(self, err: aiomqtt.MqttError) -> None:
        code = classify_mqtt_error(err)
        if code is DiagnosticCode.BROKER_AUTH_FAILED:
            raise MqttRuntimeError(
                DiagnosticCode.BROKER_AUTH_FAILED,
                f"broker {self._settings.host}:{self._settings.port} refused user "
                f"{self._settings.username!r}: {err}",
            ) from err
        failure = _tls_failure(err)
        if code is DiagnosticCode.TLS_FAILED and failure is not None:
            raise MqttRuntimeError(
                DiagnosticCode.TLS_FAILED,
                f"TLS with {self._settings.host}:{self._settings.port} failed: {failure}",
            ) from err

    def _client_for(self, tls: ssl.SSLContext | None, *, will: bool) -> aiomqtt.Client:
        return _Client(
            self._settings.host,
            self._settings.port,
            username=self._settings.username,
            password=self._settings.password,
            identifier=self.device_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=(
                aiomqtt.Will(self.availability_topic, OFFLINE, qos=1, retain=True) if will else None
            ),
            # A fresh session each time: commands queued while offline are stale by now.
            clean_start=True,
            keepalive=self._keepalive,
            timeout=self._io_timeout,
            tls_context=tls,
        )

    async def _session(
        self, tls: ssl.SSLContext | None, on_established: Callable[[], None]
    ) -> None:
        """One connection: announce, report ``on_established``, then serve until it is lost.

        The command loop runs from the start: it is what notices a dropped connection (aiomqtt
        leaves a publish in flight waiting for its timeout), and then the whole session ends.
        """
        client = self._client_for(tls, will=True)
        async with client:
            self._client = client
            self._sessions += 1
            try:
                try:
                    async with asyncio.TaskGroup() as group:
                        group.create_task(self._serve_commands(client))
                        group.create_task(self._announce_and_publish(client, on_established))
                except BaseExceptionGroup as group_error:
                    # Not `except*`: Python before 3.11.4 (Bookworm has 3.11.2) wraps an
                    # exception raised inside `except*` in a new ExceptionGroup.
                    if sys.version_info < (3, 12) and (task := asyncio.current_task()):
                        # 3.11's TaskGroup cancels this task when a child fails and does not
                        # take it back (3.12 does): left, it turns later timeouts into cancels.
                        task.uncancel()
                    mqtt_errors, others = group_error.split(aiomqtt.MqttError)
                    if mqtt_errors is None or others is not None:
                        raise
                    raise mqtt_errors.exceptions[0] from None
            except asyncio.CancelledError:
                if not self._cleared:
                    with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                        async with asyncio.timeout(_STOP_TIMEOUT):
                            await client.publish(
                                self.availability_topic, OFFLINE, qos=1, retain=True
                            )
                raise
            finally:
                self._connected.clear()
                self._client = None

    async def _announce_and_publish(
        self, client: aiomqtt.Client, on_established: Callable[[], None]
    ) -> None:
        await client.subscribe(f"{self._base}/cmd/+", qos=1)
        if not self._cleared:
            await self._announce(client)
        self._connected.set()
        on_established()
        await self._publish_states_forever(client)

    async def _announce(self, client: aiomqtt.Client) -> None:
        meta = json.dumps(self.meta(), separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        await client.publish(self.availability_topic, ONLINE, qos=1, retain=True)
        await client.publish(self.meta_topic, meta.encode(), qos=1, retain=True)
        self._published.clear()
        await self._publish_states(client, force=True)
        await self._diag(
            client, "connected", session=self._sessions, entities=len(self._capabilities)
        )

    # --- state ----------------------------------------------------------------------------------

    async def _publish_states_forever(self, client: aiomqtt.Client) -> None:
        loop = asyncio.get_running_loop()
        next_full = loop.time() + self._republish_interval
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._sample_interval):
                    await self._wake.wait()
            self._wake.clear()
            force = loop.time() >= next_full
            if force:
                next_full = loop.time() + self._republish_interval
            await self._publish_states(client, force=force)

    async def _publish_states(self, client: aiomqtt.Client, *, force: bool) -> None:
        for capability in self._capabilities:
            if capability.descriptor.readable:
                await self._publish_state(client, capability, force=force)

    async def _publish_state(
        self, client: aiomqtt.Client, capability: Capability, *, force: bool
    ) -> None:
        if self._cleared:
            return
        payload = format_state(await self._read(client, capability)).encode()
        if not force and self._published.get(capability.key) == payload:
            return
        await client.publish(self.state_topic(capability.key), payload, qos=1, retain=True)
        self._published[capability.key] = payload

    async def _read(self, client: aiomqtt.Client, capability: Capability) -> Any:
        try:
            async with asyncio.timeout(self._io_timeout):
                value = await capability.read()
        except (CapabilityError, TimeoutError) as err:
            reason = str(err) or "timed out"
            if capability.key not in self._read_failures:
                # Once per failure streak: a broken sensor must not flood the log.
                self._read_failures.add(capability.key)
                _LOGGER.warning("Reading %s failed: %s", capability.key, reason)
                await self._diag(
                    client, "read_failed", key=capability.key, reason=reason, **_code(err)
                )
            return None
        self._read_failures.discard(capability.key)
        return value

    # --- commands ---------------------------------------------------------------------------

    async def _serve_commands(self, client: aiomqtt.Client) -> None:
        prefix = f"{self._base}/cmd/"
        async for message in client.messages:
            topic = str(message.topic)
            if not topic.startswith(prefix):
                continue
            key = topic.removeprefix(prefix)
            if key.startswith(_DEVICE_COMMAND_PREFIX):
                # Before the entity lookup: device commands are not entities.
                await self._device_command(client, key, message)
                continue
            capability = self._by_key.get(key)
            if capability is None:
                await self._diag(client, "command_rejected", key=key, reason="unknown entity")
                continue
            if message.retain:
                await self._diag(
                    client, "command_rejected", key=key, reason="retained commands are ignored"
                )
                continue
            await self._execute(client, capability, _payload_bytes(message.payload))

    async def _device_command(
        self, client: aiomqtt.Client, key: str, message: aiomqtt.Message
    ) -> None:
        """``cmd/_identify``, ``cmd/_factory_reset``: the payload repeats the command's name.

        Repeating the name guards the reset against a stray publish on the wrong topic.
        """
        name = key.removeprefix(_DEVICE_COMMAND_PREFIX)
        action = self._device_commands.get(name)
        payload = (_payload_bytes(message.payload) or b"").strip().decode("utf-8", "replace")
        reason = None
        if action is None:
            reason = "unknown device command"
        elif message.retain:
            reason = "retained commands are ignored"
        elif payload != name:
            reason = f"the payload must be {name!r}"
        if action is None or reason is not None:
            await self._diag(client, "command_rejected", key=key, reason=reason)
            return
        _LOGGER.info("device command %s from MQTT", name)
        try:
            async with asyncio.timeout(self._io_timeout):
                await action()
        except DiagnosedError as err:
            _LOGGER.warning("Command %s failed: %s", name, err)
            await self._diag(
                client, "command_failed", key=key, reason=err.code.message, code=err.code.value
            )
        except TimeoutError:
            _LOGGER.warning("Command %s timed out", name)
            await self._diag(
                client,
                "command_failed",
                key=key,
                reason="timed out",
                code=DiagnosticCode.TIMEOUT.value,
            )

    async def _execute(
        self, client: aiomqtt.Client, capability: Capability, payload: bytes | None
    ) -> None:
        try:
            value = capability.parse_command(payload or b"")
            async with asyncio.timeout(self._io_timeout):
                await capability.command(value)
        except CommandRejectedError as err:
            await self._diag(client, "command_rejected", key=capability.key, reason=str(err))
        except (CapabilityError, TimeoutError) as err:
            reason = str(err) or "timed out"
            _LOGGER.warning("Command for %s failed: %s", capability.key, reason)
            await self._diag(
                client, "command_failed", key=capability.key, reason=reason, **_code(err)
            )
        if capability.descriptor.readable:
            await self._publish_state(client, capability, force=True)

    # --- diagnostics and reset --------------------------------------------------------------

    async def _diag(self, client: aiomqtt.Client, event: str, **fields: Any) -> None:
        if self._cleared:
            return
        document = {"event": event, "time": datetime.now(UTC).isoformat(), **fields}
        await client.publish(self.diag_topic, json.dumps(document, sort_keys=True).encode())

    async def publish_diagnostic(self, event: str, **fields: Any) -> bool:
        """Publish an event on ``iob/<id>/diag`` if connected; False when it was dropped."""
        client = self._client
        if client is None or not self.connected or self._cleared:
            return False
        try:
            await self._diag(client, event, **fields)
        except aiomqtt.MqttError:
            return False
        return True

    async def clear_retained(self) -> None:
        """Delete this device's retained messages (factory reset): meta, availability, states.

        Uses the live connection when there is one (the runtime then publishes nothing more;
        cancel :meth:`run` afterwards), or a short connection of its own otherwise.

        Raises:
            MqttRuntimeError: the broker could not be reached or refused the credentials.
        """
        self._cleared = True
        topics = [self.meta_topic, self.availability_topic] + [
            self.state_topic(capability.key)
            for capability in self._capabilities
            if capability.descriptor.readable
        ]
        client = self._client
        try:
            if client is not None and self.connected:
                await self._publish_empty(client, topics)
                return
            tls = (
                await asyncio.to_thread(build_tls_context, self._settings)
                if self._settings.tls
                else None
            )
            async with self._client_for(tls, will=False) as own:
                await self._publish_empty(own, topics)
        except aiomqtt.MqttError as err:
            self._raise_if_permanent(err)
            raise MqttRuntimeError(
                DiagnosticCode.TIMEOUT, f"could not clear retained messages: {err}"
            ) from err

    @staticmethod
    async def _publish_empty(client: aiomqtt.Client, topics: list[str]) -> None:
        for topic in topics:
            # An empty retained payload deletes the retained message.
            await client.publish(topic, b"", qos=1, retain=True)


def _code(err: BaseException) -> dict[str, str]:
    """The ``code`` field of a diag event, where a diagnostic code fits the failure."""
    if isinstance(err, TimeoutError):
        return {"code": DiagnosticCode.TIMEOUT.value}
    return {}
