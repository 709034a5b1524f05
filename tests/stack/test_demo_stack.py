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

import pytest

from .helpers import (
    READY_PREFIX,
    Orchestrator,
    free_port,
    get,
    ha_login,
    processes_mentioning,
    refused,
)


@pytest.mark.slow
def test_stack_comes_up_answers_and_stops_cleanly_on_sigint(state_dir: Path) -> None:
    stack = Orchestrator("--state-dir", str(state_dir), "--ha-port", str(free_port()))
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


@pytest.mark.slow
def test_a_failure_while_starting_names_its_log_and_leaves_nothing_running(
    state_dir: Path,
) -> None:
    # A first run makes the state (no Home Assistant: quicker); then the database is broken.
    first = Orchestrator("--state-dir", str(state_dir), "--no-ha", "--devices", "1")
    try:
        first.wait_ready()
        first.process.send_signal(signal.SIGTERM)
        assert first.wait() == 0, first.output
    finally:
        first.kill()
    (state_dir / "relay" / "relay.db").write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (state_dir / "relay" / f"relay.db{suffix}").unlink(missing_ok=True)

    second = Orchestrator("--state-dir", str(state_dir), "--no-ha", "--devices", "1")
    try:
        assert second.wait() == 1
    finally:
        second.kill()
    assert "error: cloud_relay registry import" in second.output
    assert f"Its log is {state_dir / 'logs' / 'setup.log'}" in second.output
    assert "stopped Mosquitto" in second.output
    assert READY_PREFIX not in second.output
    assert processes_mentioning(str(state_dir)) == {}
