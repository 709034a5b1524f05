"""``run``: the agent's long-lived orchestration.

One :class:`asyncio.TaskGroup` holds the device's loops - the state reconciler (LED, zeroconf,
BLE, provisioning window, hotspot and captive page follow the persisted state), the MQTT supervisor
(runs the MQTT runtime while the device is online), the zero-touch loop and the action queue
(button presses and reset requests, which arrive as signals or from the GPIO button).
``stop()`` (SIGTERM/SIGINT in the CLI) ends them all; a running commit rolls back on the way out.

This module is also the one place that knows the MQTT runtime's interface
(``device_firmware.mqtt_runtime``): a factory builds a runtime from the saved credentials.

The provisioning window opens at boot while unclaimed, on a button press and after a factory
reset; on a claimed device also when the saved Wi-Fi stays down (the watchdog: re-onboarding)
and on a short button press. A claimed device's window only ever admits its owner's session
(the session host asks ``DeviceController.session_policy`` at every hello), so reopening it
never lets the label back in; the hotspot and captive page stay for unclaimed devices only.

BLE (``device_firmware.ble.bluez``) starts once the session host exists, when ``ble`` is on; if
BlueZ cannot be used the agent logs one warning with the next step and carries on over the LAN.
With ``ble_bridge`` set, the loopback bridge (``device_firmware.ble.bridge``) serves the same
services to TCP clients on 127.0.0.1 instead of BlueZ (tests and demos).
A button press on an unclaimed device also authorizes Improv Wi-Fi.

The button is a push button on the GPIO line ``button_gpio`` (libgpiod 2): a short press is
:attr:`Action.BUTTON`, holding it ``button_hold`` seconds is :attr:`Action.RESET`, both queued
like the signals (SIGUSR1, SIGUSR2) that stand in for it on boards without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import random
from collections.abc import Callable, Coroutine, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Protocol

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from iob_protocol.diagnostics import DiagnosticCode
from iob_protocol.httplog import server_logger
from iob_protocol.sources import MonotonicClock, WallClock, monotonic, unix_time

from .ble.bluez import BluezPeripheral
from .ble.bridge import BridgePeripheral
from .ble.errors import BluezError
from .capabilities import default_capabilities
from .capabilities.gpio import EdgeLine, GpioResetButton, reset_button
from .config import DeviceConfig, bridge_address
from .controller import DeviceController
from .decide import (
    Facts,
    Trigger,
    Uplink,
    WindowReason,
    button_authorizes_improv,
    decide,
    runs_mqtt,
    watches_wifi,
    window_for,
)
from .errors import ConfigError, DiagnosedError, RelayError, StateError
from .factory import ProvisionedDevice, hotspot_passphrase, hotspot_ssid
from .hardware import Hardware
from .led import StatusLed
from .mqtt_runtime import DeviceCommand, DeviceInfo, MqttRuntime, MqttSettings
from .network.backend import NetworkBackend, NetworkError
from .provisioning.advertise import Advertiser, resolve_addresses
from .provisioning.captive import create_captive_app
from .provisioning.http_guard import ConnectionGuard, GuardedAppRunner
from .provisioning.server import create_app
from .provisioning.session_host import SessionHost
from .relay_client import CredentialRecovery, NotOwned, RelayClient, build_ssl_context
from .state import DeviceStateRecord, MqttCredentials, Ownership, Phase, StateStore
from .watchdog import DEFAULT_POLL_INTERVAL, WifiWatchdog
from .window import ProvisioningWindow
from .zero_touch import sign_zero_touch

_LOGGER = logging.getLogger(__name__)
#: The LAN server's and captive page's own log: a request that is not HTTP is one INFO line.
_HTTP_LOGGER = server_logger("device_firmware.http", (HttpProcessingError,))

ZERO_TOUCH_FIRST_RETRY: Final = 30.0
#: First retry of a failed zeroconf advertisement, doubling up to the maximum.
ADVERTISE_RETRY: Final = 5.0
ADVERTISE_RETRY_MAX: Final = 300.0
ZERO_TOUCH_MAX_RETRY: Final = 600.0
#: After the runtime gave up (BROKER_AUTH_FAILED, TLS_FAILED), try again this much later.
MQTT_RETRY_SECONDS: Final = 60.0


class MqttRuntimeLike(Protocol):
    """What the agent needs from :class:`~.mqtt_runtime.MqttRuntime` (tests substitute it)."""

    async def run(self) -> None:
        """Run until cancelled (connect with LWT, publish, handle commands, reconnect)."""

    async def wait_connected(self) -> None:
        """Return once connected and announced."""

    async def clear_retained(self) -> None:
        """Clear the device's retained messages (factory reset)."""


