"""What every handler needs: the relay, the caller, JSON bodies checked against /openapi.json."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from typing import Any, Final, TypeVar

from aiohttp import web
from iob_protocol.account_api import WireFormatError, WireModel, WireRequest
from iob_protocol.boundedjson import load_json
from iob_protocol.errors import JsonTooDeepError as ProtocolJsonTooDeepError
from iob_protocol.errors import MalformedMessageError

from cloud_relay.accounts import Account
from cloud_relay.errors import (
    AuthenticationRequiredError,
    InvalidRequestError,
    JsonTooDeepError,
    NotFoundError,
    RelayError,
    RequestTooLargeError,
    UnsupportedMediaTypeError,
)
from cloud_relay.relay import Relay

from .openapi import document

RELAY: Final = web.AppKey("relay", Relay)
_ID_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_BEARER_RE: Final = re.compile(r"Bearer ([A-Za-z0-9_-]{16,128})", re.IGNORECASE)
MAX_PAGE: Final = 200
JSON_MEDIA_TYPE: Final = "application/json"
_READ_CHUNK: Final = 64 * 1024


def relay(request: web.Request) -> Relay:
    """The relay behind this app."""
    return request.app[RELAY]


def client_address(request: web.Request) -> str:
    """The caller's address for rate limits (X-Forwarded-For only when configured)."""
    if relay(request).ctx.config.trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For", "")
        first = forwarded.split(",", 1)[0].strip()
        if first:
            return first[:64]
    return request.remote or "unknown"


def bearer_token(request: web.Request) -> str:
    """The access token from ``Authorization: Bearer …``."""
    header = request.headers.get("Authorization")
    if header is None:
        raise AuthenticationRequiredError
    match = _BEARER_RE.fullmatch(header.strip())
    if match is None:
        raise AuthenticationRequiredError(
            "Send the access token as 'Authorization: Bearer <token>'."
        )
    return match[1]


async def account(request: web.Request) -> Account:
    """The signed-in account, or 401."""
    return await relay(request).accounts.authenticate(bearer_token(request))


def path_id(request: web.Request, name: str, error: type[NotFoundError] = NotFoundError) -> str:
    """A path parameter that looks like one of our ids (anything else cannot exist)."""
    value = request.match_info[name]
    if not _ID_RE.fullmatch(value):
        raise error
    return value


def query_id(request: web.Request, name: str) -> str | None:
    """An optional query parameter that filters by one of our ids (absent → None).

    Checked like a path id: anything else cannot match, and PostgreSQL refuses some strings
    outright (NUL), which must be a 400, not a database failure.
    """
    value = request.query.get(name)
    if value is not None and not _ID_RE.fullmatch(value):
        raise InvalidRequestError(f"{name} must be an id: 1-64 letters, digits, '_', '.' or '-'")
    return value


async def _body_bytes(request: web.Request, limit: int) -> bytes:
    """The whole body, refusing more than ``limit`` bytes before or while reading it."""
    if request.content_length is not None and request.content_length > limit:
        raise RequestTooLargeError(f"The body must be at most {limit} bytes.")
    if request.content_type != JSON_MEDIA_TYPE or (request.charset or "utf-8").lower() != "utf-8":
        raise UnsupportedMediaTypeError
    body = bytearray()
    async for chunk in request.content.iter_chunked(_READ_CHUNK):
        body += chunk
        if len(body) > limit:
            raise RequestTooLargeError(f"The body must be at most {limit} bytes.")
    return bytes(body)


_Request = TypeVar("_Request", bound=WireRequest)


async def read_body(
    request: web.Request, model: type[_Request], limit: int | None = None
) -> _Request:
    """The body as ``model``, checked against its operation's request schema in /openapi.json.

    ``Content-Type: application/json`` (UTF-8), at most ``limit`` bytes (the configured
    ``max_body_bytes`` by default), JSON nested at most ``MAX_JSON_DEPTH`` levels, no duplicate
    keys, then :func:`check_body`.
    """
    limit = limit or relay(request).ctx.config.max_body_bytes
    body = await _body_bytes(request, limit)
    try:
        value = load_json(body, max_bytes=limit)
    except ProtocolJsonTooDeepError as err:
        raise JsonTooDeepError from err
    except MalformedMessageError as err:
        raise InvalidRequestError(
            f"The body is not valid JSON ({err}); send one JSON object, UTF-8."
        ) from err
    if not isinstance(value, dict):
        raise InvalidRequestError("The body must be a JSON object.")
    route = request.match_info.route.resource
    canonical = route.canonical if route is not None else request.path
    check_body(value, request_schema(request.method, canonical))
    try:
        return model.parse(value)
    except WireFormatError as err:  # the document and the model disagree: a bug of ours
        raise RelayError(f"{request.method} {canonical}: {err}") from err


