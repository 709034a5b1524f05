"""Switches from the devices' capability descriptors."""

from __future__ import annotations

from typing import Any

from homeassistant.components.switch import SwitchDeviceClass, SwitchEntity
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddEntitiesCallback

from .coordinator import IotOnboardConfigEntry, IotOnboardCoordinator
from .entity import IotOnboardEntity, async_setup_platform_entities
from .helpers import iot_onboard_exception_handler
from .hub import EntityMeta

# Commands are single MQTT publishes; the broker and the device serialise them.
PARALLEL_UPDATES = 0


class IotOnboardSwitch(IotOnboardEntity, SwitchEntity):
    """An output the device switches; the state shown is what the device reports back."""

    def __init__(
        self, coordinator: IotOnboardCoordinator, device_id: str, meta: EntityMeta
    ) -> None:
        """Device class from the descriptor."""
        super().__init__(coordinator, device_id, meta)
        try:
            self._attr_device_class = (
                SwitchDeviceClass(meta.device_class) if meta.device_class else None
            )
        except ValueError:
            self._attr_device_class = None

    @property
    def is_on(self) -> bool | None:
        """``on``/``off`` as published."""
        return {"on": True, "off": False}.get((self.state_text or "").lower())

    async def async_turn_on(self, **kwargs: Any) -> None:  # noqa: ARG002 - HA's signature
        """Publish ``on`` (members and above)."""
        await self._switch("on")

    async def async_turn_off(self, **kwargs: Any) -> None:  # noqa: ARG002 - HA's signature
        """Publish ``off`` (members and above)."""
        await self._switch("off")

    @iot_onboard_exception_handler
    async def _switch(self, payload: str) -> None:
        await self.send(payload)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: IotOnboardConfigEntry,
    async_add_entities: AddEntitiesCallback,
) -> None:
    """Switches for every descriptor, now and as devices appear."""
    del hass
    async_setup_platform_entities(entry, "switch", IotOnboardSwitch, async_add_entities)
