"""One frame format for every transport, and the chunker that fits frames into BLE MTUs.

A frame is ``"IB" version type length(u16) body``.  HTTP carries one frame per request or
response body; BLE carries frames split into chunks of at most the MTU, each with a flags byte
and a 16-bit sequence number, so a lost, repeated or reordered chunk and a link that drops
mid-frame are detected instead of yielding a spliced frame.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from .errors import (
    BadMagicError,
    ChunkError,
    ChunkSequenceError,
    FrameTooLargeError,
    FramingError,
    IncompleteFrameError,
    InvalidMtuError,
    TrailingDataError,
    TruncatedFrameError,
    UnknownFrameTypeError,
    UnsupportedVersionError,
)

FRAME_MAGIC: Final = b"IB"
FRAME_VERSION: Final = 1
HEADER_SIZE: Final = 6
#: Largest frame, header included, on any transport.
MAX_FRAME_SIZE: Final = 16 * 1024
MAX_BODY_SIZE: Final = MAX_FRAME_SIZE - HEADER_SIZE
_ERROR_CODE_RE: Final = re.compile(rb"[a-z0-9_]{1,64}")

CHUNK_HEADER_SIZE: Final = 3
CHUNK_FIRST: Final = 0x01
CHUNK_LAST: Final = 0x02
_CHUNK_FLAGS: Final = CHUNK_FIRST | CHUNK_LAST


class FrameType(IntEnum):
    """What a frame carries."""

    CLIENT_HELLO = 0x01
    DEVICE_HELLO = 0x02
    CLIENT_FINISH = 0x03
    DATA = 0x10
    ERROR = 0x7F


def frame_header(frame_type: FrameType, body_length: int) -> bytes:
    """The 6-byte header; also the AEAD associated data of DATA frames."""
    if body_length > MAX_BODY_SIZE:
        raise FrameTooLargeError(f"frame body of {body_length} bytes exceeds {MAX_BODY_SIZE}")
    return FRAME_MAGIC + bytes([FRAME_VERSION, frame_type]) + body_length.to_bytes(2, "big")


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded frame."""

    type: FrameType
    body: bytes

    def encode(self) -> bytes:
        """Header and body."""
        return frame_header(self.type, len(self.body)) + self.body


def encode_frame(frame_type: FrameType, body: bytes) -> bytes:
    """Encode one frame, refusing bodies over :data:`MAX_BODY_SIZE`."""
    return Frame(frame_type, body).encode()


def _check_header_prefix(data: bytes | bytearray) -> None:
    """Fail as soon as the available bytes cannot start a frame (garbage is found early)."""
    available = bytes(data[: len(FRAME_MAGIC)])
    if available != FRAME_MAGIC[: len(available)]:
        raise BadMagicError(f"bad frame magic {available.hex()}")


def _parse_header(data: bytes | bytearray) -> tuple[FrameType, int]:
    _check_header_prefix(data)
    if data[2] != FRAME_VERSION:
        raise UnsupportedVersionError(f"frame version {data[2]} (this side speaks 1)")
    try:
        frame_type = FrameType(data[3])
    except ValueError as err:
        raise UnknownFrameTypeError(f"unknown frame type 0x{data[3]:02x}") from err
    length = int.from_bytes(data[4:6], "big")
    if length > MAX_BODY_SIZE:
        raise FrameTooLargeError(f"frame body of {length} bytes exceeds {MAX_BODY_SIZE}")
    return frame_type, length


def decode_frame(data: bytes) -> Frame:
    """Decode exactly one frame (an HTTP body, a reassembled BLE message)."""
    if len(data) > MAX_FRAME_SIZE:
        raise FrameTooLargeError(f"{len(data)} bytes exceeds {MAX_FRAME_SIZE}")
    if len(data) < HEADER_SIZE:
        _check_header_prefix(data)
        raise TruncatedFrameError(f"{len(data)} bytes is shorter than a frame header")
    frame_type, length = _parse_header(data)
    if len(data) < HEADER_SIZE + length:
        raise TruncatedFrameError(f"header announces {length} bytes, got {len(data) - 6}")
    if len(data) > HEADER_SIZE + length:
        raise TrailingDataError(f"{len(data) - HEADER_SIZE - length} bytes after the frame")
    return Frame(frame_type, data[HEADER_SIZE:])


