"""BlueZ over D-Bus: the GATT application, its registration, the advertisements, the links.

:class:`BluezPeripheral` is what the agent uses (``start``, ``stop``, ``follow``,
``authorize_improv``). It exports an application object tree at :data:`APP_PATH` (an
``ObjectManager`` root with ``org.bluez.GattService1`` and ``org.bluez.GattCharacteristic1``
objects for the IoT Onboard and Improv services), registers it with the adapter's
``GattManager1.RegisterApplication`` (BlueZ then reads it back with ``GetManagedObjects``),
and registers the ``LEAdvertisement1`` objects with ``LEAdvertisingManager1`` while there is
something to advertise. It follows BlueZ: a central's disconnect (``Device1.Connected`` false)
resets that link, and a restarted bluetoothd gets the application and advertisements again.

Notifications are ``PropertiesChanged`` on a characteristic's ``Value``: BlueZ sends them to
every central that enabled them, truncated to its MTU, which is why the services chunk to the
``mtu`` BlueZ passes with each write. Nothing here needs BlueZ's experimental mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from iob_protocol.sources import MonotonicClock, monotonic

from device_firmware import dbus_call
from device_firmware.controller import DeviceController
from device_firmware.factory import ProvisionedDevice
from device_firmware.provisioning.session_host import SessionHost
from device_firmware.state import DeviceStateRecord, Phase

from .advertisement import Advertisement, AdvertisementData
from .dbus_objects import ExportedObject, ObjectServer
from .errors import AttError, BluezError, GattError
from .gatt import Access, Characteristic, Flag, GattService, ProvisioningService
from .improv import (
    AUTHORIZATION_SECONDS,
    IMPROV_SERVICE_DATA_UUID,
    IMPROV_SERVICE_UUID,
    ImprovService,
    ImprovState,
    improv_service_data,
)
from .wire import SERVICE_UUID, SHORT_ID_CHARS, BlePhase, BleStatus

_LOGGER = logging.getLogger(__name__)

BLUEZ_BUS: Final = "org.bluez"
IFACE_ADAPTER: Final = "org.bluez.Adapter1"
IFACE_DEVICE: Final = "org.bluez.Device1"
IFACE_GATT_MANAGER: Final = "org.bluez.GattManager1"
IFACE_ADV_MANAGER: Final = "org.bluez.LEAdvertisingManager1"
IFACE_GATT_SERVICE: Final = "org.bluez.GattService1"
IFACE_GATT_CHARACTERISTIC: Final = "org.bluez.GattCharacteristic1"
_IFACE_PROPERTIES: Final = "org.freedesktop.DBus.Properties"
_IFACE_OBJECT_MANAGER: Final = "org.freedesktop.DBus.ObjectManager"
_DBUS: Final = "org.freedesktop.DBus"

#: Root of the exported GATT application (an ObjectManager; BlueZ has no interface for it).
APP_PATH: Final = "/org/iot_onboard/gatt"
#: Parent of the advertisement objects.
ADVERTISEMENT_PATH: Final = "/org/iot_onboard/advertisement"
#: How often registering is tried again after bluetoothd restarted without its adapter.
RETRY_SECONDS: Final = 15.0
CALL_TIMEOUT: Final = 10.0

_NEXT_STEP_BLUEZ: Final = "start it with 'sudo systemctl enable --now bluetooth'"
_NEXT_STEP_POLICY: Final = (
    "run the agent as root or allow its user in the D-Bus policy (docs/ble.md)"
)
_NEXT_STEP_ADAPTER: Final = (
    "check 'bluetoothctl list' and 'rfkill list'; on a Raspberry Pi, 'systemctl status hciuart'"
)


# --- exported objects ------------------------------------------------------------------------


class _ServiceObject(ExportedObject):
    def __init__(self, path: str, service: GattService) -> None:
        super().__init__(path)
        self.service = service

    def properties(self) -> dict[str, dict[str, Variant]]:
        return {
            IFACE_GATT_SERVICE: {
                "UUID": Variant("s", self.service.uuid),
                "Primary": Variant("b", True),  # noqa: FBT003 - a D-Bus boolean
                "Includes": Variant("ao", []),
            }
        }


def _options(body: Any) -> Access:
    """BlueZ's ``a{sv}`` options of a read or write (``device``, ``mtu``, ``offset``)."""
    options: dict[str, Variant] = body if isinstance(body, dict) else {}

    def value(name: str, default: Any) -> Any:
        item = options.get(name)
        return default if item is None else item.value

    return Access(
        link=str(value("device", "unknown")),
        mtu=int(value("mtu", 0)),
        offset=int(value("offset", 0)),
    )


