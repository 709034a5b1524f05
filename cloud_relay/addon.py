"""The Home Assistant add-on's runner: ``python -m cloud_relay.addon`` (the image's run script).

One process supervises the add-on's two services and tells Home Assistant about them:

1. reads ``<data>/options.json`` (what the Supervisor writes from the add-on's options; read
   directly, without bashio, so this runs outside a container too);
2. asks the Supervisor (``GET /addons/self/info``) for the add-on's host name and the host ports
   the user mapped; without a Supervisor (plain Docker) the container ports are used;
3. starts Mosquitto with dynamic security (:class:`cloud_relay.broker.local.MosquittoProcess`,
   the demo's broker) with its admin listener on a loopback port and a second listener on
   :data:`MQTT_PORT` for devices and Home Assistant;
4. writes ``relay.toml`` (every start; secret key and broker admin password made once and
   kept), makes the broker match the database (``broker reconcile``: the dynamic-security file
   may be older than the database after a restore) and runs ``python -m cloud_relay serve`` on
   SQLite in ``<data>/relay``;
5. once ``/v1/health`` answers, mints a one-time provisioning token
   (:mod:`cloud_relay.provisioning`) and announces the service to Home Assistant through the
   Supervisor's discovery API (``POST /discovery``, service ``iot_onboard``);
6. runs until SIGTERM (the Supervisor stopping the add-on) or until a service dies, then stops
   the account service first (SQLite is closed and its WAL checkpointed) and the broker last.

Environment: ``SUPERVISOR_TOKEN`` (set by the Supervisor with ``hassio_api: true``),
``IOB_ADDON_SUPERVISOR`` (default ``http://supervisor``), ``IOB_ADDON_HTTP_PORT`` and
``IOB_ADDON_MQTT_PORT`` (container ports; tests move them), ``IOB_ADDON_HOSTNAME`` (overrides the
host name Home Assistant is told).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp

from .broker.local import MosquittoError, MosquittoInstallation, MosquittoProcess
from .config import write_secret_key
from .errors import ConfigError, exit_status
from .provisioning import MAX_TTL, mint_token, tokens_path
from .storage.files import make_private_directory, write_private_file

_LOGGER: Final = logging.getLogger("cloud_relay.addon")

HTTP_PORT: Final = 8080
#: Not 1883: the user's Mosquitto add-on keeps the standard port.
MQTT_PORT: Final = 1884
DISCOVERY_SERVICE: Final = "iot_onboard"
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
#: Mosquitto's log types per add-on log level (its ``log_type`` lines).
_MOSQUITTO_LOG_TYPES: Final[Mapping[str, tuple[str, ...]]] = {
    "debug": ("all",),
    "info": ("error", "warning", "notice", "information"),
    "warning": ("error", "warning"),
    "error": ("error",),
}
_OPTIONS: Final = {"log_level": str, "device_host": str}
_HEALTH_WAIT: Final = 60.0
_STOP_WAIT: Final = 20.0


class AddonError(ConfigError):
    """The add-on cannot start; the message says why and what to do."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """The add-on's options (config.yaml ``options``/``schema``)."""

    log_level: str = "info"
    #: The name or address devices use to reach this host (empty: Home Assistant's mDNS name).
    device_host: str = ""