class FrameDecoder:
    """Incremental decoder for a byte stream (BLE reassembly, a socket).

    After any error the stream position is lost, so the decoder refuses further input; the
    transport must drop the connection.
    """

    def __init__(self) -> None:
        """Start with an empty buffer."""
        self._buffer = bytearray()
        self._failed = False

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        """Add bytes; return every frame they complete."""
        if self._failed:
            raise FramingError("decoder failed earlier; reconnect")
        self._buffer += data
        frames: list[Frame] = []
        try:
            while self._buffer:
                if len(self._buffer) < HEADER_SIZE:
                    _check_header_prefix(self._buffer)
                    break
                frame_type, length = _parse_header(self._buffer)
                end = HEADER_SIZE + length
                if len(self._buffer) < end:
                    break
                frames.append(Frame(frame_type, bytes(self._buffer[HEADER_SIZE:end])))
                del self._buffer[:end]
        except FramingError:
            self._failed = True
            self._buffer.clear()
            raise
        return frames


# --- error frames -------------------------------------------------------------------------------


def encode_error_frame(code: str) -> bytes:
    """A plaintext ERROR frame carrying a stable error code (``[a-z0-9_]{1,64}``)."""
    body = code.encode("ascii", "replace")
    if not _ERROR_CODE_RE.fullmatch(body):
        raise FramingError(f"invalid error code {code!r}")
    return encode_frame(FrameType.ERROR, body)


def decode_error_body(body: bytes) -> str:
    """The error code in an ERROR frame's body."""
    if not _ERROR_CODE_RE.fullmatch(body):
        raise FramingError("malformed error frame")
    return body.decode("ascii")


# --- BLE chunking -------------------------------------------------------------------------------


def chunk_frame(frame: bytes, mtu: int) -> list[bytes]:
    """Split an encoded frame into chunks of at most ``mtu`` bytes.

    ``mtu`` is the payload one write or notification can carry (ATT_MTU - 3 on BLE).  Each
    chunk is ``flags sequence(u16) data``; flags mark the first and the last chunk.
    """
    if mtu < CHUNK_HEADER_SIZE + 1:
        raise InvalidMtuError(f"MTU {mtu} is too small; need at least {CHUNK_HEADER_SIZE + 1}")
    if not frame:
        raise ChunkError("nothing to chunk")
    if len(frame) > MAX_FRAME_SIZE:
        raise FrameTooLargeError(f"{len(frame)} bytes exceeds {MAX_FRAME_SIZE}")
    step = mtu - CHUNK_HEADER_SIZE
    pieces = [frame[start : start + step] for start in range(0, len(frame), step)]
    chunks = []
    for sequence, piece in enumerate(pieces):
        flags = (CHUNK_FIRST if sequence == 0 else 0) | (
            CHUNK_LAST if sequence == len(pieces) - 1 else 0
        )
        chunks.append(bytes([flags]) + sequence.to_bytes(2, "big") + piece)
    return chunks


class ChunkReassembler:
    """Rebuild frames from chunks, detecting loss, duplication, reordering and truncation.

    On any error the partial frame is discarded and the chunk that caused it is dropped; the
    next frame must start with a FIRST chunk.
    """

    def __init__(self) -> None:
        """Start idle."""
        self._parts: list[bytes] = []
        self._size = 0

    @property
    def in_progress(self) -> bool:
        """Whether a frame has started but not finished."""
        return bool(self._parts)

    def reset(self) -> bool:
        """Forget any partial frame (the link dropped); return whether one was lost."""
        lost = self.in_progress
        self._parts = []
        self._size = 0
        return lost

    def feed(self, chunk: bytes) -> bytes | None:
        """Take one chunk; return the encoded frame when it is complete."""
        if len(chunk) <= CHUNK_HEADER_SIZE:
            self.reset()
            raise ChunkError("chunk carries no data")
        flags, sequence, data = chunk[0], int.from_bytes(chunk[1:3], "big"), chunk[3:]
        if flags & ~_CHUNK_FLAGS:
            self.reset()
            raise ChunkError(f"unknown chunk flags 0x{flags:02x}")
        if flags & CHUNK_FIRST:
            if self.reset():
                raise IncompleteFrameError("a new frame started before the previous one ended")
            if sequence != 0:
                raise ChunkSequenceError(f"first chunk has sequence {sequence}")
        elif not self.in_progress:
            raise ChunkSequenceError(f"chunk {sequence} without a first chunk")
        elif sequence != len(self._parts):
            expected = len(self._parts)
            self.reset()
            raise ChunkSequenceError(f"expected chunk {expected}, got {sequence}")
        if self._size + len(data) > MAX_FRAME_SIZE:
            self.reset()
            raise FrameTooLargeError(f"reassembled frame exceeds {MAX_FRAME_SIZE} bytes")
        self._parts.append(data)
        self._size += len(data)
        if not flags & CHUNK_LAST:
            return None
        frame = b"".join(self._parts)
        self.reset()
        decode_frame(frame)
        return frame