class _CharacteristicObject(ExportedObject):
    def __init__(
        self,
        path: str,
        service_path: str,
        characteristic: Characteristic,
        emit: Callable[[str, str, dict[str, Variant]], None],
    ) -> None:
        super().__init__(path)
        self._service_path = service_path
        self.characteristic = characteristic
        self._emit = emit
        self.notifying = False

    def properties(self) -> dict[str, dict[str, Variant]]:
        flags = sorted(flag.value for flag in self.characteristic.flags)
        return {
            IFACE_GATT_CHARACTERISTIC: {
                "UUID": Variant("s", self.characteristic.uuid),
                "Service": Variant("o", self._service_path),
                "Flags": Variant("as", flags),
                "Notifying": Variant("b", self.notifying),
            }
        }

    def notify(self, value: bytes) -> None:
        if self.notifying:
            self._emit(self.path, IFACE_GATT_CHARACTERISTIC, {"Value": Variant("ay", value)})

    def call(self, message: Message) -> Message | None:
        if message.interface not in {IFACE_GATT_CHARACTERISTIC, None}:
            return None
        characteristic = self.characteristic
        member = message.member
        if member == "ReadValue" and message.signature == "a{sv}":
            if characteristic.read is None:
                raise GattError(AttError.NOT_PERMITTED, "not readable")
            value = characteristic.read(_options(message.body[0]))
            return Message.new_method_return(message, "ay", [value])
        if member == "WriteValue" and message.signature == "aya{sv}":
            if characteristic.write is None:
                raise GattError(AttError.NOT_PERMITTED, "not writable")
            characteristic.write(bytes(message.body[0]), _options(message.body[1]))
            return Message.new_method_return(message)
        if member in {"StartNotify", "StopNotify"}:
            if Flag.NOTIFY not in characteristic.flags:
                raise GattError(AttError.NOT_SUPPORTED, "no notifications")
            self.notifying = member == "StartNotify"
            self._emit(
                self.path, IFACE_GATT_CHARACTERISTIC, {"Notifying": Variant("b", self.notifying)}
            )
            return Message.new_method_return(message)
        if member in {"AcquireWrite", "AcquireNotify"}:
            raise GattError(AttError.NOT_SUPPORTED, "use WriteValue and StartNotify")
        return None


class GattApplication:
    """The services as a BlueZ application object tree."""

    def __init__(self, server: ObjectServer, services: Sequence[GattService]) -> None:
        """Build the objects (export with :meth:`export`)."""
        self._server = server
        self._services = tuple(services)
        self._objects: list[ExportedObject] = []
        self._by_uuid: dict[str, _CharacteristicObject] = {}
        for index, service in enumerate(self._services):
            service_path = f"{APP_PATH}/service{index}"
            self._objects.append(_ServiceObject(service_path, service))
            for number, characteristic in enumerate(service.characteristics):
                obj = _CharacteristicObject(
                    f"{service_path}/char{number}",
                    service_path,
                    characteristic,
                    server.emit_properties_changed,
                )
                self._objects.append(obj)
                self._by_uuid[characteristic.uuid] = obj

    @property
    def services(self) -> tuple[GattService, ...]:
        """The services, in registration order."""
        return self._services

    def export(self) -> None:
        """Serve the tree."""
        self._server.add_root(APP_PATH)
        for obj in self._objects:
            self._server.export(obj)

    def unexport(self) -> None:
        """Stop serving the tree."""
        for obj in self._objects:
            self._server.unexport(obj.path)
        self._server.unexport(APP_PATH)

    async def notify(self, uuid: str, value: bytes) -> None:
        """A service's notification: ``PropertiesChanged`` on the characteristic's Value."""
        self._by_uuid[uuid].notify(value)

    def reset_notifications(self) -> None:
        """BlueZ restarted: no central is subscribed any more."""
        for obj in self._by_uuid.values():
            obj.notifying = False

    def link_closed(self, link: str) -> None:
        """Tell every service that a central went away."""
        for service in self._services:
            service.link_closed(link)

    def all_links_closed(self) -> None:
        """Tell every service that all centrals went away."""
        for service in self._services:
            service.all_links_closed()


# --- the peripheral --------------------------------------------------------------------------


