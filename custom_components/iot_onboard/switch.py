"""Switches from the devices' capability descriptors."""

from __future__ import annotations

from typing import Any

from homeassistant.components.switch import SwitchDeviceClass, SwitchEntity

from .entity import IotOnboardEntity, platform_setup_entry
from .helpers import iot_onboard_exception_handler

# Commands are single MQTT publishes; the broker and the device serialise them.
PARALLEL_UPDATES = 0


class IotOnboardSwitch(IotOnboardEntity, SwitchEntity):
    """An output the device switches; the state shown is what the device reports back."""

    _device_class_enum = SwitchDeviceClass

    @property
    def is_on(self) -> bool | None:
        """``on``/``off`` as published."""
        return self.on_off

    async def async_turn_on(self, **kwargs: Any) -> None:  # noqa: ARG002 - HA's signature
        """Publish ``on`` (members and above)."""
        await self._switch("on")

    async def async_turn_off(self, **kwargs: Any) -> None:  # noqa: ARG002 - HA's signature
        """Publish ``off`` (members and above)."""
        await self._switch("off")

    @iot_onboard_exception_handler
    async def _switch(self, payload: str) -> None:
        await self.send(payload)


async_setup_entry = platform_setup_entry("switch", IotOnboardSwitch)
