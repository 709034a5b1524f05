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
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import aiomqtt
import pytest

from tests.addon.standin import (
    SUPERVISOR_TOKEN,
    StandInSupervisor,
    addon_data,
    announcement,
    call,
    connect,
    hub_after_sign_in,
    redeem_once,
    serve_supervisor,
    sign_up_with_household,
)

REPO = Path(__file__).parents[2]
RUN_SCRIPT = REPO / "addon" / "iot_onboard_relay" / "rootfs" / "run.sh"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
async def supervisor() -> AsyncIterator[StandInSupervisor]:
    stand_in = StandInSupervisor(http_port=_free_port(), mqtt_port=_free_port())
    async with serve_supervisor(stand_in):
        yield stand_in


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with addon_data({"log_level": "info", "device_host": "127.0.0.1"}) as data:
        yield data


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


def _alive(started: Started) -> None:
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


async def test_run_script_starts_announces_stops_and_restarts_with_its_data(
    data_dir: Path, supervisor: StandInSupervisor
) -> None:
    email, password = f"owner-{secrets.token_hex(4)}@example.com", secrets.token_urlsafe(16)
    async with aiohttp.ClientSession() as http:
        with run_addon(data_dir, supervisor, 1) as first:
            announced = await announcement(supervisor, lambda: _alive(first))
            assert announced["service"] == "iot_onboard"
            assert set(announced["config"]) == {"url", "token"}
            url, token = announced["config"]["url"], announced["config"]["token"]
            # Home Assistant reaches the add-on by its host name on the internal network.
            assert url == f"http://localhost:{supervisor.http_port}"
            status, health = await call(http, "GET", url + "/v1/health")
            assert (status, health["status"]) == (200, "ok")
            # The token is one-time: Home Assistant's hassio step redeems it once.
            await redeem_once(http, url, token)
            # The service drives its broker: a household's hub credential connects on the
            # device port, as devices and Home Assistant are told.
            hub_url, hub = await sign_up_with_household(http, url, email, password)
            assert (hub["host"], hub["port"], hub["tls"]) == (
                "127.0.0.1",
                supervisor.mqtt_port,
                False,
            )
            await connect(hub)
            # Anonymous clients are refused on the device port.
            with pytest.raises(aiomqtt.MqttError):
                await connect({**hub, "username": None, "password": None})

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
            again = await announcement(supervisor, lambda: _alive(second))
            assert again["config"]["url"] == url
            assert again["config"]["token"] != token  # a fresh token at every start
            # Same account, same household, same broker client.
            hub_again = await hub_after_sign_in(http, url, email, password, hub_url)
            assert hub_again == hub
            await connect(hub_again)
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
            status, health = await call(http, "GET", url)
        assert (status, health["status"]) == (200, "ok")
        assert await _stop(started) == 0
        assert "Traceback" not in started.text()
