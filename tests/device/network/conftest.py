"""A private system bus with python-dbusmock's NetworkManager template, per test.

The template has devices, access points, profiles and activation, but no state machine: an
activation jumps straight to ACTIVATED, and it leaves the device's previous active connection
listed (so deleting that old profile later disconnects the device). The fixture replaces
``ActivateConnection``: the previous active connection is removed first, as NetworkManager
does, and :meth:`NetworkManagerMock.fail_activation` makes chosen SSIDs walk NetworkManager's
failure path instead (PREPARE -> CONFIG -> NEED_AUTH -> FAILED with a reason -> DISCONNECTED),
emitting the same ``Device.StateChanged`` signals. The mock and the bus daemon are stopped by
pid after each test.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Any

import dbus
import dbusmock
import pytest

from device_firmware.network.networkmanager import (
    IFACE_ACTIVE,
    IFACE_AP,
    IFACE_CONNECTION,
    IFACE_DEVICE,
    IFACE_NM,
    IFACE_SETTINGS,
    IFACE_WIRELESS,
    NM_BUS,
    NM_PATH,
    ROLE_KEY,
    SETTINGS_PATH,
    NetworkManagerBackend,
)

DISCONNECTED = 30

# Runs inside the mock process (python-dbusmock execs it with ``self``, ``args``, ``objects``).
_ACTIVATE = """
plans = {plans!r}
times = {times!r}
conn = objects[args[0]]
ssid = bytes(bytearray(conn.settings.get("802-11-wireless", {{}}).get("ssid", [])))
plan = plans.get(ssid)
if plan is not None and times:
    failed = getattr(self, "iob_failed", {{}})
    self.iob_failed = failed
    if failed.get(ssid, 0) >= times:
        plan = None
    else:
        failed[ssid] = failed.get(ssid, 0) + 1
dev = objects[args[1]]
iface = "org.freedesktop.NetworkManager.Device"
previous = dev.Get(iface, "ActiveConnection")
if previous != "/":
    # A device has one active connection: NetworkManager deactivates the old one first.
    self.RemoveActiveConnection(args[1], previous)
if plan is None:
    ret = self.activate_connection(self, args[0], args[1], args[2])
else:
    old = dev.Get(iface, "State")
    for new, reason in plan:
        dev.Set(iface, "State", dbus.UInt32(new))
        dev.Set(iface, "StateReason", (dbus.UInt32(new), dbus.UInt32(reason)))
        dev.EmitSignal(iface, "StateChanged", "uuu",
                       [dbus.UInt32(new), dbus.UInt32(old), dbus.UInt32(reason)])
        old = new
    ret = dbus.ObjectPath("/org/freedesktop/NetworkManager/ActiveConnection/failed")
