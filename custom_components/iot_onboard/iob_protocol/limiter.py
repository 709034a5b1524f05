"""Handshake attempt limiter: the online-guessing budget for the setup code.

SPAKE2 lets an attacker test one code guess per handshake, so the number of handshakes is the
whole of the attack surface.  At most 20 failures per 15-minute provisioning window (opened
only by something physical: boot while unclaimed, a button press, a factory reset), one
handshake at a time, 60 s each; a handshake that runs out of time counts as failed, so walking
away mid-handshake cannot be used to get free guesses.  With a 9-digit passcode that is 20 in
10**9 per physical action.

Pure: no clock of its own, no I/O; every call takes ``now`` from a monotonic clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from .errors import BusyError, LockedOutError, StaleAttemptError, WindowClosedError

MAX_FAILURES: Final = 20
WINDOW_SECONDS: Final = 15 * 60.0
HANDSHAKE_SECONDS: Final = 60.0


class LimiterState(StrEnum):
    """What :meth:`AttemptLimiter.begin` would do now."""

    CLOSED = "closed"
    OPEN = "open"
    BUSY = "busy"
    LOCKED = "locked"


@dataclass(frozen=True, slots=True)
class Attempt:
    """A handshake slot handed out by :meth:`AttemptLimiter.begin`."""

    number: int
    started: float
    deadline: float


class AttemptLimiter:
    """Counts failed handshakes per provisioning window."""

    def __init__(
        self,
        *,
        max_failures: int = MAX_FAILURES,
        window_seconds: float = WINDOW_SECONDS,
        handshake_seconds: float = HANDSHAKE_SECONDS,
    ) -> None:
        """Start with the window closed: provisioning needs a physical trigger."""
        self._max_failures = max_failures
        self._window_seconds = window_seconds
        self._handshake_seconds = handshake_seconds
        self._window_end: float | None = None
        self._failures = 0
        self._current: Attempt | None = None
        self._issued = 0

    def open_window(self, now: float) -> None:
        """Open a fresh window (boot unclaimed, button, factory reset); resets the count."""
        self._window_end = now + self._window_seconds
        self._failures = 0
        self._current = None

    def close_window(self) -> None:
        """Close the window early (for example once the device is claimed)."""
        self._window_end = None
        self._current = None

    def failures(self, now: float) -> int:
        """Failed handshakes in the current window."""
        self._expire(now)
        return self._failures

    def remaining(self, now: float) -> int:
        """Failures still allowed before the lock."""
        return max(0, self._max_failures - self.failures(now))

    def window_remaining(self, now: float) -> float:
        """Seconds until the window closes (0 when closed)."""
        if self._window_end is None:
            return 0.0
        return max(0.0, self._window_end - now)

    def state(self, now: float) -> LimiterState:
        """Whether a handshake could begin now, and if not, why."""
        self._expire(now)
        if self._failures >= self._max_failures and self._window_open(now):
            return LimiterState.LOCKED
        if not self._window_open(now):
            return LimiterState.CLOSED
        if self._current is not None:
            return LimiterState.BUSY
        return LimiterState.OPEN

    def begin(self, now: float) -> Attempt:
        """Take the handshake slot, or raise why not."""
        state = self.state(now)
        if state is LimiterState.LOCKED:
            raise LockedOutError(
                f"{self._max_failures} failed attempts; press the button to open a new window"
            )
        if state is LimiterState.CLOSED:
            raise WindowClosedError("no provisioning window is open")
        if state is LimiterState.BUSY:
            raise BusyError("another handshake is in progress")
        self._issued += 1
        self._current = Attempt(self._issued, now, now + self._handshake_seconds)
        return self._current

    def succeed(self, attempt: Attempt, now: float) -> None:
        """The handshake completed in time; free the slot without counting a failure."""
        self._expire(now)
        if self._current != attempt:
            raise StaleAttemptError("attempt timed out or was already ended")
        self._current = None

    def fail(self, attempt: Attempt, now: float) -> None:
        """The handshake failed; count it.  Idempotent for an attempt already ended."""
        self._expire(now)
        if self._current == attempt:
            self._current = None
            self._failures += 1

    def _window_open(self, now: float) -> bool:
        return self._window_end is not None and now < self._window_end

    def _expire(self, now: float) -> None:
        if self._current is not None and now > self._current.deadline:
            self._current = None
            self._failures += 1
