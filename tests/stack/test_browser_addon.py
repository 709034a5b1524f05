"""Home Assistant OS in a real browser: the add-on is discovered, one confirm links the
household, and a device is onboarded on the add-on's account service.

Home Assistant runs with its real ``hassio`` integration against a stand-in Supervisor
(tests/stack/supervisor.py); the add-on is the real one (its run script, as
tests/addon/test_run_script.py starts it: outside a container, /data in a temporary directory)
and announces itself to the stand-in, which pushes the discovery to Home Assistant as the
Supervisor does. Then Chromium: Settings → Devices & services shows the add-on's card, one
Submit links Home Assistant to a new household on the add-on's service (no URL, e-mail or
password typed), and the demo's simulated device is onboarded through the UI on that service
to its entities. Screenshots go to ``$IOB_ARTIFACTS/addon``; docs/images/addon-*.png are copies
of the card's and the confirm step's.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from playwright.sync_api import Page, expect

from .addon import ANNOUNCE_TIMEOUT, Addon, import_device, running_supervisor
from .browser import (
    DOMAIN,
    STEP_TIMEOUT,
    Screenshots,
    artifacts_dir,
    browsing,
    keep_logs,
    open_devices_and_services,
    require_chromium,
    see,
    shown_screenshots,
)
from .helpers import Orchestrator, get, ha_token, processes_mentioning
from .supervisor import StandInSupervisor
from .test_browser import Person

#: One record of Home Assistant's log: its first line and any traceback under it.
LOG_RECORD: Final = re.compile(
    r"^\d{4}-\d\d-\d\d \S+ (\w+) .*?(?=^\d{4}-\d\d-\d\d |\Z)", re.MULTILINE | re.DOTALL
)
#: The Supervisor integration's loggers, or its code or its client's in a traceback.
HASSIO_CODE: Final = re.compile(
    r"\[(homeassistant\.components\.hassio|aiohasupervisor)|/components/hassio/|/aiohasupervisor/"
)
#: The one warning the demo's configuration causes: it binds HTTP to 127.0.0.1, which the
#: Supervisor's watchdog of Home Assistant cannot use (HA OS never sets server_host).
SERVER_HOST_WARNING: Final = "Found incompatible HTTP option 'server_host'"


def require_private_network() -> None:
    """Home Assistant runs without the demo's own namespace here (it must reach the stand-in):
    the test's network has to be loopback only, as scripts/test's ``unshare --net`` gives."""
    interfaces = sorted(name for _, name in socket.if_nameindex())
    if interfaces != ["lo"]:
        pytest.fail(
            f"this test needs a network namespace with only loopback (found {interfaces}): "
            "Home Assistant's zeroconf must not reach real interfaces. Run it as scripts/test "
            "does: unshare --net /bin/sh -c 'ip link set lo up && exec \"$@\"' sh "
            ".venv/bin/python -m pytest -p no:homeassistant tests/stack/test_browser_addon.py"
        )


@pytest.fixture
def loopback_multicast() -> Iterator[None]:
    """Multicast on this namespace's loopback while the test runs, as the demo's own namespace
    has it (scripts/demo/isolation.py): without it Home Assistant's zeroconf fails (ENODEV)."""
    require_private_network()
    route = ["ip", "route", "add", "224.0.0.0/4", "dev", "lo"]
    subprocess.run(["ip", "link", "set", "lo", "multicast", "on"], check=True, timeout=10)
    added = subprocess.run(route, check=False, timeout=10, capture_output=True).returncode == 0
    try:
        yield
    finally:
        if added:
            subprocess.run(["ip", "route", "del", *route[3:]], check=False, timeout=10)
        subprocess.run(["ip", "link", "set", "lo", "multicast", "off"], check=False, timeout=10)


@pytest.fixture
def screenshot_dir(capsys: pytest.CaptureFixture[str]) -> Iterator[Path]:
    with shown_screenshots(artifacts_dir("addon"), capsys) as directory:
        yield directory


@pytest.fixture
def supervisor() -> Iterator[StandInSupervisor]:
    with running_supervisor() as stand_in:
        yield stand_in


def hassio_problems(ha_config: Path) -> list[str]:
    """Warnings and errors in Home Assistant's log that involve the Supervisor integration."""
    log = (ha_config / "home-assistant.log").read_text(encoding="utf-8", errors="replace")
    return [
        record.group(0)
        for record in LOG_RECORD.finditer(log)
        if record.group(1) in {"WARNING", "ERROR", "CRITICAL"}
        and HASSIO_CODE.search(record.group(0))
        and SERVER_HOST_WARNING not in record.group(0)
    ]


