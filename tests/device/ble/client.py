"""The protocol's client session over a BLE link (loopback or the BlueZ mock), for the tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeAlias

from iob_protocol.commands import Request, Response, decode_response, encode_request
from iob_protocol.framing import FrameType, decode_error_body, decode_frame
from iob_protocol.session import ClientSession

SendFrame: TypeAlias = Callable[[bytes], Awaitable[None]]
ReceiveFrame: TypeAlias = Callable[[], Awaitable[bytes]]


def error_code(frame: bytes) -> str:
    """The code of an ERROR frame (fails the test if it is another frame)."""
    decoded = decode_frame(frame)
    assert decoded.type is FrameType.ERROR, f"expected an ERROR frame, got {decoded.type!r}"
    return decode_error_body(decoded.body)


@dataclass
class BleClient:
    """Home Assistant's side in small: handshake, then requests and responses."""

    session: ClientSession
    send: SendFrame
    receive: ReceiveFrame
    next_id: int = field(default=1)

    async def handshake(self) -> None:
        await self.send(self.session.start())
        reply = await self.receive()
        finish = self.session.handle_device_hello(reply)
        await self.send(finish)

    def seal(self, request: Request) -> bytes:
        return self.session.seal(encode_request(request))

    async def call(self, request: Request) -> Response:
        await self.send(self.seal(request))
        return decode_response(self.session.open(await self.receive()))

    def request_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1
