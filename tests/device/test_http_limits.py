"""The device's HTTP servers refuse oversized or unbounded bodies before reading them
(docs/device.md "LAN provisioning API"): 413 for a Content-Length above one frame, 411 for a
body without a Content-Length (chunked), answered at once, the connection then closed, and no
traceback when the client goes away."""

from __future__ import annotations

import logging

import pytest

from tests.raw_http import send_raw

from .conftest import AgentStarter

HEAD = b"POST %s HTTP/1.1\r\nHost: device\r\nContent-Type: application/octet-stream\r\n"
OVERSIZED = {
    "a terabyte announced": (b"Content-Length: 1000000000000\r\n\r\n", 413),
    "one byte over a frame": (b"Content-Length: 16385\r\n\r\n", 413),
    "a huge chunk": (b"Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFF\r\n", 411),
    "chunked, nothing yet": (b"Transfer-Encoding: chunked\r\n\r\n", 411),
}


@pytest.mark.parametrize("path", [b"/iob/v1/session", b"/iob/v1/frame"])
@pytest.mark.parametrize("name", list(OVERSIZED))
async def test_oversized_bodies_are_refused_before_they_are_read(
    start_agent: AgentStarter, caplog: pytest.LogCaptureFixture, path: bytes, name: str
) -> None:
    caplog.set_level(logging.DEBUG)
    rest, status = OVERSIZED[name]
    async with start_agent() as running:
        # send_raw reads until the server closes: the answer comes without the body.
        answer = await send_raw(running.agent.lan_ports()[0], HEAD % path + rest)
        status_line = answer.split(b"\r\n", 1)[0]
        assert status_line.startswith(b"HTTP/1.1 %d " % status), answer[:200]
        assert b'"error"' in answer
    # The device's own records (another test's leftovers may reach the asyncio logger).
    ours = [r for r in caplog.records if r.name.startswith(("device_firmware", "aiohttp"))]
    assert all(r.exc_info is None and r.exc_text is None for r in ours), caplog.text
    http = [r for r in ours if r.name.startswith(("device_firmware.http", "aiohttp"))]
    assert not [r for r in http if r.levelno >= logging.WARNING], caplog.text
