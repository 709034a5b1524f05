"""The LAN provisioning server: the secure-session frames over HTTP.

Endpoints (every body is exactly one protocol frame, ``application/octet-stream``):

``POST /iob/v1/session``
    CLIENT_HELLO → 200 with DEVICE_HELLO; CLIENT_FINISH → 204 with the ``X-IOB-Session``
    header naming the established session; an ERROR frame (the client gives up, e.g. it found
    the setup code wrong) → 204: the handshake this client address started ends now, counted
    as a failed attempt, so a retry is not ``busy``. A CLIENT_FINISH or ERROR frame from
    another address than the pending handshake's hello → 409 ``handshake_origin_mismatch``
    (that handshake and the attempt budget are untouched). Refusals are ERROR frames: 403 window
    closed or a credential the device does not take now (``owner_session_required`` - a label
    code for a claimed device -, ``setup_code_required``, ``no_owner_secret``), 429 locked out
    or busy (``Retry-After``), 400 malformed, 401 failed handshake.
``POST /iob/v1/frame``
    An encrypted request (DATA frame) with the ``X-IOB-Session`` header → 200 with the
    encrypted response. 409 ``no_session`` if the header names no current session (a stale
    client, or the session ended), 401 if the frame fails (replay, tamper): the session ends.
``GET /iob/v1/info``
    Public facts (the same as the zeroconf TXT record) as JSON.

Bodies above the protocol's largest frame are refused before they are read (413
``body_too_large``), bodies without a ``Content-Length`` (chunked) too (411 ``length_required``):
see :mod:`.http_guard`, which also caps and times out the connections.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web
from iob_protocol.commands import (
    FEATURE_CLAIM_RELAY,
    FEATURE_STATUS_WAIT,
    FEATURE_WPS,
    FEATURES_HEADER,
)
from iob_protocol.errors import HandshakeTimeoutError
from iob_protocol.framing import MAX_FRAME_SIZE
from iob_protocol.limiter import HANDSHAKE_SECONDS
from iob_protocol.session import PROTOCOL_VERSION

from device_firmware.controller import DeviceController

from .http_guard import BODY_TIMEOUT, BODY_TOO_LARGE, LENGTH_REQUIRED, body_limits
from .session_host import HANDSHAKE_ORIGIN_MISMATCH, NO_SESSION, Reply, ReplyKind, SessionHost

SESSION_HEADER: Final = "X-IOB-Session"
MISSING_SESSION_HEADER: Final = "missing_session_header"
FRAME_CONTENT_TYPE: Final = "application/octet-stream"
HOST_KEY: Final = web.AppKey("session_host", SessionHost)
CONTROLLER_KEY: Final = web.AppKey("controller", DeviceController)
NAME_KEY: Final = web.AppKey[str | None]("name")

_STATUS: Final = {
    ReplyKind.OK: 200,
    ReplyKind.FINISHED: 204,
    ReplyKind.BAD_REQUEST: 400,
    ReplyKind.AUTH_FAILED: 401,
    ReplyKind.NO_SESSION: 409,
    ReplyKind.ABORTED: 204,
}
_REFUSED_STATUS: Final = {
    "window_closed": 403,
    "owner_session_required": 403,
    "setup_code_required": 403,
    "no_owner_secret": 403,
    "locked_out": 429,
    "busy": 429,
    HANDSHAKE_ORIGIN_MISMATCH: 409,
}
#: Every error code these routes answer with a fixed status (docs/protocol.md §14; a test
#: compares the two). Handshake failures (``wrong_setup_code``, ``handshake_timeout``, …) are
#: 401, malformed or unexpected frames 400, whatever their code.
ERROR_STATUSES: Final = {
    **_REFUSED_STATUS,
    NO_SESSION: 409,
    MISSING_SESSION_HEADER: 400,
    BODY_TOO_LARGE: 413,
    LENGTH_REQUIRED: 411,
    BODY_TIMEOUT: 408,
    HandshakeTimeoutError.code: 401,
}
_BODY_STATUSES: Final = frozenset({408, 411, 413})
#: What each route can answer (docs/protocol.md §14 lists the same; a test compares them).
ROUTE_STATUSES: Final = {
    ("POST", "/iob/v1/session"): frozenset(
        {
            _STATUS[ReplyKind.OK],
            _STATUS[ReplyKind.FINISHED],
            _STATUS[ReplyKind.ABORTED],
            _STATUS[ReplyKind.BAD_REQUEST],
            _STATUS[ReplyKind.AUTH_FAILED],
            *_REFUSED_STATUS.values(),
        }
    )
    | _BODY_STATUSES,
    ("POST", "/iob/v1/frame"): frozenset(
        {
            _STATUS[ReplyKind.OK],
            _STATUS[ReplyKind.AUTH_FAILED],
            _STATUS[ReplyKind.NO_SESSION],
            ERROR_STATUSES[MISSING_SESSION_HEADER],
        }
    )
    | _BODY_STATUSES,
    ("GET", "/iob/v1/info"): frozenset({200}),
}


def _response(reply: Reply) -> web.Response:
    headers = {"Cache-Control": "no-store"}
    if reply.session_tag is not None:
        headers[SESSION_HEADER] = reply.session_tag
    if reply.kind is ReplyKind.FINISHED:
        headers[FEATURES_HEADER] = f"{FEATURE_STATUS_WAIT},{FEATURE_CLAIM_RELAY},{FEATURE_WPS}"
    if reply.kind is ReplyKind.REFUSED:
        status = _REFUSED_STATUS.get(reply.error or "", 403)
        if reply.error == "busy":
            headers["Retry-After"] = str(int(HANDSHAKE_SECONDS))
    else:
        status = _STATUS[reply.kind]
    if status == 204:  # noqa: PLR2004
        return web.Response(status=status, headers=headers)
    return web.Response(
        status=status, body=reply.frame, content_type=FRAME_CONTENT_TYPE, headers=headers
    )


async def _session(request: web.Request) -> web.Response:
    data = await request.read()
    origin = f"lan:{request.remote}"
    return _response(await request.app[HOST_KEY].handshake(data, origin=origin))


async def _frame(request: web.Request) -> web.Response:
    data = await request.read()
    tag = request.headers.get(SESSION_HEADER)
    if tag is None:
        return web.json_response(
            {"error": MISSING_SESSION_HEADER, "message": f"send the {SESSION_HEADER} header"},
            status=400,
        )
    return _response(await request.app[HOST_KEY].exchange(data, tag))


async def _info(request: web.Request) -> web.Response:
    controller = request.app[CONTROLLER_KEY]
    host = request.app[HOST_KEY]
    info = controller.info()
    facts: dict[str, str | int] = {
        "device_id": info.device_id,
        "model": info.model,
        "firmware_version": info.firmware_version,
        "protocol_version": PROTOCOL_VERSION,
        "state": controller.state.phase.value,
        "window": host.limiter_state.value,
    }
    name = request.app[NAME_KEY]
    if name is not None:
        facts["name"] = name  # optional: omitted when unset, never null
    return web.json_response(facts, headers={"Cache-Control": "no-store"})


def create_app(
    host: SessionHost, controller: DeviceController, *, name: str | None = None
) -> web.Application:
    """The LAN provisioning application (the runner and its sockets belong to the agent).

    ``name``: the device's own name (device.toml), shown by ``/iob/v1/info`` when set.
    """
    app = web.Application(client_max_size=MAX_FRAME_SIZE, middlewares=[body_limits])
    app[HOST_KEY] = host
    app[CONTROLLER_KEY] = controller
    app[NAME_KEY] = name
    app.router.add_post("/iob/v1/session", _session)
    app.router.add_post("/iob/v1/frame", _frame)
    app.router.add_get("/iob/v1/info", _info)
    return app
