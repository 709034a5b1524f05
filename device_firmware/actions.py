"""Requests from outside the event loop: the button, the reset, and the signals that stand in.

The button is a push button on the GPIO line ``button_gpio`` (libgpiod 2): a short press is
:attr:`Action.BUTTON`, holding it ``button_hold`` seconds is :attr:`Action.RESET`, both queued
like the signals (SIGUSR1, SIGUSR2) that stand in for it on boards without one, and like the
owner's ``factory_reset`` over MQTT. What a press opens is
:func:`~device_firmware.decide.window_for`; on an unclaimed device it also authorizes Improv
Wi-Fi (:func:`~device_firmware.decide.button_authorizes_improv`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from enum import StrEnum

from .capabilities.gpio import EdgeLine, GpioResetButton, reset_button
from .config import DeviceConfig
from .controller import DeviceController
from .decide import Trigger, WindowReason, button_authorizes_improv, window_for
from .presence import Presence
from .state import StateStore
from .window import ProvisioningWindow

_LOGGER = logging.getLogger(__name__)


class Action(StrEnum):
    """Requests that arrive from outside the event loop (signals, the button)."""

    BUTTON = "button"
    RESET = "reset"


class Actions:
    """The queue of requests, the GPIO button that feeds it, and the loop that carries them out."""

    def __init__(
        self,
        config: DeviceConfig,
        *,
        button_line_factory: Callable[[str, int], EdgeLine] | None = None,
    ) -> None:
        """``button_line_factory(chip, offset)`` requests the line (tests' fake lines).

        libgpiod 2 if None.
        """
        self._config = config
        self._button_line_factory = button_line_factory
        self._button: GpioResetButton | None = None
        self._queue: asyncio.Queue[Action] = asyncio.Queue()

    def request(self, action: Action) -> None:
        """Queue a button press or a reset (signal handlers call this)."""
        self._queue.put_nowait(action)

    async def start_button(self) -> None:
        """Watch the GPIO button, if one is configured; without it the agent carries on."""
        config = self._config
        if config.button_gpio is None:
            return
        button = reset_button(
            config.button_gpio,
            lambda: self.request(Action.RESET),
            chip=config.gpio_chip,
            hold=config.button_hold,
            on_short_press=lambda: self.request(Action.BUTTON),
            open_line=self._button_line_factory,
        )
        if button is None:
            _LOGGER.info(
                "no libgpiod 2: the button is not watched; use `iob-device reset` / SIGUSR1"
            )
            return
        try:
            await button.start()
        except OSError as err:
            _LOGGER.warning(
                "the button on %s line %d is not watched: %s; check button_gpio and gpio_chip, "
                "and that the service user is in the gpio group (meanwhile: `iob-device reset`, "
                "SIGUSR1)",
                config.gpio_chip,
                config.button_gpio,
                err,
            )
            return
        self._button = button
        _LOGGER.info(
            "button on %s line %d: short press opens provisioning, %.0f s hold factory-resets",
            config.gpio_chip,
            config.button_gpio,
            config.button_hold,
        )

    async def aclose(self) -> None:
        """Stop watching the button."""
        if self._button is not None:
            await self._button.aclose()
            self._button = None

    async def run(
        self,
        *,
        store: StateStore,
        controller: DeviceController,
        window: ProvisioningWindow,
        presence: Presence,
    ) -> None:
        """Carry out the queued requests until cancelled."""
        while True:
            action = await self._queue.get()
            if action is Action.RESET:
                _LOGGER.warning("factory reset requested")
                await controller.factory_reset()
            else:
                record = store.current
                if window_for(Trigger.BUTTON, record) is WindowReason.BUTTON_OWNER:
                    _LOGGER.info("button: window for the owner's session only (hold to reset)")
                window.open_for(Trigger.BUTTON, record)
                if button_authorizes_improv(record):
                    await presence.reconcile()
                    # Improv's physical authorization, after the window it needs is open.
                    await presence.authorize_improv()
            await presence.reconcile()
