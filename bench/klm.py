"""What a person does on each screen of a flow, and how long that takes them (pure functions).

The keystroke-level model (Card, Moran & Newell, "The Psychology of Human-Computer Interaction",
1983) with its textbook operator times:

* K = 0.28 s per keystroke (an average non-secretary typist, 40 words/min);
* P = 1.1 s to point the mouse at a target;
* B = 0.1 s per mouse-button click (as one operator, press and release);
* H = 0.4 s to move a hand between the mouse and the keyboard;
* M = 1.35 s of mental preparation per decision (which field, what to type, whether to submit);

and reading at 240 words per minute (0.25 s per word) for the text a screen shows.

Per screen: reading its words; per text field M + P + B + H + K per character + H (decide,
point at the field, click, hand to the keyboard, type, hand back); per selection M + P + B
(a radio, a checkbox); the screen's own button (Submit, Finish, the card's Add) M + P + B.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

K: Final = 0.28
P: Final = 1.1
B: Final = 0.1
H: Final = 0.4
M: Final = 1.35
SECONDS_PER_WORD: Final = 60 / 240

#: A word: letters or digits, joined by an apostrophe, hyphen or dot ("account's", "Wi-Fi",
#: "127.0.0.1" are one word each).
_WORD: Final = re.compile(r"[^\W_]+(?:['\u2019.\-][^\W_]+)*")


def count_words(text: str) -> int:
    """The words a person reads in ``text`` (symbols such as "·" or "→" are not words)."""
    return len(_WORD.findall(text))


@dataclass(frozen=True, slots=True)
class Screen:
    """One screen of a journey: what it asked of the person and how long the system took."""

    #: The flow's step id (``discovery_confirm``, ``wifi``...), or what the screen is
    #: (``card`` for the discovered card's Add, ``create_entry`` for the success screen).
    step: str
    #: What the step does in the data flow: confirm, account, device, wifi, done.
    role: str
    words: int
    #: The characters typed into each text field the person fills in.
    typed: tuple[int, ...] = ()
    #: Radios, checkboxes and switches the person changes.
    selections: int = 0
    #: Seconds from the person's click on this screen's button to the next screen shown.
    wait: float = 0.0

    @property
    def is_form(self) -> bool:
        """A config-flow form (not the card, not the success screen)."""
        return self.role not in {"card", "done"}

    @property
    def characters(self) -> int:
        return sum(self.typed)

    @property
    def clicks(self) -> int:
        """A click per text field, per selection and the screen's own button."""
        return len(self.typed) + self.selections + 1


def klm_seconds(screen: Screen) -> float:
    """The keystroke-level estimate of the person's time on ``screen`` (not the waiting)."""
    decisions = len(screen.typed) + screen.selections + 1
    return (
        screen.words * SECONDS_PER_WORD
        + decisions * M
        + screen.clicks * (P + B)
        + len(screen.typed) * 2 * H
        + screen.characters * K
    )


@dataclass(frozen=True, slots=True)
class Journey:
    """Every screen of one device's onboarding, in order, and the totals the bench prints."""

    screens: tuple[Screen, ...]

    @property
    def forms(self) -> int:
        return sum(1 for screen in self.screens if screen.is_form)

    @property
    def forms_before_wifi(self) -> int:
        """Forms shown before the Wi-Fi step (every form when there is none)."""
        count = 0
        for screen in self.screens:
            if screen.role == "wifi":
                break
            count += screen.is_form
        return count

    @property
    def characters(self) -> int:
        return sum(screen.characters for screen in self.screens)

    @property
    def words(self) -> int:
        return sum(screen.words for screen in self.screens)

    @property
    def clicks(self) -> int:
        return sum(screen.clicks for screen in self.screens)

    @property
    def user_seconds(self) -> float:
        return sum(klm_seconds(screen) for screen in self.screens)

    @property
    def wait_seconds(self) -> float:
        return sum(screen.wait for screen in self.screens)

    def waits(self, roles: Iterable[str]) -> Sequence[float]:
        """The waits after the screens of these roles (e.g. every form but the Wi-Fi's)."""
        wanted = set(roles)
        return [screen.wait for screen in self.screens if screen.role in wanted]


class Target(NamedTuple):
    """A bound a journey must keep: its name, the limit (at most) and the value's unit."""

    what: str
    limit: float
    unit: str = ""

    def verdict(self, value: float) -> str:
        """PASS at or under the limit, else FAIL."""
        return "PASS" if value <= self.limit else "FAIL"