def read_options(path: Path) -> Options:
    """``options.json`` as the Supervisor writes it; missing means the defaults."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Options()
    except (OSError, ValueError) as err:
        raise AddonError(f"cannot read the add-on options {path}: {err}") from err
    if not isinstance(data, dict):
        raise AddonError(f"{path} is not a JSON object; save the add-on's options again")
    values: dict[str, str] = {}
    for key, value in data.items():
        if key not in _OPTIONS:
            _LOGGER.warning("ignoring the unknown option %r", key)
            continue
        if not isinstance(value, str):
            raise AddonError(f"option {key} must be text; save the add-on's options again")
        values[key] = value
    options = Options(**values)
    if options.log_level not in LOG_LEVELS:
        raise AddonError(
            f"option log_level is {options.log_level!r}; choose one of {', '.join(LOG_LEVELS)}"
        )
    return options


class AddonMosquitto(MosquittoProcess):
    """The demo's broker, plus a listener for devices and the add-on's log level.

    The admin (the account service) keeps the loopback listener the base class writes; devices
    and Home Assistant connect to ``device_port`` on every address of the container.
    """

    def __init__(
        self, data_dir: Path, *, device_port: int, log_level: str, admin_password: str
    ) -> None:
        """Prepare; nothing runs until ``start()``."""
        super().__init__(data_dir, admin_password=admin_password, stop_timeout=10.0)
        self.device_port = device_port
        self.log_level = log_level

    def _write_config(self, installation: MosquittoInstallation) -> None:
        super()._write_config(installation)
        lines = [
            line
            for line in self.config_path.read_text().splitlines()
            if not line.startswith("log_type ")
        ]
        lines += [f"log_type {kind}" for kind in _MOSQUITTO_LOG_TYPES[self.log_level]]
        # Global settings (allow_anonymous false, the dynsec plugin) cover this listener too.
        lines.append(f"listener {self.device_port}")
        self.config_path.write_text("\n".join(lines) + "\n")


@dataclass(frozen=True, slots=True, kw_only=True)
class Layout:
    """Where everything lives under the add-on's ``/data``."""

    data: Path

    @property
    def relay(self) -> Path:
        """The account service's directory (0700): config, key, database, tokens."""
        return self.data / "relay"

    @property
    def config(self) -> Path:
        """relay.toml, rewritten at every start."""
        return self.relay / "relay.toml"

    @property
    def database(self) -> Path:
        """The SQLite database."""
        return self.relay / "relay.db"

    @property
    def broker_password(self) -> Path:
        """The broker admin's password, made once."""
        return self.relay / "broker-admin.password"

    @property
    def mosquitto(self) -> Path:
        """The broker's own directory."""
        return self.data / "mosquitto"


@dataclass(frozen=True, slots=True, kw_only=True)
class SelfInfo:
    """What the Supervisor says about this add-on (or the container's own view)."""

    hostname: str
    http_port: int | None
    mqtt_port: int | None


class Supervisor:
    """The few Supervisor API calls the add-on makes."""

    def __init__(self, url: str, token: str | None, session: aiohttp.ClientSession) -> None:
        """``token`` None: no Supervisor (plain Docker), nothing is asked."""
        self.url = url.rstrip("/")
        self.token = token
        self.session = session

    async def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        if self.token is None:
            raise AddonError("no SUPERVISOR_TOKEN: not running as a Home Assistant add-on")
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            async with (
                asyncio.timeout(10),
                self.session.request(method, self.url + path, json=body, headers=headers) as reply,
            ):
                answer = await reply.json(content_type=None)
                if reply.status != 200 or not isinstance(answer, dict):  # noqa: PLR2004
                    message = answer.get("message") if isinstance(answer, dict) else None
                    raise AddonError(
                        f"the Supervisor refused {method} {path} ({reply.status}): {message}"
                    )
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            raise AddonError(f"the Supervisor did not answer {method} {path}: {err!r}") from err
        data = answer.get("data")
        return data if isinstance(data, dict) else {}

    async def self_info(self, http_port: int, mqtt_port: int) -> SelfInfo:
        """Host name and mapped host ports (None: the user disabled that port)."""
        hostname = os.environ.get("IOB_ADDON_HOSTNAME") or socket.gethostname()
        if self.token is None:
            return SelfInfo(hostname=hostname, http_port=http_port, mqtt_port=mqtt_port)
        data = await self._call("GET", "/addons/self/info")
        network = data.get("network") or {}

        def mapped(port: int) -> int | None:
            value = network.get(f"{port}/tcp") if isinstance(network, dict) else None
            return value if isinstance(value, int) else None

        return SelfInfo(
            hostname=os.environ.get("IOB_ADDON_HOSTNAME") or str(data.get("hostname") or hostname),
            http_port=mapped(http_port),
            mqtt_port=mapped(mqtt_port),
        )

    async def announce(self, config: dict[str, str]) -> str:
        """POST /discovery; the message's uuid (a restart updates the same message)."""
        data = await self._call(
            "POST", "/discovery", {"service": DISCOVERY_SERVICE, "config": config}
        )
        return str(data.get("uuid", ""))


