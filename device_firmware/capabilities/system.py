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


class CpuTemperature(_FileSensor):
    """``thermal_zone*/temp`` in millidegrees Celsius."""

    def __init__(self, zone: Path) -> None:
        """Read ``zone/temp``."""
        path = zone / "temp"
        super().__init__(
            EntityDescriptor(
                key="cpu_temperature",
                platform=Platform.SENSOR,
                name="CPU temperature",
                translation_key="cpu_temperature",
                device_class="temperature",
                unit="°C",
                state_class=StateClass.MEASUREMENT,
                entity_category=EntityCategory.DIAGNOSTIC,
                suggested_display_precision=1,
            ),
            lambda: round(int(path.read_text().strip()) / _MILLI, 1),
        )


class LoadAverage(_FileSensor):
    """One-minute load average from ``/proc/loadavg``."""

    def __init__(self, root: Path) -> None:
        """Read ``root/proc/loadavg``."""
        path = root / "proc/loadavg"
        super().__init__(
            EntityDescriptor(
                key="load_1m",
                platform=Platform.SENSOR,
                name="Load (1 min)",
                translation_key="load_1m",
                state_class=StateClass.MEASUREMENT,
                entity_category=EntityCategory.DIAGNOSTIC,
                icon="mdi:cpu-64-bit",
                suggested_display_precision=2,
            ),
            lambda: round(float(path.read_text().split()[0]), 2),
        )


def _memory_used_percent(path: Path) -> float:
    values: dict[str, int] = {}
    for line in path.read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in {"MemTotal", "MemAvailable"}:
            values[name] = int(rest.split()[0])
    total, available = values["MemTotal"], values["MemAvailable"]
    if total <= 0:
        raise ValueError("MemTotal is zero")
    return round((total - available) / total * _PERCENT, 1)


class MemoryUsage(_FileSensor):
    """Share of RAM in use (MemTotal minus MemAvailable) from ``/proc/meminfo``."""

    def __init__(self, root: Path) -> None:
        """Read ``root/proc/meminfo``."""
        path = root / "proc/meminfo"
        super().__init__(
            EntityDescriptor(
                key="memory_used",
                platform=Platform.SENSOR,
                name="Memory in use",
                translation_key="memory_used",
                unit="%",
                state_class=StateClass.MEASUREMENT,
                entity_category=EntityCategory.DIAGNOSTIC,
                icon="mdi:memory",
                suggested_display_precision=1,
            ),
            lambda: _memory_used_percent(path),
        )


def _disk_used_percent(path: Path) -> float:
    stats = os.statvfs(path)
    total = stats.f_blocks * stats.f_frsize
    if total <= 0:
        raise ValueError(f"{path} reports no blocks")
    free = stats.f_bavail * stats.f_frsize
    return round((total - free) / total * _PERCENT, 1)


class DiskUsage(_FileSensor):
    """Share of the root file system in use (what a full SD card would show first)."""

    def __init__(self, root: Path) -> None:
        """Measure the file system holding ``root``."""
        super().__init__(
            EntityDescriptor(
                key="disk_used",
                platform=Platform.SENSOR,
                name="Disk in use",
                translation_key="disk_used",
                unit="%",
                state_class=StateClass.MEASUREMENT,
                entity_category=EntityCategory.DIAGNOSTIC,
                icon="mdi:harddisk",
                suggested_display_precision=1,
            ),
            lambda: _disk_used_percent(root),
        )


def _boot_time(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("btime "):
            return datetime.fromtimestamp(int(line.split()[1]), UTC).isoformat()
    raise ValueError(f"no btime in {path}")


class LastBoot(_FileSensor):
    """Boot time from ``/proc/stat`` (a timestamp does not change every poll, uptime would)."""

    def __init__(self, root: Path) -> None:
        """Read ``root/proc/stat``."""
        path = root / "proc/stat"
        super().__init__(
            EntityDescriptor(
                key="last_boot",
                platform=Platform.SENSOR,
                name="Last boot",
                translation_key="last_boot",
                device_class="timestamp",
                entity_category=EntityCategory.DIAGNOSTIC,
            ),
            lambda: _boot_time(path),
        )


def _wifi_signal(path: Path, interface: str | None) -> int | None:
    # Two header lines, then "wlan0: 0000   58.  -52.  -256 ..." (link, level dBm, noise).
    for line in path.read_text().splitlines()[2:]:
        name, _, rest = line.partition(":")
        if interface is not None and name.strip() != interface:
            continue
        return int(float(rest.split()[2]))
    return None  # not associated: the interface is not listed


class WifiSignal(_FileSensor):
    """Signal level of the Wi-Fi link in dBm from ``/proc/net/wireless``."""

    def __init__(self, root: Path, interface: str | None = None) -> None:
        """Read ``root/proc/net/wireless`` for ``interface`` (the first listed when None)."""
        path = root / "proc/net/wireless"
        super().__init__(
            EntityDescriptor(
                key="wifi_signal",
                platform=Platform.SENSOR,
                name="Wi-Fi signal",
                translation_key="wifi_signal",
                device_class="signal_strength",
                unit="dBm",
                state_class=StateClass.MEASUREMENT,
                entity_category=EntityCategory.DIAGNOSTIC,
            ),
            lambda: _wifi_signal(path, interface),
        )


def system_capabilities(root: Path = Path("/")) -> list[Capability]:
    """The system sensors whose sources exist under ``root`` (a few ``stat`` calls)."""
    found: list[Capability] = []
    zone = cpu_temperature_zone(root)
    if zone is not None:
        found.append(CpuTemperature(zone))
    if (root / "proc/loadavg").is_file():
        found.append(LoadAverage(root))
    if (root / "proc/meminfo").is_file():
        found.append(MemoryUsage(root))
    if root.is_dir():
        found.append(DiskUsage(root))
    if (root / "proc/stat").is_file():
        found.append(LastBoot(root))
    if (root / "proc/net/wireless").is_file():
        found.append(WifiSignal(root))
    return found
