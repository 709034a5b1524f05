"""A simulated Wi-Fi environment behind the :class:`NetworkBackend` interface.

Tests and the demo describe a scenario - networks in range with their strength, security,
passphrase and what works behind them (DHCP, DNS, internet), hidden networks, slow links,
a wired connection - and the agent runs unchanged against it. Failures surface exactly as the
NetworkManager backend reports them: a ``NetworkError`` with the diagnostic code.

A scenario file (JSON or TOML, for ``run --simulate-network FILE``)::

    wired = false                 # Ethernet with internet (zero-touch)
    [[networks]]
    ssid = "HomeNet"              # or ssid_hex = "486f6d65" for non-UTF-8 names
    passphrase = "correct horse"  # omit for an open network
    strength = 80                 # 0-100 %
    hidden = false
    dhcp = true                   # false: DHCP_TIMEOUT after joining
    dns = true                    # false: DNS_FAILED
    internet = true               # false: NO_INTERNET
    connect_delay = 0.0           # seconds to associate (slow links)
    wps_pressed = false           # true: the router's WPS button was pressed (a WPS join works)
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Self

from iob_protocol.commands import validate_passphrase, validate_ssid
from iob_protocol.diagnostics import DiagnosticCode
from iob_protocol.errors import InvalidFieldError

from device_firmware.errors import ScenarioError

from .backend import AccessPoint, NetworkBackend, NetworkError, WifiCredentials

_PSK_HEX_LENGTH: Final = 64
_WPA_ITERATIONS: Final = 4096
_MAX_DELAY: Final = 3600.0
_NETWORK_KEYS: Final = frozenset(
    {
        "ssid",
        "ssid_hex",
        "passphrase",
        "strength",
        "hidden",
        "dhcp",
        "dns",
        "internet",
        "connect_delay",
        "frequency_mhz",
        "wps_pressed",
    }
)
_SCENARIO_KEYS: Final = frozenset({"networks", "wired", "saved", "dhcp_timeout"})


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulatedNetwork:
    """One network in range and what works behind it."""

    ssid: bytes
    passphrase: str | None = field(default=None, repr=False)
    strength: int = 70
    hidden: bool = False
    dhcp: bool = True
    dns: bool = True
    internet: bool = True
    #: A captive portal: it answers every web request (port 443 too) with its own page.
    captive_portal: bool = False
    connect_delay: float = 0.0
    frequency_mhz: int = 2437
    #: The router's WPS button was pressed: a WPS join gets the passphrase (secured only).
    wps_pressed: bool = False

    def __post_init__(self) -> None:
        """Scenario mistakes are reported when the scenario is built, not mid-test."""
        try:
            validate_ssid(self.ssid)
            validate_passphrase(self.passphrase)
        except InvalidFieldError as err:
            raise ScenarioError(f"network {self.ssid!r}: {err}") from err
        if not 0 <= self.strength <= 100:  # noqa: PLR2004
            raise ScenarioError(f"network {self.ssid!r}: strength must be 0-100")
        if not 0 <= self.connect_delay <= _MAX_DELAY:
            raise ScenarioError(f"network {self.ssid!r}: connect_delay must be 0-3600 s")

    @property
    def secured(self) -> bool:
        """Whether joining needs a passphrase."""
        return self.passphrase is not None

    def accepts(self, passphrase: str | None) -> bool:
        """Whether ``passphrase`` (or a 64-hex PSK derived from it) opens this network."""
        if self.passphrase is None or passphrase is None:
            return self.passphrase is None and passphrase is None
        if len(passphrase) == _PSK_HEX_LENGTH:
            psk = hashlib.pbkdf2_hmac(
                "sha1", self.passphrase.encode(), self.ssid, _WPA_ITERATIONS, 32
            )
            return hmac.compare_digest(psk.hex(), passphrase.lower())
        return hmac.compare_digest(self.passphrase.encode(), passphrase.encode())


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """The radio environment at start."""

    networks: tuple[SimulatedNetwork, ...] = ()
    #: An Ethernet link with working DNS and internet (zero-touch devices use it).
    wired: bool = False
    #: SSID of a network already saved and connected at start.
    saved: bytes | None = None
    #: How long a network without DHCP keeps the device waiting before DHCP_TIMEOUT.
    dhcp_timeout: float = 0.0

    def network(self, ssid: bytes) -> SimulatedNetwork | None:
        """The network called ``ssid``, if in range."""
        return next((net for net in self.networks if net.ssid == ssid), None)

    @classmethod
    def from_mapping(cls, document: Any) -> Self:
        """Build from parsed JSON/TOML, refusing unknown keys and wrong types."""
        if not isinstance(document, dict):
            raise ScenarioError("a scenario is an object")
        unknown = sorted(set(document) - _SCENARIO_KEYS)
        if unknown:
            raise ScenarioError(f"unknown scenario key {unknown[0]!r}")
        networks = document.get("networks", [])
        if not isinstance(networks, list):
            raise ScenarioError("networks must be a list")
        saved = document.get("saved")
        if saved is not None and not isinstance(saved, str):
            raise ScenarioError("saved must be an SSID string")
        scenario = cls(
            networks=tuple(_network(item, index) for index, item in enumerate(networks)),
            wired=_flag(document, "wired", default=False),
            saved=None if saved is None else saved.encode(),
            dhcp_timeout=_delay(document, "dhcp_timeout"),
        )
        if scenario.saved is not None and scenario.network(scenario.saved) is None:
            raise ScenarioError("saved names a network that is not in range")
        return scenario

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a ``.json`` or ``.toml`` scenario file."""
        try:
            text = path.read_text(encoding="utf-8")
            document = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise ScenarioError(f"cannot read scenario {path}: {err}") from err
        return cls.from_mapping(document)


