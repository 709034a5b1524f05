"""The account-service client's error mapping on answers the real service never gives."""

from __future__ import annotations

import socket
from pathlib import Path

import aiohttp
import aiohttp.abc
import pytest
from iob_protocol.account_api import ErrorBody, ErrorCode
from iob_protocol.diagnostics import DiagnosticCode

from device_firmware.errors import RelayCertificateError, RelayError
from device_firmware.relay_client import MAX_RESPONSE_SIZE, RelayClient, build_ssl_context
from tests.plugins.ports import free_port
from tests.plugins.scripted_service import ANY, Answer, ScriptedService, scripted

from .tls import make_pki


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
async def test_unexpected_health_answers_are_unreachable(
    scripted_service: ScriptedService, body: bytes, status: int
) -> None:
    scripted_service.answer(ANY, ANY, Answer(status, body))
    async with RelayClient(scripted_service.url, timeout=5) as relay:
        with pytest.raises(RelayError) as caught:
            await relay.health()
        assert caught.value.code is DiagnosticCode.RELAY_UNREACHABLE


async def test_redirects_are_not_followed(scripted_service: ScriptedService) -> None:
    redirect = Answer(302, headers={"Location": "http://elsewhere.invalid/"})
    scripted_service.answer("GET", "/v1/health", redirect)
    async with RelayClient(scripted_service.url, timeout=5) as relay:
        with pytest.raises(RelayError) as caught:
            await relay.health()
        assert caught.value.code is DiagnosticCode.RELAY_UNREACHABLE


async def test_an_http_service_gets_nothing_in_clear(scripted_service: ScriptedService) -> None:
    """A real device (no ``allow_insecure_http``) sends an ``http`` service nothing at all: a
    credential request would bring its MQTT password back over the LAN unencrypted."""
    async with RelayClient(scripted_service.url, timeout=5, allow_insecure_http=False) as relay:
        with pytest.raises(RelayError) as caught:
            await relay.health()
    assert caught.value.code is DiagnosticCode.TLS_FAILED
    assert "not https" in str(caught.value)
    assert scripted_service.requests == []


async def test_connection_errors_name_their_cause_not_the_clients_internals(
    tmp_path: Path,
) -> None:
    """What the user and the log see says what failed, without aiohttp's repr of the TLS
    context ("ssl:<ssl.SSLContext object at 0x…>") that a private CA brings."""
    (tmp_path / "service").mkdir()
    (tmp_path / "other").mkdir()
    service_pki = make_pki(tmp_path / "service")
    trusted = build_ssl_context(make_pki(tmp_path / "other").ca_file)
    closed = f"https://127.0.0.1:{free_port()}"
    async with RelayClient(closed, timeout=5, ssl_context=trusted) as relay:
        with pytest.raises(RelayError) as refused:
            await relay.health()
    assert refused.value.code is DiagnosticCode.RELAY_UNREACHABLE
    assert str(refused.value).endswith(f"{closed}/v1/health: Connection refused")
    async with (
        scripted(ssl_context=service_pki.server_context()) as service,
        RelayClient(service.url, timeout=5, ssl_context=trusted) as relay,
    ):
        with pytest.raises(RelayCertificateError) as untrusted:
            await relay.health()
    assert untrusted.value.code is DiagnosticCode.TLS_FAILED
    assert "certificate verify failed" in str(untrusted.value)
    for message in (str(refused.value), str(untrusted.value)):
        assert "SSLContext" not in message
        assert " object at 0x" not in message


class _NoSuchName(aiohttp.abc.AbstractResolver):
    """A resolver that finds nothing, as a real one does for an unknown name."""

    async def resolve(
        self,
        host: str,
        port: int = 0,
        family: socket.AddressFamily = socket.AF_INET,  # aiohttp passes it by name
    ) -> list[aiohttp.abc.ResolveResult]:
        del host, port, family
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def close(self) -> None:
        return None


async def test_resolver_and_handshake_errors_keep_their_own_text(
    scripted_service: ScriptedService,
) -> None:
    """A resolver's and a TLS library's error numbers are not errno values: their own text is
    kept ("Unknown error -2" or "Operation not permitted" would mislead)."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=_NoSuchName())) as session,
        RelayClient("https://relay.example.net", timeout=5, session=session) as relay,
    ):
        with pytest.raises(RelayError) as unknown:
            await relay.health()
    assert unknown.value.code is DiagnosticCode.DNS_FAILED
    assert str(unknown.value).endswith("/v1/health: Name or service not known")
    # https to a plain-HTTP server (as a portal or a proxy may answer): the handshake fails.
    plain = scripted_service.url.replace("http://", "https://")
    async with RelayClient(plain, timeout=5) as relay:
        with pytest.raises(RelayCertificateError) as handshake:
            await relay.health()
    assert handshake.value.code is DiagnosticCode.TLS_FAILED
    assert "SSL" in str(handshake.value)
    assert "Operation not permitted" not in str(handshake.value)


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
async def test_malformed_owned_answers_are_unreachable(
    scripted_service: ScriptedService, answer: dict[str, object]
) -> None:
    """The wire model's checks: a wrong type, range or field is never taken as a grant."""
    scripted_service.answer(ANY, ANY, Answer(200, answer))
    async with RelayClient(scripted_service.url, timeout=5) as relay:
        with pytest.raises(RelayError) as caught:
            await relay.confirm_zero_touch({}, DEVICE)
        assert caught.value.code is DiagnosticCode.RELAY_UNREACHABLE


async def test_a_well_formed_owned_answer_is_the_grant(scripted_service: ScriptedService) -> None:
    scripted_service.answer(
        ANY, ANY, Answer(200, {**OWNED, "mqtt": {**GRANT, "client_id": DEVICE}})
    )
    async with RelayClient(scripted_service.url, timeout=5) as relay:
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
async def test_error_codes_are_the_shared_ones(
    scripted_service: ScriptedService, code: ErrorCode, diagnostic: DiagnosticCode
) -> None:
    scripted_service.answer(ANY, ANY, Answer(409, ErrorBody.of(code, "m").to_dict()))
    async with RelayClient(scripted_service.url, timeout=5) as relay:
        with pytest.raises(RelayError) as caught:
            await relay.confirm_zero_touch({}, DEVICE)
    assert (caught.value.code, caught.value.relay_code) == (diagnostic, code)
