"""What a device can do, described once for MQTT and Home Assistant.

A :class:`Capability` pairs an :class:`EntityDescriptor` (what Home Assistant needs to build an
entity: platform, device class, unit, category, number range) with ``read`` and, for actuators,
``command``. The MQTT runtime publishes the descriptors as the device's retained capability
descriptor, polls ``read`` and routes commands after validating them with
:meth:`Capability.parse_command`, so a capability only implements the hardware side.
"""

from __future__ import annotations

import abc
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, TypeAlias

from device_firmware.errors import DeviceError

#: What ``read`` returns: numbers for sensors and numbers, booleans for binary sensors and
#: switches, text (an ISO 8601 timestamp), or None when the value is unknown right now.
StateValue: TypeAlias = float | int | bool | str | None
#: What a validated command carries: on/off for switches, the value for numbers, None for a
#: button press.
CommandValue: TypeAlias = bool | float | None

KEY_PATTERN: Final = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_COMMAND_BYTES: Final = 64
UNKNOWN_STATE: Final = "unknown"
_STEP_TOLERANCE: Final = 1e-9


class Platform(StrEnum):
    """Home Assistant entity platforms a capability can map to."""

    SENSOR = "sensor"
    BINARY_SENSOR = "binary_sensor"
    SWITCH = "switch"
    BUTTON = "button"
    NUMBER = "number"


class EntityCategory(StrEnum):
    """Home Assistant's entity categories (None: a primary entity)."""

    CONFIG = "config"
    DIAGNOSTIC = "diagnostic"


class StateClass(StrEnum):
    """Home Assistant's sensor state classes (long-term statistics)."""

    MEASUREMENT = "measurement"
    TOTAL = "total"
    TOTAL_INCREASING = "total_increasing"


class CapabilityError(DeviceError):
    """A capability could not be read or driven (hardware, file, bus)."""


class CommandRejectedError(CapabilityError):
    """A command payload is not valid for this entity (wrong word, out of range, off-step)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EntityDescriptor:
    """What Home Assistant needs to create one entity; published in ``iob/<id>/meta``.

    ``key`` is stable for the device's lifetime: it names the MQTT topics and is half of the
    entity's unique id. ``translation_key`` names the entity in the integration's translations;
    ``name`` is the English fallback for entities the integration does not know.
    """

    key: str
    platform: Platform
    name: str
    translation_key: str | None = None
    device_class: str | None = None
    unit: str | None = None
    state_class: StateClass | None = None
    entity_category: EntityCategory | None = None
    icon: str | None = None
    suggested_display_precision: int | None = None
    min: float | None = None
    max: float | None = None
    step: float | None = None

    def __post_init__(self) -> None:
        """Reject descriptors Home Assistant would reject later, far from their cause."""
        if not KEY_PATTERN.match(self.key):
            raise ValueError(f"entity key {self.key!r} must match {KEY_PATTERN.pattern}")
        if self.platform is Platform.NUMBER:
            if self.min is None or self.max is None or self.step is None:
                raise ValueError(f"number {self.key!r} needs min, max and step")
            if not self.min < self.max or self.step <= 0:
                raise ValueError(f"number {self.key!r}: need min < max and step > 0")
        elif (self.min, self.max, self.step) != (None, None, None):
            raise ValueError(f"{self.key!r}: min/max/step are for numbers only")
        if self.state_class is not None and self.platform is not Platform.SENSOR:
            raise ValueError(f"{self.key!r}: state_class is for sensors only")

    @property
    def readable(self) -> bool:
        """Whether the entity has a state (buttons have none)."""
        return self.platform is not Platform.BUTTON

    @property
    def commandable(self) -> bool:
        """Whether the entity accepts commands."""
        return self.platform in {Platform.SWITCH, Platform.BUTTON, Platform.NUMBER}

    def to_json(self) -> dict[str, Any]:
        """The descriptor's entry in the meta document (absent fields are left out)."""
        document: dict[str, Any] = {
            "key": self.key,
            "platform": self.platform.value,
            "name": self.name,
        }
        optional: dict[str, Any] = {
            "translation_key": self.translation_key,
            "device_class": self.device_class,
            "unit": self.unit,
            "state_class": None if self.state_class is None else self.state_class.value,
            "entity_category": (
                None if self.entity_category is None else self.entity_category.value
            ),
            "icon": self.icon,
            "suggested_display_precision": self.suggested_display_precision,
            "min": self.min,
            "max": self.max,
            "step": self.step,
        }
        document.update({key: value for key, value in optional.items() if value is not None})
        return document


