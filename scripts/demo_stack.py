"""The demo stack: Mosquitto, the account service, simulated devices and Home Assistant.

``scripts/develop`` runs this with the checkout's ``.venv`` Python after ``scripts/setup``::

    .venv/bin/python scripts/demo_stack.py [--state-dir DIR] [--ha-config DIR] [--ha-port N]
                                           [--devices N] [--fresh] [--no-ha]
                                           [--wifi-scenario FILE] [--control]

``--wifi-scenario`` replaces the simulated radio environment; ``--control`` lets a fault test
stop, kill and restart the broker or the account service through stdin (``demo/control.py``).

What runs (each a child process with its log under ``<state>/logs/``):

1. Mosquitto with dynamic security (``cloud_relay.broker.local``), on a free loopback port;
2. the account service (``python -m cloud_relay serve``, SQLite), after creating a service
   administrator, the demo device model and importing every device's factory record;
   announced over zeroconf (``_iob-relay._tcp``) on 127.0.0.1 only;
3. N devices (``python -m device_firmware run --simulate-network``), each with its own data
   directory and identity, on its own port, advertising over zeroconf on 127.0.0.1 only;
4. Home Assistant (``python -m homeassistant``) with the integration linked into its config
   directory, a demo owner and a second user, and onboarding marked done.

As root everything runs in a private network namespace and the ports are published on the
host's 127.0.0.1 (``demo/isolation.py``). The state is kept between runs (``--fresh`` wipes it);
a second run reuses identities, accounts and ports. SIGINT or SIGTERM stops everything in
reverse order, also when the start fails halfway. When the stack is up, one line
``IOB-DEMO-READY {json}`` follows the human summary (tests read it).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, TextIO

import segno
from demo.control import ANSWER_PREFIX as CONTROL_PREFIX
from demo.control import ControlChannel, ControlError
from demo.control import parse as parse_command
from demo.ha_config import write_config
from demo.isolation import Forwarder, can_isolate, enter_private_network, listen
from demo.names import MAX_DEVICES, device_name
from demo.processes import Child, Signals, StackError, StopRequestedError, Supervisor

from cloud_relay.broker.local import (
    MosquittoError,
    MosquittoProcess,
    find_mosquitto,
    unreachable_by_broker,
)
from device_firmware.config import DeviceConfig
from device_firmware.errors import DeviceError
from device_firmware.factory import ProvisionedDevice

REPO: Final = Path(__file__).resolve().parent.parent
PYTHON: Final = sys.executable
READY_PREFIX: Final = "IOB-DEMO-READY "
LOOPBACK: Final = "127.0.0.1"
MARKER: Final = ".iob-demo"
DEVICE_MODEL: Final = "iob-demo"
BROKER_ADMIN: Final = "iob-admin"
#: What factory-provision appends each device's registry record to.
RECORDS_FILE: Final = "manufacturing-records.jsonl"
#: Where the broker's data goes when its user cannot reach the state directory (a clone in
#: root's 0700 home): one ``broker-*`` directory per state directory, linked from its
#: ``mosquitto`` entry. Not /var/lib/iot-onboard: that is a device agent's 0700 data directory.
DEMO_BROKER_ROOT: Final = Path("/var/lib/iot-onboard-demo")
#: Where each device agent writes its pid and bound ports (``run --port-file``).
PORT_FILE: Final = "agent-ports.json"
HA_START_TIMEOUT: Final = 180.0
SERVICE_START_TIMEOUT: Final = 60.0
HA_STOP_TIMEOUT: Final = 30.0


@dataclass(frozen=True, slots=True)
class HaUser:
    """A Home Assistant login the demo creates."""

    username: str
    password: str
    name: str
    admin: bool


@dataclass(frozen=True, slots=True)
class Account:
    """An account on the account service."""

    email: str
    password: str
    admin: bool


@dataclass(frozen=True, slots=True)
class WifiNetwork:
    """A network in the simulated radio environment."""

    ssid: str
    passphrase: str
    strength: int


HA_USERS: Final = (
    HaUser("demo", "demo-owner-pass", "Demo Owner", admin=True),
    HaUser("guest", "demo-guest-pass", "Guest", admin=False),
)
#: Signs in from the integration's config flow (sign-up through the service's API).
DEMO_ACCOUNT: Final = Account("owner@demo.invalid", "demo-account-pass", admin=False)
#: The maker: service administrator, imports the factory records.
MAKER_ACCOUNT: Final = Account("maker@demo.invalid", "demo-maker-pass", admin=True)
HOME_WIFI: Final = WifiNetwork("Home", "correct horse battery staple", 80)
NEIGHBOUR_WIFI: Final = WifiNetwork("Neighbour", "not-your-network-2024", 35)


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """What the summary says about one device."""

    index: int
    device_id: str
    #: Its name (the agent's ``name`` setting): what Home Assistant offers and names it by.
    name: str
    port: int
    pid: int
    manual_code: str
    qr_payload: str
    label_png: str
    label_dir: str
    #: The agent's data directory (``--data-dir`` of ``python -m device_firmware status``).
    data_dir: str

    @property
    def url(self) -> str:
        """The device's LAN provisioning server."""
        return f"http://{LOOPBACK}:{self.port}"


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the stack keeps its state."""

    state: Path
    ha_config: Path

    @property
    def logs(self) -> Path:
        """One log per process; ``setup.log`` for one-shot commands."""
        return self.state / "logs"

    @property
    def stack_file(self) -> Path:
        """Ports and the broker's admin password, reused by the next run."""
        return self.state / "stack.json"

    @property
    def mosquitto(self) -> Path:
        """The broker's config, dynsec JSON and persistence."""
        return self.state / "mosquitto"

    @property
    def relay(self) -> Path:
        """relay.toml, secret.key, relay.db, the imported factory records."""
        return self.state / "relay"

    @property
    def scenario(self) -> Path:
        """The simulated Wi-Fi every device sees."""
        return self.state / "wifi-scenario.toml"

    def device(self, index: int) -> Path:
        """device.toml, ``data/`` (identity, state) and ``label/`` of device ``index``."""
        return self.state / "devices" / str(index)


