"""Debian's Chromium through Playwright, offline, with a screenshot of every step.

Chromium comes from the Debian package scripts/setup installs; Playwright only drives it
(``playwright install`` downloads browsers and is never used). Every request that is not for a
local address is aborted: Home Assistant's frontend fetches brand icons from the internet, and a
test must not depend on, or reach, anything outside the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import pytest
from playwright.sync_api import (
    Browser,
    Locator,
    Page,
    Playwright,
    Route,
    ViewportSize,
    expect,
    sync_playwright,
)
from playwright.sync_api import Error as PlaywrightError

from .helpers import REPO, get, ha_token, ha_ws

CHROMIUM: Final = Path(os.environ.get("IOB_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS: Final = (
    "--headless",
    "--no-sandbox",  # tests run as root in CI; Chromium's sandbox refuses root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
LOCAL_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})
VIEWPORT: Final[ViewportSize] = {"width": 1280, "height": 800}
DOMAIN: Final = "iot_onboard"
# Bounds in milliseconds, not expectations: the frontend answers in well under a second.
STEP_TIMEOUT: Final = 60_000
RETRY_CLICK_AFTER: Final = 5_000


def artifacts_dir(name: str) -> Path:
    """An empty ``<artifacts>/<name>``: ``$IOB_ARTIFACTS``, else the checkout's build/artifacts.

    Emptied first so a run never shows an earlier run's screenshots.
    """
    root = Path(os.environ.get("IOB_ARTIFACTS") or REPO / "build" / "artifacts")
    directory = root / name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


def require_chromium() -> None:
    """Fail clearly (never skip) when Chromium is missing: before a test starts anything."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"Chromium is missing: {CHROMIUM} is not an executable. Run scripts/setup (it "
            "installs Debian's package: apt-get install -y chromium), or point IOB_CHROMIUM at "
            "a Chromium binary. Do not run `playwright install`: the tests use the system browser."
        )


def launch_chromium(playwright: Playwright) -> Browser:
    """Debian's Chromium, headless, without any of its own network traffic."""
    require_chromium()
    return playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=list(CHROMIUM_ARGS)
    )


