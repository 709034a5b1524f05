"""An in-process BLE link: centrals talk to the GATT services with no radio and no BlueZ.

A test double of the radio that keeps the behaviour that matters, as BlueZ and the ATT layer
have it: a write carries at most ATT_MTU - 3 bytes (a longer write with response becomes a long
write whose pieces arrive with offsets); errors of a characteristic that allows write without
response never reach the central; a read returns at most ATT_MTU - 1 bytes and a long read
continues at offsets; a notification goes to every connected central that subscribed, each cut
to its own MTU - 3; a disconnect tells the services which link went away.

The device's tests drive :class:`~.gatt.ProvisioningService` and :class:`~.improv.ImprovService`
through it, and Home Assistant's tests can drive its BLE client against the real device code the
same way (``send_frame`` / ``receive_frame`` carry whole protocol frames); from another process,
:mod:`.bridge` serves these centrals over loopback TCP.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Final, TypeAlias

from iob_protocol.ble import RX_UUID, TX_UUID
from iob_protocol.framing import ChunkReassembler, chunk_frame

from .errors import AttError, GattError
from .gatt import (
    DEFAULT_ATT_MTU,
    MAX_ATTRIBUTE_SIZE,
    Access,
    Characteristic,
    Flag,
    GattService,
    clamp_mtu,
    payload_size,
)

_LOGGER = logging.getLogger(__name__)

#: Prepare Write Request: opcode, handle, offset.
_PREPARE_HEADER: Final = 5
#: Read Response: opcode.
_READ_HEADER: Final = 1
RECEIVE_TIMEOUT: Final = 10.0

#: Takes a subscribed notification (``uuid``, value already cut to the link's MTU).
NotificationSink: TypeAlias = Callable[[str, bytes], None]


class LoopbackPeripheral:
    """The peripheral side: hosts the services, routes notifications to centrals."""

    def __init__(self, services: Sequence[GattService]) -> None:
        """Serve ``services`` (call :meth:`start`)."""
        self._services = tuple(services)
        self._centrals: list[LoopbackCentral] = []
        self._count = 0

    @property
    def services(self) -> tuple[GattService, ...]:
        """The hosted services."""
        return self._services

    async def start(self) -> None:
        """Attach the services to this transport."""
        for service in self._services:
            await service.start(self._notify)

    async def stop(self) -> None:
        """Disconnect everyone and detach the services."""
        for central in list(self._centrals):
            central.disconnect()
        for service in self._services:
            await service.stop()

    def connect(
        self,
        link: str | None = None,
        *,
        mtu: int = DEFAULT_ATT_MTU,
        sink: NotificationSink | None = None,
    ) -> LoopbackCentral:
        """A new connection (``link`` names it, like BlueZ's device path).

        ``sink`` receives the central's notifications instead of its queues (the TCP bridge
        forwards them to its client).
        """
        self._count += 1
        central = LoopbackCentral(self, link or f"central{self._count}", clamp_mtu(mtu), sink)
        self._centrals.append(central)
        return central

    def characteristic(self, uuid: str) -> Characteristic:
        """Find a characteristic in any service."""
        for service in self._services:
            for characteristic in service.characteristics:
                if characteristic.uuid == uuid:
                    return characteristic
        raise KeyError(uuid)

    async def _notify(self, uuid: str, value: bytes) -> None:
        for central in list(self._centrals):
            central.deliver(uuid, value)
        await asyncio.sleep(0)

    def _disconnected(self, central: LoopbackCentral) -> None:
        if central in self._centrals:
            self._centrals.remove(central)
        for service in self._services:
            service.link_closed(central.link)


class LoopbackCentral:
    """One connected central: GATT reads, writes and notifications."""

    def __init__(
        self,
        peripheral: LoopbackPeripheral,
        link: str,
        mtu: int,
        sink: NotificationSink | None = None,
    ) -> None:
        """Connected to ``peripheral`` (use :meth:`LoopbackPeripheral.connect`)."""
        self._peripheral = peripheral
        self._sink = sink
        self.link = link
        self.mtu = mtu
        self.connected = True
        #: Seconds to wait for a notification or a frame before ``TimeoutError``.
        self.receive_timeout = RECEIVE_TIMEOUT
        self._subscriptions: dict[str, asyncio.Queue[bytes]] = {}
        self._reassembler = ChunkReassembler()

    @property
    def payload_size(self) -> int:
        """Bytes per write or notification."""
        return payload_size(self.mtu)

    def _access(self, offset: int = 0) -> Access:
        return Access(link=self.link, mtu=self.mtu, offset=offset)

    def _require(self, uuid: str, *flags: Flag) -> Characteristic:
        if not self.connected:
            raise ConnectionError(f"{self.link} is disconnected")
        characteristic = self._peripheral.characteristic(uuid)
        if not set(flags) & characteristic.flags:
            raise _not_permitted(uuid)
        return characteristic

    # --- GATT procedures --------------------------------------------------------------------

    async def write(self, uuid: str, value: bytes, *, response: bool = True) -> None:
        """Write a value; longer than one packet needs ``response`` (a long write)."""
        flags = (Flag.WRITE,) if response else (Flag.WRITE_WITHOUT_RESPONSE,)
        characteristic = self._require(uuid, *flags)
        if characteristic.write is None:
            raise _not_permitted(uuid)
        if len(value) > MAX_ATTRIBUTE_SIZE:
            raise ValueError(f"{len(value)} bytes exceeds the attribute limit {MAX_ATTRIBUTE_SIZE}")
        if len(value) <= self.payload_size:
            pieces = [(0, value)]
        elif response:
            step = self.mtu - _PREPARE_HEADER
            pieces = [(start, value[start : start + step]) for start in range(0, len(value), step)]
        else:
            raise ValueError(f"{len(value)} bytes do not fit one write at MTU {self.mtu}")
        swallow = Flag.WRITE_WITHOUT_RESPONSE in characteristic.flags
        for offset, piece in pieces:
            try:
                characteristic.write(piece, self._access(offset))
            except GattError as err:
                if response and not swallow:
                    raise
                # BlueZ acknowledges these writes before the application answers.
                _LOGGER.debug("write error not reported to the central: %s", err)
        await asyncio.sleep(0)

    async def read(self, uuid: str) -> bytes:
        """Read a value (long reads continue at offsets, as ATT Read Blob does)."""
        characteristic = self._require(uuid, Flag.READ)
        if characteristic.read is None:
            raise _not_permitted(uuid)
        size = self.mtu - _READ_HEADER
        value = b""
        while True:
            piece = characteristic.read(self._access(len(value)))[:size]
            value += piece
            if len(piece) < size:
                return value

    async def subscribe(self, uuid: str) -> asyncio.Queue[bytes]:
        """Enable notifications; returns the queue they arrive in."""
        self._require(uuid, Flag.NOTIFY)
        return self._subscriptions.setdefault(uuid, asyncio.Queue())

    async def unsubscribe(self, uuid: str) -> None:
        """Disable notifications of ``uuid`` (those not taken yet are dropped)."""
        self._require(uuid, Flag.NOTIFY)
        self._subscriptions.pop(uuid, None)

    async def notification(self, uuid: str) -> bytes:
        """The next notification of ``uuid`` (within :attr:`receive_timeout`)."""
        queue = self._subscriptions[uuid]
        async with asyncio.timeout(self.receive_timeout):
            return await queue.get()

    def drain(self, uuid: str) -> list[bytes]:
        """Take every notification of ``uuid`` received so far (without waiting)."""
        queue = self._subscriptions.get(uuid)
        taken: list[bytes] = []
        while queue is not None and not queue.empty():
            taken.append(queue.get_nowait())
        return taken

    def deliver(self, uuid: str, value: bytes) -> None:
        """A notification from the peripheral, cut to this link's MTU as BlueZ does."""
        queue = self._subscriptions.get(uuid)
        if not self.connected or queue is None:
            return
        if self._sink is not None:
            self._sink(uuid, value[: self.payload_size])
        else:
            queue.put_nowait(value[: self.payload_size])

    def disconnect(self) -> None:
        """Drop the link (the services hear about it at once)."""
        if self.connected:
            self.connected = False
            self._peripheral._disconnected(self)  # noqa: SLF001 - the two halves of one link

    # --- protocol frames over RX/TX -----------------------------------------------------------

    async def send_frame(self, frame: bytes) -> None:
        """Chunk a protocol frame to this link's MTU and write the chunks without response."""
        for chunk in chunk_frame(frame, self.payload_size):
            await self.write(RX_UUID, chunk, response=False)

    async def receive_frame(self) -> bytes:
        """Reassemble the next protocol frame from TX notifications."""
        if TX_UUID not in self._subscriptions:
            await self.subscribe(TX_UUID)
        async with asyncio.timeout(self.receive_timeout):
            while True:
                chunk = await self._subscriptions[TX_UUID].get()
                frame = self._reassembler.feed(chunk)
                if frame is not None:
                    return frame

    async def exchange(self, frame: bytes) -> bytes:
        """Send a frame and wait for the reply frame."""
        if TX_UUID not in self._subscriptions:
            await self.subscribe(TX_UUID)
        await self.send_frame(frame)
        return await self.receive_frame()


def _not_permitted(uuid: str) -> GattError:
    """The ATT error for a procedure the characteristic does not allow."""
    return GattError(AttError.NOT_PERMITTED, f"{uuid} does not allow this")
