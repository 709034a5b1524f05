"""The base entity of every platform, and how platforms create entities from descriptors.

Entities are built from the device's capability descriptor (``iob/<id>/meta``): the platform,
device class, unit, category and number range come from the device, the name from the
integration's translations when the descriptor's ``translation_key`` is one we ship (else the
descriptor's English ``name``). Unique id: ``<device id>_<key>`` (both stable for the device's
lifetime). Diagnostic sensors (load, memory, disk, …) are registered disabled by default.
Available while the hub is connected, the device's will says ``online`` and the descriptor
still lists the key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Final

from homeassistant.const import EntityCategory
from homeassistant.core import Context, HomeAssistant, callback
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.entity import Entity
from homeassistant.helpers.entity_platform import AddEntitiesCallback

from .account_client import DeviceAccess
from .const import DOMAIN
from .coordinator import IotOnboardConfigEntry, IotOnboardCoordinator
from .hub import EntityMeta
from .roles import Action

#: translation_key values the integration translates, per platform (translations/en.json).
TRANSLATED: Final[dict[str, frozenset[str]]] = {
    "sensor": frozenset(
        {
            "temperature",
            "cpu_temperature",
            "load_1m",
            "memory_used",
            "disk_used",
            "last_boot",
            "wifi_signal",
        }
    ),
    "binary_sensor": frozenset({"motion"}),
    "switch": frozenset({"relay", "gpio_output"}),
    "button": frozenset({"identify"}),
    "number": frozenset({"setpoint"}),
}
_CATEGORIES: Final = {"config": EntityCategory.CONFIG, "diagnostic": EntityCategory.DIAGNOSTIC}

type EntityFactory = Callable[[IotOnboardCoordinator, str, EntityMeta], IotOnboardEntity]
type SetupEntry = Callable[
    [HomeAssistant, IotOnboardConfigEntry, AddEntitiesCallback], Awaitable[None]
]


def enum_or_none[E: StrEnum](kind: type[E], value: str | None) -> E | None:
    """``value`` as a member of ``kind``; None when absent or not one of its values."""
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        return None


def float_or_none(text: str | None) -> float | None:
    """``text`` as a number; None when absent or not one."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


class IotOnboardEntity(Entity):
    """One entity of one device, updated by pushes from the hub."""

    _attr_has_entity_name = True
    _attr_should_poll = False
    #: The platform's device class enum: the descriptor's ``device_class`` when it is one.
    _device_class_enum: type[StrEnum] | None = None

    def __init__(
        self, coordinator: IotOnboardCoordinator, device_id: str, meta: EntityMeta
    ) -> None:
        """Describe the entity from its descriptor."""
        self.coordinator = coordinator
        self.device_id = device_id
        self.key = meta.key
        self.entity_meta = meta
        self._attr_unique_id = f"{device_id}_{meta.key}"
        if meta.translation_key is not None and meta.translation_key in TRANSLATED.get(
            meta.platform, frozenset()
        ):
            self._attr_translation_key = meta.translation_key
        else:
            self._attr_name = meta.name
            if meta.icon is not None:
                self._attr_icon = meta.icon
        if self._device_class_enum is not None:
            self._attr_device_class = enum_or_none(self._device_class_enum, meta.device_class)
        self._attr_entity_category = _CATEGORIES.get(meta.entity_category or "")
        if meta.platform == "sensor" and self._attr_entity_category is EntityCategory.DIAGNOSTIC:
            # Load, memory, disk, CPU temperature, last boot, Wi-Fi signal: for troubleshooting,
            # registered but disabled until the user enables them (entity-disabled-by-default).
            self._attr_entity_registry_enabled_default = False
        data = coordinator.device(device_id)
        device_meta = data.meta if data is not None else None
        self._attr_device_info = DeviceInfo(
            identifiers={(DOMAIN, device_id)},
            manufacturer=(device_meta.manufacturer if device_meta else None) or "IoT Onboard",
            model=device_meta.model if device_meta else None,
            # Every entity added sets the registry device's name (the first ones make their
            # entity ids from it): a name typed in the flow is not replaced by the descriptor's.
            name=coordinator.registry_name(device_id, device_meta.name if device_meta else None),
            sw_version=device_meta.sw_version if device_meta else None,
            hw_version=device_meta.hw_version if device_meta else None,
            serial_number=device_id,
        )

    @property
    def state_text(self) -> str | None:
        """The raw state the device published for this key (None: unknown)."""
        data = self.coordinator.device(self.device_id)
        if data is None:
            return None
        value = data.states.get(self.key)
        return None if value in (None, "", "unknown") else value

    @property
    def on_off(self) -> bool | None:
        """``on``/``off`` as published (any case); anything else is unknown."""
        return {"on": True, "off": False}.get((self.state_text or "").lower())

    @property
    def available(self) -> bool:
        """Hub connected, device online, key still in its descriptor."""
        data = self.coordinator.device(self.device_id)
        return (
            self.coordinator.connected
            and data is not None
            and data.online is True
            and data.meta is not None
            and data.meta.entity(self.key) is not None
        )

    async def async_added_to_hass(self) -> None:
        """Listen for pushes about this device."""
        await super().async_added_to_hass()
        self.async_on_remove(
            self.coordinator.async_add_device_listener(self.device_id, self._handle_push)
        )

    @callback
    def _handle_push(self) -> None:
        self.async_write_ha_state()

    async def async_check_control(self) -> None:
        """Raise a translated error unless the caller may control this device.

        ``self._context`` is the running action's context (the service helper sets it before
        calling the entity); no context at all counts as an automation.
        """
        await self.coordinator.roles.async_check(
            self._context or Context(),
            Action.CONTROL,
            device_name=self.coordinator.device_name(self.device_id),
            device_access=self.coordinator.access.get(self.device_id, DeviceAccess.READ),
        )

    async def send(self, payload: str) -> None:
        """Check the caller's role, then publish the command for this entity.

        A refused or failed command shows the real state again before the error goes up.
        """
        try:
            await self.async_check_control()
            await self.coordinator.async_send_command(self.device_id, self.key, payload)
        except Exception:
            self._async_show_real_state()
            raise

    @callback
    def _async_show_real_state(self) -> None:
        """Write the unchanged state as a change, so the frontend drops what it assumed.

        Home Assistant's frontend shows a toggled switch (or a moved slider) in its requested
        position until the entity's state object changes, also when the action failed. An
        unchanged write is only "reported" (no ``state_changed``), so this one is forced.
        """
        self._attr_force_update = True
        try:
            self.async_write_ha_state()
        finally:
            self._attr_force_update = False


