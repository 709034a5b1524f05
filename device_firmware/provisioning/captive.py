"""The captive page on the setup hotspot, for phone users without Home Assistant at hand.

A phone joins the hotspot (its WPA2 key is on the label, as a QR code the camera app joins),
the phone's captive-portal check is redirected here, and the user picks the household's Wi-Fi,
types its password and the pairing code from the label. The device checks the code against
the setup-code verifier it keeps (scrypt, constant-time compare; never a plain compare with the
stored code) under the same attempt limiter as the secure session, then joins the network with
the fail-safe commit (no claim: Home Assistant finds the device on the LAN afterwards and
claims it with the code).

Served only on the hotspot address; pages carry a strict Content-Security-Policy (no script at
all) and the form a per-run token, so another site cannot post to it.

Only for unclaimed devices: the agent opens the hotspot only while unclaimed, and the page itself
refuses a claimed device (the label opens nothing once the device is owned; its Wi-Fi changes
only through the owner's Home Assistant), in case the claim lands while the page is up.
"""

from __future__ import annotations

import hmac
import html
import secrets
from typing import Final

from aiohttp import web
from iob_protocol.commands import validate_passphrase, validate_ssid
from iob_protocol.errors import (
    CredentialRefusedError,
    InvalidFieldError,
    LimiterError,
    LockedOutError,
    WindowClosedError,
)

from device_firmware.controller import DeviceController
from device_firmware.errors import DeviceError
from device_firmware.network.backend import WifiCredentials
from device_firmware.state import Phase

from .http_guard import body_limits
from .session_host import SessionHost

MAX_FORM_SIZE: Final = 4096
_HOST_KEY: Final = web.AppKey("captive_session_host", SessionHost)
_CONTROLLER_KEY: Final = web.AppKey("captive_controller", DeviceController)
_TOKEN_KEY: Final = web.AppKey("captive_token", str)
_ORIGIN_KEY: Final = web.AppKey("captive_origin", str)
_HEADERS: Final = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
#: Paths phones and laptops probe to detect a captive portal.
PROBE_PATHS: Final = (
    "/generate_204",
    "/gen_204",
    "/hotspot-detect.html",
    "/library/test/success.html",
    "/connecttest.txt",
    "/ncsi.txt",
    "/redirect",
    "/canonical.html",
)
#: What each route can answer (docs/protocol.md §14 lists the same; a test compares them).
#: 408/411/413: a body that does not arrive, has no length or exceeds MAX_FORM_SIZE
#: (http_guard.body_limits).
ROUTE_STATUSES: Final = {
    ("GET", "/"): frozenset({200, 403}),
    ("POST", "/setup"): frozenset({303, 400, 401, 403, 408, 409, 411, 413, 429}),
    ("GET", "/status"): frozenset({200}),
    **{("GET", path): frozenset({302}) for path in PROBE_PATHS},
    ("GET", "/{tail}"): frozenset({302}),
}
_STYLE: Final = (
    "body{font-family:sans-serif;max-width:28em;margin:1em auto;padding:0 1em}"
    "label{display:block;margin-top:1em}input,select{width:100%;padding:.5em;font-size:1em}"
    "button{margin-top:1.5em;padding:.7em 1.5em;font-size:1em}.error{color:#b00020}"
)


def _page(title: str, body: str, *, refresh: int | None = None) -> web.Response:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    text = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"{meta}<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return web.Response(text=text, content_type="text/html", headers=_HEADERS)


