"""The real account service and the real device agent as subprocesses on 127.0.0.1.

Used by test_onboarding_e2e.py. Both are started with the interpreter running the tests
(``python -m cloud_relay serve`` and ``python -m device_firmware run`` with a simulated Wi-Fi
environment), each with its own config and data directory, and stopped by pid. Nothing here
imports ``cloud_relay``, ``device_firmware`` or the top-level ``iob_protocol``: the HA test
process only ever sees the integration's own copy of the protocol package.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from tests.plugins.mosquitto import MosquittoBroker
from tests.plugins.relay_toml import relay_toml

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
HOME_SSID = "HomeNet"
HOME_PASSPHRASE = "correct horse battery"  # noqa: S105 - the simulated network's
LOOPBACK = "127.0.0.1"


class ServiceError(RuntimeError):
    """A service did not start; the message carries the end of its log."""


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.2):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Process:
    """One subprocess with its log file, stopped by its own pid."""

    name: str
    log: Path
    popen: subprocess.Popen[bytes]

    @classmethod
    def start(cls, name: str, args: list[str], log: Path, env: dict[str, str]) -> Self:
        handle = log.open("wb")
        try:
            popen = subprocess.Popen(
                [sys.executable, *args],
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
            )
        finally:
            handle.close()
        return cls(name, log, popen)

    def wait_for_port(self, port: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise ServiceError(
                    f"{self.name} exited ({self.popen.returncode}):\n{_tail(self.log)}"
                )
            if _accepts(port):
                return
            time.sleep(0.05)
        raise ServiceError(f"{self.name} did not listen on {port}:\n{_tail(self.log)}")

    def wait_for_port_file(self, path: Path) -> dict[str, int]:
        """The ports a device agent (``run --port-file``) or the account service (``serve
        --port-file``) wrote to ``path``, once it has: written after binding, so they answer."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise ServiceError(
                    f"{self.name} exited ({self.popen.returncode}):\n{_tail(self.log)}"
                )
            try:
                document: dict[str, int] = json.loads(path.read_text())
            except FileNotFoundError:
                document = {}
            if document.get("pid") == self.popen.pid:  # not an earlier agent's file
                return document
            time.sleep(0.05)
        raise ServiceError(f"{self.name} did not write {path}:\n{_tail(self.log)}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(STOP_TIMEOUT)

    def log_tail(self) -> str:
        return _tail(self.log)


def run_cli(args: list[str], env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    """A one-shot command of either program; its output, or an error with it."""
    done = subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        input=stdin,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise ServiceError(f"{args[:3]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


@dataclass
class AccountService:
    """``python -m cloud_relay serve`` on SQLite and the test's Mosquitto.

    The service binds a free port itself and names it in its port file (``serve
    --port-file``): no port is chosen here and released for it to take, so services started
    side by side never race for one. ``port`` is known once :meth:`start` returned.
    """

    directory: Path
    broker: MosquittoBroker
    port: int = 0
    process: Process | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def config(self) -> Path:
        return self.directory / "relay.toml"

    @property
    def port_file(self) -> Path:
        return self.directory / "relay.port"

    @property
    def env(self) -> dict[str, str]:
        return {
            "IOB_RELAY_BROKER_PASSWORD": self.broker.admin_password,
            "IOB_RELAY_SECRET_KEY": self._secret,
        }

    def __post_init__(self) -> None:
        self._secret = secrets.token_urlsafe(32)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # The secret key and the broker's admin password come from the environment (env).
        self.config.write_text(
            relay_toml(
                f"sqlite:///{self.directory / 'relay.db'}",
                self.broker,
                http_port=self.port,
                public_host=self.broker.host,
                generous_limits=True,
            ),
            encoding="utf-8",
        )
        self.process = Process.start(
            "account service",
            [
                "-m",
                "cloud_relay",
                "--config",
                str(self.config),
                "serve",
                "--port-file",
                str(self.port_file),
            ],
            self.directory / "relay.log",
            self.env,
        )
        self.port = self.process.wait_for_port_file(self.port_file)["http"]

    def create_admin(self, email: str, password: str) -> None:
        """A service administrator (``admin create-account --admin``), as the operator makes
        one; sign in as it for the admin API (registry import over HTTP)."""
        self.cli("admin", "create-account", email, "--admin", "--password-stdin", stdin=password)

    def import_records(self, record_file: Path) -> None:
        """The factory records, as the operator imports them."""
        self.cli("registry", "import", str(record_file))

    def set_model(self, model: str, name: str) -> None:
        """A device model's human name, as the operator sets it (``admin set-model``)."""
        self.cli("admin", "set-model", model, "--name", name)

    def cli(self, *args: str, stdin: str | None = None) -> str:
        """``python -m cloud_relay --config <this service's> ARGS`` (one line of ``stdin``)."""
        command = ["-m", "cloud_relay", "--config", str(self.config), *args]
        return run_cli(command, self.env, stdin=None if stdin is None else stdin + "\n")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@dataclass
class Device:
    """A factory-provisioned device and ``python -m device_firmware run`` on loopback."""

    directory: Path
    #: The LAN port: 0 until :meth:`start`, then the one the agent bound (its port file).
    port: int = 0
    process: Process | None = None
    device_id: str = ""
    manual_code: str = ""
    #: The loopback BLE bridge's port (``start(..., ble_bridge=True)``), else 0.
    bridge_port: int = 0

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def port_file(self) -> Path:
        """Where the agent writes its pid and bound ports (``run --port-file``)."""
        return self.directory / "agent-ports.json"

    @property
    def factory_dir(self) -> Path:
        return self.directory / "factory"

    @property
    def record_file(self) -> Path:
        return self.factory_dir / "manufacturing-records.jsonl"

    def provision(self) -> None:
        """``factory-provision``: identity, setup code, registry record, label."""
        output = run_cli(
            [
                "-m",
                "device_firmware",
                "--data-dir",
                str(self.data_dir),
                "factory-provision",
                "--model",
                "pi-test",
                "--output",
                str(self.factory_dir),
            ]
        )
        record = json.loads(self.record_file.read_text().splitlines()[-1])
        self.device_id = record["device_id"]
        self.manual_code = next(
            line.split(":", 1)[1].strip() for line in output.splitlines() if "Manual code" in line
        )

    def label(self) -> dict[str, Any]:
        """What the label's QR code encodes, read from the files the factory wrote."""
        return {
            "setup_code": (self.data_dir / "setup-code.json").read_bytes(),
            "factory": json.loads((self.data_dir / "factory.json").read_text()),
        }

    def start(
        self,
        networks: list[dict[str, Any]],
        *,
        ble_bridge: bool = False,
        commit_timeout: int | None = None,
        name: str | None = None,
    ) -> None:
        """Run the agent; ``ble_bridge`` serves its real GATT services on a loopback port;
        ``commit_timeout`` (seconds) shortens the fail-safe commit timer and ``name`` names the
        device (its config file)."""
        scenario = self.directory / "scenario.json"
        scenario.write_text(json.dumps({"networks": networks}), encoding="utf-8")
        settings = [f"commit_timeout = {commit_timeout}"] if commit_timeout is not None else []
        settings += [f"name = {json.dumps(name)}"] if name is not None else []
        config: list[str] = []
        if settings:
            config_file = self.directory / "device.toml"
            config_file.write_text("".join(f"{line}\n" for line in settings), encoding="utf-8")
            config = ["--config", str(config_file)]
        self.process = Process.start(
            "device agent",
            [
                "-m",
                "device_firmware",
                *config,
                "--data-dir",
                str(self.data_dir),
                "run",
                "--simulate-network",
                str(scenario),
                "--listen",
                LOOPBACK,
                "--port",
                str(self.port),
                "--port-file",
                str(self.port_file),
                "--no-advertise",
                "--no-hotspot",
                *(["--ble-bridge", f"{LOOPBACK}:0"] if ble_bridge else ["--no-ble"]),
                "--allow-insecure-http",
            ],
            self.directory / "device.log",
            {},
        )
        # The agent binds the port itself and names it: no port is chosen here and released
        # for the agent to take, so agents started side by side never share one.
        ports = self.process.wait_for_port_file(self.port_file)
        self.port = ports["lan"]
        self.process.wait_for_port(self.port)
        if ble_bridge:
            self.bridge_port = ports["ble_bridge"]

    def status(self) -> dict[str, Any]:
        """``status --json`` from the device's shell."""
        output = run_cli(
            ["-m", "device_firmware", "--data-dir", str(self.data_dir), "status", "--json"]
        )
        document: dict[str, Any] = json.loads(output)
        return document

    def attempts(self) -> str:
        """``attempts`` from the device's shell: the onboarding steps, as printed."""
        return run_cli(["-m", "device_firmware", "--data-dir", str(self.data_dir), "attempts"])

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
