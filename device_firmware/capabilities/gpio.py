"""GPIO through libgpiod: an output as a switch, a press detector for the device's button.

The Python bindings of libgpiod 2 (``gpiod`` on PyPI) are used.

``gpiod`` is optional. Without it (or with the v1 bindings Debian ships as
``python3-libgpiod``) nothing here is offered and nothing fails: :data:`GPIOD_AVAILABLE` is
False, :func:`gpio_switch` and :func:`reset_button` return None.

The hardware sits behind two tiny protocols (:class:`OutputLine`, :class:`EdgeLine`) so the
switch and the button logic run in tests with fake lines; the gpiod adapters below them are the
only code that needs a real chip.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from types import ModuleType
from typing import Any, Final, Protocol

from .base import (
    Capability,
    CapabilityError,
    CommandRejectedError,
    CommandValue,
    EntityDescriptor,
    Platform,
    StateValue,
)

_LOGGER = logging.getLogger(__name__)

DEFAULT_CHIP: Final = "/dev/gpiochip0"
DEFAULT_RESET_HOLD: Final = 10.0
_CONSUMER: Final = "iot-onboard"
_DEBOUNCE: Final = timedelta(milliseconds=20)


def _load_gpiod() -> tuple[ModuleType, ModuleType] | None:
    try:
        gpiod = importlib.import_module("gpiod")
        line = importlib.import_module("gpiod.line")
    except ImportError:
        return None
    if not hasattr(gpiod, "request_lines"):
        _LOGGER.info("gpiod has the v1 API; GPIO entities need the libgpiod 2 bindings")
        return None
    return gpiod, line


_GPIOD: Final = _load_gpiod()
#: Whether GPIO entities can be offered on this system.
GPIOD_AVAILABLE: Final = _GPIOD is not None


def _gpiod() -> tuple[ModuleType, ModuleType]:
    if _GPIOD is None:
        raise CapabilityError("libgpiod Python bindings (v2) are not installed")
    return _GPIOD


class OutputLine(Protocol):
    """A requested output line (blocking calls: run them in a worker thread)."""

    def set(self, *, on: bool) -> None:
        """Drive the line active (on) or inactive."""

    def get(self) -> bool:
        """Read back whether the line is active."""

    def release(self) -> None:
        """Give the line back to the kernel."""


class EdgeLine(Protocol):
    """A requested input line with edge events (the fd becomes readable on an edge)."""

    def fileno(self) -> int:
        """The file descriptor to watch."""

    def read_events(self) -> list[bool]:
        """Pending edges, oldest first: True for pressed (active), False for released."""

    def release(self) -> None:
        """Give the line back to the kernel."""


class GpiodOutputLine:
    """:class:`OutputLine` on libgpiod 2."""

    def __init__(self, chip: str, offset: int, *, active_low: bool = False) -> None:
        """Request ``offset`` on ``chip`` as an output, initially inactive (blocking)."""
        gpiod, line = _gpiod()
        self._offset = offset
        self._active: Any = line.Value.ACTIVE
        self._inactive: Any = line.Value.INACTIVE
        settings = gpiod.LineSettings(
            direction=line.Direction.OUTPUT, output_value=self._inactive, active_low=active_low
        )
        self._request: Any = gpiod.request_lines(
            chip, consumer=_CONSUMER, config={offset: settings}
        )

    def set(self, *, on: bool) -> None:
        """Drive the line."""
        self._request.set_value(self._offset, self._active if on else self._inactive)

    def get(self) -> bool:
        """Read the line back."""
        return bool(self._request.get_value(self._offset) == self._active)

    def release(self) -> None:
        """Release the request."""
        self._request.release()


class GpiodEdgeLine:
    """:class:`EdgeLine` on libgpiod 2: pull-up, active-low (a button to ground), debounced."""

    def __init__(self, chip: str, offset: int) -> None:
        """Request ``offset`` on ``chip`` for both edges (blocking)."""
        gpiod, line = _gpiod()
        settings = gpiod.LineSettings(
            direction=line.Direction.INPUT,
            edge_detection=line.Edge.BOTH,
            bias=line.Bias.PULL_UP,
            active_low=True,
            debounce_period=_DEBOUNCE,
        )
        self._request: Any = gpiod.request_lines(
            chip, consumer=_CONSUMER, config={offset: settings}
        )
        self._rising: Any = gpiod.EdgeEvent.Type.RISING_EDGE

    def fileno(self) -> int:
        """The request's fd."""
        return int(self._request.fd)

    def read_events(self) -> list[bool]:
        """Edges in logical terms: with active-low, rising means pressed."""
        return [event.event_type == self._rising for event in self._request.read_edge_events()]

    def release(self) -> None:
        """Release the request."""
        self._request.release()


class GpioSwitch(Capability):
    """A GPIO output as a Home Assistant switch (a relay, an LED strip's enable pin)."""

    def __init__(
        self,
        open_line: Callable[[], OutputLine],
        *,
        key: str = "gpio_output",
        name: str = "Output",
    ) -> None:
        """``open_line`` requests the line; it runs in a worker thread on first use."""
        super().__init__(
            EntityDescriptor(
                key=key, platform=Platform.SWITCH, name=name, translation_key="gpio_output"
            )
        )
        self._open_line = open_line
        self._line: OutputLine | None = None
        self._lock = asyncio.Lock()

    async def _ensure_line(self) -> OutputLine:
        async with self._lock:
            if self._line is None:
                try:
                    self._line = await asyncio.to_thread(self._open_line)
                except OSError as err:
                    raise CapabilityError(f"{self.key}: cannot request the line: {err}") from err
            return self._line

    async def read(self) -> StateValue:
        """Whether the output is active."""
        line = await self._ensure_line()
        try:
            return await asyncio.to_thread(line.get)
        except OSError as err:
            raise CapabilityError(f"{self.key}: {err}") from err

    async def command(self, value: CommandValue) -> None:
        """Drive the output."""
        if not isinstance(value, bool):
            raise CommandRejectedError(f"{self.key} needs on/off, got {value!r}")
        line = await self._ensure_line()
        try:
            await asyncio.to_thread(lambda: line.set(on=value))
        except OSError as err:
            raise CapabilityError(f"{self.key}: {err}") from err

    async def aclose(self) -> None:
        """Release the line."""
        line, self._line = self._line, None
        if line is not None:
            await asyncio.to_thread(line.release)