class _PlatformEntities:
    """One entry's entities of one platform, per device, as descriptors arrive."""

    def __init__(
        self,
        entry: IotOnboardConfigEntry,
        platform: str,
        factory: EntityFactory,
        async_add_entities: AddEntitiesCallback,
    ) -> None:
        self._entry = entry
        self._coordinator = entry.runtime_data.coordinator
        self._platform = platform
        self._factory = factory
        self._add_entities = async_add_entities
        self._added: dict[str, dict[str, IotOnboardEntity]] = {}

    @callback
    def add_for(self, device_id: str) -> None:
        """Add the device's entities this entry does not have yet."""
        coordinator = self._coordinator
        data = coordinator.device(device_id)
        if data is None:
            # Removed (released): its entities left with the device and may come back.
            self._added.pop(device_id, None)
            return
        if data.meta is None:
            return  # cleared (factory reset): the entities stay, unavailable
        if coordinator.entities_entry_id(device_id) != self._entry.entry_id:
            return  # another entry of ours holds this device's entities
        entities = self._added.setdefault(device_id, {})
        new = [
            self._factory(coordinator, device_id, meta)
            for meta in data.meta.entities
            if meta.platform == self._platform and meta.key not in entities
        ]
        entities.update((entity.key, entity) for entity in new)
        if new:
            self._add_entities(new)

    async def hand_over(self, device_id: str) -> None:
        """The device's own entry takes its entities: they leave this entry's platform."""
        for entity in self._added.pop(device_id, {}).values():
            # Out of the state machine only: the registry entry goes on with the device entry.
            # (A disabled entity was never added: it has only its registry entry.)
            if entity.hass is not None:
                await entity.async_remove(force_remove=True)


@callback
def async_setup_platform_entities(
    entry: IotOnboardConfigEntry,
    platform: str,
    factory: EntityFactory,
    async_add_entities: AddEntitiesCallback,
) -> None:
    """Add entities of ``platform`` for every descriptor, now and whenever one arrives.

    A device entry adds its own device's entities; the household entry adds those of every
    other device of the household (shared into it, or claimed without this Home Assistant),
    and hands a device's entities over when the device's own entry is set up.
    """
    coordinator = entry.runtime_data.coordinator
    entities = _PlatformEntities(entry, platform, factory, async_add_entities)
    for device_id in list(coordinator.hub.devices):
        entities.add_for(device_id)
    entry.async_on_unload(coordinator.async_add_devices_callback(entities.add_for))
    if entry.entry_id == coordinator.entry.entry_id:
        entry.async_on_unload(coordinator.async_add_hand_over_callback(entities.hand_over))


def platform_setup_entry(platform: str, factory: EntityFactory) -> SetupEntry:
    """The ``async_setup_entry`` of a platform whose entities ``factory`` makes.

    It adds the platform's entities for every descriptor, now and as devices appear.
    """

    async def async_setup_entry(
        hass: HomeAssistant,
        entry: IotOnboardConfigEntry,
        async_add_entities: AddEntitiesCallback,
    ) -> None:
        del hass
        async_setup_platform_entities(entry, platform, factory, async_add_entities)

    async_setup_entry.__doc__ = f"Add the {platform} entities of every descriptor."
    return async_setup_entry
