"""The loopback bridge: the device's real GATT services for TCP clients on 127.0.0.1.

Home Assistant's tests run in another process (and in a chroot) and cannot import this package,
yet they must drive the real device over "BLE". :class:`BridgePeripheral` takes the place of
:class:`~.bluez.BluezPeripheral` in the agent (``ble_bridge = "127.0.0.1:PORT"``, or
``run --ble-bridge``) with the same lifecycle: the same services, the state characteristic and
the advertisement follow the device's state, the IoT Onboard advertisement exists only while the
provisioning window is open. Each TCP client is a central in radio range; its GATT procedures go
through :mod:`.loopback`, so MTU cuts, long writes and which ATT errors reach a central are the
loopback's (and BlueZ's) rules. Closing the socket is the link dropping.

Wire format (docs/ble.md, "Loopback bridge"): every message is a 4-byte big-endian length and
that many bytes of a UTF-8 JSON object, at most :data:`MAX_MESSAGE_SIZE` bytes; byte values are
lower-case hex. Requests carry ``id`` and ``op``; the reply carries the same ``id`` and ``ok``;
pushed ``event`` messages carry no ``id``. A malformed message closes that client (after a
``closing`` event with the reason) and nothing else.

It listens on loopback addresses only: it has no pairing and no range, so anyone who can
connect is "next to the device".
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import struct
from collections.abc import Callable
from typing import Any, Final, TypeAlias, TypeVar

from iob_protocol.ble import SERVICE_UUID
from iob_protocol.sources import MonotonicClock, monotonic

from device_firmware.controller import DeviceController
from device_firmware.factory import ProvisionedDevice
from device_firmware.provisioning.session_host import SessionHost

from .bluez import ProvisioningPeripheral
from .errors import BleError, GattError
from .improv import (
    AUTHORIZATION_SECONDS,
    IMPROV_SERVICE_DATA_UUID,
    IMPROV_SERVICE_UUID,
    improv_service_data,
)
from .loopback import LoopbackCentral, LoopbackPeripheral

_LOGGER = logging.getLogger(__name__)

#: Version of the bridge's wire format (sent in the ``hello`` event).
BRIDGE_VERSION: Final = 1
#: The largest message either side sends (a 512-byte value is 1024 hex characters); a longer
#: value than an attribute holds still fits, so it gets the ATT answer, not a disconnect.
MAX_MESSAGE_SIZE: Final = 4096
#: Centrals "in range" at once; more are refused.
MAX_CLIENTS: Final = 8
#: Bytes queued for a client that does not read; beyond this it is disconnected.
MAX_PENDING_OUTPUT: Final = 256 * 1024
_LENGTH: Final = struct.Struct(">I")
_OPS: Final = frozenset(
    {"advertisement", "connect", "disconnect", "write", "read", "subscribe", "unsubscribe"}
)
_IOB: Final = "iot_onboard"
_IMPROV: Final = "improv"

Document: TypeAlias = dict[str, Any]
_T = TypeVar("_T")


class BridgeProtocolError(BleError):
    """A client sent something that is not a bridge message; that client is closed."""


def check_loopback(host: str) -> str:
    """``host`` if it is a loopback IP address; otherwise :class:`BleError` with the fix."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError as err:
        raise BleError(f"the BLE bridge needs an IP address, not {host!r}") from err
    if not address.is_loopback:
        raise BleError(
            f"the BLE bridge listens on loopback only (127.0.0.1 or ::1), not {host}: it has "
            "no access control"
        )
    return str(address)