def format_state(value: StateValue) -> str:
    """Encode a state for ``iob/<id>/state/<key>``: ``on``/``off``, a decimal, text, unknown."""
    if value is None:
        return UNKNOWN_STATE
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        if not math.isfinite(value):
            return UNKNOWN_STATE
        return repr(value)
    return str(value)


class Capability(abc.ABC):
    """One entity of the device: its descriptor, how to read it and how to drive it."""

    def __init__(self, descriptor: EntityDescriptor) -> None:
        """Keep the descriptor; nothing touches hardware until ``read``/``command``."""
        self.descriptor = descriptor
        self._listener: Callable[[], None] | None = None

    @property
    def key(self) -> str:
        """The entity key (topic name)."""
        return self.descriptor.key

    @abc.abstractmethod
    async def read(self) -> StateValue:
        """Return the current value; raise CapabilityError when it cannot be read."""

    async def command(self, value: CommandValue) -> None:
        """Act on a validated command (see ``parse_command``); read-only entities refuse."""
        raise CommandRejectedError(f"{self.key} does not accept commands (got {value!r})")

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most capabilities hold nothing
        """Release hardware (GPIO lines)."""

    def set_listener(self, listener: Callable[[], None] | None) -> None:
        """Called by the runtime: ``listener`` asks for an immediate re-read and publish."""
        self._listener = listener

    def notify_changed(self) -> None:
        """Event-driven capabilities call this so a change is published without waiting."""
        if self._listener is not None:
            self._listener()

    def parse_command(self, payload: bytes) -> CommandValue:
        """Validate a command payload for this entity's platform.

        Switch: ``on``/``off`` (any case). Button: ``press``. Number: a decimal within
        ``[min, max]`` on the ``step`` grid counted from ``min``.
        """
        descriptor = self.descriptor
        if not descriptor.commandable:
            raise CommandRejectedError(f"{self.key} is read-only")
        if len(payload) > MAX_COMMAND_BYTES:
            raise CommandRejectedError(f"command for {self.key} is over {MAX_COMMAND_BYTES} bytes")
        try:
            text = payload.decode("ascii").strip()
        except UnicodeDecodeError:
            raise CommandRejectedError(f"command for {self.key} is not ASCII text") from None
        if descriptor.platform is Platform.SWITCH:
            word = text.lower()
            if word not in {"on", "off"}:
                raise CommandRejectedError(f"{self.key} accepts on or off, got {text!r}")
            return word == "on"
        if descriptor.platform is Platform.BUTTON:
            if text.lower() != "press":
                raise CommandRejectedError(f"{self.key} accepts press, got {text!r}")
            return None
        return _parse_number(descriptor, text)


def _parse_number(descriptor: EntityDescriptor, text: str) -> float:
    low, high, step = descriptor.min, descriptor.max, descriptor.step
    if low is None or high is None or step is None:  # excluded by __post_init__
        raise CommandRejectedError(f"{descriptor.key} has no range")
    try:
        value = float(text)
    except ValueError:
        raise CommandRejectedError(f"{descriptor.key} needs a number, got {text!r}") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise CommandRejectedError(f"{descriptor.key} must be within {low:g}..{high:g}")
    steps = (value - low) / step
    if abs(steps - round(steps)) > _STEP_TOLERANCE * max(1.0, abs(steps)):
        raise CommandRejectedError(f"{descriptor.key} moves in steps of {step:g} from {low:g}")
    return value
