"""python-dbusmock template: bluez5 plus a GATT server side that behaves like bluetoothd.

Runs inside the mock process (dbus-python). What it adds to the shipped ``bluez5`` template:

* ``org.bluez.GattManager1`` on adapters made with ``AddGattAdapter``. ``RegisterApplication``
  calls the application's ``GetManagedObjects`` back on the caller's connection (as
  bluetoothd's gatt-database does), validates services and characteristics like it (UUIDs,
  known flags, a characteristic's ``Service`` must be a service of the tree, at least one
  service) and answers only then; ``UnregisterApplication`` forgets it.
* ``LEAdvertisingManager1.RegisterAdvertisement`` reads the advertisement's properties with
  ``GetAll`` from the caller, refuses data that does not fit a 31-byte legacy advertisement
  (flags included; the local name goes to the scan response), and re-reads changed properties
  from ``PropertiesChanged`` as bluetoothd's advertising.c does.
* Centrals, driven by the test through ``org.bluez.Mock``: ``CentralWrite``/``CentralRead``
  call ``WriteValue``/``ReadValue`` with bluetoothd's options (``device``, ``mtu``, ``link``,
  ``offset`` when non-zero; a write to a characteristic that allows write without response is
  not waited for), ``CentralSubscribe`` calls ``StartNotify`` for the first subscriber, and
  ``PropertiesChanged`` on a characteristic's ``Value`` becomes a notification to every
  subscribed central, cut to its MTU - 3. ``DisconnectCentral`` drops a central as bluetoothd
  does: ``Device1.Connected`` goes false and ``StopNotify`` follows for the last subscriber.
"""

# D-Bus method names, and dbus-python's calling convention (every argument by position, the
# object and unused options included):
# ruff: noqa: N802, PLR0917, ARG001

import re
from collections.abc import Callable
from typing import Any, TypeVar

import dbus
import dbus.service
from dbusmock import mockobject
from dbusmock.templates import bluez5
from dbusmock.templates.bluez5 import (  # noqa: F401 - re-exported as mock methods
    AddAdapter,
    AddDevice,
    BlockDevice,
    ConnectDevice,
    DisconnectDevice,
    PairDevice,
    RemoveAdapter,
)

BUS_NAME = bluez5.BUS_NAME
MAIN_OBJ = bluez5.MAIN_OBJ
SYSTEM_BUS = True
IS_OBJECT_MANAGER = True

MOCK_IFACE = bluez5.BLUEZ_MOCK_IFACE
GATT_MANAGER_IFACE = "org.bluez.GattManager1"
ADV_MANAGER_IFACE = bluez5.LE_ADVERTISING_MANAGER_IFACE
ADV_IFACE = bluez5.LE_ADVERTISEMENT_IFACE
SERVICE_IFACE = "org.bluez.GattService1"
CHRC_IFACE = "org.bluez.GattCharacteristic1"
PROPS_IFACE = "org.freedesktop.DBus.Properties"
OM_IFACE = "org.freedesktop.DBus.ObjectManager"
DEVICE_IFACE = bluez5.DEVICE_IFACE

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
BASE_TAIL = "-0000-1000-8000-00805f9b34fb"
FLAGS = {
    "broadcast",
    "read",
    "write-without-response",
    "write",
    "notify",
    "indicate",
    "authenticated-signed-writes",
    "extended-properties",
    "reliable-write",
    "writable-auxiliaries",
    "encrypt-read",
    "encrypt-write",
    "encrypt-notify",
    "encrypt-indicate",
    "encrypt-authenticated-read",
    "encrypt-authenticated-write",
    "secure-read",
    "secure-write",
    "authorize",
}
LEGACY_ADV = 31
_F = TypeVar("_F", bound=Callable[..., Any])


def dbus_method(interface: str, **options: Any) -> Callable[[_F], _F]:
    """``dbus.service.method``, typed for mypy (dbus-python ships no type hints)."""
    decorator: Callable[[_F], _F] = dbus.service.method(interface, **options)
    return decorator


def load(mock: Any, parameters: Any) -> None:
    bluez5.load(mock, parameters)


def _failed(text: str, name: str = "org.bluez.Error.Failed") -> Any:
    return dbus.exceptions.DBusException(text, name=name)


def _adapter(name: str) -> Any:
    path = "/org/bluez/" + name
    if path not in mockobject.objects:
        raise _failed("no adapter " + name, MOCK_IFACE + ".NoSuchAdapter")
    return mockobject.objects[path]


def _uuid_size(uuid: str) -> int:
    if not UUID_RE.fullmatch(uuid):
        raise ValueError("invalid UUID " + uuid)
    if uuid.endswith(BASE_TAIL):
        return 2 if int(uuid[:8], 16) <= 0xFFFF else 4
    return 16


