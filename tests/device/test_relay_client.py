"""The account-service client's error mapping on answers the real service never gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import web
from iob_protocol.account_api import ErrorBody, ErrorCode
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


DEVICE = "0123456789ABCDEF"
GRANT = {"host": "broker", "port": 8883, "tls": True, "username": DEVICE, "password": "pw"}
OWNED = {"status": "owned", "device_id": DEVICE, "household_id": "a" * 32, "mqtt": GRANT}


@pytest.mark.parametrize(
    "answer",
    [
        {**OWNED, "mqtt": {**GRANT, "port": "8883"}},
        {**OWNED, "mqtt": {**GRANT, "port": 0}},
        {**OWNED, "mqtt": {**GRANT, "tls": "yes"}},
        {**OWNED, "mqtt": {**GRANT, "password": ""}},
        {**OWNED, "household_id": ""},
        {**OWNED, "extra": 1},
        {k: v for k, v in OWNED.items() if k != "mqtt"},
    ],
)
async def test_malformed_owned_answers_are_unreachable(answer: dict[str, object]) -> None:
    """The wire model's checks: a wrong type, range or field is never taken as a grant."""
    body = json.dumps(answer).encode()
    async with serve(app_answering(body)) as url, RelayClient(url, timeout=5) as relay:
        with pytest.raises(RelayError) as caught:
            await relay.confirm_zero_touch({}, DEVICE)
        assert caught.value.code is DiagnosticCode.RELAY_UNREACHABLE


async def test_a_well_formed_owned_answer_is_the_grant() -> None:
    body = json.dumps({**OWNED, "mqtt": {**GRANT, "client_id": DEVICE}}).encode()
    async with serve(app_answering(body)) as url, RelayClient(url, timeout=5) as relay:
        outcome = await relay.confirm_zero_touch({}, DEVICE)
    assert (outcome.mqtt.port, outcome.mqtt.client_id) == (8883, DEVICE)


@pytest.mark.parametrize(
    ("code", "diagnostic"),
    [
        (ErrorCode.CLAIM_EXPIRED, DiagnosticCode.CLAIM_EXPIRED),
        (ErrorCode.CLOCK_SKEW, DiagnosticCode.CLOCK_SKEW),
        (ErrorCode.CREDENTIAL_REFUSED, DiagnosticCode.BROKER_AUTH_FAILED),
    ],
)
async def test_error_codes_are_the_shared_ones(code: ErrorCode, diagnostic: DiagnosticCode) -> None:
    body = json.dumps(ErrorBody.of(code, "m").to_dict()).encode()
    async with serve(app_answering(body, 409)) as url, RelayClient(url, timeout=5) as relay:
        with pytest.raises(RelayError) as caught:
            await relay.confirm_zero_touch({}, DEVICE)
    assert (caught.value.code, caught.value.relay_code) == (diagnostic, code)
