"""LE advertisements: what they carry, that it fits, and the BlueZ ``LEAdvertisement1`` object.

A legacy advertisement carries 31 bytes, flags (3) included, and Home Assistant's scanners and
ESPHome proxies read legacy advertisements only. Two advertisements therefore take turns (BlueZ
and the kernel rotate instances on one radio):

* **IoT Onboard**: service data under the 128-bit :data:`~.wire.SERVICE_UUID` (flags 3 +
  service data 2 + 16 + 7 = 28 bytes). A 128-bit UUID list as well would need 18 more bytes, so
  the service UUID travels only as the service data's key: Home Assistant matches it with
  ``{"service_data_uuid": SERVICE_UUID, "connectable": true}``. The local name goes into the
  scan response, where BlueZ always puts it.
* **Improv**: the Improv service UUID and its ``4677`` service data in the same advertisement,
  as its spec demands (3 + 18 + 10 = 31 bytes: full).

Both are connectable and are registered only while they have something to offer (the
provisioning window is open); BlueZ drops them by itself if the agent's bus connection goes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from dbus_fast import Message, Variant

from .dbus_objects import ExportedObject
from .errors import BleError

_LOGGER = logging.getLogger(__name__)

IFACE_ADVERTISEMENT: Final = "org.bluez.LEAdvertisement1"
#: Legacy advertising PDU payload, and the same for the scan response.
LEGACY_ADV_SIZE: Final = 31
FLAGS_SIZE: Final = 3
_AD_HEADER: Final = 2  # length and type of one AD structure
_BASE_UUID_TAIL: Final = "-0000-1000-8000-00805f9b34fb"
_UUID_RE: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_UUID16_MAX: Final = 0xFFFF


def uuid_size(uuid: str) -> int:
    """Bytes a UUID takes in advertising data: 2, 4 (Bluetooth base UUID) or 16."""
    if not _UUID_RE.fullmatch(uuid):
        raise BleError(f"not a lower-case 128-bit UUID string: {uuid!r}")
    if uuid.endswith(_BASE_UUID_TAIL):
        return 2 if int(uuid[:8], 16) <= _UUID16_MAX else 4
    return 16


@dataclass(frozen=True, slots=True, kw_only=True)
class AdvertisementData:
    """The content of one connectable advertisement."""

    service_uuids: tuple[str, ...] = ()
    service_data: Mapping[str, bytes] = field(default_factory=dict)
    local_name: str | None = None
    discoverable: bool = True

    def advertising_length(self) -> int:
        """Bytes of the advertising PDU BlueZ builds, flags included."""
        size = FLAGS_SIZE
        widths: dict[int, int] = {}
        for uuid in self.service_uuids:
            width = uuid_size(uuid)
            widths[width] = widths.get(width, 0) + width
        size += sum(_AD_HEADER + total for total in widths.values())
        size += sum(
            _AD_HEADER + uuid_size(uuid) + len(data) for uuid, data in self.service_data.items()
        )
        return size

    def scan_response_length(self) -> int:
        """Bytes of the scan response (BlueZ puts only the local name there)."""
        return 0 if not self.local_name else _AD_HEADER + len(self.local_name.encode())

    def check(self) -> None:
        """Refuse content that does not fit legacy advertising (BlueZ would refuse it later)."""
        if self.advertising_length() > LEGACY_ADV_SIZE:
            raise BleError(
                f"advertisement of {self.advertising_length()} bytes exceeds {LEGACY_ADV_SIZE}"
            )
        if self.scan_response_length() > LEGACY_ADV_SIZE:
            raise BleError("local name too long for the scan response")

    def properties(self) -> dict[str, Variant]:
        """``LEAdvertisement1`` properties."""
        properties = {
            "Type": Variant("s", "peripheral"),
            "ServiceUUIDs": Variant("as", list(self.service_uuids)),
            "ServiceData": Variant(
                "a{sv}", {uuid: Variant("ay", data) for uuid, data in self.service_data.items()}
            ),
            "Discoverable": Variant("b", self.discoverable),
        }
        if self.local_name:
            properties["LocalName"] = Variant("s", self.local_name)
        return properties


class Advertisement(ExportedObject):
    """One ``LEAdvertisement1`` object; changing its data tells BlueZ to refresh it."""

    def __init__(
        self,
        path: str,
        data: AdvertisementData,
        *,
        emit: Callable[[str, str, Mapping[str, Variant]], None],
        on_release: Callable[[str], None] | None = None,
    ) -> None:
        """Export later with an :class:`~.dbus_objects.ObjectServer`; ``emit`` is its signal."""
        super().__init__(path)
        data.check()
        self._data = data
        self._emit = emit
        self._on_release = on_release
        self.registered = False

    @property
    def data(self) -> AdvertisementData:
        """What is advertised."""
        return self._data

    def update(self, data: AdvertisementData) -> None:
        """Change the content; BlueZ re-reads changed properties (advertising.c) at once."""
        data.check()
        if data == self._data:
            return
        old = self._data.properties()
        self._data = data
        new = data.properties()
        changed = {name: value for name, value in new.items() if old.get(name) != value}
        if self.registered and changed:
            self._emit(self.path, IFACE_ADVERTISEMENT, changed)

    def properties(self) -> dict[str, dict[str, Variant]]:
        """``LEAdvertisement1``."""
        return {IFACE_ADVERTISEMENT: self._data.properties()}

    def call(self, message: Message) -> Message | None:
        """``Release``: BlueZ dropped the advertisement (adapter off, BlueZ stopping)."""
        if message.interface == IFACE_ADVERTISEMENT and message.member == "Release":
            _LOGGER.info("BlueZ released advertisement %s", self.path)
            self.registered = False
            if self._on_release is not None:
                self._on_release(self.path)
            return Message.new_method_return(message)
        return None
