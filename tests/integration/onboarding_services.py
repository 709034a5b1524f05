"""The real account service and the real device agent as subprocesses on 127.0.0.1, and the
config-flow steps the end-to-end tests take with them.

Used by test_onboarding_e2e.py, test_ble_onboarding_e2e.py and test_diagnostics.py. Both
programs are started with the interpreter running the tests (``python -m cloud_relay serve``
and ``python -m device_firmware run`` with a simulated Wi-Fi environment), each with its own
config and data directory, and stopped by pid. Nothing here imports ``cloud_relay``,
``device_firmware`` or the top-level ``iob_protocol``: the HA test process only ever sees the
integration's own copy of the protocol package.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import Any, Final, Self

import pytest
from homeassistant.config_entries import (
    SOURCE_RECONFIGURE,
    SOURCE_ZEROCONF,
    ConfigEntry,
    ConfigFlowResult,
)
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.service_info.zeroconf import ZeroconfServiceInfo

from custom_components.iot_onboard.const import CONF_HOUSEHOLD_ID, DOMAIN
from custom_components.iot_onboard.device_client import DeviceClient
from custom_components.iot_onboard.helpers import device_entry
from custom_components.iot_onboard.iob_protocol import (
    SetupCode,
    b64url_decode,
    public_key_fingerprint,
)
from tests.plugins.mosquitto import MosquittoBroker
from tests.plugins.netns import DeviceNamespace
from tests.plugins.relay_toml import relay_toml

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
HOME_SSID = "HomeNet"
HOME_PASSPHRASE = "correct horse battery"  # noqa: S105 - the simulated network's
LOOPBACK = "127.0.0.1"
#: The simulated Wi-Fi around the device: the household's network and an open café.
NETWORKS: Final = [
    {"ssid": HOME_SSID, "passphrase": HOME_PASSPHRASE, "strength": 80},
    {"ssid": "Cafe", "strength": 40},
]


class ServiceError(RuntimeError):
    """A service did not start; the message carries the end of its log."""


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
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
    def start(
        cls,
        name: str,
        args: list[str],
        log: Path,
        env: dict[str, str],
        prefix: Sequence[str] = (),
    ) -> Self:
        """``python ARGS``; ``prefix`` goes before it (``nsenter``: in a network namespace)."""
        handle = log.open("wb")
        try:
            popen = subprocess.Popen(
                [*prefix, sys.executable, *args],
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
            )
        finally:
            handle.close()
        return cls(name, log, popen)

    def wait_for_port(self, port: int, host: str = LOOPBACK) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise ServiceError(
                    f"{self.name} exited ({self.popen.returncode}):\n{_tail(self.log)}"
                )
            if _accepts(host, port):
                return
            time.sleep(0.05)
        raise ServiceError(f"{self.name} did not listen on {host}:{port}:\n{_tail(self.log)}")

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
    """A factory-provisioned device and ``python -m device_firmware run`` on loopback, or in a
    network namespace of its own (``prefix``) on its address there (``host``)."""

    directory: Path
    host: str = LOOPBACK
    #: Put before the agent's command (tests/plugins/netns.py: ``DeviceNamespace.prefix``).
    prefix: Sequence[str] = ()
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
        allow_insecure_http: bool = True,
    ) -> None:
        """Run the agent; ``ble_bridge`` serves its real GATT services on a loopback port;
        ``commit_timeout`` (seconds) shortens the fail-safe commit timer and ``name`` names the
        device (its config file). ``allow_insecure_http`` (on: the test's services have no
        TLS) lets it post to an ``http`` account service itself; off, as on a real device."""
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
                self.host,
                "--port",
                str(self.port),
                "--port-file",
                str(self.port_file),
                "--no-advertise",
                "--no-hotspot",
                *(["--ble-bridge", f"{LOOPBACK}:0"] if ble_bridge else ["--no-ble"]),
                *(["--allow-insecure-http"] if allow_insecure_http else []),
            ],
            self.directory / "device.log",
            {},
            self.prefix,
        )
        # The agent binds the port itself and names it: no port is chosen here and released
        # for the agent to take, so agents started side by side never share one.
        ports = self.process.wait_for_port_file(self.port_file)
        self.port = ports["lan"]
        self.process.wait_for_port(self.port, self.host)
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


@contextmanager
def running_services(
    directory: Path,
    broker: MosquittoBroker,
    *,
    networks: list[dict[str, Any]] | None = None,
    ble_bridge: bool = False,
    commit_timeout: int | None = None,
    name: str | None = None,
    allow_insecure_http: bool = True,
    device_namespace: DeviceNamespace | None = None,
) -> Iterator[tuple[AccountService, Device]]:
    """A provisioned device in the registry, both programs running (the device's options as
    :meth:`Device.start`'s; in ``device_namespace`` on its veth address if given); stopped by
    pid."""
    relay = AccountService(directory / "relay", broker)
    device = Device(directory / "device")
    if device_namespace is not None:
        device.host = device_namespace.device_address
        device.prefix = device_namespace.prefix
    try:
        device.provision()
        relay.start()
        relay.import_records(device.record_file)
        device.start(
            NETWORKS if networks is None else networks,
            ble_bridge=ble_bridge,
            commit_timeout=commit_timeout,
            name=name,
            allow_insecure_http=allow_insecure_http,
        )
        yield relay, device
    finally:
        device.stop()
        relay.stop()


# --- the config-flow steps ----------------------------------------------------------------------


def qr_text(device: Device) -> str:
    """What a phone camera reads off the label: rebuilt from the factory's files."""
    label = device.label()
    setup = SetupCode.from_json(label["setup_code"])
    fingerprint = public_key_fingerprint(b64url_decode(label["factory"]["public_key"]))
    return setup.qr_payload(fingerprint).format()


async def discovery_of(hass: HomeAssistant, device: Device) -> ZeroconfServiceInfo:
    """The zeroconf record, from the device's own advertisement data (no multicast)."""
    info = await DeviceClient(
        device.host, device.port, session=async_get_clientsession(hass)
    ).fetch_info()
    return ZeroconfServiceInfo(
        ip_address=ip_address(device.host),
        ip_addresses=[ip_address(device.host)],
        port=device.port,
        hostname=f"iob-{info.device_id.lower()}.local.",
        type="_iot-onboard._tcp.local.",
        name=f"iob-{info.device_id}._iot-onboard._tcp.local.",
        properties={
            "id": info.device_id,
            "model": info.model,
            "firmware": info.firmware_version,
            "state": info.state,
            "protocol": str(info.protocol_version),
            # As the agent advertises it: only when the device has a name.
            **({"name": info.name} if info.name else {}),
        },
    )


async def discovered(hass: HomeAssistant, device: Device) -> ConfigFlowResult:
    """The flow zeroconf starts for ``device``, confirmed by the user: its sign-in form."""
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=await discovery_of(hass, device)
    )
    assert result["step_id"] == "discovery_confirm", result
    return await hass.config_entries.flow.async_configure(result["flow_id"], {})


