"""The status LED: one pattern per device state, so a user can tell what the device is doing.

| state            | pattern                           |
|------------------|-----------------------------------|
| ``unclaimed``    | slow blink, 1 s on / 1 s off      |
| ``provisioning`` | fast blink, 0.2 s on / 0.2 s off  |
| ``committing``   | heartbeat (two short beats)       |
| ``online``       | steady on                         |
| ``error``        | short flash, 0.1 s on / 0.9 s off |
| ``off``          | off                               |

Drivers: the sysfs LED class (``/sys/class/leds/<name>``, e.g. the Pi's ``ACT`` LED), using the
kernel's ``timer`` and ``heartbeat`` triggers when present and a software pattern otherwise; or
a GPIO line through libgpiod. Without either the LED is a no-op: a board without a usable LED
still runs. The LED's original trigger (``mmc0`` on the Pi) is restored on close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final, Protocol

from device_firmware.capabilities.gpio import (
    DEFAULT_CHIP,
    GPIOD_AVAILABLE,
    GpiodOutputLine,
    OutputLine,
)

_LOGGER = logging.getLogger(__name__)

DEFAULT_LED_NAMES: Final = ("ACT", "led0")


class LedState(StrEnum):
    """What the LED shows (the agent's phases plus error and off)."""

    UNCLAIMED = "unclaimed"
    PROVISIONING = "provisioning"
    COMMITTING = "committing"
    ONLINE = "online"
    ERROR = "error"
    OFF = "off"


class PatternKind(StrEnum):
    """How a pattern is drawn."""

    OFF = "off"
    ON = "on"
    BLINK = "blink"
    HEARTBEAT = "heartbeat"


@dataclass(frozen=True, slots=True)
class LedPattern:
    """A repeating pattern; ``on_ms``/``off_ms`` only for blinks."""

    kind: PatternKind
    on_ms: int = 0
    off_ms: int = 0

    def steps(self) -> tuple[tuple[bool, float], ...]:
        """The pattern as (lit, seconds) steps, for drivers that draw it themselves."""
        if self.kind is PatternKind.BLINK:
            return ((True, self.on_ms / 1000), (False, self.off_ms / 1000))
        if self.kind is PatternKind.HEARTBEAT:
            return ((True, 0.1), (False, 0.15), (True, 0.1), (False, 0.65))
        return ()


PATTERNS: Final[dict[LedState, LedPattern]] = {
    LedState.UNCLAIMED: LedPattern(PatternKind.BLINK, 1000, 1000),
    LedState.PROVISIONING: LedPattern(PatternKind.BLINK, 200, 200),
    LedState.COMMITTING: LedPattern(PatternKind.HEARTBEAT),
    LedState.ONLINE: LedPattern(PatternKind.ON),
    LedState.ERROR: LedPattern(PatternKind.BLINK, 100, 900),
    LedState.OFF: LedPattern(PatternKind.OFF),
}


def pattern_for(state: LedState | str) -> LedPattern:
    """The pattern of a state name; ValueError for a name that is not a state."""
    return PATTERNS[LedState(state)]


class LedDriver(Protocol):
    """Draws patterns on one LED."""

    async def apply(self, pattern: LedPattern) -> None:
        """Show ``pattern`` until the next call."""

    async def aclose(self) -> None:
        """Stop drawing and give the LED back."""


class _SoftwarePattern:
    """Draws a pattern by switching the LED in a task (when the kernel cannot)."""

    def __init__(self, set_lit: Callable[[bool], Awaitable[None]]) -> None:
        self._set_lit = set_lit
        self._task: asyncio.Task[None] | None = None

    async def show(self, pattern: LedPattern) -> None:
        await self.stop()
        if pattern.kind is PatternKind.OFF or pattern.kind is PatternKind.ON:
            await self._set_lit(pattern.kind is PatternKind.ON)
            return
        self._task = asyncio.get_running_loop().create_task(self._draw(pattern.steps()))

    async def _draw(self, steps: tuple[tuple[bool, float], ...]) -> None:
        while True:
            for lit, seconds in steps:
                await self._set_lit(lit)
                await asyncio.sleep(seconds)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _write(path: Path, value: str) -> None:
    path.write_text(value)


class SysfsLed:
    """An LED of the kernel's LED class: ``trigger``, ``brightness``, ``delay_on/off``."""

    def __init__(self, directory: Path) -> None:
        """Drive ``directory`` (``/sys/class/leds/<name>``); nothing is written yet."""
        self.directory = directory
        self._triggers: set[str] | None = None
        self._original: str | None = None
        self._max = "1"
        self._software = _SoftwarePattern(self._set_lit)

    async def _inspect(self) -> set[str]:
        if self._triggers is None:
            text = await asyncio.to_thread((self.directory / "trigger").read_text)
            names = text.split()
            current = next((name[1:-1] for name in names if name.startswith("[")), None)
            self._triggers = {name.strip("[]") for name in names}
            self._original = current
            with contextlib.suppress(OSError):
                self._max = (
                    await asyncio.to_thread((self.directory / "max_brightness").read_text)
                ).strip() or "1"
        return self._triggers

    async def _write(self, name: str, value: str) -> None:
        await asyncio.to_thread(_write, self.directory / name, value)

    async def _set_lit(self, lit: bool) -> None:  # noqa: FBT001 - a pattern step
        await self._write("brightness", self._max if lit else "0")

    async def apply(self, pattern: LedPattern) -> None:
        """Use a kernel trigger where one fits, else draw in software."""
        triggers = await self._inspect()
        await self._software.stop()
        if pattern.kind is PatternKind.BLINK and "timer" in triggers:
            await self._write("trigger", "timer")
            try:
                # The kernel creates delay_on/delay_off, owned by root, when the timer trigger
                # is selected: a udev rule that opened trigger/brightness cannot cover them.
                await self._write("delay_on", str(pattern.on_ms))
                await self._write("delay_off", str(pattern.off_ms))
            except OSError as err:
                _LOGGER.debug("LED timer delays not writable (%s): blinking in software", err)
            else:
                return
        if pattern.kind is PatternKind.HEARTBEAT and "heartbeat" in triggers:
            await self._write("trigger", "heartbeat")
            return
        await self._write("trigger", "none")
        await self._software.show(pattern)

    async def aclose(self) -> None:
        """Stop drawing and restore the trigger the LED had before (``mmc0`` on a Pi)."""
        await self._software.stop()
        if self._original is not None:
            await self._write("trigger", self._original)


class GpioLed:
    """An LED on a GPIO line, drawn in software."""

    def __init__(self, open_line: Callable[[], OutputLine]) -> None:
        """``open_line`` requests the line (in a worker thread, on first use)."""
        self._open_line = open_line
        self._line: OutputLine | None = None
        self._software = _SoftwarePattern(self._set_lit)

    async def _set_lit(self, lit: bool) -> None:  # noqa: FBT001 - a pattern step
        if self._line is None:
            self._line = await asyncio.to_thread(self._open_line)
        line = self._line
        await asyncio.to_thread(lambda: line.set(on=lit))

    async def apply(self, pattern: LedPattern) -> None:
        """Draw ``pattern``."""
        await self._software.show(pattern)

    async def aclose(self) -> None:
        """Switch off and release the line."""
        await self._software.stop()
        line, self._line = self._line, None
        if line is not None:
            await asyncio.to_thread(lambda: line.set(on=False))
            await asyncio.to_thread(line.release)


class StatusLed:
    """Shows the device state; a no-op without a driver."""

    def __init__(self, driver: LedDriver | None) -> None:
        """Use ``driver`` (None: no LED on this board)."""
        self.driver = driver
        self.state: LedState | None = None

    async def show(self, state: LedState | str) -> None:
        """Show ``state``'s pattern; repeated calls with the same state change nothing.

        LED failures (a permission problem, a vanished device) are logged once and the LED is
        given up: it must never stop the agent.
        """
        wanted = LedState(state)
        if wanted is self.state or self.driver is None:
            self.state = wanted
            return
        self.state = wanted
        try:
            await self.driver.apply(PATTERNS[wanted])
        except OSError as err:
            _LOGGER.warning("Status LED disabled: %s (see docs/device.md for permissions)", err)
            self.driver = None

    async def aclose(self) -> None:
        """Give the LED back."""
        driver, self.driver = self.driver, None
        if driver is not None:
            with contextlib.suppress(OSError):
                await driver.aclose()


def find_status_led(
    sysfs_root: Path = Path("/"),
    *,
    names: Sequence[str] = DEFAULT_LED_NAMES,
    gpio_line: int | None = None,
    gpio_chip: str = DEFAULT_CHIP,
) -> StatusLed:
    """The first sysfs LED of ``names``, else a configured GPIO LED, else a no-op LED."""
    leds = sysfs_root / "sys/class/leds"
    for name in names:
        directory = leds / name
        if (directory / "trigger").is_file() and (directory / "brightness").is_file():
            return StatusLed(SysfsLed(directory))
    if gpio_line is not None and GPIOD_AVAILABLE:
        return StatusLed(GpioLed(lambda: GpiodOutputLine(gpio_chip, gpio_line)))
    return StatusLed(None)
