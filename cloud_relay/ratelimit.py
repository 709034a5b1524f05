"""Rate limits with GCRA (one timestamp per key), checked all-or-nothing.

Where the timestamps live follows the database:

* **SQLite** (one service process): in the process's memory, no I/O.
* **PostgreSQL** (several service processes behind a load balancer): in the database's
  ``rate_limits`` table, an ``UNLOGGED`` one (a count lost in a server crash only gives back
  a few attempts; it is not a record), read and written under its rows' locks with the
  database's clock. So every process spends one budget: N processes do not multiply the
  sign-in guesses or the manual code's lookups by N (docs/relay.md).

Claim tokens carry 256 bits, so the limits are about abuse and enumeration cost, not about
making a guess feasible; the manual code (about 30 bits) relies on its lookup budgets.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Final

from .config import Limit
from .errors import RateLimitedError
from .storage import Connection, Storage

#: Beyond this many keys, expired ones are dropped (bounded memory under a flood).
_MAX_KEYS: Final = 100_000


class RateLimiter:
    """One budget (``limit``) applied per key."""

    def __init__(
        self,
        name: str,
        limit: Limit,
        *,
        clock: Callable[[], float] = time.monotonic,
        storage: Storage | None = None,
    ) -> None:
        """Allow ``limit.count`` events per ``limit.period`` seconds per key.

        ``storage``: keep the timestamps in its ``rate_limits`` table, shared by every
        process on that database (PostgreSQL); None keeps them in this process.
        """
        self.name = name
        self._interval = limit.period / limit.count
        self._tolerance = limit.period - self._interval
        self._clock = clock
        self._storage = storage
        self._tat: dict[Hashable, float] = {}

    @property
    def shared(self) -> bool:
        """Whether the budget is the database's (every process's) rather than this one's."""
        return self._storage is not None

    def _check(self, tat: float | None, now: float) -> tuple[float, float]:
        """(new theoretical arrival time, seconds to wait; 0 when allowed)."""
        tat = now if tat is None else max(tat, now)
        wait = tat - now - self._tolerance
        return tat + self._interval, max(wait, 0.0)

    def _commit(self, key: Hashable, tat: float, now: float) -> None:
        if len(self._tat) >= _MAX_KEYS:
            self._tat = {k: v for k, v in self._tat.items() if v > now}
        self._tat[key] = tat

    async def hit(self, key: Hashable) -> None:
        """Count one event for ``key`` or raise :class:`RateLimitedError`."""
        await hit_all([(self, key)])

    async def reset(self, key: Hashable) -> None:
        """Forget ``key`` (after a successful sign-in, for instance)."""
        if self._storage is None:
            self._tat.pop(key, None)
            return

        async def forget(conn: Connection) -> None:
            await conn.execute(
                "DELETE FROM rate_limits WHERE budget = $1 AND key = $2", self.name, str(key)
            )

        await self._storage.run(forget)


async def hit_all(checks: Sequence[tuple[RateLimiter, Hashable]]) -> None:
    """Count one event on every (limiter, key), or on none if any is over its budget.

    The limiters of one call keep their timestamps in the same place (one service's
    :class:`~cloud_relay.context.Limiters`).
    """
    if not checks:
        return
    storage = checks[0][0]._storage  # noqa: SLF001 - same class
    if storage is None:
        _hit_in_memory(checks)
    else:
        await _hit_shared(storage, checks)


def _hit_in_memory(checks: Sequence[tuple[RateLimiter, Hashable]]) -> None:
    now = checks[0][0]._clock()  # noqa: SLF001 - same class
    planned: list[tuple[RateLimiter, Hashable, float]] = []
    longest = 0.0
    for limiter, key in checks:
        tat, wait = limiter._check(limiter._tat.get(key), now)  # noqa: SLF001
        longest = max(longest, wait)
        planned.append((limiter, key, tat))
    if longest > 0:
        raise RateLimitedError(retry_after=math.ceil(longest))
    for limiter, key, tat in planned:
        limiter._commit(key, tat, now)  # noqa: SLF001


async def _hit_shared(storage: Storage, checks: Sequence[tuple[RateLimiter, Hashable]]) -> None:
    """The same check on the ``rate_limits`` rows, in the database (``iob_rate_limit``).

    One statement, one round trip: the function locks each row (a missing one is made, with
    no time spent) in the sorted order given here, so two processes' checks never deadlock,
    reads the database's clock, and counts the event on every budget or on none.
    """
    planned = sorted({(limiter.name, str(key)): limiter for limiter, key in checks}.items())
    wait = await storage.statement(
        "SELECT iob_rate_limit($1::text[], $2::text[], $3::float8[], $4::float8[])",
        [budget for (budget, _), _ in planned],
        [key for (_, key), _ in planned],
        [limiter._interval for _, limiter in planned],  # noqa: SLF001 - same module
        [limiter._tolerance for _, limiter in planned],  # noqa: SLF001
    )
    if wait > 0:
        raise RateLimitedError(retry_after=math.ceil(wait))


async def purge_shared(storage: Storage) -> int:
    """Drop the ``rate_limits`` rows whose budgets are whole again; their number."""

    async def body(conn: Connection) -> int:
        return await conn.execute(
            "DELETE FROM rate_limits "
            "WHERE tat IS NULL OR tat < extract(epoch FROM clock_timestamp())::float8"
        )

    return await storage.run(body)
