"""What every service shares: configuration, storage, broker, clock and rate limiters."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from typing import Final

from iob_protocol.account_api import MqttCredentials
from iob_protocol.sources import WallClock, unix_time

from .broker import BrokerAdapter, DeviceCredential, HubCredential, ToolCredential
from .config import RelayConfig
from .ratelimit import RateLimiter, purge_shared
from .storage import Storage

_LOGGER: Final = logging.getLogger(__name__)

ROLES: Final = ("viewer", "member", "admin", "owner")
ROLE_RANK: Final = {role: rank for rank, role in enumerate(ROLES)}


@dataclass(slots=True)
class Limiters:
    """One limiter per budget in :class:`~cloud_relay.config.RateLimits`."""

    sign_in_per_account: RateLimiter
    sign_in_per_address: RateLimiter
    sign_up_per_address: RateLimiter
    claims_per_account: RateLimiter
    claims_per_address: RateLimiter
    claims_per_device: RateLimiter
    confirm_per_address: RateLimiter
    confirm_per_device: RateLimiter
    key_lookups_per_account: RateLimiter
    key_lookups_per_address: RateLimiter
    key_lookups_per_device: RateLimiter
    #: Where the budgets live when they are shared (PostgreSQL); None: in this process.
    shared_storage: Storage | None = None

    @classmethod
    def from_config(cls, config: RelayConfig, storage: Storage) -> Limiters:
        """Build every limiter from ``config.limits``.

        On PostgreSQL (the one engine several service processes share) the budgets live in
        the database, so every process spends the same ones; on SQLite in this process.
        """
        limits = config.limits
        shared = storage if storage.dialect == "postgres" else None
        # A budget added to RateLimits but not here fails at start (an unexpected argument).
        return cls(
            shared_storage=shared,
            **{
                budget.name: RateLimiter(budget.name, getattr(limits, budget.name), storage=shared)
                for budget in fields(limits)
            },
        )

    async def purge(self) -> None:
        """Drop the shared budgets that are whole again (nothing to do in memory)."""
        if self.shared_storage is not None:
            await purge_shared(self.shared_storage)


class BrokerGate:
    """Live broker mutations run side by side (shared); a reconcile runs alone (exclusive).

    A reconcile reads the whole database and then rewrites the broker; a claim committed in
    between would be removed from the broker again. So a reconcile waits until no mutation is
    in flight (``mutate`` holds the gate shared from its first broker call to its last) and new
    mutations wait while it runs. Per process: several ``serve`` processes over one PostgreSQL
    each have their own (docs/relay.md).
    """

    def __init__(self) -> None:
        """Open: nothing in flight."""
        self._shared = 0
        self._exclusive = False
        self._waiters: list[asyncio.Future[None]] = []

    @asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        """Hold the gate with other mutations (waits while a reconcile runs)."""
        await self._wait(lambda: not self._exclusive)
        self._shared += 1
        try:
            yield
        finally:
            self._shared -= 1
            self._wake()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold the gate alone (waits until every mutation in flight is done)."""
        await self._wait(lambda: not self._exclusive and self._shared == 0)
        self._exclusive = True
        try:
            yield
        finally:
            self._exclusive = False
            self._wake()

    async def _wait(self, ready: Callable[[], bool]) -> None:
        while not ready():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                self._waiters.remove(waiter)

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)


@dataclass(slots=True)
class Context:
    """The service's shared state, built once by the app or the CLI."""

    config: RelayConfig
    storage: Storage
    broker: BrokerAdapter
    clock: WallClock = unix_time
    limiters: Limiters = field(init=False)
    #: Serialises ``broker reconcile`` against live mutations (see :class:`BrokerGate`).
    gate: BrokerGate = field(init=False, default_factory=BrokerGate)

    def __post_init__(self) -> None:
        """Limiters come from the configuration."""
        self.limiters = Limiters.from_config(self.config, self.storage)

    def now(self) -> int:
        """Unix seconds from the service's wall clock."""
        return self.clock()

    def mqtt_credentials(
        self, credential: DeviceCredential | HubCredential | ToolCredential
    ) -> MqttCredentials:
        """What a device, Home Assistant or a tool is told: the public broker and the client."""
        broker = self.config.broker
        return MqttCredentials(
            host=broker.public_host,
            port=broker.public_port,
            tls=broker.public_tls,
            username=credential.username,
            password=credential.password,
            # The broker accepts the credential only with this client id (docs/broker.md).
            client_id=credential.client_id,
        )