"""


class NetworkManagerMock:
    """Drives the dbusmock NetworkManager from tests (blocking dbus-python calls)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._bus = dbus.bus.BusConnection(address)

    def _mock(self, path: str) -> dbus.Interface:
        return dbus.Interface(self._bus.get_object(NM_BUS, path), dbusmock.MOCK_IFACE)

    def _iface(self, path: str, interface: str) -> dbus.Interface:
        return dbus.Interface(self._bus.get_object(NM_BUS, path), interface)

    def get(self, path: str, interface: str, name: str) -> Any:
        return self._iface(path, dbus.PROPERTIES_IFACE).Get(interface, name)

    # --- world --------------------------------------------------------------------------------

    def add_wifi_device(self, name: str = "wlan0", state: int = DISCONNECTED) -> str:
        return str(self._mock("/org/freedesktop").AddWiFiDevice(f"{name}dev", name, state))

    def add_ethernet_device(self, name: str = "eth0") -> str:
        return str(self._mock("/org/freedesktop").AddEthernetDevice(f"{name}dev", name, 30))

    def add_access_point(
        self,
        device: str,
        name: str,
        ssid: bytes,
        *,
        strength: int = 70,
        security: int = 0x108,  # WPA2-PSK with CCMP; 0 for open
        frequency: int = 2437,
    ) -> str:
        path = str(
            self._mock("/org/freedesktop").AddAccessPoint(
                device,
                name,
                "placeholder",
                "00:11:22:33:44:55",
                2,
                frequency,
                54000,
                dbus.Byte(strength),
                security,
            )
        )
        # AddAccessPoint takes the SSID as text; real SSIDs are bytes, set them as such.
        self._mock(path).UpdateProperties(IFACE_AP, {"Ssid": dbus.ByteArray(ssid, variant_level=1)})
        return path

    def set_ap_flags(self, path: str, flags: int) -> None:
        """The access point's NM80211ApFlags (0x4: a WPS push-button session runs)."""
        self._mock(path).UpdateProperties(IFACE_AP, {"Flags": dbus.UInt32(flags, variant_level=1)})

    def add_profile(self, ssid: bytes, *, role: str | None = None, name: str = "") -> str:
        settings: dict[str, Any] = {
            "connection": {
                "id": name or ssid.decode(errors="replace"),
                "type": "802-11-wireless",
                "autoconnect": dbus.Boolean(True),
            },
            "802-11-wireless": {"ssid": dbus.ByteArray(ssid), "mode": "infrastructure"},
            "ipv4": {"method": "auto"},
        }
        if role is not None:
            settings["user"] = {"data": dbus.Dictionary({ROLE_KEY: role}, signature="ss")}
        return str(
            self._iface(SETTINGS_PATH, IFACE_SETTINGS).AddConnection(
                dbus.Dictionary(settings, signature="sa{sv}")
            )
        )

    def add_object(
        self, path: str, interface: str, methods: list[tuple[str, str, str, str]]
    ) -> None:
        """An object the template lacks (``AddObject``: name, in and out signature, code)."""
        self._mock("/org/freedesktop").AddObject(path, interface, {}, methods)

    def activate(self, profile: str, device: str) -> str:
        return str(self._iface(NM_PATH, IFACE_NM).ActivateConnection(profile, device, "/"))

    def fail_activation(self, plans: dict[bytes, list[tuple[int, int]]], *, times: int = 0) -> None:
        """Make activations of these SSIDs fail with the given (state, reason) steps (the
        first ``times`` of each, or every one)."""
        plain = {ssid: [(int(s), int(r)) for s, r in steps] for ssid, steps in plans.items()}
        self._mock(NM_PATH).AddMethod(
            IFACE_NM, "ActivateConnection", "ooo", "o", _ACTIVATE.format(plans=plain, times=times)
        )

    def change_security_on_scan(self, device: str, access_point: str, rsn_flags: int) -> None:
        """The next scan of ``device`` finds ``access_point`` with other RSN flags (its router
        was reconfigured since the last scan)."""
        code = f"objects[{access_point!r}].Set({IFACE_AP!r}, 'RsnFlags', dbus.UInt32({rsn_flags}))"
        self._mock(device).AddMethod(IFACE_WIRELESS, "RequestScan", "a{sv}", "", code)

    def set_connectivity(self, state: int) -> None:
        self._mock("/org/freedesktop").SetConnectivity(state)

    def set_connectivity_check(self, *, available: bool, enabled: bool = True) -> None:
        """NetworkManager's ConnectivityCheckAvailable (a check URL is configured) and
        ConnectivityCheckEnabled; the template has neither (as NetworkManager before 1.10)."""
        mock = self._mock(NM_PATH)
        for name, value in (
            ("ConnectivityCheckAvailable", available),
            ("ConnectivityCheckEnabled", enabled),
        ):
            try:
                mock.AddProperty(IFACE_NM, name, dbus.Boolean(value))
            except dbus.exceptions.DBusException:
                mock.UpdateProperties(IFACE_NM, {name: dbus.Boolean(value)})

    # --- observation --------------------------------------------------------------------------

    def profiles(self) -> list[str]:
        return [str(p) for p in self._iface(SETTINGS_PATH, IFACE_SETTINGS).ListConnections()]

    def settings(self, profile: str) -> dict[str, dict[str, Any]]:
        return dict(self._iface(profile, IFACE_CONNECTION).GetSettings())

    def active_profile(self, device: str) -> str | None:
        active = str(self.get(device, IFACE_DEVICE, "ActiveConnection"))
        if active == "/":
            return None
        return str(self.get(active, IFACE_ACTIVE, "Connection"))

    def calls(self, path: str, method: str) -> list[Any]:
        return list(self._mock(path).GetMethodCalls(method))

    def close(self) -> None:
        self._bus.close()


@pytest.fixture
def nm_mock(system_bus: str) -> Iterator[NetworkManagerMock]:
    """The NetworkManager mock on a private system bus; stopped by pid afterwards."""
    mock = dbusmock.SpawnedMock.spawn_with_template(
        "networkmanager",
        {},
        dbusmock.BusType.SYSTEM,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    controller = NetworkManagerMock(system_bus)
    controller.fail_activation({})
    try:
        yield controller
    finally:
        controller.close()
        mock.terminate()  # by the mock's pid


@pytest.fixture
async def backend(nm_mock: NetworkManagerMock) -> AsyncIterator[NetworkManagerBackend]:
    """The backend under test, on the private bus, with probes that cannot leave loopback."""
    nm = NetworkManagerBackend(
        bus_address=nm_mock.address,
        internet_probes=(),
        activation_timeout=10,
        rollback_timeout=10,
        scan_timeout=2,
    )
    try:
        yield nm
    finally:
        await nm.aclose()
