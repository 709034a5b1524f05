"""NetworkManager over D-Bus: the network backend of a real Pi.

The agent never edits files under ``/etc/NetworkManager``; it talks to the running daemon on the
system bus (dbus-fast), so NetworkManager stays the single owner of the radio.

Fail-safe join: :meth:`NetworkManagerBackend.connect` adds the new network as an *unsaved*
(in-memory) profile with autoconnect off and activates it. The previous profile is never
touched, so a power cut during the trial reboots into the old configuration. ``commit`` saves
the trial profile to disk with autoconnect on and a higher priority and deletes the agent's
earlier profile; ``rollback`` deletes the trial profile and reactivates the previous one.

Profiles the agent creates carry ``user.data["org.iot-onboard.role"]`` (``trial``, ``saved`` or
``hotspot``), so the agent can find its own profiles after a restart and never deletes a profile
someone else made (for example the one Raspberry Pi Imager preconfigures).

Secrets: the Wi-Fi passphrase goes to NetworkManager inside the settings dictionary and is never
logged; error messages name the SSID (escaped) only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
import zlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from http import HTTPStatus
from typing import Any, Final

import aiohttp
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from iob_protocol.commands import display_ssid, validate_passphrase
from iob_protocol.diagnostics import DiagnosticCode
from iob_protocol.errors import InvalidFieldError

from device_firmware import dbus_call
from device_firmware.dbus_call import DBUS_BUS, DBUS_PATH

from .backend import AccessPoint, NetworkBackend, NetworkError, WifiCredentials
from .wps import WpsAgent, WpsAgentError

_LOGGER = logging.getLogger(__name__)

NM_BUS: Final = dbus_call.NM_BUS
NM_PATH: Final = "/org/freedesktop/NetworkManager"
SETTINGS_PATH: Final = "/org/freedesktop/NetworkManager/Settings"
IFACE_NM: Final = "org.freedesktop.NetworkManager"
IFACE_SETTINGS: Final = "org.freedesktop.NetworkManager.Settings"
IFACE_CONNECTION: Final = "org.freedesktop.NetworkManager.Settings.Connection"
IFACE_DEVICE: Final = "org.freedesktop.NetworkManager.Device"
IFACE_WIRELESS: Final = "org.freedesktop.NetworkManager.Device.Wireless"
IFACE_AP: Final = "org.freedesktop.NetworkManager.AccessPoint"
IFACE_ACTIVE: Final = "org.freedesktop.NetworkManager.Connection.Active"
IFACE_PROPERTIES: Final = "org.freedesktop.DBus.Properties"

_SECURITY: Final = "802-11-wireless-security"

#: The ``user.data`` key marking profiles this agent created.
ROLE_KEY: Final = "org.iot-onboard.role"
#: Priority of the committed profile: above NetworkManager's default 0, so the household
#: network wins over a preconfigured one when both are in range.
SAVED_PRIORITY: Final = 50
#: NetworkManager failures that are not the user's doing (daemon missing, permission denied)
#: have no diagnostic code of their own; "try again" is the honest next step.
FAULT_CODE: Final = DiagnosticCode.TIMEOUT
#: Fallback reachability probes when NetworkManager's connectivity check is off.
DEFAULT_INTERNET_PROBES: Final[tuple[tuple[str, int], ...]] = (("1.1.1.1", 443), ("9.9.9.9", 443))
#: A plain-HTTP page with a known answer (the check URL of Debian's
#: network-manager-config-connectivity-debian): a captive portal redirects the request to its
#: sign-in page or answers with a page of its own.
DEFAULT_PORTAL_PROBE: Final = "http://network-test.debian.org/nm"
#: What the portal probe's page says when nothing is in the way.
PORTAL_PROBE_EXPECTED: Final = "NetworkManager is online"
#: Bytes of the probe's answer read (the expected page is one line).
_PORTAL_BODY_LIMIT: Final = 4096
#: Network Authentication Required (RFC 6585): a portal that says so.
_HTTP_AUTHENTICATION_REQUIRED: Final = 511

_NO_PATH: Final = "/"
_NM_DEVICE_TYPE_WIFI: Final = 2
_AP_FLAGS_PRIVACY: Final = 0x1
#: NM80211ApFlags: the access point runs a WPS push-button session (its button was pressed).
_AP_FLAGS_WPS_PBC: Final = 0x4
#: Fresh scans a WPS join makes until the router shows its pressed button: a scan already under
#: way when the join asks for one ("Reject scan trigger since one is already pending") may
#: have begun before the press, and NetworkManager runs no push-button session on its results.
_WPS_SCANS: Final = 3
_AP_SEC_KEY_MGMT_PSK: Final = 0x100
_AP_SEC_KEY_MGMT_SAE: Final = 0x400
_PMF_DISABLE: Final = 1
_MIN_HOTSPOT_PASSPHRASE: Final = 8
_MAX_HOTSPOT_PASSPHRASE: Final = 63
#: The hotspot's channels: allowed in every regulatory domain, not overlapping.
_HOTSPOT_CHANNELS: Final = (1, 6, 11)


class NMDeviceState(IntEnum):
    """NMDeviceState (only the values the agent looks at)."""

    UNMANAGED = 10
    UNAVAILABLE = 20
    DISCONNECTED = 30
    PREPARE = 40
    CONFIG = 50
    NEED_AUTH = 60
    IP_CONFIG = 70
    ACTIVATED = 100
    DEACTIVATING = 110
    FAILED = 120


class NMStateReason(IntEnum):
    """NMDeviceStateReason values that decide a diagnostic code."""

    NONE = 0
    UNKNOWN = 1
    IP_CONFIG_UNAVAILABLE = 5
    IP_CONFIG_EXPIRED = 6
    NO_SECRETS = 7
    SUPPLICANT_DISCONNECT = 8
    SUPPLICANT_CONFIG_FAILED = 9
    SUPPLICANT_FAILED = 10
    SUPPLICANT_TIMEOUT = 11
    DHCP_START_FAILED = 15
    DHCP_ERROR = 16
    DHCP_FAILED = 17
    SSID_NOT_FOUND = 53


class NMConnectivity(IntEnum):
    """NMConnectivityState."""

    UNKNOWN = 0
    NONE = 1
    PORTAL = 2
    LIMITED = 3
    FULL = 4


class ProfileRole(StrEnum):
    """Which agent-made profile a connection is (``user.data[ROLE_KEY]``)."""

    TRIAL = "trial"
    SAVED = "saved"
    HOTSPOT = "hotspot"


_AUTH_REASONS: Final = frozenset(
    {
        NMStateReason.NO_SECRETS,
        NMStateReason.SUPPLICANT_DISCONNECT,
        NMStateReason.SUPPLICANT_CONFIG_FAILED,
        NMStateReason.SUPPLICANT_FAILED,
        NMStateReason.SUPPLICANT_TIMEOUT,
    }
)
_DHCP_REASONS: Final = frozenset(
    {
        NMStateReason.IP_CONFIG_UNAVAILABLE,
        NMStateReason.IP_CONFIG_EXPIRED,
        NMStateReason.DHCP_START_FAILED,
        NMStateReason.DHCP_ERROR,
        NMStateReason.DHCP_FAILED,
    }
)
#: Text of NetworkManager's D-Bus errors when a non-hidden profile's SSID is not in range.
_AP_MISSING_HINTS: Final = ("access point not found", "no network with ssid")


def diagnostic_for_reason(reason: int) -> DiagnosticCode:
    """Map the NMDeviceStateReason of a failed activation to what the user is shown.

    Wrong passphrases surface as NO_SECRETS (no agent could supply a better one) or as one of
    the supplicant reasons (802.1X/WPA handshake); reasons without a better match become
    WIFI_AP_NOT_FOUND, whose next step (range, name, hidden flag) fits radio-level failures.
    """
    if reason in _AUTH_REASONS:
        return DiagnosticCode.WIFI_AUTH_FAILED
    if reason in _DHCP_REASONS:
        return DiagnosticCode.DHCP_TIMEOUT
    return DiagnosticCode.WIFI_AP_NOT_FOUND


def _reason_name(reason: int) -> str:
    try:
        return NMStateReason(reason).name
    except ValueError:
        return f"reason {reason}"


class NetworkManagerError(NetworkError):
    """NetworkManager (or the bus) refused a call; ``dbus_error`` is the D-Bus error name."""

    def __init__(self, code: DiagnosticCode, detail: str, *, dbus_error: str = "") -> None:
        """Keep the D-Bus error name so callers can tell refusals apart."""
        super().__init__(code, detail)
        self.dbus_error = dbus_error


@dataclass(slots=True)
class _Trial:
    """The network joined by ``connect`` and not yet committed."""

    profile: str
    previous: str | None
    settings: dict[str, dict[str, Variant]] = field(repr=False)
    active: str | None = None


class NetworkManagerBackend(NetworkBackend, dbus_call.BusClient):
    """The NetworkBackend of a real device: NetworkManager on the system bus."""

    _DESTINATION = NM_BUS

    def __init__(
        self,
        *,
        interface: str | None = None,
        bus_address: str | None = None,
        saved_priority: int = SAVED_PRIORITY,
        scan_timeout: float = 10.0,
        activation_timeout: float = 90.0,
        rollback_timeout: float = 30.0,
        dns_timeout: float = 10.0,
        internet_probes: Sequence[tuple[str, int]] = DEFAULT_INTERNET_PROBES,
        portal_probe: str | None = DEFAULT_PORTAL_PROBE,
        probe_timeout: float = 5.0,
        wps_wait: float = 60.0,
    ) -> None:
        """Configure; nothing is contacted until the first call.

        Args:
            interface: the Wi-Fi interface (``wlan0``); the first Wi-Fi device when None.
            bus_address: a D-Bus address; the system bus (``DBUS_SYSTEM_BUS_ADDRESS`` or the
                standard socket) when None.
            saved_priority: ``autoconnect-priority`` of the committed profile.
            scan_timeout: seconds ``scan`` waits for a fresh scan before listing what is known.
            activation_timeout: seconds an activation may take before it counts as failed
                (NetworkManager's own DHCP timeout is 45 s); callers may bound it tighter.
            rollback_timeout: seconds ``rollback`` waits for the previous network to come back.
            dns_timeout: seconds ``check_dns`` waits for the resolver.
            internet_probes: TCP (host, port) pairs tried when NetworkManager cannot say
                whether the internet is reachable; empty to rely on NetworkManager alone.
            portal_probe: a plain-HTTP URL answering :data:`PORTAL_PROBE_EXPECTED`, fetched
                before the TCP probes to recognise a captive portal; None: no such check.
            probe_timeout: seconds per probe.
            wps_wait: seconds a WPS join waits for the router's key once NetworkManager's
                push-button session runs (the router's button stays active two minutes).
        """
        self._interface = interface
        self._bus_address = bus_address
        self._saved_priority = saved_priority
        self._scan_timeout = scan_timeout
        self._activation_timeout = activation_timeout
        self._rollback_timeout = rollback_timeout
        self._dns_timeout = dns_timeout
        self._internet_probes = tuple(internet_probes)
        self._portal_probe = portal_probe
        self._probe_timeout = probe_timeout
        self._wps_wait = wps_wait
        self._bus: MessageBus | None = None
        self._bus_lock = asyncio.Lock()
        self._device: str | None = None
        self._trial: _Trial | None = None

    # --- NetworkBackend -----------------------------------------------------------------------

    async def scan(self) -> list[AccessPoint]:
        """Ask for a fresh scan, wait for it (bounded), and list the strongest BSS per SSID.

        Drivers refuse to scan while the radio hosts the SoftAP; the last known list is
        returned then, so scan before ``start_hotspot`` to have a useful one.
        """
        device = await self._wifi_device()
        await self._fresh_scan(device)
        (paths,) = await self._call(device, IFACE_WIRELESS, "GetAllAccessPoints")
        best: dict[bytes, AccessPoint] = {}
        for path in paths:
            try:
                props = await self._get_all(path, IFACE_AP)
            except NetworkManagerError:
                continue  # the AP vanished between the listing and the read
            point = _access_point(props)
            if point is None:
                continue
            known = best.get(point.ssid)
            if known is None or point.strength > known.strength:
                best[point.ssid] = point
        return sorted(best.values(), key=lambda ap: (-ap.strength, ap.ssid))

    async def connect(self, credentials: WifiCredentials) -> WifiCredentials:
        """Join as a trial on an unsaved profile; the previous profile stays as it was.

        A WPS join (``credentials.wps``) scans first (the router's button was just pressed:
        only a fresh scan shows it), lets NetworkManager run the push-button session under a
        :class:`~device_firmware.network.wps.WpsAgent`, and returns the network with the key
        the router handed over. After a NetworkError the trial is still recorded: call
        :meth:`rollback`.

        A join refused as a wrong password is tried once more if a fresh scan shows that the
        network's security changed since the scan the join relied on: the supplicant compares
        the router's keys with what it last saw, and a router that just switched, say, from
        WPA2 to WPA2/WPA3 fails that check ("IE in 3/4 msg does not match", reason 17), which
        NetworkManager reports as missing secrets, although the password is right.
        """
        return await self._connect(credentials, again=True)

    async def _connect(self, credentials: WifiCredentials, *, again: bool) -> WifiCredentials:
        device = await self._wifi_device()
        if self._trial is not None:
            # A second attempt (new passphrase) replaces the trial but keeps what to return to.
            previous = self._trial.previous
            await self._delete_quietly(self._trial.profile)
            self._trial = None
        else:
            previous = await self._active_profile(device)
        if credentials.wps:
            await self._scan_for_the_pressed_button(device, credentials.ssid)
        points = await self._access_points(device, credentials.ssid)
        key_mgmt = _key_management(credentials, points)
        seen = _security(points)
        settings = _client_settings(credentials, key_mgmt)
        shown = display_ssid(credentials.ssid)
        (profile,) = await self._call(
            SETTINGS_PATH, IFACE_SETTINGS, "AddConnectionUnsaved", "a{sa{sv}}", [settings]
        )
        trial = _Trial(profile=profile, previous=previous, settings=settings)
        self._trial = trial
        how = "by the router's WPS button" if credentials.wps else "as a trial"
        _LOGGER.info("Joining Wi-Fi %r %s (previous profile kept)", shown, how)
        try:
            if credentials.wps:
                trial.active = await self._activate_by_wps(device, profile)
                credentials = await self._learned_key(trial, credentials)
            else:
                trial.active = await self._activate(device, profile)
        except NetworkError as err:
            _LOGGER.warning("Joining Wi-Fi %r failed: %s", shown, err.detail)
            if isinstance(err, NetworkManagerError) and any(
                hint in err.detail.lower() for hint in _AP_MISSING_HINTS
            ):
                # Refused up front: a non-hidden profile whose SSID is not in the scan list.
                raise NetworkError(DiagnosticCode.WIFI_AP_NOT_FOUND, err.detail) from err
            if (
                again
                and not credentials.wps
                and err.code is DiagnosticCode.WIFI_AUTH_FAILED
                and await self._security_changed(device, credentials.ssid, seen)
            ):
                _LOGGER.info(
                    "Wi-Fi %r changed its security since the device last scanned; joining "
                    "once more with what it shows now",
                    shown,
                )
                return await self._connect(credentials, again=False)
            raise
        _LOGGER.info("Joined Wi-Fi %r (not committed yet)", shown)
        return credentials

    async def _security_changed(
        self, device: str, ssid: bytes, seen: frozenset[tuple[str, int, int]]
    ) -> bool:
        """After a fresh scan, whether ``ssid``'s access points advertise other security."""
        await self._fresh_scan(device)
        return bool(seen) and _security(await self._access_points(device, ssid)) != seen

    async def _activate_by_wps(self, device: str, profile: str) -> str:
        """Activate under a :class:`WpsAgent`; a failure to get the key is WPS_FAILED."""
        agent = WpsAgent(await self._bus_for_call(), profile, wait=self._wps_wait)
        try:
            await agent.register()
        except WpsAgentError as err:
            raise NetworkError(DiagnosticCode.WPS_FAILED, str(err)) from err
        try:
            return await self._activate(device, profile)
        except NetworkError as err:
            if (
                agent.outcome in {"held", "no-wps", "timed-out"}
                or err.code is DiagnosticCode.WIFI_AUTH_FAILED
            ):
                # No key from the router: why, in the agent's words (NetworkManager's reason
                # is "no-secrets" or a supplicant timeout either way).
                raise NetworkError(
                    DiagnosticCode.WPS_FAILED, f"{agent.describe()}; {err.detail}"
                ) from err
            raise
        finally:
            await agent.unregister()

    async def _learned_key(self, trial: _Trial, credentials: WifiCredentials) -> WifiCredentials:
        """The key NetworkManager got by WPS: into the trial's settings (``commit`` saves them).

        Without it the saved profile would lose the key at the commit's ``Update`` (it replaces
        every setting, secrets included) and the device would not rejoin after a restart.
        """
        try:
            (secrets,) = await self._call(
                trial.profile, IFACE_CONNECTION, "GetSecrets", "s", [_SECURITY]
            )
            psk = str(secrets[_SECURITY]["psk"].value)
            validate_passphrase(psk)
        except (NetworkManagerError, KeyError, InvalidFieldError) as err:
            raise NetworkError(
                DiagnosticCode.WPS_FAILED,
                f"joined by WPS, but NetworkManager did not give the key it learned: {err}",
            ) from err
        trial.settings[_SECURITY] = {
            "key-mgmt": Variant("s", "wpa-psk"),
            "psk": Variant("s", psk),
        }
        return WifiCredentials(ssid=credentials.ssid, passphrase=psk, hidden=credentials.hidden)

    async def check_dns(self, host: str) -> None:
        """Resolve ``host`` with the system resolver (the trial network's DNS servers)."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._dns_timeout):
                infos = await loop.getaddrinfo(host, None)
        except TimeoutError as err:
            raise NetworkError(
                DiagnosticCode.DNS_FAILED, f"resolving {host!r} took over {self._dns_timeout} s"
            ) from err
        except OSError as err:
            raise NetworkError(DiagnosticCode.DNS_FAILED, f"resolving {host!r}: {err}") from err
        if not infos:
            raise NetworkError(DiagnosticCode.DNS_FAILED, f"no address for {host!r}")

    async def check_internet(self) -> None:
        """Trust NetworkManager's connectivity check when it checks and says FULL; else probe.

        A captive portal is CAPTIVE_PORTAL: NetworkManager's check says PORTAL, or the portal
        probe (plain HTTP, before the TCP probes, which a portal may let through) is redirected
        or answered with another page.

        Without a check URL (Debian's and Raspberry Pi OS's default) NetworkManager checks
        nothing and answers FULL on any network with a default route, so its FULL counts only
        when ``ConnectivityCheckAvailable`` and ``ConnectivityCheckEnabled`` say it checked
        (NetworkManager before 1.10 has neither). The check may also be refused by polkit, or
        a firewall may block it but still let the device out: then a TCP connection to one of
        the probes decides.
        """
        state: NMConnectivity | None = None
        what = "not checked"
        try:
            if await self._connectivity_checked():
                (raw,) = await self._call(NM_PATH, IFACE_NM, "CheckConnectivity")
                state = NMConnectivity(raw)
                what = state.name.lower()
        except (NetworkManagerError, ValueError) as err:
            _LOGGER.debug("NetworkManager connectivity check unavailable: %s", err)
            what = "unknown"
        if state is NMConnectivity.FULL:
            return
        if state is NMConnectivity.PORTAL:
            raise NetworkError(
                DiagnosticCode.CAPTIVE_PORTAL,
                "NetworkManager's connectivity check found a captive portal",
            )
        portal = await self._portal_answer()
        if portal is not None:
            raise NetworkError(
                DiagnosticCode.CAPTIVE_PORTAL, f"{self._portal_probe}: {portal} (captive portal)"
            )
        for host, port in self._internet_probes:
            if await self._probe(host, port):
                return
        raise NetworkError(
            DiagnosticCode.NO_INTERNET,
            f"NetworkManager connectivity {what}; no probe of {len(self._internet_probes)} "
            "answered",
        )

    async def _connectivity_checked(self) -> bool:
        """Whether NetworkManager's connectivity state comes from a real check."""
        properties = await self._get_all(NM_PATH, IFACE_NM)
        return all(
            name in properties and bool(properties[name].value)
            for name in ("ConnectivityCheckAvailable", "ConnectivityCheckEnabled")
        )

    async def commit(self) -> None:
        """Save the trial profile (autoconnect, priority) and delete the agent's older ones."""
        trial = self._trial
        if trial is None:
            raise NetworkError(FAULT_CODE, "commit without a joined trial network")
        settings = _with_connection(
            trial.settings,
            autoconnect=Variant("b", True),  # noqa: FBT003 - a D-Bus variant
            **{"autoconnect-priority": Variant("i", self._saved_priority)},
        )
        settings["user"] = {"data": Variant("a{ss}", {ROLE_KEY: ProfileRole.SAVED.value})}
        # Update replaces every setting (secrets included) and writes the profile to disk.
        await self._call(trial.profile, IFACE_CONNECTION, "Update", "a{sa{sv}}", [settings])
        self._trial = None
        for path, role in await self._agent_profiles():
            if path != trial.profile and role in {ProfileRole.SAVED, ProfileRole.TRIAL}:
                await self._delete_quietly(path)
        _LOGGER.info("Wi-Fi settings committed")

    async def rollback(self) -> None:
        """Delete the trial profile and bring the previous profile back up; idempotent."""
        trial = self._trial
        if trial is None:
            return
        self._trial = None
        await self._delete_quietly(trial.profile)  # deleting an active profile deactivates it
        if trial.previous is None:
            _LOGGER.info("Trial network dropped; there was no previous connection")
            return
        device = await self._wifi_device()
        try:
            async with asyncio.timeout(self._rollback_timeout):
                await self._activate(device, trial.previous)
        except (NetworkError, TimeoutError) as err:
            # NetworkManager keeps autoconnecting the saved profile; nothing more to do here.
            _LOGGER.warning("Previous network did not come back at once: %s", err)
        else:
            _LOGGER.info("Rolled back to the previous network")

    async def forget(self) -> None:
        """Delete every client profile this agent saved or is trying (factory reset)."""
        self._trial = None
        for path, role in await self._agent_profiles():
            if role in {ProfileRole.SAVED, ProfileRole.TRIAL}:
                await self._delete_quietly(path)

    async def wifi_connected(self) -> bool:
        """Whether the Wi-Fi device is activated on a client network (not the SoftAP)."""
        device = await self._wifi_device()
        if await self._get(device, IFACE_DEVICE, "State") != NMDeviceState.ACTIVATED:
            return False
        profile = await self._active_profile(device)
        if profile is None:
            return False
        return await self._profile_role(profile) is not ProfileRole.HOTSPOT

    async def start_hotspot(self, ssid: str, passphrase: str | None) -> None:
        """Open a 2.4 GHz access point with NetworkManager's shared IPv4 (DHCP on 10.42.0.1).

        WPA2-only (RSN/CCMP) with ``passphrase``, open without. PMF is off: several phones and
        the Pi's brcmfmac firmware fail to associate with it on in AP mode.
        """
        if passphrase is not None and not (
            _MIN_HOTSPOT_PASSPHRASE <= len(passphrase) <= _MAX_HOTSPOT_PASSPHRASE
        ):
            raise ValueError("a hotspot passphrase must be 8-63 characters")
        device = await self._wifi_device()
        for path, role in await self._agent_profiles():
            if role is ProfileRole.HOTSPOT:
                await self._delete_quietly(path)
        settings = _hotspot_settings(ssid.encode(), passphrase)
        (profile,) = await self._call(
            SETTINGS_PATH, IFACE_SETTINGS, "AddConnectionUnsaved", "a{sa{sv}}", [settings]
        )
        try:
            await self._activate(device, profile)
        except NetworkError:
            await self._delete_quietly(profile)
            raise
        _LOGGER.info("Hotspot %r is up (%s)", ssid, "WPA2" if passphrase else "open")

    async def stop_hotspot(self) -> None:
        """Delete the hotspot profile; NetworkManager autoconnects the saved network again."""
        for path, role in await self._agent_profiles():
            if role is ProfileRole.HOTSPOT:
                await self._delete_quietly(path)

    async def version(self) -> str:
        """NetworkManager's version: proof it answers this process on the bus (self-test)."""
        return str(await self._get(NM_PATH, IFACE_NM, "Version"))

    async def wifi_radio(self) -> tuple[str, int]:
        """The Wi-Fi interface the backend drives and its device state (self-test).

        Raises :class:`NetworkError` when NetworkManager manages no such device.
        """
        device = await self._wifi_device()
        name = str(await self._get(device, IFACE_DEVICE, "Interface"))
        return name, int(await self._get(device, IFACE_DEVICE, "State"))

    async def aclose(self) -> None:
        """Close the D-Bus connection."""
        bus, self._bus = self._bus, None
        if bus is not None:
            bus.disconnect()

    # --- NetworkManager steps -----------------------------------------------------------------

    async def _wifi_device(self) -> str:
        if self._device is not None:
            try:
                await self._get(self._device, IFACE_DEVICE, "DeviceType")
            except NetworkManagerError:
                self._device = None  # NetworkManager restarted and renumbered its devices
            else:
                return self._device
        (devices,) = await self._call(NM_PATH, IFACE_NM, "GetDevices")
        for path in devices:
            if await self._get(path, IFACE_DEVICE, "DeviceType") != _NM_DEVICE_TYPE_WIFI:
                continue
            name = await self._get(path, IFACE_DEVICE, "Interface")
            if self._interface is None or name == self._interface:
                self._device = str(path)
                return self._device
        wanted = f"Wi-Fi interface {self._interface!r}" if self._interface else "Wi-Fi device"
        raise NetworkError(
            FAULT_CODE, f"NetworkManager manages no {wanted} (is the radio blocked by rfkill?)"
        )

    async def _active_profile(self, device: str) -> str | None:
        active = await self._get(device, IFACE_DEVICE, "ActiveConnection")
        if not active or active == _NO_PATH:
            return None
        try:
            profile = await self._get(active, IFACE_ACTIVE, "Connection")
        except NetworkManagerError:
            return None  # deactivated meanwhile
        return None if not profile or profile == _NO_PATH else str(profile)

    async def _scan_for_the_pressed_button(self, device: str, ssid: bytes) -> None:
        """Fresh scans until ``ssid`` shows a WPS push-button session (at most ``_WPS_SCANS``).

        Without it NetworkManager asks for the key without a push-button session, and the join
        fails as WPS_FAILED at once; after the last scan the join goes on all the same, and
        NetworkManager decides.
        """
        for attempt in range(1, _WPS_SCANS + 1):
            await self._fresh_scan(device)
            if await self._button_pressed(device, ssid):
                return
            _LOGGER.debug("Scan %d of %d: no WPS push-button session seen yet", attempt, _WPS_SCANS)

    async def _button_pressed(self, device: str, ssid: bytes) -> bool:
        points = await self._access_points(device, ssid)
        return any(int(props["Flags"].value) & _AP_FLAGS_WPS_PBC for props in points)

    async def _access_points(self, device: str, ssid: bytes) -> list[dict[str, Variant]]:
        """The properties of each access point of ``ssid`` the device knows.

        One that vanished while being read is left out.
        """
        (paths,) = await self._call(device, IFACE_WIRELESS, "GetAllAccessPoints")
        points: list[dict[str, Variant]] = []
        for path in paths:
            with contextlib.suppress(NetworkManagerError):
                props = await self._get_all(path, IFACE_AP)
                if bytes(props["Ssid"].value) == ssid:
                    points.append(props)
        return points

    async def _fresh_scan(self, device: str) -> None:
        """Request a scan and wait until ``LastScan`` moves (NetworkManager 1.12 and later)."""
        try:
            before = await self._get(device, IFACE_WIRELESS, "LastScan")
        except NetworkManagerError:
            before = None  # older NetworkManager: no way to know when the scan ends
        async with self._signals(device, IFACE_PROPERTIES, "PropertiesChanged") as changes:
            try:
                await self._call(device, IFACE_WIRELESS, "RequestScan", "a{sv}", [{}])
            except NetworkManagerError as err:
                # "Scanning not allowed" (AP mode, scan in progress): list what is known.
                _LOGGER.debug("Scan request refused: %s", err.detail)
                return
            if before is None:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._scan_timeout):
                    while True:
                        interface, changed, _ = await changes.get()
                        if interface == IFACE_WIRELESS and "LastScan" in changed:
                            return

    async def _activate(self, device: str, profile: str) -> str:
        """Activate ``profile`` on ``device`` and wait for ACTIVATED or a failure reason."""
        last = NMDeviceState.DISCONNECTED
        try:
            async with (
                asyncio.timeout(self._activation_timeout),
                self._signals(device, IFACE_DEVICE, "StateChanged") as events,
            ):
                (active,) = await self._call(
                    NM_PATH, IFACE_NM, "ActivateConnection", "ooo", [profile, device, _NO_PATH]
                )
                while True:
                    new, _old, reason = await events.get()
                    last = new
                    if new == NMDeviceState.FAILED:
                        if reason in {NMStateReason.NONE, NMStateReason.UNKNOWN}:
                            # Some paths report the reason only in the StateReason property.
                            _, reason = await self._get(device, IFACE_DEVICE, "StateReason")
                        raise NetworkError(
                            diagnostic_for_reason(reason),
                            f"activation failed ({_reason_name(reason)})",
                        )
                    if new == NMDeviceState.ACTIVATED and (
                        await self._get(device, IFACE_DEVICE, "ActiveConnection") == active
                    ):
                        return str(active)
        except TimeoutError as err:
            # Stuck waiting for an address is a DHCP problem; anything else has no better name.
            code = (
                DiagnosticCode.DHCP_TIMEOUT
                if last == NMDeviceState.IP_CONFIG
                else DiagnosticCode.TIMEOUT
            )
            raise NetworkError(
                code, f"activation took over {self._activation_timeout} s (last state {last})"
            ) from err

    async def _agent_profiles(self) -> list[tuple[str, ProfileRole]]:
        (paths,) = await self._call(SETTINGS_PATH, IFACE_SETTINGS, "ListConnections")
        found: list[tuple[str, ProfileRole]] = []
        for path in paths:
            try:
                role = await self._profile_role(path)
            except NetworkManagerError:
                continue  # deleted meanwhile
            if role is not None:
                found.append((str(path), role))
        return found

    async def _profile_role(self, profile: str) -> ProfileRole | None:
        (settings,) = await self._call(profile, IFACE_CONNECTION, "GetSettings")
        data = settings.get("user", {}).get("data")
        if data is None:
            return None
        try:
            return ProfileRole(data.value.get(ROLE_KEY))
        except ValueError:
            return None

    async def _delete_quietly(self, profile: str) -> None:
        """Delete a profile that may already be gone."""
        try:
            await self._call(profile, IFACE_CONNECTION, "Delete")
        except NetworkManagerError as err:
            _LOGGER.debug("Profile %s not deleted: %s", profile, err.detail)

    async def _portal_answer(self) -> str | None:
        """How a captive portal answered the portal probe, or None when no portal was seen.

        None: the expected page, no answer at all, or an answer that proves nothing either way.
        """
        if self._portal_probe is None:
            return None
        timeout = aiohttp.ClientTimeout(total=self._probe_timeout)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(self._portal_probe, allow_redirects=False) as response,
            ):
                status = response.status
                location = response.headers.get("Location", "")
                body = await response.content.read(_PORTAL_BODY_LIMIT)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as err:
            _LOGGER.debug("portal probe %s: no answer (%s)", self._portal_probe, err)
            return None
        if HTTPStatus.MULTIPLE_CHOICES <= status < HTTPStatus.BAD_REQUEST:
            return f"HTTP {status} to {location or 'no location'}"
        if status == _HTTP_AUTHENTICATION_REQUIRED:
            return f"HTTP {status}"
        if status == HTTPStatus.OK and PORTAL_PROBE_EXPECTED.encode() not in body:
            return f"HTTP {status} with a page of its own"
        return None

    async def _probe(self, host: str, port: int) -> bool:
        try:
            async with asyncio.timeout(self._probe_timeout):
                _, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    # --- D-Bus plumbing -----------------------------------------------------------------------

    async def _connected_bus(self) -> MessageBus:
        async with self._bus_lock:
            if self._bus is not None and self._bus.connected:
                return self._bus
            try:
                self._bus = await dbus_call.connect(self._bus_address)
            except dbus_call.DBusCallError as err:
                raise NetworkManagerError(
                    FAULT_CODE, f"cannot connect to the system D-Bus: {err.detail}"
                ) from err
            self._device = None
            return self._bus

    async def _bus_for_call(self) -> MessageBus:
        return await self._connected_bus()

    def _call_error(self, err: dbus_call.DBusCallError) -> NetworkManagerError:
        return _nm_error(err)

    async def _get(self, path: str, interface: str, name: str) -> Any:
        (value,) = await self._call(path, IFACE_PROPERTIES, "Get", "ss", [interface, name])
        return value.value

    async def _get_all(self, path: str, interface: str) -> dict[str, Variant]:
        (values,) = await self._call(path, IFACE_PROPERTIES, "GetAll", "s", [interface])
        return dict(values)

    @contextlib.asynccontextmanager
    async def _signals(
        self, path: str, interface: str, member: str
    ) -> AsyncIterator[asyncio.Queue[list[Any]]]:
        """Queue the bodies of one signal of one object while the block runs.

        The match is in place before the block starts, so a signal sent in reply to a call
        made inside the block (before its return) is not lost.
        """
        bus = await self._connected_bus()
        queue: asyncio.Queue[list[Any]] = asyncio.Queue()
        rule = (
            f"type='signal',sender='{NM_BUS}',path='{path}',"
            f"interface='{interface}',member='{member}'"
        )

        def handler(message: Message) -> None:
            if (
                message.message_type is MessageType.SIGNAL
                and message.path == path
                and message.interface == interface
                and message.member == member
            ):
                queue.put_nowait(list(message.body))

        bus.add_message_handler(handler)
        try:
            await self._call(DBUS_PATH, DBUS_BUS, "AddMatch", "s", [rule], destination=DBUS_BUS)
            yield queue
        finally:
            bus.remove_message_handler(handler)
            if bus.connected:
                with contextlib.suppress(NetworkError):
                    await self._call(
                        DBUS_PATH, DBUS_BUS, "RemoveMatch", "s", [rule], destination=DBUS_BUS
                    )


