"""A minimal LAN client for the device's provisioning server (tests only).

The protocol's client-side state machine over aiohttp, as Home Assistant will drive it: the
handshake on ``/iob/v1/session``, then one encrypted request per ``/iob/v1/frame`` with the
``X-IOB-Session`` header.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import aiohttp
from iob_protocol.commands import Request, Response, decode_response, encode_request
from iob_protocol.framing import FrameType, decode_error_body, decode_frame
from iob_protocol.session import ClientSession

SESSION_HEADER = "X-IOB-Session"


@dataclass
class HttpReply:
    status: int
    body: bytes
    headers: dict[str, str]

    @property
    def error(self) -> str | None:
        """The ERROR frame's code, if the body is one."""
        try:
            frame = decode_frame(self.body)
        except Exception:  # noqa: BLE001 - not a frame at all
            return None
        return decode_error_body(frame.body) if frame.type is FrameType.ERROR else None


class LanClient:
    """Talks to one device over HTTP."""

    def __init__(self, base_url: str, http: aiohttp.ClientSession) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http
        self.session: ClientSession | None = None
        self.tag: str | None = None
        self._ids = itertools.count(1)

    async def post(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> HttpReply:
        async with self.http.post(
            self.base_url + path,
            data=body,
            headers={"Content-Type": "application/octet-stream", **(headers or {})},
        ) as response:
            return HttpReply(response.status, await response.read(), dict(response.headers))

    async def handshake(self, session: ClientSession) -> HttpReply:
        """Run the handshake; on success ``self.session`` is established."""
        reply = await self.post("/iob/v1/session", session.start())
        if reply.status != 200:
            return reply
        finish = session.handle_device_hello(reply.body)
        done = await self.post("/iob/v1/session", finish)
        if done.status == 204:
            self.session = session
            self.tag = done.headers[SESSION_HEADER]
        return done

    async def send_raw(self, frame: bytes, tag: str | None = None) -> HttpReply:
        return await self.post(
            "/iob/v1/frame", frame, {SESSION_HEADER: tag if tag is not None else self.tag or ""}
        )

    def next_id(self) -> int:
        return next(self._ids)

    async def call(self, request: Request) -> Response:
        """Send one request and decode the response."""
        assert self.session is not None
        reply = await self.send_raw(self.session.seal(encode_request(request)))
        assert reply.status == 200, (reply.status, reply.error)
        return decode_response(self.session.open(reply.body))
