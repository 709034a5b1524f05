"""The demo stack as the stack tests drive it: the orchestrator's process and HTTP helpers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

REPO = Path(__file__).resolve().parents[2]
ORCHESTRATOR = REPO / "scripts" / "demo_stack.py"
READY_PREFIX = "IOB-DEMO-READY "
CONTROL_PREFIX = "IOB-DEMO-CONTROL "
# Bounds, not expectations: Home Assistant starts in about 5 s here.
START_TIMEOUT = 150.0
STOP_TIMEOUT = 90.0


class Orchestrator:
    """The orchestrator's process and every line it printed (read by a thread)."""

    def __init__(
        self,
        *args: str,
        control: bool = False,
        checkout: Path = REPO,
        env: dict[str, str] | None = None,
    ) -> None:
        """``control``: run with ``--control`` and keep a pipe to its stdin (:meth:`command`).

        ``checkout``: run that checkout's scripts/demo_stack.py from its top (as
        scripts/develop does), with ``env`` added to the environment.
        """
        orchestrator = checkout / ORCHESTRATOR.relative_to(REPO)
        self.process = subprocess.Popen(
            [sys.executable, str(orchestrator), *args, *(["--control"] if control else [])],
            cwd=checkout,
            env={**os.environ, **(env or {})},
            stdin=subprocess.PIPE if control else subprocess.DEVNULL,
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

    def command(self, op: str, part: str) -> dict[str, Any]:
        """A ``--control`` command (scripts/demo/control.py) and the stack's answer."""
        assert self.process.stdin is not None, "started without control=True"
        self.process.stdin.write(json.dumps({"op": op, "part": part}) + "\n")
        self.process.stdin.flush()
        while True:
            try:
                line = self._queue.get(timeout=START_TIMEOUT)
            except queue.Empty:
                pytest.fail(f"no answer to {op} {part} within {START_TIMEOUT} s:\n{self.output}")
            if line is None:
                pytest.fail(f"the orchestrator exited during {op} {part}:\n{self.output}")
            if line.startswith(CONTROL_PREFIX):
                answer: dict[str, Any] = json.loads(line.removeprefix(CONTROL_PREFIX))
                assert answer["ok"], answer
                return answer

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


def get(
    url: str,
    body: dict[str, Any] | None = None,
    *,
    token: str | None = None,
    method: str | None = None,
) -> tuple[int, bytes]:
    """GET (POST with a JSON ``body``), never through a proxy; ``token``: a bearer token.

    ``method``: another HTTP method (``DELETE``).
    """
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(  # noqa: S310 - http://127.0.0.1 URLs the stack printed
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers=headers,
        method=method,
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


def ha_token(base: str, username: str, password: str) -> str:
    """An access token, as the frontend gets one: login flow, then the code for a token."""
    login = ha_login(base, username, password)
    assert login["type"] == "create_entry", login
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    form = urllib.parse.urlencode(
        {"grant_type": "authorization_code", "code": login["result"], "client_id": f"{base}/"}
    ).encode()
    request = urllib.request.Request(f"{base}/auth/token", data=form)  # noqa: S310 - as above
    with opener.open(request, timeout=30) as response:
        token: str = json.loads(response.read())["access_token"]
    return token


def ws_answer(base: str, token: str, command: dict[str, Any]) -> dict[str, Any]:
    """One websocket command's whole answer, errors included (what the frontend shows)."""

    async def run() -> dict[str, Any]:
        async with (
            asyncio.timeout(60),
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{base}/api/websocket") as ws,
        ):
            assert (await ws.receive_json())["type"] == "auth_required"
            await ws.send_json({"type": "auth", "access_token": token})
            assert (await ws.receive_json())["type"] == "auth_ok"
            await ws.send_json({"id": 1, **command})
            answer: dict[str, Any] = await ws.receive_json()
            return answer

    return asyncio.run(run())


def ha_ws(base: str, token: str, command: dict[str, Any]) -> Any:
    """One command on Home Assistant's websocket API (what the frontend uses); its result.

    Some of what the UI shows has no REST view: the discovered flows, for one.
    """
    answer = ws_answer(base, token, command)
    assert answer["success"], answer
    return answer["result"]


#: Log lines the discovery diagnosis quotes (HA's zeroconf and flow manager, the devices' mDNS).
_DISCOVERY_LOG_MARKS = ("_iot-onboard", "iot_onboard", "advertis", "zeroconf:")
_DIAGNOSIS_LINES = 30
_DIAGNOSIS_LINE_CHARS = 300


def discovery_diagnosis(state_dir: Path, flows: list[dict[str, Any]]) -> str:
    """What the stack knew when a discovery flow did not appear, for the failure message.

    Tells apart the three places a discovery can get lost: the device never advertised (its
    log), Home Assistant's zeroconf never saw the record (no ``Discovered new device`` line in
    its log; the demo config logs ``homeassistant.components.zeroconf`` at debug), or HA saw it
    but the flow is missing or not the one the test looks for (every flow in progress, any
    handler, with its unique id).
    """
    parts = ["flows in progress (handler, source, unique_id, step_id):"]
    parts += [
        f"    {f['handler']} {f['context'].get('source')} "
        f"{f['context'].get('unique_id')} {f.get('step_id')}"
        for f in flows
    ] or ["    (none)"]
    for log in sorted((state_dir / "logs").glob("*.log")):
        if log.name != "homeassistant.log" and not log.name.startswith("device-"):
            continue
        try:
            text = log.read_text(encoding="utf-8", errors="replace")
        except OSError as err:
            parts.append(f"{log}: unreadable ({err})")
            continue
        lines = [
            line[:_DIAGNOSIS_LINE_CHARS]
            for line in text.splitlines()
            if any(mark in line for mark in _DISCOVERY_LOG_MARKS)
        ][-_DIAGNOSIS_LINES:]
        parts.append(f"{log} (lines about discovery):")
        parts += [f"    {line}" for line in lines] or ["    (none)"]
    return "\n".join(parts)
