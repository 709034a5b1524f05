"""What the add-on meets under the Supervisor, shared by the run-script and image tests: a
stand-in Supervisor (its ``/addons/self/info`` and ``/discovery``), an add-on /data directory,
and the calls a test makes to the running add-on (HTTP API, broker)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
from aiohttp import web

SUPERVISOR_TOKEN = secrets.token_hex(32)


@dataclass
class StandInSupervisor:
    """Answers /addons/self/info and records /discovery posts, checking the add-on's token."""

    http_port: int
    mqtt_port: int
    #: The add-on's host name on the Supervisor's network, as /addons/self/info reports it.
    hostname: str = "localhost"
    url: str = ""
    announcements: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    refused: list[str] = field(default_factory=list)
    #: Answer POST /discovery as the Supervisor does for a service config.yaml does not list.
    refuse_discovery: bool = False

    def _authorised(self, request: web.Request) -> bool:
        if request.headers.get("Authorization") == f"Bearer {SUPERVISOR_TOKEN}":
            return True
        self.refused.append(f"{request.method} {request.path}")
        return False

    async def info(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"result": "error", "message": "unauthorized"}, status=401)
        network = {f"{self.http_port}/tcp": self.http_port, f"{self.mqtt_port}/tcp": self.mqtt_port}
        data = {"hostname": self.hostname, "network": network, "slug": "local_iot_onboard_relay"}
        return web.json_response({"result": "ok", "data": data})

    async def discovery(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"result": "error", "message": "unauthorized"}, status=401)
        if self.refuse_discovery:
            message = "Add-ons must list services they provide via discovery in their config!"
            return web.json_response({"result": "error", "message": message}, status=403)
        body = await request.json()
        self.announcements.put_nowait(body)
        return web.json_response({"result": "ok", "data": {"uuid": secrets.token_hex(16)}})


@contextlib.asynccontextmanager
async def serve_supervisor(
    stand_in: StandInSupervisor, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[StandInSupervisor]:
    """Serve ``stand_in`` on ``host:port`` (0: the kernel's free port, no race); sets its url."""
    app = web.Application()
    app.router.add_get("/addons/self/info", stand_in.info)
    app.router.add_post("/discovery", stand_in.discovery)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    assert server is not None
    bound = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    stand_in.url = f"http://{host}:{bound}"
    try:
        yield stand_in
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def addon_data(options: dict[str, Any]) -> Iterator[Path]:
    """Like the add-on's /data: root-owned, 0755 (the broker drops root and must get through),
    with the Supervisor's options.json."""
    data = Path(tempfile.mkdtemp(prefix="iob-addon-data-"))
    data.chmod(0o755)
    (data / "options.json").write_text(json.dumps(options))
    try:
        yield data
    finally:
        shutil.rmtree(data, ignore_errors=True)


async def announcement(supervisor: StandInSupervisor, alive: Callable[[], None]) -> dict[str, Any]:
    """The add-on's next POST /discovery; ``alive`` raises (with the add-on's log) if it died."""
    async with asyncio.timeout(90):
        while True:
            try:
                return await asyncio.wait_for(supervisor.announcements.get(), 0.5)
            except TimeoutError:
                alive()


async def call(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None, token: str = ""
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(method, url, json=body, headers=headers) as reply:
        return reply.status, await reply.json()


async def connect(mqtt: dict[str, Any]) -> None:
    """Connect with a credential from the service and publish once (QoS 1: the broker acks)."""
    async with aiomqtt.Client(
        mqtt["host"],
        mqtt["port"],
        username=mqtt["username"],
        password=mqtt["password"],
        identifier=mqtt["client_id"],  # the broker binds each credential to one client id
    ) as client:
        await client.publish("iob/nothing-of-ours", b"", qos=1)


async def redeem_once(http: aiohttp.ClientSession, url: str, token: str) -> None:
    """Home Assistant's hassio step: the announced token redeems once at the announced URL for
    a new household (the service reads the add-on's tokens file); a second time it is refused."""
    redeem = {"token": token, "household_name": "Home"}
    status, provisioned = await call(http, "POST", url + "/v1/provisioning/redeem", redeem)
    assert status == 201, provisioned
    assert provisioned["household"]["role"] == "owner"
    status, refused = await call(http, "POST", url + "/v1/provisioning/redeem", redeem)
    assert (status, refused["error"]["code"]) == (401, "provisioning_token_invalid")


async def sign_up_with_household(
    http: aiohttp.ClientSession, url: str, email: str, password: str
) -> tuple[str, dict[str, Any]]:
    """A new account with a household; returns the hub URL and the hub's MQTT credential."""
    status, signed_up = await call(
        http, "POST", url + "/v1/auth/sign-up", {"email": email, "password": password}
    )
    assert status == 201, signed_up
    access = signed_up["access_token"]
    status, household = await call(http, "POST", url + "/v1/households", {"name": "Home"}, access)
    assert status == 201, household
    hub_url = f"{url}/v1/households/{household['household_id']}/hub"
    status, hub = await call(http, "GET", hub_url, token=access)
    assert status == 200, hub
    return hub_url, hub


async def hub_after_sign_in(
    http: aiohttp.ClientSession, url: str, email: str, password: str, hub_url: str
) -> dict[str, Any]:
    """The account signs in again (after a restart) and reads its household's hub credential."""
    status, signed_in = await call(
        http, "POST", url + "/v1/auth/sign-in", {"email": email, "password": password}
    )
    assert status == 200, signed_in
    status, hub = await call(http, "GET", hub_url, token=signed_in["access_token"])
    assert status == 200, hub
    credential: dict[str, Any] = hub
    return credential