async def sign_up(
    hass: HomeAssistant, flow_id: str, account_url: str, household_name: str = "Home"
) -> ConfigFlowResult:
    """The sign-in form filled in by a new user: a new account (its own e-mail address and
    password) and, with it, the household ``household_name``."""
    return await hass.config_entries.flow.async_configure(
        flow_id,
        {
            "account_url": account_url,
            "email": f"user-{secrets.token_hex(4)}@example.com",
            "password": secrets.token_urlsafe(16),
            "create_account": True,
            "household_name": household_name,
        },
    )


async def new_household_onboards(
    hass: HomeAssistant, device: Device, account_url: str
) -> ConfigFlowResult:
    """Discovery, a new account and household at ``account_url``, the QR code and HomeNet with
    its password: the flow's answer once the commit's progress ended."""
    flow_id = (await discovered(hass, device))["flow_id"]
    await sign_up(hass, flow_id, account_url)
    result = await hass.config_entries.flow.async_configure(
        flow_id, {"setup_code": qr_text(device)}
    )
    return await submit_wifi(hass, result)


def network_option(result: ConfigFlowResult, ssid: str = HOME_SSID) -> str:
    """The Wi-Fi form's choice for the network ``ssid`` (its label starts with the name)."""
    assert result.get("step_id") == "wifi", result
    schema = result["data_schema"]
    assert schema is not None
    options = schema.schema["network"].config["options"]
    value: str = next(option["value"] for option in options if option["label"].startswith(ssid))
    return value


async def submit_wifi(
    hass: HomeAssistant,
    result: ConfigFlowResult,
    passphrase: str | None = HOME_PASSPHRASE,
    ssid: str = HOME_SSID,
) -> ConfigFlowResult:
    """The Wi-Fi form answered with ``ssid`` and ``passphrase`` (None: an open network); what
    the flow shows once the device's commit has ended."""
    flow_id = result["flow_id"]
    answer = {"network": network_option(result, ssid)}
    if passphrase is not None:
        answer["passphrase"] = passphrase
    progress = await hass.config_entries.flow.async_configure(flow_id, answer)
    assert progress["type"] is FlowResultType.SHOW_PROGRESS, progress
    return await after_progress(hass, flow_id)


async def after_progress(hass: HomeAssistant, flow_id: str) -> ConfigFlowResult:
    """Wait for the provisioning task (real HTTP to both services), then read the next step."""
    await hass.async_block_till_done()
    return await hass.config_entries.flow.async_configure(flow_id)


async def settled_status(device: Device) -> dict[str, Any]:
    """The device's ``status`` once it no longer commits (its commit ends by itself)."""
    for _ in range(600):
        status = await asyncio.to_thread(device.status)
        if status["phase"] != "committing":
            break
        await asyncio.sleep(0.05)
    return status


async def change_wifi(hass: HomeAssistant, entry: ConfigEntry, device: Device) -> None:
    """Later the household's Wi-Fi changes.

    A short press of the device's button opens its window for its owner only; the
    reconfigure flow opens the session with the owner secret it kept (no label) and moves the
    device to the café network. Ownership stays.
    """
    household_id = entry.data[CONF_HOUSEHOLD_ID]
    await press_button(hass, device)
    onboarded = device_entry(hass, device.device_id)
    assert onboarded is not None
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_RECONFIGURE, "entry_id": onboarded.entry_id}
    )
    assert result["step_id"] == "device_select", result
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"host": LOOPBACK, "port": device.port}
    )
    result = await submit_wifi(hass, result, passphrase=None, ssid="Cafe")
    assert result["type"] is FlowResultType.ABORT, result
    assert result["reason"] == "wifi_changed"
    status = await asyncio.to_thread(device.status)
    assert (status["phase"], status["household_id"]) == ("online", household_id)
    assert status["wifi_ssid"] == "Cafe"


async def press_button(hass: HomeAssistant, device: Device) -> None:
    """SIGUSR1 is the agent's button; wait until its window admits a session."""
    assert device.process is not None
    os.kill(device.process.popen.pid, signal.SIGUSR1)
    client = DeviceClient(LOOPBACK, device.port, session=async_get_clientsession(hass))
    for _ in range(600):
        if (await client.fetch_info()).window == "open":
            return
        await asyncio.sleep(0.05)
    pytest.fail("the device's window did not open after the button press")