class LongPressDetector:
    """Tells a long press (held ``hold`` seconds) from a short one (released before).

    ``on_long_press`` runs once when the hold time is reached, while the button is still down;
    ``on_short_press`` (optional) runs when a press ends before that. A long press never counts
    as a short one as well: the button's two meanings (open the window, factory reset) exclude
    each other.
    """

    def __init__(
        self,
        hold: float,
        on_long_press: Callable[[], Awaitable[None] | None],
        *,
        on_short_press: Callable[[], Awaitable[None] | None] | None = None,
    ) -> None:
        """Arm on press, fire after ``hold`` seconds unless released first."""
        self._hold = hold
        self._on_long_press = on_long_press
        self._on_short_press = on_short_press
        self._timer: asyncio.Task[None] | None = None
        self._callbacks: set[asyncio.Task[None]] = set()

    @property
    def armed(self) -> bool:
        """Whether a press is being timed."""
        return self._timer is not None and not self._timer.done()

    def pressed(self) -> None:
        """The button went down: start timing (a repeated edge keeps the running timer)."""
        if not self.armed:
            self._timer = asyncio.get_running_loop().create_task(self._fire_after_hold())

    def released(self) -> None:
        """The button went up: a press shorter than ``hold`` is a short press."""
        timer, self._timer = self._timer, None
        if timer is None or timer.done():
            return  # a long press already fired, or a release without a press (bounce)
        timer.cancel()
        if self._on_short_press is not None:
            _LOGGER.info("Button pressed briefly: running the short-press action")
            task = asyncio.get_running_loop().create_task(_call(self._on_short_press))
            self._callbacks.add(task)
            task.add_done_callback(self._callbacks.discard)

    async def _fire_after_hold(self) -> None:
        await asyncio.sleep(self._hold)
        _LOGGER.warning("Button held for %s s: running the long-press action", self._hold)
        await _call(self._on_long_press)

    async def aclose(self) -> None:
        """Cancel a running timer and short-press callbacks still running."""
        timer, self._timer = self._timer, None
        pending = {*self._callbacks, *([timer] if timer is not None else [])}
        self._callbacks.clear()
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _call(callback: Callable[[], Awaitable[None] | None]) -> None:
    result = callback()
    if inspect.isawaitable(result):
        await result


class GpioResetButton:
    """Watches an input line's edges on the event loop and feeds a :class:`LongPressDetector`."""

    def __init__(
        self,
        open_line: Callable[[], EdgeLine],
        on_long_press: Callable[[], Awaitable[None] | None],
        *,
        hold: float = DEFAULT_RESET_HOLD,
        on_short_press: Callable[[], Awaitable[None] | None] | None = None,
    ) -> None:
        """``open_line`` runs in a worker thread in :meth:`start`."""
        self._open_line = open_line
        self.detector = LongPressDetector(hold, on_long_press, on_short_press=on_short_press)
        self._line: EdgeLine | None = None

    async def start(self) -> None:
        """Request the line and watch its fd."""
        line = await asyncio.to_thread(self._open_line)
        self._line = line
        asyncio.get_running_loop().add_reader(line.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        if self._line is None:
            return
        try:
            edges = self._line.read_events()
        except OSError as err:
            _LOGGER.warning("Reset button line failed, no longer watched: %s", err)
            asyncio.get_running_loop().remove_reader(self._line.fileno())
            return
        for pressed in edges:
            if pressed:
                self.detector.pressed()
            else:
                self.detector.released()

    async def aclose(self) -> None:
        """Stop watching and release the line."""
        line, self._line = self._line, None
        await self.detector.aclose()
        if line is not None:
            asyncio.get_running_loop().remove_reader(line.fileno())
            await asyncio.to_thread(line.release)


def gpio_switch(
    offset: int, *, chip: str = DEFAULT_CHIP, active_low: bool = False
) -> GpioSwitch | None:
    """A switch on ``chip`` line ``offset``, or None when libgpiod is not installed."""
    if not GPIOD_AVAILABLE:
        return None
    return GpioSwitch(lambda: GpiodOutputLine(chip, offset, active_low=active_low))


def reset_button(
    offset: int,
    on_long_press: Callable[[], Awaitable[None] | None],
    *,
    chip: str = DEFAULT_CHIP,
    hold: float = DEFAULT_RESET_HOLD,
    on_short_press: Callable[[], Awaitable[None] | None] | None = None,
    open_line: Callable[[str, int], EdgeLine] | None = None,
) -> GpioResetButton | None:
    """A press watcher on ``chip`` line ``offset``, or None without libgpiod.

    ``open_line(chip, offset)`` requests the line; None means libgpiod 2 (:class:`GpiodEdgeLine`),
    another opener (tests' fake lines) needs no bindings. Call ``await button.start()`` to begin
    watching and ``await button.aclose()`` to stop.
    """
    if open_line is None:
        if not GPIOD_AVAILABLE:
            return None
        open_line = GpiodEdgeLine
    opener = open_line
    return GpioResetButton(
        lambda: opener(chip, offset),
        on_long_press,
        hold=hold,
        on_short_press=on_short_press,
    )
