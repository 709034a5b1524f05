"""Malformed HTTP over a raw socket, for the account service's and the device's servers.

aiohttp logged each of these at ERROR (or DEBUG) with a traceback; a server must log one line
without one, and still answer 400.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

#: What scanners, TLS clients on the wrong port and broken clients send.
MALFORMED_REQUESTS: dict[str, bytes] = {
    "not HTTP at all": b"GARBAGE\r\n\r\n",
    "TLS on an HTTP port": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 32,
    "a header without a colon": b"GET /v1/health HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
    "a request line too long": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "a bad version": b"GET / HTTP/9.9x\r\nHost: x\r\n\r\n",
    "garbage after a good request": (
        b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n\x16\x03\x01\x00\xa5\x01\x00\x00"
    ),
}


async def send_raw(port: int, data: bytes) -> bytes:
    """Send ``data`` to 127.0.0.1:``port`` and read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()


async def assert_one_quiet_line_each(port: int, caplog: pytest.LogCaptureFixture) -> None:
    """Every malformed request: a 400, one log line below WARNING, and no traceback."""
    caplog.set_level(logging.DEBUG)
    for name, data in MALFORMED_REQUESTS.items():
        caplog.clear()
        answer = await send_raw(port, data)
        assert b" 400 " in answer.split(b"\r\n", 1)[0] or b"HTTP/1.1 400" in answer, (name, answer)
        assert "Traceback" not in caplog.text, name
        assert all(r.exc_info is None and r.exc_text is None for r in caplog.records), name
        lines = [r for r in caplog.records if "malformed" in r.getMessage().lower()]
        assert len(lines) == 1, (name, [(r.name, r.levelname, r.getMessage()) for r in lines])
        assert lines[0].levelno <= logging.INFO, name
        assert "\n" not in lines[0].getMessage(), name
        assert len(lines[0].getMessage()) < 300, name
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], name
