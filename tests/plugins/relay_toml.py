"""The account service's configuration file (relay.toml), for tests that run it as users do.

``python -m cloud_relay`` reads it: the CLI tests, ``serve`` in the relay tests and the Home
Assistant tests' real service (``tests/integration/onboarding_services.py``). It imports
nothing of ``cloud_relay``, so the HA test tree may use it; the in-process configuration is
:mod:`tests.plugins.relay_config`.
"""

from __future__ import annotations

from tests.plugins.mosquitto import MosquittoBroker

#: Every budget of the service's ``[limits]``: the fields of cloud_relay.config.RateLimits, named
#: here because this module may not import it (tests/plugins/test_relay_toml.py checks them).
RATE_LIMITS = (
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


def relay_toml(
    database_url: str,
    broker: MosquittoBroker,
    *,
    http_port: int | None = None,
    public_host: str | None = "127.0.0.1",
    cheap_argon2: bool = True,
    generous_limits: bool = False,
) -> str:
    """relay.toml on ``database_url`` and ``broker`` (admin connection), the secret key in
    secret.key beside it; ``[http]`` on 127.0.0.1 if ``http_port``, the broker address for
    devices if ``public_host``, the test's cheap argon2 if ``cheap_argon2``, rate limits no test
    exhausts if ``generous_limits``."""
    lines = [f'database_url = "{database_url}"', 'secret_key_file = "secret.key"']
    if http_port is not None:
        lines += ["[http]", 'host = "127.0.0.1"', f"port = {http_port}"]
    lines += ["[broker]", f'host = "{broker.host}"', f"port = {broker.port}"]
    lines += [f'username = "{broker.admin_username}"', f'password = "{broker.admin_password}"']
    if public_host is not None:
        lines += [f'public_host = "{public_host}"', f"public_port = {broker.port}"]
        lines.append("public_tls = false")
    if cheap_argon2:
        lines += ["[argon2]", "time_cost = 1", "memory_cost_kib = 256", "parallelism = 1"]
    if generous_limits:
        lines += ["[limits]", *(f'{name} = "100000/1"' for name in RATE_LIMITS)]
    return "\n".join(lines) + "\n"
