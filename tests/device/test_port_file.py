"""``run --port 0 --port-file PATH``: the agent binds any free port and says which.

Callers that start many agents (bench/stack.py, the HA tests' onboarding services) used to pick
a port by opening and closing a socket; two agents could get the same one. Binding port 0 in
the agent and reading the port back has no such window.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import TypeAlias

import pytest

from device_firmware.__main__ import _config, _parser
from device_firmware.ble.bridge import BridgePeripheral
from device_firmware.config import DeviceConfig
from device_firmware.errors import ConfigError

from .conftest import AgentStarter, Provisioned, provision

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
#: Agents started at once in the concurrency test (two cores here; enough to collide before).
AGENTS = 8
START_TIMEOUT = 60.0


async def test_port_file_names_the_bound_ports_and_goes_at_stop(
    start_agent: AgentStarter, tmp_path: Path
) -> None:
    port_file = tmp_path / "agent-ports.json"
    async with start_agent(port_file=port_file, ble=True, ble_bridge=f"{LOOPBACK}:0") as running:
        document = json.loads(port_file.read_text())
        ble = running.agent.ble
        assert isinstance(ble, BridgePeripheral)
        assert document == {
            "pid": os.getpid(),
            "lan": running.agent.lan_ports()[0],
            "ble_bridge": ble.port,
        }
        assert document["lan"] > 0
        assert document["ble_bridge"] > 0
        # Written to a temporary name and renamed: nothing else is left beside it.
        names = await asyncio.to_thread(os.listdir, tmp_path)
        assert [name for name in names if "agent-ports" in name] == ["agent-ports.json"]
        info = await running.http.get(f"{running.url}/iob/v1/info")
        assert (await info.json())["device_id"] == running.provisioned.device.info.device_id
    assert not port_file.exists()


async def test_port_file_without_ble_says_null(start_agent: AgentStarter, tmp_path: Path) -> None:
    port_file = tmp_path / "ports.json"
    async with start_agent(port_file=port_file) as running:
        document = json.loads(port_file.read_text())
        assert document["ble_bridge"] is None
        assert document["lan"] == running.agent.lan_ports()[0]


async def test_unwritable_port_file_stops_the_agent_with_its_cause(
    start_agent: AgentStarter, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-dir" / "ports.json"
    with pytest.raises(ConfigError, match="port file") as caught:
        async with start_agent(port_file=missing):
            pass
    assert str(missing) in str(caught.value)
    assert "writable" in str(caught.value)


def test_port_file_from_command_line_and_toml(tmp_path: Path) -> None:
    settings = tmp_path / "device.toml"
    settings.write_text(f'port_file = "{tmp_path / "from-toml.json"}"\n')
    args = _parser().parse_args(["--config", str(settings), "run", "--port", "0"])
    assert _config(args).port_file == tmp_path / "from-toml.json"
    args = _parser().parse_args(
        ["--config", str(settings), "run", "--port-file", str(tmp_path / "cli.json")]
    )
    assert _config(args).port_file == tmp_path / "cli.json"
    assert DeviceConfig().port_file is None
    with pytest.raises(ConfigError, match="port_file must be a path"):
        DeviceConfig.from_mapping({"port_file": 8423})


def _read_ports(path: Path, pid: int) -> dict[str, int] | None:
    try:
        document: dict[str, int] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    # A file left by an earlier agent names another pid; a half-written one is never seen.
    return document if document["pid"] == pid else None


def _info(port: int) -> dict[str, str]:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/iob/v1/info", timeout=10) as answer:
        document: dict[str, str] = json.loads(answer.read())
        return document


Started: TypeAlias = list[tuple[Provisioned, Path, subprocess.Popen[bytes]]]


def _start_agents(tmp_path: Path, devices: list[Provisioned]) -> Started:
    """``run --port 0 --port-file`` for every device at once, as the bench starts a batch."""
    scenario = tmp_path / "scenario.toml"
    scenario.write_text('wired = true\n[[networks]]\nssid = "HomeNet"\n')
    settings = tmp_path / "device.toml"
    settings.write_text("advertise = []\nhotspot = false\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    agents: Started = []
    for index, device in enumerate(devices):
        port_file = tmp_path / f"ports-{index}.json"
        command = [
            sys.executable, "-m", "device_firmware", "--config", str(settings),
            "--data-dir", str(device.config.data_dir), "run",
            "--simulate-network", str(scenario), "--listen", LOOPBACK, "--port", "0",
            "--port-file", str(port_file), "--no-mqtt", "--no-ble", "--no-advertise",
        ]  # fmt: skip
        with (tmp_path / f"agent-{index}.log").open("wb") as log:
            process = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=log)
        agents.append((device, port_file, process))
    return agents


def _wait_for_ports(tmp_path: Path, agents: Started) -> dict[int, int]:
    """Each agent's LAN port, read from its port file once it is there."""
    ports: dict[int, int] = {}
    deadline = time.monotonic() + START_TIMEOUT
    while len(ports) < len(agents):
        for index, (_, port_file, process) in enumerate(agents):
            if index in ports:
                continue
            log_text = (tmp_path / f"agent-{index}.log").read_text(errors="replace")
            assert process.poll() is None, f"agent {index} exited:\n{log_text}"
            document = _read_ports(port_file, process.pid)
            if document is not None:
                ports[index] = document["lan"]
        assert time.monotonic() < deadline, f"port files so far: {ports}"
        time.sleep(0.05)
    return ports


@pytest.mark.slow
def test_agents_started_together_on_port_0_get_distinct_working_ports(tmp_path: Path) -> None:
    devices = [provision(tmp_path / f"d{i}") for i in range(AGENTS)]
    agents = _start_agents(tmp_path, devices)
    try:
        ports = _wait_for_ports(tmp_path, agents)
        assert len(set(ports.values())) == AGENTS, ports
        for index, (device, _, _) in enumerate(agents):
            assert _info(ports[index])["device_id"] == device.device.info.device_id
        for _, _, process in agents:
            process.send_signal(signal.SIGTERM)
        for index, (_, port_file, process) in enumerate(agents):
            assert process.wait(timeout=30) == 0, index
            assert not port_file.exists()
    finally:
        for _, _, process in agents:
            if process.poll() is None:
                process.kill()
                process.wait()
