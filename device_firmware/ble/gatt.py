"""The BLE provisioning service, independent of BlueZ: chunks in, session host, chunks out.

A GATT service here is plain Python: characteristics with read and write callbacks and a
``notify`` function the transport supplies. BlueZ (:mod:`.bluez`) and the in-process test
transport (:mod:`.loopback`) both drive the same objects, so everything that decides is tested
without a radio.

:class:`ProvisioningService` carries the protocol's frames: a central writes chunks
(``iob_protocol.framing.chunk_frame``, each at most ATT_MTU - 3 bytes) to RX; complete frames
go to the transport-agnostic :class:`~device_firmware.provisioning.session_host.SessionHost`
(the same one the LAN server uses); replies come back as TX notifications, chunked to the
link's MTU. Rules of the link layer:

* **One central at a time.** BlueZ sends every notification to every subscribed central, so
  two interleaved conversations would corrupt each other. The first central to write owns the
  service until it disconnects or stays silent for :data:`OWNER_IDLE_SECONDS`; another
  central's writes are refused (ATT "write not permitted" where the write has a response).
* **Bad chunks and frames** (loss, reorder, a new frame before the last one ended, oversize,
  garbage) are answered with an ERROR frame carrying the protocol's code (``chunk_sequence``,
  ``incomplete_frame``, ``frame_too_large``, ``bad_magic`` …); the partial frame is dropped.
* **Disconnect** drops the link's partial frame and any complete frame not yet processed, and
  ends a handshake the link started but did not finish (``SessionHost.abort_handshake``, a
  failed attempt): the user's retry finds the handshake slot free instead of ``busy`` for 60 s.
  So does an ERROR frame from the central mid-handshake (it found the code wrong).
* **Handshake origin.** Only the link that sent the CLIENT_HELLO may send its CLIENT_FINISH or
  give it up: the same frames from another link (a central that took over after the first
  went quiet) are refused with ATT "write not permitted" and never reach the handshake, so
  they cost the user no attempt; no ERROR frame is notified (it would reach every central).
* **Reconnect and resume.** The session is not tied to a link: DATA frames carry their own
  counters and keys. A new connection may continue the established session if the link it was
  established on is gone, and works exactly when no frame was lost *after* it reached the
  device: re-sending a request whose chunks were cut off works (the device never saw it); if a
  reply was lost, the counters disagree, the client's next ``open`` fails and it starts over
  with a new handshake (the protocol's fail-closed rule). A handshake is never resumed: a
  client whose link dropped before CLIENT_FINISH starts over.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, TypeAlias

from iob_protocol.commands import FEATURE_WPS
from iob_protocol.errors import FramingError
from iob_protocol.framing import (
    ChunkReassembler,
    FrameType,
    chunk_frame,
    encode_error_frame,
)
from iob_protocol.sources import MonotonicClock, monotonic

from device_firmware.provisioning.session_host import (
    HANDSHAKE_ORIGIN_MISMATCH,
    NO_SESSION,
    Reply,
    ReplyKind,
    SessionHost,
)

from .errors import AttError, GattError
from .wire import (
    FEATURES_UUID,
    RX_UUID,
    SERVICE_UUID,
    STATE_UUID,
    TX_UUID,
    BlePhase,
    BleStatus,
    encode_features,
)

_LOGGER = logging.getLogger(__name__)

#: The smallest ATT MTU (every link has at least this).
DEFAULT_ATT_MTU: Final = 23
#: The largest ATT MTU BlueZ negotiates.
MAX_ATT_MTU: Final = 517
#: Opcode and handle in front of every write and notification.
ATT_HEADER_SIZE: Final = 3
#: The largest attribute value (Core spec Vol 3 Part F 3.2.9).
MAX_ATTRIBUTE_SIZE: Final = 512
#: A central that wrote nothing for this long no longer keeps others out.
OWNER_IDLE_SECONDS: Final = 30.0
#: The protocol features the features characteristic names. The LAN server also names
#: ``status-wait`` and ``claim-relay``: over Bluetooth, Home Assistant asks ``status`` without
#: a long poll (it would outlast the reply timeout of a GATT request) and relays no claim.
BLE_FEATURES: Final = (FEATURE_WPS,)
#: Complete frames waiting for the session host; more means a misbehaving central.
MAX_PENDING_FRAMES: Final = 8


class Flag(StrEnum):
    """Characteristic properties, spelled as BlueZ's ``Flags``."""

    READ = "read"
    WRITE = "write"
    WRITE_WITHOUT_RESPONSE = "write-without-response"
    NOTIFY = "notify"


