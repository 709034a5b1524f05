"""What onboarding asks of a person in Home Assistant's UI: forms, typing, reading, waiting.

The demo stack's real processes (bench/stack.py) with three device agents; Debian's Chromium
through Playwright (the stack tests' helpers, tests/stack/browser.py: offline, never
``playwright install``). A person signs in to Home Assistant, opens Settings → Devices &
services and onboards the first discovered device (signing in to the account service on the
way), then a later one, as tests/stack/test_browser.py does. Then Home Assistant OS, as
tests/stack/test_browser_addon.py runs it, on a second stack: Home Assistant with the stand-in
Supervisor and the add-on's real run script (tests/stack/addon.py; the benchmark's private
namespace has the loopback multicast route its zeroconf needs); the person adds the add-on's
card, whose one confirm links the household (no URL, e-mail or password), then onboards that
stack's device on the add-on's account service: the "first device (HA OS add-on)" column, with
the first device's targets. For every screen the benchmark records the flow's step id (from Home
Assistant's own answer to the frontend), the words a person sees on it (bench/klm.py's
SCREEN_PIECES and Piece.seen: rendered, not hidden or transparent, not clipped away; text below
the fold of the dialog's scrolling content counts, the rows of a select's menu outside its box
do not), the characters it types, the selections and clicks, and the system's wait: from the
click on the screen's button to the next screen shown (a new heading, at least half faded in,
with its Submit or Finish button), both on the page's clock, with one wait in the page; and, of
that wait, the time to Home Assistant's last answer. Each screen's screenshot and counted text
(with what was not counted, and why) go to build/bench/browser/NN-<device>-<step>.png and .txt.
The keystroke-level model (bench/klm.py: K 0.28 s, P 1.1 s, B 0.1 s, H 0.4 s, M 1.35 s, reading
at 240 words/min) turns that into the person's time.

The person takes the shortest honest path: a field that shows the right value (a default, a
suggested value, the strongest network preselected) keeps it, except the "remember this
Wi-Fi" switch, which the first device turns on (a household adds more devices).
The account service URL is not typed: the demo's service announces itself over zeroconf and
the sign-in form shows its address.

Screens are told apart by the flow's step id and its role in the data flow (:data:`STEPS`);
a step the benchmark does not know, or a required field it has no value for, stops it with a
message that says what to add. The baselines, measured in the same run: a bare load of Home
Assistant's frontend in the same browser (for the waits between forms) and the bare LAN
handshake + Wi-Fi + claim + commit of a third device (bench_onboarding.py's baseline, for
discovery → entities available).

    .venv/bin/python bench/bench_browser.py [--json FILE]      (about 1-2 minutes)
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import aiohttp
import klm
from bench_onboarding import ENTITIES, lan_baseline
from clients import entities_ready
from common import REPO, BenchError, Result, finish, isolate, median, parser, result, say
from demo_stack import DEMO_ACCOUNT, HA_USERS, HOME_WIFI, DeviceFacts
from klm import SCREEN_PIECES, Journey, Piece, Screen, Target, count_words, seen_text
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Locator, Page, Response, expect, sync_playwright
from stack import BenchStack, running_stack

from tests.stack.addon import ANNOUNCE_TIMEOUT, Addon, import_device, running_supervisor
from tests.stack.browser import (
    VIEWPORT,
    LocalOnly,
    entity_states,
    launch_chromium,
    log_in,
    open_devices_and_services,
)
from tests.stack.helpers import ha_token

#: Every flow step a person may see while onboarding, and its role in the data flow.
STEPS: Final = {
    "discovery_confirm": "confirm",
    "bluetooth_confirm": "confirm",
    "account": "account",
    "household": "account",
    "pick_household": "account",
    "credentials": "device",
    "wifi": "wifi",
    # Home Assistant OS: the add-on's card links the household (no URL, e-mail or password).
    "hassio_confirm": "account",
}
#: The journeys, as the table's columns.
COLUMNS: Final = {
    "first": "first device",
    "later": "later device",
    "addon": "first device (HA OS add-on)",
}
#: The add-on link's own card and success screen, told apart from the device's.
ADDON_SCREENS: Final = {"card": "add-on card", "create_entry": "add-on linked"}
HOUSEHOLD: Final = "Demo home"
TARGETS: Final = {
    "first": (Target("user time", 60, "s"), Target("forms before Wi-Fi", 3)),
    "later": (Target("user time", 15, "s"), Target("forms before Wi-Fi", 2)),
    # The add-on's link replaces the sign-in: the first device's targets.
    "addon": (Target("user time", 60, "s"), Target("forms before Wi-Fi", 3)),
}
FORM_WAIT_TARGET: Final = Target("form → next form wait, p50", 0.25, "s")
PAGE_LOADS: Final = 5
FLOW_API: Final = "/api/config/config_entries/flow/"
DASHBOARD: Final = "/config/integrations/dashboard"
#: Bounds, not expectations (seconds).
DISCOVERY_TIMEOUT: Final = 120.0
COMMIT_TIMEOUT: Final = 240.0
ENTITIES_TIMEOUT: Final = 120.0
POLL_MS: Final = 10
#: A screen's text is read until two reads SETTLE_MS apart agree.
SETTLE_MS: Final = 250
SETTLE_READS: Final = 40

#: Records the page-clock time of every click (the person's), before the frontend handles it.
CLICK_CLOCK: Final = (
    "document.addEventListener('click', () => { window.iobClicked = performance.now(); }, true)"
)
#: The next screen, once the dialog shows it: a new heading with a Submit, Finish or Close
#: button, or an error alert; ``{title, failed, at}`` (``at`` on the page clock), else null.
#: Checked every POLL_MS in the page, through shadow roots and slots. (Not on animation
#: frames: headless Chromium draws a frame about once a second when nothing animates, which
#: made every wait a multiple of about 1 s.)
NEXT_SCREEN: Final = """
([root, before, token]) => {
  window.iobPolls = window.iobPolls?.token === token ? window.iobPolls : { token, count: 0 };
  window.iobPolls.count += 1;
  const skipped = ["STYLE", "SCRIPT", "TEMPLATE"];
  const deepText = (node) => {
    if (node.nodeType === Node.TEXT_NODE) return node.textContent;
    if (node.nodeType !== Node.ELEMENT_NODE || skipped.includes(node.tagName)) return "";
    if (node.tagName === "SLOT") {
      return node.assignedNodes({ flatten: true }).map(deepText).join("");
    }
    const children = node.shadowRoot ? node.shadowRoot.childNodes : node.childNodes;
    return [...children].map(deepText).join("");
  };
  const elements = [];
  const walk = (parent) => {
    for (const el of parent.children) {
      elements.push(el);
      if (el.shadowRoot) walk(el.shadowRoot);
      walk(el);
    }
  };
  if (root.shadowRoot) walk(root.shadowRoot);
  walk(root);
  const opacity = (el) => {
    let product = 1;
    for (let at = el; at; at = at.assignedSlot || at.parentElement || at.parentNode?.host) {
      product *= Number(getComputedStyle(at).opacity);
    }
    return product;
  };
  // Shown: laid out, visible, and at least half faded in (a dialog opens from opacity 0).
  const rendered = (el) => el.getClientRects().length > 0
    && getComputedStyle(el).visibility === "visible" && opacity(el) >= 0.5;
  const role = (el) => el.getAttribute("role");
  const heading = elements.find(
    (el) => (/^H[1-6]$/.test(el.tagName) || role(el) === "heading") && rendered(el)
      && deepText(el).trim()
  );
  const title = heading ? deepText(heading).trim() : "";
  const failed = elements.some(
    (el) => el.tagName === "HA-ALERT" && el.getAttribute("alert-type") === "error"
      && rendered(el)
  );
  const button = elements.some(
    (el) => (el.tagName.includes("BUTTON") || role(el) === "button")
      && ["Submit", "Finish", "Close"].includes(deepText(el).trim()) && rendered(el)
  );
  if (failed || (title && title !== before && button)) {
    return { title, failed, at: performance.now(), polls: window.iobPolls.count };
  }
  return null;
}
"""
SCREENS: Final = REPO / "build" / "bench" / "browser"

#: Each journey's screens and its seconds from the device card's Add to its entities up.
type Journeys = dict[str, tuple[Journey, float]]


def labels() -> dict[str, dict[str, str]]:
    """Step id → field → the label the frontend shows (the integration's English strings)."""
    path = REPO / "custom_components" / "iot_onboard" / "translations" / "en.json"
    steps: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))["config"]["step"]
    return {step: dict(strings.get("data", {})) for step, strings in steps.items()}