class ProvisioningPeripheral:
    """What every peripheral serves: the IoT Onboard service and, optionally, Improv Wi-Fi.

    :class:`BluezPeripheral` (a real adapter) and ``bridge.BridgePeripheral`` (loopback TCP,
    tests and demo) differ only in how centrals reach these services.
    """

    def __init__(
        self,
        *,
        host: SessionHost,
        controller: DeviceController,
        device: ProvisionedDevice,
        improv: bool,
        clock: MonotonicClock,
        improv_authorization: float,
    ) -> None:
        """Build the services; nothing is served yet (nothing advertised before :meth:`follow`)."""
        self._host = host
        self._controller = controller
        self._device_id = device.identity.device_id
        self._advertise = False
        self.provisioning = ProvisioningService(host, clock=clock, on_session=self._session_began)
        self.improv: ImprovService | None = None
        if improv:
            self.improv = ImprovService(
                controller,
                device_name=self.local_name,
                hardware_name=device.info.model,
                firmware_version=device.info.firmware_version,
                session_idle=host.session_idle,
                on_state=self._improv_state,
                clock=clock,
                authorization_seconds=improv_authorization,
            )

    @property
    def local_name(self) -> str:
        """The name in the scan response (and Improv's device name)."""
        return f"IoT Onboard {self._device_id[:SHORT_ID_CHARS]}"

    @property
    def services(self) -> list[GattService]:
        """The services in registration order."""
        services: list[GattService] = [self.provisioning]
        if self.improv is not None:
            services.append(self.improv)
        return services

    @property
    def advertise(self) -> bool:
        """Whether the IoT Onboard advertisement is wanted (the last decision followed)."""
        return self._advertise

    async def follow(self, record: DeviceStateRecord, *, advertise: bool) -> None:
        """Show what :func:`~device_firmware.decide.decide` decided for ``record``.

        ``advertise`` is the decision's ``ble_advertise`` (the provisioning window is open):
        the status characteristic, the IoT Onboard advertisement and Improv's offer follow
        it. The peripheral reads no window itself; the presence re-decides when the window
        lapses. D-Bus failures are logged, never raised: BLE is one transport among several
        and must not stop the agent.
        """
        status = BleStatus(
            phase=ble_phase(record.phase), window_open=advertise, diagnostic=record.diagnostic
        )
        await self.provisioning.set_status(status)
        self._advertise = advertise
        if self.improv is not None:
            await self.improv.update(record, window_open=advertise)
        await self._advertisement_changed()

    async def authorize_improv(self) -> None:
        """The device's button was pressed (Improv's physical authorization).

        The caller follows the decision first (the press opened the window), so Improv is
        offered before it is authorized.
        """
        if self.improv is not None:
            await self.improv.authorize()

    async def _advertisement_changed(self) -> None:
        """What is advertised may have changed: each peripheral shows it its own way."""
        raise NotImplementedError

    async def _improv_state(self, _state: ImprovState) -> None:
        """Improv's state changed: the advertisement follows."""
        await self._advertisement_changed()

    async def _session_began(self) -> None:
        if self.improv is not None:
            await self.improv.refresh()


class BluezAdapters(dbus_call.BusClient):
    """Finding the LE adapter and powering it on: the agent's start and the factory self-test."""

    _DESTINATION = BLUEZ_BUS
    _CALL_TIMEOUT = CALL_TIMEOUT

    def _call_error(self, err: dbus_call.DBusCallError) -> BluezError:
        return _bluez_error(err)

    async def find_adapter(self, name: str | None) -> str:
        """The object path of adapter ``name`` (the first LE one when None), powered on.

        Raises :class:`BluezError` with the next step when there is none or it stays off.
        """
        (objects,) = await self._call("/", _IFACE_OBJECT_MANAGER, "GetManagedObjects")
        adapters = {
            path: interfaces
            for path, interfaces in sorted(objects.items())
            if IFACE_ADAPTER in interfaces
        }
        if name is not None:
            path = f"/org/bluez/{name}"
            if path not in adapters:
                raise BluezError(f"no Bluetooth adapter {name}", _NEXT_STEP_ADAPTER)
            candidates = {path: adapters[path]}
        else:
            candidates = adapters
        for path, interfaces in candidates.items():
            if IFACE_GATT_MANAGER in interfaces and IFACE_ADV_MANAGER in interfaces:
                if not interfaces[IFACE_ADAPTER].get("Powered", Variant("b", value=False)).value:
                    await self._power_on(path)
                return str(path)
        raise BluezError(
            "no Bluetooth LE adapter that can serve GATT and advertise", _NEXT_STEP_ADAPTER
        )

    async def powered(self, path: str) -> bool:
        """Whether the adapter at ``path`` is powered now."""
        (value,) = await self._call(
            path, _IFACE_PROPERTIES, "Get", "ss", [IFACE_ADAPTER, "Powered"]
        )
        return bool(value.value)

    async def _power_on(self, path: str) -> None:
        _LOGGER.info("Bluetooth adapter %s is off; powering it on", path)
        try:
            await self._call(
                path,
                _IFACE_PROPERTIES,
                "Set",
                "ssv",
                [IFACE_ADAPTER, "Powered", Variant("b", value=True)],
            )
        except BluezError as err:
            raise BluezError(
                f"Bluetooth adapter {path} is off and cannot be powered on ({err.message})",
                "run 'rfkill unblock bluetooth' and 'bluetoothctl power on'",
                dbus_error=err.dbus_error,
            ) from err