def check_body(data: dict[str, Any], schema: Mapping[str, Any]) -> None:
    """Check a JSON object body against its documented schema (``requestBody``).

    The one place where request bodies are validated, driven by the document (generated from
    the wire model), so the API accepts exactly what it documents: unknown fields, missing
    required ones, ``null`` where a string is documented, strings outside
    ``minLength``/``maxLength``, their ``pattern`` or their ``enum``, strings with NUL or lone
    surrogates, and arrays outside ``minItems``/``maxItems`` are all 400 ``invalid_request``.
    What JSON Schema cannot say (a normalised e-mail address, a verified signature) the
    services check next.
    """
    properties: Mapping[str, Any] = schema["properties"]
    unknown = set(data) - set(properties)
    if unknown:
        raise InvalidRequestError(f"unknown field(s): {', '.join(sorted(unknown))}")
    for name in schema.get("required", ()):
        if name not in data:
            raise InvalidRequestError(f"{name} is required")
    for name, value in data.items():
        problem = schema_problem(value, properties[name])
        if problem is not None:
            raise InvalidRequestError(f"{name} {problem}")
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as err:
                raise InvalidRequestError(f"{name} is not valid Unicode") from err
            if "\x00" in value:
                raise InvalidRequestError(f"{name} must not contain NUL characters")


_JSON_TYPES: Final[dict[str, type | tuple[type, ...]]] = {
    "string": str,
    "object": dict,
    "array": list,
    "boolean": bool,
    "integer": int,
}
#: Keywords :func:`schema_problem` enforces, and those it leaves to the handler's parser (the
#: items of a registry import, a signed statement's fields) or that only annotate.
CHECKED_KEYWORDS: Final = frozenset(
    {"type", "minLength", "maxLength", "pattern", "enum", "minItems", "maxItems", "oneOf", "$ref"}
)
HANDLER_KEYWORDS: Final = frozenset(
    {
        "items",
        "properties",
        "required",
        "additionalProperties",
        "propertyNames",
        "format",
        "description",
    }
)


def _resolve(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    reference = schema.get("$ref")
    if reference is None:
        return schema
    resolved: Mapping[str, Any] = document()["components"]["schemas"][reference.rsplit("/", 1)[1]]
    return resolved


def schema_problem(value: Any, schema: Mapping[str, Any]) -> str | None:  # noqa: C901, PLR0911
    """What is wrong with ``value`` under ``schema`` (the keywords in :data:`CHECKED_KEYWORDS`).

    None when it fits. ``null`` fits only a schema that says so (no request schema does).
    """
    schema = _resolve(schema)
    if "oneOf" in schema:
        problems = [schema_problem(value, option) for option in schema["oneOf"]]
        if problems.count(None) == 1:
            return None
        # The form of the value's own type says best what is wrong with it.
        typed = [p for p in problems if p and not p.startswith(("must be a ", "must be an "))]
        return typed[0] if typed else "has none of its documented forms; see /openapi.json"
    kind = schema.get("type")
    expected = _JSON_TYPES.get(kind) if isinstance(kind, str) else None
    if expected is not None and (
        not isinstance(value, expected) or (kind == "integer" and isinstance(value, bool))
    ):
        return f"must be {'an' if kind in {'object', 'array', 'integer'} else 'a'} {kind}"
    if "enum" in schema and value not in schema["enum"]:
        return f"must be one of {', '.join(map(str, schema['enum']))}"
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            return f"must be at least {schema['minLength']} character(s)"
        if len(value) > schema.get("maxLength", len(value)):
            return f"must be at most {schema['maxLength']} characters"
        if "pattern" in schema and _pattern(schema["pattern"]).search(value) is None:
            return "must have at least one visible character and no control characters"
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            return f"must have at least {schema['minItems']} item(s)"
        if len(value) > schema.get("maxItems", len(value)):
            return f"must have at most {schema['maxItems']} items"
    return None


@cache
def _pattern(pattern: str) -> re.Pattern[str]:
    """A document pattern (ECMA-262) as Python reads it: a final ``$`` is the very end."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


@cache
def _request_schemas() -> dict[tuple[str, str], Mapping[str, Any]]:
    schemas: dict[tuple[str, str], Mapping[str, Any]] = {}
    for path, item in document()["paths"].items():
        for method, operation in item.items():
            body = operation.get("requestBody")
            if body is not None:
                schema = _resolve(body["content"][JSON_MEDIA_TYPE]["schema"])
                schemas[method.upper(), path] = schema
    return schemas


def request_schema(method: str, path: str) -> Mapping[str, Any]:
    """The documented body schema of ``method path`` (a route template)."""
    schema = _request_schemas().get((method, path))
    if schema is None:  # a handler reads a body its operation does not document
        raise RelayError(f"{method} {path} reads a body that /openapi.json does not document")
    return schema


def page_params(request: web.Request) -> tuple[str | None, int]:
    """``cursor`` and ``limit`` (1-200, default 50) from the query string."""
    cursor = request.query.get("cursor")
    text = request.query.get("limit", "50")
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise InvalidRequestError(f"limit must be an integer from 1 to {MAX_PAGE}")
    return cursor, int(text)


def ok(answer: WireModel, status: int = 200) -> web.Response:
    """The JSON response of ``answer``, a model of the shared wire model."""
    return web.json_response(answer.to_dict(), status=status)


def no_content() -> web.Response:
    """204."""
    return web.Response(status=204)
