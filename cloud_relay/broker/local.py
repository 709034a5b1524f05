"""A local Mosquitto with dynamic security, for self-hosting on one machine and for development.

:class:`MosquittoProcess` supervises one broker on a loopback port with its own config and data
directory: it creates the dynamic-security JSON with an admin client (``mosquitto_ctrl dynsec
init``), writes the config, starts the broker, waits for its port and stops it by its pid.
:func:`dynsec_command` sends dynamic-security commands as that admin. The demo stack
(``scripts/develop``) and the test suite's broker fixtures (``tests/plugins/mosquitto.py``) use
both; the account service drives the broker through :mod:`cloud_relay.broker.mosquitto`.

No pytest, no ``iob_protocol``, no ``homeassistant`` here: the Home Assistant test tree imports
this module through the fixtures.

Running as root: the broker drops root to the ``mosquitto`` user (``nobody`` if that user does
not exist) right after reading its config, *before* it opens its log file, and the dynsec plugin
saves every change to its JSON file as that user. If the data directory is not writable by that
user the broker still answers every dynsec command with success, keeps the change in memory only
and prints ``Error saving Dynamic security plugin config`` to stderr; after a restart the change
is gone. So a temporary data directory is a fresh ``mkdtemp`` directory chowned to that user, a
given one is chowned too, and a data directory that user cannot reach (a parent directory it may
not search, such as a root-only 0700 home) is refused before the broker starts.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import aiomqtt

from .errors import BrokerError

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "DYNSEC_CONTROL_TOPIC",
    "DYNSEC_RESPONSE_TOPIC",
    "DynsecError",
    "MosquittoBroker",
    "MosquittoError",
    "MosquittoInstallation",
    "MosquittoNotInstalledError",
    "MosquittoProcess",
    "dynsec_command",
    "find_mosquitto",
    "unreachable_by_broker",
]

LOOPBACK = "127.0.0.1"
DYNSEC_CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
DYNSEC_RESPONSE_TOPIC = "$CONTROL/dynamic-security/v1/response"
SETUP_HINT = (
    "Install Debian's `mosquitto` package (2.0.11 or later: apt-get install mosquitto; in a "
    "checkout, run scripts/setup), which provides the broker, mosquitto_ctrl and "
    "mosquitto_dynamic_security.so."
)
_PLUGIN_NAME = "mosquitto_dynamic_security.so"
_PLUGIN_GLOBS = (
    f"/usr/lib/*/{_PLUGIN_NAME}",
    f"/usr/lib/mosquitto*/{_PLUGIN_NAME}",
    f"/usr/lib/mosquitto*/**/{_PLUGIN_NAME}",
    f"/usr/local/lib/{_PLUGIN_NAME}",
    f"/usr/local/lib/*/{_PLUGIN_NAME}",
)
#: Per-client queue beyond the in-flight window: 65536 messages covers ~10 000 devices' retained
#: messages for one hub; the byte cap keeps a stuck client from eating the broker's memory.
MAX_QUEUED_MESSAGES = 65536
MAX_QUEUED_BYTES = 64 * 1024 * 1024
_PORT_ATTEMPTS = 3
_LOG_TAIL_LINES = 40


class MosquittoError(BrokerError, RuntimeError):
    """The local broker could not be set up, started or driven (also a ``RuntimeError``)."""


class MosquittoNotInstalledError(MosquittoError):
    """The broker, mosquitto_ctrl or the dynamic-security plugin is missing."""


class DynsecError(MosquittoError):
    """A dynamic-security command failed or got no answer."""


@dataclass(frozen=True, kw_only=True)
class MosquittoInstallation:
    """Where the Mosquitto binaries and the dynamic-security plugin are."""

    broker: Path
    ctrl: Path
    plugin: Path


@dataclass(frozen=True, kw_only=True)
class MosquittoBroker:
    """A running broker: where it listens and its dynsec admin.

    ``pid`` is the broker's pid when this value was made; after ``MosquittoProcess.restart()``
    ask the process for a fresh ``broker``.
    """

    host: str = LOOPBACK
    port: int
    admin_username: str
    admin_password: str = field(repr=False)
    pid: int
    data_dir: Path
    config_path: Path
    log_path: Path
    dynsec_path: Path


def find_mosquitto() -> MosquittoInstallation:
    """Find the broker, ``mosquitto_ctrl`` and the dynamic-security plugin.

    Raises:
        MosquittoNotInstalledError: one of them is missing; the message says how to install it.
    """
    missing: list[str] = []
    broker = _which("mosquitto", ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"))
    if broker is None:
        missing.append("the `mosquitto` broker (not on PATH, not /usr/sbin/mosquitto)")
    ctrl = _which("mosquitto_ctrl", ("/usr/bin/mosquitto_ctrl", "/usr/local/bin/mosquitto_ctrl"))
    if ctrl is None:
        missing.append("`mosquitto_ctrl` (not on PATH)")
    plugin = next(
        (
            path
            for pattern in _PLUGIN_GLOBS
            for path in sorted(Path("/").glob(pattern.lstrip("/")))
            if path.is_file()
        ),
        None,
    )
    if plugin is None:
        missing.append(f"the dynamic-security plugin ({' or '.join(_PLUGIN_GLOBS)})")
    if broker is None or ctrl is None or plugin is None:
        raise MosquittoNotInstalledError(
            "Mosquitto with dynamic security is required but missing: "
            + "; ".join(missing)
            + ". "
            + SETUP_HINT
        )
    return MosquittoInstallation(broker=broker, ctrl=ctrl, plugin=plugin)


def _which(name: str, fallbacks: tuple[str, ...]) -> Path | None:
    found = shutil.which(name)
    if found is not None:
        return Path(found)
    return next((Path(p) for p in fallbacks if os.access(p, os.X_OK)), None)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _broker_user() -> pwd.struct_passwd | None:
    """The user a root-started broker switches to (None when not root: it stays as it is)."""
    if os.geteuid() != 0:
        return None
    for name in ("mosquitto", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise MosquittoError(
        "Running as root, Mosquitto switches to the `mosquitto` user (or `nobody`), "
        "but neither exists. " + SETUP_HINT
    )


def unreachable_by_broker(directory: Path) -> str | None:
    """Why a root-started broker could not reach ``directory`` once it drops root, or None.

    None when not running as root (the broker keeps this process's user). Only the owner and
    group bits of the existing parents are read (supplementary groups are not): a false
    refusal names the directory, and the alternative is a broker that saves nothing.
    """
    user = _broker_user()
    if user is None:
        return None
    parent = _blocking_parent(directory, user)
    return None if parent is None else _unreachable(directory, user, parent)


def _blocking_parent(directory: Path, user: pwd.struct_passwd) -> Path | None:
    """The first parent of ``directory`` that ``user`` may not search, if any."""
    for parent in directory.resolve().parents:
        try:
            mode = parent.stat()
        except FileNotFoundError:
            continue  # made later by root, with the umask's search bits
        searchable = (
            mode.st_mode & stat.S_IXOTH
            or (mode.st_uid == user.pw_uid and mode.st_mode & stat.S_IXUSR)
            or (mode.st_gid == user.pw_gid and mode.st_mode & stat.S_IXGRP)
        )
        if not searchable:
            return parent
    return None


def _unreachable(directory: Path, user: pwd.struct_passwd, parent: Path) -> str:
    return (
        f"Mosquitto runs as the `{user.pw_name}` user after it starts and cannot reach "
        f"{directory}: {parent} is not searchable by that user (mode "
        f"{stat.filemode(parent.stat().st_mode)})"
    )


def _check_reachable(directory: Path, user: pwd.struct_passwd) -> None:
    """Refuse a data directory the broker cannot reach once it has dropped root."""
    parent = _blocking_parent(directory, user)
    if parent is not None:
        raise MosquittoError(
            f"{_unreachable(directory, user, parent)}. Put the broker's data directory "
            "elsewhere (for example under /var/lib or /tmp), or allow it with "
            f"chmod o+x {parent}."
        )


_LIVE: set[MosquittoProcess] = set()


@atexit.register
def _stop_leftovers() -> None:  # pragma: no cover - only after an interrupted run
    for process in list(_LIVE):
        process.stop()


class MosquittoProcess:
    """Supervises one Mosquitto broker on a loopback port with its own config and data.

    ``start()`` creates the data directory, the dynsec JSON (admin client) and the config on the
    first call; ``restart()`` keeps port and data (persistence database and dynsec JSON), so
    clients can reconnect to the same address. ``stop()`` ends the broker by its pid (SIGTERM,
    then SIGKILL) and always leaves no process behind. ``close()`` also deletes a data directory
    the supervisor created. Usable as a context manager: start on enter, close on exit.
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        port: int | None = None,
        host: str = LOOPBACK,
        admin_username: str = "iob-admin",
        admin_password: str | None = None,
        start_timeout: float = 5.0,
        stop_timeout: float = 5.0,
    ) -> None:
        """Prepare (nothing runs until ``start()``).

        Args:
            data_dir: config, dynsec JSON, persistence and logs; a fresh temporary directory
                (deleted by ``close()``) when None. An existing directory is reused as it is
                (its dynsec JSON keeps its admin client).
            port: its port; a free one is picked on the first start when None.
            host: the IPv4 address it listens on (only there): loopback unless a test puts
                it on another interface (a veth to a device's network namespace).
            admin_username: the dynsec admin client created with a new dynsec JSON.
            admin_password: its password; random when None.
            start_timeout: seconds to wait for the port to accept connections.
            stop_timeout: seconds to wait after SIGTERM before SIGKILL.
        """
        self._given_data_dir = data_dir
        self._data_dir = data_dir
        self._owns_data_dir = False
        self._fixed_port = port is not None
        self._port = port
        self.host = host
        self.admin_username = admin_username
        self.admin_password = admin_password or secrets.token_urlsafe(24)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._installation: MosquittoInstallation | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # -- paths and state ---------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        """The broker's own directory (exists after the first ``start()``)."""
        if self._data_dir is None:
            raise MosquittoError("the broker has not been started yet")
        return self._data_dir

    @property
    def config_path(self) -> Path:
        """mosquitto.conf, written on every start."""
        return self.data_dir / "mosquitto.conf"

    @property
    def dynsec_path(self) -> Path:
        """The dynamic-security plugin's JSON file."""
        return self.data_dir / "dynamic-security.json"

    @property
    def log_path(self) -> Path:
        """The broker's log (``log_dest file``)."""
        return self.data_dir / "mosquitto.log"

    @property
    def stderr_path(self) -> Path:
        """The broker's stdout and stderr (errors before its log is open, save errors)."""
        return self.data_dir / "mosquitto.stderr"

    @property
    def pid(self) -> int | None:
        """The running broker's pid, or None."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def port(self) -> int:
        """The loopback port (fixed after the first start)."""
        if self._port is None:
            raise MosquittoError("the broker has not been started yet")
        return self._port

    @property
    def broker(self) -> MosquittoBroker:
        """Connection details of the running broker."""
        if self._process is None or not self.running:
            raise MosquittoError("the broker is not running")
        return MosquittoBroker(
            host=self.host,
            port=self.port,
            admin_username=self.admin_username,
            admin_password=self.admin_password,
            pid=self._process.pid,
            data_dir=self.data_dir,
            config_path=self.config_path,
            log_path=self.log_path,
            dynsec_path=self.dynsec_path,
        )

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the broker's log and of its stderr, for error messages."""
        if self._data_dir is None:
            return "(no data directory)"
        parts: list[str] = []
        for path in (self.log_path, self.stderr_path):
            try:
                text = path.read_text(errors="replace").splitlines()[-lines:]
            except FileNotFoundError:
                continue
            if text:
                parts.append(f"--- {path} ---\n" + "\n".join(text))
        return "\n".join(parts) or "(the broker wrote no log)"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> MosquittoBroker:
        """Start the broker and wait until its port accepts connections.

        Raises:
            MosquittoNotInstalledError: Mosquitto or the plugin is missing.
            MosquittoError: the broker did not come up (the message has the log tail).
        """
        if self.running:
            return self.broker
        if self._installation is None:
            self._installation = find_mosquitto()
        self._prepare_data_dir(self._installation)
        attempts = 1 if self._fixed_port else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            if self._port is None:
                self._port = _free_port(self.host)
            try:
                return self._start_once(self._installation)
            except MosquittoError:
                # Someone else took the free port between the pick and the broker's bind.
                if attempt == attempts or "Address already in use" not in self.log_tail():
                    raise
                self._port = None
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self) -> None:
        """Stop the broker by its pid: SIGTERM, wait, SIGKILL if it does not exit.

        The broker saves its persistence database on SIGTERM. Idempotent.
        """
        process = self._process
        if process is None:
            return
        try:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        finally:
            self._process = None
            _LIVE.discard(self)

    def restart(self) -> MosquittoBroker:
        """Stop and start again on the same port with the same data."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the broker and delete the data directory if this supervisor created it."""
        self.stop()
        if self._owns_data_dir and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = self._given_data_dir
            self._owns_data_dir = False

    def __enter__(self) -> Self:
        """Start the broker."""
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the broker and delete a temporary data directory."""
        self.close()

    # -- internals ---------------------------------------------------------------------------

    def _prepare_data_dir(self, installation: MosquittoInstallation) -> None:
        user = _broker_user()
        if self._data_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix="iob-mosquitto-"))
            self._owns_data_dir = True
        self._data_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            _check_reachable(self._data_dir, user)
        if not self.dynsec_path.exists():
            self._init_dynsec(installation)
        if user is not None:
            # The broker writes log, persistence and dynsec JSON after dropping root.
            for path in (self._data_dir, *self._data_dir.iterdir()):
                if path != self.config_path:
                    os.chown(path, user.pw_uid, user.pw_gid)

    def _init_dynsec(self, installation: MosquittoInstallation) -> None:
        # 2.0.11 takes the password as an argument (it prompts only when it is left out); the
        # password is visible in the process list for the few milliseconds the command runs.
        result = subprocess.run(  # noqa: S603 - the found binary and our own arguments
            [
                str(installation.ctrl),
                "dynsec",
                "init",
                str(self.dynsec_path),
                self.admin_username,
                self.admin_password,
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if result.returncode != 0 or not self.dynsec_path.exists():
            raise MosquittoError(
                f"mosquitto_ctrl dynsec init failed (exit {result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        self.dynsec_path.chmod(0o600)

    def _write_config(self, installation: MosquittoInstallation) -> None:
        user = _broker_user()
        lines = [
            "# Written by cloud_relay.broker.local; rewritten on every start.",
            f"listener {self.port} {self.host}",
            "allow_anonymous false",
            f"plugin {installation.plugin}",
            f"plugin_opt_config_file {self.dynsec_path}",
            "persistence true",
            f"persistence_location {self.data_dir}/",
            f"log_dest file {self.log_path}",
            "log_type all",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "set_tcp_nodelay true",
            # A hub subscribing (HA start, reload, reconnect) gets every device's retained
            # messages at once, ~6 per device: the default queue of 1000 dropped the rest.
            f"max_queued_messages {MAX_QUEUED_MESSAGES}",
            f"max_queued_bytes {MAX_QUEUED_BYTES}",
        ]
        if user is not None:
            lines.append(f"user {user.pw_name}")
        self.config_path.write_text("\n".join(lines) + "\n")

    def _start_once(self, installation: MosquittoInstallation) -> MosquittoBroker:
        self._write_config(installation)
        with self.stderr_path.open("ab") as output:
            process = subprocess.Popen(  # noqa: S603 - the found binary and our own config
                [str(installation.broker), "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal is for our owner, which stops us
            )
        self._process = process
        _LIVE.add(self)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if process.poll() is not None:
                self.stop()
                raise MosquittoError(
                    f"mosquitto exited with code {process.returncode} while starting on "
                    f"{self.host}:{self.port}.\n{self.log_tail()}"
                )
            if _port_accepts(self.host, self.port) and process.poll() is None:
                return self.broker
            if time.monotonic() > deadline:
                self.stop()
                raise MosquittoError(
                    f"mosquitto (pid {process.pid}) did not accept connections on "
                    f"{self.host}:{self.port} within {self.start_timeout} s.\n{self.log_tail()}"
                )
            time.sleep(0.01)


# -- dynamic-security commands over MQTT -------------------------------------------------------


async def dynsec_command(
    broker: MosquittoBroker,
    commands: list[dict[str, Any]],
    *,
    timeout: float = 5.0,  # noqa: ASYNC109 - also the connect timeout; names the failure
    check: bool = True,
) -> list[dict[str, Any]]:
    """Send dynamic-security commands as the admin and return the broker's responses.

    Connects as the admin, subscribes to ``$CONTROL/dynamic-security/v1/response``, then
    publishes ``{"commands": [...]}`` to ``$CONTROL/dynamic-security/v1``. The broker answers
    every request with one message holding one response per command, in order; each command is
    tagged with a unique ``correlationData`` (overwriting any given) so that answers to other
    admins' requests are ignored. The tags are removed from the returned responses.

    Args:
        broker: the broker (its admin credentials are used).
        commands: dynsec commands, e.g. ``{"command": "createClient", "username": ...}``.
        timeout: seconds for connecting and for the answer.
        check: raise :class:`DynsecError` if any response carries an ``error``.

    Raises:
        DynsecError: no answer within ``timeout``, or (with ``check``) a command failed.
        aiomqtt.MqttError: the admin could not connect.
    """
    tag = secrets.token_hex(8)
    tags = [f"{tag}-{index}" for index in range(len(commands))]
    request = {
        "commands": [
            {**command, "correlationData": tags[index]} for index, command in enumerate(commands)
        ]
    }
    async with aiomqtt.Client(
        broker.host,
        broker.port,
        username=broker.admin_username,
        password=broker.admin_password,
        identifier=f"iob-dynsec-{tag}",
        protocol=aiomqtt.ProtocolVersion.V5,
        timeout=timeout,
    ) as client:
        await client.subscribe(DYNSEC_RESPONSE_TOPIC, qos=1)
        await client.publish(DYNSEC_CONTROL_TOPIC, json.dumps(request), qos=1)
        try:
            async with asyncio.timeout(timeout):
                responses = await _await_responses(client, tags)
        except TimeoutError:
            raise DynsecError(
                f"no answer on {DYNSEC_RESPONSE_TOPIC} within {timeout} s to "
                f"{[c.get('command') for c in commands]} (is the dynamic-security plugin loaded "
                f"and {broker.admin_username!r} its admin?)"
            ) from None
    if check:
        failed = [r for r in responses if "error" in r]
        if failed:
            raise DynsecError(f"dynamic-security command(s) failed: {failed}")
    return responses


async def _await_responses(client: aiomqtt.Client, tags: list[str]) -> list[dict[str, Any]]:
    wanted = set(tags)
    async for message in client.messages:
        try:
            answer = json.loads(message.payload)
        except ValueError:
            continue
        responses = answer.get("responses") if isinstance(answer, dict) else None
        if not isinstance(responses, list):
            continue
        mine = [r for r in responses if isinstance(r, dict) and r.get("correlationData") in wanted]
        if not mine:
            continue
        by_tag = {r["correlationData"]: r for r in mine}
        if set(by_tag) != wanted:
            raise DynsecError(f"incomplete dynamic-security answer: {answer}")
        return [{k: v for k, v in by_tag[t].items() if k != "correlationData"} for t in tags]
    raise DynsecError("connection closed before the dynamic-security answer arrived")