# --- GATT applications --------------------------------------------------------------------------


def _validate_application(objects: Any) -> dict[str, dict[str, Any]]:
    """Services and characteristics of a GetManagedObjects answer, as bluetoothd checks them."""
    services: dict[str, str] = {}
    characteristics: dict[str, dict[str, Any]] = {}
    for path, interfaces in objects.items():
        if SERVICE_IFACE in interfaces:
            props = interfaces[SERVICE_IFACE]
            uuid = str(props.get("UUID", ""))
            _uuid_size(uuid)
            if "Primary" not in props:
                raise ValueError(f"service {path} has no Primary property")
            services[str(path)] = uuid
    for path, interfaces in objects.items():
        if CHRC_IFACE in interfaces:
            props = interfaces[CHRC_IFACE]
            uuid = str(props.get("UUID", ""))
            _uuid_size(uuid)
            service = str(props.get("Service", ""))
            if service not in services:
                raise ValueError(f"characteristic {path}: unknown service {service}")
            flags = [str(flag) for flag in props.get("Flags", [])]
            if not flags or set(flags) - FLAGS:
                raise ValueError(f"characteristic {path}: bad flags {flags}")
            characteristics[str(path)] = {
                "uuid": uuid,
                "service": services[service],
                "flags": flags,
            }
    if not services:
        raise ValueError("No valid service object found")
    return characteristics


@dbus_method(
    GATT_MANAGER_IFACE,
    in_signature="oa{sv}",
    out_signature="",
    sender_keyword="sender",
    async_callbacks=("ok", "err"),
)
def RegisterApplication(
    adapter: Any, app_path: str, options: Any, sender: Any = None, ok: Any = None, err: Any = None
) -> None:
    key = (str(sender), str(app_path))
    if key in adapter.gatt_apps:
        err(_failed("Already Exists", "org.bluez.Error.AlreadyExists"))
        return

    def received(objects: Any) -> None:
        try:
            characteristics = _validate_application(objects)
        except ValueError as error:
            err(_failed(str(error)))
            return
        adapter.gatt_apps[key] = characteristics
        _watch(adapter, str(sender))
        ok()

    def failed(error: Any) -> None:
        err(_failed("No object received: " + str(error)))

    adapter.connection.call_async(
        str(sender),
        str(app_path),
        OM_IFACE,
        "GetManagedObjects",
        "",
        (),
        received,
        failed,
        byte_arrays=True,
    )


@dbus_method(GATT_MANAGER_IFACE, in_signature="o", out_signature="", sender_keyword="sender")
def UnregisterApplication(adapter: Any, app_path: str, sender: Any = None) -> None:
    if adapter.gatt_apps.pop((str(sender), str(app_path)), None) is None:
        raise _failed("Does Not Exist", "org.bluez.Error.DoesNotExist")


def _watch(adapter: Any, sender: str) -> None:
    """Follow the application's PropertiesChanged like bluetoothd's GDBusClient proxies."""
    if sender in adapter.watched:
        return

    def changed(interface: str, props: Any, _invalidated: Any, path: Any = None) -> None:
        path = str(path)
        if interface == CHRC_IFACE and "Value" in props:
            _notify(adapter, path, bytes(props["Value"]))
        elif interface == ADV_IFACE and (sender, path) in adapter.adverts:
            updated = dict(adapter.adverts[(sender, path)])
            updated.update(props)
            try:
                _advertising_length(updated)
            except ValueError:
                return  # bluetoothd keeps the old data when a refresh fails
            adapter.adverts[(sender, path)] = updated

    adapter.watched[sender] = adapter.connection.add_signal_receiver(
        changed,
        signal_name="PropertiesChanged",
        dbus_interface=PROPS_IFACE,
        bus_name=sender,
        path_keyword="path",
        byte_arrays=True,
    )


def _find(adapter: Any, uuid: str) -> tuple[str, str, dict[str, Any]]:
    for (sender, _app), characteristics in adapter.gatt_apps.items():
        for path, info in characteristics.items():
            if info["uuid"] == uuid:
                return str(sender), str(path), info
    raise _failed("no registered characteristic " + uuid, MOCK_IFACE + ".NoSuchCharacteristic")


def _notify(adapter: Any, path: str, value: bytes) -> None:
    for (device, char_path), mtu in adapter.subscriptions.items():
        if char_path == path:
            adapter.notifications.append((device, path, value[: mtu - 3]))


# --- advertisements -------------------------------------------------------------------------


