"""HTTP edges: malformed JSON, huge bodies, unknown routes and methods, unicode."""

from __future__ import annotations

import pytest

from tests.raw_http import assert_one_quiet_line_each

from .helpers import Api


async def test_malformed_json(api: Api) -> None:
    for data in [
        b"{",
        b"[]",
        b"null",
        b'"x"',
        b"\xff\xfe",
        b'{"email": NaN}',
        b'{"email": "a@example.com", "email": "b@example.com", "password": "x"}',
    ]:
        reply = await api.request(
            "POST", "/v1/auth/sign-in", data=data, headers={"Content-Type": "application/json"}
        )
        assert (reply.status, reply.code) == (400, "invalid_request"), data[:20]
    reply = await api.request(
        "POST", "/v1/auth/sign-in", data=b"{" * 10000, headers={"Content-Type": "application/json"}
    )
    assert (reply.status, reply.code) == (400, "json_too_deep")


async def test_unknown_and_wrongly_typed_fields(api: Api) -> None:
    for body in [
        {"email": "a@example.com", "password": "x" * 12, "admin": True},
        {"email": 5, "password": "x" * 12},
        {"email": "a@example.com"},
    ]:
        reply = await api.request("POST", "/v1/auth/sign-in", json_body=body)
        assert (reply.status, reply.code) == (400, "invalid_request"), body


async def test_huge_bodies_are_refused(api: Api) -> None:
    huge = b'{"email": "' + b"a" * (70 * 1024) + b'"}'
    reply = await api.request(
        "POST", "/v1/auth/sign-in", data=huge, headers={"Content-Type": "application/json"}
    )
    assert (reply.status, reply.code) == (413, "request_too_large")
    enormous = b"x" * (17 * 1024 * 1024)
    reply = await api.request("POST", "/v1/claims/confirm", data=enormous)
    assert (reply.status, reply.code) == (413, "request_too_large")


async def test_unknown_route_and_method(api: Api) -> None:
    reply = await api.request("GET", "/v1/nothing-here")
    assert (reply.status, reply.code) == (404, "not_found")
    reply = await api.request("DELETE", "/v1/health")
    assert (reply.status, reply.code) == (405, "method_not_allowed")
    assert reply.headers["Cache-Control"] == "no-store"


async def test_openapi_document_is_served(api: Api) -> None:
    reply = await api.request("GET", "/openapi.json", expect=200)
    assert reply.body["openapi"].startswith("3.1")
    assert "/v1/claims/confirm" in reply.body["paths"]


async def test_unicode_passwords_and_emails(api: Api) -> None:
    user = await api.sign_up("zoë@exämple.com", "пароль-密码-🔑🔑")
    await api.request(
        "POST",
        "/v1/auth/sign-in",
        json_body={"email": "ZOË@EXÄMPLE.COM", "password": "пароль-密码-🔑🔑"},
        expect=200,
    )
    assert user.email == "zoë@exämple.com"


async def test_malformed_http_is_one_quiet_line(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    server = api.client.server
    assert server.port is not None
    await assert_one_quiet_line_each(server.port, caplog)
