"""Endpoints without a household: health, the OpenAPI document, auth, device statements."""

from __future__ import annotations

from aiohttp import web

from cloud_relay.errors import ClaimNotFoundError, ModelNotFoundError

from .common import (
    Fields,
    account,
    bearer_token,
    client_address,
    no_content,
    ok,
    path_id,
    read_json,
    relay,
)
from .openapi import document

routes = web.RouteTableDef()


@routes.get("/v1/health")
async def health(request: web.Request) -> web.Response:
    """Reachability and the service's clock (devices check their skew against it)."""
    return ok({"status": "ok", "time": relay(request).ctx.now()})


@routes.get("/openapi.json")
async def openapi(_request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of this API."""
    return ok(document())


@routes.post("/v1/auth/sign-up")
async def sign_up(request: web.Request) -> web.Response:
    """Create an account; answer as sign-in does."""
    fields = Fields(await read_json(request), {"email", "password", "display_name"})
    tokens = await relay(request).accounts.sign_up(
        fields.string("email", max_length=254),
        fields.string("password", max_length=1024),
        fields.optional_string("display_name", max_length=100) or "",
        client_address(request),
    )
    return ok(tokens.to_json(), status=201)


@routes.post("/v1/auth/sign-in")
async def sign_in(request: web.Request) -> web.Response:
    """E-mail and password → access and refresh tokens."""
    fields = Fields(await read_json(request), {"email", "password"})
    tokens = await relay(request).accounts.sign_in(
        fields.string("email", max_length=254),
        fields.string("password", max_length=1024),
        client_address(request),
    )
    return ok(tokens.to_json())


@routes.post("/v1/auth/refresh")
async def refresh(request: web.Request) -> web.Response:
    """Spend a refresh token for a new pair."""
    fields = Fields(await read_json(request), {"refresh_token"})
    tokens = await relay(request).accounts.refresh(fields.string("refresh_token", max_length=128))
    return ok(tokens.to_json())


@routes.post("/v1/auth/sign-out")
async def sign_out(request: web.Request) -> web.Response:
    """Revoke this session (access and refresh tokens)."""
    await account(request)
    await relay(request).accounts.sign_out(bearer_token(request))
    return no_content()


@routes.get("/v1/auth/me")
async def me(request: web.Request) -> web.Response:
    """The signed-in account."""
    return ok((await account(request)).to_json())


@routes.post("/v1/invitations/accept")
async def accept_invitation(request: web.Request) -> web.Response:
    """Join a household with an invitation token."""
    caller = await account(request)
    fields = Fields(await read_json(request), {"token"})
    member = await relay(request).households.accept(caller, fields.string("token", max_length=128))
    return ok(member, status=201)


@routes.post("/v1/claims/confirm")
async def confirm_claim(request: web.Request) -> web.Response:
    """The device's signed claim confirmation, from the device or relayed by HA."""
    fields = Fields(await read_json(request), {"confirmation"})
    service = relay(request)
    owned = await service.claims.confirm(fields.raw("confirmation"), client_address(request))
    return ok(owned.to_json(service.ctx))


@routes.post("/v1/zero-touch/confirm")
async def confirm_zero_touch(request: web.Request) -> web.Response:
    """A pre-assigned device's signed request to be owned by its order's household."""
    fields = Fields(await read_json(request), {"confirmation"})
    service = relay(request)
    owned = await service.claims.zero_touch(fields.raw("confirmation"), client_address(request))
    return ok(owned.to_json(service.ctx))


@routes.post("/v1/devices/release-by-device")
async def release_by_device(request: web.Request) -> web.Response:
    """The device's signed release after a factory reset (idempotent)."""
    fields = Fields(await read_json(request), {"release"})
    await relay(request).devices.release_by_device(fields.raw("release"), client_address(request))
    return ok({"status": "released"})


@routes.post("/v1/device/mqtt-credential")
async def device_mqtt_credential(request: web.Request) -> web.Response:
    """An owned device's signed request for its current MQTT credential (after a rotation)."""
    fields = Fields(await read_json(request), {"request"})
    answer = await relay(request).devices.mqtt_credential(
        fields.raw("request"), client_address(request)
    )
    return ok(answer)


@routes.get("/v1/claims/{claim_id}")
async def claim_status(request: web.Request) -> web.Response:
    """A claim's status, for Home Assistant to poll."""
    caller = await account(request)
    claim_id = path_id(request, "claim_id", ClaimNotFoundError)
    return ok(await relay(request).claims.status(caller, claim_id))


@routes.get("/v1/models")
async def list_models(request: web.Request) -> web.Response:
    """Every device model and its metadata (any signed-in account)."""
    await account(request)
    return ok({"models": await relay(request).registry.models()})


@routes.get("/v1/models/{model}")
async def get_model(request: web.Request) -> web.Response:
    """One device model."""
    await account(request)
    return ok(await relay(request).registry.model(path_id(request, "model", ModelNotFoundError)))
