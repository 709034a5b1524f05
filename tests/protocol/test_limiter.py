"""Attempt limiter: the online guessing budget."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iob_protocol import (
    AttemptLimiter,
    BusyError,
    LimiterState,
    LockedOutError,
    StaleAttemptError,
    WindowClosedError,
)


def test_closed_until_a_window_is_opened() -> None:
    limiter = AttemptLimiter()
    assert limiter.state(0) is LimiterState.CLOSED
    assert limiter.window_remaining(0) == 0
    with pytest.raises(WindowClosedError):
        limiter.begin(0)
    limiter.open_window(0)
    assert limiter.state(0) is LimiterState.OPEN
    assert limiter.window_remaining(100) == 800


def test_one_handshake_at_a_time() -> None:
    limiter = AttemptLimiter()
    limiter.open_window(0)
    attempt = limiter.begin(1)
    assert limiter.state(2) is LimiterState.BUSY
    with pytest.raises(BusyError):
        limiter.begin(2)
    limiter.succeed(attempt, 3)
    assert limiter.failures(3) == 0
    limiter.begin(4)


def test_twenty_failures_lock_until_a_new_window() -> None:
    limiter = AttemptLimiter()
    limiter.open_window(0)
    for second in range(20):
        limiter.fail(limiter.begin(second), second)
    assert limiter.remaining(20) == 0
    assert limiter.state(20) is LimiterState.LOCKED
    with pytest.raises(LockedOutError):
        limiter.begin(20)
    # Still locked when the window ends (reported as closed), until a physical action.
    assert limiter.state(901) is LimiterState.CLOSED
    limiter.open_window(1000)
    assert limiter.remaining(1000) == 20
    limiter.begin(1000)


def test_window_expires() -> None:
    limiter = AttemptLimiter()
    limiter.open_window(0)
    limiter.succeed(limiter.begin(899), 900)  # began inside the window, may finish after
    assert limiter.state(900) is LimiterState.CLOSED
    with pytest.raises(WindowClosedError):
        limiter.begin(900)
    limiter.open_window(1000)
    limiter.close_window()
    with pytest.raises(WindowClosedError):
        limiter.begin(10)


def test_stale_handshake_counts_as_failed_and_frees_the_slot() -> None:
    limiter = AttemptLimiter()
    limiter.open_window(0)
    attempt = limiter.begin(0)
    assert limiter.state(60) is LimiterState.BUSY
    assert limiter.state(60.1) is LimiterState.OPEN
    assert limiter.failures(61) == 1
    with pytest.raises(StaleAttemptError):
        limiter.succeed(attempt, 61)
    limiter.fail(attempt, 61)  # already counted: idempotent
    assert limiter.failures(61) == 1
    fresh = limiter.begin(62)
    assert fresh.number != attempt.number


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["ok", "fail", "stall"]), st.floats(0, 70)), max_size=40))
def test_never_more_than_twenty_failures_per_window(events: list[tuple[str, float]]) -> None:
    limiter = AttemptLimiter()
    limiter.open_window(0)
    now = 0.0
    for outcome, duration in events:
        try:
            attempt = limiter.begin(now)
        except (LockedOutError, WindowClosedError):
            break
        now += duration
        if outcome == "ok":
            try:
                limiter.succeed(attempt, now)
            except StaleAttemptError:
                assert duration > 60
        elif outcome == "fail":
            limiter.fail(attempt, now)
        else:
            now += 61
        assert limiter.failures(now) <= 20
        assert limiter.state(now) is not LimiterState.BUSY
