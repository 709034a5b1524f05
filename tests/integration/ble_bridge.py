"""A client of the device agent's loopback BLE bridge (``run --ble-bridge 127.0.0.1:PORT``).

The agent serves its real GATT services (IoT Onboard, Improv) to TCP clients on loopback in
place of a radio; docs/ble.md ("Loopback bridge") has the wire format. This module is shaped
like bleak's ``BleakClient`` (``connect``, ``write_gatt_char``, ``read_gatt_char``,
``start_notify``, ``stop_notify``, ``disconnect``, ``is_connected``, ``mtu_size``) so Home
Assistant's tests can wrap it in a fake BleakClient, and it imports only the standard library:
neither Home Assistant nor ``device_firmware`` nor ``iob_protocol`` (the device tests use it too).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import re
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, TypeAlias

#: The bridge's wire format version this client speaks.
BRIDGE_VERSION: Final = 1
#: The largest message the bridge accepts (and this client sends or accepts).
MAX_MESSAGE_SIZE: Final = 4096
DEFAULT_TIMEOUT: Final = 10.0
DEFAULT_MTU: Final = 185
START_TIMEOUT: Final = 30.0
_LENGTH: Final = struct.Struct(">I")
_READY_LINE: Final = re.compile(
    r"BLE bridge listening on (?:\[[0-9a-fA-F:]+\]|[0-9.]+):(?P<port>\d+)"
)

NotifyCallback: TypeAlias = Callable[[str, bytearray], Awaitable[None] | None]
AdvertisementCallback: TypeAlias = Callable[["BridgeAdvertisement | None"], None]


class BridgeError(Exception):
    """Base of this client's errors."""


class BridgeClosedError(BridgeError):
    """The bridge closed the connection (the link is gone); ``reason`` says why if it said."""

    def __init__(self, reason: str) -> None:
        """Keep the reason the bridge gave."""
        super().__init__(f"BLE bridge connection closed: {reason}")
        self.reason = reason


class BridgeRequestError(BridgeError):
    """The bridge refused a request: ``error`` (``att``, ``not_connected`` ...) and detail."""

    def __init__(self, error: str, detail: str, att: str | None = None) -> None:
        """Keep the bridge's error code, detail and, for ATT errors, BlueZ's error name."""
        super().__init__(f"{error}{f' ({att})' if att else ''}: {detail}")
        self.error = error
        self.detail = detail
        #: ``NotPermitted``, ``InvalidOffset`` ... (``org.bluez.Error.<att>`` on a real device).
        self.att = att


