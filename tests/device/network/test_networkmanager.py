"""NetworkManagerBackend against a real dbus-daemon running python-dbusmock's NetworkManager."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Final, NoReturn

import pytest
from iob_protocol.diagnostics import DiagnosticCode

from device_firmware.network.backend import AccessPoint, NetworkError, WifiCredentials
from device_firmware.network.networkmanager import (
    FAULT_CODE,
    IFACE_NM,
    NM_PATH,
    PORTAL_PROBE_EXPECTED,
    ROLE_KEY,
    SETTINGS_PATH,
    NetworkManagerBackend,
    NetworkManagerError,
    NMStateReason,
    diagnostic_for_reason,
    hotspot_channel,
)

from .conftest import NetworkManagerMock

PREPARE, CONFIG, NEED_AUTH, IP_CONFIG, FAILED, DISCONNECTED = 40, 50, 60, 70, 120, 30
HOME = WifiCredentials(ssid=b"HomeNet", passphrase="correct horse battery")  # noqa: S106


def _world(nm: NetworkManagerMock) -> tuple[str, str]:
    """A Wi-Fi device connected to a user-made profile "OldNet", with HomeNet in range."""
    device = nm.add_wifi_device()
    nm.add_access_point(device, "home", b"HomeNet", strength=80)
    nm.add_access_point(device, "old", b"OldNet", strength=60)
    old = nm.add_profile(b"OldNet")
    nm.activate(old, device)
    return device, old


def _active(nm: NetworkManagerMock, device: str) -> str:
    profile = nm.active_profile(device)
    assert profile is not None, "the device has no active connection"
    return profile


def _role(settings: dict[str, dict[str, object]]) -> str | None:
    data = settings.get("user", {}).get("data")
    return None if data is None else str(data[ROLE_KEY])  # type: ignore[index]


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        (NMStateReason.NO_SECRETS, DiagnosticCode.WIFI_AUTH_FAILED),
        (NMStateReason.SUPPLICANT_DISCONNECT, DiagnosticCode.WIFI_AUTH_FAILED),
        (NMStateReason.SUPPLICANT_TIMEOUT, DiagnosticCode.WIFI_AUTH_FAILED),
        (NMStateReason.SSID_NOT_FOUND, DiagnosticCode.WIFI_AP_NOT_FOUND),
        (NMStateReason.IP_CONFIG_UNAVAILABLE, DiagnosticCode.DHCP_TIMEOUT),
        (NMStateReason.DHCP_FAILED, DiagnosticCode.DHCP_TIMEOUT),
        (NMStateReason.UNKNOWN, DiagnosticCode.WIFI_AP_NOT_FOUND),
        (36, DiagnosticCode.WIFI_AP_NOT_FOUND),  # CARRIER: a radio-level failure
    ],
)
def test_reason_mapping(reason: int, code: DiagnosticCode) -> None:
    assert diagnostic_for_reason(reason) is code


async def test_scan_lists_strongest_bss_per_ssid_with_bytes_ssids(
    nm_mock: NetworkManagerMock, backend: NetworkManagerBackend
) -> None:
    device = nm_mock.add_wifi_device()
    nm_mock.add_access_point(device, "a", b"HomeNet", strength=40, frequency=5180)
    nm_mock.add_access_point(device, "b", b"HomeNet", strength=75, frequency=2437)
    nm_mock.add_access_point(device, "c", b"caf\xe9 \xff", strength=55, security=0)
    nm_mock.add_access_point(device, "d", b"", strength=99)  # hidden: not listed

    networks = await backend.scan()

    assert networks == [
        AccessPoint(ssid=b"HomeNet", strength=75, secured=True, frequency_mhz=2437),
        AccessPoint(ssid=b"caf\xe9 \xff", strength=55, secured=False, frequency_mhz=2437),
    ]
    assert len(nm_mock.calls(device, "RequestScan")) == 1


async def test_connect_keeps_previous_profile_and_activates_trial(
    nm_mock: NetworkManagerMock, backend: NetworkManagerBackend
) -> None:
    device, old = _world(nm_mock)

    await backend.connect(HOME)

    trial = _active(nm_mock, device)
    assert trial not in {None, old}
    settings = nm_mock.settings(trial)
    assert bytes(settings["802-11-wireless"]["ssid"]) == b"HomeNet"
    assert not bool(settings["connection"]["autoconnect"])
    assert settings["802-11-wireless-security"]["key-mgmt"] == "wpa-psk"
    assert _role(settings) == "trial"
    assert old in nm_mock.profiles()  # the previous configuration is untouched
    # Unsaved: a power cut during the trial reboots into the old configuration.
    assert len(nm_mock.calls(SETTINGS_PATH, "AddConnectionUnsaved")) == 1
    assert len(nm_mock.calls(SETTINGS_PATH, "AddConnection")) == 1  # the test's own OldNet
    assert await backend.wifi_connected()


async def test_wrong_password_is_wifi_auth_failed_and_rollback_restores(
    nm_mock: NetworkManagerMock, backend: NetworkManagerBackend
) -> None:
    device, old = _world(nm_mock)
    nm_mock.fail_activation(
        {
            b"HomeNet": [
                (PREPARE, 0),
                (CONFIG, 0),
                (NEED_AUTH, NMStateReason.SUPPLICANT_DISCONNECT),
                (FAILED, NMStateReason.NO_SECRETS),
                (DISCONNECTED, NMStateReason.NO_SECRETS),
            ]
        }
    )

    with pytest.raises(NetworkError) as caught:
        await backend.connect(HOME)
    assert caught.value.code is DiagnosticCode.WIFI_AUTH_FAILED
    assert "NO_SECRETS" in caught.value.detail
    assert str(HOME.passphrase) not in str(caught.value)
    assert nm_mock.active_profile(device) is None  # the old connection went down for the trial

    await backend.rollback()

    assert nm_mock.active_profile(device) == old
    assert nm_mock.profiles() == [old]  # the trial profile is gone


WRONG_PASSWORD_STEPS: Final = [
    (PREPARE, 0),
    (CONFIG, 0),
    (NEED_AUTH, NMStateReason.SUPPLICANT_DISCONNECT),
    (FAILED, NMStateReason.NO_SECRETS),
    (DISCONNECTED, NMStateReason.NO_SECRETS),
]


@pytest.mark.parametrize("reconfigured", [True, False], ids=["reconfigured", "unchanged"])
async def test_a_router_that_changed_its_security_is_joined_once_more(
    nm_mock: NetworkManagerMock, backend: NetworkManagerBackend, *, reconfigured: bool
) -> None:
    """The VM stage's Trixie, a WPA2/WPA3 router just switched from WPA2: the supplicant found
    the router's keys unlike its last scan ("IE in 3/4 msg does not match"), NetworkManager
    said missing secrets, and the device blamed the password. Now a refused join scans afresh;
    only if the network's security changed is it joined once more (and succeeds), else it stays
    WIFI_AUTH_FAILED after one join."""
    device = nm_mock.add_wifi_device()
    point = nm_mock.add_access_point(device, "home", b"HomeNet", security=0x108)  # WPA2
    old = nm_mock.add_profile(b"OldNet")
    nm_mock.activate(old, device)
    nm_mock.fail_activation({b"HomeNet": WRONG_PASSWORD_STEPS}, times=1 if reconfigured else 0)
    # Reconfigured: WPA2/WPA3 (PSK and SAE) since the scan the join relied on.
    nm_mock.change_security_on_scan(device, point, 0x508 if reconfigured else 0x108)

    if reconfigured:
        await backend.connect(HOME)
        trial = _active(nm_mock, device)
        assert bytes(nm_mock.settings(trial)["802-11-wireless"]["ssid"]) == b"HomeNet"
        assert nm_mock.profiles() == [old, trial]  # the first trial's profile is gone
    else:
        with pytest.raises(NetworkError) as caught:
            await backend.connect(HOME)
        assert caught.value.code is DiagnosticCode.WIFI_AUTH_FAILED
    assert len(nm_mock.calls(device, "RequestScan")) == 1
    joins = nm_mock.calls(NM_PATH, "ActivateConnection")
    assert len(joins) == (3 if reconfigured else 2)  # the test's own OldNet, then the trials


async def test_missing_access_point_is_wifi_ap_not_found(
    nm_mock: NetworkManagerMock, backend: NetworkManagerBackend
) -> None:
    _world(nm_mock)
    nm_mock.fail_activation(
        {b"Elsewhere": [(PREPARE, 0), (FAILED, NMStateReason.SSID_NOT_FOUND), (DISCONNECTED, 0)]}
    )
    with pytest.raises(NetworkError) as caught:
        await backend.connect(WifiCredentials(ssid=b"Elsewhere", passphrase="whatever-123"))  # noqa: S106
    assert caught.value.code is DiagnosticCode.WIFI_AP_NOT_FOUND


async def test_dhcp_failure_is_dhcp_timeout(
    nm_mock: NetworkManagerMock, backend: NetworkManagerBackend
) -> None:
    _world(nm_mock)
    nm_mock.fail_activation(
        {
            b"HomeNet": [
                (PREPARE, 0),
                (CONFIG, 0),
                (IP_CONFIG, 0),
                (FAILED, NMStateReason.IP_CONFIG_UNAVAILABLE),
                (DISCONNECTED, 0),
            ]
        }
    )
    with pytest.raises(NetworkError) as caught:
        await backend.connect(HOME)
    assert caught.value.code is DiagnosticCode.DHCP_TIMEOUT


async def test_failure_reason_read_from_property_when_signal_has_none(
    nm_mock: NetworkManagerMock, backend: NetworkManagerBackend
) -> None:
    _world(nm_mock)
    # The signal says UNKNOWN; the StateReason property (set to the last step) has the cause.
    nm_mock.fail_activation({b"HomeNet": [(PREPARE, 0), (FAILED, NMStateReason.UNKNOWN)]})
    with pytest.raises(NetworkError) as caught:
        await backend.connect(HOME)
    assert caught.value.code is DiagnosticCode.WIFI_AP_NOT_FOUND


async def test_rollback_after_successful_trial_restores_previous(
    nm_mock: NetworkManagerMock, backend: NetworkManagerBackend
) -> None:
    device, old = _world(nm_mock)
    await backend.connect(HOME)
    assert nm_mock.active_profile(device) != old

    await backend.rollback()

    assert nm_mock.active_profile(device) == old
    assert nm_mock.profiles() == [old]
    await backend.rollback()  # idempotent: nothing left to undo
    assert nm_mock.active_profile(device) == old


async def test_rollback_without_previous_connection_only_drops_trial(
    nm_mock: NetworkManagerMock, backend: NetworkManagerBackend
) -> None:
    device = nm_mock.add_wifi_device()
    nm_mock.add_access_point(device, "home", b"HomeNet")
    await backend.connect(HOME)
    await backend.rollback()
    assert nm_mock.profiles() == []
    assert nm_mock.active_profile(device) is None


async def test_second_attempt_keeps_the_original_previous(
    nm_mock: NetworkManagerMock, backend: NetworkManagerBackend
) -> None:
    device, old = _world(nm_mock)
    await backend.connect(WifiCredentials(ssid=b"HomeNet", passphrase="first-try-1"))  # noqa: S106
    await backend.connect(HOME)  # the user retyped the passphrase
    assert len(nm_mock.profiles()) == 2  # old + one trial, the first trial was replaced
    await backend.rollback()
    assert nm_mock.active_profile(device) == old
    assert nm_mock.profiles() == [old]


async def test_commit_saves_trial_and_deletes_only_the_agents_old_profile(
    nm_mock: NetworkManagerMock, backend: NetworkManagerBackend
) -> None:
    device = nm_mock.add_wifi_device()
    nm_mock.add_access_point(device, "home", b"HomeNet")
    preconfigured = nm_mock.add_profile(b"Imager", name="preconfigured")
    earlier = nm_mock.add_profile(b"OldNet", role="saved")
    nm_mock.activate(earlier, device)

    await backend.connect(HOME)
    trial = _active(nm_mock, device)
    await backend.commit()

    assert sorted(nm_mock.profiles()) == sorted([preconfigured, trial])
    settings = nm_mock.settings(trial)
    assert bool(settings["connection"]["autoconnect"]) is True
    assert int(settings["connection"]["autoconnect-priority"]) == 50
    assert _role(settings) == "saved"
    # Update carries the whole profile, secrets included (NetworkManager replaces everything).
    assert settings["802-11-wireless-security"]["psk"] == HOME.passphrase
    await backend.rollback()  # nothing to roll back after a commit
    assert nm_mock.active_profile(device) == trial


async def test_commit_without_trial_is_an_error(
    nm_mock: NetworkManagerMock, backend: NetworkManagerBackend
) -> None:
    nm_mock.add_wifi_device()
    with pytest.raises(NetworkError):
        await backend.commit()


async def test_forget_removes_agent_profiles_only(
    nm_mock: NetworkManagerMock, backend: NetworkManagerBackend
) -> None:
    device = nm_mock.add_wifi_device()
    nm_mock.add_access_point(device, "home", b"HomeNet")
    mine = nm_mock.add_profile(b"HomeNet", role="saved")
    theirs = nm_mock.add_profile(b"Imager", name="preconfigured")
    nm_mock.activate(mine, device)

    await backend.forget()

    assert nm_mock.profiles() == [theirs]
    assert not await backend.wifi_connected()


async def test_hotspot_wpa2(nm_mock: NetworkManagerMock, backend: NetworkManagerBackend) -> None:
    device = nm_mock.add_wifi_device()

    await backend.start_hotspot("IoB-setup-7F3A", "pairing-pass-42")

    profile = _active(nm_mock, device)
    settings = nm_mock.settings(profile)
    assert bytes(settings["802-11-wireless"]["ssid"]) == b"IoB-setup-7F3A"
    assert settings["802-11-wireless"]["mode"] == "ap"
    # A channel every regulatory domain allows (NetworkManager's own pick can be 13).
    assert settings["802-11-wireless"]["band"] == "bg"
    assert settings["802-11-wireless"]["channel"] == hotspot_channel(b"IoB-setup-7F3A")
    assert settings["ipv4"]["method"] == "shared"
    security = settings["802-11-wireless-security"]
    assert security["key-mgmt"] == "wpa-psk"
    assert list(security["proto"]) == ["rsn"]
    assert security["psk"] == "pairing-pass-42"
    assert _role(settings) == "hotspot"
    assert not await backend.wifi_connected()  # the SoftAP is not "the saved Wi-Fi"

    await backend.stop_hotspot()
    assert nm_mock.profiles() == []
    assert nm_mock.active_profile(device) is None


def test_hotspot_channels_spread_over_1_6_and_11() -> None:
    channels = {hotspot_channel(f"IoT-Onboard-{n:04X}".encode()) for n in range(64)}
    assert channels == {1, 6, 11}
    assert hotspot_channel(b"IoT-Onboard-GTMF") == hotspot_channel(b"IoT-Onboard-GTMF")


async def test_hotspot_open_and_restart_replaces_profile(
    nm_mock: NetworkManagerMock, backend: NetworkManagerBackend
) -> None:
    device = nm_mock.add_wifi_device()
    await backend.start_hotspot("IoB-open", None)
    await backend.start_hotspot("IoB-open", None)  # a restart does not pile up profiles
    (profile,) = nm_mock.profiles()
    assert "802-11-wireless-security" not in nm_mock.settings(profile)
    assert nm_mock.active_profile(device) == profile
    with pytest.raises(ValueError, match="8-63"):
        await backend.start_hotspot("IoB-open", "short")


async def test_rollback_to_hotspot(
    nm_mock: NetworkManagerMock, backend: NetworkManagerBackend
) -> None:
    """A fresh device serves the SoftAP; a failed join must bring the SoftAP back."""
    device = nm_mock.add_wifi_device()
    nm_mock.add_access_point(device, "home", b"HomeNet")
    await backend.start_hotspot("IoB-setup", "pairing-pass-42")
    hotspot = _active(nm_mock, device)
    nm_mock.fail_activation({b"HomeNet": [(PREPARE, 0), (FAILED, NMStateReason.NO_SECRETS)]})

    with pytest.raises(NetworkError):
        await backend.connect(HOME)
    await backend.rollback()

    assert nm_mock.active_profile(device) == hotspot


async def test_wpa3_only_network_uses_sae(
    nm_mock: NetworkManagerMock, backend: NetworkManagerBackend
) -> None:
    device = nm_mock.add_wifi_device()
    nm_mock.add_access_point(device, "w3", b"Modern", security=0x408)  # SAE + CCMP, no PSK
    await backend.connect(WifiCredentials(ssid=b"Modern", passphrase="sae-passphrase"))  # noqa: S106
    settings = nm_mock.settings(_active(nm_mock, device))
    assert settings["802-11-wireless-security"]["key-mgmt"] == "sae"


async def test_open_and_hidden_network(
    nm_mock: NetworkManagerMock, backend: NetworkManagerBackend
) -> None:
    device = nm_mock.add_wifi_device()
    await backend.connect(WifiCredentials(ssid=b"Cafe", hidden=True))
    settings = nm_mock.settings(_active(nm_mock, device))
    assert "802-11-wireless-security" not in settings
    assert bool(settings["802-11-wireless"]["hidden"]) is True


async def test_interface_selection_and_missing_device(nm_mock: NetworkManagerMock) -> None:
    nm_mock.add_ethernet_device()
    nm_mock.add_wifi_device("wlan0")
    wlan1 = nm_mock.add_wifi_device("wlan1")
    nm_mock.add_access_point(wlan1, "x", b"OnlyOnWlan1")
    picky = NetworkManagerBackend(bus_address=nm_mock.address, interface="wlan1")
    missing = NetworkManagerBackend(bus_address=nm_mock.address, interface="wlan9")
    try:
        assert [ap.ssid for ap in await picky.scan()] == [b"OnlyOnWlan1"]
        with pytest.raises(NetworkError) as caught:
            await missing.scan()
        assert caught.value.code is FAULT_CODE
        assert "wlan9" in caught.value.detail
    finally:
        await picky.aclose()
        await missing.aclose()


async def test_permission_denied_names_the_fix(
    nm_mock: NetworkManagerMock, backend: NetworkManagerBackend
) -> None:
    _world(nm_mock)
    nm_mock._mock(NM_PATH).AddMethod(
        IFACE_NM,
        "ActivateConnection",
        "ooo",
        "o",
        "raise dbus.exceptions.DBusException('Not authorized to control networking.', "
        "name='org.freedesktop.NetworkManager.PermissionDenied')",
    )
    with pytest.raises(NetworkManagerError) as caught:
        await backend.connect(HOME)
    assert caught.value.dbus_error == "org.freedesktop.NetworkManager.PermissionDenied"
    assert "polkit" in caught.value.detail


async def test_unknown_access_point_error_maps_to_ap_not_found(
    nm_mock: NetworkManagerMock, backend: NetworkManagerBackend
) -> None:
    _world(nm_mock)
    nm_mock._mock(NM_PATH).AddMethod(
        IFACE_NM,
        "ActivateConnection",
        "ooo",
        "o",
        "raise dbus.exceptions.DBusException(\"Connection 'x' is not available on device wlan0 "
        'because profile is not compatible with device (access point not found)", '
        "name='org.freedesktop.NetworkManager.UnknownConnection')",
    )
    with pytest.raises(NetworkError) as caught:
        await backend.connect(HOME)
    assert caught.value.code is DiagnosticCode.WIFI_AP_NOT_FOUND


async def test_no_bus_is_a_network_error(tmp_path: Path) -> None:
    nm = NetworkManagerBackend(bus_address=f"unix:path={tmp_path}/absent.socket")
    with pytest.raises(NetworkError) as caught:
        await nm.wifi_connected()
    assert caught.value.code is FAULT_CODE
    await nm.aclose()


async def test_check_dns(backend: NetworkManagerBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    await backend.check_dns("localhost")

    async def refuse(*_args: object, **_kwargs: object) -> NoReturn:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", refuse)
    with pytest.raises(NetworkError) as caught:
        await backend.check_dns("relay.example")
    assert caught.value.code is DiagnosticCode.DNS_FAILED
    assert "relay.example" in caught.value.detail


async def test_check_internet_uses_networkmanager_then_probes(nm_mock: NetworkManagerMock) -> None:
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    open_port = server.sockets[0].getsockname()[1]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]  # bound, never listening: connections are refused
    failing = NetworkManagerBackend(
        bus_address=nm_mock.address, internet_probes=[("127.0.0.1", closed_port)]
    )
    working = NetworkManagerBackend(
        bus_address=nm_mock.address, internet_probes=[("127.0.0.1", open_port)]
    )
    nm_mock.set_connectivity_check(available=True)
    try:
        await failing.check_internet()  # NetworkManager checked and says FULL: no probe needed

        nm_mock.set_connectivity(1)  # NONE
        with pytest.raises(NetworkError) as caught:
            await failing.check_internet()
        assert caught.value.code is DiagnosticCode.NO_INTERNET
        assert "none" in caught.value.detail

        nm_mock.set_connectivity(0)  # UNKNOWN: a probe decides
        await working.check_internet()
    finally:
        closed.close()
        server.close()
        await server.wait_closed()
        await failing.aclose()
        await working.aclose()


async def test_activation_that_never_finishes_times_out(nm_mock: NetworkManagerMock) -> None:
    device, _ = _world(nm_mock)
    nm_mock.fail_activation({b"HomeNet": [(PREPARE, 0), (CONFIG, 0), (IP_CONFIG, 0)]})
    nm = NetworkManagerBackend(bus_address=nm_mock.address, activation_timeout=0.3)
    try:
        with pytest.raises(NetworkError) as caught:
            await nm.connect(HOME)
        assert caught.value.code is DiagnosticCode.DHCP_TIMEOUT  # stuck waiting for an address
        await nm.rollback()
        assert nm_mock.active_profile(device) is not None
    finally:
        await nm.aclose()


async def test_check_internet_probes_when_networkmanager_does_not_check(
    nm_mock: NetworkManagerMock,
) -> None:
    """Without a check URL (Debian's and Raspberry Pi OS's default) NetworkManager answers FULL
    on any network with a default route, checking nothing (seen in the VM stage, tests/vm): a
    LAN without an uplink must still be NO_INTERNET, so the probes decide."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    failing = NetworkManagerBackend(
        bus_address=nm_mock.address, internet_probes=[("127.0.0.1", closed.getsockname()[1])]
    )
    try:
        for available, enabled in ((False, True), (True, False)):
            nm_mock.set_connectivity_check(available=available, enabled=enabled)
            with pytest.raises(NetworkError) as caught:
                await failing.check_internet()  # the mock's Connectivity is FULL
            assert caught.value.code is DiagnosticCode.NO_INTERNET
            assert "not checked" in caught.value.detail
    finally:
        closed.close()
        await failing.aclose()


