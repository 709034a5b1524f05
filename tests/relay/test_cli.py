"""The command line, run as users run it (``python -m cloud_relay``), on both databases."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from iob_protocol.canonical import b64url_encode

from cloud_relay.broker import DeviceCredential
from cloud_relay.broker.mosquitto import MosquittoDynsecAdapter
from tests.plugins.mosquitto import MosquittoBroker
from tests.plugins.relay_toml import relay_toml

from .helpers import FakeDevice
from .mqtt import client_exists


def _cli(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cloud_relay", "--config", str(config), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )


def test_cli_end_to_end(
    tmp_path: Path, database_url: str, mosquitto_broker: MosquittoBroker
) -> None:
    config = tmp_path / "relay.toml"
    assert _cli(config, "init").returncode == 0
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600
    broker = mosquitto_broker
    config.write_text(relay_toml(database_url, broker))
    assert _cli(config, "migrate").returncode == 0

    devices = [FakeDevice() for _ in range(3)]
    records = tmp_path / "factory.jsonl"
    records.write_text("\n".join(json.dumps(d.record()) for d in devices) + "\n")
    result = _cli(config, "registry", "import", str(records))
    assert result.returncode == 0, result.stderr
    assert "imported 3 device(s)" in result.stdout
    again = _cli(config, "registry", "import", str(records))
    assert "imported 0 device(s), 3 unchanged" in again.stdout

    # A re-keyed device is refused, with the line number.
    rekeyed = FakeDevice()
    bad = {**devices[1].record(), "public_key": b64url_encode(rekeyed.identity.public_key)}
    records.write_text(json.dumps(bad) + "\n")
    result = _cli(config, "registry", "import", str(records))
    assert result.returncode == 1
    assert "already registered with a different key" in result.stderr
    records.write_text('{"device_id": "nope"}\n')
    result = _cli(config, "registry", "import", str(records))
    assert (result.returncode, "line 1" in result.stderr) == (1, True)

    result = _cli(
        config,
        "admin",
        "create-account",
        "root@example.com",
        "--admin",
        "--password-stdin",
        stdin="a long password\n",
    )
    assert result.returncode == 0, result.stderr
    result = _cli(
        config,
        "admin",
        "set-model",
        "pi-sensor",
        "--name",
        "Pi sensor",
        "--metadata",
        '{"sensors": 2}',
    )
    assert result.returncode == 0, result.stderr
    result = _cli(config, "admin", "revoke-sessions", "root@example.com")
    assert "revoked 0 session(s)" in result.stdout

    result = _cli(config, "audit", "verify")
    assert result.returncode == 0, result.stderr
    assert "audit log intact" in result.stdout

    result = _cli(config, "broker", "reconcile")
    assert result.returncode == 0, result.stderr
    assert "broker reconciled" in result.stdout


async def test_cli_reconcile_removes_orphans(
    tmp_path: Path, database_url: str, mosquitto_broker: MosquittoBroker
) -> None:
    broker = mosquitto_broker
    orphan = FakeDevice()
    adapter = MosquittoDynsecAdapter(
        broker.host, broker.port, broker.admin_username, broker.admin_password
    )
    await adapter.put_device(DeviceCredential(orphan.id, "left-by-a-crash"))
    await adapter.aclose()
    assert await client_exists(broker, orphan.id)
    (tmp_path / "secret.key").write_text(b64url_encode(os.urandom(32)))
    config = tmp_path / "relay.toml"
    config.write_text(relay_toml(database_url, broker, public_host=None, cheap_argon2=False))
    result = await asyncio.to_thread(_cli, config, "broker", "reconcile")
    assert result.returncode == 0, result.stderr
    assert "1 removed" in result.stdout
    assert not await client_exists(broker, orphan.id)
