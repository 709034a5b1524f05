"""Numbers (setpoints) from the devices' capability descriptors."""

from __future__ import annotations

from homeassistant.components.number import NumberDeviceClass, NumberEntity, NumberMode
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddEntitiesCallback

from .coordinator import IotOnboardConfigEntry, IotOnboardCoordinator
from .entity import IotOnboardEntity, async_setup_platform_entities
from .helpers import iot_onboard_exception_handler
from .hub import EntityMeta

PARALLEL_UPDATES = 0


class IotOnboardNumber(IotOnboardEntity, NumberEntity):
    """A value the device accepts within its range and step; it reports the value back."""

    _attr_mode = NumberMode.AUTO

    def __init__(
        self, coordinator: IotOnboardCoordinator, device_id: str, meta: EntityMeta
    ) -> None:
        """Range, step, unit and device class from the descriptor."""
        super().__init__(coordinator, device_id, meta)
        try:
            self._attr_device_class = (
                NumberDeviceClass(meta.device_class) if meta.device_class else None
            )
        except ValueError:
            self._attr_device_class = None
        # The hub accepts number descriptors only with min < max and step > 0.
        self._attr_native_min_value = meta.min if meta.min is not None else 0.0
        self._attr_native_max_value = meta.max if meta.max is not None else 100.0
        self._attr_native_step = meta.step if meta.step is not None else 1.0
        self._attr_native_unit_of_measurement = meta.unit

    @property
    def native_value(self) -> float | None:
        """The value the device reported."""
        text = self.state_text
        if text is None:
            return None
        try:
            return float(text)
        except ValueError:
            return None

    @iot_onboard_exception_handler
    async def async_set_native_value(self, value: float) -> None:
        """Publish the value (members and above); the device checks range and step again."""
        await self.send(repr(float(value)))


async def async_setup_entry(
    hass: HomeAssistant,
    entry: IotOnboardConfigEntry,
    async_add_entities: AddEntitiesCallback,
) -> None:
    """Numbers for every descriptor, now and as devices appear."""
    del hass
    async_setup_platform_entities(entry, "number", IotOnboardNumber, async_add_entities)
