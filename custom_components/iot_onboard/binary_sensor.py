"""Binary sensors from the devices' capability descriptors."""

from __future__ import annotations

from homeassistant.components.binary_sensor import BinarySensorDeviceClass, BinarySensorEntity
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddEntitiesCallback

from .coordinator import IotOnboardConfigEntry, IotOnboardCoordinator
from .entity import IotOnboardEntity, async_setup_platform_entities
from .hub import EntityMeta

PARALLEL_UPDATES = 0


class IotOnboardBinarySensor(IotOnboardEntity, BinarySensorEntity):
    """An on/off state the device publishes (motion, door, problem...)."""

    def __init__(
        self, coordinator: IotOnboardCoordinator, device_id: str, meta: EntityMeta
    ) -> None:
        """Device class from the descriptor."""
        super().__init__(coordinator, device_id, meta)
        try:
            self._attr_device_class = (
                BinarySensorDeviceClass(meta.device_class) if meta.device_class else None
            )
        except ValueError:
            self._attr_device_class = None

    @property
    def is_on(self) -> bool | None:
        """``on``/``off`` as published; anything else is unknown."""
        return {"on": True, "off": False}.get((self.state_text or "").lower())


async def async_setup_entry(
    hass: HomeAssistant,
    entry: IotOnboardConfigEntry,
    async_add_entities: AddEntitiesCallback,
) -> None:
    """Binary sensors for every descriptor, now and as devices appear."""
    del hass
    async_setup_platform_entities(
        entry, "binary_sensor", IotOnboardBinarySensor, async_add_entities
    )
