"""Run a write that also changes the broker: one transaction, broker calls, compensation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from .broker_sync import BrokerPlan
from .context import Context
from .storage import Connection


async def mutate[T](ctx: Context, body: Callable[[Connection, BrokerPlan], Awaitable[T]]) -> T:
    """Run ``body`` in a transaction; on any failure undo its broker changes, then re-raise.

    After the commit, the hubs ``body`` asked to kick are disconnected (best effort).
    """
    plan = BrokerPlan(ctx.broker, ctx.config)
    try:
        async with ctx.storage.transaction() as conn:
            result = await body(conn, plan)
    except BaseException:
        # Shielded: a cancelled request must still leave the broker matching the database.
        await asyncio.shield(plan.compensate(ctx.storage))
        raise
    # Shielded too: the change is committed, so its Home Assistants must hear of it.
    await asyncio.shield(plan.after_commit())
    return result
