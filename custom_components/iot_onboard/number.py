"""Numbers (setpoints) from the devices' capability descriptors."""

from __future__ import annotations

from homeassistant.components.number import NumberDeviceClass, NumberEntity, NumberMode

from .coordinator import IotOnboardCoordinator
from .entity import IotOnboardEntity, float_or_none, platform_setup_entry
from .helpers import iot_onboard_exception_handler
from .hub import EntityMeta

PARALLEL_UPDATES = 0


class IotOnboardNumber(IotOnboardEntity, NumberEntity):
    """A value the device accepts within its range and step; it reports the value back."""

    _attr_mode = NumberMode.AUTO
    _device_class_enum = NumberDeviceClass

    def __init__(
        self, coordinator: IotOnboardCoordinator, device_id: str, meta: EntityMeta
    ) -> None:
        """Range, step, unit and device class from the descriptor."""
        super().__init__(coordinator, device_id, meta)
        # The hub accepts number descriptors only with min < max and step > 0.
        self._attr_native_min_value = meta.min if meta.min is not None else 0.0
        self._attr_native_max_value = meta.max if meta.max is not None else 100.0
        self._attr_native_step = meta.step if meta.step is not None else 1.0
        self._attr_native_unit_of_measurement = meta.unit

    @property
    def native_value(self) -> float | None:
        """The value the device reported."""
        return float_or_none(self.state_text)

    @iot_onboard_exception_handler
    async def async_set_native_value(self, value: float) -> None:
        """Publish the value (members and above); the device checks range and step again."""
        await self.send(repr(float(value)))


async_setup_entry = platform_setup_entry("number", IotOnboardNumber)
