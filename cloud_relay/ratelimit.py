"""Rate limits with GCRA (one timestamp per key), checked all-or-nothing.

Kept in the process's memory: with several relay processes behind a load balancer each one
limits on its own, so the effective budget is the configured one times the number of
processes (docs/relay.md). Claim tokens carry 256 bits, so the limits are about abuse and
enumeration cost, not about making a guess feasible.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Final

from .config import Limit
from .errors import RateLimitedError

#: Beyond this many keys, expired ones are dropped (bounded memory under a flood).
_MAX_KEYS: Final = 100_000


class RateLimiter:
    """One budget (``limit``) applied per key."""

    def __init__(
        self, name: str, limit: Limit, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Allow ``limit.count`` events per ``limit.period`` seconds per key."""
        self.name = name
        self._interval = limit.period / limit.count
        self._tolerance = limit.period - self._interval
        self._clock = clock
        self._tat: dict[Hashable, float] = {}

    def _check(self, key: Hashable, now: float) -> tuple[float, float]:
        """(new theoretical arrival time, seconds to wait; 0 when allowed)."""
        tat = max(self._tat.get(key, now), now)
        wait = tat - now - self._tolerance
        return tat + self._interval, max(wait, 0.0)

    def _commit(self, key: Hashable, tat: float, now: float) -> None:
        if len(self._tat) >= _MAX_KEYS:
            self._tat = {k: v for k, v in self._tat.items() if v > now}
        self._tat[key] = tat

    def hit(self, key: Hashable) -> None:
        """Count one event for ``key`` or raise :class:`RateLimitedError`."""
        hit_all([(self, key)])

    def reset(self, key: Hashable) -> None:
        """Forget ``key`` (after a successful sign-in, for instance)."""
        self._tat.pop(key, None)


def hit_all(checks: Sequence[tuple[RateLimiter, Hashable]]) -> None:
    """Count one event on every (limiter, key), or on none if any is over its budget."""
    if not checks:
        return
    now = checks[0][0]._clock()  # noqa: SLF001 - same class
    planned: list[tuple[RateLimiter, Hashable, float]] = []
    longest = 0.0
    for limiter, key in checks:
        tat, wait = limiter._check(key, now)  # noqa: SLF001
        longest = max(longest, wait)
        planned.append((limiter, key, tat))
    if longest > 0:
        raise RateLimitedError(retry_after=math.ceil(longest))
    for limiter, key, tat in planned:
        limiter._commit(key, tat, now)  # noqa: SLF001