def _advertising_length(props: Any) -> int:
    """Bytes of the advertising PDU bluetoothd would build; ValueError if over 31."""
    if str(props.get("Type", "")) not in {"peripheral", "broadcast"}:
        raise ValueError("bad Type")
    size = 3 if bool(props.get("Discoverable", False)) else 0
    widths: dict[int, int] = {}
    for uuid in props.get("ServiceUUIDs", []):
        width = _uuid_size(str(uuid))
        widths[width] = widths.get(width, 0) + width
    size += sum(2 + total for total in widths.values())
    for uuid, data in dict(props.get("ServiceData", {})).items():
        size += 2 + _uuid_size(str(uuid)) + len(bytes(data))
    for data in dict(props.get("ManufacturerData", {})).values():
        size += 2 + 2 + len(bytes(data))
    scan_response = 2 + len(str(props["LocalName"]).encode()) if props.get("LocalName") else 0
    if size > LEGACY_ADV or scan_response > LEGACY_ADV:
        raise ValueError(f"advertising data of {size} bytes")
    return size


@dbus_method(
    ADV_MANAGER_IFACE,
    in_signature="oa{sv}",
    out_signature="",
    sender_keyword="sender",
    async_callbacks=("ok", "err"),
)
def RegisterAdvertisementChecked(
    adapter: Any, adv_path: str, options: Any, sender: Any = None, ok: Any = None, err: Any = None
) -> None:
    key = (str(sender), str(adv_path))
    if key in adapter.adverts:
        err(_failed("Already Exists", "org.bluez.Error.AlreadyExists"))
        return
    if len(adapter.adverts) >= bluez5.MAX_ADVERTISEMENT_INSTANCES:
        err(_failed("Maximum advertisements reached", "org.bluez.Error.NotPermitted"))
        return

    def received(props: Any) -> None:
        try:
            _advertising_length(props)
        except ValueError:
            err(_failed("Failed to parse advertisement."))
            return
        adapter.adverts[key] = dict(props)
        _watch(adapter, str(sender))
        adapter.UpdateProperties(
            ADV_MANAGER_IFACE, {"ActiveInstances": dbus.Byte(len(adapter.adverts))}
        )
        ok()

    adapter.connection.call_async(
        str(sender),
        str(adv_path),
        PROPS_IFACE,
        "GetAll",
        "s",
        (ADV_IFACE,),
        received,
        lambda error: err(_failed("Failed to parse advertisement: " + str(error))),
        byte_arrays=True,
    )


@dbus_method(ADV_MANAGER_IFACE, in_signature="o", out_signature="", sender_keyword="sender")
def UnregisterAdvertisementChecked(adapter: Any, adv_path: str, sender: Any = None) -> None:
    if adapter.adverts.pop((str(sender), str(adv_path)), None) is None:
        raise _failed("Does Not Exist", "org.bluez.Error.DoesNotExist")
    adapter.UpdateProperties(
        ADV_MANAGER_IFACE, {"ActiveInstances": dbus.Byte(len(adapter.adverts))}
    )


# --- test control ---------------------------------------------------------------------------


@dbus_method(MOCK_IFACE, in_signature="ss", out_signature="s")
def AddGattAdapter(self: Any, device_name: str, system_name: str) -> str:
    """An adapter with GattManager1 and the checking advertising manager."""
    path = str(AddAdapter(self, device_name, system_name))
    adapter = mockobject.objects[path]
    adapter.gatt_apps = {}
    adapter.adverts = {}
    adapter.watched = {}
    adapter.subscriptions = {}  # (device path, characteristic path) -> MTU
    adapter.notifications = []  # (device path, characteristic path, value)
    adapter.props[GATT_MANAGER_IFACE] = dbus.Dictionary({}, signature="sv")
    adapter.methods[GATT_MANAGER_IFACE] = {
        "RegisterApplication": ("oa{sv}", "", "", RegisterApplication),
        "UnregisterApplication": ("o", "", "", UnregisterApplication),
    }
    adapter.methods[ADV_MANAGER_IFACE]["RegisterAdvertisement"] = (
        "oa{sv}",
        "",
        "",
        RegisterAdvertisementChecked,
    )
    adapter.methods[ADV_MANAGER_IFACE]["UnregisterAdvertisement"] = (
        "o",
        "",
        "",
        UnregisterAdvertisementChecked,
    )
    return path


@dbus_method(MOCK_IFACE, in_signature="s", out_signature="a(sssas)")
def GetCharacteristics(self: Any, adapter_name: str) -> list[Any]:
    """(path, UUID, service UUID, flags) of every registered characteristic."""
    adapter = _adapter(adapter_name)
    return [
        (path, info["uuid"], info["service"], info["flags"])
        for characteristics in adapter.gatt_apps.values()
        for path, info in sorted(characteristics.items())
    ]


@dbus_method(MOCK_IFACE, in_signature="s", out_signature="a{sa{sv}}")
def GetAdvertisements(self: Any, adapter_name: str) -> dict[str, Any]:
    """Registered advertisements (object path → properties as bluetoothd holds them)."""
    adapter = _adapter(adapter_name)
    return {path: props for (_sender, path), props in adapter.adverts.items()}


