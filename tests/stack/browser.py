"""Debian's Chromium through Playwright, offline, with a screenshot of every step.

Chromium comes from the Debian package scripts/setup installs; Playwright only drives it
(``playwright install`` downloads browsers and is never used). Every request that is not for a
local address is aborted: Home Assistant's frontend fetches brand icons from the internet, and a
test must not depend on, or reach, anything outside the machine.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Playwright, Route, ViewportSize

from .helpers import REPO

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
