"""The fault-injecting service (tests/plugins/scripted_service.py): its lookup order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.plugins.scripted_service import (
    ANY,
    Answer,
    Received,
    ScriptedService,
    error,
    scripted,
)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def ask(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None
) -> tuple[int, str, bytes]:
    async with http.request(
        method, url, json=body, headers={"Authorization": "Bearer t1"}, allow_redirects=False
    ) as reply:
        return reply.status, reply.content_type, await reply.read()


async def test_queued_then_answer_then_default_then_404(
    scripted_service: ScriptedService, http: aiohttp.ClientSession
) -> None:
    url = scripted_service.url + "/v1/x"
    scripted_service.default("GET", "/v1/x", Answer(200, {"from": "default"}))
    assert await ask(http, "GET", url) == (200, "application/json", b'{"from": "default"}')
    scripted_service.answer("GET", "/v1/x", error(503, "broker_unavailable"))
    scripted_service.queue("GET", "/v1/x", Answer(201, b"once", "text/plain"))
    assert await ask(http, "GET", url) == (201, "text/plain", b"once")
    status, _, body = await ask(http, "GET", url)
    assert (status, body) == (
        503,
        b'{"error": {"code": "broker_unavailable", "message": "scripted"}}',
    )
    assert (await ask(http, "GET", scripted_service.url + "/v1/y"))[0] == 404
    scripted_service.answer(ANY, ANY, Answer(418))
    assert (await ask(http, "DELETE", scripted_service.url + "/v1/y"))[0] == 418


async def test_requests_are_recorded_and_answers_may_read_them(
    scripted_service: ScriptedService, http: aiohttp.ClientSession
) -> None:
    def echo(request: Received) -> Answer:
        return Answer(200, {"got": request.body, "token": request.token})

    scripted_service.answer("POST", "/v1/echo", echo)
    status, _, body = await ask(http, "POST", scripted_service.url + "/v1/echo?a=b", {"n": 1})
    assert (status, body) == (200, b'{"got": {"n": 1}, "token": "t1"}')
    (received,) = scripted_service.received("POST", "/v1/echo")
    assert (received.query, received.raw_path) == ({"a": "b"}, "/v1/echo?a=b")


async def test_upstream_takes_what_is_not_scripted_and_defaults_step_aside(
    scripted_service: ScriptedService, http: aiohttp.ClientSession
) -> None:
    async with scripted() as real:
        real.answer("POST", "/v1/a", lambda request: Answer(200, {"upstream": request.body}))
        scripted_service.default("POST", "/v1/a", Answer(200, {"from": "default"}))
        scripted_service.upstream = real.url
        scripted_service.answer("POST", "/v1/b", Answer(502, b"<html>", "text/html"))
        assert (await ask(http, "POST", scripted_service.url + "/v1/a", {"k": 2}))[2] == (
            b'{"upstream": {"k": 2}}'
        )
        assert (await ask(http, "POST", scripted_service.url + "/v1/b"))[:2] == (502, "text/html")
        assert [r.path for r in real.requests] == ["/v1/a"]
        assert real.requests[0].token == "t1"  # noqa: S105 - forwarded with its authorization


async def test_a_closed_service_refuses_connections(
    scripted_service: ScriptedService, http: aiohttp.ClientSession
) -> None:
    url = scripted_service.url
    await scripted_service.close()
    with pytest.raises(aiohttp.ClientConnectionError):
        await ask(http, "GET", url)


async def test_a_slow_answer_outlasts_a_short_client_timeout(
    scripted_service: ScriptedService,
) -> None:
    scripted_service.answer("GET", "/v1/health", Answer(200, {}, delay=30))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.2)) as http:
        with pytest.raises(TimeoutError):
            await ask(http, "GET", scripted_service.url + "/v1/health")
    assert len(scripted_service.received("GET", "/v1/health")) == 1


async def test_the_gate_answers_before_the_script(
    scripted_service: ScriptedService, http: aiohttp.ClientSession
) -> None:
    def tokens(request: Received) -> Answer | None:
        return None if request.token == "t1" else error(401, "invalid_token")  # noqa: S105

    scripted_service.gate = tokens
    scripted_service.answer("GET", "/v1/me", Answer(200, {"me": 1}))
    assert (await ask(http, "GET", scripted_service.url + "/v1/me"))[0] == 200
    async with http.get(scripted_service.url + "/v1/me") as reply:  # no token
        assert reply.status == 401
