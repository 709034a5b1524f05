"""The account service's test configuration, shared by every tree that runs the real service.

Cheap argon2, generous rate limits and the test's Mosquitto as both the admin connection and
the address handed to devices and Home Assistant.
"""

from __future__ import annotations

import os
from typing import Any, Final

from cloud_relay.config import Argon2Params, BrokerConfig, Limit, RateLimits, RelayConfig
from tests.plugins.mosquitto import MosquittoBroker

#: A budget no test exhausts unless it sets its own.
GENEROUS: Final = Limit(100_000, 1)


def relay_test_config(database_url: str, broker: MosquittoBroker, **changes: Any) -> RelayConfig:
    """A configuration of the real service on ``database_url`` and ``broker``."""
    config = RelayConfig(
        database_url=database_url,
        secret_key=os.urandom(32),
        broker=BrokerConfig(
            host=broker.host,
            port=broker.port,
            username=broker.admin_username,
            password=broker.admin_password,
            public_host=broker.host,
            public_port=broker.port,
            public_tls=False,
        ),
        argon2=Argon2Params(time_cost=1, memory_cost_kib=256, parallelism=1),
        limits=RateLimits(**dict.fromkeys(RateLimits.__dataclass_fields__, GENEROUS)),
    )
    return config.with_changes(**changes) if changes else config
