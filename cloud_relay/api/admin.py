"""Service administration: the manufacturing registry, device models, audit, sessions."""

from __future__ import annotations

import json

from aiohttp import web
from iob_protocol.account_api import (
    ModelList,
    PreassignRequest,
    PutModelRequest,
    RegistryImportRequest,
    RevokedSessions,
)

from cloud_relay import audit
from cloud_relay.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    NotFoundError,
    RegistryDeviceNotFoundError,
)
from cloud_relay.registry import parse_record

from .common import (
    account,
    no_content,
    ok,
    page_params,
    path_id,
    query_id,
    read_body,
    relay,
)

routes = web.RouteTableDef()


async def _admin(request: web.Request) -> str:
    caller = await account(request)
    caller.require_admin()
    return caller.actor


@routes.post("/v1/admin/registry/import")
async def import_records(request: web.Request) -> web.Response:
    """Import factory-provision records (all or nothing)."""
    actor = await _admin(request)
    service = relay(request)
    body = await read_body(request, RegistryImportRequest, service.ctx.config.max_import_bytes)
    records = body.records  # 1-10,000 objects (the document's schema); each parsed here
    parsed = []
    seen: set[str] = set()
    for number, record in enumerate(records, start=1):
        item = parse_record(json.dumps(record), number)
        if item.device_id in seen:
            raise InvalidRequestError(f"record {number}: device {item.device_id} appears twice")
        seen.add(item.device_id)
        parsed.append(item)
    report = await service.registry.import_records(parsed, actor)
    return ok(report)


@routes.get("/v1/admin/registry/devices/{device_id}")
async def registry_device(request: web.Request) -> web.Response:
    """A registry entry with its owner and pre-assignment."""
    await _admin(request)
    device_id = path_id(request, "device_id", RegistryDeviceNotFoundError)
    return ok(await relay(request).registry.device(device_id))


@routes.put("/v1/admin/registry/devices/{device_id}/preassignment")
async def preassign(request: web.Request) -> web.Response:
    """Pre-assign a device to a household (zero-touch order metadata)."""
    actor = await _admin(request)
    device_id = path_id(request, "device_id", RegistryDeviceNotFoundError)
    body = await read_body(request, PreassignRequest)
    device = await relay(request).registry.preassign(
        device_id,
        body.household_id,
        body.order_ref,
        actor,
    )
    return ok(device)


@routes.delete("/v1/admin/registry/devices/{device_id}/preassignment")
async def clear_preassignment(request: web.Request) -> web.Response:
    """Clear a pre-assignment."""
    actor = await _admin(request)
    device_id = path_id(request, "device_id", RegistryDeviceNotFoundError)
    await relay(request).registry.preassign(device_id, None, None, actor)
    return no_content()


@routes.get("/v1/admin/models")
async def list_models(request: web.Request) -> web.Response:
    """Every device model."""
    await _admin(request)
    return ok(ModelList(models=tuple(await relay(request).registry.models())))


@routes.put("/v1/admin/models/{model}")
async def put_model(request: web.Request) -> web.Response:
    """Create or replace a device model's name, manufacturer and metadata."""
    actor = await _admin(request)
    model = path_id(request, "model", ModelNotFoundError)
    body = await read_body(request, PutModelRequest)
    result = await relay(request).registry.put_model(
        model,
        name=body.name,
        manufacturer=body.manufacturer or "",
        metadata=body.metadata if body.metadata is not None else {},
        actor=actor,
    )
    return ok(result)


@routes.get("/v1/admin/audit")
async def admin_audit(request: web.Request) -> web.Response:
    """The whole audit log, optionally per household and/or device."""
    await _admin(request)
    cursor, limit = page_params(request)
    household_id = query_id(request, "household_id")
    device_id = query_id(request, "device_id")
    async with relay(request).ctx.storage.read() as conn:
        page = await audit.query(
            conn,
            household_id=household_id,
            device_id=device_id,
            before=audit.parse_cursor(cursor),
            limit=limit,
        )
    return ok(page.answer())


@routes.post("/v1/admin/accounts/{account_id}/revoke-sessions")
async def revoke_sessions(request: web.Request) -> web.Response:
    """Revoke every session of an account at once."""
    actor = await _admin(request)
    account_id = path_id(request, "account_id", NotFoundError)
    revoked = await relay(request).accounts.revoke_all(account_id, actor)
    return ok(RevokedSessions(revoked_sessions=revoked))