class RuntimeFactory(Protocol):
    """Builds the MQTT runtime for a device id and the saved credentials.

    ``commands`` are the device-level commands (``identify``, ``factory_reset``) the runtime
    routes from ``iob/<id>/cmd/_<name>``; None where nothing is served (clearing on reset).
    """

    def __call__(
        self,
        device_id: str,
        credentials: MqttCredentials,
        /,
        commands: Mapping[str, DeviceCommand] | None = None,
    ) -> MqttRuntimeLike:
        """A runtime that has not connected yet."""
        ...


def mqtt_settings(credentials: MqttCredentials) -> MqttSettings:
    """The runtime's settings from what the commit saved.

    The broker pin from ``set_claim`` (SHA-256 of the broker's SubjectPublicKeyInfo) is used
    only with TLS: on a plain connection there is no key to pin.
    """
    return MqttSettings(
        host=credentials.host,
        port=credentials.port,
        username=credentials.username,
        password=credentials.password,
        tls=credentials.tls,
        ca_pin=credentials.ca_pin.hex() if credentials.ca_pin and credentials.tls else None,
    )


def default_runtime_factory(
    *, simulated: bool, model: str | None = None, firmware: str | None = None
) -> RuntimeFactory:
    """Build the MQTT runtime with this device's capabilities (system sensors, demo or GPIO)."""
    capabilities = default_capabilities(simulated=simulated)
    info = DeviceInfo(model=model, sw_version=firmware)

    def factory(
        device_id: str,
        credentials: MqttCredentials,
        /,
        commands: Mapping[str, DeviceCommand] | None = None,
    ) -> MqttRuntimeLike:
        return MqttRuntime(
            device_id,
            mqtt_settings(credentials),
            capabilities,
            device_info=info,
            device_commands=commands,
        )

    return factory


class Action(StrEnum):
    """Requests that arrive from outside the event loop (signals, the button)."""

    BUTTON = "button"
    RESET = "reset"


async def recover_boot(store: StateStore, backend: NetworkBackend) -> DeviceStateRecord:
    """Finish what a power cut interrupted (see :mod:`device_firmware.state`)."""
    record = await asyncio.to_thread(store.recover)
    if record.phase is not Phase.COMMITTING:
        return record
    if record.claim_in_flight is not None:
        return record  # the service may own the device: the agent resumes the claim
    if record.claimed:
        _LOGGER.warning("boot during a commit that the service had confirmed: online")
        return await store.update(phase=Phase.ONLINE)
    _LOGGER.warning("boot during an unconfirmed commit: rolled back (TIMEOUT)")
    with contextlib.suppress(NetworkError):
        await backend.rollback()
    return await store.update(
        phase=Phase.PROVISIONING, diagnostic=DiagnosticCode.TIMEOUT, diagnostic_at=unix_time()
    )