async def test_check_internet_probes_when_networkmanager_is_older(
    nm_mock: NetworkManagerMock,
) -> None:
    """NetworkManager before 1.10 has no ConnectivityCheckAvailable: its FULL is not trusted."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    failing = NetworkManagerBackend(
        bus_address=nm_mock.address, internet_probes=[("127.0.0.1", closed.getsockname()[1])]
    )
    try:
        with pytest.raises(NetworkError) as caught:
            await failing.check_internet()
        assert caught.value.code is DiagnosticCode.NO_INTERNET
    finally:
        closed.close()
        await failing.aclose()


async def _portal_server(status: int, body: bytes) -> tuple[asyncio.Server, str]:
    """A plain HTTP server answering every request with ``status`` and ``body``."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
        if 300 <= status < 400:
            head += "Location: http://portal.example/login\r\n"
        writer.write(head.encode() + b"\r\n" + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/nm"


async def test_check_internet_reports_a_captive_portal(nm_mock: NetworkManagerMock) -> None:
    """A network that redirects (or answers with its own page) every plain HTTP request is a
    captive portal: CAPTIVE_PORTAL, even when TCP probes get through (seen in the VM stage)."""
    tcp = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    probes = [("127.0.0.1", tcp.sockets[0].getsockname()[1])]
    servers = []
    try:
        for status, body in ((302, b""), (200, b"<html>Sign in</html>"), (511, b"")):
            server, url = await _portal_server(status, body)
            servers.append(server)
            nm = NetworkManagerBackend(
                bus_address=nm_mock.address, internet_probes=probes, portal_probe=url
            )
            try:
                with pytest.raises(NetworkError) as caught:
                    await nm.check_internet()
            finally:
                await nm.aclose()
            assert caught.value.code is DiagnosticCode.CAPTIVE_PORTAL, status
            assert str(status) in caught.value.detail
        # The expected answer is no portal; the TCP probe then decides (it answers).
        server, url = await _portal_server(200, PORTAL_PROBE_EXPECTED.encode())
        servers.append(server)
        nm = NetworkManagerBackend(
            bus_address=nm_mock.address, internet_probes=probes, portal_probe=url
        )
        try:
            await nm.check_internet()
        finally:
            await nm.aclose()
    finally:
        for server in [tcp, *servers]:
            server.close()
            await server.wait_closed()


async def test_check_internet_trusts_networkmanager_s_portal_state(
    nm_mock: NetworkManagerMock,
) -> None:
    """NetworkManager's own check (with a check URL) saying PORTAL is CAPTIVE_PORTAL."""
    nm = NetworkManagerBackend(bus_address=nm_mock.address, internet_probes=[], portal_probe=None)
    nm_mock.set_connectivity_check(available=True)
    nm_mock.set_connectivity(2)  # PORTAL
    try:
        with pytest.raises(NetworkError) as caught:
            await nm.check_internet()
        assert caught.value.code is DiagnosticCode.CAPTIVE_PORTAL
        assert "portal" in caught.value.detail
    finally:
        await nm.aclose()
