"""Simulated entities for the demo and tests: one of each platform, no hardware needed.

A drifting temperature, a motion sensor that trips now and then, a switch, a button and a
setpoint number. Randomness is injectable so tests are repeatable.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Final

from .base import (
    Capability,
    CommandRejectedError,
    CommandValue,
    EntityCategory,
    EntityDescriptor,
    Platform,
    StateClass,
    StateValue,
)

_TEMPERATURE_RANGE: Final = (15.0, 30.0)
_TEMPERATURE_STEP: Final = 0.2
_MOTION_FLIP: Final = 0.1


class SimulatedTemperature(Capability):
    """A room temperature drifting by small random steps within 15-30 °C."""

    def __init__(self, *, start: float = 21.0, rng: random.Random | None = None) -> None:
        """Start at ``start`` °C; ``rng`` makes the drift repeatable."""
        super().__init__(
            EntityDescriptor(
                key="temperature",
                platform=Platform.SENSOR,
                name="Temperature",
                translation_key="temperature",
                device_class="temperature",
                unit="°C",
                state_class=StateClass.MEASUREMENT,
                suggested_display_precision=1,
            )
        )
        self._value = start
        self._rng = rng or random.Random()  # noqa: S311 - a demo value, not a secret

    async def read(self) -> StateValue:
        """Drift one step and return the new value."""
        low, high = _TEMPERATURE_RANGE
        step = self._rng.uniform(-_TEMPERATURE_STEP, _TEMPERATURE_STEP)
        self._value = min(high, max(low, self._value + step))
        return round(self._value, 1)


class SimulatedMotion(Capability):
    """A motion sensor that flips now and then, or when :meth:`trigger` is called."""

    def __init__(self, *, rng: random.Random | None = None, flip: float = _MOTION_FLIP) -> None:
        """Flip with probability ``flip`` per read."""
        super().__init__(
            EntityDescriptor(
                key="motion",
                platform=Platform.BINARY_SENSOR,
                name="Motion",
                translation_key="motion",
                device_class="motion",
            )
        )
        self._detected = False
        self._rng = rng or random.Random()  # noqa: S311 - a demo value, not a secret
        self._flip = flip

    async def read(self) -> StateValue:
        """Return the state, flipping it now and then."""
        if self._rng.random() < self._flip:
            self._detected = not self._detected
        return self._detected

    def trigger(self, *, detected: bool = True) -> None:
        """Set the state now (demo scripts) and have it published at once."""
        self._detected = detected
        self.notify_changed()


class SimulatedSwitch(Capability):
    """An on/off output kept in memory (a relay in the demo)."""

    def __init__(self) -> None:
        """Start off."""
        super().__init__(
            EntityDescriptor(
                key="relay",
                platform=Platform.SWITCH,
                name="Relay",
                translation_key="relay",
                device_class="outlet",
            )
        )
        self._on = False

    async def read(self) -> StateValue:
        """Return whether the relay is on."""
        return self._on

    async def command(self, value: CommandValue) -> None:
        """Switch on (True) or off (False)."""
        if not isinstance(value, bool):
            raise CommandRejectedError(f"relay needs on/off, got {value!r}")
        self._on = value


class SimulatedButton(Capability):
    """An identify button: counts presses and calls ``on_press`` (blink the LED, say)."""

    def __init__(self, on_press: Callable[[], None] | None = None) -> None:
        """Call ``on_press`` on every press."""
        super().__init__(
            EntityDescriptor(
                key="identify",
                platform=Platform.BUTTON,
                name="Identify",
                translation_key="identify",
                device_class="identify",
                entity_category=EntityCategory.CONFIG,
            )
        )
        self.presses = 0
        self._on_press = on_press

    async def read(self) -> StateValue:
        """Buttons have no state."""
        return None

    async def command(self, value: CommandValue) -> None:
        """Count the press and run the hook."""
        del value  # a press carries nothing
        self.presses += 1
        if self._on_press is not None:
            self._on_press()


class SimulatedNumber(Capability):
    """A temperature setpoint, 10-30 °C in steps of 0.5."""

    def __init__(self, *, start: float = 20.0) -> None:
        """Start at ``start`` °C."""
        super().__init__(
            EntityDescriptor(
                key="setpoint",
                platform=Platform.NUMBER,
                name="Setpoint",
                translation_key="setpoint",
                device_class="temperature",
                unit="°C",
                entity_category=EntityCategory.CONFIG,
                min=10.0,
                max=30.0,
                step=0.5,
            )
        )
        self._value = start

    async def read(self) -> StateValue:
        """Return the setpoint."""
        return self._value

    async def command(self, value: CommandValue) -> None:
        """Set the setpoint (already validated against range and step)."""
        if not isinstance(value, float):
            raise CommandRejectedError(f"setpoint needs a number, got {value!r}")
        self._value = value


def simulated_capabilities(*, rng: random.Random | None = None) -> list[Capability]:
    """One simulated entity per platform, for the demo."""
    return [
        SimulatedTemperature(rng=rng),
        SimulatedMotion(rng=rng),
        SimulatedSwitch(),
        SimulatedButton(),
        SimulatedNumber(),
    ]