@dataclass
class FlowAnswers:
    """Home Assistant's answers to the frontend's config-flow requests, in order."""

    responses: list[Response] = field(default_factory=list)

    def __call__(self, response: Response) -> None:
        if FLOW_API in response.url and response.request.method in {"GET", "POST"}:
            self.responses.append(response)

    #: Each response's step (None: not a step), parsed once: a parse is a round trip.
    parsed: list[dict[str, Any] | None] = field(default_factory=list)

    def answered(self, mark: int, clicked: float) -> float:
        """Seconds from ``clicked`` (ms since the epoch) to the end of the last answer since."""
        ends = []
        for response in self.responses[mark:]:
            response.finished()
            timing = response.request.timing
            ends.append(timing["startTime"] + timing["responseEnd"])
        return (max(ends, default=clicked) - clicked) / 1000

    def since(self, mark: int) -> list[dict[str, Any]]:
        for response in self.responses[len(self.parsed) :]:
            try:
                body = response.json()
            except (PlaywrightError, ValueError):
                body = None
            self.parsed.append(body if isinstance(body, dict) and "type" in body else None)
        return [step for step in self.parsed[mark:] if step is not None]


@dataclass
class Person:
    """The person at the browser, with what they know: accounts, codes, the Wi-Fi."""

    page: Page
    stack: BenchStack
    answers: FlowAnswers
    strings: dict[str, dict[str, str]]
    token: str
    #: Where each screen's screenshot and its counted text go.
    screens: Path
    title: str = ""
    shown: int = 0

    def __post_init__(self) -> None:
        self.page.add_init_script(CLICK_CLOCK)
        self.page.evaluate(CLICK_CLOCK)

    @property
    def dialog(self) -> Locator:
        return self.page.locator("dialog-data-entry-flow")

    def words(self, where: Locator, name: str) -> int:
        """The words a person sees in ``where``; its screenshot and text go to :attr:`screens`.

        The text file lists what is counted, then what is rendered but not seen (hidden,
        clipped), so that each screenshot can be checked against the count.
        """
        # Once the screen is drawn: the form's fields appear a moment after its heading.
        pieces = [Piece(**facts) for facts in where.evaluate(SCREEN_PIECES)]
        for _ in range(SETTLE_READS):
            self.page.wait_for_timeout(SETTLE_MS)
            again = [Piece(**facts) for facts in where.evaluate(SCREEN_PIECES)]
            if again == pieces:
                break
            pieces = again
        else:
            raise BenchError(f"the {name} screen's text still changes after {SETTLE_READS} reads")
        self.shown += 1
        path = self.screens / f"{self.shown:02d}-{name}"
        self.page.screenshot(path=path.with_suffix(".png"), animations="disabled")
        unseen = [f"{p.text}  ({p.shown:.0f}/{p.area:.0f} px², hidden={p.hidden})" for p in pieces]
        unseen = [line for line, p in zip(unseen, pieces, strict=True) if not p.seen]
        seen = seen_text(pieces)
        path.with_suffix(".txt").write_text(
            f"{seen}\n\n--- not seen ---\n" + "\n".join(unseen) + "\n", encoding="utf-8"
        )
        return count_words(seen)

    def next_screen(self, mark: int) -> tuple[dict[str, Any], float, float]:
        """Home Assistant's next step once the dialog shows it; seconds since the click.

        One wait in the page, checked every POLL_MS there; both times on the page clock.
        """
        self.dialog.wait_for(state="attached")
        shown = self.page.wait_for_function(
            NEXT_SCREEN,
            arg=[self.dialog.element_handle(), self.title, mark],
            polling=POLL_MS,
            timeout=COMMIT_TIMEOUT * 1000,
        ).json_value()
        clicked = self.page.evaluate("[window.iobClicked, performance.timeOrigin]")
        wait = (shown["at"] - clicked[0]) / 1000
        # The answer's response event comes before the screen it draws; parsed in this thread.
        steps = self.answers.since(mark)
        answered = self.answers.answered(mark, sum(clicked))
        say(
            f"  {shown['title']!r}: shown {wait:.3f} s after the click (check {shown['polls']} "
            f"in the page), Home Assistant's answer in {answered:.3f} s"
        )
        last = steps[-1] if steps else None
        if last is None:
            raise BenchError(f"the dialog shows {shown} but Home Assistant sent no flow step")
        if last["type"] == "abort":
            raise BenchError(f"the flow aborted: {last.get('reason')} ({last})")
        if shown["failed"] or (last["type"] == "form" and last.get("errors")):
            alerts = self.dialog.locator("ha-alert").all_inner_texts()
            raise BenchError(
                f"the {last.get('step_id')} step refused the input: {last.get('errors')}; "
                f"the dialog shows {alerts}"
            )
        self.title = shown["title"]
        return last, wait, answered

    def fill(self, step: dict[str, Any], device: DeviceFacts) -> tuple[list[int], int]:
        """Fill the form as the person would; the characters per typed field, the selections.

        A field that shows the right value already (a default, a suggested value) is kept.
        """
        step_id = step["step_id"]
        schema: list[dict[str, Any]] = step.get("data_schema") or []
        strings = self.strings.get(step_id, {})
        network = next((item for item in schema if item["name"] == "network"), None)
        remembered = network is not None and "remembered" in _default_label(network).lower()
        typed: list[int] = []
        selections = 0
        values = {
            "account_url": self.stack.relay_url,
            "email": DEMO_ACCOUNT.email,
            "password": DEMO_ACCOUNT.password,
            "setup_code": device.manual_code,
            # The household's name: Home Assistant's location name is offered and kept.
            "household_name": None,
            "passphrase": None if remembered else HOME_WIFI.passphrase,
        }
        for item in schema:
            name = item["name"]
            label = strings.get(name, name)
            # As the frontend names the field: its label, with "*" when it is required.
            named = re.compile(rf"^{re.escape(label)}\s*\*?$")
            if name in values:
                value = values[name]
                if value is not None and value not in _prefilled(item):
                    self.dialog.get_by_role("textbox", name=named).fill(value)
                    typed.append(len(value))
            elif name == "network":
                home = _option(item, rf"^{re.escape(HOME_WIFI.ssid)} · ")
                if not remembered and item.get("default") != home:
                    pattern = re.compile(rf"^{re.escape(HOME_WIFI.ssid)} · ")
                    self.dialog.get_by_role("radio", name=pattern).check()
                    selections += 1
            elif name == "remember_wifi":
                if not item.get("default"):
                    switch = self.dialog.get_by_role("switch", name=named)
                    switch.or_(self.dialog.get_by_role("checkbox", name=named)).first.click()
                    selections += 1
            elif item.get("required") and "default" not in item:
                raise BenchError(
                    f"the {step_id} step asks for {name!r} ({label!r}), which the benchmark has "
                    "no value for: add it to Person.fill in bench/bench_browser.py"
                )
        return typed, selections

    def onboards(self, device: DeviceFacts, which: str) -> tuple[Journey, float]:
        """The device's journey, card to success screen; seconds from Add to entities up."""
        started = time.perf_counter()
        screens = self.flow(device.name, device, which)
        self.entities_available(device)
        return Journey(tuple(screens)), time.perf_counter() - started

    def flow(self, card_text: str, device: DeviceFacts, which: str) -> list[Screen]:
        """The discovered card that shows ``card_text``: Add, every form, the success screen.

        ``device``: the device being onboarded (its setup code), or next (the add-on's link).
        """
        # The dashboard: finishing a flow may have left the person on the integration's page.
        if not self.page.url.endswith(DASHBOARD):
            self.page.goto(self.stack.ha_url + DASHBOARD)
        card = self.page.locator("ha-config-flow-card").filter(has_text=card_text)
        add = card.get_by_role("button", name="Add")
        expect(add).to_be_visible(timeout=DISCOVERY_TIMEOUT * 1000)
        card_words = self.words(card, f"{which}-card")
        screens: list[Screen] = []
        mark = len(self.answers.responses)
        self.title = ""
        add.click()
        step, wait, answered = self.next_screen(mark)
        screens.append(Screen("card", "card", card_words, wait=wait, answer=answered))
        while step["type"] == "form":
            step_id = step["step_id"]
            role = STEPS.get(step_id)
            if role is None:
                raise BenchError(
                    f"an unknown step {step_id!r} (fields "
                    f"{[i['name'] for i in step.get('data_schema') or []]}): add it to STEPS "
                    "in bench/bench_browser.py with its role in the data flow"
                )
            typed, selections = self.fill(step, device)
            words = self.words(self.dialog, f"{which}-{step_id}")
            mark = len(self.answers.responses)
            self.dialog.get_by_role("button", name="Submit").click()
            step, wait, answered = self.next_screen(mark)
            screens.append(Screen(step_id, role, words, tuple(typed), selections, wait, answered))
            say(f"{card_text}: {step_id} ({role}) → {step.get('step_id', step['type'])}")
        if step["type"] != "create_entry":
            raise BenchError(f"the flow ended in {step} instead of creating the entry")
        screens.append(Screen("create_entry", "done", self.words(self.dialog, f"{which}-done")))
        self.dialog.get_by_role("button", name="Finish").click()
        expect(self.dialog.get_by_role("heading")).to_have_count(0)
        return screens

    def entities_available(self, device: DeviceFacts) -> None:
        deadline = time.perf_counter() + ENTITIES_TIMEOUT
        while True:
            base = self.stack.ha_url
            states = [s for d, _, s in entity_states(base, self.token) if d == device.name]
            if entities_ready(states, ENTITIES):
                return
            if time.perf_counter() > deadline:
                raise BenchError(f"the entities of {device.name} are not available: {states}")
            self.page.wait_for_timeout(POLL_MS * 10)


