"""Home Assistant's side of the hub: the entry's runtime, devices, listeners and repairs.

:class:`IotOnboardCoordinator` wraps the HA-free :class:`~.hub.MqttHub`: it fetches the hub
credentials and the device list from the account service, runs the hub as the entry's
background task, and hands every pushed change to the entities listening for it. Nothing is
polled: state arrives over MQTT. The device list (which devices the household owns or is
shared, and with which access) and the member list are re-read from the account service when a
device nobody listed appears, after every action that changes them, at every reconnection and
every ``SYNC_INTERVAL``; a device that left the list (released, transferred, unshared) leaves
the device registry with its entities.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.exceptions import ConfigEntryAuthFailed, ConfigEntryNotReady
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.debounce import Debouncer
from homeassistant.helpers.event import async_call_later, async_track_time_interval
from homeassistant.util.ssl import get_default_context

from . import repairs
from .account_client import (
    AccountClient,
    AccountConnectionError,
    AccountServiceError,
    AuthenticationError,
    DeviceAccess,
    ForbiddenError,
    HouseholdDeletedError,
    HouseholdNotFoundError,
    ServiceUnavailableError,
)
from .const import CONF_HOUSEHOLD_ID, DEVICE_NAME, DOMAIN
from .helpers import device_entry, device_entry_ids, find_device, move_device
from .hub import (
    DeviceData,
    HubCredentials,
    HubCredentialsRefusedError,
    HubCredentialsUnavailableError,
    HubError,
    MqttHub,
    hub_client_id,
)
from .roles import RoleManager

_LOGGER = logging.getLogger(__name__)

SYNC_INTERVAL: Final = timedelta(minutes=15)
#: How long a device may stay offline before a repair issue says so.
OFFLINE_ISSUE_DELAY: Final = timedelta(minutes=10)
_SYNC_COOLDOWN: Final = 5.0

type DeviceListener = Callable[[], None]


@dataclass(slots=True)
class IotOnboardData:
    """What a household entry holds while it is loaded (``entry.runtime_data``).

    A device entry holds its household entry's (its platforms use the household's hub).

    ``account`` is the entry's only :class:`AccountClient` (refresh tokens rotate: the config
    flow uses this one while the entry is loaded, see ``const.RUNTIME_ACCOUNT_ATTR``).
    """

    account: AccountClient
    coordinator: IotOnboardCoordinator
    roles: RoleManager


type IotOnboardConfigEntry = ConfigEntry[IotOnboardData]


class _AccountRefusedError(HubError):
    """The account service refused the hub credentials request (sign-in or role lost)."""

    def __init__(self, error: AccountServiceError) -> None:
        super().__init__(str(error))
        self.error = error


class IotOnboardCoordinator:
    """One household's devices as pushed by the broker, for the entities of one entry."""

    def __init__(
        self,
        hass: HomeAssistant,
        entry: IotOnboardConfigEntry,
        account: AccountClient,
        roles: RoleManager,
    ) -> None:
        """Nothing connects until :meth:`async_setup`."""
        self.hass = hass
        self.entry = entry
        self.account = account
        self.roles = roles
        self.household_id: str = entry.data[CONF_HOUSEHOLD_ID]
        #: device id → what the household may do with it (from the account service).
        self.access: dict[str, DeviceAccess] = {}
        self._hub: MqttHub | None = None
        self._listeners: dict[str, list[DeviceListener]] = {}
        self._device_callbacks: list[Callable[[str], None]] = []
        self._hand_over_callbacks: list[Callable[[str], Awaitable[None]]] = []
        self._offline_timers: dict[str, CALLBACK_TYPE] = {}
        self._offline_logged: set[str] = set()
        self._sync = Debouncer(
            hass,
            _LOGGER,
            cooldown=_SYNC_COOLDOWN,
            immediate=True,
            function=self._async_sync_quietly,
            background=True,
        )

    @property
    def hub(self) -> MqttHub:
        """The MQTT hub (after :meth:`async_setup`)."""
        if self._hub is None:
            raise RuntimeError("the coordinator is not set up")
        return self._hub

    @property
    def connected(self) -> bool:
        """Whether the hub has a broker session now."""
        return self._hub is not None and self._hub.connected

    def device(self, device_id: str) -> DeviceData | None:
        """What the hub knows about ``device_id``."""
        return None if self._hub is None else self._hub.devices.get(device_id)

    def registry_name(self, device_id: str, descriptor_name: str | None) -> str:
        """The registry device's name (entity ids are made from it when first registered).

        The name typed in the onboarding flow, else the device's own (its descriptor's), else
        the device entry's title (its model's name and short id), else the id.
        """
        entry = self.hass.config_entries.async_get_entry(self.entities_entry_id(device_id))
        if entry is None or entry.entry_id == self.entry.entry_id:
            return descriptor_name or device_id
        chosen = entry.data.get(DEVICE_NAME)
        if isinstance(chosen, str) and chosen:
            return chosen
        return descriptor_name or entry.title or device_id

    def device_name(self, device_id: str) -> str:
        """The device's name as the user sees it (registry name, descriptor name or id)."""
        registry_device = find_device(self.hass, device_id, self.entry.entry_id)
        if registry_device is not None:
            return registry_device.name_by_user or registry_device.name or device_id
        data = self.device(device_id)
        if data is not None and data.meta is not None and data.meta.name:
            return data.meta.name
        return device_id

    # --- set-up ---------------------------------------------------------------------------

    async def async_setup(self) -> None:
        """First refresh: credentials, devices and members, then start the hub.

        Raises:
            ConfigEntryAuthFailed: the account service wants a new sign-in.
            ConfigEntryNotReady: the account service cannot be reached now.
            ConfigEntryNotReady: the household was deleted at the account service (with the
                repair issue saying so; ConfigEntryError would log a traceback).
        """
        try:
            credentials = await self.account.hub_credentials(self.household_id)
            await self._async_sync()
        except (HouseholdNotFoundError, HouseholdDeletedError) as err:
            self._async_household_gone(err)
            raise ConfigEntryNotReady(
                translation_domain=DOMAIN,
                translation_key="household_deleted",
                translation_placeholders={"title": self.entry.title},
            ) from err
        except AuthenticationError as err:
            raise ConfigEntryAuthFailed(
                translation_domain=DOMAIN, translation_key="auth_expired"
            ) from err
        except ForbiddenError as err:
            repairs.async_create_hub_refused_issue(self.hass, self.entry, err.message)
            raise ConfigEntryNotReady(
                translation_domain=DOMAIN,
                translation_key="hub_forbidden",
                translation_placeholders={"error": err.message},
            ) from err
        except AccountServiceError as err:
            raise _unreachable(err) from err
        repairs.async_delete_hub_refused_issue(self.hass, self.entry)
        tls = (
            await self.hass.async_add_executor_job(get_default_context) if credentials.tls else None
        )
        self._hub = MqttHub(
            credentials,
            self,
            credentials_provider=self._async_fetch_credentials,
            client_id=hub_client_id(self.household_id),
            tls_context=tls,
        )
        await self._hub.set_devices(self.access)
        self.entry.async_create_background_task(
            self.hass, self._async_run_hub(), f"{DOMAIN} hub {self.household_id}"
        )
        self.entry.async_on_unload(
            async_track_time_interval(self.hass, self._async_periodic_sync, SYNC_INTERVAL)
        )
        self.entry.async_on_unload(self._async_shutdown)

    @callback
    def _async_shutdown(self) -> None:
        self._sync.async_shutdown()
        for cancel in self._offline_timers.values():
            cancel()
        self._offline_timers.clear()

    async def _async_fetch_credentials(self) -> HubCredentials:
        try:
            return await self.account.hub_credentials(self.household_id)
        except (AccountConnectionError, ServiceUnavailableError) as err:
            raise HubCredentialsUnavailableError(str(err)) from err
        except AccountServiceError as err:
            raise _AccountRefusedError(err) from err

    async def _async_run_hub(self) -> None:
        try:
            await self.hub.run()
        except HubCredentialsRefusedError as err:
            _LOGGER.error("The broker refuses the household hub credentials: %s", err)  # noqa: TRY400
            repairs.async_create_hub_refused_issue(self.hass, self.entry, str(err))
        except _AccountRefusedError as err:
            if isinstance(err.error, HouseholdNotFoundError | HouseholdDeletedError):
                self._async_household_gone(err.error)
            elif isinstance(err.error, AuthenticationError):
                self.entry.async_start_reauth(self.hass)
            else:
                repairs.async_create_hub_refused_issue(self.hass, self.entry, str(err.error))

    # --- device list ----------------------------------------------------------------------

    async def _async_sync(self) -> None:
        """Re-read devices and members; drop devices the household no longer has.

        Only the devices whose access changed are told: the others' entities are not written
        again (a device added to a household of 1,000 would re-write 5,000 states).
        """
        devices = await self.account.devices(self.household_id)
        await self.roles.async_refresh()
        before = set(self.access) | self._registry_device_ids()
        previous = self.access
        self.access = {device.device_id: device.access for device in devices}
        for device_id in sorted(before - set(self.access)):
            self.async_remove_device(device_id)
        if self._hub is not None:
            await self._hub.set_devices(self.access)
        for device_id, access in self.access.items():
            if previous.get(device_id) != access:
                self._notify(device_id)

    async def _async_sync_quietly(self) -> None:
        try:
            await self._async_sync()
        except (HouseholdNotFoundError, HouseholdDeletedError) as err:
            self._async_household_gone(err)
        except AuthenticationError:
            self.entry.async_start_reauth(self.hass)
        except AccountServiceError as err:
            _LOGGER.debug("Device list not refreshed: %s", err)

    @callback
    def _async_household_gone(self, err: AccountServiceError) -> None:
        """The household is gone at the account service: one log line and a repair issue.

        Not a re-authentication: signing in again cannot bring it back.
        """
        _LOGGER.warning(
            "Household %s was deleted at the account service (%s); remove its entry or add "
            "another household",
            self.entry.title,
            err,
        )
        repairs.async_create_household_deleted_issue(self.hass, self.entry)

    async def async_ensure_device(self, device_id: str) -> None:
        """Have ``device_id`` in the device list (a device entry's set-up).

        A device the hub knows costs nothing (every device entry at start-up); a device just
        onboarded is read from the account service now.

        Raises:
            ConfigEntryNotReady: the account service cannot be reached now (HA retries).
        """
        if device_id in self.access:
            return
        try:
            await self._async_sync()
        except AccountServiceError as err:
            raise _unreachable(err) from err

    async def async_request_sync(self) -> None:
        """Re-read the device list soon (debounced)."""
        await self._sync.async_call()

    async def async_sync_now(self) -> None:
        """Re-read the device list now (after an action; raises AccountServiceError)."""
        await self._async_sync()

    async def _async_periodic_sync(self, _now: Any) -> None:
        await self.async_request_sync()

    def _registry_device_ids(self) -> set[str]:
        registry = dr.async_get(self.hass)
        return {
            identifier
            for device in dr.async_entries_for_config_entry(registry, self.entry.entry_id)
            for domain, identifier in device.identifiers
            if domain == DOMAIN
        }

    @callback
    def async_remove_device(self, device_id: str) -> None:
        """Forget a device: entities, registry entry, repairs (released or no longer shared)."""
        _LOGGER.info("Device %s no longer belongs to this household; removing it", device_id)
        self.access.pop(device_id, None)
        if self._hub is not None:
            self._hub.forget(device_id)
        self._cancel_offline_timer(device_id)
        self._offline_logged.discard(device_id)
        repairs.async_delete_device_issues(self.hass, device_id)
        registry = dr.async_get(self.hass)
        device = find_device(self.hass, device_id, self.entry.entry_id)
        if device is not None:
            if device_entry_ids(device) == [self.entry.entry_id]:
                registry.async_remove_device(device.id)
            else:
                # Older Home Assistant shares one registry device between two household
                # entries of this instance (a shared device): leave the other's.
                registry.async_update_device(device.id, remove_config_entry_id=self.entry.entry_id)
        onboarded = device_entry(self.hass, device_id)
        if onboarded is not None and onboarded.data.get(CONF_HOUSEHOLD_ID) == self.household_id:
            # The config flow refuses a device that has an entry ("already configured"): a
            # released or factory-reset device must be onboardable again. Not in ``access``
            # any more, so removing the entry does not release it (it is gone already).
            self.hass.async_create_task(
                self.hass.config_entries.async_remove(onboarded.entry_id),
                f"{DOMAIN} remove device entry {device_id}",
            )
        for listener in self._device_callbacks:
            listener(device_id)

    # --- which entry holds a device's entities -------------------------------------------

    def entities_entry_id(self, device_id: str) -> str:
        """The config entry a device's entities (and registry device) belong to.

        The device's own entry when this Home Assistant onboarded it into this household;
        otherwise (shared into the household, claimed elsewhere) the household entry.
        """
        onboarded = device_entry(self.hass, device_id)
        if onboarded is not None and onboarded.data.get(CONF_HOUSEHOLD_ID) == self.household_id:
            return onboarded.entry_id
        return self.entry.entry_id

    @callback
    def async_add_hand_over_callback(
        self, listener: Callable[[str], Awaitable[None]]
    ) -> CALLBACK_TYPE:
        """Call ``listener(device_id)`` when a device entry takes a device's entities over."""
        self._hand_over_callbacks.append(listener)

        @callback
        def remove() -> None:
            self._hand_over_callbacks.remove(listener)

        return remove

    async def async_hand_over(self, device_id: str, to_entry_id: str) -> None:
        """The household's entities of ``device_id`` go; its registry device moves (area kept).

        The device entry's platforms then add the same entities (same unique ids, so the same
        entity ids and settings) under the device entry.
        """
        for listener in list(self._hand_over_callbacks):
            await listener(device_id)
        device = find_device(self.hass, device_id, self.entry.entry_id)
        if device is not None and self.entry.entry_id in device_entry_ids(device):
            move_device(self.hass, device, to_entry_id)

    @callback
    def async_take_back(self, device_id: str) -> None:
        """A device entry went but the household still has the device: its entities return."""
        if device_id in self.access:
            for listener in list(self._device_callbacks):
                listener(device_id)

    # --- listeners for entities -----------------------------------------------------------

    @callback
    def async_add_device_listener(self, device_id: str, listener: DeviceListener) -> CALLBACK_TYPE:
        """Call ``listener`` on every change of ``device_id`` (and of the connection)."""
        self._listeners.setdefault(device_id, []).append(listener)

        @callback
        def remove() -> None:
            self._listeners[device_id].remove(listener)

        return remove

    @callback
    def async_add_devices_callback(self, listener: Callable[[str], None]) -> CALLBACK_TYPE:
        """Call ``listener(device_id)`` when a descriptor arrives or changes (platforms)."""
        self._device_callbacks.append(listener)

        @callback
        def remove() -> None:
            self._device_callbacks.remove(listener)

        return remove

    @callback
    def _notify(self, device_id: str) -> None:
        for listener in list(self._listeners.get(device_id, ())):
            listener()

    # --- HubListener ----------------------------------------------------------------------

    @callback
    def hub_connection_changed(self, *, connected: bool) -> None:
        """Every entity's availability follows the connection."""
        for device_id in list(self._listeners):
            self._notify(device_id)
        if connected:
            self.entry.async_create_task(self.hass, self.async_request_sync())

    @callback
    def device_meta_changed(self, device_id: str) -> None:
        """New entities for new descriptors; an unlisted device triggers a sync."""
        data = self.device(device_id)
        if device_id not in self.access or data is None or data.meta is None:
            self.entry.async_create_task(self.hass, self.async_request_sync())
        if data is not None and data.meta is not None:
            self._update_registry_device(device_id)
            for listener in list(self._device_callbacks):
                listener(device_id)
        self._notify(device_id)

    @callback
    def device_availability_changed(self, device_id: str) -> None:
        """Log once per outage, raise the offline repair after a while, update entities."""
        data = self.device(device_id)
        online = data is not None and data.online is True
        name = self.device_name(device_id)
        if online:
            self._cancel_offline_timer(device_id)
            repairs.async_delete_offline_issue(self.hass, device_id)
            repairs.async_delete_wifi_lost_issue(self.hass, device_id)
            if device_id in self._offline_logged:
                self._offline_logged.discard(device_id)
                _LOGGER.info("Device %s is back online", name)
        elif data is not None and data.online is False:
            if device_id not in self._offline_logged:
                self._offline_logged.add(device_id)
                _LOGGER.info("Device %s is offline", name)
            if device_id not in self._offline_timers:
                self._offline_timers[device_id] = async_call_later(
                    self.hass, OFFLINE_ISSUE_DELAY, self._offline_timer_fired(device_id)
                )
        self._notify(device_id)

    def _offline_timer_fired(self, device_id: str) -> Callable[[Any], None]:
        @callback
        def fire(_now: Any) -> None:
            self._offline_timers.pop(device_id, None)
            data = self.device(device_id)
            if data is not None and data.online is False:
                repairs.async_create_offline_issue(
                    self.hass, self.entry, device_id, self.device_name(device_id), data
                )

        return fire

    def _cancel_offline_timer(self, device_id: str) -> None:
        cancel = self._offline_timers.pop(device_id, None)
        if cancel is not None:
            cancel()

    @callback
    def device_state_changed(self, device_id: str, key: str) -> None:
        """Push the new state to the device's entities."""
        del key  # entities of the device read their own key
        self._notify(device_id)

    @callback
    def device_diagnostic(self, device_id: str, event: dict[str, Any]) -> None:
        """Keep the event for diagnostics and for the offline repair's reason."""
        _LOGGER.debug("Device %s diagnostic: %s", device_id, event)

    def _update_registry_device(self, device_id: str) -> None:
        data = self.device(device_id)
        registry = dr.async_get(self.hass)
        device = find_device(self.hass, device_id, self.entities_entry_id(device_id))
        if data is None or data.meta is None or device is None:
            return
        meta = data.meta
        registry.async_update_device(
            device.id,
            manufacturer=meta.manufacturer,
            model=meta.model,
            sw_version=meta.sw_version,
            hw_version=meta.hw_version,
        )

    # --- commands -------------------------------------------------------------------------

    async def async_send_command(self, device_id: str, key: str, payload: str) -> None:
        """Publish a command (raises HubError; the helpers decorator translates it)."""
        await self.hub.publish_command(device_id, key, payload)

    async def async_rotate_hub_credentials(self) -> None:
        """New hub password from the account service; the hub reconnects with it."""
        credentials = await self.account.rotate_hub_credentials(self.household_id)
        self.hub.use_credentials(credentials)


def _unreachable(err: AccountServiceError) -> ConfigEntryNotReady:
    """The set-up waits for the account service (HA retries with its backoff)."""
    return ConfigEntryNotReady(
        translation_domain=DOMAIN,
        translation_key="account_unreachable",
        translation_placeholders={"error": str(err)},
    )
