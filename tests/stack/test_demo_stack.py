"""The demo stack comes up (every service answers on the ports it reports) and goes down.

The orchestrator runs as a subprocess, exactly as scripts/develop runs it, with its own state
directory and a free Home Assistant port. The checks go through the ports it publishes on
127.0.0.1 (as root, through its forwarder into the stack's private network namespace).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_user_guide import guide_automation

from .helpers import (
    Orchestrator,
    get,
    ha_login,
    ha_token,
    processes_mentioning,
    refused,
)


@pytest.mark.slow
def test_stack_comes_up_answers_and_stops_cleanly_on_sigint(state_dir: Path) -> None:
    stack = Orchestrator("--state-dir", str(state_dir), "--ha-port", "0")
    try:
        ready = stack.wait_ready()
        pids: list[int] = ready["pids"]
        assert len(pids) == 6  # broker, account service, 3 devices, Home Assistant
        assert set(processes_mentioning(str(state_dir))) >= set(pids)

        # Home Assistant: up (401 without a token), both printed logins work.
        ha = ready["homeassistant"]["url"]
        assert get(f"{ha}/api/")[0] == 401
        for user in ready["homeassistant"]["users"]:
            assert ha_login(ha, user["username"], user["password"])["type"] == "create_entry"

        # The automation and script editors save, and what they save runs.
        automation, script = save_in_the_editors(ha, ready)

        # The account service: healthy; the demo account signs in with the printed password.
        relay = ready["account_service"]["url"]
        status, body = get(f"{relay}/v1/health")
        assert status == 200
        assert json.loads(body)["status"] == "ok"
        account = next(a for a in ready["account_service"]["accounts"] if not a["admin"])
        status, _ = get(
            f"{relay}/v1/auth/sign-in", {"email": account["email"], "password": account["password"]}
        )
        assert status == 200

        # Each device: its LAN server answers with the id the summary printed; unclaimed.
        assert len(ready["devices"]) == 3
        for device in ready["devices"]:
            status, body = get(f"{device['url']}/iob/v1/info")
            assert status == 200
            info = json.loads(body)
            assert info["device_id"] == device["device_id"]
            assert info["state"] == "unclaimed"
            assert info["name"] == device["name"]  # what Home Assistant names it by
            assert device["qr_payload"].startswith(f"IOB1:{device['device_id']}:")
            assert Path(device["label_png"]).is_file()

        if os.geteuid() == 0:
            # Isolated: every process of the stack is in another network namespace.
            assert ready["isolated"] is True
            ours = Path("/proc/self/ns/net").readlink()
            for pid in pids:
                assert Path(f"/proc/{pid}/ns/net").readlink() != ours

        stack.process.send_signal(signal.SIGINT)
        assert stack.wait() == 0, stack.output
    finally:
        stack.kill()

    assert processes_mentioning(str(state_dir)) == {}
    for port in ready["published_ports"]:
        assert refused(port)
    assert "Everything is stopped." in stack.output

    # Home Assistant's users were made as the summary says: an owner and a plain user.
    auth = json.loads((state_dir / "ha-config" / ".storage" / "auth").read_text())
    users = {u["name"]: u for u in auth["data"]["users"] if not u["system_generated"]}
    assert users["Demo Owner"]["is_owner"] is True
    assert users["Demo Owner"]["group_ids"] == ["system-admin"]
    assert users["Guest"]["group_ids"] == ["system-users"]

    # What the editors saved is in the files configuration.yaml includes.
    config = state_dir / "ha-config"
    saved = yaml.safe_load((config / "automations.yaml").read_text())
    assert [a["alias"] for a in saved if a["id"] == "demo-test"] == [automation["alias"]]
    assert yaml.safe_load((config / "scripts.yaml").read_text())["demo_script"] == script


def save_in_the_editors(ha: str, ready: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The user guide's example automation and a script, saved as the editors save them.

    The editor's save writes the file and reloads in the background; the blocking reload here
    waits for it. The entity appears only if configuration.yaml includes the file.
    """
    owner = next(u for u in ready["homeassistant"]["users"] if u["admin"])
    token = ha_token(ha, owner["username"], owner["password"])
    automation = guide_automation()
    script = {"alias": "Demo script", "sequence": [{"delay": "00:00:01"}]}
    for domain, key, config, entity_id in (
        ("automation", "demo-test", automation, "automation.relay_off_at_night"),
        ("script", "demo_script", script, "script.demo_script"),
    ):
        status, body = get(f"{ha}/api/config/{domain}/config/{key}", config, token=token)
        assert status == 200, body
        status, body = get(f"{ha}/api/services/{domain}/reload", {}, token=token)
        assert status == 200, body
        status, body = get(f"{ha}/api/states/{entity_id}", token=token)
        assert status == 200, body
    return automation, script
