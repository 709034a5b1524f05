"""What every handler needs: the relay, the caller, bounded JSON bodies, typed fields."""

from __future__ import annotations

import json
import re
from typing import Any, Final, NoReturn

from aiohttp import web

from cloud_relay.accounts import Account
from cloud_relay.errors import (
    AuthenticationRequiredError,
    InvalidRequestError,
    NotFoundError,
    RequestTooLargeError,
)
from cloud_relay.relay import Relay

RELAY: Final = web.AppKey("relay", Relay)
_ID_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_BEARER_RE: Final = re.compile(r"Bearer ([A-Za-z0-9_-]{16,128})", re.IGNORECASE)
MAX_PAGE: Final = 200


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


def _reject_constant(name: str) -> NoReturn:
    raise InvalidRequestError(f"{name} is not valid JSON")


async def read_json(request: web.Request, limit: int | None = None) -> dict[str, Any]:
    """The body as a JSON object, refusing bodies over ``limit`` bytes before reading them."""
    limit = limit or relay(request).ctx.config.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise RequestTooLargeError(f"The body must be at most {limit} bytes.")
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise RequestTooLargeError(f"The body must be at most {limit} bytes.")
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as err:
        raise InvalidRequestError(
            "The body is not valid JSON (UTF-8); send a JSON object."
        ) from err
    if not isinstance(value, dict):
        raise InvalidRequestError("The body must be a JSON object.")
    return value


class Fields:
    """Typed access to a JSON object's fields; unknown fields are refused (typos are loud)."""

    def __init__(self, data: dict[str, Any], allowed: set[str]) -> None:
        """Check ``data`` has only ``allowed`` fields."""
        unknown = set(data) - allowed
        if unknown:
            raise InvalidRequestError(f"unknown field(s): {', '.join(sorted(unknown))}")
        self._data = data

    def raw(self, name: str) -> Any:
        """A required field of any JSON type."""
        if name not in self._data:
            raise InvalidRequestError(f"{name} is required")
        return self._data[name]

    def get(self, name: str, default: Any) -> Any:
        """An optional field of any JSON type."""
        return self._data.get(name, default)

    def string(self, name: str, *, max_length: int = 1024) -> str:
        """A required string."""
        value = self.raw(name)
        return self._check_string(name, value, max_length)

    def optional_string(self, name: str, *, max_length: int = 1024) -> str | None:
        """An optional string (absent or null → None)."""
        value = self._data.get(name)
        if value is None:
            return None
        return self._check_string(name, value, max_length)

    @staticmethod
    def _check_string(name: str, value: Any, max_length: int) -> str:
        if not isinstance(value, str):
            raise InvalidRequestError(f"{name} must be a string")
        if len(value) > max_length:
            raise InvalidRequestError(f"{name} must be at most {max_length} characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise InvalidRequestError(f"{name} is not valid Unicode") from err
        if "\x00" in value:
            raise InvalidRequestError(f"{name} must not contain NUL characters")
        return value

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        """A required string from ``choices``."""
        value = self.string(name)
        if value not in choices:
            raise InvalidRequestError(f"{name} must be one of {', '.join(choices)}")
        return value


def page_params(request: web.Request) -> tuple[str | None, int]:
    """``cursor`` and ``limit`` (1-200, default 50) from the query string."""
    cursor = request.query.get("cursor")
    text = request.query.get("limit", "50")
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise InvalidRequestError(f"limit must be an integer from 1 to {MAX_PAGE}")
    return cursor, int(text)


def ok(data: Any, status: int = 200) -> web.Response:
    """A JSON response."""
    return web.json_response(data, status=status)


def no_content() -> web.Response:
    """204."""
    return web.Response(status=204)