def _flag(document: dict[str, Any], name: str, *, default: bool) -> bool:
    value = document.get(name, default)
    if not isinstance(value, bool):
        raise ScenarioError(f"{name} must be true or false")
    return value


def _delay(document: dict[str, Any], name: str) -> float:
    value = document.get(name, 0.0)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ScenarioError(f"{name} must be a number of seconds")
    return float(value)


def _network(item: Any, index: int) -> SimulatedNetwork:
    if not isinstance(item, dict):
        raise ScenarioError(f"networks[{index}] must be an object")
    unknown = sorted(set(item) - _NETWORK_KEYS)
    if unknown:
        raise ScenarioError(f"networks[{index}]: unknown key {unknown[0]!r}")
    if ("ssid" in item) == ("ssid_hex" in item):
        raise ScenarioError(f"networks[{index}]: give exactly one of ssid and ssid_hex")
    try:
        ssid = (
            str(item["ssid"]).encode() if "ssid" in item else bytes.fromhex(str(item["ssid_hex"]))
        )
    except ValueError as err:
        raise ScenarioError(f"networks[{index}]: {err}") from err
    passphrase = item.get("passphrase")
    if passphrase is not None and not isinstance(passphrase, str):
        raise ScenarioError(f"networks[{index}]: passphrase must be a string")
    strength = item.get("strength", 70)
    frequency = item.get("frequency_mhz", 2437)
    if not isinstance(strength, int) or not isinstance(frequency, int):
        raise ScenarioError(f"networks[{index}]: strength and frequency_mhz must be integers")
    return SimulatedNetwork(
        ssid=ssid,
        passphrase=passphrase,
        strength=strength,
        hidden=_flag(item, "hidden", default=False),
        dhcp=_flag(item, "dhcp", default=True),
        dns=_flag(item, "dns", default=True),
        internet=_flag(item, "internet", default=True),
        connect_delay=_delay(item, "connect_delay"),
        frequency_mhz=frequency,
        wps_pressed=_flag(item, "wps_pressed", default=False),
    )


