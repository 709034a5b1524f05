"""The BLE contract in the shared package: advertised bytes, and frames over a GATT link."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest
from iob_protocol import (
    AdvertisedState,
    BleDisconnectedError,
    BlePhase,
    BleReplyTimeoutError,
    BleStatus,
    ChunkReassembler,
    ChunkSequenceError,
    DiagnosticCode,
    FrameChannel,
    ProtocolError,
    WireFormatError,
    chunk_frame,
    chunk_payload_size,
    encode_error_frame,
    parse_state_value,
)
from iob_protocol.ble import (
    DIAGNOSTIC_OTHER,
    MAX_FEATURES_SIZE,
    MAX_PENDING_FRAMES,
    diagnostic_number,
    encode_features,
    parse_features,
    short_id,
    short_id_text,
)

DEVICE_ID = "0123456789ABCDEF"
FRAME = encode_error_frame("x" * 60)  # a 66-byte frame: several chunks at small MTUs


def test_service_data_and_state_value_are_pinned() -> None:
    status = BleStatus(
        phase=BlePhase.PROVISIONING, window_open=True, diagnostic=DiagnosticCode.TIMEOUT
    )
    assert status.service_data(DEVICE_ID) == bytes.fromhex("0119") + short_id(DEVICE_ID)
    assert status.state_value() == bytes.fromhex("01190c")
    advertised = AdvertisedState.parse(status.service_data(DEVICE_ID))
    assert advertised.short_id == short_id_text(short_id(DEVICE_ID)) == DEVICE_ID[:8]
    assert parse_state_value(status.state_value()).diagnostic is DiagnosticCode.TIMEOUT
    with pytest.raises(WireFormatError) as caught:
        AdvertisedState.parse(b"\x02\x00" + bytes(5))
    assert isinstance(caught.value, ProtocolError)
    assert caught.value.code == "ble_wire_format"


def test_features_value_round_trips_and_refuses_what_would_not_parse() -> None:
    """The features characteristic: the LAN header's names, comma-separated ASCII."""
    assert encode_features(("wps",)) == b"wps"
    assert parse_features(encode_features(("status-wait", "wps"))) == {"status-wait", "wps"}
    assert encode_features(()) == b""
    assert parse_features(b"") == frozenset()
    assert parse_features(b" wps , ,claim-relay") == {"wps", "claim-relay"}
    assert parse_features(b"wps,\xff") == frozenset()  # not ASCII: names nothing
    assert parse_features(b"wps,\x07bell") == {"wps"}  # a control character is no name
    for bad in (("a,b",), ("",), ("x" * (MAX_FEATURES_SIZE + 1),)):
        with pytest.raises(ValueError, match="do not fit"):
            encode_features(bad)


def test_a_code_without_a_number_is_sent_as_other() -> None:
    """A device whose firmware knows a newer code than the wire table sends 255."""
    newer = cast("DiagnosticCode", "SOME_NEWER_CODE")
    assert diagnostic_number(newer) == DIAGNOSTIC_OTHER


@pytest.mark.parametrize(
    ("mtu", "size"), [(0, 20), (23, 20), (185, 182), (515, 512), (517, 512), (9000, 512)]
)
def test_chunk_payload_size(mtu: int, size: int) -> None:
    assert chunk_payload_size(mtu) == size


class Peer:
    """The device's end of a link: reassembles what the channel writes, answers with chunks."""

    def __init__(self, payload_size: int) -> None:
        self.payload_size = payload_size
        self.reassembler = ChunkReassembler()
        self.received: list[bytes] = []
        self.writes = 0
        self.channel = FrameChannel(self.write, payload_size=payload_size, timeout=5.0)
        self.drop_after: int | None = None

    async def write(self, chunk: bytes) -> None:
        assert len(chunk) <= self.payload_size
        self.writes += 1
        if self.drop_after is not None and self.writes >= self.drop_after:
            self.channel.disconnected("out of range")
        frame = self.reassembler.feed(chunk)
        if frame is not None:
            self.received.append(frame)

    def reply(self, frame: bytes) -> None:
        for chunk in chunk_frame(frame, self.payload_size):
            self.channel.notified(chunk)


