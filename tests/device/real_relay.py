"""The real account service (``cloud_relay.app.create_app``) on loopback, on SQLite and the real
Mosquitto, with the few API calls Home Assistant and an operator make around a device."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from cloud_relay.api.common import RELAY
from cloud_relay.app import create_app
from cloud_relay.broker.mosquitto import MosquittoDynsecAdapter
from tests.plugins.clock import FakeClock
from tests.plugins.mosquitto import MosquittoBroker
from tests.plugins.relay_config import relay_test_config


@dataclass
class RealRelay:
    url: str
    http: aiohttp.ClientSession
    app: web.Application
    clock: FakeClock[int]
    broker: MosquittoBroker
    admin_token: str = ""
    user_token: str = ""
    household_id: str = ""
    tokens: dict[str, str] = field(default_factory=dict)

    async def call(
        self, method: str, path: str, body: Any = None, *, token: str | None = None
    ) -> tuple[int, Any]:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        async with self.http.request(method, self.url + path, json=body, headers=headers) as reply:
            raw = await reply.read()
            return reply.status, json.loads(raw) if raw else None

    async def sign_up(self) -> tuple[str, str]:
        status, body = await self.call(
            "POST",
            "/v1/auth/sign-up",
            {"email": f"u{secrets.token_hex(4)}@example.com", "password": secrets.token_hex(8)},
        )
        assert status == 201, body
        return body["account"]["account_id"], body["access_token"]

    async def setup(self) -> None:
        """An operator (admin) and a household owner."""
        admin_id, self.admin_token = await self.sign_up()
        await self.app[RELAY].accounts.set_admin(admin_id, is_admin=True, actor="test")
        _user_id, self.user_token = await self.sign_up()
        status, body = await self.call(
            "POST", "/v1/households", {"name": "Home"}, token=self.user_token
        )
        assert status == 201, body
        self.household_id = body["household_id"]

    async def import_records(self, record_file: Path) -> None:
        """The manufacturing record exactly as factory-provision wrote it."""
        text = await asyncio.to_thread(record_file.read_text)
        records = [json.loads(line) for line in text.splitlines() if line]
        status, body = await self.call(
            "POST", "/v1/admin/registry/import", {"records": records}, token=self.admin_token
        )
        assert status == 200, body

    async def preassign(self, device_id: str) -> None:
        status, body = await self.call(
            "PUT",
            f"/v1/admin/registry/devices/{device_id}/preassignment",
            {"household_id": self.household_id, "order_ref": "order-1"},
            token=self.admin_token,
        )
        assert status == 200, body

    async def claim(self, device_id: str) -> dict[str, Any]:
        """What HA asks for before the session: a claim token for the device."""
        status, body = await self.call(
            "POST",
            f"/v1/households/{self.household_id}/claims",
            {"device_id": device_id},
            token=self.user_token,
        )
        assert status == 201, body
        return dict(body)

    async def claim_status(self, claim_id: str) -> str:
        status, body = await self.call("GET", f"/v1/claims/{claim_id}", token=self.user_token)
        assert status == 200, body
        return str(body["status"])

    async def hub(self) -> dict[str, Any]:
        """The household's MQTT hub credential, as Home Assistant gets it."""
        status, body = await self.call(
            "GET", f"/v1/households/{self.household_id}/hub", token=self.user_token
        )
        assert status == 200, body
        return dict(body)

    async def devices(self) -> list[dict[str, Any]]:
        status, body = await self.call(
            "GET", f"/v1/households/{self.household_id}/devices", token=self.user_token
        )
        assert status == 200, body
        return list(body["devices"])


@contextlib.asynccontextmanager
async def real_relay(directory: Path, broker: MosquittoBroker) -> AsyncIterator[RealRelay]:
    """Start the account service on 127.0.0.1 with its own SQLite file and the test broker."""
    adapter = MosquittoDynsecAdapter(
        broker.host, broker.port, broker.admin_username, broker.admin_password
    )
    await adapter.connect()
    clock = FakeClock(int(time.time()))  # the service's wall clock; tests move it
    app = create_app(
        relay_test_config(f"sqlite:///{directory / 'relay.db'}", broker),
        broker=adapter,
        clock=clock,
        purge_interval=None,
    )
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    try:
        await site.start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as http:
            relay = RealRelay(f"http://127.0.0.1:{port}", http, app, clock, broker)
            await relay.setup()
            yield relay
    finally:
        await runner.cleanup()
        await adapter.aclose()