class SimulatedBackend(NetworkBackend):
    """The :class:`NetworkBackend` of a :class:`Scenario`; ``events`` records what was done."""

    def __init__(self, scenario: Scenario) -> None:
        """Start connected to the scenario's saved network (or nothing, or Ethernet)."""
        self._scenario = scenario
        self._saved = None if scenario.saved is None else scenario.network(scenario.saved)
        self._trial: SimulatedNetwork | None = None
        self._hotspot: tuple[str, str | None] | None = None
        self._hotspot_before_trial: tuple[str, str | None] | None = None
        self.events: list[str] = []

    # --- inspection and scripted changes (tests, demo) -------------------------------------

    @property
    def scenario(self) -> Scenario:
        """The current environment."""
        return self._scenario

    @property
    def saved_ssid(self) -> bytes | None:
        """The committed network."""
        return None if self._saved is None else self._saved.ssid

    @property
    def trial_ssid(self) -> bytes | None:
        """The network being tried, before commit or rollback."""
        return None if self._trial is None else self._trial.ssid

    @property
    def hotspot(self) -> tuple[str, str | None] | None:
        """SSID and passphrase of the running hotspot."""
        return self._hotspot

    def update_network(self, ssid: bytes, **changes: Any) -> None:
        """Change a network in place (a router that loses its uplink, a password change)."""
        networks = tuple(
            replace(net, **changes) if net.ssid == ssid else net for net in self._scenario.networks
        )
        self._scenario = replace(self._scenario, networks=networks)
        if self._saved is not None and self._saved.ssid == ssid:
            self._saved = self._scenario.network(ssid)

    def remove_network(self, ssid: bytes) -> None:
        """Take a network out of range (router switched off)."""
        networks = tuple(net for net in self._scenario.networks if net.ssid != ssid)
        self._scenario = replace(self._scenario, networks=networks)

    # --- NetworkBackend ---------------------------------------------------------------------

    async def scan(self) -> list[AccessPoint]:
        """Visible (non-hidden) networks, strongest first."""
        await asyncio.sleep(0)
        self.events.append("scan")
        visible = [net for net in self._scenario.networks if not net.hidden]
        visible.sort(key=lambda net: net.strength, reverse=True)
        return [
            AccessPoint(
                ssid=net.ssid,
                strength=net.strength,
                secured=net.secured,
                frequency_mhz=net.frequency_mhz,
            )
            for net in visible
        ]

    async def connect(self, credentials: WifiCredentials) -> WifiCredentials:
        """Join as a trial; the saved network (and hotspot) come back on rollback."""
        self.events.append(f"connect:{credentials.ssid.hex()}")
        network = self._scenario.network(credentials.ssid)
        if network is None or (network.hidden and not credentials.hidden):
            raise NetworkError(
                DiagnosticCode.WIFI_AP_NOT_FOUND,
                "not in range" if network is None else "hidden network: set the hidden flag",
            )
        await asyncio.sleep(network.connect_delay)
        if credentials.wps:
            if not (network.wps_pressed and network.secured):
                raise NetworkError(
                    DiagnosticCode.WPS_FAILED, "no WPS push-button session at the router"
                )
            credentials = replace(credentials, passphrase=network.passphrase, wps=False)
        if not network.accepts(credentials.passphrase):
            raise NetworkError(DiagnosticCode.WIFI_AUTH_FAILED, "4-way handshake failed")
        if not network.dhcp:
            await asyncio.sleep(self._scenario.dhcp_timeout)
            raise NetworkError(DiagnosticCode.DHCP_TIMEOUT, "no DHCP offer")
        self._hotspot_before_trial = self._hotspot
        self._hotspot = None  # one radio: the hotspot goes while the trial runs
        self._trial = network
        return credentials

    def _active(self) -> SimulatedNetwork | None:
        return self._trial if self._trial is not None else self._saved

    async def check_dns(self, host: str) -> None:
        """DNS works if the active network (or Ethernet) provides it."""
        await asyncio.sleep(0)
        self.events.append(f"dns:{host}")
        active = self._active()
        if active is None:
            if self._scenario.wired:
                return
            raise NetworkError(DiagnosticCode.DNS_FAILED, "no network")
        if not active.dns:
            raise NetworkError(DiagnosticCode.DNS_FAILED, f"cannot resolve {host}")

    async def check_internet(self) -> None:
        """Internet works if the active network (or Ethernet) has an uplink."""
        await asyncio.sleep(0)
        self.events.append("internet")
        active = self._active()
        if active is None:
            if self._scenario.wired:
                return
            raise NetworkError(DiagnosticCode.NO_INTERNET, "no network")
        if active.captive_portal:
            raise NetworkError(DiagnosticCode.CAPTIVE_PORTAL, "a portal answers every request")
        if not active.internet:
            raise NetworkError(DiagnosticCode.NO_INTERNET, "no route to the internet")

    async def commit(self) -> None:
        """The trial becomes the saved network; the hotspot stays off."""
        await asyncio.sleep(0)
        if self._trial is None:
            self.events.append("commit:none")
            return
        self.events.append(f"commit:{self._trial.ssid.hex()}")
        self._saved = self._trial
        self._trial = None
        self._hotspot_before_trial = None

    async def rollback(self) -> None:
        """Drop the trial; the saved network and the hotspot are as before."""
        await asyncio.sleep(0)
        self.events.append("rollback")
        if self._trial is not None:
            self._trial = None
            self._hotspot = self._hotspot_before_trial
        self._hotspot_before_trial = None

    async def forget(self) -> None:
        """Remove the saved network."""
        await asyncio.sleep(0)
        self.events.append("forget")
        self._saved = None
        self._trial = None

    async def wifi_connected(self) -> bool:
        """Whether the saved network is connected and still in range."""
        await asyncio.sleep(0)
        return self._saved is not None and self._scenario.network(self._saved.ssid) is not None

    async def start_hotspot(self, ssid: str, passphrase: str | None) -> None:
        """Open the SoftAP."""
        await asyncio.sleep(0)
        self.events.append(f"hotspot:on:{ssid}")
        self._hotspot = (ssid, passphrase)

    async def stop_hotspot(self) -> None:
        """Close the SoftAP."""
        await asyncio.sleep(0)
        self.events.append("hotspot:off")
        self._hotspot = None

    async def wired_connected(self) -> bool:
        """Whether Ethernet is up (not part of :class:`NetworkBackend`; zero-touch demo)."""
        await asyncio.sleep(0)
        return self._scenario.wired
