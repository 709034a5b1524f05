"""The account service as one object: every service over one shared context.

Built by the HTTP app (``create_app``) and by the CLI, so both run the same code paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from iob_protocol import account_api as api

from . import audit
from .accounts import Accounts
from .broker import BrokerAdapter, ReconcileReport
from .broker_sync import broker_call, desired_state
from .claims import Claims
from .context import Context
from .device_keys import DeviceKeys
from .devices import Devices
from .errors import ProvisioningTokenInvalidError, RelayError
from .households import Households
from .lifecycle import Lifecycle
from .mqtt_access import MqttAccess
from .provisioning import redeem_token
from .registry import Registry
from .tokens import new_id, new_token

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
        self.lifecycle = Lifecycle(ctx, self.accounts, self.households)
        self.mqtt_access = MqttAccess(ctx, self.households)

    async def redeem_provisioning(
        self, token: str, household_name: str, client: str
    ) -> api.Provisioned:
        """Spend a one-time provisioning token (the add-on's announcement to Home Assistant).

        The token makes the household's owner account (named "Home Assistant", with a random
        password nobody is told: the account is used through the returned session), signed in,
        with a household named ``household_name``. The token is spent before anything is made,
        so two redeems of one token never make two owners; if making the account fails after
        that, the add-on's next start announces a fresh token.
        """
        await self.ctx.limiters.sign_up_per_address.hit(client)
        path = self.ctx.config.provisioning_tokens
        now = self.ctx.now()
        if path is None or not await asyncio.to_thread(redeem_token, path, token, now=now):
            raise ProvisioningTokenInvalidError
        email = f"home-assistant-{new_id()[:16]}@provisioned.invalid"
        account = await self.accounts.create_account(email, new_token(), "Home Assistant")
        household = await self.households.create(account, household_name)
        tokens = await self.accounts.issue(account)
        _LOGGER.info("provisioning token redeemed: household %s", household.household_id)
        return api.Provisioned(tokens=tokens.answer(), household=household)

    @property
    def broker(self) -> BrokerAdapter:
        """The broker adapter."""
        return self.ctx.broker

    async def reconcile(self) -> ReconcileReport:
        """Make the broker hold exactly what the database says (``broker reconcile``).

        Runs alone in this process: mutations in flight finish first and new ones wait (the
        context's :class:`~cloud_relay.context.BrokerGate`), so nothing committed between the
        database read and the broker write is undone.
        """
        async with self.ctx.gate.exclusive():
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

    async def reconcile_quietly(self, why: str) -> None:
        """Reconcile (at start-up, after a broker reconnect); log the outcome in one line.

        A failure is logged, not raised: the service keeps serving, and the next reconnect
        (or ``python -m cloud_relay broker reconcile``) tries again.
        """
        try:
            report = await self.reconcile()
        except RelayError as err:
            _LOGGER.error(  # noqa: TRY400 - one line; broker_call logged the cause
                "Reconciling the broker %s failed: %s. It is tried again after the next broker "
                "reconnect; or run `python -m cloud_relay broker reconcile`.",
                why,
                err.message,
            )
            return
        if report.changed:
            _LOGGER.warning(
                "Reconciled the broker %s: it was out of step with the database "
                "(created %s, updated %s, removed %s)",
                why,
                list(report.created),
                list(report.updated),
                list(report.removed),
            )
        else:
            _LOGGER.info("Reconciled the broker %s: already in step", why)

    async def verify_audit(self) -> audit.ChainReport:
        """Walk the audit chain (``audit verify``)."""
        return await audit.verify(self.ctx.storage)

    async def purge(self) -> None:
        """Housekeeping: lapsed tokens, claims and nonces; budgets whole again."""
        await self.accounts.purge_expired()
        await self.claims.purge_expired()
        await self.ctx.limiters.purge()

    async def purge_forever(self, interval: float = PURGE_INTERVAL) -> None:
        """Run :meth:`purge` every ``interval`` seconds (a background task of the server)."""
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(RelayError):
                await self.purge()
