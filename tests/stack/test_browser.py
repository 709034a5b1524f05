"""A person onboards a discovered device in Home Assistant's own UI, in a real browser.

test_onboarding_through_ha.py drives the same flow over the frontend's APIs; this test clicks
through the frontend itself (Debian's Chromium, headless, through Playwright) against the demo
stack: HA's login page, Settings → Devices & services, the discovered device's card, every step
of the config-flow dialog, then the device's page with its entities. A screenshot of each step
lands in ``$IOB_ARTIFACTS/browser`` (default build/artifacts/browser); the README's
docs/images/onboarding-*.png are copies of some of them.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from .browser import (
    DOMAIN,
    STEP_TIMEOUT,
    Screenshots,
    artifacts_dir,
    browsing,
    entity_states,
    log_in,
    open_devices_and_services,
    require_chromium,
    see,
    shown_screenshots,
)
from .helpers import Orchestrator, ha_token, processes_mentioning

HOUSEHOLD = "Demo home"
# Bounds in milliseconds, not expectations: HA's zeroconf finds the device in about one
# second, the commit takes a few seconds.
DISCOVERY_TIMEOUT = 90_000
COMMIT_TIMEOUT = 240_000
ENTITIES_TIMEOUT = 90_000


@pytest.fixture
def screenshot_dir(capsys: pytest.CaptureFixture[str]) -> Iterator[Path]:
    """Where this test's screenshots go."""
    with shown_screenshots(artifacts_dir("browser"), capsys) as directory:
        yield directory


def submit_until(dialog: Locator, heading: str | re.Pattern[str]) -> None:
    """Submit the dialog's form and wait for the next step; fail with the form's own error."""
    dialog.get_by_role("button", name="Submit").click()
    see(dialog, dialog.get_by_role("heading", name=heading), STEP_TIMEOUT)


def device_entities(base: str, token: str) -> dict[str, str]:
    """Name (as the device page shows it: without the device's name) → state, per entity."""
    return {
        name.removeprefix(device or "").strip() or name: state
        for device, name, state in entity_states(base, token)
        if name is not None
    }


@pytest.mark.slow
def test_a_person_onboards_the_discovered_device_in_the_browser(
    state_dir: Path, screenshot_dir: Path
) -> None:
    require_chromium()
    stack = Orchestrator("--state-dir", str(state_dir), "--ha-port", "0", "--devices", "1")
    try:
        ready = stack.wait_ready()
        with browsing(screenshot_dir, ready, state_dir) as (page, shots):
            person = Person(page, shots, ready)
            person.logs_in()
            # The demo's account service announces itself (its card is named by its address).
            open_devices_and_services(page)
            expect(person.service_card).to_be_visible(timeout=DISCOVERY_TIMEOUT)
            person.adds_the_discovered_device()
            person.completes_the_flow()
            # Its household is set up now, by the device's flow: the service's card went too.
            page.goto(f"{person.base}/config/integrations/dashboard")
            expect(person.service_card).to_have_count(0)
            person.sees_the_entities()

        stack.process.send_signal(signal.SIGINT)
        assert stack.wait() == 0, stack.output
    finally:
        stack.kill()
    assert processes_mentioning(str(state_dir)) == {}


