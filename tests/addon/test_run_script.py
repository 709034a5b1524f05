"""The add-on's run script, outside a container: /data in a temporary directory, a stand-in
Supervisor on loopback, the real Mosquitto and the real account service.

What the Supervisor would see: the add-on asks for its own info, starts both services, announces
``iot_onboard`` with a URL that answers and a token that redeems once over HTTP; a hub
credential from the service connects to the broker on the device port; SIGTERM stops both
services (SQLite's WAL checkpointed, the broker gone) and a restart keeps accounts and broker
clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
from aiohttp import web

REPO = Path(__file__).parents[2]
RUN_SCRIPT = REPO / "addon" / "iot_onboard_relay" / "rootfs" / "run.sh"
SUPERVISOR_TOKEN = secrets.token_hex(32)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class StandInSupervisor:
    """Answers /addons/self/info and records /discovery posts, checking the add-on's token."""

    http_port: int
    mqtt_port: int
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
        data = {"hostname": "localhost", "network": network, "slug": "local_iot_onboard_relay"}
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


@pytest.fixture
async def supervisor() -> AsyncIterator[StandInSupervisor]:
    stand_in = StandInSupervisor(http_port=_free_port(), mqtt_port=_free_port())
    app = web.Application()
    app.router.add_get("/addons/self/info", stand_in.info)
    app.router.add_post("/discovery", stand_in.discovery)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)  # the kernel's free port: no race
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    stand_in.url = f"http://127.0.0.1:{port}"
    try:
        yield stand_in
    finally:
        await runner.cleanup()


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """Like the add-on's /data: root-owned, 0755 (the broker drops root and must get through)."""
    data = Path(tempfile.mkdtemp(prefix="iob-addon-data-"))
    data.chmod(0o755)
    (data / "options.json").write_text(
        json.dumps({"log_level": "info", "device_host": "127.0.0.1"})
    )
    try:
        yield data
    finally:
        shutil.rmtree(data, ignore_errors=True)


@dataclass
class Started:
    process: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def run_addon(data: Path, supervisor: StandInSupervisor, run: int) -> Iterator[Started]:
    log = data.parent / f"{data.name}-run{run}.log"
    env = {
        "PATH": os.environ["PATH"],
        "IOB_ADDON_DATA": str(data),
        "IOB_ADDON_PYTHON": sys.executable,
        "IOB_ADDON_SUPERVISOR": supervisor.url,
        "IOB_ADDON_HTTP_PORT": str(supervisor.http_port),
        "IOB_ADDON_MQTT_PORT": str(supervisor.mqtt_port),
        "SUPERVISOR_TOKEN": SUPERVISOR_TOKEN,
        "PYTHONPATH": str(REPO),
    }
    with log.open("wb") as output:
        process = subprocess.Popen(
            ["bash", str(RUN_SCRIPT)], env=env, stdout=output, stderr=subprocess.STDOUT, cwd=data
        )
    started = Started(process, log)
    try:
        yield started
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.unlink(missing_ok=True)


async def _announcement(supervisor: StandInSupervisor, started: Started) -> dict[str, Any]:
    async with asyncio.timeout(90):
        while True:
            try:
                return await asyncio.wait_for(supervisor.announcements.get(), 0.5)
            except TimeoutError:
                assert started.process.poll() is None, started.text()


async def _stop(started: Started) -> int:
    """SIGTERM to the run script's pid (exec'd into the runner), as the Supervisor does."""
    started.process.send_signal(signal.SIGTERM)
    return await asyncio.to_thread(started.process.wait, 60)


