"""The account-service client's error mapping on answers the real service never gives."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web
from iob_protocol.diagnostics import DiagnosticCode

from device_firmware.errors import RelayError
from device_firmware.relay_client import MAX_RESPONSE_SIZE, RelayClient, build_ssl_context

from .conftest import serve


def app_answering(
    body: bytes, status: int = 200, content_type: str = "application/json"
) -> web.Application:
    async def handler(_request: web.Request) -> web.Response:
        return web.Response(body=body, status=status, content_type=content_type)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"<html>proxy error</html>", 502),
        (b"not json", 200),
        (b"[1, 2]", 200),
        (b'{"status": "ok", "time": "now"}', 200),
        (b'{"status": "ok", "time": true}', 200),
        (b"{" + b" " * (MAX_RESPONSE_SIZE + 10) + b"}", 200),
        (b'{"error": "flat"}', 404),
    ],
)
async def test_unexpected_health_answers_are_unreachable(body: bytes, status: int) -> None:
    async with serve(app_answering(body, status)) as url, RelayClient(url, timeout=5) as relay:
        with pytest.raises(RelayError) as caught:
            await relay.health()
        assert caught.value.code is DiagnosticCode.RELAY_UNREACHABLE


async def test_redirects_are_not_followed() -> None:
    async def handler(_request: web.Request) -> web.Response:
        raise web.HTTPFound("http://elsewhere.invalid/")

    app = web.Application()
    app.router.add_get("/v1/health", handler)
    async with serve(app) as url, RelayClient(url, timeout=5) as relay:
        with pytest.raises(RelayError) as caught:
            await relay.health()
        assert caught.value.code is DiagnosticCode.RELAY_UNREACHABLE


def test_unreadable_ca_file_is_tls_failed(tmp_path: object) -> None:

    bad = Path(str(tmp_path)) / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(RelayError) as caught:
        build_ssl_context(bad)
    assert caught.value.code is DiagnosticCode.TLS_FAILED