def _device_path(adapter_name: str, address: str) -> str:
    return "/org/bluez/" + adapter_name + "/dev_" + address.replace(":", "_").upper()


@dbus_method(MOCK_IFACE, in_signature="sssayqq", out_signature="", async_callbacks=("ok", "err"))
def CentralWrite(
    self: Any,
    adapter_name: str,
    address: str,
    uuid: str,
    value: bytes,
    mtu: int,
    offset: int,
    ok: Any = None,
    err: Any = None,
) -> None:
    """A central writes; waits for the application unless bluetoothd would not."""
    adapter = _adapter(adapter_name)
    sender, path, info = _find(adapter, uuid)
    options = {
        "device": dbus.ObjectPath(_device_path(adapter_name, address)),
        "link": "LE",
        "mtu": dbus.UInt16(mtu),
    }
    if offset:
        options["offset"] = dbus.UInt16(offset)
    args = (dbus.ByteArray(bytes(value)), dbus.Dictionary(options, signature="sv"))
    if "write-without-response" in info["flags"]:
        adapter.connection.call_async(
            sender, path, CHRC_IFACE, "WriteValue", "aya{sv}", args, lambda: None, lambda _e: None
        )
        ok()
        return
    adapter.connection.call_async(sender, path, CHRC_IFACE, "WriteValue", "aya{sv}", args, ok, err)


@dbus_method(MOCK_IFACE, in_signature="sssqq", out_signature="ay", async_callbacks=("ok", "err"))
def CentralRead(
    self: Any,
    adapter_name: str,
    address: str,
    uuid: str,
    offset: int,
    mtu: int,
    ok: Any = None,
    err: Any = None,
) -> None:
    adapter = _adapter(adapter_name)
    sender, path, _info = _find(adapter, uuid)
    options = {
        "device": dbus.ObjectPath(_device_path(adapter_name, address)),
        "link": "LE",
        "mtu": dbus.UInt16(mtu),
    }
    if offset:
        options["offset"] = dbus.UInt16(offset)
    adapter.connection.call_async(
        sender,
        path,
        CHRC_IFACE,
        "ReadValue",
        "a{sv}",
        (dbus.Dictionary(options, signature="sv"),),
        lambda value: ok(dbus.ByteArray(bytes(value))),
        err,
        byte_arrays=True,
    )


@dbus_method(MOCK_IFACE, in_signature="sssq", out_signature="", async_callbacks=("ok", "err"))
def CentralSubscribe(
    self: Any, adapter_name: str, address: str, uuid: str, mtu: int, ok: Any = None, err: Any = None
) -> None:
    """A central enables notifications; the first one makes bluetoothd call StartNotify."""
    adapter = _adapter(adapter_name)
    sender, path, _info = _find(adapter, uuid)
    first = all(char_path != path for (_device, char_path) in adapter.subscriptions)
    adapter.subscriptions[(_device_path(adapter_name, address), path)] = int(mtu)
    if not first:
        ok()
        return
    adapter.connection.call_async(sender, path, CHRC_IFACE, "StartNotify", "", (), ok, err)


@dbus_method(MOCK_IFACE, in_signature="ss", out_signature="")
def DisconnectCentral(self: Any, adapter_name: str, address: str) -> None:
    """The link drops: Connected goes false, subscriptions end, StopNotify for the last one."""
    adapter = _adapter(adapter_name)
    device = _device_path(adapter_name, address)
    DisconnectDevice(self, adapter_name, address)
    dropped = [key for key in adapter.subscriptions if key[0] == device]
    for key in dropped:
        del adapter.subscriptions[key]
        path = key[1]
        if all(char_path != path for (_device, char_path) in adapter.subscriptions):
            for sender, characteristics in adapter.gatt_apps.items():
                if path in characteristics:
                    adapter.connection.call_async(
                        sender[0],
                        path,
                        CHRC_IFACE,
                        "StopNotify",
                        "",
                        (),
                        lambda: None,
                        lambda _e: None,
                    )


@dbus_method(MOCK_IFACE, in_signature="sss", out_signature="aay")
def TakeNotifications(self: Any, adapter_name: str, address: str, uuid: str) -> list[Any]:
    """Notifications a central received for ``uuid`` since the last call, in order."""
    adapter = _adapter(adapter_name)
    device = _device_path(adapter_name, address)
    _sender, path, _info = _find(adapter, uuid)
    taken = [
        value
        for (dev, char_path, value) in adapter.notifications
        if (dev, char_path) == (device, path)
    ]
    adapter.notifications = [
        item for item in adapter.notifications if (item[0], item[1]) != (device, path)
    ]
    return [dbus.ByteArray(value) for value in taken]
