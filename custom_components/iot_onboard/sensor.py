"""Sensors from the devices' capability descriptors."""

from __future__ import annotations

from datetime import datetime

from homeassistant.components.sensor import SensorDeviceClass, SensorEntity, SensorStateClass
from homeassistant.util import dt as dt_util

from .coordinator import IotOnboardCoordinator
from .entity import IotOnboardEntity, enum_or_none, float_or_none, platform_setup_entry
from .hub import EntityMeta

# Pushed, read-only: nothing to serialise.
PARALLEL_UPDATES = 0

_TEXT_CLASSES = frozenset({SensorDeviceClass.ENUM, SensorDeviceClass.DATE})


class IotOnboardSensor(IotOnboardEntity, SensorEntity):
    """A measurement (or a timestamp, or text) the device publishes."""

    _device_class_enum = SensorDeviceClass

    def __init__(
        self, coordinator: IotOnboardCoordinator, device_id: str, meta: EntityMeta
    ) -> None:
        """Device class, unit, state class and precision from the descriptor."""
        super().__init__(coordinator, device_id, meta)
        self._attr_native_unit_of_measurement = meta.unit
        self._attr_state_class = enum_or_none(SensorStateClass, meta.state_class)
        self._attr_suggested_display_precision = meta.suggested_display_precision
        self._numeric = self._attr_device_class not in _TEXT_CLASSES | {
            SensorDeviceClass.TIMESTAMP
        } and (
            meta.unit is not None
            or self._attr_state_class is not None
            or self._attr_device_class is not None
        )

    @property
    def native_value(self) -> float | str | datetime | None:
        """The last pushed state, typed for the device class."""
        text = self.state_text
        if text is None:
            return None
        if self._attr_device_class is SensorDeviceClass.TIMESTAMP:
            moment = dt_util.parse_datetime(text)
            return moment if moment is not None and moment.tzinfo is not None else None
        return float_or_none(text) if self._numeric else text


async_setup_entry = platform_setup_entry("sensor", IotOnboardSensor)
