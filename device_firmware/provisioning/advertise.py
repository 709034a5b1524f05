"""The zeroconf advertisement ``_iot-onboard._tcp.local.`` that lets Home Assistant find the device.

TXT record (all ASCII, stable keys for HA's matcher)::

    id=<device id>  model=<model>  firmware=<version>  state=<phase>  protocol=<version>

Only the configured addresses are used (``advertise`` in the configuration: IPv4 addresses or
interface names), never every interface by default: a device on a guest network, or a test on
a developer's machine, must not answer mDNS where it was not asked to. The record stays in
every state (only ``state`` changes) and is withdrawn only on shutdown: Home Assistant's zeroconf
aborts every discovery flow of a removed record - the user's onboarding flow would vanish the
moment the claim succeeds - and HA learns an owned device's new address from it.
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import socket
import struct
from typing import Final

from iob_protocol.session import PROTOCOL_VERSION
from zeroconf import IPVersion, ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

from device_firmware.errors import ConfigError

_LOGGER = logging.getLogger(__name__)

SERVICE_TYPE: Final = "_iot-onboard._tcp.local."
_SIOCGIFADDR: Final = 0x8915
#: One TXT string (``key=value``) is at most 255 bytes (RFC 6763 §6.1).
_TXT_STRING_BYTES: Final = 255


def interface_address(name: str) -> str:
    """The IPv4 address of interface ``name`` (Linux ``SIOCGIFADDR``)."""
    packed = struct.pack("256s", name.encode()[:15])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            answer = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, packed)
        except OSError as err:
            raise ConfigError(f"interface {name!r} has no IPv4 address: {err}") from err
    return socket.inet_ntoa(answer[20:24])


def resolve_addresses(entries: tuple[str, ...]) -> list[str]:
    """IPv4 addresses for configured entries (addresses as they are, names looked up)."""
    addresses: list[str] = []
    for entry in entries:
        try:
            address = ipaddress.ip_address(entry)
        except ValueError:
            addresses.append(interface_address(entry))
            continue
        if address.version != 4:  # noqa: PLR2004
            raise ConfigError(f"advertise: {entry} is not an IPv4 address")
        addresses.append(entry)
    return addresses


def txt_record(
    *, device_id: str, model: str, firmware: str, state: str, name: str | None = None
) -> dict[str, str]:
    """The TXT properties; ``name`` only when set and it fits one TXT string (255 bytes)."""
    properties = {
        "id": device_id,
        "model": model,
        "firmware": firmware,
        "state": state,
        "protocol": str(PROTOCOL_VERSION),
    }
    if name is not None and len(f"name={name}".encode()) <= _TXT_STRING_BYTES:
        properties["name"] = name
    return properties


class Advertiser:
    """Registers, updates and withdraws the device's service on the configured addresses."""

    def __init__(
        self,
        *,
        device_id: str,
        model: str,
        firmware: str,
        port: int,
        addresses: list[str],
        instance_name: str | None = None,
        device_name: str | None = None,
    ) -> None:
        """Prepare; nothing is sent until :meth:`start`."""
        if not addresses:
            raise ConfigError("zeroconf needs at least one address to advertise on")
        self._device_id = device_id
        self._model = model
        self._firmware = firmware
        self._device_name = device_name
        self._port = port
        self._addresses = addresses
        self._name = f"{instance_name or 'iob-' + device_id}.{SERVICE_TYPE}"
        self._zeroconf: AsyncZeroconf | None = None
        self._info: ServiceInfo | None = None

    @property
    def service_name(self) -> str:
        """The full service instance name."""
        return self._name

    @property
    def registered(self) -> bool:
        """Whether the record is being advertised."""
        return self._info is not None

    def _service_info(self, state: str) -> ServiceInfo:
        return ServiceInfo(
            SERVICE_TYPE,
            self._name,
            port=self._port,
            properties=txt_record(
                device_id=self._device_id,
                model=self._model,
                firmware=self._firmware,
                state=state,
                name=self._device_name,
            ),
            server=f"iob-{self._device_id.lower()}.local.",
            addresses=[socket.inet_aton(address) for address in self._addresses],
        )

    async def start(self) -> None:
        """Open the mDNS sockets on the configured addresses only."""
        if self._zeroconf is None:
            self._zeroconf = AsyncZeroconf(
                interfaces=list(self._addresses), ip_version=IPVersion.V4Only
            )

    async def publish(self, state: str) -> None:
        """Advertise with ``state`` in the TXT record (register, or update the record)."""
        await self.start()
        if self._zeroconf is None:  # pragma: no cover - set by start
            return
        info = self._service_info(state)
        if self._info is None:
            # The first await schedules probing and announcing; the second waits for them.
            await (await self._zeroconf.async_register_service(info))
            _LOGGER.info("advertising %s on %s", self._name, ", ".join(self._addresses))
        else:
            await (await self._zeroconf.async_update_service(info))
        self._info = info

    async def withdraw(self) -> None:
        """Stop advertising (sends goodbye packets)."""
        if self._zeroconf is not None and self._info is not None:
            await (await self._zeroconf.async_unregister_service(self._info))
            _LOGGER.info("no longer advertising %s", self._name)
        self._info = None

    async def aclose(self) -> None:
        """Withdraw and close the sockets."""
        await self.withdraw()
        if self._zeroconf is not None:
            await self._zeroconf.async_close()
            self._zeroconf = None
