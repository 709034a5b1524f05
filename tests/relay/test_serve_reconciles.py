"""``serve`` heals a broker that is out of step with the database (issue 13.6).

A crash between a commit and its broker call leaves an owned device without broker
credentials, or a released device's client behind. ``serve`` reconciles before it takes
requests, and again whenever its connection to the broker comes back (a broker restart), so
nobody has to run ``broker reconcile``. The service runs as users run it, ``python -m
cloud_relay serve``, stopped by its pid.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from iob_protocol.canonical import b64url_encode

from cloud_relay.broker import DeviceCredential
from cloud_relay.broker.mosquitto import MosquittoDynsecAdapter
from cloud_relay.broker.reconcile import device_rolename
from cloud_relay.config import load_config
from tests.plugins.mosquitto import MosquittoBroker, MosquittoProcess, dynsec_command
from tests.plugins.relay_toml import relay_toml

from .conftest import AppFactory
from .helpers import FakeDevice, serve_port, serve_process
from .mqtt import client_exists, connect_code

WAIT = 30.0  # bound for the service to start or heal the broker; never an assertion on speed


def _write_config(directory: Path, database_url: str, broker: MosquittoBroker) -> Path:
    """The service's configuration; ``port = 0``: it binds a free port and names it."""
    (directory / "secret.key").write_text(b64url_encode(os.urandom(32)))
    config = directory / "relay.toml"
    config.write_text(relay_toml(database_url, broker, http_port=0, public_host=broker.host))
    return config


def _text(log: Path) -> str:
    return log.read_text(errors="replace")


def _port_file(config: Path) -> Path:
    return config.with_name("serve.port")


def _serve(config: Path, log: Path) -> Any:
    return serve_process(config, _port_file(config), log)


async def _accepting(process: subprocess.Popen[bytes], log: Path) -> int:
    return await serve_port(process, _port_file(log.with_name("relay.toml")), log)


async def _connects_again(broker: MosquittoBroker, mqtt: dict[str, Any], log: Path) -> None:
    """Until the device's credential connects again (the service put it back)."""
    try:
        async with asyncio.timeout(WAIT):
            while True:
                if await connect_code(broker, mqtt) == 0:
                    return
                await asyncio.sleep(0.1)
    except TimeoutError:
        pytest.fail(f"the broker was not healed within {WAIT} s:\n{_text(log)}")


async def _crash_leftovers(broker: MosquittoBroker, device_id: str) -> None:
    """What a crash between commit and broker call leaves: the owned device has no client."""
    await dynsec_command(
        broker,
        [
            {"command": "deleteClient", "username": device_id},
            {"command": "deleteRole", "rolename": device_rolename(device_id)},
        ],
    )


async def test_serve_reconciles_at_start_and_after_a_broker_restart(
    tmp_path: Path,
    database_url: str,
    mosquitto_process: MosquittoProcess,
    start_api: AppFactory,
) -> None:
    broker = mosquitto_process.broker
    config_path = _write_config(tmp_path, database_url, broker)
    adapter = MosquittoDynsecAdapter(
        broker.host, broker.port, broker.admin_username, broker.admin_password
    )
    try:
        api = await start_api(load_config(config_path), adapter)
        owner, home = await api.owner_household()
        await api.request("GET", f"/v1/households/{home}/hub", token=owner.token, expect=200)
        owned = await api.claim(owner, home, await api.device())
        mqtt = owned["mqtt"]
        assert await connect_code(broker, mqtt) == 0
        # Out of step: the owned device lost its client, an unowned one kept a stale client.
        await _crash_leftovers(broker, owned["device_id"])
        stale = FakeDevice()
        await adapter.put_device(DeviceCredential(stale.id, "left-by-a-crash"))
    finally:
        await adapter.aclose()
    assert await connect_code(broker, mqtt) != 0
    assert await client_exists(broker, stale.id)

    log = tmp_path / "serve.log"
    with _serve(config_path, log) as process:
        await _accepting(process, log)
        # In step before the first request, and nobody ran `broker reconcile`.
        assert await connect_code(broker, mqtt) == 0, _text(log)
        assert not await client_exists(broker, stale.id), _text(log)

        # The broker loses the device's client and restarts while the service runs.
        await _crash_leftovers(broker, owned["device_id"])
        assert await connect_code(broker, mqtt) != 0
        await asyncio.to_thread(mosquitto_process.restart)
        await _connects_again(broker, mqtt, log)
        assert process.poll() is None
    text = _text(log)
    assert "Reconciled the broker at start-up" in text, text
    assert "Reconciled the broker after the broker connection came back" in text, text