@dataclass(frozen=True, slots=True)
class BridgeAdvertisement:
    """What a scanner sees of the device (one merged advertisement and scan response)."""

    local_name: str
    connectable: bool
    service_uuids: tuple[str, ...]
    service_data: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def from_document(cls, document: Any) -> BridgeAdvertisement | None:
        """Parse the bridge's ``advertisement`` (None: the device advertises nothing)."""
        if document is None:
            return None
        if not isinstance(document, dict):
            raise BridgeError(f"advertisement must be an object, not {document!r}")
        try:
            return cls(
                local_name=str(document["local_name"]),
                connectable=bool(document["connectable"]),
                service_uuids=tuple(str(uuid) for uuid in document["service_uuids"]),
                service_data={
                    str(uuid): bytes.fromhex(value)
                    for uuid, value in document["service_data"].items()
                },
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise BridgeError(f"malformed advertisement {document!r}") from err


def bridge_port_from_log(text: str) -> int | None:
    """The port from the agent's ``BLE bridge listening on 127.0.0.1:PORT`` line, if logged."""
    match = _READY_LINE.search(text)
    return int(match["port"]) if match else None


def wait_for_bridge_port(
    log: Path, *, alive: Callable[[], bool] | None = None, timeout: float = START_TIMEOUT
) -> int:
    """Poll an agent's log until the bridge logged its port (``--ble-bridge 127.0.0.1:0``).

    Blocking, like ``Process.wait_for_port`` in onboarding_services.py: call it from a fixture
    or through ``asyncio.to_thread``. ``alive`` (e.g. ``lambda: popen.poll() is None``) stops
    the wait early when the agent exited.
    """
    deadline = time.monotonic() + timeout
    while True:
        text = _read_text(log)
        port = bridge_port_from_log(text)
        if port is not None:
            return port
        if alive is not None and not alive():
            raise BridgeError(f"the agent exited before its BLE bridge listened:\n{text[-2000:]}")
        if time.monotonic() > deadline:
            raise BridgeError(f"no 'BLE bridge listening on' line in {log}:\n{text[-2000:]}")
        time.sleep(0.05)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


class BleBridgeClient:
    """One central near the device: scan (advertisement), connect, GATT, notifications.

    One TCP connection carries at most one link at a time; :meth:`disconnect` closes the
    connection, which the device sees as the link dropping. The connection is opened on first
    use (:meth:`advertisement` or :meth:`connect`).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        disconnected_callback: Callable[[BleBridgeClient], None] | None = None,
    ) -> None:
        """Talk to the bridge at ``host:port``; requests fail after ``timeout`` seconds."""
        self.address = f"{host}:{port}"
        self._host = host
        self._port = port
        self._timeout = timeout
        self._disconnected_callback = disconnected_callback
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._listener: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._callbacks: dict[str, NotifyCallback] = {}
        self._advert_callbacks: list[AdvertisementCallback] = []
        self._advertisement: BridgeAdvertisement | None = None
        self._hello = asyncio.Event()
        self._link: str | None = None
        self._mtu = 0
        self._closed_reason: str | None = None

    # --- connection -------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        """A link is up (after :meth:`connect`, until :meth:`disconnect` or the bridge drops)."""
        return self._link is not None and self._closed_reason is None

    @property
    def mtu_size(self) -> int:
        """The link's ATT MTU (as the device clamped it)."""
        return self._mtu

    @property
    def link(self) -> str | None:
        """The device's name for this link (its logs use it)."""
        return self._link

    @property
    def closed_reason(self) -> str | None:
        """Why the bridge closed the connection, once it has."""
        return self._closed_reason

    async def open(self) -> None:
        """Open the TCP connection (no link yet) and wait for the bridge's hello."""
        if self._writer is not None and self._closed_reason is None:
            return
        await self._close_socket()
        self._closed_reason = None
        self._hello.clear()
        try:
            async with asyncio.timeout(self._timeout):
                self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        except (OSError, TimeoutError) as err:
            raise BridgeError(
                f"cannot reach the BLE bridge at {self.address}: {err} "
                "(is the agent running with --ble-bridge?)"
            ) from err
        self._listener = asyncio.create_task(self._listen(), name="ble-bridge-client")
        try:
            async with asyncio.timeout(self._timeout):
                await self._hello.wait()
        except TimeoutError as err:
            await self._close_socket()
            raise BridgeError(f"no hello from the BLE bridge at {self.address}") from err
        if self._closed_reason is not None:
            raise BridgeClosedError(self._closed_reason)

    async def connect(self, mtu: int = DEFAULT_MTU) -> bool:
        """Connect a link with this ATT MTU (bleak's ``connect``; the MTU is the test's pick)."""
        await self.open()
        reply = await self._request("connect", mtu=mtu)
        self._link = str(reply["link"])
        self._mtu = int(reply["mtu"])
        return True

    async def disconnect(self) -> bool:
        """Drop the link and close the connection (the device's ``link_closed`` runs)."""
        await self._close_socket()
        return True

    async def __aenter__(self) -> Self:
        """``async with BleBridgeClient(...) as client``: opened, not connected."""
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the connection."""
        await self.disconnect()

    # --- advertisement ----------------------------------------------------------------------

    async def advertisement(self) -> BridgeAdvertisement | None:
        """What the device advertises now (None: nothing, e.g. its window is closed)."""
        await self.open()
        reply = await self._request("advertisement")
        self._advertisement = BridgeAdvertisement.from_document(reply["advertisement"])
        return self._advertisement

    @property
    def last_advertisement(self) -> BridgeAdvertisement | None:
        """The latest advertisement pushed or read (without asking the bridge)."""
        return self._advertisement

    def on_advertisement(self, callback: AdvertisementCallback) -> Callable[[], None]:
        """Call ``callback`` with every advertisement change pushed; returns the remover."""
        self._advert_callbacks.append(callback)
        return lambda: self._advert_callbacks.remove(callback)

    # --- GATT -------------------------------------------------------------------------------

    async def write_gatt_char(self, uuid: str, data: bytes, response: bool = False) -> None:
        """Write (with ``response``: errors reach the caller, as ATT Write Request)."""
        await self._request("write", uuid=uuid, value=bytes(data).hex(), response=response)

    async def read_gatt_char(self, uuid: str) -> bytearray:
        """Read a characteristic (long reads continue at offsets on the device's side)."""
        reply = await self._request("read", uuid=uuid)
        return bytearray.fromhex(str(reply["value"]))

    async def start_notify(self, uuid: str, callback: NotifyCallback) -> None:
        """Subscribe; ``callback(uuid, data)`` runs for each notification, in order."""
        self._callbacks[uuid] = callback
        try:
            await self._request("subscribe", uuid=uuid)
        except BaseException:
            self._callbacks.pop(uuid, None)
            raise

    async def stop_notify(self, uuid: str) -> None:
        """Unsubscribe."""
        self._callbacks.pop(uuid, None)
        await self._request("unsubscribe", uuid=uuid)

    # --- raw messages (tests of the bridge itself) ------------------------------------------

    async def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (a test's malformed message)."""
        await self.open()
        writer = self._writer
        if writer is None:
            raise BridgeClosedError(self._closed_reason or "not open")
        writer.write(data)
        await writer.drain()

    async def wait_closed(self) -> str:
        """Wait (bounded) until the bridge closes the connection; its reason."""
        listener = self._listener
        if listener is not None:
            async with asyncio.timeout(self._timeout):
                await asyncio.shield(listener)
        return self._closed_reason or "closed"

    # --- plumbing ---------------------------------------------------------------------------

    async def _request(self, op: str, **fields: Any) -> dict[str, Any]:
        writer = self._writer
        if writer is None or self._closed_reason is not None:
            raise BridgeClosedError(self._closed_reason or "not open: call connect() first")
        self._next_id += 1
        request_id = self._next_id
        body = json.dumps({"id": request_id, "op": op, **fields}).encode()
        if len(body) > MAX_MESSAGE_SIZE:
            raise BridgeError(f"{op} message of {len(body)} bytes exceeds {MAX_MESSAGE_SIZE}")
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            writer.write(_LENGTH.pack(len(body)) + body)
            async with asyncio.timeout(self._timeout):
                await writer.drain()
                reply = await future
        except (ConnectionError, OSError) as err:
            raise BridgeClosedError(self.closed_reason or str(err)) from err
        finally:
            self._pending.pop(request_id, None)
        if not reply.get("ok"):
            raise BridgeRequestError(
                str(reply.get("error")), str(reply.get("detail", "")), reply.get("att")
            )
        return reply

    async def _listen(self) -> None:
        reason = "the bridge closed the connection"
        try:
            while True:
                message = await self._receive()
                if message is None:
                    break
                if message.get("event") == "closing":
                    reason = str(message.get("reason", reason))
                    continue
                await self._dispatch(message)
        except (ConnectionError, asyncio.IncompleteReadError) as err:
            reason = f"connection lost: {err}"
        except BridgeError as err:
            reason = str(err)
        except Exception as err:  # noqa: BLE001 - a callback's bug ends this connection only
            reason = f"the client failed: {err!r}"
        finally:
            self._ended(reason)

    async def _receive(self) -> dict[str, Any] | None:
        reader = self._reader
        if reader is None:
            return None
        try:
            header = await reader.readexactly(_LENGTH.size)
        except asyncio.IncompleteReadError:
            return None
        (size,) = _LENGTH.unpack(header)
        if not 0 < size <= MAX_MESSAGE_SIZE:
            raise BridgeError(f"the bridge sent a {size}-byte message")
        message = json.loads(await reader.readexactly(size))
        if not isinstance(message, dict):
            raise BridgeError("the bridge sent a message that is not an object")
        return message

    async def _dispatch(self, message: dict[str, Any]) -> None:
        event = message.get("event")
        if event is None:
            future = self._pending.get(int(message.get("id", -1)))
            if future is not None and not future.done():
                future.set_result(message)
        elif event == "notification":
            callback = self._callbacks.get(str(message["uuid"]))
            if callback is not None:
                result = callback(str(message["uuid"]), bytearray.fromhex(message["value"]))
                if inspect.isawaitable(result):
                    await result
        elif event in {"hello", "advertisement"}:
            if event == "hello" and message.get("version") != BRIDGE_VERSION:
                raise BridgeError(f"bridge version {message.get('version')}, not {BRIDGE_VERSION}")
            self._advertisement = BridgeAdvertisement.from_document(message["advertisement"])
            self._hello.set()
            for advert_callback in list(self._advert_callbacks):
                advert_callback(self._advertisement)

    def _ended(self, reason: str) -> None:
        was_connected = self.is_connected
        if self._closed_reason is None:  # not when this side closed first
            self._closed_reason = reason
        self._link = None
        self._hello.set()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BridgeClosedError(reason))
        if self._writer is not None:
            self._writer.close()
        if was_connected and self._disconnected_callback is not None:
            self._disconnected_callback(self)

    async def _close_socket(self) -> None:
        was_connected = self.is_connected
        if self._writer is not None and self._closed_reason is None:
            self._closed_reason = "disconnected by this client"
        listener, self._listener = self._listener, None
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        self._reader = None
        self._link = None
        if was_connected and self._disconnected_callback is not None:
            self._disconnected_callback(self)