def _nm_error(err: dbus_call.DBusCallError) -> NetworkManagerError:
    """A failed call as the backend's error, with the next step where one is known."""
    name = err.error_name
    if not name:
        return NetworkManagerError(FAULT_CODE, f"D-Bus call {err.member} failed: {err.detail}")
    hint = ""
    if name.endswith(("PermissionDenied", "AccessDenied", "NotAuthorized")):
        hint = " (run the agent as root or install the polkit rule from docs/device.md)"
    elif name == "org.freedesktop.DBus.Error.ServiceUnknown":
        hint = " (is NetworkManager running?)"
    return NetworkManagerError(
        FAULT_CODE, f"{err.member}: {name}: {err.detail}{hint}", dbus_error=name
    )


# --- settings dictionaries ------------------------------------------------------------------


def _key_management(credentials: WifiCredentials, points: list[dict[str, Variant]]) -> str | None:
    """WPA3-only networks need ``sae``; everything else with a passphrase ``wpa-psk``.

    ``points``: the network's access points as the device knows them. WPS hands over a WPA2
    key: ``wpa-psk`` (a WPA3-only network offers no WPS).
    """
    if credentials.wps:
        return "wpa-psk"
    if credentials.passphrase is None:
        return None
    for props in points:
        rsn = int(props["RsnFlags"].value)
        if rsn & _AP_SEC_KEY_MGMT_SAE and not rsn & _AP_SEC_KEY_MGMT_PSK:
            return "sae"
    return "wpa-psk"