class Agent:
    """The device agent: provisioning while unclaimed, MQTT while online."""

    def __init__(
        self,
        config: DeviceConfig,
        backend: NetworkBackend,
        *,
        runtime_factory: RuntimeFactory | None = None,
        hardware: Hardware | None = None,
        wall_clock: WallClock = unix_time,
        clock: MonotonicClock = monotonic,
        advertise: bool = True,
        status_led: StatusLed | None = None,
        ble_bus_address: str | None = None,
        button_line_factory: Callable[[str, int], EdgeLine] | None = None,
    ) -> None:
        """``runtime_factory`` None: no MQTT (provisioning only, e.g. tests of the lifecycle).

        ``ble_bus_address``: the D-Bus BlueZ is on (tests' private bus); the system bus if None.
        ``button_line_factory(chip, offset)`` requests the button's line (tests' fake lines);
        libgpiod 2 if None.
        """
        self._config = config
        self._backend = backend
        self._runtime_factory = runtime_factory
        self._hardware = hardware or Hardware()
        self._wall_clock = wall_clock
        self._clock = clock
        self._advertise = advertise
        self._status_led = status_led or StatusLed(None)
        self._ble_bus_address = ble_bus_address
        self._ble: BluezPeripheral | BridgePeripheral | None = None
        self._button_line_factory = button_line_factory
        self._button: GpioResetButton | None = None
        self._store = StateStore(config.state_file)
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._actions: asyncio.Queue[Action] = asyncio.Queue()
        self._waiters: set[asyncio.Future[None]] = set()
        self._version = 0
        #: Seconds until a failed advertisement is tried again (None: nothing failed).
        self._advertise_retry: float | None = None
        self._runtime: MqttRuntimeLike | None = None
        self._lan_runner: web.AppRunner | None = None
        self._captive_runner: web.AppRunner | None = None
        self._advertiser: Advertiser | None = None
        self._hotspot_on = False
        self._device: ProvisionedDevice | None = None
        self._controller: DeviceController | None = None
        self._reconcile_lock = asyncio.Lock()
        self._host: SessionHost | None = None
        self._window: ProvisioningWindow | None = None
        self._guard: ConnectionGuard | None = None
        self._loop_handler: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None = (
            None
        )

    # --- for the CLI and tests --------------------------------------------------------------

    @property
    def store(self) -> StateStore:
        """The persisted state."""
        return self._store

    @property
    def controller(self) -> DeviceController:
        """The device controller (after :meth:`ready`)."""
        if self._controller is None:
            raise RuntimeError("agent not started")
        return self._controller

    @property
    def session_host(self) -> SessionHost:
        """The session host (after :meth:`ready`)."""
        if self._host is None:
            raise RuntimeError("agent not started")
        return self._host

    @property
    def window(self) -> ProvisioningWindow:
        """The provisioning window (after :meth:`ready`)."""
        if self._window is None:
            raise RuntimeError("agent not started")
        return self._window

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
        return _bound_ports(self._lan_runner)

    def captive_ports(self) -> list[int]:
        """Ports the captive page listens on, while the hotspot is up."""
        return _bound_ports(self._captive_runner)

    async def ready(self) -> None:
        """Wait until the servers listen."""
        await self._ready.wait()

    def stop(self) -> None:
        """Ask :meth:`run` to finish (signal handlers call this)."""
        self._stop.set()

    def request(self, action: Action) -> None:
        """Queue a button press or a reset (signal handlers call this)."""
        self._actions.put_nowait(action)

    # --- state notifications ----------------------------------------------------------------

    def _state_changed(self, _record: DeviceStateRecord) -> None:
        self._version += 1
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def _changed(self, seen: int | None = None) -> int:
        """Wait for a state change after version ``seen`` (now, if None); return the version.

        Loops pass the version they acted on, so a change made while they were busy is never
        missed.
        """
        if seen is None:
            seen = self._version
        while self._version == seen:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.add(waiter)
            await waiter
        return self._version

    # --- run --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until :meth:`stop`."""
        config = self._config
        self._device = device = await asyncio.to_thread(ProvisionedDevice.load, config)
        record = await recover_boot(self._store, self._backend)
        ssl_context = await asyncio.to_thread(build_ssl_context, config.relay_ca_file)
        async with aiohttp.ClientSession() as http:

            def relay_factory(url: str) -> RelayClient:
                return RelayClient(
                    url, session=http, timeout=config.relay_timeout, ssl_context=ssl_context
                )

            self._relay_factory = relay_factory
            controller = DeviceController(
                device=device,
                store=self._store,
                backend=self._backend,
                relay_factory=relay_factory,
                commit_timeout=config.commit_timeout,
                hardware=self._hardware,
                clear_retained=self._clear_retained,
                wall_clock=self._wall_clock,
            )
            self._controller = controller
            self._host = host = SessionHost(
                device,
                controller.dispatch,
                clock=self._clock,
                allow_insecure_http=config.allow_insecure_http,
                policy=controller.session_policy,
                on_established=controller.forget_pending,
            )
            self._window = window = ProvisioningWindow(host, claimed=record.claimed)
            window.open_for(Trigger.BOOT, record)

            def reset() -> None:
                window.open_for(Trigger.FACTORY_RESET, self._store.current)

            controller.add_reset_listener(reset)
            try:
                await self._start_lan(host, controller)
                await self._start_ble(host, controller, device)
                if config.port_file is not None:
                    await asyncio.to_thread(_write_port_file, config.port_file, self._ports())
                await self._start_button()
                if self._advertise:
                    self._advertiser = Advertiser(
                        device_id=device.info.device_id,
                        model=device.info.model,
                        firmware=device.info.firmware_version,
                        port=self.lan_ports()[0],
                        addresses=await asyncio.to_thread(resolve_addresses, config.advertise),
                    )
                controller.add_state_listener(self._state_changed)
                if record.claim_in_flight is not None:
                    controller.resume_claim(record.claim_in_flight)
                await self._run_loops()
            finally:
                await controller.aclose()
                await self._shutdown()

    async def _run_loops(self) -> None:
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(self._reconcile_loop(), name="iob-reconcile"),
                group.create_task(self._action_loop(), name="iob-actions"),
            ]
            if self._runtime_factory is not None:
                tasks.append(group.create_task(self._mqtt_loop(), name="iob-mqtt"))
            if self._config.zero_touch_url is not None:
                tasks.append(group.create_task(self._zero_touch_loop(), name="iob-zero-touch"))
            if self._config.reonboard_after > 0:
                after = self._config.reonboard_after
                watchdog = WifiWatchdog(
                    self._backend,
                    self._wifi_lost,
                    after=after,
                    # A short outage limit (tests, impatient makers) is checked as often.
                    poll_interval=min(DEFAULT_POLL_INTERVAL, after / 4),
                    applies=self._reonboarding_applies,
                )
                tasks.append(group.create_task(watchdog.run(), name="iob-watchdog"))
            await self._reconcile()
            self._ready.set()
            await self._stop.wait()
            for task in tasks:
                task.cancel()

    def _reonboarding_applies(self) -> bool:
        return watches_wifi(self._store.current)

    def _wifi_lost(self) -> None:
        """The saved Wi-Fi has been down for a while: let the owner send new credentials.

        The window admits only the owner's session (the owner secret saved with the claim).
        """
        record = self._store.current
        if watches_wifi(record) and record.owner_secret is None:
            _LOGGER.warning(
                "saved Wi-Fi lost, but this device was claimed without an owner secret: "
                "factory-reset it to set up its Wi-Fi again"
            )
        self.window.open_for(Trigger.WIFI_LOST, record)

    def _ports(self) -> dict[str, int | None]:
        """What the port file says: this process and the ports it listens on."""
        bridge = self._ble.port if isinstance(self._ble, BridgePeripheral) else None
        return {"pid": os.getpid(), "lan": self.lan_ports()[0], "ble_bridge": bridge}

    async def _shutdown(self) -> None:
        if self._config.port_file is not None:
            await asyncio.to_thread(_remove_port_file, self._config.port_file)
        await self._status_led.aclose()
        if self._button is not None:
            await self._button.aclose()
            self._button = None
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
        if self._window is not None:
            self._window.close()
        await self._backend.aclose()

    def _http_guard(self) -> ConnectionGuard:
        """The connection cap and timeouts the LAN server and the captive page share."""
        if self._guard is None:
            self._guard = ConnectionGuard(self._config.server_limits)
        return self._guard

    async def _start_lan(self, host: SessionHost, controller: DeviceController) -> None:
        guard = self._http_guard()
        loop = asyncio.get_running_loop()
        self._loop_handler = loop.get_exception_handler()
        loop.set_exception_handler(guard.exception_handler(self._loop_handler))
        runner = GuardedAppRunner(
            create_app(host, controller), guard, access_log=None, logger=_HTTP_LOGGER
        )
        await runner.setup()
        self._lan_runner = runner
        port = self._config.port
        for address in self._config.listen:
            site = web.TCPSite(runner, address, port)
            await site.start()
            if port == 0:  # every address on the same ephemeral port
                port = _bound_ports(runner)[0]
        _LOGGER.info("LAN provisioning server on %s port %d", ", ".join(self._config.listen), port)

    async def _start_ble(
        self, host: SessionHost, controller: DeviceController, device: ProvisionedDevice
    ) -> None:
        """BLE provisioning beside the LAN server; without BlueZ the agent carries on."""
        if not self._config.ble:
            return
        if self._config.ble_bridge is not None:
            # The radio's stand-in for tests and demos: asked for explicitly, so a port that
            # cannot be bound stops the agent (BleError) instead of being skipped.
            bridge = BridgePeripheral(
                host=host,
                controller=controller,
                device=device,
                bind=bridge_address(self._config.ble_bridge),
                improv=self._config.improv,
            )
            await bridge.start()
            self._ble = bridge
            return
        peripheral = BluezPeripheral(
            host=host,
            controller=controller,
            device=device,
            adapter=self._config.ble_adapter,
            bus_address=self._ble_bus_address,
            improv=self._config.improv,
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

    async def _start_button(self) -> None:
        """Watch the GPIO button, if one is configured; without it the agent carries on."""
        config = self._config
        if config.button_gpio is None:
            return
        button = reset_button(
            config.button_gpio,
            lambda: self.request(Action.RESET),
            chip=config.gpio_chip,
            hold=config.button_hold,
            on_short_press=lambda: self.request(Action.BUTTON),
            open_line=self._button_line_factory,
        )
        if button is None:
            _LOGGER.info(
                "no libgpiod 2: the button is not watched; use `iob-device reset` / SIGUSR1"
            )
            return
        try:
            await button.start()
        except OSError as err:
            _LOGGER.warning(
                "the button on %s line %d is not watched: %s; check button_gpio and gpio_chip, "
                "and that the service user is in the gpio group (meanwhile: `iob-device reset`, "
                "SIGUSR1)",
                config.gpio_chip,
                config.button_gpio,
                err,
            )
            return
        self._button = button
        _LOGGER.info(
            "button on %s line %d: short press opens provisioning, %.0f s hold factory-resets",
            config.gpio_chip,
            config.button_gpio,
            config.button_hold,
        )

    # --- reconciling the outside world with the state ---------------------------------------

    async def _reconcile_loop(self) -> None:
        seen = self._version
        while True:
            # A failed advertisement is retried on its own (backing off), not only at the
            # next state change: a fresh device that nobody can discover would wait for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._advertise_retry):
                    seen = await self._changed(seen)
            await self._reconcile()

    async def _reconcile(self) -> None:
        async with self._reconcile_lock:
            await self._reconcile_locked()

    async def _reconcile_locked(self) -> None:
        """Apply :func:`~device_firmware.decide.decide` to what runs."""
        record = self._store.current
        window = self.window
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
        if self._advertiser is not None and decision.zeroconf is not None:
            # Advertised in every state, only the TXT ``state`` changes: Home Assistant's
            # zeroconf aborts the discovery flows of a REMOVED record (the user's onboarding
            # flow would vanish as the claim succeeds), and follows an owned device's address.
            try:
                await self._advertiser.publish(decision.zeroconf.value)
            except OSError as err:
                delay = min(2 * (self._advertise_retry or ADVERTISE_RETRY / 2), ADVERTISE_RETRY_MAX)
                self._advertise_retry = delay
                _LOGGER.warning("zeroconf: %s; trying again in %.0f s", err, delay)
            else:
                self._advertise_retry = None
        if self._ble is not None:
            # The peripheral follows the window itself (it can lapse): decision.ble_advertise.
            await self._ble.update_state(record)  # logs D-Bus failures, never raises
        if decision.probe_uplink:
            decision = decide(dataclasses.replace(facts, uplink=await self._uplink()))
        if decision.hotspot and not self._hotspot_on:
            await self._start_hotspot(captive_page=decision.captive_page)
        elif not decision.hotspot and self._hotspot_on:
            await self._stop_hotspot()

    async def _start_hotspot(self, *, captive_page: bool) -> None:
        device = self._device
        if device is None:
            return
        try:
            await self._backend.start_hotspot(
                hotspot_ssid(device.info.device_id), hotspot_passphrase(device.setup_code)
            )
        except NetworkError as err:
            _LOGGER.warning("cannot open the setup hotspot: %s", err)
            return
        self._hotspot_on = True
        if captive_page:
            await self._start_captive()

    async def _uplink(self) -> Uplink:
        """Saved Wi-Fi connected, or any uplink (Ethernet) that reaches the internet."""
        try:
            if await self._backend.wifi_connected():
                return Uplink.CONNECTED
            await self._backend.check_internet()
        except NetworkError:
            return Uplink.NONE
        return Uplink.CONNECTED

    async def _stop_hotspot(self) -> None:
        self._hotspot_on = False
        await self._stop_captive()
        try:
            await self._backend.stop_hotspot()
        except NetworkError as err:
            _LOGGER.warning("cannot close the setup hotspot: %s", err)

    async def _start_captive(self) -> None:
        if self._captive_runner is not None or self._host is None:
            return
        config = self._config
        host = config.captive_host
        port_text = "" if config.captive_port == 80 else f":{config.captive_port}"  # noqa: PLR2004
        literal = f"[{host}]" if ipaddress.ip_address(host).version == 6 else host  # noqa: PLR2004
        app = create_captive_app(self._host, self.controller, origin=f"http://{literal}{port_text}")
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

    # --- actions ----------------------------------------------------------------------------

    async def _action_loop(self) -> None:
        while True:
            action = await self._actions.get()
            if action is Action.RESET:
                _LOGGER.warning("factory reset requested")
                await self.controller.factory_reset()
            else:
                record = self._store.current
                if window_for(Trigger.BUTTON, record) is WindowReason.BUTTON_OWNER:
                    _LOGGER.info("button: window for the owner's session only (hold to reset)")
                self.window.open_for(Trigger.BUTTON, record)
                if button_authorizes_improv(record):
                    await self._reconcile()
                    if self._ble is not None:
                        # Improv's physical authorization, after the window it needs is open.
                        await self._ble.authorize_improv()
            await self._reconcile()

    # --- MQTT -------------------------------------------------------------------------------

    async def _mqtt_loop(self) -> None:
        """Run the MQTT runtime while online; restart it when the credentials change."""
        factory = self._runtime_factory
        if factory is None:
            return
        while True:
            seen = self._version
            record = self._store.current
            if not runs_mqtt(record) or record.mqtt is None or self._device is None:
                await self._changed(seen)
                continue
            credentials = record.mqtt
            self._runtime = runtime = factory(
                self._device.info.device_id, credentials, self._device_commands()
            )
            task = asyncio.create_task(runtime.run(), name="iob-mqtt-runtime")
            connected = asyncio.create_task(runtime.wait_connected(), name="iob-mqtt-connected")
            watch: set[asyncio.Future[Any]] = {task, connected}
            try:
                while not task.done():
                    changed = asyncio.create_task(self._changed(seen))
                    try:
                        await asyncio.wait({*watch, changed}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        changed.cancel()  # also when the agent stops meanwhile: no orphan task
                    seen = self._version
                    if connected in watch and connected.done():
                        watch.discard(connected)
                        await self._clear_broker_diagnostic()
                    now = self._store.current
                    if now.phase is not Phase.ONLINE or now.mqtt != credentials:
                        break
            finally:
                for pending in (task, connected):
                    pending.cancel()
                # wait, not await: a runtime that failed is handled below, not raised here.
                await asyncio.wait({task, connected})
                self._runtime = None
            await self._runtime_ended(task)

    def _device_commands(self) -> dict[str, DeviceCommand]:
        """What the owner's Home Assistant may ask over MQTT besides entity commands."""

        async def identify() -> None:
            record = self._store.current
            self._hardware.identify(record.phase, record.diagnostic)

        async def factory_reset() -> None:
            # Queued like the CLI's reset (SIGUSR2): the reset ends this very runtime.
            _LOGGER.warning("factory reset requested over MQTT by the owner")
            self.request(Action.RESET)

        return {"identify": identify, "factory_reset": factory_reset}

    async def _clear_broker_diagnostic(self) -> None:
        record = self._store.current
        if record.diagnostic in {DiagnosticCode.BROKER_AUTH_FAILED, DiagnosticCode.TLS_FAILED}:
            await self._store.update(diagnostic=None, diagnostic_at=None)
            self.controller.notify()

    async def _runtime_ended(self, task: asyncio.Task[None]) -> None:
        """A runtime that gave up (bad credentials, TLS) leaves its diagnostic, then retries."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        if await self._fetch_rotated_credentials(error):
            return  # saved: the MQTT loop restarts the runtime with it at once
        if isinstance(error, DiagnosedError) and self._store.current.phase is Phase.ONLINE:
            _LOGGER.error("MQTT: %s (%s)", error.code.message, error)
            await self._store.update(diagnostic=error.code, diagnostic_at=self._wall_clock())
            self.controller.notify()
        else:
            _LOGGER.error("MQTT runtime stopped", exc_info=error)
        # The owner's fix (broker reconcile, a new pin) happens elsewhere: retry, slowly.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(MQTT_RETRY_SECONDS):
                await self._changed()

    async def _fetch_rotated_credentials(self, error: BaseException | None) -> bool:
        """BROKER_AUTH_FAILED: the owner may have rotated the password; fetch and save the new one.

        True once a different credential is saved, or once the device is unclaimed because
        the service answered that nobody owns it (released). Never in a tight loop: the
        recovery fetches once per refusal and backs off after a fetch that brought nothing new.
        """
        record = self._store.current
        if (
            not isinstance(error, DiagnosedError)
            or error.code is not DiagnosticCode.BROKER_AUTH_FAILED
            or record.phase is not Phase.ONLINE
            or record.mqtt is None
            or record.ownership is None
            or self._device is None
        ):
            return False
        if self._credential_recovery is None:
            self._credential_recovery = CredentialRecovery(
                self._device.identity,
                self._relay_factory,
                wall_clock=self._wall_clock,
                clock=self._clock,
            )
        saved = record.mqtt
        grant = await self._credential_recovery.fetch(
            record.ownership.service_url, refused_password=saved.password
        )
        if grant is None:
            return False
        if isinstance(grant, NotOwned):
            return await self._released(record.ownership)
        # Only the login changes: the broker address and pin may be Home Assistant's override
        # from set_claim (an IoT VLAN reaches the broker by another name).
        fetched = dataclasses.replace(saved, username=grant.username, password=grant.password)
        try:
            return await self._store.replace_mqtt(saved, fetched)
        except StateError as err:
            _LOGGER.warning(
                "MQTT: cannot save the fetched credential (%s); check the data directory's "
                "free space and permissions",
                err,
            )
            return False

    async def _released(self, ownership: Ownership) -> bool:
        """The household released the device: back to unclaimed, as after a factory reset.

        Only the service's definitive "unowned" answer to the device's own signed request
        gets here (never a refusal, an error or silence). The claim, household, MQTT
        credential and owner secret go in one atomic write; the identity and the Wi-Fi stay,
        so a new owner claims the device over the LAN with the label's code. The runtime has
        already stopped (the broker refused it); the owner's session ends and the label's
        window opens; zeroconf and BLE follow the state.
        """
        try:
            released = await self._store.release_claim(ownership)
        except StateError as err:
            _LOGGER.warning(
                "the account service says this device was released, but the state cannot be "
                "saved (%s); check the data directory's free space and permissions",
                err,
            )
            return False
        if not released:
            return False  # claimed again or changing its Wi-Fi meanwhile: not this owner's
        self._credential_recovery = None
        _LOGGER.warning(
            "released by its household (%s) at the account service: the device is unclaimed "
            "again and keeps its Wi-Fi; set it up again with its label code",
            ownership.household_id,
        )
        # The old owner's session ends, if one is open.
        self.window.open_for(Trigger.RELEASED, self._store.current, end_session=True)
        self.controller.notify()
        return True

    async def _clear_retained(self, record: DeviceStateRecord) -> None:
        """Factory reset: clear retained messages with the running runtime, or a fresh one."""
        runtime = self._runtime
        if runtime is None:
            if self._runtime_factory is None or record.mqtt is None or self._device is None:
                return
            runtime = self._runtime_factory(self._device.info.device_id, record.mqtt)
        await runtime.clear_retained()

    # --- zero-touch -------------------------------------------------------------------------

    async def _zero_touch_loop(self) -> None:
        url = self._config.zero_touch_url
        device = self._device
        if url is None or device is None:
            return
        delay = ZERO_TOUCH_FIRST_RETRY
        while not self._store.current.claimed:
            seen = self._version
            if self._store.current.phase is not Phase.UNCLAIMED:
                await self._changed(seen)  # someone is setting the device up by hand
                continue
            try:
                await self._zero_touch_once(url, device)
            except RelayError as err:
                if err.code is DiagnosticCode.CLAIM_REJECTED:
                    _LOGGER.info("zero-touch: not pre-assigned (%s); set it up by hand", err)
                    await self._store.update(diagnostic=err.code, diagnostic_at=self._wall_clock())
                    return
                _LOGGER.info("zero-touch: %s; retrying in %.0f s", err, delay)
            except (DiagnosedError, StateError) as err:
                _LOGGER.info("zero-touch: %s; retrying in %.0f s", err, delay)
            else:
                return
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter
            delay = min(delay * 2, ZERO_TOUCH_MAX_RETRY)

    async def _zero_touch_once(self, url: str, device: ProvisionedDevice) -> None:
        from iob_protocol.claim import MAX_SKEW_SECONDS  # noqa: PLC0415

        async with self._relay_factory(url) as relay:
            health = await relay.health()
            skew = self._wall_clock() - health.time
            if abs(skew) > MAX_SKEW_SECONDS:
                raise RelayError(DiagnosticCode.CLOCK_SKEW, f"device clock is {skew:+d} s off")
            message = sign_zero_touch(device.identity, clock=self._wall_clock)
            outcome = await relay.confirm_zero_touch(message, device.info.device_id)
        if self._store.current.phase is not Phase.UNCLAIMED:
            return
        await self._store.update(
            phase=Phase.ONLINE,
            diagnostic=None,
            diagnostic_at=None,
            ownership=Ownership(
                household_id=outcome.household_id, service_url=url, claimed_at=self._wall_clock()
            ),
            mqtt=MqttCredentials(
                host=outcome.mqtt.host,
                port=outcome.mqtt.port,
                tls=outcome.mqtt.tls,
                username=outcome.mqtt.username,
                password=outcome.mqtt.password,
            ),
        )
        _LOGGER.info("zero-touch: owned by household %s", outcome.household_id)
        self.controller.notify()

    _relay_factory: Callable[[str], RelayClient]
    _credential_recovery: CredentialRecovery | None = None


def _write_port_file(path: Path, document: Mapping[str, int | None]) -> None:
    """Write the port file under a temporary name and rename it: readers never see half."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(document) + "\n", encoding="utf-8")
        temporary.replace(path)
    except OSError as err:
        temporary.unlink(missing_ok=True)
        raise ConfigError(
            f"cannot write the port file {path}: {err.strerror or err}; "
            "choose a writable path (--port-file or port_file)"
        ) from err
    _LOGGER.debug("ports written to %s: %s", path, document)


def _remove_port_file(path: Path) -> None:
    """Remove the port file if it is this process's (another agent may have replaced it)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(document, dict) and document.get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def _bound_ports(runner: web.AppRunner | None) -> list[int]:
    if runner is None:
        return []
    return sorted(
        {
            int(address[1])
            for address in runner.addresses
            if isinstance(address, tuple) and len(address) >= 2  # noqa: PLR2004 - (host, port)
        }
    )


async def run_agent(agent: Agent, main: Coroutine[Any, Any, None] | None = None) -> None:
    """Run ``agent``; if ``main`` is given, stop the agent when it returns (tests, demo)."""
    task = asyncio.create_task(agent.run())
    try:
        if main is not None:
            await agent.ready()
            await main
            agent.stop()
        await task
    finally:
        if not task.done():
            agent.stop()
            await task