class Person:
    """What a person does in the browser, step by step, with the ready document at hand."""

    def __init__(self, page: Page, shots: Screenshots, ready: dict[str, Any]) -> None:
        self.page = page
        self.shots = shots
        self.ready = ready
        self.base: str = ready["homeassistant"]["url"]
        self.owner = next(u for u in ready["homeassistant"]["users"] if u["admin"])
        (self.device,) = ready["devices"]
        self.dialog = page.locator("dialog-data-entry-flow")
        #: The household the device joins (named in the sign-in form here).
        self.household = HOUSEHOLD
        # The card's title: the device's own name (advertised in its zeroconf TXT record).
        self.card = page.locator("ha-config-flow-card").filter(has_text=self.device["name"])
        self.service_card = page.locator("ha-config-flow-card").filter(
            has_text=self.ready["account_service"]["url"]
        )

    def logs_in(self) -> None:
        """HA's login page; the frontend keeps its tokens in localStorage once signed in."""
        log_in(
            self.page,
            self.base,
            self.owner["username"],
            self.owner["password"],
            lambda: self.shots.take("login"),
        )

    def adds_the_discovered_device(self) -> None:
        """Settings → Devices & services: HA's zeroconf found the device; "Add" on its card."""
        page = self.page
        open_devices_and_services(page)
        expect(self.card.get_by_role("button", name="Add")).to_be_visible(timeout=DISCOVERY_TIMEOUT)
        expect(page.get_by_text("Discovered", exact=True)).to_be_visible()
        self.shots.take("discovered")
        self.card.get_by_role("button", name="Add").click()
        see(self.dialog, self.dialog.get_by_role("heading", name="New device found"), STEP_TIMEOUT)
        # The setup code on the first screen: typed from the label, as 12345-67890.
        code = self.dialog.get_by_role("textbox", name=re.compile(r"^Setup code or QR text"))
        code.fill(self.device["manual_code"])
        self.shots.take("confirm")

    def completes_the_flow(self) -> None:
        """Sign-in (household included), then the Wi-Fi by the router's WPS button: every step
        after the first one. (The add-on's browser test types the Wi-Fi password.)"""
        dialog, shots = self.dialog, self.shots
        account = next(a for a in self.ready["account_service"]["accounts"] if not a["admin"])

        submit_until(dialog, "Sign in to your account service")
        # The demo's service announces itself: its address is filled in, not typed.
        url = self.ready["account_service"]["url"]
        expect(dialog.get_by_role("textbox", name="Account service URL")).to_have_value(url)
        dialog.get_by_role("textbox", name="E-mail").fill(account["email"])
        dialog.get_by_role("textbox", name="Password").fill(account["password"])
        # The demo's account is fresh (a new state directory): this form names its household.
        dialog.get_by_role("textbox", name="Household name").fill(self.household)
        shots.take("account")
        # The code typed on the first screen is checked once signed in: no code form.
        dialog.get_by_role("button", name="Submit").click()
        self.joins_the_wifi(by_wps=True)

    def joins_the_wifi(self, *, by_wps: bool = False) -> None:
        """The Wi-Fi form (the form before it submitted), progress, success.

        ``by_wps``: no password typed; the router's WPS button (the demo's router counts it as
        pressed) on the WPS step, which says what to press and where the key goes.
        """
        dialog, shots = self.dialog, self.shots
        home = next(w for w in self.ready["wifi"] if w["ssid"] == "Home")
        # The networks the device itself scanned; "Home" and its passphrase from the document.
        see(dialog, dialog.get_by_role("heading", name=re.compile("^Wi-Fi for ")), STEP_TIMEOUT)
        dialog.get_by_role("radio", name=re.compile(rf"^{re.escape(home['ssid'])} · ")).check()
        if by_wps:
            wps = re.compile(r"^Join with the router's WPS button")
            box = dialog.get_by_role("switch", name=wps).or_(
                dialog.get_by_role("checkbox", name=wps)
            )
            box.first.click()
            shots.take("wifi")
            dialog.get_by_role("button", name="Submit").click()
            see(
                dialog,
                dialog.get_by_role("heading", name="Press the router's WPS button"),
                STEP_TIMEOUT,
            )
            expect(dialog.get_by_text("Home Assistant never sees it")).to_be_visible()
            shots.take("wps")
        else:
            dialog.get_by_role("textbox", name="Password").fill(home["passphrase"])
            shots.take("wifi")

        # The progress step may be over before the frontend paints it: either is fine here.
        dialog.get_by_role("button", name="Submit").click()
        progress = dialog.get_by_text("is joining the network and confirming")
        success = dialog.get_by_role("heading", name="Success!")
        see(dialog, progress.or_(success), STEP_TIMEOUT)
        shots.take("progress")
        see(dialog, success, COMMIT_TIMEOUT)
        # The device's own entry (its household entry was created just before): the success
        # screen lists the device with the area picker.
        # Named by the device's own name, the name field's default.
        created = re.compile(rf"Created configuration for {re.escape(self.device['name'])}\.")
        expect(dialog.locator("p").filter(has_text=created)).to_be_visible()
        # The device itself, under the same name, with the area picker.
        expect(dialog.get_by_text(self.device["name"], exact=True)).to_be_visible()
        expect(dialog.get_by_role("combobox", name="Area")).to_be_visible()
        shots.take("success")
        dialog.get_by_role("button", name="Finish").click()
        expect(dialog.get_by_role("heading")).to_have_count(0)
        # The discovery ended in the entry: nothing is left to add.
        expect(self.card).to_have_count(0)

    def sees_the_entities(self) -> None:
        """The integration's page → its one device → the device's page, every entity live."""
        page = self.page
        page.goto(f"{self.base}/config/integrations/integration/{DOMAIN}")
        expect(page.get_by_text(self.household, exact=True)).to_be_visible()
        self.shots.take("integration")
        page.get_by_role("link", name=re.compile(r"^1 device")).first.click()
        page.get_by_text(self.device["name"], exact=True).first.click()
        page.wait_for_url("**/config/devices/device/*")
        token = ha_token(self.base, self.owner["username"], self.owner["password"])
        names = list(device_entities(self.base, token))
        assert names, "the integration has no entities"
        for name in names:
            expect(page.get_by_text(name, exact=True).first).to_be_visible(timeout=ENTITIES_TIMEOUT)
        # Live and online: the page shows no entity unavailable (a switch shows it only as a
        # greyed toggle: Home Assistant's states say it for every entity).
        unavailable = page.get_by_text("Unavailable", exact=True)
        expect(unavailable).to_have_count(0, timeout=ENTITIES_TIMEOUT)
        deadline = time.monotonic() + ENTITIES_TIMEOUT / 1000
        while "unavailable" in (states := device_entities(self.base, token)).values():
            assert time.monotonic() < deadline, f"entities still unavailable: {states}"
            time.sleep(0.5)
        self.shots.take("device")