def _prefilled(item: dict[str, Any]) -> tuple[object, ...]:
    """What a field already shows: its default, its suggested value."""
    description = item.get("description") or {}
    return tuple(
        value
        for value in (item.get("default"), description.get("suggested_value"))
        if value is not None
    )


def _option(select: dict[str, Any], label: str) -> object:
    """The value of the select's first option whose label matches ``label`` (a regex)."""
    options = select.get("selector", {}).get("select", {}).get("options", [])
    return next(
        (o["value"] for o in options if isinstance(o, dict) and re.match(label, o["label"])),
        None,
    )


def _default_label(select: dict[str, Any]) -> str:
    """The label of a select field's default option ("" without one)."""
    options = select.get("selector", {}).get("select", {}).get("options", [])
    default = select.get("default")
    return next(
        (str(o.get("label", "")) for o in options if isinstance(o, dict) and o["value"] == default),
        "",
    )


def page_load_seconds(page: Page, url: str) -> list[float]:
    """Bare loads of Home Assistant's frontend in the same browser (the waits' baseline)."""
    seconds = []
    for _ in range(PAGE_LOADS):
        started = time.perf_counter()
        page.goto(url, wait_until="load")
        seconds.append(time.perf_counter() - started)
    return seconds


def in_browser(
    stack: BenchStack, onboard: Callable[[Person], Journeys], *, page_loads: bool = False
) -> tuple[Journeys, list[float]]:
    """``onboard``'s journeys through the UI, signed in to Home Assistant as its owner; with
    ``page_loads``, first the bare page loads (else none)."""
    owner = next(user for user in HA_USERS if user.admin)
    base = stack.ha_url
    token = ha_token(base, owner.username, owner.password)
    local_only, answers = LocalOnly(), FlowAnswers()
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            context = browser.new_context(viewport=VIEWPORT)
            context.route("**/*", local_only)
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.on("response", answers)
            log_in(page, base, owner.username, owner.password)
            # A second tab of the signed-in session (its tokens are in the context's storage),
            # closed once measured: while it stayed open in the background, the dialog's fade-in
            # in the person's tab stood at opacity 0 for about 3 s after every card's Add
            # (issue 15; the add-on stack, one tab, showed it in 0.15 s).
            loads = []
            if page_loads:
                tab = context.new_page()
                loads = page_load_seconds(tab, base + DASHBOARD)
                tab.close()
                page.bring_to_front()
            if context.pages != [page]:
                raise BenchError(f"the person's tab is not the only one: {context.pages}")
            open_devices_and_services(page)
            SCREENS.mkdir(parents=True, exist_ok=True)
            person = Person(page, stack, answers, labels(), token, SCREENS)
            # The screens of an earlier stack keep their numbers.
            person.shown = len(list(SCREENS.glob("*.png")))
            journeys = onboard(person)
        except PlaywrightError as err:
            err.add_note(f"Requests refused (not local): {sorted(set(local_only.blocked))}")
            raise
        finally:
            browser.close()
    return journeys, loads


