"""The command line: status, diagnose, reset (in place and through a running agent), run."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from iob_protocol.canonical import b64url_encode
from iob_protocol.diagnostics import DiagnosticCode

from device_firmware.__main__ import _runtime_factory, main, running_agent_pid
from device_firmware.config import DeviceConfig
from device_firmware.errors import ConfigError
from device_firmware.mqtt_runtime import MqttRuntime
from device_firmware.state import (
    DeviceStateRecord,
    MqttCredentials,
    Ownership,
    Phase,
    StateStore,
)

from .conftest import TEST_PASSWORD, Provisioned, UnitHardware

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(args), out=out)
    return code, out.getvalue()


def owned_record() -> DeviceStateRecord:
    return DeviceStateRecord(
        phase=Phase.ONLINE,
        ownership=Ownership(household_id="hh1", service_url="http://127.0.0.1:9", claimed_at=1),
        mqtt=MqttCredentials(
            host="127.0.0.1", port=9, tls=False, username="u", password=TEST_PASSWORD
        ),
        wifi_ssid=b"HomeNet",
    )


def test_factory_provision_status_and_diagnose(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    config = str(tmp_path / "none.toml")
    (tmp_path / "none.toml").write_text("")
    out = str(tmp_path / "out")
    provision = ("--config", config, "--data-dir", data, "factory-provision", "--model", "pi-cli")
    code, text = cli(*provision, "--output", out)
    assert code == 0
    assert "Manual code:" in text
    code, _ = cli(*provision, "--output", out)  # already provisioned
    assert code == 1
    code, text = cli("--config", config, "--data-dir", data, "status", "--json")
    status = json.loads(text)
    assert (code, status["phase"], status["model"], status["agent_pid"]) == (
        0,
        "unclaimed",
        "pi-cli",
        None,
    )
    code, text = cli("--config", config, "--data-dir", data, "diagnose")
    assert "no failure is recorded" in text
    store = StateStore(Path(data) / "state.json")
    store.change(phase=Phase.PROVISIONING)
    store.change(phase=Phase.COMMITTING)
    store.change(phase=Phase.PROVISIONING, diagnostic=DiagnosticCode.DNS_FAILED, diagnostic_at=1)
    code, text = cli("--config", config, "--data-dir", data, "diagnose")
    assert code == 0
    assert "DNS_FAILED" in text
    assert DiagnosticCode.DNS_FAILED.message in text
    assert DiagnosticCode.DNS_FAILED.next_step in text
    assert "previous network was kept" in text
    code, text = cli("--config", config, "--data-dir", data, "status")
    assert "DNS_FAILED" in text
    assert TEST_PASSWORD not in text


def test_status_without_identity_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text("")
    code, _ = cli("--config", str(tmp_path / "c.toml"), "--data-dir", str(tmp_path), "status")
    assert code == 1


def test_reset_in_place(provisioned: Provisioned) -> None:
    """No agent running: the CLI resets itself (the service is unreachable: noted, not fatal)."""
    config = provisioned.config
    scenario = config.data_dir / "scenario.json"
    scenario.write_text(json.dumps({"networks": [{"ssid": "HomeNet"}], "saved": "HomeNet"}))
    store = StateStore(config.state_file)
    store.write(owned_record())
    (config.data_dir / "device.toml").write_text(
        f'simulate_network = "{scenario}"\nrelay_timeout = 2.0\n'
    )
    code, text = cli(
        "--config",
        str(config.data_dir / "device.toml"),
        "--data-dir",
        str(config.data_dir),
        "reset",
        "--yes",
    )
    assert code == 0
    assert "account service not told" in text
    record = StateStore(config.state_file).load()
    assert (record.phase, record.ownership, record.mqtt) == (Phase.UNCLAIMED, None, None)


def test_run_then_reset_by_signal_then_sigterm(provisioned: Provisioned, tmp_path: Path) -> None:
    """The real CLI process: starts, answers on loopback, resets on ``reset`` (SIGUSR2 from the
    CLI), and stops cleanly on SIGTERM."""
    config = provisioned.config
    StateStore(config.state_file).write(owned_record())
    scenario = tmp_path / "scenario.toml"
    scenario.write_text('wired = true\n[[networks]]\nssid = "HomeNet"\n')
    settings = tmp_path / "device.toml"
    settings.write_text(
        'listen = ["127.0.0.1"]\nport = 0\nadvertise = []\nhotspot = false\nrelay_timeout = 2.0\n'
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "device_firmware",
            "--config",
            str(settings),
            "--data-dir",
            str(config.data_dir),
            "run",
            "--simulate-network",
            str(scenario),
            "--no-mqtt",
            "--no-ble",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        # A bound, not an expectation: a loaded CI machine takes seconds to import the agent.
        deadline = time.monotonic() + 60
        while running_agent_pid(config) != agent.pid and time.monotonic() < deadline:
            assert agent.poll() is None, "the agent exited before it took its lock"
            time.sleep(0.05)
        assert running_agent_pid(config) == agent.pid
        code, text = cli(
            "--config", str(settings), "--data-dir", str(config.data_dir), "reset", "--yes"
        )
        assert code == 0, text
        assert "unclaimed" in text
        record = StateStore(config.state_file).load()
        assert record.phase is Phase.UNCLAIMED
        assert record.mqtt is None
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        assert agent.stderr is not None
        agent.stderr.close()
    assert running_agent_pid(config) is None


def test_status_says_whether_an_owner_secret_is_saved_and_never_shows_it(
    provisioned: Provisioned,
) -> None:
    secret = bytes(range(7, 39))
    StateStore(provisioned.config.state_file).write(
        dataclasses.replace(
            owned_record(),
            owner_secret=secret,
            diagnostic=DiagnosticCode.BROKER_UNREACHABLE,
            diagnostic_at=1,
        )
    )
    data = str(provisioned.config.data_dir)
    code, text = cli("--data-dir", data, "status", "--json")
    assert (code, json.loads(text)["owner_secret_saved"]) == (0, True)
    code, text = cli("--data-dir", data, "status")
    assert secret.hex() not in text
    assert b64url_encode(secret) not in text
    code, text = cli("--data-dir", data, "diagnose")
    assert "BROKER_UNREACHABLE" in text
    assert "nc -vz" in text


def test_the_configured_name_is_the_device_name_in_its_descriptor(
    provisioned: Provisioned, tmp_path: Path
) -> None:
    toml = tmp_path / "device.toml"
    toml.write_text('name = "Kitchen sensor"\n')
    config = DeviceConfig.load(toml, data_dir=provisioned.config.data_dir)
    factory = _runtime_factory(config, enabled=True)
    assert factory is not None
    credentials = MqttCredentials(
        host="127.0.0.1", port=9, tls=False, username="u", password=TEST_PASSWORD
    )
    device_id = provisioned.device.identity.device_id
    runtime = factory(device_id, credentials)
    assert isinstance(runtime, MqttRuntime)
    device = runtime.meta()["device"]
    assert device["name"] == "Kitchen sensor"
    assert device["model"] == provisioned.device.info.model

    # Unset: no name in the descriptor (Home Assistant names the device itself).
    unnamed = _runtime_factory(dataclasses.replace(config, name=None), enabled=True)
    assert unnamed is not None
    runtime = unnamed(device_id, credentials)
    assert isinstance(runtime, MqttRuntime)
    assert "name" not in runtime.meta()["device"]


@pytest.mark.parametrize("value", ["", "  ", 7])
def test_a_name_that_is_not_text_is_refused(value: object) -> None:
    with pytest.raises(ConfigError, match="name must be"):
        DeviceConfig.from_mapping({"name": value})


def test_factory_provision_self_test(tmp_path: Path, unit_hardware: UnitHardware) -> None:
    """Every check on the operator's screen; a failing one with its next step and exit 1."""
    unit_hardware.bluez()
    (tmp_path / "none.toml").write_text("")
    out = tmp_path / "out"

    def provision(data: str) -> tuple[int, str]:
        return cli(
            "--config",
            str(tmp_path / "none.toml"),
            "--data-dir",
            str(tmp_path / data),
            "factory-provision",
            "--model",
            "pi-cli",
            "--output",
            str(out),
            "--self-test",
        )

    code, text = provision("no-nm")
    assert code == 1, text
    assert "Self-test network_manager: fail (unreachable: " in text
    assert "  next step: start NetworkManager" in text
    assert "Self-test wifi_radio: skipped (NetworkManager is unreachable)" in text

    unit_hardware.network_manager()
    code, text = provision("data")
    assert code == 0, text
    for line in (
        "Self-test key: pass",
        "Self-test label: pass",
        "Self-test wifi_radio: pass (wlan0 managed by NetworkManager)",
        "Self-test network_manager: pass (NetworkManager ",
        "Self-test ble_adapter: pass (hci0 is an LE adapter, powered)",
        "Self-test button: skipped (no button configured: button_gpio is unset)",
        "Self-test led: ",  # this machine's own LEDs decide the result
    ):
        assert line in text, text
    assert "next step" not in text
    first, second = (out / "manufacturing-records.jsonl").read_text().splitlines()
    assert json.loads(first)["self_test"]["passed"] is False
    record = json.loads(second)
    assert record["self_test"]["passed"] is True
