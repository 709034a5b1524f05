"""The boundary between the device agent and whatever manages its network.

The agent's provisioning and fail-safe commit code talk only to this interface. Two
implementations: NetworkManager over D-Bus (a real Pi) and a simulated environment (tests and
the demo). Every failure is a ``NetworkError`` carrying the diagnostic code the user will see.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

from device_firmware.errors import DiagnosedError


class NetworkError(DiagnosedError):
    """A network step failed; ``code`` says which diagnostic the user is shown."""


@dataclass(frozen=True, slots=True)
class AccessPoint:
    """A Wi-Fi network seen by a scan (strongest BSS per SSID)."""

    ssid: bytes
    strength: int  # 0-100 %
    secured: bool
    frequency_mhz: int | None = None


@dataclass(frozen=True, slots=True)
class WifiCredentials:
    """What the user chose in Home Assistant: SSID bytes, passphrase (None for open), hidden.

    ``wps``: no passphrase typed; the router hands its key over by WPS push button during the
    join (``connect`` then returns the credentials with the key it learned).
    """

    ssid: bytes
    passphrase: str | None = field(default=None, repr=False)
    hidden: bool = False
    wps: bool = False


class NetworkBackend(abc.ABC):
    """Scan, join with the old configuration kept until commit, roll back, hotspot."""

    @abc.abstractmethod
    async def scan(self) -> list[AccessPoint]:
        """Return the networks in range, strongest first."""

    @abc.abstractmethod
    async def connect(self, credentials: WifiCredentials) -> WifiCredentials:
        """Join a network as a trial, keeping the previous configuration for rollback.

        Returns the credentials that joined: ``credentials`` itself, or for a WPS join the
        network with the key the router handed over (what a resumed commit rejoins with).
        Raises NetworkError with WIFI_AUTH_FAILED, WIFI_AP_NOT_FOUND, WPS_FAILED or
        DHCP_TIMEOUT; the caller bounds the time with ``asyncio.timeout`` (TIMEOUT).
        """

    @abc.abstractmethod
    async def check_dns(self, host: str) -> None:
        """Resolve ``host`` over the trial network; NetworkError(DNS_FAILED) otherwise."""

    @abc.abstractmethod
    async def check_internet(self) -> None:
        """Check general reachability; NetworkError(NO_INTERNET) otherwise.

        NetworkError(CAPTIVE_PORTAL) when the network holds the device at a sign-in page.
        """

    @abc.abstractmethod
    async def commit(self) -> None:
        """Make the trial network the saved one (autoconnect) and drop the previous one."""

    @abc.abstractmethod
    async def rollback(self) -> None:
        """Leave the trial network and restore exactly the previous configuration."""

    @abc.abstractmethod
    async def forget(self) -> None:
        """Remove the Wi-Fi configuration this agent saved (factory reset)."""

    @abc.abstractmethod
    async def wifi_connected(self) -> bool:
        """Whether the saved Wi-Fi is connected now (re-onboarding watches this)."""

    @abc.abstractmethod
    async def start_hotspot(self, ssid: str, passphrase: str | None) -> None:
        """Open the SoftAP for phone fallback provisioning."""

    @abc.abstractmethod
    async def stop_hotspot(self) -> None:
        """Close the SoftAP."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release resources (a D-Bus connection)."""