def _display(path: Path) -> str:
    """A path relative to the working directory when it is below it."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def _toml_string(value: str | Path) -> str:
    # JSON's string escapes are valid TOML basic-string escapes.
    return json.dumps(str(value))


def _http(
    url: str, *, body: dict[str, Any] | None = None, timeout: float = 2.0
) -> tuple[int, bytes] | None:
    """(status, body) of one request, or None when nothing answers; never through a proxy."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(  # noqa: S310 - our own http://127.0.0.1 URLs
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    try:
        with opener.open(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (urllib.error.URLError, OSError, TimeoutError):
        return None


def _read_port_file(path: Path, pid: int) -> int | None:
    """The LAN port an agent wrote to its port file, if the file is that process's."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("pid") != pid:
        return None  # an earlier run's file
    port = document.get("lan")
    return port if isinstance(port, int) else None


def _device_answers(port: int) -> bool:
    answer = _http(f"http://{LOOPBACK}:{port}/iob/v1/info")
    return answer is not None and answer[0] == 200  # noqa: PLR2004 - HTTP OK


class Stack:
    """Starts the demo stack, watches it and stops it."""

    def __init__(self, args: argparse.Namespace, out: TextIO, signals: Signals) -> None:
        """Nothing starts until :meth:`start`."""
        self.args = args
        self.out = out
        self.signals = signals
        self.layout = Layout(args.state_dir, args.ha_config)
        self.isolated = can_isolate() and not args.no_isolation
        self.with_ha = not args.no_ha
        self.supervisor: Supervisor | None = None
        self.broker: MosquittoProcess | None = None
        self.forwarder: Forwarder | None = None
        self.state: dict[str, Any] = {}
        self._lock: int | None = None
        self.ports: dict[str, int] = {}
        self.pids: dict[str, int] = {}
        self.devices: list[DeviceFacts] = []
        self.started = time.monotonic()
        self.timings: dict[str, float] = {}
        #: ``--control``: commands on stdin (scripts/demo/control.py); parts they stopped.
        self.control = ControlChannel(sys.stdin.fileno()) if args.control else None
        self.down: set[str] = set()

    def say(self, text: str) -> None:
        """One progress line."""
        self.out.write(f"{text}\n")
        self.out.flush()

    def _lap(self, name: str) -> None:
        self.timings[name] = round(time.monotonic() - self.started, 2)

    # --- start --------------------------------------------------------------------------

    def start(self) -> dict[str, Any]:
        """Bring everything up; return the ready document."""
        self._prepare_dirs()
        self._preflight()
        self.state = self._load_state()
        self._take_ports()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.supervisor = supervisor = Supervisor(self.layout.logs, self.signals, env, self.out)
        users_step = self._start_ha_users() if self.with_ha else None
        self._write_scenario()
        self._start_broker(self.state["broker_admin_password"])
        self._provision(supervisor)
        self._start_relay(supervisor)
        self._lap("account service up")
        agents = [self._start_device(supervisor, index) for index in self._device_range()]
        ha = self._start_ha(supervisor, users_step) if self.with_ha else None
        for index, agent in zip(self._device_range(), agents, strict=True):
            self.wait_for_device(supervisor, index, agent, timeout=SERVICE_START_TIMEOUT)
            self.devices.append(self._device_facts(index, agent))
        self._lap("devices up")
        self._ensure_demo_account()
        if ha is not None:
            supervisor.wait_until(
                ha, self._ha_answers, timeout=HA_START_TIMEOUT, what="answer on /auth/providers"
            )
            self._lap("Home Assistant up")
        document = self._ready_document()
        self._print_summary(document)
        self.out.write(READY_PREFIX + json.dumps(document, sort_keys=True) + "\n")
        self.out.flush()
        return document

    def _device_range(self) -> range:
        return range(1, self.args.devices + 1)

    def _prepare_dirs(self) -> None:
        """Wipe (``--fresh``) and create the state directories, never someone else's."""
        self._check_not_running()
        for directory in (self.layout.state, self.layout.ha_config):
            if not self.with_ha and directory == self.layout.ha_config:
                continue
            owned = (directory / MARKER).exists()
            if directory.exists() and any(directory.iterdir()) and not owned:
                raise StackError(
                    f"{directory} exists and was not made by the demo stack (no {MARKER} in it). "
                    "Move it away, or choose another place with --state-dir / --ha-config."
                )
            if self.args.fresh and owned:
                if directory == self.layout.state:
                    self._remove_moved_broker_dir()
                shutil.rmtree(directory)
            directory.mkdir(parents=True, exist_ok=True)
            (directory / MARKER).write_text(
                "Made by scripts/develop (the demo stack); --fresh deletes this directory.\n",
                encoding="utf-8",
            )
        # The broker drops root: it must be able to reach its directory through the state's.
        self.layout.state.chmod(0o755)
        self.layout.logs.mkdir(exist_ok=True)
        self._lock = self._check_not_running(take=True)

    def _check_not_running(self, *, take: bool = False) -> int | None:
        """One stack per state directory: the lock file holds the running one's pid."""
        path = self.layout.state / "stack.lock"
        if not take and not path.exists():
            return None
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(descriptor, 32).decode(errors="replace").strip()
            os.close(descriptor)
            raise StackError(
                f"another demo stack (pid {pid or '?'}) runs on {self.layout.state}: stop it "
                "first (Ctrl-C in its terminal), or use another --state-dir"
            ) from None
        if not take:
            os.close(descriptor)
            return None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        return descriptor

    def _preflight(self) -> None:
        """Fail before starting anything when a piece is missing, with the next step."""
        try:
            find_mosquitto()
        except MosquittoError as err:
            raise StackError(str(err)) from err
        if self.with_ha:
            for module, what in (
                ("homeassistant", "Home Assistant"),
                ("hass_frontend", "Home Assistant's frontend (home-assistant-frontend)"),
            ):
                if importlib.util.find_spec(module) is None:
                    raise StackError(
                        f"{what} is not installed in {sys.prefix}. Run scripts/setup (the demo "
                        "never installs packages while it runs)."
                    )

    def _load_state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self.layout.stack_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            state = {}
        except ValueError as err:
            raise StackError(
                f"{self.layout.stack_file} is not valid JSON ({err}); start over with --fresh"
            ) from err
        state.setdefault("broker_admin_password", secrets.token_urlsafe(24))
        state.setdefault("ports", {})
        return state

    def _save_state(self) -> None:
        path = self.layout.stack_file
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(self.state, handle, indent=2, sort_keys=True)

    def _take_ports(self) -> None:
        """Choose the ports (the last run's where free); as root, publish them and unshare."""
        saved: dict[str, int] = self.state["ports"]
        wanted: dict[str, int | None] = {
            "relay": saved.get("relay"),
            "broker": saved.get("broker"),
        }
        for index in self._device_range():
            wanted[f"device-{index}"] = saved.get(f"device-{index}")
        if self.with_ha:
            wanted["homeassistant"] = self.args.ha_port
        bound = self._bind_all(wanted)
        self.ports = {name: int(sock.getsockname()[1]) for name, sock in bound.items()}
        self.state["ports"] = {
            **saved,
            **{name: port for name, port in self.ports.items() if name != "homeassistant"},
        }
        self._save_state()
        if not self.isolated:
            # Released for the services themselves, which bind them in a moment.
            for sock in bound.values():
                sock.close()
            reason = "--no-isolation" if can_isolate() else "not root"
            self.say(
                f"warning: {reason}, so no private network namespace. Every service listens on "
                f"{LOOPBACK} only and the devices advertise on {LOOPBACK} only, but Home "
                "Assistant's zeroconf may send and answer mDNS on this machine's real interfaces."
            )
            return
        # The forwarder owns the sockets from here on (its stop() closes them).
        self.forwarder = Forwarder(list(bound.values()))
        enter_private_network()
        self.forwarder.start()
        self.say(
            "Isolated: the stack runs in a private network namespace; its ports are "
            f"published on the host's {LOOPBACK} under the same numbers."
        )

    def _bind_all(self, wanted: dict[str, int | None]) -> dict[str, socket.socket]:
        bound: dict[str, socket.socket] = {}
        try:
            for name, preferred in wanted.items():
                bound[name] = self._bind(name, preferred)
        except BaseException:
            for sock in bound.values():
                sock.close()
            raise
        return bound

    def _bind(self, name: str, preferred: int | None) -> socket.socket:
        """A listening socket on ``preferred`` if it is free, else on any free port."""
        sock = listen(preferred) if preferred is not None else None
        if sock is None and name == "homeassistant":
            raise StackError(
                f"port {preferred} on {LOOPBACK} is in use (another Home Assistant?). "
                "Stop it, or choose another port with --ha-port."
            )
        if sock is None:
            if preferred is not None:
                self.say(f"note: port {preferred} ({name}) is taken now; using another")
            sock = listen(0)
        if sock is None:  # pragma: no cover - port 0 always binds
            raise StackError(f"no free port on {LOOPBACK}")
        return sock

    def _write_scenario(self) -> None:
        if self.args.wifi_scenario is not None:
            # Another radio environment (a fault test's slow network): copied as it is.
            try:
                text = self.args.wifi_scenario.read_text(encoding="utf-8")
            except OSError as err:
                raise StackError(f"--wifi-scenario: cannot read it: {err}") from err
            self.layout.scenario.write_text(text, encoding="utf-8")
            return
        lines = ["# The simulated radio environment of every demo device (scripts/develop)."]
        for network in (HOME_WIFI, NEIGHBOUR_WIFI):
            lines += [
                "[[networks]]",
                f"ssid = {_toml_string(network.ssid)}",
                f"passphrase = {_toml_string(network.passphrase)}",
                f"strength = {network.strength}",
            ]
            if network is HOME_WIFI:
                # The simulated router's WPS button counts as pressed: "Join with the router's
                # WPS button" works in the demo as with a real router whose button was pressed.
                lines.append("wps_pressed = true")
        self.layout.scenario.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _broker_dir(self) -> Path:
        """The broker's data directory: in the state, or where the broker's user reaches it.

        As root, Mosquitto drops to the ``mosquitto`` user, which cannot get through a parent
        such as root's 0700 home to ``<state>/mosquitto``. Then the data lives in a directory
        of its own under :data:`DEMO_BROKER_ROOT` and ``<state>/mosquitto`` is a link to it, so
        the next run finds it again and ``--fresh`` removes it with the state.
        """
        place = self.layout.mosquitto
        if place.is_symlink():  # moved out by an earlier run
            target = place.resolve()
            if target.is_dir() and unreachable_by_broker(target) is None:
                self.say(f"Broker data: {target} (linked from {_display(place)})")
                return target
            place.unlink()
        reason = unreachable_by_broker(place)
        if reason is None:
            return place
        DEMO_BROKER_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
        DEMO_BROKER_ROOT.chmod(0o755)
        if (why := unreachable_by_broker(DEMO_BROKER_ROOT / "broker")) is not None:
            raise StackError(
                f"Mosquitto did not start: {reason}, and the demo's other place for it is not "
                f"reachable either: {why}. Clone the repository elsewhere (for example under "
                "/opt or /srv), or pass --state-dir with a directory outside it."
            )
        target = Path(tempfile.mkdtemp(prefix="broker-", dir=DEMO_BROKER_ROOT))
        if place.is_dir():  # an earlier run's broker data (the checkout has moved since)
            for entry in place.iterdir():
                shutil.move(entry, target / entry.name)
            place.rmdir()
        place.symlink_to(target)
        self.say(
            f"note: {reason}, so the broker's data is in {target} instead (linked from "
            f"{_display(place)}; --fresh removes it with the rest of the state)."
        )
        return target

    def _remove_moved_broker_dir(self) -> None:
        """``--fresh``: the broker's data that :meth:`_broker_dir` put outside the state."""
        place = self.layout.mosquitto
        if place.is_symlink():
            target = place.resolve()
            if target.parent == DEMO_BROKER_ROOT:  # never anything the demo did not make
                shutil.rmtree(target, ignore_errors=True)

    def _start_broker(self, admin_password: str) -> None:
        self.broker = MosquittoProcess(
            self._broker_dir(),
            port=self.ports["broker"],
            admin_username=BROKER_ADMIN,
            admin_password=admin_password,
        )
        try:
            with self.signals.deferred():
                broker = self.broker.start()
        except MosquittoError as err:
            raise StackError(f"Mosquitto did not start: {err}") from err
        self.pids["mosquitto"] = broker.pid
        self._lap("broker up")

    # --- account service and devices ----------------------------------------------------

    def _write_relay_config(self) -> Path:
        relay = self.layout.relay
        relay.mkdir(parents=True, exist_ok=True)
        path = relay / "relay.toml"
        if self.broker is None:  # pragma: no cover - started first
            raise StackError("the broker is not running")
        text = f"""\
# Written by scripts/develop (the demo stack) on every start; see docs/relay.md.
database_url = {_toml_string("sqlite:///" + str(relay / "relay.db"))}
secret_key_file = "secret.key"

[http]
host = "{LOOPBACK}"
port = {self.ports["relay"]}

[broker]
host = "{LOOPBACK}"
port = {self.ports["broker"]}
username = "{BROKER_ADMIN}"
password = {_toml_string(self.broker.admin_password)}
# Devices and Home Assistant connect to the same local broker, without TLS (loopback only).
public_host = "{LOOPBACK}"
public_port = {self.ports["broker"]}
public_tls = false
"""
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        return path

    def _provision(self, supervisor: Supervisor) -> None:
        """Factory identities, the relay's key, admin account, model and registry."""
        config = self._write_relay_config()
        relay_cli = [PYTHON, "-m", "cloud_relay", "--config", str(config)]
        bootstrapped = bool(self.state.get("relay_bootstrapped"))
        if not bootstrapped:
            # A database from a start that was interrupted before its accounts existed.
            for suffix in ("", "-wal", "-shm"):
                (self.layout.relay / f"relay.db{suffix}").unlink(missing_ok=True)
        steps: list[Child | None] = [
            supervisor.start_step("relay-init", "cloud_relay init", [*relay_cli, "init"])
        ]
        steps += [self._start_factory(supervisor, index) for index in self._device_range()]
        supervisor.wait_all([step for step in steps if step is not None], SERVICE_START_TIMEOUT)
        self._lap("identities made")
        if not bootstrapped:
            supervisor.run(
                "relay-admin",
                "cloud_relay admin create-account",
                [
                    *relay_cli,
                    "admin",
                    "create-account",
                    MAKER_ACCOUNT.email,
                    "--admin",
                    "--password-stdin",
                ],
                stdin_text=MAKER_ACCOUNT.password + "\n",
            )
            supervisor.run(
                "relay-model",
                "cloud_relay admin set-model",
                [
                    *relay_cli,
                    "admin",
                    "set-model",
                    DEVICE_MODEL,
                    "--name",
                    "Demo sensor",
                    "--manufacturer",
                    "IoT Onboard demo",
                ],
            )
            self.state["relay_bootstrapped"] = True
            self._save_state()
        if self.args.devices:
            records = self.layout.relay / "factory-records.jsonl"
            records.write_text(
                "".join(
                    (self.layout.device(i) / "label" / RECORDS_FILE).read_text(encoding="utf-8")
                    for i in self._device_range()
                ),
                encoding="utf-8",
            )
            # Every start: a re-import of the same record is a no-op; new devices are added.
            supervisor.run(
                "relay-import",
                "cloud_relay registry import",
                [*relay_cli, "registry", "import", str(records)],
            )
        self._lap("registry imported")

    def _start_factory(self, supervisor: Supervisor, index: int) -> Child | None:
        """factory-provision device ``index`` unless an earlier start did it completely."""
        directory = self.layout.device(index)
        directory.mkdir(parents=True, exist_ok=True)
        device_toml = directory / "device.toml"
        device_toml.write_text(
            "# Written by scripts/develop (the demo stack); the rest is on the command line.\n"
            f"data_dir = {_toml_string(directory / 'data')}\n"
            # Home Assistant's device name, so the entity ids are the same in every demo.
            f"name = {_toml_string(device_name(index))}\n",
            encoding="utf-8",
        )
        data, label = directory / "data", directory / "label"
        if (data / "identity.json").exists() and (label / RECORDS_FILE).exists():
            return None
        # Half made by an interrupted start: nothing of it was imported or shown yet.
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(label, ignore_errors=True)
        return supervisor.start_step(
            f"factory-{index}",
            f"factory-provision of device {index}",
            [
                PYTHON,
                "-m",
                "device_firmware",
                "--config",
                str(device_toml),
                "factory-provision",
                "--model",
                DEVICE_MODEL,
                "--output",
                str(label),
            ],
        )

    def _start_relay(self, supervisor: Supervisor) -> Child:
        """The account service (also its restart by ``--control``: same port, same data)."""
        relay = supervisor.spawn(
            "relay",
            "the account service",
            [
                PYTHON,
                "-m",
                "cloud_relay",
                "--config",
                str(self.layout.relay / "relay.toml"),
                "serve",
                # HA's zeroconf offers it: the flow's URL field is filled, never typed.
                "--announce",
                LOOPBACK,
            ],
            cwd=self.layout.relay,
        )
        self.pids["relay"] = relay.pid
        supervisor.wait_until(
            relay, self._relay_healthy, timeout=SERVICE_START_TIMEOUT, what="answer /v1/health"
        )
        return relay

    def _relay_healthy(self) -> bool:
        answer = _http(f"http://{LOOPBACK}:{self.ports['relay']}/v1/health")
        return answer is not None and answer[0] == 200  # noqa: PLR2004 - HTTP OK

    def _ensure_demo_account(self) -> None:
        """The account a person signs in with from the integration's config flow."""
        answer = _http(
            f"http://{LOOPBACK}:{self.ports['relay']}/v1/auth/sign-up",
            body={
                "email": DEMO_ACCOUNT.email,
                "password": DEMO_ACCOUNT.password,
                "display_name": "Demo household owner",
            },
            timeout=30,
        )
        # 201 created; 409 it exists from an earlier run.
        if answer is None or answer[0] not in {201, 409}:
            raise StackError(
                f"creating the demo account on the account service failed ({answer}); see "
                f"{_display(self.layout.logs / 'relay.log')}"
            )

    def _start_device(self, supervisor: Supervisor, index: int) -> Child:
        """Run device ``index`` on its entry in ``self.ports``.

        Port 0 means any free port: the agent names the port it bound in its port file
        (:meth:`wait_for_device` reads it).
        """
        directory = self.layout.device(index)
        port = self.ports[f"device-{index}"]
        port_file = directory / PORT_FILE
        port_file.unlink(missing_ok=True)
        child = supervisor.spawn(
            f"device-{index}",
            f"device {index}",
            [
                PYTHON,
                "-m",
                "device_firmware",
                "--config",
                str(directory / "device.toml"),
                "run",
                "--simulate-network",
                str(self.layout.scenario),
                "--listen",
                LOOPBACK,
                "--port",
                str(port),
                "--port-file",
                str(port_file),
                "--advertise",
                LOOPBACK,
                "--no-hotspot",
                # No radio in the demo: BLE would reach for the machine's real BlueZ.
                "--no-ble",
                "--allow-insecure-http",
            ],
            cwd=directory,
        )
        self.pids[f"device-{index}"] = child.pid
        return child

    def wait_for_device(
        self, supervisor: Supervisor, index: int, agent: Child, *, timeout: float
    ) -> int:
        """Wait until device ``index`` wrote its port file and answers there; return the port.

        The port is the one the agent bound (read back, never guessed beforehand), so agents
        started together on port 0 cannot end up sharing one.
        """
        port_file = self.layout.device(index) / PORT_FILE
        ports: dict[str, int] = {}

        def port_written() -> bool:
            written = _read_port_file(port_file, agent.pid)
            if written is not None:
                ports["lan"] = written
            return written is not None

        supervisor.wait_until(agent, port_written, timeout=timeout, what=f"write {port_file}")
        port = self.ports[f"device-{index}"] = ports["lan"]
        supervisor.wait_until(
            agent,
            functools.partial(_device_answers, port),
            timeout=timeout,
            what="answer /iob/v1/info",
        )
        return port

    def _device_facts(self, index: int, agent: Child) -> DeviceFacts:
        """Id, codes and label of a provisioned device (read from its data directory)."""
        directory = self.layout.device(index)
        try:
            device = ProvisionedDevice.load(DeviceConfig(data_dir=directory / "data"))
        except DeviceError as err:
            raise StackError(f"device {index}: {err}") from err
        device_id = device.info.device_id
        return DeviceFacts(
            index=index,
            device_id=device_id,
            name=device_name(index),
            port=self.ports[f"device-{index}"],
            pid=agent.pid,
            manual_code=device.setup_code.manual_code().format(),
            qr_payload=device.setup_code.qr_payload(device.identity.fingerprint).format(),
            label_png=str(directory / "label" / f"{device_id}-qr.png"),
            label_dir=str(directory / "label"),
            data_dir=str(directory / "data"),
        )

    # --- Home Assistant -------------------------------------------------------------------

    def _start_ha_users(self) -> Child:
        """Create the Home Assistant users (runs while the rest starts: bcrypt is slow)."""
        if self.supervisor is None:  # pragma: no cover - made first
            raise StackError("no supervisor")
        self.layout.ha_config.mkdir(parents=True, exist_ok=True)
        return self.supervisor.start_step(
            "ha-users",
            "Home Assistant user creation",
            [PYTHON, str(REPO / "scripts" / "demo" / "ha_users.py"), str(self.layout.ha_config)],
            stdin_text=json.dumps([asdict(user) for user in HA_USERS]),
        )

    def _write_ha_config(self) -> None:
        config = self.layout.ha_config
        write_config(config, http_host=LOOPBACK, http_port=self.ports["homeassistant"])
        components = config / "custom_components"
        components.mkdir(exist_ok=True)
        link = components / "iot_onboard"
        target = REPO / "custom_components" / "iot_onboard"
        if not (link.is_symlink() and link.resolve() == target.resolve()):
            if link.is_symlink() or link.is_file():
                link.unlink()
            elif link.exists():
                shutil.rmtree(link)
            link.symlink_to(target, target_is_directory=True)
        self._write_onboarding()

    def _write_onboarding(self) -> None:
        """Onboarding done, so the first page is the login (not the onboarding wizard)."""
        onboarding = self.layout.ha_config / ".storage" / "onboarding"
        if onboarding.exists():
            return
        onboarding.parent.mkdir(parents=True, exist_ok=True)
        onboarding.write_text(
            json.dumps(
                {
                    "version": 4,
                    "minor_version": 1,
                    "key": "onboarding",
                    "data": {"done": ["user", "core_config", "analytics", "integration"]},
                },
                indent=2,
            ),
            encoding="utf-8",
        )

    def _start_ha(self, supervisor: Supervisor, users_step: Child | None) -> Child:
        if users_step is not None:
            supervisor.wait_all([users_step], timeout=SERVICE_START_TIMEOUT)
        self._write_ha_config()
        child = supervisor.spawn(
            "homeassistant",
            "Home Assistant",
            # --skip-pip: everything comes from scripts/setup; nothing is installed at run time.
            [
                PYTHON,
                "-m",
                "homeassistant",
                "--config",
                str(self.layout.ha_config),
                "--skip-pip",
                "--log-no-color",
            ],
            cwd=self.layout.ha_config,
            stop_timeout=HA_STOP_TIMEOUT,
        )
        self.pids["homeassistant"] = child.pid
        return child

    def _ha_answers(self) -> bool:
        # The login providers: HTTP and auth are up. Not /api/: its 401 without a token counts
        # as a failed login, which Home Assistant shows to the owner as a notification.
        answer = _http(f"http://{LOOPBACK}:{self.ports['homeassistant']}/auth/providers")
        return answer is not None and answer[0] == 200  # noqa: PLR2004 - HTTP OK

    # --- summary ----------------------------------------------------------------------------

    def _ready_document(self) -> dict[str, Any]:
        relay_url = f"http://{LOOPBACK}:{self.ports['relay']}"
        return {
            "isolated": self.isolated,
            "state_dir": str(self.layout.state),
            "ha_config": str(self.layout.ha_config) if self.with_ha else None,
            "logs": str(self.layout.logs),
            "homeassistant": {
                "url": f"http://{LOOPBACK}:{self.ports['homeassistant']}",
                "pid": self.pids["homeassistant"],
                "users": [
                    {
                        "username": u.username,
                        "password": u.password,
                        "name": u.name,
                        "admin": u.admin,
                    }
                    for u in HA_USERS
                ],
            }
            if self.with_ha
            else None,
            "account_service": {
                "url": relay_url,
                "pid": self.pids["relay"],
                "accounts": [asdict(DEMO_ACCOUNT), asdict(MAKER_ACCOUNT)],
            },
            "broker": {
                "host": LOOPBACK,
                "port": self.ports["broker"],
                "pid": self.pids["mosquitto"],
                "admin_username": BROKER_ADMIN,
                "admin_password": self.state["broker_admin_password"],
                "data_dir": str(self.broker.data_dir) if self.broker is not None else None,
            },
            "wifi": [asdict(HOME_WIFI), asdict(NEIGHBOUR_WIFI)],
            "devices": [{**asdict(device), "url": device.url} for device in self.devices],
            "pids": sorted(self.pids.values()),
            "published_ports": self.forwarder.ports if self.forwarder is not None else [],
            "timings": self.timings,
        }

    def _print_summary(self, document: dict[str, Any]) -> None:
        write = self.out.write
        took = time.monotonic() - self.started
        write(f"\nIoT Onboard demo stack is up ({took:.1f} s).\n\n")
        ha = document["homeassistant"]
        if ha is not None:
            write(f"  Home Assistant     {ha['url']}\n")
            for user in HA_USERS:
                role = "owner, administrator" if user.admin else "user"
                write(f"      {user.username} / {user.password}  ({role})\n")
        relay = document["account_service"]
        write(f"  Account service    {relay['url']}   (announced: the integration fills it in)\n")
        write(f"      {DEMO_ACCOUNT.email} / {DEMO_ACCOUNT.password}  (sign in from the flow)\n")
        write(f"      {MAKER_ACCOUNT.email} / {MAKER_ACCOUNT.password}  (service administrator)\n")
        write(f"  MQTT broker        {LOOPBACK}:{self.ports['broker']}  (dynamic security)\n")
        write(
            f'  Wi-Fi (simulated)  "{HOME_WIFI.ssid}", passphrase "{HOME_WIFI.passphrase}"; '
            f'"{NEIGHBOUR_WIFI.ssid}" is not yours\n'
        )
        write("\n  Devices (discovered by Home Assistant, or add one by hand: host 127.0.0.1)\n")
        tty = self.out.isatty()
        for device in self.devices:
            write(
                f"    {device.index}. {device.device_id}  port {device.port}  "
                f"setup code {device.manual_code}\n"
                f"       QR {device.qr_payload}\n"
                f"       label {_display(Path(device.label_png))}\n"
            )
            if tty:
                segno.make_qr(device.qr_payload, error="m").terminal(out=self.out, compact=True)
        write(
            f"\n  Logs   {_display(self.layout.logs)}/"
            + (f"  (and {_display(self.layout.ha_config)}/home-assistant.log)" if ha else "")
            + f"\n  State  {_display(self.layout.state)}"
            + (f", {_display(self.layout.ha_config)}" if ha else "")
            + "  (kept; --fresh starts over)\n"
            "  Stop   Ctrl-C (everything stops)\n\n"
        )
        self.out.flush()

    # --- run and stop -------------------------------------------------------------------

    def watch(self) -> None:
        """Until a signal: fail if any part of the stack stops on its own."""
        while True:
            if self.supervisor is not None:
                self.supervisor.check("while the stack was running")
            if self.broker is not None and not self.broker.running and "broker" not in self.down:
                raise StackError(
                    "Mosquitto stopped while the stack was running:\n" + self.broker.log_tail()
                )
            if self.forwarder is not None and not self.forwarder.alive():
                raise StackError("the port forwarder stopped while the stack was running")
            if self.control is None or self.control.closed:
                time.sleep(0.5)
                continue
            for line in self.control.wait(0.5):
                self._answer(self._run_command(line))

    def _answer(self, document: dict[str, Any]) -> None:
        self.out.write(CONTROL_PREFIX + json.dumps(document, sort_keys=True) + "\n")
        self.out.flush()

    def _run_command(self, line: str) -> dict[str, Any]:
        """One ``--control`` command: stop, kill or start the broker or the account service."""
        try:
            command = parse_command(line)
        except ControlError as err:
            return {"ok": False, "error": str(err), "line": line}
        answer: dict[str, Any] = {"ok": True, "op": command.op, "part": command.part}
        try:
            if command.op == "start":
                answer["pid"] = self._restart_part(command.part)
            else:
                answer["pid"] = self._stop_part(command.part, kill=command.op == "kill")
        except (StackError, MosquittoError) as err:
            return {**answer, "ok": False, "error": str(err)}
        return answer

    def _stop_part(self, part: str, *, kill: bool) -> int | None:
        """Stop a part by its pid (SIGTERM and wait, or SIGKILL); the watch then ignores it."""
        if part in self.down:
            raise StackError(f"{part} is already stopped")
        self.down.add(part)
        if part == "broker":
            if self.broker is None:  # pragma: no cover - started first
                raise StackError("the broker is not running")
            pid = self.broker.pid
            if kill and pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.broker.stop()
            return pid
        if self.supervisor is None:  # pragma: no cover - made first
            raise StackError("no supervisor")
        child = next(c for c in self.supervisor.children if c.key == part)
        self.supervisor.children.remove(child)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            child.process.wait(timeout=child.stop_timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.process.wait()
        return child.pid

    def _restart_part(self, part: str) -> int:
        """Start a stopped part again on its port with its data; its new pid."""
        if part not in self.down:
            raise StackError(f"{part} is running")
        if part == "broker":
            if self.broker is None:  # pragma: no cover - started first
                raise StackError("the broker was never started")
            with self.signals.deferred():
                pid = self.broker.start().pid
            self.pids["mosquitto"] = pid
        else:
            if self.supervisor is None:  # pragma: no cover - made first
                raise StackError("no supervisor")
            pid = self._start_relay(self.supervisor).pid
        self.down.discard(part)
        return pid

    def stop(self) -> None:
        """Stop everything that was started, newest first."""
        if self.supervisor is not None:
            self.supervisor.stop_all()
        if self.broker is not None:
            pid = self.broker.pid
            started = time.monotonic()
            self.broker.stop()
            if pid is not None:
                self.say(f"  stopped Mosquitto (pid {pid}) in {time.monotonic() - started:.1f} s")
        if self.forwarder is not None:
            self.forwarder.stop()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/develop",
        description="The demo stack: Mosquitto, the account service, simulated devices and "
        "Home Assistant. Ctrl-C stops everything.",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="state of broker, account service and devices (default: .demo in the checkout)",
    )
    parser.add_argument(
        "--ha-config",
        type=Path,
        help="Home Assistant's config directory (default: config/ in the checkout, or "
        "STATE_DIR/ha-config with --state-dir)",
    )
    parser.add_argument(
        "--ha-port",
        type=int,
        default=8123,
        help="Home Assistant's port (8123; 0: any free port, bound at once and named in the "
        "ready line, as the tests use it)",
    )
    parser.add_argument(
        "--devices", type=int, default=3, help=f"simulated devices, 0-{MAX_DEVICES} (3)"
    )
    parser.add_argument("--fresh", action="store_true", help="wipe the state and start over")
    parser.add_argument("--no-ha", action="store_true", help="everything but Home Assistant")
    parser.add_argument(
        "--wifi-scenario",
        type=Path,
        help="the devices' simulated Wi-Fi (docs/device.md) instead of the built-in Home and "
        "Neighbour networks",
    )
    parser.add_argument(
        "--control",
        action="store_true",
        help="read commands from stdin while running: stop, kill or restart the broker or the "
        "account service (fault tests; see scripts/demo/control.py)",
    )
    parser.add_argument(
        "--no-isolation",
        action="store_true",
        help="as root, too: no private network namespace (a container that forbids it); "
        "everything still binds 127.0.0.1 only",
    )
    return parser


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = _parser()
    args = parser.parse_args(argv)
    if not 0 <= args.devices <= MAX_DEVICES:
        parser.error(f"--devices must be 0-{MAX_DEVICES}")
    if not 0 <= args.ha_port <= 65535:  # noqa: PLR2004 - the port range
        parser.error("--ha-port must be 0-65535 (0: any free port)")
    if args.ha_config is None:
        args.ha_config = REPO / "config" if args.state_dir is None else args.state_dir / "ha-config"
    if args.state_dir is None:
        args.state_dir = REPO / ".demo"
    args.state_dir = args.state_dir.resolve()
    args.ha_config = args.ha_config.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    """Start the stack, wait for a signal, stop everything; 0 after a requested stop."""
    args = _parse(argv)
    out = sys.stdout
    signals = Signals()
    signals.install()
    stack = Stack(args, out, signals)
    code = 1
    try:
        stack.start()
        stack.watch()
    except StopRequestedError as stop:
        out.write(f"\n{stop}: stopping the demo stack\n")
        code = 0
    except StackError as err:
        sys.stderr.write(f"\nerror: {err}\n")
        sys.stderr.flush()
        out.write("Stopping what was started\n")
    finally:
        signals.stopping()
        stack.stop()
    out.write("Everything is stopped.\n" if code == 0 else "Stopped; the demo stack failed.\n")
    out.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
