"""Binary sensors from the devices' capability descriptors."""

from __future__ import annotations

from homeassistant.components.binary_sensor import BinarySensorDeviceClass, BinarySensorEntity

from .entity import IotOnboardEntity, platform_setup_entry

PARALLEL_UPDATES = 0


class IotOnboardBinarySensor(IotOnboardEntity, BinarySensorEntity):
    """An on/off state the device publishes (motion, door, problem...)."""

    _device_class_enum = BinarySensorDeviceClass

    @property
    def is_on(self) -> bool | None:
        """``on``/``off`` as published; anything else is unknown."""
        return self.on_off


async_setup_entry = platform_setup_entry("binary_sensor", IotOnboardBinarySensor)
