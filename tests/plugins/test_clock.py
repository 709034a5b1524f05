"""The shared fake clock (tests/plugins/clock.py)."""

from __future__ import annotations

import time

from iob_protocol.sources import MonotonicClock, WallClock

from tests.plugins.clock import MONOTONIC_START, FakeClock


def test_the_fixture_is_a_monotonic_clock_the_test_moves(fake_clock: FakeClock[float]) -> None:
    clock: MonotonicClock = fake_clock
    assert clock() == MONOTONIC_START
    assert clock() == MONOTONIC_START  # it does not move by itself
    fake_clock.advance(2.5)
    assert clock() == MONOTONIC_START + 2.5
    fake_clock.now = 5.0
    assert clock() == 5.0


def test_a_wall_clock_reads_whole_seconds_and_may_go_back() -> None:
    start = int(time.time())
    fake = FakeClock(start)
    clock: WallClock = fake
    fake.advance(700)
    assert clock() == start + 700
    fake.advance(-3600)
    assert clock() == start - 2900
    assert isinstance(clock(), int)
