"""Home Assistant's frame channel (``iob_protocol.ble.FrameChannel``) against the device's GATT.

The client half is the shared code the integration's BLE client runs (chunking to RX,
reassembling TX notifications, bounded waits, disconnect errors); the device half is the real
:class:`~device_firmware.ble.gatt.ProvisioningService` with its session host and controller.
Only the radio is the in-process loopback link (BlueZ's MTU and notification rules).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from iob_protocol import (
    BleDisconnectedError,
    FrameChannel,
    chunk_frame,
    chunk_payload_size,
    decode_error_body,
    decode_frame,
)
from iob_protocol.commands import (
    InfoRequest,
    InfoResult,
    OkResponse,
    ScanWifiRequest,
    ScanWifiResult,
    StatusRequest,
    decode_response,
    encode_request,
)
from iob_protocol.framing import FrameType
from iob_protocol.session import ClientSession

from device_firmware.ble.loopback import LoopbackCentral
from device_firmware.ble.wire import RX_UUID, TX_UUID

from .conftest import Device, Loopback


@dataclass
class Link:
    """One connection: the loopback central with a FrameChannel fed by its TX notifications."""

    central: LoopbackCentral
    channel: FrameChannel
    pump: asyncio.Task[None]
    written: list[int]

    def drop(self) -> None:
        self.central.disconnect()
        self.channel.disconnected("out of range")


async def open_link(loopback: Loopback, mtu: int, *, fail_write: int | None = None) -> Link:
    """Connect as Home Assistant's client does: subscribe to TX, write chunks to RX."""
    central = loopback.peripheral.connect(mtu=mtu)
    queue = await central.subscribe(TX_UUID)
    written: list[int] = []
    link: Link

    async def write(chunk: bytes) -> None:
        written.append(len(chunk))
        if fail_write is not None and len(written) == fail_write:
            link.drop()  # the radio link goes away under the write
            return
        await central.write(RX_UUID, chunk, response=True)

    channel = FrameChannel(write, payload_size=chunk_payload_size(mtu), timeout=10.0)

    async def pump() -> None:
        while True:
            channel.notified(await queue.get())

    link = Link(central, channel, asyncio.create_task(pump()), written)
    return link


@pytest.fixture
async def links() -> AsyncIterator[list[Link]]:
    opened: list[Link] = []
    try:
        yield opened
    finally:
        for link in opened:
            link.pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await link.pump
            link.central.disconnect()


async def handshake(link: Link, session: ClientSession) -> None:
    device_hello = await link.channel.exchange(session.start())
    await link.channel.send(session.handle_device_hello(device_hello))


async def call(link: Link, session: ClientSession, request_id: int) -> InfoResult:
    sealed = session.seal(encode_request(InfoRequest(request_id=request_id)))
    response = decode_response(session.open(await link.channel.exchange(sealed)))
    assert isinstance(response, OkResponse)
    assert isinstance(response.result, InfoResult)
    return response.result


def error_code(frame: bytes) -> str:
    decoded = decode_frame(frame)
    assert decoded.type is FrameType.ERROR
    return decode_error_body(decoded.body)


@pytest.mark.parametrize("mtu", [23, 64, 517])
async def test_handshake_and_commands_at_every_mtu(
    loopback: Loopback, device: Device, links: list[Link], mtu: int
) -> None:
    link = await open_link(loopback, mtu)
    links.append(link)
    session = device.qr_client()
    await handshake(link, session)
    info = await call(link, session, 1)
    assert info.device_id == device.provisioned.device.identity.device_id
    scan = decode_response(
        session.open(
            await link.channel.exchange(session.seal(encode_request(ScanWifiRequest(request_id=2))))
        )
    )
    assert isinstance(scan, OkResponse)
    assert isinstance(scan.result, ScanWifiResult)
    assert [network.ssid for network in scan.result.networks] == [b"HomeNet", b"Cafe"]
    # Every write fits the link; at small MTUs each frame took several (all reassembled).
    assert max(link.written) <= min(mtu - 3, 512)
    assert (len(link.written) == len(["hello", "finish", "info", "scan"])) is (mtu > 23)
    assert device.host.has_session


async def test_disconnect_mid_request_then_resume_on_a_new_connection(
    loopback: Loopback, device: Device, links: list[Link]
) -> None:
    first = await open_link(loopback, 23)
    links.append(first)
    session = device.qr_client()
    await handshake(first, session)
    assert (await call(first, session, 1)).device_id
    # The next request is cut off at its third chunk: the device drops the partial frame.
    cut = await open_link(loopback, 23, fail_write=3)
    links.append(cut)
    first.drop()
    sealed = session.seal(encode_request(StatusRequest(request_id=2)))
    with pytest.raises(BleDisconnectedError, match="after 3 of 4 chunks") as caught:
        await cut.channel.send(sealed)
    assert caught.value.code == "ble_disconnected"
    # The same bytes again over a new connection: the session resumes (the device never saw
    # them whole), and the counters still agree for the next request.
    again = await open_link(loopback, 185)
    links.append(again)
    response = decode_response(session.open(await again.channel.exchange(sealed)))
    assert response.ok
    assert (await call(again, session, 3)).device_id


async def test_disconnect_mid_handshake_then_start_over(
    loopback: Loopback, device: Device, links: list[Link]
) -> None:
    first = await open_link(loopback, 23)
    links.append(first)
    abandoned = device.qr_client()
    await first.channel.exchange(abandoned.start())
    waiting = asyncio.ensure_future(first.channel.receive())
    first.drop()  # before CLIENT_FINISH: the device ends that handshake (slot free at once)
    with pytest.raises(BleDisconnectedError):
        await waiting
    second = await open_link(loopback, 23)
    links.append(second)
    session = device.qr_client()
    await handshake(second, session)
    assert (await call(second, session, 1)).device_id


async def test_bad_chunks_get_error_frames_and_the_link_recovers(
    loopback: Loopback, device: Device, links: list[Link]
) -> None:
    link = await open_link(loopback, 23)
    links.append(link)
    chunks = chunk_frame(device.qr_client().start(), link.channel.payload_size)
    await link.central.write(RX_UUID, chunks[0], response=False)
    await link.central.write(RX_UUID, chunks[2], response=False)  # chunk 1 lost
    assert error_code(await link.channel.receive()) == "chunk_sequence"
    await link.central.write(RX_UUID, b"\x80\x00\x00garbage", response=False)
    assert error_code(await link.channel.receive()) == "chunk_error"
    # A whole frame that is not a protocol frame at all.
    assert error_code(await link.channel.exchange(b"not a frame")) == "bad_magic"
    # A fresh client then completes a clean handshake on the same link.
    session = device.qr_client()
    await handshake(link, session)
    assert (await call(link, session, 1)).device_id
