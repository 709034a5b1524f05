"""The demo stack comes up (every service answers on the ports it reports) and goes down.

The orchestrator runs as a subprocess, exactly as scripts/develop runs it, with its own state
directory and a free Home Assistant port. The checks go through the ports it publishes on
127.0.0.1 (as root, through its forwarder into the stack's private network namespace).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
ORCHESTRATOR = REPO / "scripts" / "demo_stack.py"
READY_PREFIX = "IOB-DEMO-READY "
# Bounds, not expectations: Home Assistant starts in about 5 s here.
START_TIMEOUT = 150.0
STOP_TIMEOUT = 90.0


class Orchestrator:
    """The orchestrator's process and every line it printed (read by a thread)."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(ORCHESTRATOR), *args],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line)
        self._queue.put(None)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self) -> dict[str, Any]:
        while True:
            try:
                line = self._queue.get(timeout=START_TIMEOUT)
            except queue.Empty:
                pytest.fail(f"no ready line within {START_TIMEOUT} s:\n{self.output}")
            if line is None:
                pytest.fail(f"the orchestrator exited before it was ready:\n{self.output}")
            if line.startswith(READY_PREFIX):
                document: dict[str, Any] = json.loads(line.removeprefix(READY_PREFIX))
                return document

    def wait(self) -> int:
        code = self.process.wait(timeout=STOP_TIMEOUT)
        self._reader.join(timeout=10)
        return code

    def kill(self) -> None:
        """Last resort after a failed test: SIGTERM (it cleans up), then SIGKILL."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def processes_mentioning(text: str) -> dict[int, str]:
    """Every process whose command line contains ``text`` (pid-reuse safe; zombies have none)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                cmdline = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
                if text in cmdline:
                    found[int(entry.name)] = cmdline
    return found


def kill_leftovers(text: str) -> None:
    for pid in processes_mentioning(text):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def get(url: str, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(  # noqa: S310 - http://127.0.0.1 URLs the stack printed
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except OSError:
        return True


def ha_login(base: str, username: str, password: str) -> dict[str, Any]:
    """Home Assistant's login flow, as its login page runs it."""
    client_id = f"{base}/"
    status, body = get(
        f"{base}/auth/login_flow",
        {"client_id": client_id, "handler": ["homeassistant", None], "redirect_uri": client_id},
    )
    assert status == 200, body
    flow_id = json.loads(body)["flow_id"]
    status, body = get(
        f"{base}/auth/login_flow/{flow_id}",
        {"client_id": client_id, "username": username, "password": password},
    )
    assert status == 200, body
    result: dict[str, Any] = json.loads(body)
    return result


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # Not tmp_path: it lies under a root-only 0700 directory the broker's user cannot reach.
    directory = Path(tempfile.mkdtemp(prefix="iob-demo-test-"))
    try:
        yield directory
    finally:
        kill_leftovers(str(directory))
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.slow
def test_stack_comes_up_answers_and_stops_cleanly_on_sigint(state_dir: Path) -> None:
    stack = Orchestrator("--state-dir", str(state_dir), "--ha-port", str(free_port()))
    try:
        ready = stack.wait_ready()
        pids: list[int] = ready["pids"]
        assert len(pids) == 6  # broker, account service, 3 devices, Home Assistant
        assert set(processes_mentioning(str(state_dir))) >= set(pids)

        # Home Assistant: up (401 without a token), both printed logins work.
        ha = ready["homeassistant"]["url"]
        assert get(f"{ha}/api/")[0] == 401
        for user in ready["homeassistant"]["users"]:
            assert ha_login(ha, user["username"], user["password"])["type"] == "create_entry"

        # The account service: healthy; the demo account signs in with the printed password.
        relay = ready["account_service"]["url"]
        status, body = get(f"{relay}/v1/health")
        assert status == 200
        assert json.loads(body)["status"] == "ok"
        account = next(a for a in ready["account_service"]["accounts"] if not a["admin"])
        status, _ = get(
            f"{relay}/v1/auth/sign-in", {"email": account["email"], "password": account["password"]}
        )
        assert status == 200

        # Each device: its LAN server answers with the id the summary printed; unclaimed.
        assert len(ready["devices"]) == 3
        for device in ready["devices"]:
            status, body = get(f"{device['url']}/iob/v1/info")
            assert status == 200
            info = json.loads(body)
            assert info["device_id"] == device["device_id"]
            assert info["state"] == "unclaimed"
            assert device["qr_payload"].startswith(f"IOB1:{device['device_id']}:")
            assert Path(device["label_png"]).is_file()

        if os.geteuid() == 0:
            # Isolated: every process of the stack is in another network namespace.
            assert ready["isolated"] is True
            ours = Path("/proc/self/ns/net").readlink()
            for pid in pids:
                assert Path(f"/proc/{pid}/ns/net").readlink() != ours

        stack.process.send_signal(signal.SIGINT)
        assert stack.wait() == 0, stack.output
    finally:
        stack.kill()

    assert processes_mentioning(str(state_dir)) == {}
    for port in ready["published_ports"]:
        assert refused(port)
    assert "Everything is stopped." in stack.output

    # Home Assistant's users were made as the summary says: an owner and a plain user.
    auth = json.loads((state_dir / "ha-config" / ".storage" / "auth").read_text())
    users = {u["name"]: u for u in auth["data"]["users"] if not u["system_generated"]}
    assert users["Demo Owner"]["is_owner"] is True
    assert users["Demo Owner"]["group_ids"] == ["system-admin"]
    assert users["Guest"]["group_ids"] == ["system-users"]


@pytest.mark.slow
def test_a_failure_while_starting_names_its_log_and_leaves_nothing_running(
    state_dir: Path,
) -> None:
    # A first run makes the state (no Home Assistant: quicker); then the database is broken.
    first = Orchestrator("--state-dir", str(state_dir), "--no-ha", "--devices", "1")
    try:
        first.wait_ready()
        first.process.send_signal(signal.SIGTERM)
        assert first.wait() == 0, first.output
    finally:
        first.kill()
    (state_dir / "relay" / "relay.db").write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (state_dir / "relay" / f"relay.db{suffix}").unlink(missing_ok=True)

    second = Orchestrator("--state-dir", str(state_dir), "--no-ha", "--devices", "1")
    try:
        assert second.wait() == 1
    finally:
        second.kill()
    assert "error: cloud_relay registry import" in second.output
    assert f"Its log is {state_dir / 'logs' / 'setup.log'}" in second.output
    assert "stopped Mosquitto" in second.output
    assert READY_PREFIX not in second.output
    assert processes_mentioning(str(state_dir)) == {}
