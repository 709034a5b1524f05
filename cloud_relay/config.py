"""The account service's configuration: a TOML file, with secrets from files or environment.

Everything has a safe default except the secret key (it derives every MQTT password, so it
must survive restarts and be the same on every relay process) and the broker's admin
password. See docs/relay.md for a commented example.
"""

from __future__ import annotations

import os
import re
import secrets
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final, Self, TypeVar

from iob_protocol.canonical import b64url_decode, b64url_encode
from iob_protocol.errors import EncodingError

from .errors import ConfigError
from .provisioning import tokens_path
from .storage.files import write_private_file

SECRET_KEY_BYTES: Final = 32
#: DESIGN: a claim token lives at most ten minutes.
MAX_CLAIM_TTL: Final = 600
_LIMIT_RE: Final = re.compile(r"(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*s?")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``count`` events per ``period`` seconds (bursts up to ``count``)."""

    count: int
    period: float

    @classmethod
    def parse(cls, text: str) -> Self:
        """``"5/60"`` → 5 per 60 s."""
        match = _LIMIT_RE.fullmatch(text.strip())
        if match is None or int(match[1]) < 1 or float(match[2]) <= 0:
            raise ConfigError(f"rate limit {text!r} must look like '5/60' (count/seconds)")
        return cls(int(match[1]), float(match[2]))


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimits:
    """Per-key budgets; keys are accounts, client addresses and device ids."""

    sign_in_per_account: Limit = Limit(5, 60)
    sign_in_per_address: Limit = Limit(30, 60)
    sign_up_per_address: Limit = Limit(10, 3600)
    claims_per_account: Limit = Limit(30, 600)
    claims_per_address: Limit = Limit(60, 600)
    claims_per_device: Limit = Limit(10, 600)
    confirm_per_address: Limit = Limit(120, 60)
    confirm_per_device: Limit = Limit(20, 60)
    #: The manual code has ~30 bits: its lookup is budgeted like the device's own handshakes.
    key_lookups_per_account: Limit = Limit(30, 900)
    key_lookups_per_address: Limit = Limit(60, 900)
    key_lookups_per_device: Limit = Limit(20, 900)


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerConfig:
    """Where the relay administers the broker, and what it tells devices and hubs."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str = "iob-admin"
    password: str = field(default="", repr=False)
    #: Handed to devices and hubs (the broker's public name, port and TLS).
    public_host: str = "localhost"
    public_port: int = 8883
    public_tls: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Argon2Params:
    """argon2id cost; the defaults are RFC 9106's second recommended option."""

    time_cost: int = 3
    memory_cost_kib: int = 65536
    parallelism: int = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayConfig:
    """Everything the relay needs at run time."""

    database_url: str = "sqlite:///relay.db"
    secret_key: bytes = field(repr=False)
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    #: Take the client address from X-Forwarded-For (only behind your own reverse proxy).
    trust_forwarded_for: bool = False
    broker: BrokerConfig = BrokerConfig()
    argon2: Argon2Params = Argon2Params()
    limits: RateLimits = RateLimits()
    access_token_ttl: int = 900
    refresh_token_ttl: int = 30 * 86400
    claim_ttl: int = MAX_CLAIM_TTL
    invitation_ttl: int = 7 * 86400
    transfer_ttl: int = 7 * 86400
    #: How far in the future a device's signed time may be (seconds).
    max_clock_skew: int = 120
    max_body_bytes: int = 64 * 1024
    max_import_bytes: int = 16 * 1024 * 1024
    #: The one-time provisioning tokens (``provisioning.py``) this service redeems; beside the
    #: configuration file. None: no file, so no token is ever valid.
    provisioning_tokens: Path | None = None

    def __post_init__(self) -> None:
        """Refuse values that would weaken the service."""
        if len(self.secret_key) < SECRET_KEY_BYTES:
            raise ConfigError(f"secret_key must be at least {SECRET_KEY_BYTES} bytes")
        if not 0 < self.claim_ttl <= MAX_CLAIM_TTL:
            raise ConfigError(f"claim_ttl must be between 1 and {MAX_CLAIM_TTL} seconds")
        if not 0 < self.access_token_ttl <= 3600:  # noqa: PLR2004 - "short-lived"
            raise ConfigError("access_token_ttl must be between 1 and 3600 seconds")
        if self.refresh_token_ttl <= self.access_token_ttl:
            raise ConfigError("refresh_token_ttl must be longer than access_token_ttl")
        if self.max_body_bytes < 1024 or self.max_import_bytes < self.max_body_bytes:  # noqa: PLR2004
            raise ConfigError("max_body_bytes must be ≥ 1024 and ≤ max_import_bytes")

    def with_changes(self, **changes: Any) -> RelayConfig:
        """A copy with ``changes`` (tests, CLI flags)."""
        return replace(self, **changes)