def first_and_later(devices: list[DeviceFacts]) -> Callable[[Person], Journeys]:
    """The first device (signing in to the account service on the way), then a later one."""

    def onboard(person: Person) -> Journeys:
        return {
            which: person.onboards(device, which)
            for which, device in zip(("first", "later"), devices, strict=True)
        }

    return onboard


def through_the_addon(addon_name: str, device: DeviceFacts) -> Callable[[Person], Journeys]:
    """Home Assistant OS: the add-on's card and its one confirm, then the device."""

    def onboard(person: Person) -> Journeys:
        linked = [
            replace(screen, step=ADDON_SCREENS.get(screen.step, screen.step))
            for screen in person.flow(addon_name, device, "addon-link")
        ]
        journey, onboarded = person.onboards(device, "addon")
        return {"addon": (Journey((*linked, *journey.screens)), onboarded)}

    return onboard


def addon_journey() -> Journeys:
    """A fresh stack whose Home Assistant runs with the stand-in Supervisor
    (tests/stack/addon.py, as tests/stack/test_browser_addon.py): the real add-on's run
    script announces its account service; the add-on's journey, first device on it."""
    with (
        running_supervisor() as supervisor,
        running_stack(
            label="browser-addon",
            agents=1,
            batch=1,
            env={"SUPERVISOR": supervisor.address, "SUPERVISOR_TOKEN": supervisor.core_token},
        ) as stack,
    ):
        addon = Addon(supervisor)
        failed = True
        try:
            _, status = supervisor.wait_for_push(ANNOUNCE_TIMEOUT)
            if status != 200:
                raise BenchError(f"Home Assistant answered the add-on's discovery with {status}")
            (device,) = stack.devices
            import_device(addon, device.label_dir)
            name = supervisor.addon.config["name"]
            journeys, _ = in_browser(stack, through_the_addon(name, device))
            if (code := addon.stop()) != 0:
                raise BenchError(f"the add-on exited with {code}: {addon.text()[-2000:]}")
            failed = False
        finally:
            addon.stop()
            # Its log next to the screens when the journey failed.
            addon.remove(SCREENS if failed else None)
    return journeys