class BluezPeripheral(ProvisioningPeripheral, BluezAdapters):
    """BLE provisioning on a real adapter: what the agent starts, updates and stops."""

    def __init__(
        self,
        *,
        host: SessionHost,
        controller: DeviceController,
        device: ProvisionedDevice,
        adapter: str | None = None,
        bus_address: str | None = None,
        improv: bool = True,
        clock: MonotonicClock = monotonic,
        improv_authorization: float = AUTHORIZATION_SECONDS,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        """Configure; nothing touches D-Bus before :meth:`start`.

        Args:
            host: the session host shared with the LAN server.
            controller: the device controller (state, network commit for Improv).
            device: identity and factory facts (device id, model, firmware).
            adapter: adapter name such as ``hci0``; the first LE adapter when None.
            bus_address: a D-Bus address; the system bus when None.
            improv: also offer the Improv Wi-Fi service.
            clock: monotonic clock (ownership and authorization timers).
            improv_authorization: seconds a button press authorizes Improv.
            retry_seconds: how often registering is tried again after bluetoothd restarted
                (its adapter can come back late).
        """
        super().__init__(
            host=host,
            controller=controller,
            device=device,
            improv=improv,
            clock=clock,
            improv_authorization=improv_authorization,
        )
        self._retry_seconds = retry_seconds
        self._adapter_name = adapter
        self._bus_address = bus_address
        self._bus: MessageBus | None = None
        self._server: ObjectServer | None = None
        self._app: GattApplication | None = None
        self._adapter: str | None = None
        self._adverts: dict[str, Advertisement] = {}
        self._registered = False
        self._sync_lock = asyncio.Lock()
        self._refresher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._warned: set[str] = set()

    @property
    def adapter_path(self) -> str | None:
        """The adapter in use, once started."""
        return self._adapter

    @property
    def advertising(self) -> dict[str, bool]:
        """Which advertisements (``iot_onboard``, ``improv``) are registered with BlueZ."""
        return {key: adv.registered for key, adv in self._adverts.items()}

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Register the GATT application and advertise as the device's state says.

        Raises :class:`BluezError` with the next step when BlueZ cannot be used.
        """
        bus = await self._connect()
        try:
            self._adapter = await self.find_adapter(self._adapter_name)
            await self._watch()
            server = self._server = ObjectServer(bus)
            services = self.services
            app = self._app = GattApplication(server, services)
            app.export()
            self._make_advertisements(server)
            for service in services:
                await service.start(app.notify)
            await self._register()
        except BaseException:
            await self.stop()
            raise
        self._refresher = asyncio.create_task(self._retry(), name="iob-ble-retry")
        _LOGGER.info("BLE provisioning on %s", self._adapter)

    async def stop(self) -> None:
        """Withdraw advertisements and the application; close the bus connection."""
        tasks = [task for task in (self._refresher, *self._tasks) if task is not None]
        self._refresher = None
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._withdraw()
        if self._app is not None:
            for service in self._app.services:
                await service.stop()
            self._app.unexport()
            self._app = None
        if self._server is not None:
            self._server.close()
            self._server = None
        self._adverts.clear()
        bus, self._bus = self._bus, None
        if bus is not None:
            bus.disconnect()

    async def _withdraw(self) -> None:
        """Unregister what BlueZ holds of ours (best effort: BlueZ may be gone already)."""
        adapter = self._adapter
        if self._bus is None or not self._bus.connected or adapter is None:
            return
        for adv in self._adverts.values():
            if adv.registered:
                adv.registered = False
                with contextlib.suppress(BluezError):
                    await self._call(
                        adapter, IFACE_ADV_MANAGER, "UnregisterAdvertisement", "o", [adv.path]
                    )
        if self._registered:
            self._registered = False
            with contextlib.suppress(BluezError):
                await self._call(
                    adapter, IFACE_GATT_MANAGER, "UnregisterApplication", "o", [APP_PATH]
                )

    # --- D-Bus plumbing ---------------------------------------------------------------------

    async def _connect(self) -> MessageBus:
        try:
            self._bus = await dbus_call.connect(self._bus_address)
        except dbus_call.DBusCallError as err:
            raise BluezError(
                f"cannot connect to the system D-Bus: {err.detail}", "check that dbus is running"
            ) from err
        return self._bus

    async def _bus_for_call(self) -> MessageBus:
        bus = self._bus
        if bus is None or not bus.connected:
            raise BluezError("the D-Bus connection is closed", "restart the agent")
        return bus

    async def _watch(self) -> None:
        """Subscribe to centrals disconnecting and to bluetoothd restarting."""
        bus = self._bus
        if bus is None:
            return
        bus.add_message_handler(self._on_signal)
        rules = (
            (
                f"type='signal',sender='{BLUEZ_BUS}',interface='{_IFACE_PROPERTIES}',"
                f"member='PropertiesChanged',arg0='{IFACE_DEVICE}'"
            ),
            (
                f"type='signal',sender='{BLUEZ_BUS}',interface='{_IFACE_OBJECT_MANAGER}',"
                "member='InterfacesRemoved'"
            ),
            (
                f"type='signal',sender='{_DBUS}',interface='{_DBUS}',"
                f"member='NameOwnerChanged',arg0='{BLUEZ_BUS}'"
            ),
        )
        for rule in rules:
            await self._call(
                "/org/freedesktop/DBus", _DBUS, "AddMatch", "s", [rule], destination=_DBUS
            )

    def _on_signal(self, message: Message) -> None:
        if message.message_type is not MessageType.SIGNAL or self._app is None:
            return
        member, body = message.member, message.body
        if member == "NameOwnerChanged" and body[0] == BLUEZ_BUS:
            self._spawn(self._bluez_restarted(new_owner=str(body[2])))
            return
        if member == "PropertiesChanged" and body[0] == IFACE_DEVICE:
            connected = body[1].get("Connected")
            gone = connected is not None and not connected.value
            path = message.path or ""
        elif member == "InterfacesRemoved" and IFACE_DEVICE in body[1]:
            gone, path = True, str(body[0])  # the device object itself was removed
        else:
            return
        if gone and path.startswith(f"{self._adapter}/"):
            _LOGGER.info("BLE central %s disconnected", path)
            self._app.link_closed(path)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name="iob-ble")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _bluez_restarted(self, *, new_owner: str) -> None:
        """The BlueZ daemon went away or came back: it forgot the application and adverts."""
        app = self._app
        if app is None:
            return
        self._registered = False
        for adv in self._adverts.values():
            adv.registered = False
        app.reset_notifications()
        app.all_links_closed()
        if not new_owner:
            _LOGGER.warning("bluetoothd stopped; BLE provisioning resumes when it is back")
            return
        _LOGGER.info("bluetoothd (re)started; registering BLE provisioning again")
        await self._sync_advertising()

    async def _register(self) -> None:
        if self._adapter is None:
            return
        await self._call(
            self._adapter, IFACE_GATT_MANAGER, "RegisterApplication", "oa{sv}", [APP_PATH, {}]
        )
        self._registered = True

    # --- advertisements ---------------------------------------------------------------------

    def _make_advertisements(self, server: ObjectServer) -> None:
        iob = Advertisement(
            f"{ADVERTISEMENT_PATH}/{_IOB}",
            self._iob_data(),
            emit=server.emit_properties_changed,
            on_release=self._released,
        )
        self._adverts[_IOB] = iob
        server.export(iob)
        if self.improv is not None:
            improv = Advertisement(
                f"{ADVERTISEMENT_PATH}/{_IMPROV}",
                _improv_data(self.improv.state),
                emit=server.emit_properties_changed,
                on_release=self._released,
            )
            self._adverts[_IMPROV] = improv
            server.export(improv)

    def _iob_data(self) -> AdvertisementData:
        return AdvertisementData(
            service_data={SERVICE_UUID: self.provisioning.status.service_data(self._device_id)},
            local_name=self.local_name,
        )

    def _released(self, path: str) -> None:
        _LOGGER.warning(
            "BlueZ dropped advertisement %s; registering it again within %.0f s",
            path,
            self._retry_seconds,
        )

    def _warn(self, what: str, err: BluezError) -> None:
        """Log a failure once (the retry loop tries again every few seconds)."""
        if err.message not in self._warned:
            self._warned.add(err.message)
            _LOGGER.warning("%s: %s", what, err)

    async def _ensure_registered(self) -> bool:
        """Register the application again after bluetoothd restarted (its adapter may be late)."""
        if self._registered:
            return True
        if self._app is None:
            return False
        try:
            self._adapter = await self.find_adapter(self._adapter_name)
            await self._register()
        except BluezError as err:
            self._warn("BLE provisioning not registered yet", err)
            return False
        self._warned.clear()
        _LOGGER.info("BLE provisioning registered again on %s", self._adapter)
        return True

    async def _sync_advertising(self) -> None:
        async with self._sync_lock:
            if not await self._ensure_registered():
                return
            wanted = {_IOB: (self._advertise, self._iob_data())}
            if self.improv is not None:
                wanted[_IMPROV] = (self.improv.advertised, _improv_data(self.improv.state))
            for key, (want, data) in wanted.items():
                adv = self._adverts.get(key)
                if adv is None:
                    continue
                # A withdrawn advertisement goes before its content changes: Bookworm's
                # bluetoothd (5.66) crashes when one it is refreshing from PropertiesChanged is
                # unregistered at once. Unregistered, the update emits nothing and the new
                # content is read at the next registration.
                if want:
                    adv.update(data)
                    await self._show(key, adv, want=True)
                else:
                    await self._show(key, adv, want=False)
                    adv.update(data)

    async def _show(self, key: str, adv: Advertisement, *, want: bool) -> None:
        """Register or unregister ``adv``; a refusal is a warning (the retry loop tries again)."""
        try:
            await self._set_registered(adv, want=want)
        except BluezError as err:
            self._warn(f"BLE advertisement {key}", err)

    async def _set_registered(self, adv: Advertisement, *, want: bool) -> None:
        if self._adapter is None or want == adv.registered:
            return
        if want:
            await self._call(
                self._adapter, IFACE_ADV_MANAGER, "RegisterAdvertisement", "oa{sv}", [adv.path, {}]
            )
            adv.registered = True
            _LOGGER.info("advertising %s", adv.path)
        else:
            adv.registered = False
            await self._call(
                self._adapter, IFACE_ADV_MANAGER, "UnregisterAdvertisement", "o", [adv.path]
            )
            _LOGGER.info("stopped advertising %s", adv.path)

    async def _advertisement_changed(self) -> None:
        if self._adverts:
            await self._sync_advertising()

    async def _retry(self) -> None:
        """Register again after bluetoothd restarted, if its adapter came back late."""
        while True:
            await asyncio.sleep(self._retry_seconds)
            await self._sync_advertising()


def ble_phase(phase: Phase) -> BlePhase:
    """The advertised number of an onboarding phase (same names)."""
    return BlePhase[phase.name]


_IOB: Final = "iot_onboard"
_IMPROV: Final = "improv"


def _improv_data(state: ImprovState) -> AdvertisementData:
    return AdvertisementData(
        service_uuids=(IMPROV_SERVICE_UUID,),
        service_data={IMPROV_SERVICE_DATA_UUID: improv_service_data(state)},
    )


def _bluez_error(err: dbus_call.DBusCallError) -> BluezError:
    name, member, text = err.error_name, err.member, err.detail
    if not name:
        return BluezError(f"D-Bus call {member} failed: {text}", _NEXT_STEP_BLUEZ)
    if name == "org.freedesktop.DBus.Error.ServiceUnknown":
        return BluezError("BlueZ (bluetoothd) is not running", _NEXT_STEP_BLUEZ, dbus_error=name)
    if name == "org.freedesktop.DBus.Error.AccessDenied":
        return BluezError(
            f"the D-Bus policy refuses {member}: {text}", _NEXT_STEP_POLICY, dbus_error=name
        )
    return BluezError(
        f"BlueZ refused {member}: {name} {text}".strip(), _NEXT_STEP_ADAPTER, dbus_error=name
    )
