"""A device goes from discovered to entities in Home Assistant, through HA's real config flow.

The demo stack runs as in test_demo_stack.py; this test then does what a person does in the
UI, over the same APIs the frontend uses: log in as the demo owner, open the device Home
Assistant's zeroconf discovered, sign in to the account service, name the household, paste the
device's QR payload, choose the "Home" network, wait for the commit, and see the entities.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.test_user_guide import GUIDE, example_entity_ids

from .helpers import (
    Orchestrator,
    discovery_diagnosis,
    get,
    ha_token,
    ha_ws,
    processes_mentioning,
)

DOMAIN = "iot_onboard"
HOUSEHOLD = "Demo home"
# Bounds, not expectations: discovery takes about a second, the commit a few.
DISCOVERY_TIMEOUT = 60.0
COMMIT_TIMEOUT = 240.0
ENTITIES_TIMEOUT = 90.0
POLL = 0.5


def wait_for[T](
    what: str,
    probe: Callable[[], T | None],
    timeout: float,
    explain: Callable[[], str] | None = None,
) -> T:
    """Poll ``probe`` until it returns something; fail naming ``what`` (and ``explain()``)."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            detail = f"\n{explain()}" if explain is not None else ""
            pytest.fail(f"{what}: nothing within {timeout} s{detail}")
        time.sleep(POLL)


def sign_in(ready: dict[str, Any], account: dict[str, Any]) -> dict[str, Any]:
    """The one sign-in form of the first device: the demo's account, the household named."""
    return {
        "account_url": ready["account_service"]["url"],
        "email": account["email"],
        "password": account["password"],
        "create_account": False,
        "household_name": HOUSEHOLD,
    }


class Ha:
    """Home Assistant's REST and websocket APIs with the owner's token."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.token = token

    def call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        status, raw = get(f"{self.base}{path}", body, token=self.token)
        assert status == 200, f"{path}: HTTP {status}: {raw!r}"
        return json.loads(raw)

    def discovered(self) -> list[dict[str, Any]]:
        """The flows the UI lists as discovered (no REST view: the websocket command)."""
        return [f for f in self.flows() if f["handler"] == DOMAIN]

    def flows(self) -> list[dict[str, Any]]:
        """Every flow in progress, of any integration."""
        flows: list[dict[str, Any]] = ha_ws(
            self.base, self.token, {"type": "config_entries/flow/progress"}
        )
        return flows

    def step(self, flow_id: str, user_input: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.call(f"/api/config/config_entries/flow/{flow_id}", user_input)
        assert result["type"] != "abort", f"the flow was aborted: {result}"
        assert not result.get("errors"), f"the form refused {user_input}: {result}"
        return result

    def template(self, template: str) -> Any:
        status, raw = get(f"{self.base}/api/template", {"template": template}, token=self.token)
        assert status == 200, raw
        return json.loads(raw)


def network_value(form: dict[str, Any], ssid: str) -> str:
    """The Wi-Fi form's option for ``ssid`` (from the device's own scan)."""
    field = next(f for f in form["data_schema"] if f["name"] == "network")
    options = field["selector"]["select"]["options"]
    wanted = "ssid:" + ssid.encode().hex()
    assert any(option["value"] == wanted for option in options), options
    return wanted


def device_entities(ha: Ha, device_id: str) -> list[dict[str, Any]] | None:
    """The states of the device's entities once every one is available (else None)."""
    entity_ids: list[str] = ha.template(
        f"{{{{ integration_entities('{DOMAIN}') "
        f"| select('is_device_attr', 'serial_number', '{device_id}') | list | tojson }}}}"
    )
    if not entity_ids:
        return None
    states = {s["entity_id"]: s for s in ha.call("/api/states")}
    mine = [states[e] for e in entity_ids if e in states]
    if len(mine) < len(entity_ids) or any(s["state"] == "unavailable" for s in mine):
        return None
    return mine


def role_labels(ha: Ha, entries: list[dict[str, Any]]) -> list[str]:
    """The user list of the household entry's roles dialog (options), as the UI shows it."""
    household = next(e for e in entries if e["source"] == "import")
    flow = ha.call("/api/config/config_entries/options/flow", {"handler": household["entry_id"]})
    path = f"/api/config/config_entries/options/flow/{flow['flow_id']}"
    form = ha.call(path, {"next_step_id": "user_role"})
    field = next(f for f in form["data_schema"] if f["name"] == "user")
    status, raw = get(f"{ha.base}{path}", token=ha.token, method="DELETE")  # close the dialog
    assert status == 200, raw
    return [option["label"] for option in field["selector"]["select"]["options"]]


