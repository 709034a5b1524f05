"""The device's HTTP servers against a LAN host that hoards connections (docs/device.md
"Connection limits"): a connection cap that closes the oldest idle connection, a request-head
timeout, and at most a line or two in the log - never a traceback per connection.

The flood runs against the agent as a subprocess with a lowered open-file limit, so a few
hundred connections are "more than the device can hold" and the test stays cheap."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from device_firmware.provisioning.http_guard import DEFAULT_MAX_CONNECTIONS, connection_cap

from .conftest import AgentStarter, Provisioned, agent_command, simulated_run

LOOPBACK = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[2]
#: The agent's open-file limit in these tests: far below systemd's default 1 024.
OPEN_FILES = 200
#: More idle connections than the agent can hold open.
FLOOD = 300
_PORT_LINE = re.compile(r"LAN provisioning server on \S+ port (\d+)")


def _toml(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else repr(value)


@contextlib.asynccontextmanager
async def agent_process(
    provisioned: Provisioned, tmp_path: Path, **settings: Any
) -> AsyncIterator[tuple[int, Path]]:
    """The agent with ``settings`` in its configuration file and RLIMIT_NOFILE = OPEN_FILES."""
    config = tmp_path / "device.toml"
    config.write_text(
        "".join(f"{key} = {_toml(value)}\n" for key, value in settings.items()), encoding="utf-8"
    )
    scenario = tmp_path / "scenario.json"
    scenario.write_text('{"networks": []}', encoding="utf-8")
    log = tmp_path / "agent.log"

    def lower_limit() -> None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, hard))

    with log.open("wb") as handle:
        process = await asyncio.create_subprocess_exec(
            *agent_command(provisioned, *simulated_run(scenario, "--no-ble"), config=config),
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            preexec_fn=lower_limit,  # only setrlimit, before exec
        )
    try:
        async with asyncio.timeout(60):
            while (match := _PORT_LINE.search(log.read_text(errors="replace"))) is None:
                assert process.returncode is None, log.read_text(errors="replace")
                await asyncio.sleep(0.05)
        yield int(match[1]), log
    finally:
        if process.returncode is None:
            os.kill(process.pid, signal.SIGTERM)
        async with asyncio.timeout(30):
            await process.wait()


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({}, id="defaults"),
        pytest.param({"max_connections": 16}, id="small-cap"),
        pytest.param({"max_connections": 5000}, id="cap-above-the-open-file-limit"),
    ],
)
async def test_idle_connections_cannot_starve_info_or_flood_the_log(
    provisioned: Provisioned, tmp_path: Path, settings: dict[str, Any]
) -> None:
    async with agent_process(provisioned, tmp_path, **settings) as (port, log):
        hoard: list[asyncio.StreamWriter] = []
        try:
            for _ in range(FLOOD):
                with contextlib.suppress(OSError):
                    _reader, writer = await asyncio.open_connection(LOOPBACK, port)
                    hoard.append(writer)
            timeout = aiohttp.ClientTimeout(total=20)
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.get(f"http://{LOOPBACK}:{port}/iob/v1/info") as response,
            ):
                assert response.status == 200
                info = await response.json()
            assert info["device_id"] == provisioned.device.identity.device_id
        finally:
            for writer in hoard:
                writer.close()
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    assert text.count("Too many open files") <= 1, text[-3000:]
    flood_lines = [
        line
        for line in text.splitlines()
        if "connection" in line.lower() and "at most" not in line and "LAN provisioning" not in line
    ]
    assert len(flood_lines) <= 2, flood_lines  # one episode: its start and its end


async def test_slow_or_silent_clients_are_closed_after_the_header_timeout(
    start_agent: AgentStarter,
) -> None:
    async with start_agent(http_header_timeout=0.3) as running:
        port = running.agent.lan_ports()[0]
        silent_reader, silent = await asyncio.open_connection(LOOPBACK, port)
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        writer.write(b"GET /iob/v1/info HTTP/1.1\r\nHost: device\r\n")
        closed_by_device = False
        try:
            # A slowloris client: one more header line now and then, never the blank line.
            for number in range(400):
                writer.write(b"X-Dribble-%d: x\r\n" % number)
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        if await reader.read(1024) == b"":
                            closed_by_device = True
                            break
        except ConnectionError:
            closed_by_device = True
        assert closed_by_device, "the header-dribbling connection is still open"
        async with asyncio.timeout(10):
            assert await silent_reader.read() == b""  # the silent one is closed as well
        writer.close()
        silent.close()
        # The device still answers a well-behaved client.
        async with running.http.get(f"{running.url}/iob/v1/info") as response:
            assert response.status == 200


def test_the_shipped_unit_sets_an_open_file_limit_the_cap_fits_in() -> None:
    unit = (REPO_ROOT / "device_firmware/systemd/iot-onboard-device.service").read_text()
    limits = re.findall(r"^LimitNOFILE=(\d+)$", unit, flags=re.MULTILINE)
    assert len(limits) == 1, "the unit must state LimitNOFILE="
    assert connection_cap(DEFAULT_MAX_CONNECTIONS, int(limits[0])) == DEFAULT_MAX_CONNECTIONS


async def test_accept_failures_are_one_line_per_episode(tmp_path: Path) -> None:
    """Without the cap (a server whose cap exceeds its open-file limit), accept() fails with
    EMFILE: one WARNING for the episode, idle connections closed, no traceback."""
    log = tmp_path / "server.log"

    def lower_limit() -> None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))

    with log.open("wb") as handle:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.device.guarded_server",
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=handle,
            preexec_fn=lower_limit,  # only setrlimit, before exec
        )
    hoard: list[asyncio.StreamWriter] = []
    try:
        assert process.stdout is not None
        async with asyncio.timeout(30):
            port = int((await process.stdout.readline()).split()[1])
        for _ in range(150):
            with contextlib.suppress(OSError):
                _reader, writer = await asyncio.open_connection(LOOPBACK, port)
                hoard.append(writer)
        async with asyncio.timeout(30):
            # asyncio retries accept() every second: wait for a few failed retries.
            while True:
                if log.read_text(errors="replace").count("accept failed") >= 3:
                    break
                await asyncio.sleep(0.1)
        for writer in hoard:
            writer.close()
        hoard.clear()
        timeout = aiohttp.ClientTimeout(total=30)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(f"http://{LOOPBACK}:{port}/iob/v1/info") as response,
        ):
            assert response.status == 200
    finally:
        for writer in hoard:
            writer.close()
        if process.returncode is None:
            os.kill(process.pid, signal.SIGTERM)
        async with asyncio.timeout(30):
            await process.wait()
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    shown = [line for line in text.splitlines() if not line.startswith("DEBUG")]
    assert [line for line in shown if "out of file descriptors" in line] == [shown[0]], shown
    assert len(shown) == 1, shown


async def test_a_body_that_never_arrives_is_answered_408_and_closed(
    start_agent: AgentStarter,
) -> None:
    """Headers announcing a small body, then nothing: such connections are busy, not idle, so
    the cap could not shed them - they must end on their own."""
    async with start_agent(http_header_timeout=0.3, max_connections=8) as running:
        port = running.agent.lan_ports()[0]
        stalled = []
        for _ in range(8):
            reader, writer = await asyncio.open_connection(LOOPBACK, port)
            writer.write(
                b"POST /iob/v1/session HTTP/1.1\r\nHost: device\r\n"
                b"Content-Type: application/octet-stream\r\nContent-Length: 100\r\n\r\n0123456789"
            )
            stalled.append((reader, writer))
        for reader, writer in stalled:
            async with asyncio.timeout(20):
                answer = await reader.read()  # until the device closes
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
            assert b'"body_timeout"' in answer
            writer.close()
        async with running.http.get(f"{running.url}/iob/v1/info") as response:
            assert response.status == 200
