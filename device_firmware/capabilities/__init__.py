"""The device's entities: system sensors, GPIO, and simulated ones for the demo."""

from __future__ import annotations

from pathlib import Path

from .base import (
    Capability,
    CapabilityError,
    CommandRejectedError,
    CommandValue,
    EntityCategory,
    EntityDescriptor,
    Platform,
    StateClass,
    StateValue,
    format_state,
)
from .gpio import (
    DEFAULT_CHIP,
    GPIOD_AVAILABLE,
    GpioResetButton,
    GpioSwitch,
    LongPressDetector,
    gpio_switch,
    reset_button,
)
from .simulated import simulated_capabilities
from .system import system_capabilities

__all__ = [
    "GPIOD_AVAILABLE",
    "Capability",
    "CapabilityError",
    "CommandRejectedError",
    "CommandValue",
    "EntityCategory",
    "EntityDescriptor",
    "GpioResetButton",
    "GpioSwitch",
    "LongPressDetector",
    "Platform",
    "StateClass",
    "StateValue",
    "default_capabilities",
    "format_state",
    "gpio_switch",
    "reset_button",
    "simulated_capabilities",
    "system_capabilities",
]


def default_capabilities(
    *,
    simulated: bool,
    sysfs_root: Path = Path("/"),
    gpio_output: int | None = None,
    gpio_chip: str = DEFAULT_CHIP,
) -> list[Capability]:
    """What this device offers: system sensors, plus simulated entities or a GPIO switch.

    System sensors are those whose files exist under ``sysfs_root``. With ``simulated`` the
    demo entities follow; otherwise, when ``gpio_output`` is set and libgpiod is installed, a
    GPIO output as a switch.

    Only a configured ``gpio_output`` line is driven: toggling an arbitrary pin could damage
    whatever is wired to it. Performs a few ``stat`` calls; call it at start-up.
    """
    found = system_capabilities(sysfs_root)
    if simulated:
        found.extend(simulated_capabilities())
    elif gpio_output is not None:
        switch = gpio_switch(gpio_output, chip=gpio_chip)
        if switch is not None:
            found.append(switch)
    return found