def new_secret_key() -> bytes:
    """A fresh random secret key."""
    return secrets.token_bytes(SECRET_KEY_BYTES)


def write_secret_key(path: Path) -> bytes:
    """Create ``path`` (mode 0600, whatever the umask) with a new key, or read the one there."""
    if path.exists():
        return read_secret_key(path)
    key = new_secret_key()
    write_private_file(path, (b64url_encode(key) + "\n").encode("ascii"))
    return key


def read_secret_key(path: Path) -> bytes:
    """Read a key written by :func:`write_secret_key`."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(
            f"cannot read the secret key {path}: {err}; create it with `python -m cloud_relay init`"
        ) from err
    return _decode_key(text, str(path))


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = b64url_decode(text)
    except EncodingError as err:
        raise ConfigError(f"secret key in {where} is not unpadded base64url") from err
    if len(key) < SECRET_KEY_BYTES:
        raise ConfigError(f"secret key in {where} must be at least {SECRET_KEY_BYTES} bytes")
    return key


def _section(cls: type[_T], data: object, where: str) -> _T:
    if not isinstance(data, dict):
        raise ConfigError(f"[{where}] must be a table")
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - set(known)
    if unknown:
        raise ConfigError(f"unknown key(s) in [{where}]: {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        if cls is RateLimits:
            if not isinstance(value, str):
                raise ConfigError(f"{where}.{name} must be a string like '5/60'")
            values[name] = Limit.parse(value)
            continue
        expected = known[name].type
        if (
            (expected in {"int", int} and (not isinstance(value, int) or isinstance(value, bool)))
            or (expected in {"bool", bool} and not isinstance(value, bool))
            or (expected in {"str", str} and not isinstance(value, str))
        ):
            raise ConfigError(f"{where}.{name} must be of type {expected}")
        values[name] = value
    try:
        return cls(**values)
    except TypeError as err:
        raise ConfigError(f"[{where}]: {err}") from err


def load_config(  # noqa: C901 - one check per section
    path: Path | None, environ: dict[str, str] | None = None
) -> RelayConfig:
    """Read ``path`` (TOML), with environment overrides so secrets can stay out of it.

    ``IOB_RELAY_DATABASE_URL``, ``IOB_RELAY_SECRET_KEY`` and ``IOB_RELAY_BROKER_PASSWORD``
    override the file.
    """
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with path.open("rb") as handle:
                data = tomllib.load(handle)
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(f"cannot read config {path}: {err}") from err
    base = path.parent if path is not None else Path.cwd()
    http = data.pop("http", {})
    broker_data = dict(data.pop("broker", {}))
    argon2_data = data.pop("argon2", {})
    limits_data = data.pop("limits", {})
    key_file = data.pop("secret_key_file", None)
    if "IOB_RELAY_BROKER_PASSWORD" in env:
        broker_data["password"] = env["IOB_RELAY_BROKER_PASSWORD"]
    broker = _section(BrokerConfig, broker_data, "broker")
    if not broker.password:
        raise ConfigError(
            "the broker's admin password is missing: set broker.password or "
            "IOB_RELAY_BROKER_PASSWORD"
        )
    if "IOB_RELAY_SECRET_KEY" in env:
        secret_key = _decode_key(env["IOB_RELAY_SECRET_KEY"], "IOB_RELAY_SECRET_KEY")
    elif isinstance(key_file, str):
        secret_key = read_secret_key(base / key_file)
    else:
        raise ConfigError(
            "no secret key: set secret_key_file (create it with `python -m cloud_relay init`) "
            "or IOB_RELAY_SECRET_KEY"
        )
    if not isinstance(http, dict):
        raise ConfigError("[http] must be a table")
    top: dict[str, Any] = {
        "http_host": http.pop("host", "127.0.0.1"),
        "http_port": http.pop("port", 8080),
        "trust_forwarded_for": http.pop("trust_forwarded_for", False),
    }
    if http:
        raise ConfigError(f"unknown key(s) in [http]: {', '.join(sorted(http))}")
    if "IOB_RELAY_DATABASE_URL" in env:
        data["database_url"] = env["IOB_RELAY_DATABASE_URL"]
    scalar = {f.name for f in fields(RelayConfig)} - {
        "secret_key",
        "broker",
        "argon2",
        "limits",
        "provisioning_tokens",
    }
    unknown = set(data) - scalar
    if unknown:
        raise ConfigError(f"unknown top-level key(s): {', '.join(sorted(unknown))}")
    try:
        return RelayConfig(
            secret_key=secret_key,
            broker=broker,
            argon2=_section(Argon2Params, argon2_data, "argon2"),
            limits=_section(RateLimits, limits_data, "limits"),
            provisioning_tokens=None if path is None else tokens_path(path),
            **top,
            **data,
        )
    except TypeError as err:
        raise ConfigError(f"config: {err}") from err