class BridgePeripheral(ProvisioningPeripheral):
    """BLE provisioning over loopback TCP: what the agent starts, updates and stops."""

    def __init__(
        self,
        *,
        host: SessionHost,
        controller: DeviceController,
        device: ProvisionedDevice,
        bind: tuple[str, int],
        improv: bool = True,
        clock: MonotonicClock = monotonic,
        improv_authorization: float = AUTHORIZATION_SECONDS,
    ) -> None:
        """Configure; nothing listens before :meth:`start` (arguments as BluezPeripheral's).

        ``bind`` is the loopback address and port (0: any free port, see :attr:`port`).
        """
        super().__init__(
            host=host,
            controller=controller,
            device=device,
            improv=improv,
            clock=clock,
            improv_authorization=improv_authorization,
        )
        self._bind = bind
        self._loopback = LoopbackPeripheral(self.services)
        self._advertisement: Document | None = None
        self._server: asyncio.Server | None = None
        self._clients: set[_Client] = set()
        self._connections = 0

    @property
    def port(self) -> int:
        """The bound TCP port (after :meth:`start`)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the BLE bridge is not listening")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def advertising(self) -> dict[str, bool]:
        """Which advertisements (``iot_onboard``, ``improv``) are on the air."""
        adverts = {_IOB: self._advertise}
        if self.improv is not None:
            adverts[_IMPROV] = self.improv.advertised
        return adverts

    @property
    def advertisement(self) -> Document | None:
        """What a scanner sees now (the ``advertisement`` of the wire format), or None."""
        return self._advertisement

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Attach the services, listen, and advertise as the device's state says.

        Raises :class:`BleError` for a non-loopback address or a port that cannot be bound.
        """
        host = check_loopback(self._bind[0])
        await self._loopback.start()
        try:
            self._server = await asyncio.start_server(self._accept, host, self._bind[1])
        except OSError as err:
            await self._loopback.stop()
            raise BleError(
                f"the BLE bridge cannot listen on {host} port {self._bind[1]}: {err} "
                "(choose another port, or 0 for any free one)"
            ) from err
        literal = f"[{host}]" if ":" in host else host
        # Tests started with port 0 read the port from this line.
        _LOGGER.info("BLE bridge listening on %s:%d (no radio, no BlueZ)", literal, self.port)

    async def stop(self) -> None:
        """Drop every client (their links close), stop listening, detach the services."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for client in list(self._clients):
            await client.aclose("the device is stopping")
        if server is not None:
            await server.wait_closed()
        await self._loopback.stop()
        self._advertisement = None

    # --- advertisement ----------------------------------------------------------------------

    def _document(self) -> Document | None:
        """BlueZ's two advertisements merged, as a scanner reports one device."""
        service_data: dict[str, str] = {}
        service_uuids: list[str] = []
        if self._advertise:
            data = self.provisioning.status.service_data(self._device_id)
            service_data[SERVICE_UUID] = data.hex()
        if self.improv is not None and self.improv.advertised:
            service_uuids.append(IMPROV_SERVICE_UUID)
            service_data[IMPROV_SERVICE_DATA_UUID] = improv_service_data(self.improv.state).hex()
        if not service_data:
            return None
        return {
            "local_name": self.local_name,
            "connectable": True,
            "service_uuids": service_uuids,
            "service_data": service_data,
        }

    def _publish(self) -> None:
        document = self._document()
        if document == self._advertisement:
            return
        self._advertisement = document
        _LOGGER.info(
            "BLE bridge advertisement: %s",
            "none" if document is None else ", ".join(sorted(document["service_data"])),
        )
        for client in list(self._clients):
            client.push({"event": "advertisement", "advertisement": document})

    async def _advertisement_changed(self) -> None:
        self._publish()

    # --- clients ----------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        self._connections += 1
        name = f"bridge-{self._connections}-{peer[1] if isinstance(peer, tuple) else 'peer'}"
        client = _Client(self, name, reader, writer)
        if len(self._clients) >= MAX_CLIENTS:
            await client.aclose(f"more than {MAX_CLIENTS} clients")
            return
        self._clients.add(client)
        try:
            await client.serve()
        finally:
            self._clients.discard(client)

    def _connect(self, link: str, mtu: int, sink: Callable[[str, bytes], None]) -> LoopbackCentral:
        return self._loopback.connect(link, mtu=mtu, sink=sink)


