"""The one place the agent touches the status LED and the setup button.

The LED and GPIO drivers belong to ``device_firmware.led`` (and the GPIO capabilities); this
module maps the onboarding state to an LED pattern and turns button presses into agent
actions, so nothing else in the provisioning code knows about pins.

Until a driver is attached the patterns are logged (a headless board, a test, the demo).
Button presses also arrive as signals, which work on every board and from the shell:
``SIGUSR1`` is a short press (open the provisioning window), ``SIGUSR2`` a long press
(factory reset); ``iob-device reset`` sends the latter to a running agent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum
from typing import TypeAlias

from iob_protocol.diagnostics import DiagnosticCode

from .state import Phase

_LOGGER = logging.getLogger(__name__)


class LedPattern(StrEnum):
    """What the status LED shows."""

    OFF = "off"
    #: Slow blink: waiting to be set up.
    UNCLAIMED = "slow_blink"
    #: Double blink: a session is configuring the device.
    PROVISIONING = "double_blink"
    #: Fast blink: joining the network and confirming the claim.
    COMMITTING = "fast_blink"
    #: Solid: owned and online.
    ONLINE = "solid"
    #: Three blinks and a pause: the last attempt failed (``diagnose`` says why).
    ERROR = "triple_blink"
    #: Rapid flashing for a few seconds: "this one" (``identify``).
    IDENTIFY = "identify"


def pattern_for(phase: Phase, diagnostic: DiagnosticCode | None) -> LedPattern:
    """The pattern for a state; a diagnostic outside ``online`` shows as an error."""
    if phase is Phase.ONLINE:
        return LedPattern.ONLINE
    if phase is Phase.COMMITTING:
        return LedPattern.COMMITTING
    if diagnostic is not None:
        return LedPattern.ERROR
    if phase is Phase.PROVISIONING:
        return LedPattern.PROVISIONING
    return LedPattern.UNCLAIMED


LedDriver: TypeAlias = Callable[[LedPattern], None]


class Hardware:
    """Status LED and setup button; drivers are optional and attached by the agent."""

    def __init__(self, led: LedDriver | None = None) -> None:
        """Use ``led`` to show patterns (log only when ``None``)."""
        self._led = led
        self._pattern = LedPattern.OFF
        self.history: list[LedPattern] = []

    @property
    def pattern(self) -> LedPattern:
        """The pattern shown now."""
        return self._pattern

    def show_state(self, phase: Phase, diagnostic: DiagnosticCode | None) -> None:
        """Show the pattern for an onboarding state."""
        self.show(pattern_for(phase, diagnostic))

    def show(self, pattern: LedPattern) -> None:
        """Show ``pattern`` (a driver failure is logged, never fatal: the LED is cosmetic)."""
        if pattern == self._pattern and pattern is not LedPattern.IDENTIFY:
            return
        self._pattern = pattern
        self.history.append(pattern)
        if self._led is None:
            _LOGGER.debug("status LED: %s", pattern.value)
            return
        try:
            self._led(pattern)
        except OSError as err:
            _LOGGER.warning("status LED driver failed: %s", err)

    def identify(self, phase: Phase, diagnostic: DiagnosticCode | None) -> None:
        """Flash so the user knows which device they are talking to, then resume the state.

        The driver is expected to run the identify sequence and return to the state's pattern
        itself; without a driver this is logged.
        """
        _LOGGER.info("identify requested")
        self.show(LedPattern.IDENTIFY)
        self.show_state(phase, diagnostic)
