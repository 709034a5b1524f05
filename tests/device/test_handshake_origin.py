"""Handshake origin over the real LAN server: every message after the hello must come from the
address that said hello (docs/device.md, docs/protocol.md §4). Two loopback addresses play the
real user (127.0.0.1) and another host on the LAN (127.0.0.2)."""

from __future__ import annotations

import os

import aiohttp
from iob_protocol.commands import InfoRequest, OkResponse
from iob_protocol.framing import FrameType, encode_error_frame, encode_frame

from device_firmware.provisioning.session_host import HANDSHAKE_ORIGIN_MISMATCH

from .conftest import AgentStarter
from .lan_client import SESSION_HEADER, LanClient

OTHER_HOST = "127.0.0.2"


async def test_another_address_cannot_finish_or_abort_a_pending_handshake(
    start_agent: AgentStarter,
) -> None:
    async with (
        start_agent() as running,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=(OTHER_HOST, 0), force_close=True)
        ) as other_http,
    ):
        host = running.agent.session_host
        budget = host.remaining_attempts()
        user = running.client()
        session = running.provisioned.qr_client()
        hello = await user.post("/iob/v1/session", session.start())
        assert hello.status == 200, (hello.status, hello.error)
        finish = session.handle_device_hello(hello.body)

        stranger = LanClient(running.url, other_http)
        forged = await stranger.post(
            "/iob/v1/session", encode_frame(FrameType.CLIENT_FINISH, os.urandom(64))
        )
        assert (forged.status, forged.error) == (409, HANDSHAKE_ORIGIN_MISMATCH)
        give_up = await stranger.post("/iob/v1/session", encode_error_frame("wrong_setup_code"))
        assert (give_up.status, give_up.error) == (409, HANDSHAKE_ORIGIN_MISMATCH)
        # The stranger's messages cost the real user nothing.
        assert host.remaining_attempts() == budget

        done = await user.post("/iob/v1/session", finish)
        assert done.status == 204, (done.status, done.error)
        user.session, user.tag = session, done.headers[SESSION_HEADER]
        info = await user.call(InfoRequest(request_id=user.next_id()))
        assert isinstance(info, OkResponse)
        assert host.remaining_attempts() == budget
