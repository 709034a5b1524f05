"""The simulated network backend and its scenario files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from iob_protocol.diagnostics import DiagnosticCode

from device_firmware.errors import ScenarioError
from device_firmware.network.backend import NetworkError, WifiCredentials
from device_firmware.network.simulated import Scenario, SimulatedBackend

NEW_PASSPHRASE = "new network pw"  # noqa: S105 - a simulated network's password
SCENARIO_TOML = """
wired = false
saved = "Old"
[[networks]]
ssid = "Old"
[[networks]]
ssid = "New"
passphrase = "new network pw"
strength = 90
internet = false
[[networks]]
ssid_hex = "ff00fe"
hidden = true
"""


def test_toml_and_json_scenarios(tmp_path: Path) -> None:
    toml_file = tmp_path / "s.toml"
    toml_file.write_text(SCENARIO_TOML)
    scenario = Scenario.load(toml_file)
    assert [net.ssid for net in scenario.networks] == [b"Old", b"New", b"\xff\x00\xfe"]
    json_file = tmp_path / "s.json"
    json_file.write_text(json.dumps({"networks": [{"ssid": "A", "dhcp": False}], "wired": True}))
    assert Scenario.load(json_file).wired


@pytest.mark.parametrize(
    "document",
    [
        {"networks": [{"ssid": "A", "bogus": 1}]},
        {"networks": [{"ssid": "A", "ssid_hex": "41"}]},
        {"networks": [{"ssid": "A", "passphrase": "short"}]},
        {"networks": [{"ssid": "x" * 33}]},
        {"networks": [{"ssid": "A", "strength": 101}]},
        {"networks": [{"ssid": "A"}], "saved": "B"},
        {"unknown": True},
        [],
    ],
)
def test_invalid_scenarios(document: object) -> None:
    with pytest.raises(ScenarioError):
        Scenario.from_mapping(document)


def hotspot_of(backend: SimulatedBackend) -> tuple[str, str | None] | None:
    """Read the property afresh (mypy keeps an earlier narrowing across awaits)."""
    return backend.hotspot


async def test_trial_rollback_commit_forget(tmp_path: Path) -> None:
    toml_file = tmp_path / "s.toml"
    toml_file.write_text(SCENARIO_TOML)
    backend = SimulatedBackend(Scenario.load(toml_file))
    assert await backend.wifi_connected()
    scan = await backend.scan()
    assert [ap.ssid for ap in scan] == [b"New", b"Old"]  # strongest first, hidden absent
    await backend.start_hotspot("Setup", "hotspot-pass")
    await backend.connect(WifiCredentials(ssid=b"New", passphrase=NEW_PASSPHRASE))
    assert backend.hotspot is None
    with pytest.raises(NetworkError) as caught:
        await backend.check_internet()
    assert caught.value.code is DiagnosticCode.NO_INTERNET
    await backend.rollback()
    assert backend.saved_ssid == b"Old"
    assert hotspot_of(backend) == ("Setup", "hotspot-pass")
    await backend.check_internet()
    await backend.connect(WifiCredentials(ssid=b"\xff\x00\xfe", hidden=True))
    await backend.commit()
    assert backend.saved_ssid == b"\xff\x00\xfe"
    backend.remove_network(b"\xff\x00\xfe")
    assert not await backend.wifi_connected()
    await backend.forget()
    assert backend.saved_ssid is None