def _security(points: list[dict[str, Variant]]) -> frozenset[tuple[str, int, int]]:
    """What each of a network's access points advertises: its BSSID, WPA and RSN flags."""
    return frozenset(
        (
            str(props["HwAddress"].value) if "HwAddress" in props else "",
            int(props["WpaFlags"].value) if "WpaFlags" in props else 0,
            int(props["RsnFlags"].value) if "RsnFlags" in props else 0,
        )
        for props in points
    )


def _client_settings(
    credentials: WifiCredentials, key_mgmt: str | None
) -> dict[str, dict[str, Variant]]:
    """An infrastructure-mode profile: autoconnect off until commit, DHCP on both stacks."""
    settings: dict[str, dict[str, Variant]] = {
        "connection": {
            "id": Variant("s", f"IoT Onboard {display_ssid(credentials.ssid)}"),
            "uuid": Variant("s", str(uuid.uuid4())),
            "type": Variant("s", "802-11-wireless"),
            "autoconnect": Variant("b", False),  # noqa: FBT003 - a D-Bus variant
        },
        "802-11-wireless": {
            "ssid": Variant("ay", credentials.ssid),
            "mode": Variant("s", "infrastructure"),
            "hidden": Variant("b", credentials.hidden),
        },
        "ipv4": {"method": Variant("s", "auto")},
        "ipv6": {"method": Variant("s", "auto")},
        "user": {"data": Variant("a{ss}", {ROLE_KEY: ProfileRole.TRIAL.value})},
    }
    if credentials.passphrase is not None:
        settings[_SECURITY] = {
            "key-mgmt": Variant("s", key_mgmt or "wpa-psk"),
            "psk": Variant("s", credentials.passphrase),
        }
    elif credentials.wps:
        # No key: NetworkManager runs WPS and keeps the key it learns (psk-flags 0, its own).
        settings[_SECURITY] = {
            "key-mgmt": Variant("s", "wpa-psk"),
            "psk-flags": Variant("u", 0),
        }
    return settings


