"""The fault tests' stack: the demo stack under ``--control``, and what a person does in HA.

One stack per test module (starting Home Assistant, the broker, the account service and two
devices costs most of a minute); the helpers below drive Home Assistant's real config flow
over the APIs its frontend uses, and read the truth from the device (``/iob/v1/info``) and the
account service (the maker's registry view: who owns a device).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .helpers import REPO, Orchestrator, free_port, get, ha_token, ha_ws, kill_leftovers
from .test_onboarding_through_ha import (
    DOMAIN,
    Ha,
    device_entities,
    network_value,
    wait_for,
)

HOUSEHOLD = "Fault home"


class AlreadyInProgressError(Exception):
    """Home Assistant refused a flow: another flow of the same device is open."""


@dataclass(frozen=True)
class Network:
    """A network of the fault tests' simulated radio environment."""

    ssid: str
    passphrase: str


HOME = Network("Home", "correct horse battery staple")
#: The passphrase a person mistypes.
WRONG = Network("Home", "correct horse battery stapler")
#: A network the device needs a while to join: the window between claim and confirmation.
SLOW = Network("Slow", "slow but steady 2024")
SLOW_DELAY = 15.0
# Bounds, not expectations.
FLOW_TIMEOUT = 60.0
COMMIT_TIMEOUT = 240.0
ENTITIES_TIMEOUT = 120.0
#: Home Assistant and the device reconnect with backoff up to 60 s.
RECONNECT_TIMEOUT = 180.0

SCENARIO = f"""\
# The fault tests' radio environment: the demo's networks and a slow one.
[[networks]]
ssid = "{HOME.ssid}"
passphrase = "{HOME.passphrase}"
strength = 80
[[networks]]
ssid = "Neighbour"
passphrase = "not-your-network-2024"
strength = 35
[[networks]]
ssid = "{SLOW.ssid}"
passphrase = "{SLOW.passphrase}"
strength = 60
connect_delay = {SLOW_DELAY}
"""


@dataclass
class FaultStack:
    """The running stack, the owner's Home Assistant session and the stack's accounts."""

    orchestrator: Orchestrator
    ready: dict[str, Any]
    ha: Ha
    state_dir: Path
    #: Parts stopped by :meth:`command` and not started again.
    down: set[str] = field(default_factory=set)

    def command(self, op: str, part: str) -> dict[str, Any]:
        """Stop, kill or start the broker or the account service; the orchestrator's answer."""
        answer = self.orchestrator.command(op, part)
        if op == "start":
            self.down.discard(part)
        else:
            self.down.add(part)
        return answer

    def device(self, index: int) -> dict[str, Any]:
        """The ready document's device ``index`` (1-based)."""
        found: dict[str, Any] = next(d for d in self.ready["devices"] if d["index"] == index)
        return found

    @property
    def relay_url(self) -> str:
        """The account service as the flow and the devices reach it."""
        url: str = self.ready["account_service"]["url"]
        return url

    def account(self, *, admin: bool) -> dict[str, Any]:
        """The demo owner's account (``admin=False``) or the maker's (``admin=True``)."""
        found: dict[str, Any] = next(
            a for a in self.ready["account_service"]["accounts"] if a["admin"] is admin
        )
        return found


@contextlib.contextmanager
def running_fault_stack() -> Iterator[FaultStack]:
    """Two devices, the slow network in range, the broker and relay under ``--control``."""
    # Not tmp_path: it lies under a root-only 0700 directory the broker's user cannot reach.
    state_dir = Path(tempfile.mkdtemp(prefix="iob-faults-"))
    scenario = state_dir.parent / f"{state_dir.name}-wifi.toml"
    scenario.write_text(SCENARIO, encoding="utf-8")
    stack = Orchestrator(
        "--state-dir",
        str(state_dir),
        "--ha-port",
        str(free_port()),
        "--devices",
        "2",
        "--wifi-scenario",
        str(scenario),
        control=True,
    )
    try:
        ready = stack.wait_ready()
        base = ready["homeassistant"]["url"]
        owner = next(u for u in ready["homeassistant"]["users"] if u["admin"])
        ha = Ha(base, ha_token(base, owner["username"], owner["password"]))
        yield FaultStack(stack, ready, ha, state_dir)
    finally:
        stack.kill()
        kill_leftovers(str(state_dir))
        shutil.rmtree(state_dir, ignore_errors=True)
        scenario.unlink(missing_ok=True)