async def lan_seconds(stack: BenchStack, device: DeviceFacts) -> float:
    async with aiohttp.ClientSession() as session:
        (seconds,) = await lan_baseline(stack, session, [device])
    return seconds


def report_table(journeys: dict[str, Journey], form_wait: float) -> str:
    """The journeys side by side (:data:`COLUMNS`), with each target's verdict."""
    rows: list[tuple[str, Callable[[Journey], float], str]] = [
        ("forms (total)", lambda j: j.forms, "{:.0f}"),
        ("forms before Wi-Fi", lambda j: j.forms_before_wifi, "{:.0f}"),
        ("characters typed", lambda j: j.characters, "{:.0f}"),
        ("words read", lambda j: j.words, "{:.0f}"),
        ("clicks", lambda j: j.clicks, "{:.0f}"),
        ("user time (KLM)", lambda j: j.user_seconds, "{:.1f} s"),
        ("system wait", lambda j: j.wait_seconds, "{:.2f} s"),
    ]
    shown = [(which, journeys[which]) for which in COLUMNS if which in journeys]
    width = max(len(COLUMNS[which]) for which, _ in shown) + 2
    out = [f"{'':<22}" + "".join(f"{COLUMNS[which]:>{width}}" for which, _ in shown) + "  verdict"]
    for label, value, form in rows:
        verdicts = []
        for which, journey in shown:
            for target in TARGETS[which]:
                if label.startswith(target.what):
                    limit = f"{target.limit:g}{(' ' + target.unit) if target.unit else ''}"
                    verdicts.append(f"{which} ≤ {limit}: {target.verdict(value(journey))}")
        line = f"{label:<22}" + "".join(
            f"{form.format(value(journey)):>{width}}" for _, journey in shown
        )
        out.append(f"{line}  {'; '.join(verdicts)}".rstrip())
    verdict = FORM_WAIT_TARGET.verdict(form_wait)
    out.append(
        f"{FORM_WAIT_TARGET.what:<22}{form_wait:>{width - 1}.2f} s (all)  ≤ 0.25 s: {verdict}"
    )
    out.append("")
    for which, journey in shown:
        out.append(
            f"{COLUMNS[which]}, per screen: step (role) words chars clicks wait "
            "(of it HA's answer) user time (KLM)"
        )
        out.extend(
            f"  {s.step} ({s.role}) {s.words} {s.characters} {s.clicks} {s.wait:.2f} s "
            f"({s.answer:.2f} s) {klm.klm_seconds(s):.1f} s"
            for s in journey.screens
        )
    return "\n".join(out)


