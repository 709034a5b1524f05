"""What every service shares: configuration, storage, broker, clock and rate limiters."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Final

from iob_protocol.sources import WallClock, unix_time

from .broker import BrokerAdapter
from .config import RelayConfig
from .ratelimit import RateLimiter
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

    @classmethod
    def from_config(cls, config: RelayConfig) -> Limiters:
        """Build every limiter from ``config.limits``."""
        limits = config.limits
        return cls(
            **{
                name: RateLimiter(name, getattr(limits, name))
                for name in (
                    "sign_in_per_account",
                    "sign_in_per_address",
                    "sign_up_per_address",
                    "claims_per_account",
                    "claims_per_address",
                    "claims_per_device",
                    "confirm_per_address",
                    "confirm_per_device",
                    "key_lookups_per_account",
                    "key_lookups_per_address",
                    "key_lookups_per_device",
                )
            }
        )


@dataclass(slots=True)
class Context:
    """The service's shared state, built once by the app or the CLI."""

    config: RelayConfig
    storage: Storage
    broker: BrokerAdapter
    clock: WallClock = unix_time
    limiters: Limiters = field(init=False)

    def __post_init__(self) -> None:
        """Limiters come from the configuration."""
        self.limiters = Limiters.from_config(self.config)

    def now(self) -> int:
        """Unix seconds from the service's wall clock."""
        return self.clock()