# --- the truth at the device and at the account service ------------------------------------


def device_info(device: dict[str, Any]) -> dict[str, Any]:
    """The device's own ``/iob/v1/info`` (id, state, window)."""
    status, raw = get(f"{device['url']}/iob/v1/info")
    assert status == 200, raw
    info: dict[str, Any] = json.loads(raw)
    return info


def relay_token(stack: FaultStack, *, admin: bool) -> str:
    """An access token of the maker (``admin``) or the demo owner at the account service."""
    account = stack.account(admin=admin)
    status, raw = get(
        f"{stack.relay_url}/v1/auth/sign-in",
        {"email": account["email"], "password": account["password"]},
    )
    assert status == 200, raw
    token: str = json.loads(raw)["access_token"]
    return token


def registry_owner(stack: FaultStack, device_id: str) -> str | None:
    """The household that owns ``device_id`` at the account service (None: unclaimed)."""
    status, raw = get(
        f"{stack.relay_url}/v1/admin/registry/devices/{device_id}",
        token=relay_token(stack, admin=True),
    )
    assert status == 200, raw
    owner: str | None = json.loads(raw)["household_id"]
    return owner


def household_entries(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The integration's household entries among HA's config entries.

    Every onboarded device has an entry of its own too; only the household entry has options
    (the roles), which is how the entry list (no unique ids in it) tells the two apart.
    """
    return [e for e in entries if e["domain"] == DOMAIN and e["supports_options"]]


def household_id(stack: FaultStack) -> str:
    """The id of the Home Assistant entry's household (its unique id)."""
    entries = household_entries(stack.ha.call("/api/config/config_entries/entry"))
    assert len(entries) == 1, entries
    status, raw = get(f"{stack.relay_url}/v1/households", token=relay_token(stack, admin=False))
    assert status == 200, raw
    households = [h for h in json.loads(raw)["households"] if h["name"] == entries[0]["title"]]
    assert len(households) == 1, households
    found: str = households[0]["household_id"]
    return found


#: Looks the device's zeroconf record up the way Home Assistant's zeroconf does (run inside
#: the stack's network namespace: argv[1] is the device id; prints the record's TXT as JSON).
_BROWSE = """
import asyncio, json, sys
from zeroconf import DNSQuestionType, IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

async def main():
    zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    try:
        kind = "_iot-onboard._tcp.local."
        info = AsyncServiceInfo(kind, f"iob-{sys.argv[1]}.{kind}")
        found = await info.async_request(zc.zeroconf, 3000, question_type=DNSQuestionType.QM)
        print(json.dumps(info.decoded_properties if found else None))
    finally:
        await zc.async_close()

asyncio.run(main())
"""


def advertisement(stack: FaultStack, device_id: str) -> dict[str, Any] | None:
    """The device's zeroconf TXT record as the stack's network sees it (None: not found)."""
    # An isolated stack (root) runs in the orchestrator's own network namespace.
    inside = (
        ["nsenter", f"--net=/proc/{stack.orchestrator.process.pid}/ns/net"]
        if stack.ready["isolated"]
        else []
    )
    done = subprocess.run(
        [*inside, sys.executable, "-c", _BROWSE, device_id],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=FLOW_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    record: dict[str, Any] | None = json.loads(done.stdout)
    return record


# --- Home Assistant: the config flow as the frontend drives it -----------------------------


def _is_flow_of(flow: dict[str, Any], device_id: str) -> bool:
    """Whether a discovery flow is about ``device_id``.

    The flow's unique id is the device id, or its first characters (the short id a Bluetooth
    advertisement carries, so both discoveries of one device are one flow).
    """
    unique_id = flow["context"].get("unique_id") or ""
    return bool(unique_id) and device_id.startswith(unique_id)


def discovery_flow(stack: FaultStack, device_id: str) -> str:
    """The zeroconf discovery flow Home Assistant opened for ``device_id``: its id."""
    flow = wait_for(
        f"a zeroconf discovery flow of {device_id}",
        lambda: next(
            (
                f
                for f in stack.ha.discovered()
                if f["context"]["source"] == "zeroconf" and _is_flow_of(f, device_id)
            ),
            None,
        ),
        FLOW_TIMEOUT,
    )
    assert flow["step_id"] == "discovery_confirm", flow
    flow_id: str = flow["flow_id"]
    return flow_id


def open_device(stack: FaultStack, flow_id: str, device: dict[str, Any]) -> dict[str, Any]:
    """Confirm the discovery, sign in (first household only), give the QR: the Wi-Fi form."""
    ha = stack.ha
    result = ha.step(flow_id, {})
    if result["step_id"] == "account":
        result = sign_in(stack, flow_id)
    assert result["step_id"] == "credentials", result
    result = ha.step(flow_id, {"setup_code": device["qr_payload"]})
    assert result["step_id"] == "wifi", result
    return result


def sign_in(stack: FaultStack, flow_id: str) -> dict[str, Any]:
    """The account form: the demo owner signs in (and names the household if it has none)."""
    account = stack.account(admin=False)
    result = stack.ha.step(
        flow_id,
        {
            "account_url": stack.relay_url,
            "email": account["email"],
            "password": account["password"],
            "create_account": False,
            "household_name": HOUSEHOLD,
        },
    )
    if result.get("step_id") == "household":
        result = stack.ha.step(flow_id, {"household_name": HOUSEHOLD})
    return result


def add_by_hand(stack: FaultStack, device: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Add device → "by hand": address, port and the QR text; the flow id and its Wi-Fi form."""
    ha = stack.ha
    flow = ha.call("/api/config/config_entries/flow", {"handler": DOMAIN})
    if flow.get("step_id") == "account":  # no household entry yet: that comes first
        done = sign_in(stack, flow["flow_id"])
        assert done["type"] == "create_entry", done
        flow = ha.call("/api/config/config_entries/flow", {"handler": DOMAIN})
    flow_id: str = flow["flow_id"]
    assert flow["type"] == "menu", flow
    menu = ha.step(flow_id, {"next_step_id": "manual_device"})
    assert menu["step_id"] == "manual_device", menu
    form: dict[str, Any] = ha.call(
        f"/api/config/config_entries/flow/{flow_id}",
        {"host": "127.0.0.1", "port": device["port"], "setup_code": device["qr_payload"]},
    )
    if form.get("reason") == "already_in_progress":
        raise AlreadyInProgressError(flow_id)
    assert (form["type"], form["step_id"]) == ("form", "wifi"), form
    assert not form.get("errors"), form
    return flow_id, form


def submit_wifi(
    stack: FaultStack, flow_id: str, form: dict[str, Any], network: Network
) -> dict[str, Any]:
    """Choose ``network`` on the Wi-Fi form; the flow's answer as it is (no checks)."""
    result: dict[str, Any] = stack.ha.call(
        f"/api/config/config_entries/flow/{flow_id}",
        {"network": network_value(form, network.ssid), "passphrase": network.passphrase},
    )
    return result


def commit_end(stack: FaultStack, flow_id: str, answer: dict[str, Any]) -> dict[str, Any]:
    """The step after the commit: ``answer`` to the Wi-Fi form itself when the commit ended
    inside the flow's inline wait, else the progress screen's end."""
    if answer["type"] == "progress":
        assert answer["step_id"] == "provision", answer
        return progress_end(stack, flow_id)
    return answer


def progress_end(stack: FaultStack, flow_id: str) -> dict[str, Any]:
    """Wait until the provision step ends: the flow's next step (read once, as the UI does)."""

    def ended() -> dict[str, Any] | None:
        now: dict[str, Any] = stack.ha.call(f"/api/config/config_entries/flow/{flow_id}")
        return None if now["type"] == "progress" else now

    return wait_for("the end of the provision step", ended, COMMIT_TIMEOUT)


def flow_open(stack: FaultStack, flow_id: str) -> bool:
    """Whether ``flow_id`` is still in progress (listed like the UI lists it)."""
    flows = ha_ws(stack.ha.base, stack.ha.token, {"type": "config_entries/flow/progress"})
    return any(f["flow_id"] == flow_id for f in flows)


def error_message(stack: FaultStack, key: str) -> str:
    """The English text the config flow shows for the form error ``key``."""
    translations = ha_ws(
        stack.ha.base,
        stack.ha.token,
        {
            "type": "frontend/get_translations",
            "language": "en",
            "category": "config",
            "integration": [DOMAIN],
        },
    )
    text: str = translations["resources"][f"component.{DOMAIN}.config.error.{key}"]
    return text


def finish_onboarding(
    stack: FaultStack, flow_id: str, device_id: str, answer: dict[str, Any]
) -> list[dict[str, Any]]:
    """After a successful commit (``answer``: the Wi-Fi form's): the flow ended well and every
    entity is available."""
    result = commit_end(stack, flow_id, answer)
    assert result["type"] == "create_entry", result  # the device's entry, every time
    return wait_for(
        f"the entities of {device_id}, every one available",
        lambda: device_entities(stack.ha, device_id),
        ENTITIES_TIMEOUT,
    )


def ensure_onboarded(stack: FaultStack, index: int) -> None:
    """Device ``index`` owned and online; if not (an earlier test failed), onboard it by hand.

    A discovery flow of the device (left open, or appearing meanwhile) would make the manual
    flow abort as ``already_in_progress``: those are removed first, and again on that abort.
    """
    device = stack.device(index)
    if device_info(device)["state"] == "online":
        return
    for _ in range(3):
        for flow in stack.ha.discovered():
            if _is_flow_of(flow, device["device_id"]):
                status, raw = get(
                    f"{stack.ha.base}/api/config/config_entries/flow/{flow['flow_id']}",
                    token=stack.ha.token,
                    method="DELETE",
                )
                assert status == 200, raw
        try:
            flow_id, form = add_by_hand(stack, device)
        except AlreadyInProgressError:
            continue
        result = submit_wifi(stack, flow_id, form, HOME)
        finish_onboarding(stack, flow_id, device["device_id"], result)
        return
    pytest.fail(f"device {index}: a discovery flow kept the manual flow from starting")


def entity_states(stack: FaultStack, device_id: str) -> list[dict[str, Any]]:
    """The current states of ``device_id``'s entities (empty when HA has none)."""
    entity_ids: list[str] = stack.ha.template(
        f"{{{{ integration_entities('{DOMAIN}') "
        f"| select('is_device_attr', 'serial_number', '{device_id}') | list | tojson }}}}"
    )
    states = {s["entity_id"]: s for s in stack.ha.call("/api/states")}
    return [states[e] for e in entity_ids if e in states]


def ha_device_id(stack: FaultStack, device_id: str) -> str | None:
    """Home Assistant's device registry id for ``device_id`` (None: HA has no such device)."""
    found: str | None = stack.ha.template(
        f"{{{{ integration_entities('{DOMAIN}') "
        f"| select('is_device_attr', 'serial_number', '{device_id}') "
        "| map('device_id') | first | default(none) | tojson }}"
    )
    return found


def map_owner(stack: FaultStack) -> None:
    """Map the demo owner's HA user to the household's owner (options → roles)."""
    ha = stack.ha
    (entry,) = household_entries(ha.call("/api/config/config_entries/entry"))
    user = ha_ws(ha.base, ha.token, {"type": "auth/current_user"})
    flow = ha.call("/api/config/config_entries/options/flow", {"handler": entry["entry_id"]})
    flow_id = flow["flow_id"]
    path = f"/api/config/config_entries/options/flow/{flow_id}"
    form = ha.call(path, {"next_step_id": "user_role"})
    assert form["step_id"] == "user_role", form
    done = ha.call(path, {"user": user["id"], "role": "owner"})
    assert done["type"] == "create_entry", done
