"""The hardware half of ``factory-provision --self-test``: radio, NetworkManager, BLE, LED, button.

Each check goes through the code the agent itself uses on that part (the NetworkManager
backend, the BlueZ adapter lookup, the status LED driver, the button's GPIO line request), so a
unit that passes here is one the agent can drive. A part the unit is not configured to have
(``ble = false``, no ``button_gpio``, no status LED) is ``skipped`` with the reason; a part that
is configured but does not work is ``fail`` with the next step for the operator.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dbus_fast.aio import MessageBus

from . import dbus_call
from .ble.bluez import BluezAdapters
from .ble.errors import BluezError
from .capabilities.gpio import GPIOD_AVAILABLE, EdgeLine, GpiodEdgeLine
from .config import DeviceConfig
from .led import PATTERNS, LedState, SysfsLed, find_status_led
from .network.backend import NetworkError
from .network.networkmanager import NetworkManagerBackend, NetworkManagerError, NMDeviceState
from .selftest import Check

#: Seconds one check may take (a D-Bus peer that never answers must not hang the line).
CHECK_TIMEOUT: Final = 20.0
_NM_NEXT: Final = (
    "start NetworkManager ('systemctl enable --now NetworkManager') and install the agent's "
    "polkit rule (docs/device.md); then run the self-test again"
)
_RADIO_NEXT: Final = (
    "check the Wi-Fi hardware ('nmcli device', 'rfkill list', the driver in 'dmesg'); "
    "rework or scrap the unit if the radio is missing"
)
_LED_NEXT: Final = "check the LED's udev rule (docs/device.md) and the LED itself"
_BUTTON_NEXT: Final = (
    "check button_gpio and gpio_chip in device.toml, the gpio group of the agent's user and "
    "the libgpiod 2 Python bindings (docs/device.md)"
)


@dataclass(frozen=True, slots=True)
class HardwareAccess:
    """Where the checks find the hardware (tests point them at fakes)."""

    #: Root of ``sys/class/leds`` (the status LED).
    sysfs_root: Path = Path("/")
    #: Requests the button's line (chip, offset); None: libgpiod 2, as the agent does.
    open_button: Callable[[str, int], EdgeLine] | None = None


async def _bounded(name: str, check: Awaitable[Check], next_step: str) -> Check:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            return await check
    except TimeoutError:
        return Check(name, "fail", f"no answer within {CHECK_TIMEOUT:.0f} s", next_step)


async def _network_checks(config: DeviceConfig) -> tuple[Check, Check]:
    """NetworkManager reachable, then its Wi-Fi device (the one the agent would drive)."""
    backend = NetworkManagerBackend(interface=config.wifi_interface)
    try:
        try:
            version = await backend.version()
        except NetworkManagerError as err:
            failed = Check("network_manager", "fail", f"unreachable: {err.detail}", _NM_NEXT)
            radio = Check("wifi_radio", "skipped", "NetworkManager is unreachable", _NM_NEXT)
            return failed, radio
        manager = Check("network_manager", "pass", f"NetworkManager {version} answers on D-Bus")
        try:
            interface, state = await backend.wifi_radio()
        except NetworkError as err:
            return manager, Check("wifi_radio", "fail", err.detail, _RADIO_NEXT)
        if state in {NMDeviceState.UNMANAGED, NMDeviceState.UNAVAILABLE}:
            reason = f"{interface} is {NMDeviceState(state).name.lower()} in NetworkManager"
            return manager, Check("wifi_radio", "fail", reason, _RADIO_NEXT)
        return manager, Check("wifi_radio", "pass", f"{interface} managed by NetworkManager")
    finally:
        await backend.aclose()


class _AdapterProbe(BluezAdapters):
    def __init__(self, bus: MessageBus) -> None:
        self._bus = bus

    async def _bus_for_call(self) -> MessageBus:
        return self._bus


async def _ble_check(config: DeviceConfig) -> Check:
    """The LE adapter the agent would use: present, GATT and advertising, powered."""
    if not config.ble:
        return Check("ble_adapter", "skipped", "ble = false in the device configuration")
    try:
        bus = await dbus_call.connect(None)
    except dbus_call.DBusCallError as err:
        return Check("ble_adapter", "fail", f"no system D-Bus: {err.detail}", _NM_NEXT)
    try:
        probe = _AdapterProbe(bus)
        path = await probe.find_adapter(config.ble_adapter)
        if not await probe.powered(path):
            reason = f"{path} stays off"
            return Check("ble_adapter", "fail", reason, "run 'rfkill unblock bluetooth'")
    except BluezError as err:
        return Check("ble_adapter", "fail", err.message, err.next_step)
    finally:
        bus.disconnect()
    return Check("ble_adapter", "pass", f"{path.rsplit('/', 1)[-1]} is an LE adapter, powered")


async def _led_check(access: HardwareAccess) -> Check:
    """The status LED the agent would find: switched on and off (read back where it can be)."""
    led = await asyncio.to_thread(find_status_led, access.sysfs_root)
    driver = led.driver
    if driver is None:
        return Check("led", "skipped", "no status LED on this board: none of ACT, led0")
    try:
        seen = []
        for state in (LedState.ONLINE, LedState.OFF):
            await driver.apply(PATTERNS[state])
            if isinstance(driver, SysfsLed):
                brightness = await asyncio.to_thread((driver.directory / "brightness").read_text)
                seen.append(brightness.strip())
    except OSError as err:
        return Check("led", "fail", f"cannot drive the LED: {err}", _LED_NEXT)
    finally:
        with contextlib.suppress(OSError):
            await driver.aclose()
    if seen and (seen[0] == "0" or seen[1] != "0"):
        return Check("led", "fail", f"brightness read back {seen} after on, off", _LED_NEXT)
    name = driver.directory.name if isinstance(driver, SysfsLed) else "GPIO LED"
    return Check("led", "pass", f"{name} switched on and off")


async def _button_check(config: DeviceConfig, access: HardwareAccess) -> Check:
    """The button's line requested for edge events, as the agent watches it, and released."""
    offset = config.button_gpio
    if offset is None:
        return Check("button", "skipped", "no button configured: button_gpio is unset")
    opener = access.open_button
    if opener is None:
        if not GPIOD_AVAILABLE:
            return Check("button", "fail", "libgpiod 2 Python bindings missing", _BUTTON_NEXT)
        opener = GpiodEdgeLine
    where = f"line {offset} of {config.gpio_chip}"
    try:
        line = await asyncio.to_thread(opener, config.gpio_chip, offset)
        await asyncio.to_thread(line.release)
    except OSError as err:
        return Check("button", "fail", f"cannot request {where}: {err}", _BUTTON_NEXT)
    return Check("button", "pass", f"{where} requested for edge events and released")


async def hardware_checks(config: DeviceConfig, access: HardwareAccess) -> tuple[Check, ...]:
    """Every hardware check, in the order the record lists them."""
    manager, radio = await _bounded_pair(config)
    ble = await _bounded("ble_adapter", _ble_check(config), "run 'systemctl status bluetooth'")
    led = await _bounded("led", _led_check(access), _LED_NEXT)
    button = await _bounded("button", _button_check(config, access), _BUTTON_NEXT)
    return (radio, manager, ble, led, button)


async def _bounded_pair(config: DeviceConfig) -> tuple[Check, Check]:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            return await _network_checks(config)
    except TimeoutError:
        reason = f"no answer within {CHECK_TIMEOUT:.0f} s"
        return (
            Check("network_manager", "fail", reason, _NM_NEXT),
            Check("wifi_radio", "skipped", "NetworkManager is unreachable", _NM_NEXT),
        )
