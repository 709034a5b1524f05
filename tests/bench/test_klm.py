"""bench/klm.py's counting: the words a screen shows, the keystroke-level sum, the totals."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from klm import B, H, Journey, K, M, P, Screen, Target, count_words, klm_seconds


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