def main() -> None:
    """Start the stack, onboard through the browser, print and write the results."""
    args = parser(__doc__).parse_args()
    isolated = isolate()
    shutil.rmtree(SCREENS, ignore_errors=True)
    with running_stack(label="browser", agents=3, batch=3) as stack:
        first, later, baseline_device = stack.devices[:3]
        journeys, loads = in_browser(stack, first_and_later([first, later]), page_loads=True)
        lan = asyncio.run(lan_seconds(stack, baseline_device))
    journeys |= addon_journey()
    paths = {which: journey for which, (journey, _) in journeys.items()}
    waits = [
        wait
        for journey in paths.values()
        for wait in journey.waits(("confirm", "account", "device", "card"))
    ]
    form_wait = median(waits)
    print(report_table(paths, form_wait))
    load = median(loads)
    rows: list[Result] = [
        result(f"browser: {FORM_WAIT_TARGET.what}", form_wait, "s", load, "bare page load"),
    ]
    for which, (journey, onboarded) in journeys.items():
        user, forms = TARGETS[which]
        column = COLUMNS[which]
        rows += [
            result(f"browser: {column}, discovery → entities", onboarded, "s", lan, "LAN"),
            result(
                f"browser: {column}, user time (KLM)",
                journey.user_seconds,
                "s",
                user.limit,
                "target",
            ),
            result(
                f"browser: {column}, forms before Wi-Fi",
                journey.forms_before_wifi,
                "",
                forms.limit,
                "target",
            ),
        ]
    finish("browser", rows, args, isolated=isolated, page_loads=loads, lan_baseline=lan)


if __name__ == "__main__":
    main()
