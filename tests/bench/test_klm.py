"""bench/klm.py's counting: the words a screen shows, the keystroke-level sum, the totals."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from klm import (
    SCREEN_PIECES,
    B,
    H,
    Journey,
    K,
    M,
    P,
    Piece,
    Screen,
    Target,
    count_words,
    klm_seconds,
    seen_text,
)
from playwright.sync_api import sync_playwright

from tests.stack.browser import launch_chromium

REPO = Path(__file__).resolve().parents[2]
TRANSLATIONS = REPO / "custom_components" / "iot_onboard" / "translations" / "en.json"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", 0),
        ("New device found", 3),
        # Hyphens, apostrophes and dots join a word; symbols and punctuation are no words.
        ("Wi-Fi for Sensor 1 · 80 % → Home's network.", 7),
        ("Account service URL\nhttp://127.0.0.1:8123/", 6),
        ("Setup code or QR code text\n12345-67890", 7),
        ("  \n\t · → ", 0),
    ],
)
def test_words_are_what_a_person_reads(text: str, words: int) -> None:
    assert count_words(text) == words


def test_the_keystroke_level_sum_of_a_screen() -> None:
    # 8 words, two fields (5 and 3 characters), one selection, the Submit button.
    screen = Screen("account", "account", words=8, typed=(5, 3), selections=1, wait=2.0)
    assert screen.clicks == 4
    assert screen.characters == 8
    reading = 8 * 0.25
    fields = 2 * (M + P + B + 2 * H) + 8 * K
    selection = M + P + B
    submit = M + P + B
    assert klm_seconds(screen) == pytest.approx(reading + fields + selection + submit)
    # The waiting is the system's, not the person's.
    assert klm_seconds(screen) == klm_seconds(Screen("account", "account", 8, (5, 3), 1))


def test_a_confirmation_is_reading_and_one_click() -> None:
    assert klm_seconds(Screen("discovery_confirm", "confirm", words=4)) == pytest.approx(
        4 * 0.25 + M + P + B
    )


def test_journey_totals_and_the_forms_before_the_wifi_step() -> None:
    screens = (
        Screen("card", "card", 5, wait=0.5),
        Screen("discovery_confirm", "confirm", 10, wait=0.25),
        Screen("credentials", "device", 12, (11,), wait=0.75),
        Screen("wifi", "wifi", 20, (28,), 1, wait=9.0),
        Screen("create_entry", "done", 6),
    )
    journey = Journey(screens)
    assert journey.forms == 3  # the card and the success screen are no forms
    assert journey.forms_before_wifi == 2
    assert journey.characters == 39
    assert journey.words == 53
    assert journey.clicks == 1 + 1 + 2 + 3 + 1
    assert journey.wait_seconds == pytest.approx(10.5)
    assert journey.user_seconds == pytest.approx(sum(klm_seconds(s) for s in screens))
    assert list(journey.waits(("confirm", "device"))) == [0.25, 0.75]
    # Without a Wi-Fi step every form counts.
    assert Journey(screens[:3]).forms_before_wifi == 2


def test_a_target_is_an_upper_bound() -> None:
    target = Target("user time", 15, "s")
    assert target.verdict(15) == "PASS"
    assert target.verdict(15.01) == "FAIL"


@pytest.mark.parametrize(
    ("piece", "seen"),
    [
        (Piece("Wi-Fi for Sensor 1", area=400, shown=400), True),
        # Not laid out (display: none, an unassigned light child).
        (Piece("Documentation", area=0, shown=0), False),
        # visibility: hidden, or an ancestor with opacity 0 (a dialog before it fades in).
        (Piece("New device found", area=400, shown=400, hidden=True), False),
        # A collapsed panel, a select's row below its list's box, a 1-pixel screen-reader box.
        (Piece("Advanced options", area=400, shown=0), False),
        (Piece("Skip to content", area=400, shown=1), False),
        # A row cut in half at the list's edge is still read; less than half is not.
        (Piece("Neighbour · -83 dBm", area=400, shown=200), True),
        (Piece("Neighbour · -83 dBm", area=400, shown=199), False),
    ],
)
def test_a_piece_counts_when_a_person_sees_it(piece: Piece, seen: bool) -> None:
    assert piece.seen is seen
    assert seen_text([piece]) == (piece.text if seen else "")


#: A screen with every case SCREEN_PIECES tells apart; "seen" words must be counted, "unseen"
#: ones must not. The dialog's content scrolls: its text below the fold is read (scrolled to);
#: the select's menu shows two of its five rows.
PAGE = """
<style>
  .scroller { height: 120px; overflow-y: auto; }
  .tall { height: 400px; }
  .menu { height: 40px; overflow-y: auto; }
  .menu div { height: 20px; }
  .collapsed { height: 0; overflow: hidden; }
  .sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }
</style>
<div id="root">
  <h2>seen title</h2>
  <p style="display: none">unseen none</p>
  <p style="visibility: hidden">unseen hidden</p>
  <div style="opacity: 0"><p>unseen transparent</p></div>
  <div class="collapsed"><p>unseen collapsed</p></div>
  <span class="sr">unseen screenreader</span>
  <div id="host">unseen unassigned</div>
  <div id="slotted"><span>seen slotted</span></div>
  <div class="scroller"><div class="tall">seen top</div><p>seen below</p></div>
  <div class="menu"><div role="listbox">
    <div role="option">seen one</div><div role="option">seen two</div>
    <div role="option">unseen three</div><div role="option">unseen four</div>
    <div role="option">unseen five</div>
  </div></div>
</div>
<script>
  document.getElementById("host").attachShadow({ mode: "open" }).innerHTML =
    "<p>seen shadow</p>";
  document.getElementById("slotted").attachShadow({ mode: "open" }).innerHTML =
    "<p>seen around <slot></slot></p>";
</script>
"""


@pytest.mark.slow
def test_the_page_walk_finds_the_text_a_person_sees() -> None:
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 800, "height": 600})
            page.set_content(PAGE)
            facts = page.locator("#root").evaluate(SCREEN_PIECES)
        finally:
            browser.close()
    pieces = [Piece(**fact) for fact in facts]
    seen = seen_text(pieces).split("\n")
    assert seen == [
        "seen title",
        "seen shadow",
        "seen around",
        "seen slotted",
        "seen top",
        "seen below",
        "seen one",
        "seen two",
    ]
    # Every unseen text was walked (rendered or not) and left out for its reason.
    assert {p.text for p in pieces if not p.seen} == {
        "unseen none",
        "unseen hidden",
        "unseen transparent",
        "unseen collapsed",
        "unseen screenreader",
        "unseen unassigned",
        "unseen three",
        "unseen four",
        "unseen five",
    }


#: The most words each onboarding screen's own text (title, description, labels, help) may
#: have: a confirmation is read in about 6 s, a form in 25 s (at 240 words a minute).
READING_BUDGET = {
    # A confirmation with the setup code, the name (and "another network") on it.
    "discovery_confirm": 80,
    "account": 100,
    "household": 100,
    "credentials": 100,
    "wifi": 100,
}


@pytest.mark.parametrize("step_id", sorted(READING_BUDGET))
def test_each_onboarding_screen_stays_within_its_reading_budget(step_id: str) -> None:
    strings = json.loads(TRANSLATIONS.read_text(encoding="utf-8"))["config"]["step"][step_id]
    texts = [
        strings.get("title", ""),
        strings.get("description", ""),
        *strings.get("data", {}).values(),
        *strings.get("data_description", {}).values(),
    ]
    words = count_words(" ".join(texts))
    assert words <= READING_BUDGET[step_id], f"{step_id}: {words} words: {texts}"