def _private_text(path: Path, text: str) -> None:
    """Replace ``path`` atomically with ``text`` (0600)."""
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    write_private_file(partial, text.encode("utf-8"))
    partial.replace(path)


def _broker_password(layout: Layout) -> str:
    if layout.broker_password.exists():
        return layout.broker_password.read_text(encoding="ascii").strip()
    password = secrets.token_urlsafe(32)
    _private_text(layout.broker_password, password + "\n")
    return password


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def relay_toml(
    layout: Layout, *, http_port: int, broker_port: int, device_host: str, device_port: int
) -> str:
    """The account service's configuration for this start."""
    return f"""# Written by the add-on at every start (cloud_relay/addon.py); edits are lost.
database_url = {_toml_string("sqlite:///" + str(layout.database))}
secret_key_file = "secret.key"

[http]
host = "0.0.0.0"
port = {http_port}

[broker]
host = "127.0.0.1"
port = {broker_port}
username = "iob-admin"
public_host = {_toml_string(device_host)}
public_port = {device_port}
public_tls = false
"""


async def _run_cli(config: Path, env: Mapping[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cloud_relay", "--config", str(config), *args, env=dict(env)
    )


async def _wait_healthy(
    url: str, relay: asyncio.subprocess.Process, session: aiohttp.ClientSession
) -> None:
    deadline = time.monotonic() + _HEALTH_WAIT
    while True:
        if relay.returncode is not None:
            raise AddonError(
                f"the account service exited with status {relay.returncode} while starting; "
                "its error is in the log above"
            )
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with asyncio.timeout(2), session.get(url) as reply:
                if reply.status == 200:  # noqa: PLR2004
                    return
        if time.monotonic() > deadline:
            raise AddonError(f"the account service did not answer {url} within {_HEALTH_WAIT} s")
        await asyncio.sleep(0.1)


async def _stop(relay: asyncio.subprocess.Process | None, broker: AddonMosquitto) -> None:
    if relay is not None and relay.returncode is None:
        relay.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(_STOP_WAIT):
                await relay.wait()
        except TimeoutError:
            _LOGGER.warning("the account service did not stop within %s s; killed", _STOP_WAIT)
            relay.kill()
            await relay.wait()
    await asyncio.to_thread(broker.stop)


async def run(data: Path, supervisor_url: str, token: str | None) -> int:
    """Start, announce, supervise; return the exit status."""
    layout = Layout(data=data)
    options = read_options(data / "options.json")
    logging.getLogger().setLevel(options.log_level.upper())
    http_port = int(os.environ.get("IOB_ADDON_HTTP_PORT", HTTP_PORT))
    mqtt_port = int(os.environ.get("IOB_ADDON_MQTT_PORT", MQTT_PORT))
    make_private_directory(layout.relay)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    async with aiohttp.ClientSession() as session:
        supervisor = Supervisor(supervisor_url, token, session)
        try:
            info = await supervisor.self_info(http_port, mqtt_port)
        except AddonError as err:
            _LOGGER.warning("%s; telling devices the container ports", err.message)
            info = SelfInfo(
                hostname=os.environ.get("IOB_ADDON_HOSTNAME") or socket.gethostname(),
                http_port=http_port,
                mqtt_port=mqtt_port,
            )
        if info.mqtt_port is None:
            raise AddonError(
                f"the MQTT port ({mqtt_port}/tcp) is disabled in the add-on's Network settings: "
                "devices could not reach the broker; give it a host port and restart"
            )
        password = _broker_password(layout)
        broker = AddonMosquitto(
            layout.mosquitto,
            device_port=mqtt_port,
            log_level=options.log_level,
            admin_password=password,
        )
        relay: asyncio.subprocess.Process | None = None
        try:
            try:
                started = await asyncio.to_thread(broker.start)
            except MosquittoError as err:
                raise AddonError(f"Mosquitto did not start: {err}") from err
            _LOGGER.info(
                "Mosquitto (pid %d) listens on %d for devices, 127.0.0.1:%d for the service",
                started.pid,
                mqtt_port,
                started.port,
            )
            await asyncio.to_thread(
                _private_text,
                layout.config,
                relay_toml(
                    layout,
                    http_port=http_port,
                    broker_port=started.port,
                    device_host=options.device_host or "homeassistant.local",
                    device_port=info.mqtt_port,
                ),
            )
            await asyncio.to_thread(_secret_key, layout)
            env = {
                **os.environ,
                "IOB_RELAY_BROKER_PASSWORD": password,
                "IOB_RELAY_LOG_LEVEL": options.log_level.upper(),
                # The watchdog asks /v1/health all the time: requests are logged at debug only.
                "IOB_RELAY_ACCESS_LOG": "1" if options.log_level == "debug" else "0",
                "PYTHONUNBUFFERED": "1",  # the container log in order
            }
            env.pop("SUPERVISOR_TOKEN", None)  # the service has no business with it
            reconcile = await _run_cli(layout.config, env, "broker", "reconcile")
            if await reconcile.wait() != 0:
                raise AddonError("broker reconcile failed; its error is in the log above")
            relay = await _run_cli(layout.config, env, "serve")
            await _wait_healthy(f"http://127.0.0.1:{http_port}/v1/health", relay, session)
            url = f"http://{info.hostname}:{http_port}"
            _LOGGER.info("account service (pid %d) answers at %s", relay.pid, url)
            await _announce(supervisor, layout, url)
            return await _supervise(stop, relay, broker)
        finally:
            await _stop(relay, broker)


def _secret_key(layout: Layout) -> None:
    write_secret_key(layout.relay / "secret.key")


async def _announce(supervisor: Supervisor, layout: Layout, url: str) -> None:
    if supervisor.token is None:
        _LOGGER.info("no Supervisor: not announcing (add the service in Home Assistant by %s)", url)
        return
    token = await asyncio.to_thread(
        lambda: mint_token(tokens_path(layout.config), ttl=MAX_TTL, now=time.time())
    )
    try:
        uuid = await supervisor.announce({"url": url, "token": token})
    except AddonError as err:
        _LOGGER.warning(
            "%s; Home Assistant will not offer the service until a restart", err.message
        )
        return
    _LOGGER.info("announced to Home Assistant (discovery %s)", uuid)


async def _supervise(
    stop: asyncio.Event, relay: asyncio.subprocess.Process, broker: AddonMosquitto
) -> int:
    """Wait for a stop request (0) or a dead service (1)."""
    relay_exit = asyncio.create_task(relay.wait())
    try:
        while not stop.is_set():
            if relay_exit.done():
                _LOGGER.error(
                    "the account service exited (%s); stopping the add-on", relay.returncode
                )
                return 1
            if not broker.running:
                _LOGGER.error("Mosquitto exited; stopping the add-on.\n%s", broker.log_tail())
                return 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    await stop.wait()
        _LOGGER.info("stopping")
        return 0
    finally:
        relay_exit.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the add-on; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m cloud_relay.addon", description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("/data"), help="the add-on's /data")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    supervisor_url = os.environ.get("IOB_ADDON_SUPERVISOR", "http://supervisor")
    return exit_status(
        lambda: asyncio.run(run(args.data, supervisor_url, os.environ.get("SUPERVISOR_TOKEN"))),
        (ConfigError,),
    )


if __name__ == "__main__":
    sys.exit(main())
