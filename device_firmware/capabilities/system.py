"""The Pi's own health as sensors: CPU temperature, load, memory, disk, last boot, Wi-Fi signal.

Every path hangs off ``root`` (``/`` on a device, a fake tree in tests), and every read runs in
a worker thread: sysfs and procfs reads are fast but still blocking system calls, and the
event loop also serves the provisioning session and MQTT.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Final

from .base import (
    Capability,
    CapabilityError,
    EntityCategory,
    EntityDescriptor,
    Platform,
    StateClass,
    StateValue,
)

_MILLI: Final = 1000.0
_PERCENT: Final = 100.0
_CPU_ZONE_TYPES: Final = ("cpu-thermal", "cpu_thermal", "soc_thermal", "x86_pkg_temp")


class _FileSensor(Capability):
    """A sensor whose value comes from a blocking read, done in a worker thread."""

    def __init__(self, descriptor: EntityDescriptor, reader: Callable[[], StateValue]) -> None:
        super().__init__(descriptor)
        self._reader = reader

    async def read(self) -> StateValue:
        """Run the blocking reader off the event loop."""
        try:
            return await asyncio.to_thread(self._reader)
        except (OSError, ValueError, IndexError) as err:
            raise CapabilityError(f"{self.key}: {err}") from err


def cpu_temperature_zone(root: Path) -> Path | None:
    """The thermal zone of the CPU (by type), else the first zone; None without any."""
    zones = sorted((root / "sys/class/thermal").glob("thermal_zone*"))
    zones = [zone for zone in zones if (zone / "temp").is_file()]
    for zone in zones:
        try:
            kind = (zone / "type").read_text().strip()
        except OSError:
            continue
        if kind in _CPU_ZONE_TYPES:
            return zone
    return zones[0] if zones else None


def _diagnostic(
    key: str,
    name: str,
    *,
    device_class: str | None = None,
    unit: str | None = None,
    measurement: bool = True,
    icon: str | None = None,
    precision: int | None = None,
) -> EntityDescriptor:
    """A diagnostic sensor's descriptor; the integration translates ``key``."""
    return EntityDescriptor(
        key=key,
        platform=Platform.SENSOR,
        name=name,
        translation_key=key,
        device_class=device_class,
        unit=unit,
        state_class=StateClass.MEASUREMENT if measurement else None,
        entity_category=EntityCategory.DIAGNOSTIC,
        icon=icon,
        suggested_display_precision=precision,
    )


def _millidegrees(path: Path) -> float:
    """``thermal_zone*/temp`` in millidegrees Celsius, as degrees."""
    return round(int(path.read_text().strip()) / _MILLI, 1)


def _load_1m(path: Path) -> float:
    """The one-minute load average from ``/proc/loadavg``."""
    return round(float(path.read_text().split()[0]), 2)


def _memory_used_percent(path: Path) -> float:
    """Share of RAM in use (MemTotal minus MemAvailable) from ``/proc/meminfo``."""
    values: dict[str, int] = {}
    for line in path.read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in {"MemTotal", "MemAvailable"}:
            values[name] = int(rest.split()[0])
    total, available = values["MemTotal"], values["MemAvailable"]
    if total <= 0:
        raise ValueError("MemTotal is zero")
    return round((total - available) / total * _PERCENT, 1)


def _disk_used_percent(path: Path) -> float:
    """Share of the file system holding ``path`` in use (what a full SD card shows first)."""
    stats = os.statvfs(path)
    total = stats.f_blocks * stats.f_frsize
    if total <= 0:
        raise ValueError(f"{path} reports no blocks")
    free = stats.f_bavail * stats.f_frsize
    return round((total - free) / total * _PERCENT, 1)


def _boot_time(path: Path) -> str:
    """Boot time from ``/proc/stat`` (a timestamp does not change every poll, uptime would)."""
    for line in path.read_text().splitlines():
        if line.startswith("btime "):
            return datetime.fromtimestamp(int(line.split()[1]), UTC).isoformat()
    raise ValueError(f"no btime in {path}")


def _wifi_signal(path: Path, interface: str | None = None) -> int | None:
    """Signal level in dBm of ``interface`` (the first listed when None) in /proc/net/wireless."""
    # Two header lines, then "wlan0: 0000   58.  -52.  -256 ..." (link, level dBm, noise).
    for line in path.read_text().splitlines()[2:]:
        name, _, rest = line.partition(":")
        if interface is not None and name.strip() != interface:
            continue
        return int(float(rest.split()[2]))
    return None  # not associated: the interface is not listed


_CPU_TEMPERATURE: Final = _diagnostic(
    "cpu_temperature", "CPU temperature", device_class="temperature", unit="°C", precision=1
)
#: The sensors read from a file under ``root`` (or, for the disk, ``root`` itself), in the order
#: they are listed after the CPU temperature; each is there when its path is.
_ROOT_SENSORS: Final[tuple[tuple[EntityDescriptor, str, Callable[[Path], StateValue]], ...]] = (
    (
        _diagnostic("load_1m", "Load (1 min)", icon="mdi:cpu-64-bit", precision=2),
        "proc/loadavg",
        _load_1m,
    ),
    (
        _diagnostic("memory_used", "Memory in use", unit="%", icon="mdi:memory", precision=1),
        "proc/meminfo",
        _memory_used_percent,
    ),
    (
        _diagnostic("disk_used", "Disk in use", unit="%", icon="mdi:harddisk", precision=1),
        "",
        _disk_used_percent,
    ),
    (
        _diagnostic("last_boot", "Last boot", device_class="timestamp", measurement=False),
        "proc/stat",
        _boot_time,
    ),
    (
        _diagnostic("wifi_signal", "Wi-Fi signal", device_class="signal_strength", unit="dBm"),
        "proc/net/wireless",
        _wifi_signal,
    ),
)


def system_capabilities(root: Path = Path("/")) -> list[Capability]:
    """The system sensors whose sources exist under ``root`` (a few ``stat`` calls)."""
    found: list[Capability] = []
    zone = cpu_temperature_zone(root)
    if zone is not None:
        found.append(_FileSensor(_CPU_TEMPERATURE, partial(_millidegrees, zone / "temp")))
    for descriptor, relative, reader in _ROOT_SENSORS:
        path = root / relative if relative else root
        present = path.is_file() if relative else path.is_dir()
        if present:
            found.append(_FileSensor(descriptor, partial(reader, path)))
    return found