async def _form(request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
    controller = request.app[_CONTROLLER_KEY]
    try:
        networks = (await controller.scan()).networks
    except DeviceError:
        networks = ()  # a failed scan still leaves the name field
    options = "".join(
        f'<option value="{html.escape(net.ssid_display)}">{html.escape(net.ssid_display)}'
        f"{' (open)' if net.security.value == 'open' else ''}</option>"
        for net in networks
        if net.ssid_display == net.ssid.decode("utf-8", "replace")
    )
    message = f'<p class="error">{html.escape(error)}</p>' if error else ""
    body = (
        f"{message}<p>Choose your home Wi-Fi and enter the setup code from the device's label."
        '</p><form method="post" action="/setup">'
        f'<input type="hidden" name="token" value="{request.app[_TOKEN_KEY]}">'
        '<label>Network<select name="ssid_choice"><option value="">(type it below)</option>'
        f"{options}</select></label>"
        '<label>Or network name<input name="ssid" maxlength="32" autocomplete="off"></label>'
        '<label><input type="checkbox" name="hidden" value="1" style="width:auto"> '
        "Hidden network</label>"
        '<label>Wi-Fi password<input name="passphrase" type="password" maxlength="64" '
        'autocomplete="off"></label>'
        '<label>Setup code<input name="code" inputmode="numeric" maxlength="12" '
        'autocomplete="off" placeholder="12345-67890"></label>'
        '<button type="submit">Connect</button></form>'
    )
    response = _page("Set up your device", body)
    response.set_status(status)
    return response


def _owned_page() -> web.Response:
    response = _page(
        "This device has an owner",
        "<p>This device is owned; use its owner's Home Assistant to change its Wi-Fi, or "
        "factory-reset it (hold its button) to set it up anew.</p>",
    )
    response.set_status(403)
    return response


async def _index(request: web.Request) -> web.Response:
    if request.app[_CONTROLLER_KEY].state.claimed:
        return _owned_page()
    return await _form(request)


async def _probe(request: web.Request) -> web.Response:
    raise web.HTTPFound(request.app[_ORIGIN_KEY] + "/")


def _credentials(form: dict[str, str]) -> WifiCredentials:
    name = form.get("ssid", "").strip() or form.get("ssid_choice", "")
    if not name:
        raise InvalidFieldError("choose a network or type its name")
    ssid = validate_ssid(name.encode("utf-8"))
    passphrase = validate_passphrase(form.get("passphrase") or None)
    return WifiCredentials(ssid=ssid, passphrase=passphrase, hidden=form.get("hidden") == "1")


async def _setup(request: web.Request) -> web.Response:  # noqa: PLR0911 - one page per mistake
    data = await request.post()
    form = {key: value for key, value in data.items() if isinstance(value, str)}
    if request.app[_CONTROLLER_KEY].state.claimed:
        return _owned_page()
    if not hmac.compare_digest(form.get("token", ""), request.app[_TOKEN_KEY]):
        return await _form(request, "The page expired; please try again.", status=403)
    try:
        credentials = _credentials(form)
    except InvalidFieldError as err:
        return await _form(request, f"Wi-Fi: {err}", status=400)
    host = request.app[_HOST_KEY]
    try:
        accepted = await host.check_manual_code(form.get("code", ""))
    except LockedOutError:
        return await _form(
            request,
            "Too many wrong codes. Press the button on the device briefly, then try again.",
            status=429,
        )
    except WindowClosedError:
        return await _form(
            request, "Setup is closed. Press the button on the device briefly.", status=403
        )
    except LimiterError:
        return await _form(request, "The device is busy; try again in a minute.", status=429)
    except CredentialRefusedError:
        return _owned_page()  # claimed while the form was being filled in
    if not accepted:
        left = host.remaining_attempts()
        return await _form(
            request,
            f"That setup code is not right (check the label). {left} attempts left.",
            status=401,
        )
    controller = request.app[_CONTROLLER_KEY]
    try:
        await controller.start_network_commit(credentials)
    except DeviceError as err:
        return await _form(request, str(err), status=409)
    raise web.HTTPSeeOther("/status")


async def _status(request: web.Request) -> web.Response:
    controller = request.app[_CONTROLLER_KEY]
    record = controller.state
    if record.phase is Phase.COMMITTING:
        return _page(
            "Connecting…",
            "<p>The device is joining your Wi-Fi. This page refreshes by itself; if the "
            "phone leaves the setup network, the device has joined yours.</p>",
            refresh=3,
        )
    if record.diagnostic is not None:
        code = record.diagnostic
        return _page(
            "Could not connect",
            f"<p>{html.escape(code.message)}</p><p>{html.escape(code.next_step)}</p>"
            f"<p><small>Code {html.escape(code.value)}</small></p>"
            '<p><a href="/">Try again</a></p>',
        )
    if record.wifi_ssid is not None:
        return _page(
            "Connected",
            "<p>The device is on your Wi-Fi. Open Home Assistant: it will find the device and "
            "ask for the setup code once more to add it to your home.</p>",
        )
    return _page("Set up your device", '<p><a href="/">Start</a></p>')


def create_captive_app(
    host: SessionHost, controller: DeviceController, *, origin: str
) -> web.Application:
    """The captive-portal application; ``origin`` is ``http://<hotspot address>[:port]``."""
    app = web.Application(client_max_size=MAX_FORM_SIZE, middlewares=[body_limits])
    app[_HOST_KEY] = host
    app[_CONTROLLER_KEY] = controller
    app[_TOKEN_KEY] = secrets.token_urlsafe(16)
    app[_ORIGIN_KEY] = origin.rstrip("/")
    app.router.add_get("/", _index)
    app.router.add_post("/setup", _setup)
    app.router.add_get("/status", _status)
    for path in PROBE_PATHS:
        app.router.add_get(path, _probe)
    app.router.add_get("/{tail:.*}", _probe)
    return app
