"""Buttons from the devices' capability descriptors."""

from __future__ import annotations

from homeassistant.components.button import ButtonDeviceClass, ButtonEntity
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddEntitiesCallback

from .coordinator import IotOnboardConfigEntry, IotOnboardCoordinator
from .entity import IotOnboardEntity, async_setup_platform_entities
from .helpers import iot_onboard_exception_handler
from .hub import EntityMeta

PARALLEL_UPDATES = 0


class IotOnboardButton(IotOnboardEntity, ButtonEntity):
    """A press the device acts on (identify, restart...)."""

    def __init__(
        self, coordinator: IotOnboardCoordinator, device_id: str, meta: EntityMeta
    ) -> None:
        """Device class from the descriptor."""
        super().__init__(coordinator, device_id, meta)
        try:
            self._attr_device_class = (
                ButtonDeviceClass(meta.device_class) if meta.device_class else None
            )
        except ValueError:
            self._attr_device_class = None

    @iot_onboard_exception_handler
    async def async_press(self) -> None:
        """Publish ``press`` (members and above)."""
        await self.send("press")


async def async_setup_entry(
    hass: HomeAssistant,
    entry: IotOnboardConfigEntry,
    async_add_entities: AddEntitiesCallback,
) -> None:
    """Buttons for every descriptor, now and as devices appear."""
    del hass
    async_setup_platform_entities(entry, "button", IotOnboardButton, async_add_entities)