class _Client:
    """One TCP client: requests in order, notifications and advertisements pushed."""

    def __init__(
        self,
        bridge: BridgePeripheral,
        name: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self._bridge = bridge
        self.name = name
        self._reader = reader
        self._writer = writer
        self._central: LoopbackCentral | None = None
        self._links = 0
        self._task: asyncio.Task[Any] | None = None

    async def serve(self) -> None:
        self._task = asyncio.current_task()
        self.push(
            {
                "event": "hello",
                "version": BRIDGE_VERSION,
                "advertisement": self._bridge.advertisement,
            }
        )
        reason = "the client closed the connection"
        try:
            while not self._writer.is_closing():
                message = await self._read()
                if message is None:
                    break
                reply = await self._handle(message)
                self.push({"id": message["id"], **reply})
                await self._writer.drain()
        except BridgeProtocolError as err:
            reason = str(err)
            _LOGGER.warning("BLE bridge client %s closed: %s", self.name, reason)
        except (ConnectionError, asyncio.IncompleteReadError):
            reason = "the connection broke"
        except asyncio.CancelledError:
            reason = "the device is stopping"
            raise
        except Exception:
            # A bug in one exchange must not take BLE (or the agent) down for everyone.
            _LOGGER.exception("BLE bridge client %s failed", self.name)
            reason = "internal error (see the device's log)"
        finally:
            self._drop_link()
            await self._finish(reason)

    async def _read(self) -> Document | None:
        try:
            header = await self._reader.readexactly(_LENGTH.size)
        except asyncio.IncompleteReadError as err:
            if err.partial:
                raise BridgeProtocolError("connection closed inside a length prefix") from err
            return None
        (size,) = _LENGTH.unpack(header)
        if not 0 < size <= MAX_MESSAGE_SIZE:
            raise BridgeProtocolError(f"message of {size} bytes (1-{MAX_MESSAGE_SIZE} allowed)")
        try:
            body = await self._reader.readexactly(size)
        except asyncio.IncompleteReadError as err:
            raise BridgeProtocolError(f"connection closed inside a {size}-byte message") from err
        return _parse(body)

    def push(self, document: Document) -> None:
        """Queue one message; a client that stops reading is disconnected."""
        if self._writer.is_closing():
            return
        body = json.dumps(document, separators=(",", ":")).encode()
        self._writer.write(_LENGTH.pack(len(body)) + body)
        if self._writer.transport.get_write_buffer_size() > MAX_PENDING_OUTPUT:
            _LOGGER.warning("BLE bridge client %s does not read; disconnected", self.name)
            self._drop_link()
            self._writer.transport.abort()

    async def aclose(self, reason: str) -> None:
        """Tell the client why, then close (and end :meth:`serve`)."""
        task = self._task
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return
        self._drop_link()
        await self._finish(reason)

    async def _finish(self, reason: str) -> None:
        self.push({"event": "closing", "reason": reason})
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()

    def _drop_link(self) -> None:
        central, self._central = self._central, None
        if central is not None:
            central.disconnect()  # the services' link_closed hooks run now
            _LOGGER.info("BLE bridge central %s disconnected", central.link)

    def _notification(self, uuid: str, value: bytes) -> None:
        self.push({"event": "notification", "uuid": uuid, "value": value.hex()})

    # --- requests ---------------------------------------------------------------------------

    async def _handle(self, message: Document) -> Document:
        op = message["op"]
        if op == "advertisement":
            return {"ok": True, "advertisement": self._bridge.advertisement}
        if op == "connect":
            return self._connect(_field(message, "mtu", int))
        if op == "disconnect":
            self._drop_link()
            return {"ok": True}
        return await self._gatt(op, message)

    async def _gatt(self, op: str, message: Document) -> Document:
        uuid = _field(message, "uuid", str)
        central = self._central
        if central is None:
            return _failure("not_connected", f"{op} needs a connection: send connect first")
        try:
            return await _procedure(central, op, uuid, message)
        except GattError as err:
            return {**_failure("att", err.detail), "att": err.kind.value}
        except KeyError:
            return _failure("unknown_characteristic", f"no characteristic {uuid}")
        except ValueError as err:
            return _failure("invalid_value", str(err))

    def _connect(self, mtu: int) -> Document:
        if self._central is not None:
            return _failure("already_connected", f"{self._central.link} is connected")
        self._links += 1
        self._central = central = self._bridge._connect(  # noqa: SLF001 - its own bridge
            f"{self.name}-{self._links}", mtu, self._notification
        )
        _LOGGER.info("BLE bridge central %s connected (MTU %d)", central.link, central.mtu)
        return {"ok": True, "link": central.link, "mtu": central.mtu}


async def _procedure(central: LoopbackCentral, op: str, uuid: str, message: Document) -> Document:
    """One GATT procedure with the loopback's ATT rules (errors propagate to the caller)."""
    if op == "write":
        value = _hex(message)
        await central.write(uuid, value, response=_field(message, "response", bool))
    elif op == "read":
        return {"ok": True, "value": (await central.read(uuid)).hex()}
    elif op == "subscribe":
        await central.subscribe(uuid)
    else:
        await central.unsubscribe(uuid)
    return {"ok": True}


def _failure(error: str, detail: str) -> Document:
    return {"ok": False, "error": error, "detail": detail}


def _parse(body: bytes) -> Document:
    try:
        message = json.loads(body.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BridgeProtocolError(f"not UTF-8 JSON: {err}") from err
    if not isinstance(message, dict):
        raise BridgeProtocolError("a message must be a JSON object")
    _field(message, "id", int)
    op = _field(message, "op", str)
    if op not in _OPS:
        raise BridgeProtocolError(f"unknown op {op[:40]!r} (one of {', '.join(sorted(_OPS))})")
    return message


def _field(message: Document, name: str, kind: type[_T]) -> _T:
    value = message.get(name)
    # bool is an int in Python, never in this format.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BridgeProtocolError(f"{name!r} must be a JSON {kind.__name__}")
    return value


def _hex(message: Document) -> bytes:
    text = _field(message, "value", str)
    try:
        return bytes.fromhex(text)
    except ValueError as err:
        raise BridgeProtocolError(f"'value' is not hex: {err}") from err
