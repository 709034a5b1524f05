"""Hostile JSON at the endpoints anyone may call: deep nesting is one 400 and one log line.

A 10 KB body nested 5,000 deep used to answer 500 with a ~3,000-line traceback (the canonical
check recursed without a bound), and it was parsed before the per-address limiter counted it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from cloud_relay.broker.mosquitto import MosquittoDynsecAdapter
from cloud_relay.config import Limit, RelayConfig
from tests.plugins.relay_config import GENEROUS

from .conftest import AppFactory
from .helpers import Api

DEEP = 5000
#: Deep enough to pass the C parser but not the canonical check's recursion (before the fix).
MIDDLING = 800
#: The unauthenticated endpoints a device (or HA on its behalf) posts signed statements to.
STATEMENT_ENDPOINTS = (
    ("/v1/claims/confirm", "confirmation"),
    ("/v1/zero-touch/confirm", "confirmation"),
    ("/v1/device/mqtt-credential", "request"),
    ("/v1/devices/release-by-device", "release"),
)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


#: A statement's JSON text is at most 4096 characters (the document); this fits.
TEXT_DEEP = 2000


def hostile_bodies(field: str) -> Iterator[tuple[str, bytes]]:
    """The deep statement as its JSON text, as JSON itself, and middling-deep."""
    yield "json", f'{{"{field}": {_nested(DEEP)}}}'.encode()
    yield "text", json.dumps({field: _nested(TEXT_DEEP)}).encode()
    yield "middling text", json.dumps({field: _nested(MIDDLING)}).encode()
    yield "middling json", f'{{"{field}": {_nested(MIDDLING)}}}'.encode()
    yield "deep inside an object", f'{{"{field}": {{"device_id": {_nested(DEEP)}}}}}'.encode()


def assert_one_quiet_line(caplog: pytest.LogCaptureFixture) -> None:
    """At most one line at INFO or above (the access log aside), and no traceback at all."""
    lines = [r for r in caplog.records if r.levelno >= logging.INFO and r.name != "aiohttp.access"]
    assert len(lines) <= 1, [r.getMessage()[:200] for r in lines]
    assert all(r.exc_info is None and r.exc_text is None for r in caplog.records)
    assert "Traceback" not in caplog.text
    assert len(caplog.text) < 2000, len(caplog.text)


@pytest.mark.parametrize(("path", "field"), STATEMENT_ENDPOINTS)
async def test_deep_statements_are_one_400_and_one_log_line(
    api: Api, caplog: pytest.LogCaptureFixture, path: str, field: str
) -> None:
    caplog.set_level(logging.DEBUG)
    for name, body in hostile_bodies(field):
        assert len(body) < 11_000
        caplog.clear()
        reply = await api.request(
            "POST", path, data=body, headers={"Content-Type": "application/json"}
        )
        assert (reply.status, reply.code) == (400, "json_too_deep"), (name, reply.body)
        assert "32" in reply.body["error"]["message"]
        assert_one_quiet_line(caplog)
    # The issue's own body: the text form 5,000 deep is longer than a statement may be.
    caplog.clear()
    reply = await api.request(
        "POST",
        path,
        data=json.dumps({field: _nested(DEEP)}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert (reply.status, reply.code) == (400, "invalid_request")
    assert reply.body["error"]["message"] == f"{field} must be at most 4096 characters"
    assert_one_quiet_line(caplog)


async def test_every_json_body_is_bounded(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    """Not only the device endpoints: a signed-in body nested too deep gets the same answer."""
    caplog.set_level(logging.DEBUG)
    admin = await api.admin()
    metadata = f'{{"name": "Deep", "metadata": {{"a": {_nested(MIDDLING)}}}}}'
    for method, path, body, token in (
        ("POST", "/v1/auth/sign-in", f'{{"email": {_nested(DEEP)}}}', None),
        ("PUT", "/v1/admin/models/deep", metadata, admin.token),
    ):
        caplog.clear()
        reply = await api.request(
            method,
            path,
            data=body.encode(),
            token=token,
            headers={"Content-Type": "application/json"},
        )
        assert (reply.status, reply.code) == (400, "json_too_deep"), (path, reply.body)
        assert_one_quiet_line(caplog)


@pytest.mark.parametrize(("path", "field"), STATEMENT_ENDPOINTS)
async def test_the_address_limit_counts_before_the_body_is_parsed(
    start_api: AppFactory,
    relay_config: RelayConfig,
    broker_adapter: MosquittoDynsecAdapter,
    path: str,
    field: str,
) -> None:
    limits = relay_config.limits
    config = relay_config.with_changes(
        limits=type(limits)(
            **{
                **dict.fromkeys(type(limits).__dataclass_fields__, GENEROUS),
                "confirm_per_address": Limit(2, 3600),
            }
        )
    )
    api: Api = await start_api(config, broker_adapter)
    _, deep = next(hostile_bodies(field))
    headers = {"Content-Type": "application/json"}
    for _ in range(2):
        reply = await api.request("POST", path, data=deep, headers=headers)
        assert (reply.status, reply.code) == (400, "json_too_deep")
    # The third is refused by the limiter, unread: even a well-formed body.
    device = await api.device()
    for body in (deep, json.dumps({field: device.zero_touch(api.now())}).encode()):
        reply = await api.request("POST", path, data=body, headers=headers)
        assert (reply.status, reply.code) == (429, "rate_limited")
        assert int(reply.headers["Retry-After"]) > 0
