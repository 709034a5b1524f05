"""Endpoints without a household: health, the OpenAPI document, auth, device statements."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web
from iob_protocol.account_api import (
    AcceptInvitationRequest,
    ConfirmationRequest,
    CredentialRequest,
    Health,
    ModelList,
    ProvisioningRequest,
    RefreshRequest,
    RelayedOwned,
    Released,
    ReleaseRequest,
    SignInRequest,
    SignUpRequest,
    WireRequest,
)

from cloud_relay.claims import Claims, Owned
from cloud_relay.device_proofs import parse_claim_confirmation
from cloud_relay.errors import ClaimNotFoundError, ModelNotFoundError

from .common import (
    account,
    bearer_token,
    client_address,
    no_content,
    ok,
    path_id,
    read_body,
    relay,
)
from .openapi import document

routes = web.RouteTableDef()


@routes.get("/v1/health")
async def health(request: web.Request) -> web.Response:
    """Reachability and the service's clock (devices check their skew against it)."""
    return ok(Health(time=relay(request).ctx.now()))


@routes.get("/openapi.json")
async def openapi(_request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of this API."""
    return web.json_response(document())


@routes.post("/v1/auth/sign-up")
async def sign_up(request: web.Request) -> web.Response:
    """Create an account; answer as sign-in does."""
    body = await read_body(request, SignUpRequest)
    tokens = await relay(request).accounts.sign_up(
        body.email,
        body.password,
        body.display_name or "",
        client_address(request),
    )
    return ok(tokens.answer(), status=201)


@routes.post("/v1/auth/sign-in")
async def sign_in(request: web.Request) -> web.Response:
    """E-mail and password → access and refresh tokens."""
    body = await read_body(request, SignInRequest)
    tokens = await relay(request).accounts.sign_in(
        body.email,
        body.password,
        client_address(request),
    )
    return ok(tokens.answer())


@routes.post("/v1/auth/refresh")
async def refresh(request: web.Request) -> web.Response:
    """Spend a refresh token for a new pair."""
    body = await read_body(request, RefreshRequest)
    tokens = await relay(request).accounts.refresh(body.refresh_token)
    return ok(tokens.answer())


@routes.post("/v1/auth/sign-out")
async def sign_out(request: web.Request) -> web.Response:
    """Revoke this session (access and refresh tokens)."""
    await account(request)
    await relay(request).accounts.sign_out(bearer_token(request))
    return no_content()


@routes.get("/v1/auth/me")
async def me(request: web.Request) -> web.Response:
    """The signed-in account."""
    return ok((await account(request)).answer())


@routes.post("/v1/provisioning/redeem")
async def redeem_provisioning(request: web.Request) -> web.Response:
    """A one-time provisioning token → a new owner account, signed in, and its household."""
    body = await read_body(request, ProvisioningRequest)
    provisioned = await relay(request).redeem_provisioning(
        body.token, body.household_name, client_address(request)
    )
    return ok(provisioned, status=201)


@routes.post("/v1/invitations/accept")
async def accept_invitation(request: web.Request) -> web.Response:
    """Join a household with an invitation token."""
    caller = await account(request)
    body = await read_body(request, AcceptInvitationRequest)
    member = await relay(request).households.accept(caller, body.token)
    return ok(member, status=201)


_Statement = TypeVar("_Statement", bound=WireRequest)


async def _statement(request: web.Request, model: type[_Statement]) -> _Statement:
    """The device-signed statement in ``field``, read once the caller's address may send one.

    The per-address budget is spent before the body is read or parsed, so a flood of bodies
    (well-formed or not) costs the service a counter, not a parse; the per-device budget
    follows once the statement names its device.
    """
    await relay(request).ctx.limiters.confirm_per_address.hit(client_address(request))
    return await read_body(request, model)


async def _owned(
    request: web.Request, own: Callable[[Claims, object], Awaitable[Owned]]
) -> web.Response:
    """The device's signed confirmation, owned by ``own`` (a :class:`Claims` method)."""
    body = await _statement(request, ConfirmationRequest)
    service = relay(request)
    owned = await own(service.claims, body.confirmation)
    answer = owned.answer(service.ctx)
    if body.relayed and own is Claims.confirm:
        # Through Home Assistant, not over this service's TLS: the device checks the MAC
        # (keyed by the claim token it holds, over its confirmation's nonce).
        return ok(RelayedOwned.sealed(answer, parse_claim_confirmation(body.confirmation)))
    return ok(answer)


@routes.post("/v1/claims/confirm")
async def confirm_claim(request: web.Request) -> web.Response:
    """The device's signed claim confirmation, from the device or relayed by HA."""
    return await _owned(request, Claims.confirm)


@routes.post("/v1/zero-touch/confirm")
async def confirm_zero_touch(request: web.Request) -> web.Response:
    """A pre-assigned device's signed request to be owned by its order's household."""
    return await _owned(request, Claims.zero_touch)


@routes.post("/v1/devices/release-by-device")
async def release_by_device(request: web.Request) -> web.Response:
    """The device's signed release after a factory reset (idempotent)."""
    await relay(request).devices.release_by_device(
        (await _statement(request, ReleaseRequest)).release
    )
    return ok(Released())


@routes.post("/v1/device/mqtt-credential")
async def device_mqtt_credential(request: web.Request) -> web.Response:
    """An owned device's signed request for its current MQTT credential (after a rotation)."""
    answer = await relay(request).devices.mqtt_credential(
        (await _statement(request, CredentialRequest)).request
    )
    return ok(answer)


#: Not /v1/claims/confirm: OpenAPI matches a literal path before a template, so GET there is a
#: 405 that allows POST, as the document says, not a lookup of a claim named "confirm".
@routes.get("/v1/claims/{claim_id:(?!confirm$)[^/]+}")
async def claim_status(request: web.Request) -> web.Response:
    """A claim's status, for Home Assistant to poll."""
    caller = await account(request)
    claim_id = path_id(request, "claim_id", ClaimNotFoundError)
    return ok(await relay(request).claims.status(caller, claim_id))


@routes.get("/v1/models")
async def list_models(request: web.Request) -> web.Response:
    """Every device model and its metadata (any signed-in account)."""
    await account(request)
    return ok(ModelList(models=tuple(await relay(request).registry.models())))


@routes.get("/v1/models/{model}")
async def get_model(request: web.Request) -> web.Response:
    """One device model."""
    await account(request)
    return ok(await relay(request).registry.model(path_id(request, "model", ModelNotFoundError)))