@pytest.mark.slow
@pytest.mark.usefixtures("loopback_multicast")
def test_the_addon_is_linked_in_one_click_and_a_device_is_onboarded_on_it(
    state_dir: Path, screenshot_dir: Path, supervisor: StandInSupervisor
) -> None:
    require_chromium()
    # This test's namespace is already private (and the stand-in listens in it): the stack
    # runs in it, without a namespace of its own.
    demo = ("--state-dir", str(state_dir), "--ha-port", "0", "--devices", "1")
    stack = Orchestrator(
        *demo,
        "--no-isolation",
        env={"SUPERVISOR": supervisor.address, "SUPERVISOR_TOKEN": supervisor.core_token},
    )
    addon: Addon | None = None
    failed = True
    try:
        ready = stack.wait_ready()
        ha_config = Path(ready["ha_config"])
        addon = Addon(supervisor)
        message_uuid, status = supervisor.wait_for_push(ANNOUNCE_TIMEOUT)
        assert status == 200, (status, addon.text())
        announced = supervisor.discoveries[message_uuid]
        assert announced["service"] == "iot_onboard"
        url = announced["config"]["url"]
        import_device(addon, ready["devices"][0]["label_dir"])

        household_name = clicks_through(ready, supervisor, url, state_dir, screenshot_dir)
        household, devices = linked_household(ha_config, url)
        assert (household["name"], household["role"]) == (household_name, "owner")
        assert devices == [ready["devices"][0]["device_id"]]
        assert supervisor_entry(ready) == "loaded"
        assert hassio_problems(ha_config) == []
        assert supervisor.unknown == []
        assert supervisor.refused == []
        assert addon.stop() == 0, addon.text()
        assert "Traceback" not in addon.text()
        assert processes_mentioning(str(addon.data)) == {}  # its broker and service too
        stack.process.send_signal(signal.SIGINT)
        assert stack.wait() == 0, stack.output
        failed = False
    finally:
        if failed:
            keep_logs(state_dir, screenshot_dir)
        if addon is not None:
            addon.stop()
            addon.remove(screenshot_dir / "logs" if failed else None)
        stack.kill()
    assert processes_mentioning(str(state_dir)) == {}


def clicks_through(
    ready: dict[str, Any], supervisor: StandInSupervisor, url: str, state_dir: Path, shots_dir: Path
) -> str:
    """The browser: the add-on's card and confirm, then the device; the household's name."""
    with browsing(shots_dir, ready, state_dir) as (page, shots):
        person = Person(page, shots, ready)
        person.household = ha_location(Path(ready["ha_config"]))
        person.logs_in()
        links_the_addon(page, shots, supervisor, url)
        # The device's first form (its setup code), then the Wi-Fi: no sign-in, the household
        # is the add-on's.
        person.adds_the_discovered_device()
        person.dialog.get_by_role("button", name="Submit").click()
        person.joins_the_wifi()
        person.sees_the_entities()
    return person.household


def ha_location(ha_config: Path) -> str:
    """Home Assistant's location name: the household the add-on's link names."""
    text = (ha_config / "configuration.yaml").read_text(encoding="utf-8")
    found = re.search(r"^  name: (.+)$", text, re.MULTILINE)
    assert found is not None, text
    return found.group(1).strip()


def links_the_addon(
    page: Page, shots: Screenshots, supervisor: StandInSupervisor, url: str
) -> None:
    """Settings → Devices & services: the add-on's card; its one confirm links the household."""
    name = supervisor.addon.config["name"]
    open_devices_and_services(page)
    card = page.locator("ha-config-flow-card").filter(has_text=name)
    expect(card.get_by_role("button", name="Add")).to_be_visible(timeout=STEP_TIMEOUT)
    shots.take("addon-discovered")
    card.get_by_role("button", name="Add").click()
    dialog = page.locator("dialog-data-entry-flow")
    see(dialog, dialog.get_by_role("heading", name="IoT Onboard add-on found"), STEP_TIMEOUT)
    expect(dialog.get_by_text(url)).to_be_visible()
    # Nothing to type: the form has no field.
    expect(dialog.get_by_role("textbox")).to_have_count(0)
    shots.take("addon-confirm")
    dialog.get_by_role("button", name="Submit").click()
    see(dialog, dialog.get_by_role("heading", name="Success!"), STEP_TIMEOUT)
    shots.take("addon-linked")
    dialog.get_by_role("button", name="Finish").click()
    expect(dialog.get_by_role("heading")).to_have_count(0)
    expect(card).to_have_count(0)


def linked_household(ha_config: Path, url: str) -> tuple[dict[str, Any], list[str]]:
    """The household Home Assistant's entry is linked to, and its devices' ids, as the add-on's
    service reports them to that entry's own credentials."""
    storage = json.loads((ha_config / ".storage" / "core.config_entries").read_text())
    (entry,) = (
        e for e in storage["data"]["entries"] if (e["domain"], e["source"]) == (DOMAIN, "hassio")
    )
    data = entry["data"]
    assert data["account_url"] == url, data["account_url"]
    household_url = f"{url}/v1/households/{data['household_id']}"
    status, household = get(household_url, token=data["access_token"])
    assert status == 200, household
    status, devices = get(household_url + "/devices", token=data["access_token"])
    assert status == 200, devices
    return json.loads(household), [d["device_id"] for d in json.loads(devices)["devices"]]


def supervisor_entry(ready: dict[str, Any]) -> str:
    """The state of Home Assistant's Supervisor entry (its add-on and system entities)."""
    base = ready["homeassistant"]["url"]
    owner = next(u for u in ready["homeassistant"]["users"] if u["admin"])
    token = ha_token(base, owner["username"], owner["password"])
    status, raw = get(f"{base}/api/config/config_entries/entry", token=token)
    assert status == 200, raw
    (entry,) = (e for e in json.loads(raw) if e["domain"] == "hassio")
    state: str = entry["state"]
    return state
