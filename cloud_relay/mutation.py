"""Run a write that also changes the broker: one transaction, broker calls, compensation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from .broker_sync import BrokerPlan, NeedsBrokerError
from .context import Context
from .storage import Connection

_T = TypeVar("_T")


async def mutate(
    ctx: Context,
    body: Callable[[Connection, BrokerPlan], Awaitable[_T]],
    *,
    prepare: Callable[[BrokerPlan], Awaitable[None]] | None = None,
    rerunnable: bool = False,
) -> _T:
    """Run ``body`` in a transaction; on any failure undo its broker changes, then re-raise.

    ``prepare`` makes broker calls *before* the transaction begins, through the same plan, so
    they hold no database lock (SQLite has one writer: a broker round trip inside the
    transaction stalls every other write). It must only put what the transaction is expected
    to commit; ``body`` checks that under its locks and otherwise does the calls itself. A
    failure anywhere, ``prepare`` included, is compensated like a failure in ``body``, and the
    broker is still never behind the database for a committed change: every call completes
    before the commit.

    After the commit, the hubs ``body`` asked to kick are disconnected (best effort).

    ``rerunnable``: ``body`` changes nothing but the database and ``plan`` until its first
    broker call. On SQLite it then first runs whole on the writer thread (one thread hop,
    its commit shared with concurrent ones: :meth:`Storage.run`) with the plan offline; only
    if it reaches a broker call is it rolled back and run again in a transaction that can
    await the broker.
    """
    plan = BrokerPlan(ctx.broker, ctx.config)
    # Shared with other mutations, never with a reconcile (which would undo a commit it did
    # not read): held from the first broker call to the last, compensation included.
    async with ctx.gate.shared():
        try:
            if prepare is not None:
                await prepare(plan)
            result = await _run(ctx, body, plan, rerunnable=rerunnable)
        except BaseException:
            # Shielded: a cancelled request must still leave the broker matching the database.
            await asyncio.shield(plan.compensate(ctx.storage))
            raise
        # Shielded too: the change is committed, so its Home Assistants must hear of it.
        await asyncio.shield(plan.after_commit())
    return result


async def _run(
    ctx: Context,
    body: Callable[[Connection, BrokerPlan], Awaitable[_T]],
    plan: BrokerPlan,
    *,
    rerunnable: bool,
) -> _T:
    if rerunnable and ctx.storage.single_writer:
        plan.offline = True
        try:
            return await ctx.storage.run(lambda conn: body(conn, plan))
        except NeedsBrokerError:
            pass  # rolled back, the plan untouched: run it again where the broker is reachable
        finally:
            plan.offline = False
    async with ctx.storage.transaction() as conn:
        return await body(conn, plan)


class KeyedLocks:
    """In-process locks by key (a device id), forgotten when nobody holds or waits for them.

    Used so that two confirmations of one device never interleave their broker calls made
    outside the transaction with each other's compensation.
    """

    def __init__(self) -> None:
        """No locks yet."""
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold the lock of ``key`` for the block."""
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
