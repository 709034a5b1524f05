"""Where the agent keeps its files and how it is configured.

Every path and default lives here so tests (and a developer's laptop) can point the whole agent
at a temporary directory. A TOML file (``/etc/iot-onboard/device.toml`` by default) overrides
the defaults; command-line options override the file.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final, Self

from .errors import ConfigError
from .provisioning.http_guard import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    ServerLimits,
)

DEFAULT_CONFIG_FILE: Final = Path("/etc/iot-onboard/device.toml")
DEFAULT_DATA_DIR: Final = Path("/var/lib/iot-onboard")
#: The LAN provisioning server's port (advertised in the zeroconf SRV record).
DEFAULT_PORT: Final = 8423
#: NetworkManager's shared-mode hotspot puts the device at this address.
DEFAULT_CAPTIVE_HOST: Final = "10.42.0.1"
DEFAULT_CAPTIVE_PORT: Final = 80
#: DESIGN: the fail-safe timer of ``commit``.
DEFAULT_COMMIT_TIMEOUT: Final = 180
MAX_COMMIT_TIMEOUT: Final = 3600
DEFAULT_MODEL: Final = "iob-generic"
DEFAULT_GPIO_CHIP: Final = "/dev/gpiochip0"
#: Seconds the button must be held for a factory reset.
DEFAULT_BUTTON_HOLD: Final = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceConfig:
    """Everything the agent reads from disk or configuration."""

    data_dir: Path = DEFAULT_DATA_DIR
    #: The device's name in Home Assistant (the capability descriptor's ``device.name``);
    #: unset: Home Assistant names it after its model and id.
    name: str | None = None
    #: Addresses (or interface names) the LAN provisioning server listens on.
    listen: tuple[str, ...] = ("0.0.0.0",)  # noqa: S104 - the LAN server is meant for the LAN
    port: int = DEFAULT_PORT
    #: Addresses (or interface names) zeroconf answers on; never all interfaces by accident.
    advertise: tuple[str, ...] = ()
    captive_host: str = DEFAULT_CAPTIVE_HOST
    captive_port: int = DEFAULT_CAPTIVE_PORT
    commit_timeout: int = DEFAULT_COMMIT_TIMEOUT
    #: Accept ``http://`` account-service URLs (local development and tests only).
    allow_insecure_http: bool = False
    #: Extra CA bundle for a self-hosted account service with a private CA.
    relay_ca_file: Path | None = None
    #: Account service to confirm a pre-assigned (zero-touch) device with, over Ethernet.
    zero_touch_url: str | None = None
    #: HTTP timeout of one request to the account service, in seconds.
    relay_timeout: float = 15.0
    #: Open the SoftAP with the captive page when unclaimed and without a network.
    hotspot: bool = True
    #: Seconds the saved Wi-Fi of a claimed device may be down before provisioning reopens
    #: for new credentials (0: never).
    reonboard_after: int = 600
    #: The Wi-Fi interface NetworkManager should use (the first Wi-Fi device when unset).
    wifi_interface: str | None = None
    #: Offer BLE provisioning through BlueZ (docs/ble.md); the agent carries on without it.
    ble: bool = True
    #: The BlueZ adapter (``hci0``); the first LE adapter when unset.
    ble_adapter: str | None = None
    #: Also offer the Improv Wi-Fi service over BLE.
    improv: bool = True
    #: ``127.0.0.1:PORT`` (port 0: any free one): serve the BLE services to TCP clients on
    #: loopback instead of BlueZ - the radio's stand-in for tests and the demo (docs/ble.md).
    ble_bridge: str | None = None
    #: The device's push button: a GPIO line offset on ``gpio_chip`` (None: no button). Short
    #: press: open the provisioning window; held ``button_hold`` seconds: factory reset.
    button_gpio: int | None = None
    #: The GPIO chip of ``button_gpio``.
    gpio_chip: str = DEFAULT_GPIO_CHIP
    button_hold: float = DEFAULT_BUTTON_HOLD
    #: Open connections the LAN server and captive page accept together (lowered to what the
    #: open-file limit leaves); at the cap the oldest idle connection is closed.
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    #: Seconds a new connection has to send a complete request head.
    http_header_timeout: float = DEFAULT_HEADER_TIMEOUT
    #: Seconds a connection may idle between requests.
    http_idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    #: Simulated network scenario (tests, demo) instead of NetworkManager.
    simulate_network: Path | None = field(default=None)
    #: Once the servers listen, the agent writes its pid and bound ports here as JSON
    #: (``{"pid": 1, "lan": 8423, "ble_bridge": null}``; renamed into place, removed at stop),
    #: so a caller that asked for port 0 learns the port without guessing one first.
    port_file: Path | None = None

    def __post_init__(self) -> None:
        """Refuse values that would only fail later, far from their cause."""
        if not 0 <= self.port <= 65535 or not 0 <= self.captive_port <= 65535:  # noqa: PLR2004
            raise ConfigError("ports must be 0-65535 (0: any free port)")
        if not 1 <= self.commit_timeout <= MAX_COMMIT_TIMEOUT:
            raise ConfigError(f"commit_timeout must be 1-{MAX_COMMIT_TIMEOUT} seconds")
        if self.reonboard_after < 0:
            raise ConfigError("reonboard_after must be 0 (never) or a number of seconds")
        if self.relay_timeout <= 0:
            raise ConfigError("relay_timeout must be positive")
        if self.button_gpio is not None and self.button_gpio < 0:
            raise ConfigError("button_gpio must be a line offset (0 or more)")
        if self.button_hold <= 0:
            raise ConfigError("button_hold must be a positive number of seconds")
        _check_name(self.name)
        _check_server_limits(self)
        if not self.listen:
            raise ConfigError("listen must name at least one address")
        if self.ble_bridge is not None:
            _check_bridge(self.ble_bridge, ble=self.ble)
        try:
            ipaddress.ip_address(self.captive_host)
        except ValueError as err:
            raise ConfigError(f"captive_host must be an IP address: {err}") from err

    # --- files under data_dir ---------------------------------------------------------------

    @property
    def identity_file(self) -> Path:
        """Ed25519 private key and device id (mode 0600)."""
        return self.data_dir / "identity.json"

    @property
    def setup_code_file(self) -> Path:
        """Both setup secrets, needed for the PAKE (mode 0600)."""
        return self.data_dir / "setup-code.json"

    @property
    def verifier_file(self) -> Path:
        """The registry verifier, kept to check the captive page's code without the plain code."""
        return self.data_dir / "setup-verifier.txt"

    @property
    def factory_file(self) -> Path:
        """Model and public facts written at the factory."""
        return self.data_dir / "factory.json"

    @property
    def lock_file(self) -> Path:
        """Held by the running agent (one agent per device; ``reset`` signals it)."""
        return self.data_dir / "agent.lock"

    @property
    def attempts_file(self) -> Path:
        """The last onboarding attempts, step by step (``iob-device attempts``)."""
        return self.data_dir / "attempts.json"

    @property
    def state_file(self) -> Path:
        """The persisted onboarding state (mode 0600: it holds MQTT credentials)."""
        return self.data_dir / "state.json"

    # --- loading ----------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path | None, **overrides: Any) -> Self:
        """Defaults, then the TOML file (if ``path`` exists), then non-``None`` overrides."""
        values: dict[str, Any] = {}
        if path is not None:
            try:
                values = tomllib.loads(path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                if path != DEFAULT_CONFIG_FILE:
                    raise ConfigError(f"configuration file {path} not found") from None
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
                raise ConfigError(f"cannot read {path}: {err}") from err
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls.from_mapping(values)

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> Self:
        """Build from TOML-like values, converting paths and lists; unknown keys are errors."""
        known = {item.name: item for item in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"unknown configuration key {unknown[0]!r}")
        converted: dict[str, Any] = {}
        for name, value in values.items():
            converted[name] = _convert(name, value)
        try:
            return cls(**converted)
        except TypeError as err:
            raise ConfigError(str(err)) from err

    @property
    def server_limits(self) -> ServerLimits:
        """The HTTP servers' connection limits."""
        return ServerLimits(
            max_connections=self.max_connections,
            header_timeout=self.http_header_timeout,
            idle_timeout=self.http_idle_timeout,
        )

    def with_changes(self, **changes: Any) -> Self:
        """A copy with some fields replaced (tests)."""
        return replace(self, **changes)


def bridge_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` of the BLE bridge (``[::1]:PORT`` for IPv6); loopback addresses only.

    The bridge has no pairing and no radio range: anyone who can connect is "in range", so it
    never listens beyond this machine.
    """
    host, colon, port_text = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:  # noqa: PLR2004
        raise ConfigError(f"ble_bridge must be HOST:PORT such as 127.0.0.1:0, not {text!r}")
    try:
        address = ipaddress.ip_address(host)
    except ValueError as err:
        raise ConfigError(f"ble_bridge needs an IP address, not {host!r}: {err}") from err
    if not address.is_loopback:
        raise ConfigError(
            f"ble_bridge must listen on a loopback address such as 127.0.0.1, not {host}: "
            "it stands in for the radio in tests and demos and has no access control"
        )
    return str(address), int(port_text)


def _check_server_limits(config: DeviceConfig) -> None:
    if config.max_connections < 1:
        raise ConfigError("max_connections must be at least 1")
    if config.http_header_timeout <= 0 or config.http_idle_timeout <= 0:
        raise ConfigError("http_header_timeout and http_idle_timeout must be positive")


def _check_name(name: str | None) -> None:
    if name is not None and not name.strip():
        raise ConfigError('name must be text such as "Kitchen sensor" (or left out)')


def _check_bridge(text: str, *, ble: bool) -> None:
    bridge_address(text)
    if not ble:
        raise ConfigError("ble = false and ble_bridge contradict each other: drop one")


_PATH_KEYS: Final = {"data_dir", "relay_ca_file", "simulate_network", "port_file"}
_LIST_KEYS: Final = {"listen", "advertise"}
_INT_KEYS: Final = {
    "port",
    "captive_port",
    "commit_timeout",
    "reonboard_after",
    "button_gpio",
    "max_connections",
}
_BOOL_KEYS: Final = {"allow_insecure_http", "hotspot", "ble", "improv"}


def _number(name: str, value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ConfigError(f"{name} must be a number")
    return float(value)


def _convert(name: str, value: Any) -> Any:
    if name in {"relay_timeout", "button_hold", "http_header_timeout", "http_idle_timeout"}:
        return _number(name, value)
    if name in _PATH_KEYS:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{name} must be a path")
        return Path(value)
    if name in _LIST_KEYS:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name} must be a list of strings")
        return tuple(value)
    if (name in _INT_KEYS and (not isinstance(value, int) or isinstance(value, bool))) or (
        name in _BOOL_KEYS and not isinstance(value, bool)
    ):
        raise ConfigError(f"{name} must be {'an integer' if name in _INT_KEYS else 'a boolean'}")
    if name in {
        "captive_host",
        "zero_touch_url",
        "wifi_interface",
        "ble_adapter",
        "ble_bridge",
        "gpio_chip",
        "name",
    } and not isinstance(value, str):
        raise ConfigError(f"{name} must be a string")
    return value
