"""How the device shows itself: LED, LAN server, zeroconf, BLE, the hotspot and captive page.

:class:`Presence` starts the LAN server and BLE provisioning, and reconciles the rest with the
state: at every change it gathers the facts, asks :func:`~device_firmware.decide.decide` what the
device should be doing and applies the difference to what runs. It decides nothing itself.

BLE (``device_firmware.ble.bluez``) starts when ``ble`` is on; if BlueZ cannot be used it logs
one warning with the next step and the device carries on over the LAN. With ``ble_bridge`` set,
the loopback bridge (``device_firmware.ble.bridge``) serves the same services to TCP clients on
127.0.0.1 instead of BlueZ (tests and demos). The BLE peripherals, like the hotspot and the
captive page, follow the decision; the window can lapse between two state changes, so it is
checked every :data:`WINDOW_CHECK` seconds and a lapse is decided again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from iob_protocol.httplog import server_logger

from .ble.bluez import BluezPeripheral
from .ble.bridge import BridgePeripheral
from .ble.errors import BluezError
from .changes import StateChanges
from .config import DeviceConfig, bridge_address
from .controller import DeviceController
from .decide import Facts, Uplink, WindowReason, decide
from .factory import ProvisionedDevice, hotspot_passphrase, hotspot_ssid
from .led import StatusLed
from .network.backend import NetworkBackend, NetworkError
from .provisioning.advertise import Advertiser, resolve_addresses
from .provisioning.captive import create_captive_app
from .provisioning.http_guard import ConnectionGuard, GuardedAppRunner
from .provisioning.server import create_app
from .provisioning.session_host import SessionHost
from .state import StateStore
from .window import ProvisioningWindow

_LOGGER = logging.getLogger(__name__)
#: The LAN server's and captive page's own log: a request that is not HTTP is one INFO line.
_HTTP_LOGGER = server_logger("device_firmware.http", (HttpProcessingError,))

#: First retry of a failed zeroconf advertisement, doubling up to the maximum.
ADVERTISE_RETRY: Final = 5.0
ADVERTISE_RETRY_MAX: Final = 300.0
#: First retry of a setup hotspot that did not open, doubling up to the maximum (on a real
#: radio wpa_supplicant can fail to start the AP once, e.g. right after a failed join).
HOTSPOT_RETRY: Final = 10.0
HOTSPOT_RETRY_MAX: Final = 120.0
#: How often the window is checked between state changes: it lapses on its own (15 minutes,
#: or a lockout), and then the hotspot, the captive page and the BLE advertisement go.
WINDOW_CHECK: Final = 15.0


class Presence:
    """The device's servers, radios and LED, kept in step with the state."""

    def __init__(
        self,
        config: DeviceConfig,
        backend: NetworkBackend,
        *,
        store: StateStore,
        changes: StateChanges,
        host: SessionHost,
        controller: DeviceController,
        device: ProvisionedDevice,
        window: ProvisioningWindow,
        status_led: StatusLed,
        ble_bus_address: str | None = None,
        window_check: float | None = None,
    ) -> None:
        """Nothing starts before :meth:`start`.

        ``window_check``: seconds between checks of the window (it can lapse on its own);
        :data:`WINDOW_CHECK` when None.
        """
        self._config = config
        self._backend = backend
        self._store = store
        self._changes = changes
        self._host = host
        self._controller = controller
        self._device = device
        self._window = window
        self._status_led = status_led
        self._ble_bus_address = ble_bus_address
        self._ble: BluezPeripheral | BridgePeripheral | None = None
        self._lan_runner: web.AppRunner | None = None
        self._captive_runner: web.AppRunner | None = None
        self._advertiser: Advertiser | None = None
        self._hotspot_on = False
        self._guard: ConnectionGuard | None = None
        self._loop_handler: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None = (
            None
        )
        #: Seconds until a failed advertisement is tried again (None: nothing failed).
        self._advertise_retry: float | None = None
        #: Seconds until a setup hotspot that did not open is tried again (None: none failed).
        self._hotspot_retry: float | None = None
        #: The wait of :meth:`run` between reconciles (None: it is reconciling).
        self._waiting: asyncio.Timeout | None = None
        self._reconcile_lock = asyncio.Lock()
        self._window_check = WINDOW_CHECK if window_check is None else window_check
        #: Why the window was open at the last reconcile (None: closed).
        self._window_seen: WindowReason | None = None

    @property
    def ble(self) -> BluezPeripheral | BridgePeripheral | None:
        """BLE provisioning, if enabled and BlueZ (or the loopback bridge) could be used."""
        return self._ble

    @property
    def advertiser(self) -> Advertiser | None:
        """The zeroconf advertiser, if advertising is enabled."""
        return self._advertiser

    def lan_ports(self) -> list[int]:
        """Ports the LAN server listens on (useful with ``port = 0``)."""
        return bound_ports(self._lan_runner)

    def captive_ports(self) -> list[int]:
        """Ports the captive page listens on, while the hotspot is up."""
        return bound_ports(self._captive_runner)

    # --- start and stop ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start the LAN server, then BLE provisioning."""
        await self._start_lan()
        await self._start_ble()

    async def start_advertiser(self) -> None:
        """Prepare zeroconf on the LAN server's port; the first reconcile publishes it."""
        device = self._device
        self._advertiser = Advertiser(
            device_id=device.info.device_id,
            model=device.info.model,
            firmware=device.info.firmware_version,
            port=self.lan_ports()[0],
            device_name=self._config.name,
            addresses=await asyncio.to_thread(resolve_addresses, self._config.advertise),
        )

    async def aclose(self) -> None:
        """Stop everything started here."""
        await self._status_led.aclose()
        if self._ble is not None:
            await self._ble.stop()
            self._ble = None
        if self._advertiser is not None:
            await self._advertiser.aclose()
        await self._stop_captive()
        if self._lan_runner is not None:
            await self._lan_runner.cleanup()
            self._lan_runner = None
            asyncio.get_running_loop().set_exception_handler(self._loop_handler)

    def _http_guard(self) -> ConnectionGuard:
        """The connection cap and timeouts the LAN server and the captive page share."""
        if self._guard is None:
            self._guard = ConnectionGuard(self._config.server_limits)
        return self._guard

    async def _start_lan(self) -> None:
        guard = self._http_guard()
        loop = asyncio.get_running_loop()
        self._loop_handler = loop.get_exception_handler()
        loop.set_exception_handler(guard.exception_handler(self._loop_handler))
        runner = GuardedAppRunner(
            create_app(self._host, self._controller, name=self._config.name),
            guard,
            access_log=None,
            logger=_HTTP_LOGGER,
        )
        await runner.setup()
        self._lan_runner = runner
        port = self._config.port
        for address in self._config.listen:
            site = web.TCPSite(runner, address, port)
            await site.start()
            if port == 0:  # every address on the same ephemeral port
                port = bound_ports(runner)[0]
        _LOGGER.info("LAN provisioning server on %s port %d", ", ".join(self._config.listen), port)

    async def _start_ble(self) -> None:
        """BLE provisioning beside the LAN server; without BlueZ the agent carries on."""
        config = self._config
        if not config.ble:
            return
        if config.ble_bridge is not None:
            # The radio's stand-in for tests and demos: asked for explicitly, so a port that
            # cannot be bound stops the agent (BleError) instead of being skipped.
            bridge = BridgePeripheral(
                host=self._host,
                controller=self._controller,
                device=self._device,
                bind=bridge_address(config.ble_bridge),
                improv=config.improv,
            )
            await bridge.start()
            self._ble = bridge
            return
        peripheral = BluezPeripheral(
            host=self._host,
            controller=self._controller,
            device=self._device,
            adapter=config.ble_adapter,
            bus_address=self._ble_bus_address,
            improv=config.improv,
        )
        try:
            await peripheral.start()
        except BluezError as err:
            _LOGGER.warning(
                "BLE provisioning is off: %s; %s (or set 'ble = false'). "
                "Provisioning carries on over the LAN and the setup hotspot",
                err.message,
                err.next_step,
            )
            return
        self._ble = peripheral

    # --- reconciling the outside world with the state ---------------------------------------

    async def run(self) -> None:
        """Reconcile until cancelled: at every state change and when the window lapsed.

        Also when a failed advertisement or a hotspot that did not open is due to be tried
        again.
        """
        seen = self._changes.version
        while True:
            # A failed advertisement or hotspot is retried on its own (backing off), not only
            # at the next state change: a fresh device that nobody can discover or join would
            # wait for ever. A reconcile outside this loop (the agent's first) that schedules
            # a retry moves the running wait's deadline (_retry_due).
            retry = self._retry()
            try:
                async with asyncio.timeout(
                    min(retry or self._window_check, self._window_check)
                ) as waiting:
                    self._waiting = waiting
                    seen = await self._changes.wait(seen)
            except TimeoutError:
                if self._retry() is None and self._window.reason == self._window_seen:
                    continue
            finally:
                self._waiting = None
            await self.reconcile()

    def _retry(self) -> float | None:
        """Seconds until the soonest retry (a failed advertisement or hotspot), if any."""
        retries = [r for r in (self._advertise_retry, self._hotspot_retry) if r is not None]
        return min(retries, default=None)

    def _retry_due(self, delay: float) -> None:
        """Make the running wait of :meth:`run` end within ``delay`` seconds."""
        waiting = self._waiting
        if waiting is None:
            return
        deadline = asyncio.get_running_loop().time() + delay
        when = waiting.when()
        if when is None or deadline < when:
            waiting.reschedule(deadline)

    async def reconcile(self) -> None:
        """Apply :func:`~device_firmware.decide.decide` to what runs, once."""
        async with self._reconcile_lock:
            await self._reconcile_locked()

    async def authorize_improv(self) -> None:
        """Improv's physical authorization (a button press), if BLE runs.

        Call it after :meth:`reconcile` applied the window the press opened, so Improv is
        offered before it is authorized.
        """
        if self._ble is not None:
            await self._ble.authorize_improv()

    async def _reconcile_locked(self) -> None:
        record = self._store.current
        window = self._window
        facts = Facts.of(
            record,
            was_claimed=window.was_claimed,
            window=window.reason,
            zeroconf_enabled=self._advertiser is not None,
            ble_running=self._ble is not None,
            improv_enabled=self._config.improv,
            hotspot_enabled=self._config.hotspot,
            hotspot_on=self._hotspot_on,
        )
        decision = decide(facts)
        await self._status_led.show(decision.led)
        window.follow(decision, record)
        self._window_seen = window.reason
        if self._advertiser is not None and decision.zeroconf is not None:
            # Advertised in every state, only the TXT ``state`` changes: Home Assistant's
            # zeroconf aborts the discovery flows of a REMOVED record (the user's onboarding
            # flow would vanish as the claim succeeds), and follows an owned device's address.
            try:
                await self._advertiser.publish(decision.zeroconf.value)
            except OSError as err:
                delay = min(2 * (self._advertise_retry or ADVERTISE_RETRY / 2), ADVERTISE_RETRY_MAX)
                self._advertise_retry = delay
                self._retry_due(delay)
                _LOGGER.warning("zeroconf: %s; trying again in %.0f s", err, delay)
            else:
                self._advertise_retry = None
        if self._ble is not None:
            await self._ble.follow(record, advertise=decision.ble_advertise)  # never raises
        if decision.probe_uplink:
            decision = decide(dataclasses.replace(facts, uplink=await self._uplink()))
        if decision.hotspot and not self._hotspot_on:
            await self._start_hotspot(captive_page=decision.captive_page)
        elif not decision.hotspot:
            self._hotspot_retry = None
            if self._hotspot_on:
                await self._stop_hotspot()

    async def _uplink(self) -> Uplink:
        """Saved Wi-Fi connected, or any uplink (Ethernet) that reaches the internet."""
        try:
            if await self._backend.wifi_connected():
                return Uplink.CONNECTED
            await self._backend.check_internet()
        except NetworkError:
            return Uplink.NONE
        return Uplink.CONNECTED

    async def _start_hotspot(self, *, captive_page: bool) -> None:
        device = self._device
        try:
            await self._backend.start_hotspot(
                hotspot_ssid(device.info.device_id), hotspot_passphrase(device.setup_code)
            )
        except NetworkError as err:
            delay = min(2 * (self._hotspot_retry or HOTSPOT_RETRY / 2), HOTSPOT_RETRY_MAX)
            self._hotspot_retry = delay
            self._retry_due(delay)
            # The join's code (SUPPLICANT_TIMEOUT reads as WIFI_AUTH_FAILED) would mislead here.
            _LOGGER.warning(
                "cannot open the setup hotspot: %s; trying again in %.0f s (if it repeats: "
                "'rfkill list' shows whether the Wi-Fi is blocked, as Raspberry Pi OS does until "
                "the Wi-Fi country is set with 'sudo raspi-config nonint do_wifi_country XX'; "
                "'journalctl -u NetworkManager -u wpa_supplicant' says why)",
                err.detail or err,
                delay,
            )
            return
        self._hotspot_retry = None
        self._hotspot_on = True
        if captive_page:
            await self._start_captive()

    async def _stop_hotspot(self) -> None:
        self._hotspot_on = False
        await self._stop_captive()
        try:
            await self._backend.stop_hotspot()
        except NetworkError as err:
            _LOGGER.warning("cannot close the setup hotspot: %s", err)

    async def _start_captive(self) -> None:
        if self._captive_runner is not None:
            return
        config = self._config
        host = config.captive_host
        port_text = "" if config.captive_port == 80 else f":{config.captive_port}"  # noqa: PLR2004
        literal = f"[{host}]" if ipaddress.ip_address(host).version == 6 else host  # noqa: PLR2004
        app = create_captive_app(
            self._host, self._controller, origin=f"http://{literal}{port_text}"
        )
        runner = GuardedAppRunner(app, self._http_guard(), access_log=None, logger=_HTTP_LOGGER)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, config.captive_port).start()
        except OSError as err:
            _LOGGER.warning("captive page not started on %s: %s", host, err)
            await runner.cleanup()
            return
        self._captive_runner = runner

    async def _stop_captive(self) -> None:
        if self._captive_runner is not None:
            await self._captive_runner.cleanup()
            self._captive_runner = None


def bound_ports(runner: web.AppRunner | None) -> list[int]:
    """The ports ``runner``'s sites listen on."""
    if runner is None:
        return []
    return sorted(
        {
            int(address[1])
            for address in runner.addresses
            if isinstance(address, tuple) and len(address) >= 2  # noqa: PLR2004 - (host, port)
        }
    )