@pytest.mark.slow
def test_a_discovered_device_is_onboarded_through_the_config_flow(state_dir: Path) -> None:
    stack = Orchestrator("--state-dir", str(state_dir), "--ha-port", "0", "--devices", "1")
    try:
        ready = stack.wait_ready()
        (device,) = ready["devices"]
        account = next(a for a in ready["account_service"]["accounts"] if not a["admin"])
        home = next(w for w in ready["wifi"] if w["ssid"] == "Home")
        owner = next(u for u in ready["homeassistant"]["users"] if u["admin"])
        ha = Ha(
            ready["homeassistant"]["url"],
            ha_token(ready["homeassistant"]["url"], owner["username"], owner["password"]),
        )

        # Home Assistant's own zeroconf finds the device: a discovery flow at its confirm step.
        # Its unique id is the device id's first 8 characters, all a BLE advertisement carries,
        # so zeroconf and Bluetooth discoveries of one device share one flow.
        flow = wait_for(
            "a zeroconf discovery flow of the device",
            lambda: next(
                (
                    f
                    for f in ha.discovered()
                    if f["context"]["source"] == "zeroconf"
                    and f["context"]["unique_id"] == device["device_id"][:8]
                ),
                None,
            ),
            DISCOVERY_TIMEOUT,
            explain=lambda: discovery_diagnosis(state_dir, ha.flows()),
        )
        flow_id = flow["flow_id"]
        assert flow["step_id"] == "discovery_confirm"

        result = ha.step(flow_id, {})
        assert result["step_id"] == "account", result
        result = ha.step(flow_id, sign_in(ready, account))
        if result["step_id"] == "household":  # the fresh demo account has no household yet
            result = ha.step(flow_id, {"household_name": HOUSEHOLD})
        assert result["step_id"] == "credentials", result
        result = ha.step(flow_id, {"setup_code": device["qr_payload"]})
        assert result["step_id"] == "wifi", result
        result = ha.step(
            flow_id,
            {"network": network_value(result, home["ssid"]), "passphrase": home["passphrase"]},
        )
        if result["type"] == "progress":
            assert result["step_id"] == "provision"

            # The commit: the flow stays listed (the old bug: the device withdrew its record
            # at the claim and Home Assistant aborted the flow) until it leaves the progress
            # step.
            def finished() -> dict[str, Any] | None:
                now: dict[str, Any] = ha.call(f"/api/config/config_entries/flow/{flow_id}")
                if now["type"] != "progress":
                    return now
                assert flow_id in {f["flow_id"] for f in ha.discovered()}, "the flow vanished"
                return None

            result = wait_for("the end of the commit", finished, COMMIT_TIMEOUT)
        # Else the commit ended inside the flow's inline wait: the answer is the entry.
        # The discovered flow itself ends the onboarding: it was never aborted on the way.
        assert result["type"] == "create_entry", result
        assert result["flow_id"] == flow_id
        assert result["title"] == device["name"], result  # the device's entry, by its own name

        # The household entry (made by the flow, source import) and the device's entry
        # (the discovered flow) exist and are loaded; no flow of ours is left.
        entries = [e for e in ha.call("/api/config/config_entries/entry") if e["domain"] == DOMAIN]
        assert sorted((e["source"], e["state"]) for e in entries) == [
            ("import", "loaded"),
            ("zeroconf", "loaded"),
        ], entries
        assert HOUSEHOLD in {e["title"] for e in entries}, entries
        # The roles dialog shows who created the household (Home Assistant's owner) as owner.
        assert f"{owner['name']} — owner" in role_labels(ha, entries)
        assert DOMAIN not in {f["handler"] for f in ha.discovered()}

        # The device's entities appear, available (the device is online), with real values.
        states = wait_for(
            "the device's entities, every one available",
            lambda: device_entities(ha, device["device_id"]),
            ENTITIES_TIMEOUT,
        )
        domains = {s["entity_id"].split(".")[0] for s in states}
        assert {"sensor", "binary_sensor", "switch", "button"} <= domains, states
        sensors = [s for s in states if s["entity_id"].startswith("sensor.")]
        assert any(s["state"] not in {"unknown", ""} for s in sensors), sensors
        # Named by the demo ("Kitchen sensor"): the user guide's example entity ids are its own.
        assert set(example_entity_ids(GUIDE.read_text())) <= {s["entity_id"] for s in states}

        # The device itself says it is owned and online.
        status, raw = get(f"{device['url']}/iob/v1/info")
        assert status == 200, raw
        assert json.loads(raw)["state"] == "online"

        stack.process.send_signal(signal.SIGINT)
        assert stack.wait() == 0, stack.output
    finally:
        stack.kill()
    assert processes_mentioning(str(state_dir)) == {}
