"""The tests' relay.toml (tests/plugins/relay_toml.py) against the service's own model and loader.

``relay_toml`` imports nothing of ``cloud_relay`` (the Home Assistant tree uses it), so it names
the rate limits itself; here they are checked against :class:`cloud_relay.config.RateLimits` and
every file it writes is read by :func:`cloud_relay.config.load_config`, so a renamed or added
limit fails a test instead of leaving the test services on the service's tight defaults.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from cloud_relay.config import Argon2Params, RateLimits, load_config, write_secret_key
from tests.plugins.mosquitto import MosquittoBroker
from tests.plugins.relay_config import GENEROUS
from tests.plugins.relay_toml import RATE_LIMITS, relay_toml

DATABASE_URL = "sqlite:///relay.db"


def _broker(tmp_path: Path) -> MosquittoBroker:
    """Where a broker would listen: the writer reads only its address and admin login."""
    return MosquittoBroker(
        port=18830,
        admin_username="iob-admin",
        admin_password="admin-password",  # noqa: S106 - test data
        pid=0,
        data_dir=tmp_path,
        config_path=tmp_path / "mosquitto.conf",
        log_path=tmp_path / "mosquitto.log",
        dynsec_path=tmp_path / "dynamic-security.json",
    )


def test_the_rate_limits_are_the_services_budgets() -> None:
    """Every name is a field of RateLimits, and every field is named (none left tight)."""
    budgets = [limit.name for limit in fields(RateLimits)]
    assert [name for name in RATE_LIMITS if name not in budgets] == [], "not a RateLimits field"
    assert [name for name in budgets if name not in RATE_LIMITS] == [], "missing in RATE_LIMITS"
    assert len(set(RATE_LIMITS)) == len(RATE_LIMITS)


@pytest.mark.parametrize(
    ("http_port", "public_host", "cheap_argon2", "generous_limits"),
    [(None, "127.0.0.1", True, False), (8123, None, False, True), (0, "10.0.0.2", True, True)],
)
def test_every_file_it_writes_loads_through_the_services_loader(
    tmp_path: Path,
    http_port: int | None,
    public_host: str | None,
    cheap_argon2: bool,
    generous_limits: bool,
) -> None:
    broker = _broker(tmp_path)
    config_path = tmp_path / "relay.toml"
    config_path.write_text(
        relay_toml(
            DATABASE_URL,
            broker,
            http_port=http_port,
            public_host=public_host,
            cheap_argon2=cheap_argon2,
            generous_limits=generous_limits,
        )
    )
    secret_key = write_secret_key(tmp_path / "secret.key")

    config = load_config(config_path, environ={})

    assert (config.database_url, config.secret_key) == (DATABASE_URL, secret_key)
    written = (broker.host, broker.port, broker.admin_username, broker.admin_password)
    assert (
        config.broker.host,
        config.broker.port,
        config.broker.username,
        config.broker.password,
    ) == written
    if http_port is not None:
        assert (config.http_host, config.http_port) == ("127.0.0.1", http_port)
    if public_host is not None:
        assert (config.broker.public_host, config.broker.public_port) == (public_host, broker.port)
        assert config.broker.public_tls is False
    assert (config.argon2 != Argon2Params()) is cheap_argon2
    # The same budgets as the in-process services' configuration (tests/plugins/relay_config.py).
    generous = RateLimits(**{limit.name: GENEROUS for limit in fields(RateLimits)})
    assert config.limits == (generous if generous_limits else RateLimits())
