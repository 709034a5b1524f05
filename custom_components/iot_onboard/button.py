"""Buttons from the devices' capability descriptors."""

from __future__ import annotations

from homeassistant.components.button import ButtonDeviceClass, ButtonEntity

from .entity import IotOnboardEntity, platform_setup_entry
from .helpers import iot_onboard_exception_handler

PARALLEL_UPDATES = 0


class IotOnboardButton(IotOnboardEntity, ButtonEntity):
    """A press the device acts on (identify, restart...)."""

    _device_class_enum = ButtonDeviceClass

    @iot_onboard_exception_handler
    async def async_press(self) -> None:
        """Publish ``press`` (members and above)."""
        await self.send("press")


async_setup_entry = platform_setup_entry("button", IotOnboardButton)