@pytest.mark.parametrize("payload_size", [20, 182, 512])
async def test_frames_travel_in_chunks_both_ways(payload_size: int) -> None:
    peer = Peer(payload_size)
    assert peer.channel.payload_size == payload_size
    await peer.channel.send(FRAME)
    assert peer.received == [FRAME]
    peer.reply(FRAME)
    assert await peer.channel.receive() == FRAME
    assert peer.channel.connected


async def test_exchange_drops_a_stale_reply_first() -> None:
    peer = Peer(20)
    stale = encode_error_frame("stale")
    peer.reply(stale)
    waiting = asyncio.ensure_future(peer.channel.exchange(FRAME))
    await asyncio.sleep(0)
    peer.reply(FRAME)
    assert await waiting == FRAME
    assert peer.received == [FRAME]


async def test_a_bad_chunk_from_the_device_fails_that_frame_only() -> None:
    peer = Peer(20)
    chunks = chunk_frame(FRAME, 20)
    peer.channel.notified(chunks[0])
    peer.channel.notified(chunks[2])  # chunk 1 was lost
    with pytest.raises(ChunkSequenceError, match="expected chunk 1"):
        await peer.channel.receive()
    peer.reply(FRAME)  # the next FIRST chunk starts clean
    assert await peer.channel.receive() == FRAME


async def test_a_reply_that_does_not_come_times_out_with_a_clear_error() -> None:
    channel = FrameChannel(Peer(20).write, payload_size=20, timeout=0.01)
    with pytest.raises(BleReplyTimeoutError, match="no reply from the device") as caught:
        await channel.receive()
    assert caught.value.code == "ble_reply_timeout"


async def test_disconnect_mid_reply_wakes_the_receiver_and_stays_failed() -> None:
    peer = Peer(20)
    waiting = asyncio.ensure_future(peer.channel.receive())
    peer.channel.notified(chunk_frame(FRAME, 20)[0])
    await asyncio.sleep(0)
    peer.channel.disconnected()
    with pytest.raises(BleDisconnectedError, match="in the middle of the device's reply"):
        await waiting
    assert not peer.channel.connected
    peer.channel.disconnected("again")  # idempotent
    peer.reply(FRAME)  # late notifications of a dead link are ignored
    with pytest.raises(BleDisconnectedError, match="dropped"):
        await peer.channel.receive()
    with pytest.raises(BleDisconnectedError, match="dropped"):
        await peer.channel.exchange(FRAME)


async def test_disconnect_mid_request_says_how_far_it_got() -> None:
    peer = Peer(20)
    peer.drop_after = 2
    with pytest.raises(BleDisconnectedError, match=r"out of range after 2 of 4 chunks") as caught:
        await peer.channel.send(FRAME)
    assert caught.value.code == "ble_disconnected"
    assert peer.received == []


async def test_frames_nobody_asks_for_are_bounded() -> None:
    peer = Peer(512)
    for number in range(MAX_PENDING_FRAMES + 3):
        peer.reply(encode_error_frame(f"f{number}"))
    assert await peer.channel.receive() == encode_error_frame("f3")  # the oldest were dropped
    assert peer.channel.discard_pending() == MAX_PENDING_FRAMES - 1


@pytest.mark.parametrize("window_open", [False, True])
@pytest.mark.parametrize("diagnostic", [None, DiagnosticCode.WIFI_AUTH_FAILED])
def test_state_round_trips(window_open: bool, diagnostic: DiagnosticCode | None) -> None:
    status = BleStatus(phase=BlePhase.ONLINE, window_open=window_open, diagnostic=diagnostic)
    parsed = parse_state_value(status.state_value())
    assert (parsed.window_open, parsed.failed, parsed.diagnostic) == (
        window_open,
        diagnostic is not None,
        diagnostic,
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\x02\x01\x00", "version"),
        (b"\x01\x21\x00", "reserved"),
        (b"\x01\x04\x00", "phase"),
        (b"\x01\x11\x00", "disagree"),
    ],
)
def test_malformed_state_values(value: bytes, reason: str) -> None:
    with pytest.raises(WireFormatError, match=reason):
        parse_state_value(value)


async def test_a_reply_that_arrived_whole_survives_the_disconnect_after_it() -> None:
    """The device answered, then left (joined Wi-Fi): the answer still counts."""
    peer = Peer(20)
    peer.reply(FRAME)
    peer.channel.disconnected()
    assert await peer.channel.receive() == FRAME
    with pytest.raises(BleDisconnectedError):
        await peer.channel.receive()