@dataclass
class LocalOnly:
    """A route handler: local requests go through, every other one is aborted and noted."""

    blocked: list[str] = field(default_factory=list)

    def __call__(self, route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort("blockedbyclient")


@dataclass
class Screenshots:
    """Numbered full-window screenshots of one page, in the order the steps happen."""

    page: Page
    directory: Path
    taken: list[Path] = field(default_factory=list)

    def take(self, step: str) -> Path:
        path = self.directory / f"{len(self.taken) + 1:02d}-{step}.png"
        # Animations finished: a text field's label floats up only after its transition.
        self.page.screenshot(path=path, animations="disabled")
        self.taken.append(path)
        return path


def keep_logs(state_dir: Path, directory: Path) -> Path:
    """Copy the stack's logs next to the screenshots: a failed CI run keeps both."""
    kept = directory / "logs"
    kept.mkdir(exist_ok=True)
    logs = [*(state_dir / "logs").glob("*.log"), state_dir / "ha-config" / "home-assistant.log"]
    for log in logs:
        if log.is_file():
            shutil.copy2(log, kept / log.name)
    return kept


def click_until(target: Locator, shown: Locator) -> None:
    """Click until ``shown`` appears: a click while the frontend still starts up is lost."""
    deadline = time.monotonic() + STEP_TIMEOUT / 1000
    while True:
        target.click()
        try:
            expect(shown).to_be_visible(timeout=RETRY_CLICK_AFTER)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        else:
            return


def see(dialog: Locator, what: Locator, timeout: float) -> None:
    """``what`` becomes visible; else fail quoting any error the flow dialog shows."""
    try:
        expect(what).to_be_visible(timeout=timeout)
    except AssertionError as err:
        errors = [t for t in dialog.locator("ha-alert").all_inner_texts() if t.strip()]
        shown = f" The dialog shows: {errors}" if errors else ""
        raise AssertionError(f"{err}{shown}") from err


def log_in(
    page: Page, base: str, username: str, password: str, before: Callable[[], object] = list
) -> None:
    """HA's login page (``before``: called with the form filled, before "Log in").

    The frontend keeps its tokens in localStorage once signed in.
    """
    page.goto(base)
    page.get_by_role("textbox", name="Username").fill(username)
    page.get_by_role("textbox", name="Password").fill(password)
    before()
    page.get_by_role("button", name="Log in").click()
    page.wait_for_function("localStorage.getItem('hassTokens') !== null")


def open_devices_and_services(page: Page) -> None:
    """Settings → Devices & services, from any page of the signed-in frontend."""
    devices_and_services = page.get_by_role("menuitem", name=re.compile("^Devices & services"))
    click_until(page.get_by_role("option", name="Settings").first, devices_and_services)
    devices_and_services.click()
    page.wait_for_url("**/config/integrations/dashboard")


def entity_states(base: str, token: str) -> list[tuple[str | None, str | None, str]]:
    """(device name, entity name, state) of every entity of the integration, through HA."""
    template = (
        "{% set ns = namespace(rows=[]) %}"
        f"{{% for e in integration_entities('{DOMAIN}') %}}"
        "{% set ns.rows = ns.rows + [[device_attr(e, 'name'), state_attr(e, 'friendly_name'),"
        " states(e)]] %}{% endfor %}{{ ns.rows | tojson }}"
    )
    status, raw = get(f"{base}/api/template", {"template": template}, token=token)
    assert status == 200, raw
    rows: list[list[str | None]] = json.loads(raw)
    return [(device, name, str(state)) for device, name, state in rows]


def flows_in_progress(ready: dict[str, Any]) -> str:
    """For a failure's message: the flows Home Assistant itself has in progress."""
    base = ready["homeassistant"]["url"]
    owner = next(u for u in ready["homeassistant"]["users"] if u["admin"])
    try:
        token = ha_token(base, owner["username"], owner["password"])
        # Its own thread: ha_ws runs an event loop, and Playwright's runs in this one.
        with ThreadPoolExecutor(1) as pool:
            command = {"type": "config_entries/flow/progress"}
            flows = pool.submit(ha_ws, base, token, command).result()
    except (AssertionError, OSError, aiohttp.ClientError) as err:
        return f"Home Assistant's flows in progress: cannot list them ({err!r})"
    return f"Home Assistant's flows in progress: {flows}"


@contextlib.contextmanager
def shown_screenshots(directory: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Path]:
    """``directory``, named with its screenshots (past pytest's capture) pass or fail."""
    try:
        yield directory
    finally:
        with capsys.disabled():
            shots = sorted(p.name for p in directory.glob("*.png"))
            logs = " (and the stack's logs in logs/)" if (directory / "logs").is_dir() else ""
            print(f"\nbrowser test screenshots ({len(shots)}): {directory}{logs}")  # noqa: T201


@contextlib.contextmanager
def browsing(
    directory: Path, ready: dict[str, Any], state_dir: Path
) -> Iterator[tuple[Page, Screenshots]]:
    """A page of Debian's Chromium (local requests only) and its screenshots in ``directory``.

    A failed step leaves a last screenshot, the stack's logs next to them, and notes on the
    error: Home Assistant's flows in progress and the requests refused.
    """
    local_only = LocalOnly()
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(STEP_TIMEOUT)
        page.route("**/*", local_only)
        shots = Screenshots(page, directory)
        try:
            yield page, shots
        except (AssertionError, PlaywrightError) as err:
            shots.take("failure")
            keep_logs(state_dir, directory)
            err.add_note(flows_in_progress(ready))
            err.add_note(f"Requests refused (not local): {sorted(set(local_only.blocked))}")
            raise
        finally:
            browser.close()
