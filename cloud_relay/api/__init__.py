"""The HTTP API under ``/v1``: one module per group of resources."""

from __future__ import annotations

from aiohttp import web

from . import admin, households, lifecycle, public


def routes() -> list[web.AbstractRouteDef]:
    """Every route of the API."""
    return [*public.routes, *households.routes, *lifecycle.routes, *admin.routes]
