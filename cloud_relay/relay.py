"""The account service as one object: every service over one shared context.

Built by the HTTP app (``create_app``) and by the CLI, so both run the same code paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from . import audit
from .accounts import Accounts
from .broker import BrokerAdapter, ReconcileReport
from .broker_sync import broker_call, desired_state
from .claims import Claims
from .context import Context
from .device_keys import DeviceKeys
from .devices import Devices
from .errors import RelayError
from .households import Households
from .registry import Registry

_LOGGER: Final = logging.getLogger(__name__)
PURGE_INTERVAL: Final = 600.0


class Relay:
    """Accounts, households, registry, claims, devices and device keys over one context."""

    def __init__(self, ctx: Context) -> None:
        """Build every service on ``ctx``."""
        self.ctx = ctx
        self.accounts = Accounts(ctx)
        self.households = Households(ctx)
        self.registry = Registry(ctx)
        self.claims = Claims(ctx, self.households)
        self.devices = Devices(ctx, self.households)
        self.device_keys = DeviceKeys(ctx, self.households)

    @property
    def broker(self) -> BrokerAdapter:
        """The broker adapter."""
        return self.ctx.broker

    async def reconcile(self) -> ReconcileReport:
        """Make the broker hold exactly what the database says (``broker reconcile``)."""
        async with self.ctx.storage.read() as conn:
            desired = await desired_state(conn, self.ctx.config)
        report: ReconcileReport | None = None

        async def call() -> None:
            nonlocal report
            report = await self.ctx.broker.reconcile(desired)

        await broker_call(call(), "reconcile")
        if report is None:  # pragma: no cover - broker_call raised otherwise
            raise RelayError("reconcile returned nothing")
        return report

    async def verify_audit(self) -> audit.ChainReport:
        """Walk the audit chain (``audit verify``)."""
        return await audit.verify(self.ctx.storage)

    async def purge(self) -> None:
        """Housekeeping: lapsed tokens, claims and nonces."""
        await self.accounts.purge_expired()
        await self.claims.purge_expired()

    async def purge_forever(self, interval: float = PURGE_INTERVAL) -> None:
        """Run :meth:`purge` every ``interval`` seconds (a background task of the server)."""
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(RelayError):
                await self.purge()
