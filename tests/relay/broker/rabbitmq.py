"""A RabbitMQ node (Debian's rabbitmq-server 3.10) with MQTT and the HTTP auth backend.

Started once per session on free loopback ports, with its own epmd, data, logs and Erlang
cookie under a temporary directory; stopped by pid. It asks the account service's broker auth
endpoints (:mod:`cloud_relay.api.broker_auth`) at ``auth_url``, which each test serves itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest

from tests.plugins.ports import free_port

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
EPMD = shutil.which("epmd") or "/usr/bin/epmd"
START_TIMEOUT = 120.0
AUTH_SECRET = "broker-auth-secret-for-tests"  # noqa: S105 - a test listener's path


@dataclass
class RabbitNode:
    host: str
    mqtt_port: int
    auth_port: int
    start_seconds: float


def mqtt_client(
    node: RabbitNode, username: str, password: str, *, timeout: float = 10.0
) -> aiomqtt.Client:
    """A client of ``node`` bound to the client id equal to its username.

    MQTT 3.1.1: RabbitMQ 3.10 speaks no MQTT 5 (docs/relay.md "Towards a clustered broker").
    """
    return aiomqtt.Client(
        node.host,
        node.mqtt_port,
        username=username,
        password=password,
        identifier=username,
        protocol=aiomqtt.ProtocolVersion.V311,
        timeout=timeout,
    )


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"rabbitmq-server exited ({proc.returncode}); see {log}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"rabbitmq-server did not listen on {port} in {START_TIMEOUT} s; see {log}")


@pytest.fixture(scope="session")
def rabbit_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    """One node for the session (it takes seconds to start)."""
    if not SERVER.exists():
        pytest.fail("rabbitmq-server is missing: run scripts/setup (it is in HOST_PACKAGES)")
    with running_node(tmp_path_factory.mktemp("rabbitmq")) as node:
        yield node


@contextlib.contextmanager
def running_node(base: Path) -> Iterator[RabbitNode]:
    """A node with its files under ``base``, stopped (by pid) on exit."""
    mqtt_port, auth_port, dist_port, epmd_port = (free_port() for _ in range(4))
    auth = f"http://127.0.0.1:{auth_port}/{AUTH_SECRET}"
    (base / "rabbitmq.conf").write_text(
        "listeners.tcp = none\n"
        f"mqtt.listeners.tcp.default = 127.0.0.1:{mqtt_port}\n"
        "mqtt.allow_anonymous = false\n"
        "auth_backends.1 = http\n"
        "auth_http.http_method = post\n"
        + "".join(f"auth_http.{q}_path = {auth}/{q}\n" for q in ("user", "vhost", "resource"))
        + f"auth_http.topic_path = {auth}/topic\n"
    )
    (base / "enabled_plugins").write_text("[rabbitmq_mqtt,rabbitmq_auth_backend_http].\n")
    cookie = base / ".erlang.cookie"
    cookie.write_text("iobtestcookie")
    cookie.chmod(0o400)
    env = {
        **os.environ,
        "HOME": str(base),
        "RABBITMQ_NODENAME": f"iob{mqtt_port}@localhost",
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_CONF_ENV_FILE": "/dev/null",
        "RABBITMQ_DIST_PORT": str(dist_port),
        "ERL_EPMD_PORT": str(epmd_port),
    }
    log = base / "server.out"
    epmd = subprocess.Popen([EPMD, "-port", str(epmd_port)], env=env)
    started = time.monotonic()
    with log.open("wb") as out:
        server = subprocess.Popen([str(SERVER)], env=env, stdout=out, stderr=out)
    try:
        _wait_port(mqtt_port, server, log)
        yield RabbitNode("127.0.0.1", mqtt_port, auth_port, time.monotonic() - started)
    finally:
        server.send_signal(signal.SIGTERM)  # the script stops the node (rabbitmqctl stop)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        epmd.terminate()
        epmd.wait()
