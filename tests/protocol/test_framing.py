"""Frames and BLE chunks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iob_protocol import (
    MAX_FRAME_SIZE,
    BadMagicError,
    ChunkError,
    ChunkReassembler,
    ChunkSequenceError,
    Frame,
    FrameDecoder,
    FrameTooLargeError,
    FrameType,
    FramingError,
    IncompleteFrameError,
    InvalidMtuError,
    TrailingDataError,
    TruncatedFrameError,
    UnknownFrameTypeError,
    UnsupportedVersionError,
    chunk_frame,
    decode_error_body,
    decode_frame,
    encode_error_frame,
    encode_frame,
)
from iob_protocol.framing import HEADER_SIZE, MAX_BODY_SIZE

FAST = settings(max_examples=50, deadline=None)
frames = st.builds(Frame, st.sampled_from(FrameType), st.binary(max_size=300))


@FAST
@given(frames)
def test_frame_round_trip(frame: Frame) -> None:
    assert decode_frame(frame.encode()) == frame


@FAST
@given(st.lists(frames, max_size=5), st.data())
def test_stream_decoder_any_split(items: list[Frame], data: st.DataObject) -> None:
    stream = b"".join(frame.encode() for frame in items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    decoder = FrameDecoder()
    out: list[Frame] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        out += decoder.feed(stream[start:cut])
        start = cut
    assert out == items
    assert decoder.buffered == 0


@FAST
@given(st.binary(min_size=1, max_size=MAX_FRAME_SIZE), st.integers(4, 600))
def test_chunk_round_trip(body: bytes, mtu: int) -> None:
    frame = encode_frame(FrameType.DATA, body[:MAX_BODY_SIZE])
    chunks = chunk_frame(frame, mtu)
    assert all(len(chunk) <= mtu for chunk in chunks)
    reassembler = ChunkReassembler()
    results = [reassembler.feed(chunk) for chunk in chunks]
    assert results[-1] == frame
    assert all(result is None for result in results[:-1])
    assert not reassembler.in_progress


@FAST
@given(st.binary(min_size=60, max_size=400), st.data())
def test_chunk_loss_duplication_and_reordering_detected(body: bytes, data: st.DataObject) -> None:
    chunks = chunk_frame(encode_frame(FrameType.DATA, body), 20)
    index = data.draw(st.integers(1, len(chunks) - 1))
    action = data.draw(st.sampled_from(["drop", "duplicate", "swap"]))
    if action == "drop":
        damaged = chunks[:index] + chunks[index + 1 :]
    elif action == "duplicate":
        damaged = chunks[: index + 1] + chunks[index:]
    else:
        damaged = [*chunks[: index - 1], chunks[index], chunks[index - 1], *chunks[index + 1 :]]
    reassembler = ChunkReassembler()
    try:
        for chunk in damaged:
            reassembler.feed(chunk)
    except ChunkError:
        return
    # Only a dropped last chunk passes silently: the frame stays pending, and the transport's
    # reset() on disconnect reports it lost.
    assert (action, index) == ("drop", len(chunks) - 1)
    assert reassembler.reset() is True


def test_disconnect_mid_frame() -> None:
    chunks = chunk_frame(encode_frame(FrameType.DATA, bytes(100)), 20)
    reassembler = ChunkReassembler()
    reassembler.feed(chunks[0])
    assert reassembler.in_progress
    assert reassembler.reset() is True
    assert reassembler.reset() is False
    reassembler.feed(chunks[0])
    with pytest.raises(IncompleteFrameError):
        reassembler.feed(chunks[0])  # a new frame began: the old one was cut off
    with pytest.raises(ChunkSequenceError):
        reassembler.feed(chunks[1])  # no frame in progress any more


def test_chunk_errors() -> None:
    reassembler = ChunkReassembler()
    with pytest.raises(ChunkError):
        reassembler.feed(b"\x01\x00\x00")
    with pytest.raises(ChunkError):
        reassembler.feed(b"\x05\x00\x00x")
    with pytest.raises(ChunkSequenceError):
        reassembler.feed(b"\x01\x00\x01x")
    with pytest.raises(InvalidMtuError):
        chunk_frame(b"frame", 3)
    with pytest.raises(ChunkError):
        chunk_frame(b"", 20)
    with pytest.raises(FrameTooLargeError):
        chunk_frame(bytes(MAX_FRAME_SIZE + 1), 20)
    # Bytes that are not a frame fail when the last chunk arrives.
    with pytest.raises(BadMagicError):
        reassembler.feed(b"\x03\x00\x00garbage")


def test_reassembly_size_limit() -> None:
    reassembler = ChunkReassembler()
    big = bytes(1000)
    reassembler.feed(b"\x01\x00\x00" + big)
    for sequence in range(1, 16):
        reassembler.feed(b"\x00" + sequence.to_bytes(2, "big") + big)
    with pytest.raises(FrameTooLargeError):
        reassembler.feed(b"\x00\x00\x10" + big)
    assert not reassembler.in_progress


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", TruncatedFrameError),
        (b"IB\x01", TruncatedFrameError),
        (b"XB\x01", BadMagicError),
        (b"IX\x01\x10\x00\x00", BadMagicError),
        (b"IB\x02\x10\x00\x00", UnsupportedVersionError),
        (b"IB\x01\x55\x00\x00", UnknownFrameTypeError),
        (b"IB\x01\x10\x00\x05abc", TruncatedFrameError),
        (b"IB\x01\x10\x00\x01abc", TrailingDataError),
        (b"IB\x01\x10\xff\xff", FrameTooLargeError),
        (bytes(MAX_FRAME_SIZE + 1), FrameTooLargeError),
    ],
)
def test_decode_errors(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_frame(data)


def test_encode_refuses_oversize() -> None:
    assert len(encode_frame(FrameType.DATA, bytes(MAX_BODY_SIZE))) == MAX_FRAME_SIZE
    with pytest.raises(FrameTooLargeError):
        encode_frame(FrameType.DATA, bytes(MAX_BODY_SIZE + 1))


def test_stream_decoder_rejects_garbage_early_and_stays_failed() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"I") == []
    with pytest.raises(BadMagicError):
        decoder.feed(b"X")
    with pytest.raises(FramingError):
        decoder.feed(encode_frame(FrameType.DATA, b""))
    oversize = FrameDecoder()
    with pytest.raises(FrameTooLargeError):
        oversize.feed(b"IB\x01\x10\x40\x00")


def test_error_frames() -> None:
    frame = decode_frame(encode_error_frame("locked_out"))
    assert frame.type is FrameType.ERROR
    assert decode_error_body(frame.body) == "locked_out"
    for bad in ("", "Bad", "x" * 65, "sp ace", "é"):
        with pytest.raises(FramingError):
            encode_error_frame(bad)
    with pytest.raises(FramingError):
        decode_error_body(b"\x00")


def test_header_size() -> None:
    assert len(encode_frame(FrameType.DATA, b"")) == HEADER_SIZE
