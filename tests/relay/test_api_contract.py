"""The API accepts exactly what /openapi.json allows: every refusal the document implies, tried.

Derived from the document, not written per endpoint: for every operation with a body, each
property in turn gets ``null``, a value of the wrong type, a string outside its length bounds
or its ``enum``, and the body a duplicate key, an unknown field and a non-JSON media type;
for every path, each method the document does not list must be 405 with an ``Allow`` header
naming exactly the listed ones (and HEAD, which HTTP implies for GET).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from typing import Any

from cloud_relay.api.openapi import document

from .helpers import Api, User

ALL_METHODS = ("GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "TRACE")
JSON = {"Content-Type": "application/json"}


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        resolved: dict[str, Any] = document()["components"]["schemas"][
            schema["$ref"].rsplit("/", 1)[1]
        ]
        return resolved
    return schema


def _fill(path: str) -> str:
    """Well-formed ids in every path parameter (the body is checked before the id is looked up)."""
    return re.sub(r"\{\w+\}", "0" * 32, path)


_SIMPLE: dict[str, Any] = {"object": {}, "array": []}


def _valid(name: str, schema: dict[str, Any]) -> Any:
    """A value the schema allows (and, where cheap, the service too)."""
    schema = _resolve(schema)
    if "oneOf" in schema:
        return {}
    if "enum" in schema:
        return schema["enum"][-1]
    if schema.get("type") in _SIMPLE:
        return _SIMPLE[schema["type"]]
    if schema.get("format") == "email" or name == "email":
        return f"contract-{secrets.token_hex(4)}@example.com"
    if name == "password":
        return "a long enough password"
    return "x" * max(schema.get("minLength", 1), 1)


def _invalid(schema: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Values the property's schema refuses."""
    schema = _resolve(schema)
    yield "null", None
    kinds = {option.get("type") for option in schema.get("oneOf", [schema])}
    yield "wrong type", ["x"] if "array" not in kinds else 5
    if "minLength" in schema and schema["minLength"] > 0:
        yield "too short", "x" * (schema["minLength"] - 1)
    if "maxLength" in schema:
        yield "too long", "x" * (schema["maxLength"] + 1)
    if "enum" in schema:
        yield "not in enum", "not-one-of-them"
    if "pattern" in schema:
        yield "control character", "x\u0007"
        yield "a trailing newline", "x\n"
    if schema.get("minItems", 0) > 0:
        yield "too few items", []


def body_operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document()["paths"].items():
        for method, operation in item.items():
            body = operation.get("requestBody")
            if body is not None:
                schema = _resolve(body["content"]["application/json"]["schema"])
                yield method.upper(), path, schema


async def _send(api: Api, method: str, path: str, data: bytes, admin: User, **headers: str) -> Any:
    return await api.request(method, path, data=data, token=admin.token, headers=headers or JSON)


async def test_every_body_the_document_refuses_is_refused(api: Api) -> None:
    admin = await api.admin()
    tried = 0
    for method, path, schema in body_operations():
        url = _fill(path)
        properties = schema["properties"]
        base = {name: _valid(name, properties[name]) for name in schema.get("required", [])}
        for name, property_schema in properties.items():
            for case, value in _invalid(property_schema):
                body = json.dumps({**base, name: value}).encode()
                reply = await _send(api, method, url, body, admin)
                assert (reply.status, reply.code) == (400, "invalid_request"), (
                    method,
                    path,
                    name,
                    case,
                    reply.body,
                )
                assert reply.body["error"]["message"].startswith(f"{name} "), reply.body
                tried += 1
            # The same key twice: two parsers could read two different bodies.
            pair = json.dumps({name: _valid(name, property_schema)})[1:-1]
            text = json.dumps(base)[:-1] + (", " if base else "") + pair + ", " + pair + "}"
            reply = await _send(api, method, url, text.encode(), admin)
            assert (reply.status, reply.code) == (400, "invalid_request"), (path, name, reply.body)
            assert "duplicate key" in reply.body["error"]["message"]
        reply = await _send(api, method, url, json.dumps({**base, "unexpected": 1}).encode(), admin)
        assert (reply.status, reply.code) == (400, "invalid_request"), (path, reply.body)
        assert reply.body["error"]["message"] == "unknown field(s): unexpected"
        for content_type in ("text/plain", "application/x-www-form-urlencoded", ""):
            headers = {"Content-Type": content_type} if content_type else {}
            reply = await api.request(
                method, url, data=json.dumps(base).encode(), token=admin.token, headers=headers
            )
            assert (reply.status, reply.code) == (415, "unsupported_media_type"), (path, reply)
        reply = await _send(
            api,
            method,
            url,
            json.dumps(base).encode("utf-16"),
            admin,
            **{"Content-Type": "application/json; charset=utf-16"},
        )
        assert (reply.status, reply.code) == (415, "unsupported_media_type"), (path, reply)
    assert tried > 60


async def test_the_documented_display_name_bounds_hold_at_sign_up(api: Api) -> None:
    """The issue's examples: an empty display_name and a text/plain body created accounts."""
    email = f"plain-{secrets.token_hex(4)}@example.com"
    for body, content_type in (
        ({"email": email, "password": "a long enough password", "display_name": ""}, JSON),
        ({"email": email, "password": "a long enough password"}, {"Content-Type": "text/plain"}),
    ):
        reply = await api.request(
            "POST", "/v1/auth/sign-up", data=json.dumps(body), headers=content_type
        )
        assert reply.status in {400, 415}, reply
    assert await api.relay.accounts.find(email) is None


async def test_undocumented_methods_are_405_allowing_exactly_the_documented(api: Api) -> None:
    admin = await api.admin()
    for path, item in document()["paths"].items():
        url = _fill(path)
        documented = {method.upper() for method in item}
        allowed = documented | ({"HEAD"} if "GET" in documented else set())
        for method in ALL_METHODS:
            if method in documented:
                continue
            reply = await api.request(method, url, token=admin.token)
            assert (reply.status, reply.code) == (405, "method_not_allowed"), (method, path)
            assert set(reply.headers["Allow"].split(",")) == allowed, (method, path, reply.headers)
