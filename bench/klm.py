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
    #: Of that wait, seconds until Home Assistant's last answer arrived (the rest: drawing).
    answer: float = 0.0

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


#: Every text node under a root element (through shadow roots), with what decides whether a
#: person sees it: ``[{text, area, shown, hidden}]`` (see :class:`Piece`). Clipping counts from
#: every ancestor up to the root with overflow other than visible (a collapsed panel, a
#: 1-pixel screen-reader box), except a box that scrolls (``overflow-y`` auto or scroll: a
#: dialog's content, which the person scrolls through), unless it is the first one around a
#: list (role listbox or menu: a select's menu, which shows only the rows in its box).
SCREEN_PIECES: Final = """
(root) => {
  const up = (el) => {
    if (el === root) return null;
    if (el.assignedSlot) return el.assignedSlot;
    if (el.parentElement) return el.parentElement;
    const owner = el.parentNode;
    return owner && owner.host ? owner.host : null;
  };
  const scrolls = (style) => ["auto", "scroll"].includes(style.overflowY);
  const clips = (style) => style.overflowX !== "visible" || style.overflowY !== "visible";
  const overlap = (a, b) => ({
    left: Math.max(a.left, b.left), right: Math.min(a.right, b.right),
    top: Math.max(a.top, b.top), bottom: Math.min(a.bottom, b.bottom),
  });
  const size = (r) => Math.max(0, r.right - r.left) * Math.max(0, r.bottom - r.top);
  const piece = (node) => {
    const parent = node.parentElement;
    const ancestors = [];
    for (let el = parent; el; el = up(el)) ancestors.push([el, getComputedStyle(el)]);
    let hidden = getComputedStyle(parent).visibility !== "visible";
    hidden = hidden || ancestors.some(([, style]) => Number(style.opacity) === 0);
    // What clips the text: overflow other than visible, except a scrolling box (the person
    // scrolls it), unless it is the first one around a list (a select's menu: its rows).
    const boxes = [];
    let inList = false;
    for (const [el, style] of ancestors) {
      if (["listbox", "menu"].includes(el.getAttribute("role"))) inList = true;
      if (!clips(style)) continue;
      if (scrolls(style) && !inList) continue;
      if (scrolls(style)) inList = false;
      boxes.push(el.getBoundingClientRect());
    }
    const range = document.createRange();
    range.selectNodeContents(node);
    let area = 0, shown = 0;
    for (const rect of range.getClientRects()) {
      area += size(rect);
      shown += size(boxes.reduce(overlap, rect));
    }
    return { text: node.textContent.trim(), area, shown, hidden };
  };
  const pieces = [];
  const walk = (node) => {
    if (node.nodeType === Node.TEXT_NODE) {
      if (node.textContent.trim() && node.parentElement) pieces.push(piece(node));
      return;
    }
    const skipped = ["STYLE", "SCRIPT", "TEMPLATE"];
    if (node.nodeType === Node.ELEMENT_NODE && skipped.includes(node.tagName)) return;
    if (node.shadowRoot) walk(node.shadowRoot);
    for (const child of node.childNodes) walk(child);
  };
  walk(root);
  return pieces;
}
"""


class Piece(NamedTuple):
    """One text node on a screen and what decides whether a person sees it."""

    text: str
    #: Its boxes' area in CSS pixels² (0: not rendered, e.g. ``display: none``).
    area: float
    #: The part of that area inside every box that clips it (a collapsed panel, a select's
    #: list, a 1-pixel screen-reader box), the dialog's own scrolling content excepted.
    shown: float
    #: ``visibility: hidden`` or an ancestor with ``opacity: 0``.
    hidden: bool = False

    @property
    def seen(self) -> bool:
        """Rendered, not hidden, and at least half of it inside what clips it."""
        return not self.hidden and self.area > 0 and self.shown >= self.area / 2


def seen_text(pieces: Iterable[Piece]) -> str:
    """The text a person sees among ``pieces``, one piece a line."""
    return "\n".join(piece.text for piece in pieces if piece.seen)