def _broker_pid(text: str) -> int:
    found = re.search(r"Mosquitto \(pid (\d+)\) listens on", text)
    assert found is not None, text
    return int(found.group(1))


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie is gone too (its parent, the runner, has exited; init reaps it later).
    with contextlib.suppress(FileNotFoundError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    return True


async def _call(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None, token: str = ""
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(method, url, json=body, headers=headers) as reply:
        return reply.status, await reply.json()


async def _connect(mqtt: dict[str, Any]) -> None:
    async with aiomqtt.Client(
        mqtt["host"],
        mqtt["port"],
        username=mqtt["username"],
        password=mqtt["password"],
        identifier=mqtt["client_id"],  # the broker binds each credential to one client id
    ) as client:
        await client.publish("iob/nothing-of-ours", b"", qos=1)


async def test_run_script_starts_announces_stops_and_restarts_with_its_data(
    data_dir: Path, supervisor: StandInSupervisor
) -> None:
    email, password = f"owner-{secrets.token_hex(4)}@example.com", secrets.token_urlsafe(16)
    async with aiohttp.ClientSession() as http:
        with run_addon(data_dir, supervisor, 1) as first:
            announced = await _announcement(supervisor, first)
            assert announced["service"] == "iot_onboard"
            assert set(announced["config"]) == {"url", "token"}
            url, token = announced["config"]["url"], announced["config"]["token"]
            # Home Assistant reaches the add-on by its host name on the internal network.
            assert url == f"http://localhost:{supervisor.http_port}"
            status, health = await _call(http, "GET", url + "/v1/health")
            assert (status, health["status"]) == (200, "ok")
            # The token is one-time: Home Assistant's hassio step redeems it once at the
            # announced URL for a new household (the service reads the add-on's tokens file).
            redeem = {"token": token, "household_name": "Home"}
            status, provisioned = await _call(http, "POST", url + "/v1/provisioning/redeem", redeem)
            assert status == 201, provisioned
            assert provisioned["household"]["role"] == "owner"
            status, refused = await _call(http, "POST", url + "/v1/provisioning/redeem", redeem)
            assert (status, refused["error"]["code"]) == (401, "provisioning_token_invalid")
            # The service drives its broker: a household's hub credential connects on the
            # device port, as devices and Home Assistant are told.
            status, signed_up = await _call(
                http, "POST", url + "/v1/auth/sign-up", {"email": email, "password": password}
            )
            assert status == 201, signed_up
            access = signed_up["access_token"]
            status, household = await _call(
                http, "POST", url + "/v1/households", {"name": "Home"}, access
            )
            assert status == 201, household
            hub_url = f"{url}/v1/households/{household['household_id']}/hub"
            status, hub = await _call(http, "GET", hub_url, token=access)
            assert status == 200, hub
            assert (hub["host"], hub["port"], hub["tls"]) == (
                "127.0.0.1",
                supervisor.mqtt_port,
                False,
            )
            await _connect(hub)
            # Anonymous clients are refused on the device port.
            with pytest.raises(aiomqtt.MqttError):
                await _connect({**hub, "username": None, "password": None})

            broker_pid = _broker_pid(first.text())
            assert await _stop(first) == 0
            first_log = first.text()
        assert _gone(broker_pid), first_log
        # Stopped cleanly: SQLite checkpointed its WAL into relay.db (a cold backup is whole).
        assert not (data_dir / "relay" / "relay.db-wal").exists()
        assert "Traceback" not in first_log
        # At log level info the watchdog's health checks do not fill the log; the order holds.
        assert '"GET /v1/health' not in first_log
        assert first_log.index("announced to Home Assistant") < first_log.index("stopping")
        assert supervisor.refused == []

        with run_addon(data_dir, supervisor, 2) as second:
            again = await _announcement(supervisor, second)
            assert again["config"]["url"] == url
            assert again["config"]["token"] != token  # a fresh token at every start
            # Same account, same household, same broker client.
            status, signed_in = await _call(
                http, "POST", url + "/v1/auth/sign-in", {"email": email, "password": password}
            )
            assert status == 200, signed_in
            status, hub_again = await _call(http, "GET", hub_url, token=signed_in["access_token"])
            assert status == 200, hub_again
            assert hub_again == hub
            await _connect(hub_again)
            broker_pid = _broker_pid(second.text())
            assert await _stop(second) == 0
        assert _gone(broker_pid)


def test_a_missing_data_directory_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(RUN_SCRIPT)],
        env={"PATH": os.environ["PATH"], "IOB_ADDON_DATA": str(tmp_path / "missing")},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"error: the add-on's data directory {tmp_path / 'missing'} is missing or not writable; "
        "reinstall the add-on\n"
    )


def test_bad_options_stop_the_addon_with_the_way_out(
    data_dir: Path, supervisor: StandInSupervisor
) -> None:
    (data_dir / "options.json").write_text(json.dumps({"log_level": "loud"}))
    with run_addon(data_dir, supervisor, 1) as started:
        assert started.process.wait(60) == 1
        assert started.text() == (
            "error: option log_level is 'loud'; choose one of debug, info, warning, error\n"
        )


async def test_a_refused_announcement_is_one_warning_and_the_service_keeps_running(
    data_dir: Path, supervisor: StandInSupervisor
) -> None:
    supervisor.refuse_discovery = True
    expected = (
        "WARNING cloud_relay.addon: the Supervisor refused POST /discovery (403): Add-ons must "
        "list services they provide via discovery in their config!; Home Assistant will not "
        "offer the service until a restart\n"
    )
    with run_addon(data_dir, supervisor, 1) as started:
        async with asyncio.timeout(90):
            while expected not in started.text():
                assert started.process.poll() is None, started.text()
                await asyncio.sleep(0.1)
        url = f"http://127.0.0.1:{supervisor.http_port}/v1/health"
        async with aiohttp.ClientSession() as http:
            status, health = await _call(http, "GET", url)
        assert (status, health["status"]) == (200, "ok")
        assert await _stop(started) == 0
        assert "Traceback" not in started.text()