def hotspot_channel(ssid: bytes) -> int:
    """The hotspot's 2.4 GHz channel: 1, 6 or 11, by the SSID (so by the device).

    Without one NetworkManager picks the channel itself, and Bookworm's (1.42) can pick 13
    (2472 MHz), where a radio without a country set (the world regulatory domain, a Raspberry
    Pi before ``raspi-config`` asks) may not transmit first: wpa_supplicant answers "Failed to
    start AP functionality" and every retry picks 13 again. Channels 1, 6 and 11 are allowed
    in every domain and do not overlap, so a shelf of devices in set-up spreads over them.
    """
    return _HOTSPOT_CHANNELS[zlib.crc32(ssid) % len(_HOTSPOT_CHANNELS)]


def _hotspot_settings(ssid: bytes, passphrase: str | None) -> dict[str, dict[str, Variant]]:
    settings: dict[str, dict[str, Variant]] = {
        "connection": {
            "id": Variant("s", "IoT Onboard hotspot"),
            "uuid": Variant("s", str(uuid.uuid4())),
            "type": Variant("s", "802-11-wireless"),
            "autoconnect": Variant("b", False),  # noqa: FBT003 - a D-Bus variant
        },
        "802-11-wireless": {
            "ssid": Variant("ay", ssid),
            "mode": Variant("s", "ap"),
            "band": Variant("s", "bg"),
            "channel": Variant("u", hotspot_channel(ssid)),
        },
        "ipv4": {"method": Variant("s", "shared")},
        "ipv6": {"method": Variant("s", "ignore")},
        "user": {"data": Variant("a{ss}", {ROLE_KEY: ProfileRole.HOTSPOT.value})},
    }
    if passphrase is not None:
        settings["802-11-wireless-security"] = {
            "key-mgmt": Variant("s", "wpa-psk"),
            "psk": Variant("s", passphrase),
            "proto": Variant("as", ["rsn"]),
            "pairwise": Variant("as", ["ccmp"]),
            "group": Variant("as", ["ccmp"]),
            "pmf": Variant("i", _PMF_DISABLE),
        }
    return settings


def _with_connection(
    settings: dict[str, dict[str, Variant]], **changes: Variant
) -> dict[str, dict[str, Variant]]:
    copied = {name: dict(values) for name, values in settings.items()}
    copied["connection"].update(changes)
    return copied


def _access_point(props: dict[str, Variant]) -> AccessPoint | None:
    ssid = bytes(props["Ssid"].value) if "Ssid" in props else b""
    if not ssid:
        return None  # a hidden network: nothing to show
    flags = int(props["Flags"].value) if "Flags" in props else 0
    wpa = int(props["WpaFlags"].value) if "WpaFlags" in props else 0
    rsn = int(props["RsnFlags"].value) if "RsnFlags" in props else 0
    frequency = int(props["Frequency"].value) if "Frequency" in props else None
    return AccessPoint(
        ssid=ssid,
        strength=int(props["Strength"].value) if "Strength" in props else 0,
        secured=bool(flags & _AP_FLAGS_PRIVACY or wpa or rsn),
        frequency_mhz=frequency or None,
    )
