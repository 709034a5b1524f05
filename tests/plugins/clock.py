"""One fake clock for the HA-free test trees: a clock that moves only when the test moves it.

The code under test takes its clocks as plain callables (``iob_protocol.sources``:
``MonotonicClock`` returns float seconds, ``WallClock`` int Unix seconds), so a test hands it
a :class:`FakeClock` and moves ``now`` (``advance`` or plain assignment). The same class serves
both kinds: ``FakeClock(1000.0)`` is a monotonic clock, ``FakeClock(int(time.time()))`` a wall
clock. The ``fake_clock`` fixture is the monotonic one. Home Assistant's tests move time with
HA's own helpers instead (phcc's ``freezer``, ``async_fire_time_changed``).
"""

from __future__ import annotations

from typing import Generic, TypeVar

import pytest

#: Seconds: float for a monotonic clock, int for a wall clock in Unix seconds.
Seconds = TypeVar("Seconds", int, float)

#: Where ``fake_clock`` starts: any value will do for a monotonic clock; not zero, so code that
#: treats 0 as "never" is not fooled.
MONOTONIC_START = 1000.0


class FakeClock(Generic[Seconds]):
    """A clock the test moves by hand; calling it reads ``now``."""

    def __init__(self, now: Seconds) -> None:
        """Start at ``now``."""
        self.now: Seconds = now

    def __call__(self) -> Seconds:
        """The time the test set."""
        return self.now

    def advance(self, seconds: Seconds) -> None:
        """Move the clock by ``seconds`` (backwards when negative: a wall clock may)."""
        self.now += seconds


@pytest.fixture
def fake_clock() -> FakeClock[float]:
    """A monotonic clock at :data:`MONOTONIC_START` that moves only when the test moves it."""
    return FakeClock(MONOTONIC_START)
