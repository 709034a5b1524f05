"""The service's zeroconf announcement ``_iob-relay._tcp.local.`` (``serve --announce``).

Outside Home Assistant OS (Docker, another host on the LAN) nothing tells Home Assistant where
the account service is; with ``--announce ADDRESS`` the service registers this record so HA's
zeroconf can offer it (the HA-side flow is a later issue). Inside the add-on the Supervisor's
discovery does that job instead (:mod:`cloud_relay.addon`).

TXT record (ASCII, stable keys)::

    path=/  api=v1  version=<package version>

Only the given IPv4 addresses are announced, never every interface by default (as the device's
advertisement, ``device_firmware/provisioning/advertise.py``): a service must not answer mDNS on
a network it was not asked to. The record is withdrawn when the service stops.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Final

from .errors import ConfigError

if TYPE_CHECKING:
    from zeroconf import ServiceInfo
    from zeroconf.asyncio import AsyncZeroconf

_LOGGER: Final = logging.getLogger(__name__)

#: RFC 6763 §7.2: at most 15 bytes between "_" and "._tcp" ("iot-onboard-relay" has 17).
SERVICE_TYPE: Final = "_iob-relay._tcp.local."
API_VERSION: Final = "v1"
_ANY: Final = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 - the addresses meaning "all"


def _package_version() -> str:
    try:
        return version("iot-onboard")
    except PackageNotFoundError:  # pragma: no cover - a source tree without an install
        return "0"


#: A TXT value is at most 255 bytes with its key; a URL longer than this does not fit.
MAX_PUBLIC_URL: Final = 200


def txt_record(public_url: str | None = None) -> dict[str, str]:
    """The TXT properties; ``url``: the https address clients use (a TLS proxy in front)."""
    record = {"path": "/", "api": API_VERSION, "version": _package_version()}
    if public_url is not None:
        record["url"] = public_url
    return record


def check_public_url(url: str) -> str:
    """``--announce-url``: an https base URL that fits a TXT record, else a config error.

    The service itself speaks plain http, which Home Assistant accepts only on its own host;
    on a LAN, clients reach it through a TLS proxy, whose address this names.
    """
    from yarl import URL  # noqa: PLC0415 - only the announcement needs it

    try:
        parsed = URL(url)
    except ValueError:
        parsed = None
    if parsed is None or parsed.scheme != "https" or not parsed.host or parsed.user:
        raise ConfigError(
            f"--announce-url {url}: give the https address of the TLS proxy in front of the "
            "service, such as https://relay.home.example:8443"
        )
    if len(url.encode()) > MAX_PUBLIC_URL:
        raise ConfigError(f"--announce-url: at most {MAX_PUBLIC_URL} bytes (a TXT record)")
    return str(parsed).rstrip("/")


def check_addresses(addresses: Sequence[str], http_host: str) -> list[str]:
    """The addresses to announce, refused when the HTTP server would not answer on them."""
    checked: list[str] = []
    for entry in addresses:
        try:
            address = ipaddress.ip_address(entry)
        except ValueError:
            raise ConfigError(f"--announce {entry}: not an IPv4 address") from None
        if address.version != 4:  # noqa: PLR2004
            raise ConfigError(f"--announce {entry}: not an IPv4 address")
        if http_host not in _ANY and entry != http_host:
            raise ConfigError(
                f"--announce {entry}, but the service listens on {http_host} only: set "
                f'[http] host = "0.0.0.0" (or "{entry}") in the configuration'
            )
        checked.append(entry)
    if not checked:
        raise ConfigError("--announce needs at least one address")
    return checked


class RelayAnnouncer:
    """Registers and withdraws the service's record on the given addresses."""

    def __init__(
        self,
        *,
        port: int,
        addresses: Sequence[str],
        instance_name: str | None = None,
        public_url: str | None = None,
    ) -> None:
        """Prepare; nothing is sent until :meth:`start` (``public_url``: TXT ``url``)."""
        self._public_url = public_url
        self._port = port
        self._addresses = list(addresses)
        name = instance_name or f"IoT Onboard account service on {socket.gethostname()}"
        self._name = f"{name}.{SERVICE_TYPE}"
        self._zeroconf: AsyncZeroconf | None = None
        self._info: ServiceInfo | None = None

    @property
    def service_name(self) -> str:
        """The full service instance name."""
        return self._name

    async def start(self) -> None:
        """Register the record (probing for a unique name first)."""
        # Imported here: only a service started with --announce loads zeroconf.
        from zeroconf import IPVersion, ServiceInfo  # noqa: PLC0415
        from zeroconf.asyncio import AsyncZeroconf  # noqa: PLC0415

        info = ServiceInfo(
            SERVICE_TYPE,
            self._name,
            port=self._port,
            properties=txt_record(self._public_url),
            server=f"{socket.gethostname().split('.')[0] or 'iob-relay'}.local.",
            addresses=[socket.inet_aton(address) for address in self._addresses],
        )
        zeroconf = AsyncZeroconf(interfaces=self._addresses, ip_version=IPVersion.V4Only)
        try:
            await zeroconf.async_register_service(info, allow_name_change=True)
        except BaseException:
            await zeroconf.async_close()
            raise
        self._zeroconf, self._info = zeroconf, info
        _LOGGER.info(
            "announcing %s on %s port %d", info.name, ", ".join(self._addresses), self._port
        )

    async def stop(self) -> None:
        """Withdraw the record and close the zeroconf instance."""
        zeroconf, info = self._zeroconf, self._info
        self._zeroconf = self._info = None
        if zeroconf is not None:
            if info is not None:
                await zeroconf.async_unregister_service(info)
            await zeroconf.async_close()