@dataclass(frozen=True, slots=True, kw_only=True)
class Access:
    """Who reads or writes, over which link (BlueZ's ``device``, ``mtu`` and ``offset``)."""

    #: Names the connection: BlueZ's device object path, or any stable id in tests.
    link: str
    mtu: int = DEFAULT_ATT_MTU
    offset: int = 0

    @property
    def payload_size(self) -> int:
        """Bytes one write or notification can carry on this link."""
        return payload_size(self.mtu)


def payload_size(mtu: int) -> int:
    """ATT_MTU - 3, but never above the 512-byte attribute limit (BlueZ cuts values there)."""
    return min(clamp_mtu(mtu) - ATT_HEADER_SIZE, MAX_ATTRIBUTE_SIZE)


def clamp_mtu(mtu: int) -> int:
    """An ATT MTU within what BLE allows (a missing or absurd value falls back safely)."""
    return min(max(mtu, DEFAULT_ATT_MTU), MAX_ATT_MTU)


ReadHandler: TypeAlias = Callable[[Access], bytes]
WriteHandler: TypeAlias = Callable[[bytes, Access], None]
#: Send ``value`` as a notification of the characteristic ``uuid`` to subscribed centrals.
Notify: TypeAlias = Callable[[str, bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Characteristic:
    """One characteristic: its UUID, properties and handlers.

    Handlers run on the event loop and must return quickly: a write handler only buffers and
    schedules; the work and its answer (a notification) follow.
    """

    uuid: str
    flags: frozenset[Flag]
    read: ReadHandler | None = None
    write: WriteHandler | None = None


async def _drop(_uuid: str, _value: bytes) -> None:
    """Notifications before a transport is attached go nowhere."""


class GattService(abc.ABC):
    """A primary service a transport exports (BlueZ or the in-process loopback)."""

    uuid: str

    def __init__(self) -> None:
        """Not attached to a transport yet."""
        self._notify: Notify = _drop

    @property
    @abc.abstractmethod
    def characteristics(self) -> tuple[Characteristic, ...]:
        """The characteristics in handle order."""

    async def start(self, notify: Notify) -> None:
        """Attach to a transport: ``notify`` sends notifications."""
        self._notify = notify

    async def stop(self) -> None:
        """Detach; background work ends."""
        self._notify = _drop

    def link_closed(self, link: str) -> None:  # noqa: B027 - optional hook
        """The central on ``link`` disconnected."""

    def all_links_closed(self) -> None:  # noqa: B027 - optional hook
        """Every central is gone (bluetoothd restarted)."""

    def characteristic(self, uuid: str) -> Characteristic:
        """The characteristic with ``uuid``."""
        for characteristic in self.characteristics:
            if characteristic.uuid == uuid:
                return characteristic
        raise KeyError(uuid)


def read_at_offset(value: bytes, access: Access) -> bytes:
    """A long read's slice (ATT Read Blob), refusing offsets past the end."""
    if access.offset > len(value):
        raise GattError(AttError.INVALID_OFFSET, f"offset {access.offset} > {len(value)}")
    return value[access.offset :]


@dataclass(slots=True, eq=False)
class _Link:
    """One connection of one central."""

    id: str
    mtu: int
    last_activity: float
    reassembler: ChunkReassembler = field(default_factory=ChunkReassembler)
    closed: bool = False
    #: Pieces of a refused long write are still arriving (answer it once).
    refusing_long_write: bool = False


@dataclass(frozen=True, slots=True)
class _Work:
    link: _Link
    frame: bytes = b""
    error: str | None = None


class ProvisioningService(GattService):
    """The IoT Onboard service: RX/TX frame characteristics and the state characteristic."""

    uuid = SERVICE_UUID

    def __init__(
        self,
        host: SessionHost,
        *,
        clock: MonotonicClock = monotonic,
        owner_idle: float = OWNER_IDLE_SECONDS,
        on_session: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Serve ``host``'s sessions; ``on_session`` runs when a handshake completes here."""
        super().__init__()
        self._host = host
        self._clock = clock
        self._owner_idle = owner_idle
        self._on_session = on_session
        self._links: dict[str, _Link] = {}
        self._owner: _Link | None = None
        self._session_link: str | None = None
        self._session_tag: str | None = None
        self._queue: asyncio.Queue[_Work] = asyncio.Queue(MAX_PENDING_FRAMES)
        self._worker: asyncio.Task[None] | None = None
        self._tx_lock = asyncio.Lock()
        self._aborts: set[asyncio.Task[bool]] = set()
        self._status = BleStatus(phase=BlePhase.UNCLAIMED, window_open=False)
        self._characteristics = (
            Characteristic(
                RX_UUID,
                frozenset({Flag.WRITE, Flag.WRITE_WITHOUT_RESPONSE}),
                write=self._write_rx,
            ),
            Characteristic(TX_UUID, frozenset({Flag.NOTIFY})),
            Characteristic(STATE_UUID, frozenset({Flag.READ, Flag.NOTIFY}), read=self._read_state),
            Characteristic(FEATURES_UUID, frozenset({Flag.READ}), read=self._read_features),
        )

    @property
    def characteristics(self) -> tuple[Characteristic, ...]:
        """RX, TX, state and features."""
        return self._characteristics

    @property
    def status(self) -> BleStatus:
        """What the state characteristic says now."""
        return self._status

    @property
    def owner(self) -> str | None:
        """The link being served, if any."""
        return None if self._owner is None else self._owner.id

    async def start(self, notify: Notify) -> None:
        """Attach and start processing frames."""
        await super().start(notify)
        if self._worker is None:
            self._worker = asyncio.create_task(self._work(), name="iob-ble-frames")

    async def stop(self) -> None:
        """Stop processing; partial frames and queued work are dropped."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self.all_links_closed()
        await super().stop()

    async def set_status(self, status: BleStatus) -> None:
        """Publish the device's state (notified to subscribers when it changes)."""
        if status == self._status:
            return
        self._status = status
        await self._notify(STATE_UUID, status.state_value())

    # --- links ------------------------------------------------------------------------------

    def link_closed(self, link: str) -> None:
        """Forget the link's partial frame and unprocessed frames; release ownership."""
        state = self._links.get(link)
        if state is not None:
            self._close(state)

    def all_links_closed(self) -> None:
        """Forget every link (bluetoothd restarted and dropped them)."""
        for link in list(self._links.values()):
            self._close(link)

    def _close(self, link: _Link) -> None:
        if not link.closed:
            # Its unfinished handshake, if any, would hold the slot until the deadline.
            abort = asyncio.create_task(
                self._host.abort_handshake(_origin(link), "BLE link dropped"),
                name="iob-ble-abort-handshake",
            )
            self._aborts.add(abort)
            abort.add_done_callback(self._aborts.discard)
        link.closed = True
        self._links.pop(link.id, None)
        if link.reassembler.reset():
            _LOGGER.info("BLE link %s closed mid-frame; the partial frame is dropped", link.id)
        if self._owner is link:
            self._owner = None

    def _link(self, access: Access) -> _Link:
        now = self._clock()
        link = self._links.get(access.link)
        if link is None:
            link = _Link(access.link, clamp_mtu(access.mtu), now)
            self._links[access.link] = link
        owner = self._owner
        if owner is not None and owner is not link and not owner.closed:
            if now - owner.last_activity < self._owner_idle:
                raise GattError(
                    AttError.NOT_PERMITTED,
                    f"serving {owner.id}; {access.link} must wait until it disconnects",
                )
            _LOGGER.info("BLE central %s went quiet; serving %s", owner.id, link.id)
        self._owner = link
        link.mtu = clamp_mtu(access.mtu)
        link.last_activity = now
        return link

    # --- RX ---------------------------------------------------------------------------------

    def _write_rx(self, value: bytes, access: Access) -> None:
        link = self._link(access)
        if access.offset:
            # Chunks fit one ATT write by construction; a long (prepared) write means the
            # central ignored the MTU. BlueZ drops errors of write-without-response
            # characteristics, so one ERROR frame is the answer the central will see.
            link.reassembler.reset()
            if not link.refusing_long_write:
                link.refusing_long_write = True
                self._enqueue(_Work(link, error="chunk_error"))
            raise GattError(AttError.INVALID_OFFSET, "RX takes whole chunks, never offsets")
        link.refusing_long_write = False
        try:
            frame = link.reassembler.feed(bytes(value))
        except FramingError as err:
            _LOGGER.info("BLE chunk from %s refused: %s", link.id, err.code)
            self._enqueue(_Work(link, error=err.code))
            return
        if frame is not None:
            if self._host.refuses_origin(frame[3], _origin(link)):
                # Another central's handshake is pending: this link may neither finish nor
                # abort it. Refused here, not with an ERROR frame, which BlueZ would notify to
                # every central - the real user's too, in the middle of its handshake.
                _LOGGER.info(
                    "BLE frame from %s refused (%s): the pending handshake is another link's",
                    link.id,
                    HANDSHAKE_ORIGIN_MISMATCH,
                )
                raise GattError(AttError.NOT_PERMITTED, HANDSHAKE_ORIGIN_MISMATCH)
            self._enqueue(_Work(link, frame=frame))

    def _enqueue(self, work: _Work) -> None:
        try:
            self._queue.put_nowait(work)
        except asyncio.QueueFull:
            # Only a central that ignores every reply gets here; dropping keeps memory bounded.
            _LOGGER.warning("BLE central %s floods the device; frame dropped", work.link.id)

    async def _work(self) -> None:
        while True:
            work = await self._queue.get()
            if work.link.closed:
                continue  # the central left before its frame was read: it may send it again
            try:
                await self._process(work)
            except Exception:
                # One bad exchange must never end BLE provisioning for everyone after it.
                _LOGGER.exception("BLE frame from %s failed", work.link.id)

    async def _process(self, work: _Work) -> None:
        link = work.link
        if work.error is not None:
            await self._send(link, encode_error_frame(work.error))
            return
        frame_type = work.frame[3]
        if frame_type in {FrameType.CLIENT_HELLO, FrameType.CLIENT_FINISH, FrameType.ERROR}:
            # An ERROR frame is the client giving up (wrong code, key mismatch): the host ends
            # the handshake this link started, if any, and there is nothing to answer.
            reply = await self._host.handshake(work.frame, origin=_origin(link))
            if reply.error == HANDSHAKE_ORIGIN_MISMATCH:
                return  # the hello came on another link meanwhile: no broadcast ERROR frame
            if reply.kind is ReplyKind.FINISHED:
                self._session_link, self._session_tag = link.id, reply.session_tag
                if self._on_session is not None:
                    await self._on_session()
        elif frame_type == FrameType.DATA:
            reply = await self._exchange(link, work.frame)
        else:
            reply = await self._host.handshake(work.frame)  # unexpected_message, from the host
        if reply.frame:
            await self._send(link, reply.frame)

    async def _exchange(self, link: _Link, frame: bytes) -> Reply:
        tag, bound = self._session_tag, self._session_link
        if tag is None or (bound != link.id and bound in self._links):
            # No session was established over BLE (a LAN session is not for radio strangers),
            # or it belongs to a connection that is still up: answer without touching the
            # channel, or this stray frame would end a working session.
            return Reply(ReplyKind.NO_SESSION, encode_error_frame(NO_SESSION), error=NO_SESSION)
        # The tag makes the host refuse the frame if a newer session (LAN) replaced this one.
        reply = await self._host.exchange(frame, tag)
        if reply.kind is ReplyKind.OK and bound != link.id:
            _LOGGER.info("BLE session resumed on %s", link.id)
            self._session_link = link.id
        return reply

    # --- TX ---------------------------------------------------------------------------------

    async def _send(self, link: _Link, frame: bytes) -> None:
        async with self._tx_lock:
            for chunk in chunk_frame(frame, payload_size(link.mtu)):
                if link.closed:
                    _LOGGER.info("BLE link %s closed while sending; reply dropped", link.id)
                    return
                await self._notify(TX_UUID, chunk)
            link.last_activity = self._clock()

    # --- state ------------------------------------------------------------------------------

    def _read_state(self, access: Access) -> bytes:
        return read_at_offset(self._status.state_value(), access)

    @staticmethod
    def _read_features(access: Access) -> bytes:
        return read_at_offset(encode_features(BLE_FEATURES), access)


def _origin(link: _Link) -> str:
    """The session host's name for a handshake started on ``link``."""
    return f"ble:{link.id}"
