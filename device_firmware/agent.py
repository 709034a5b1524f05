"""``run``: the agent's wiring.

:class:`Agent` builds the device's parts and runs their loops in one :class:`asyncio.TaskGroup`:

| loop | module | what it does |
|---|---|---|
| reconcile | ``presence.py`` | LED, zeroconf, BLE, hotspot and captive page follow ``decide.py`` |
| actions | ``actions.py`` | button presses and resets (GPIO button, signals, the owner over MQTT) |
| MQTT | ``supervision.py`` | the MQTT runtime while online; rotated credentials, release |
| zero-touch | ``zero_touch.py`` | a pre-assigned device claims itself |
| watchdog | ``watchdog.py`` | the saved Wi-Fi stays down: the owner's window opens |

Every decision (what runs, when the provisioning window opens) is a pure function in
``decide.py``; ``window.py`` opens and closes the window. ``stop()`` (SIGTERM/SIGINT in the CLI)
ends the loops; a running commit rolls back on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from iob_protocol.diagnostics import DiagnosticCode
from iob_protocol.portfile import write_port_file
from iob_protocol.sources import MonotonicClock, WallClock, monotonic, unix_time

from .actions import Action, Actions
from .attempts import AttemptLog, Step
from .ble.bluez import BluezPeripheral
from .ble.bridge import BridgePeripheral
from .capabilities.gpio import EdgeLine
from .changes import StateChanges
from .config import DeviceConfig
from .controller import DeviceController
from .decide import Trigger, watches_wifi
from .errors import ConfigError
from .factory import ProvisionedDevice
from .hardware import Hardware
from .led import StatusLed
from .network.backend import NetworkBackend, NetworkError
from .presence import Presence
from .provisioning.advertise import Advertiser
from .provisioning.session_host import SessionHost
from .relay_client import RelayClient, build_ssl_context
from .state import DeviceStateRecord, Phase, StateStore
from .supervision import MqttSupervisor, RuntimeFactory
from .watchdog import DEFAULT_POLL_INTERVAL, WifiWatchdog
from .window import ProvisioningWindow
from .zero_touch import ZeroTouch

_LOGGER = logging.getLogger(__name__)


async def recover_boot(
    store: StateStore, backend: NetworkBackend, attempts: AttemptLog | None = None
) -> DeviceStateRecord:
    """Finish what a power cut interrupted (see :mod:`device_firmware.state`).

    ``attempts``: the outcome is recorded as an attempt of its own (``via boot``).
    """
    record = await asyncio.to_thread(store.recover)
    if record.phase is not Phase.COMMITTING:
        return record
    if record.claim_in_flight is not None:
        return record  # the service may own the device: the agent resumes the claim
    attempts = attempts or AttemptLog()
    if record.claimed:
        _LOGGER.warning("boot during a commit that the service had confirmed: online")
        attempts.begin("boot")
        attempts.record(Step.COMMITTED)
        return await store.update(phase=Phase.ONLINE)
    _LOGGER.warning("boot during an unconfirmed commit: rolled back (TIMEOUT)")
    with contextlib.suppress(NetworkError):
        await backend.rollback()
    attempts.begin("boot")
    attempts.record(Step.ROLLED_BACK, DiagnosticCode.TIMEOUT.value)
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
        self._store = StateStore(config.state_file)
        self._attempts = AttemptLog(None, clock=clock, wall_clock=wall_clock)
        self._changes = StateChanges()
        self._actions = Actions(config, button_line_factory=button_line_factory)
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._controller: DeviceController | None = None
        self._host: SessionHost | None = None
        self._window: ProvisioningWindow | None = None
        self._presence: Presence | None = None

    # --- for the CLI and tests --------------------------------------------------------------

    @property
    def store(self) -> StateStore:
        """The persisted state."""
        return self._store

    @property
    def attempts(self) -> AttemptLog:
        """The last onboarding attempts (read from ``attempts.json`` when :meth:`run` starts)."""
        return self._attempts

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
        return None if self._presence is None else self._presence.ble

    @property
    def advertiser(self) -> Advertiser | None:
        """The zeroconf advertiser, if advertising is enabled."""
        return None if self._presence is None else self._presence.advertiser

    def lan_ports(self) -> list[int]:
        """Ports the LAN server listens on (useful with ``port = 0``)."""
        return [] if self._presence is None else self._presence.lan_ports()

    def captive_ports(self) -> list[int]:
        """Ports the captive page listens on, while the hotspot is up."""
        return [] if self._presence is None else self._presence.captive_ports()

    async def ready(self) -> None:
        """Wait until the servers listen."""
        await self._ready.wait()

    def stop(self) -> None:
        """Ask :meth:`run` to finish (signal handlers call this)."""
        self._stop.set()

    def request(self, action: Action) -> None:
        """Queue a button press or a reset (signal handlers call this)."""
        self._actions.request(action)

    # --- run --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until :meth:`stop`."""
        config = self._config
        device = await asyncio.to_thread(ProvisionedDevice.load, config)
        self._attempts = attempts = await asyncio.to_thread(
            AttemptLog.load, config.attempts_file, clock=self._clock, wall_clock=self._wall_clock
        )
        record = await recover_boot(self._store, self._backend, attempts)
        ssl_context = await asyncio.to_thread(build_ssl_context, config.relay_ca_file)
        async with aiohttp.ClientSession() as http:

            def relay_factory(url: str) -> RelayClient:
                return RelayClient(
                    url,
                    session=http,
                    timeout=config.relay_timeout,
                    ssl_context=ssl_context,
                    allow_insecure_http=config.allow_insecure_http,
                )

            supervisor = MqttSupervisor(
                self._runtime_factory,
                device,
                store=self._store,
                changes=self._changes,
                hardware=self._hardware,
                relay_factory=relay_factory,
                request_reset=lambda: self.request(Action.RESET),
                notify=self._notify,
                on_released=self._released,
                wall_clock=self._wall_clock,
                clock=self._clock,
                attempts=attempts,
            )
            self._controller = controller = DeviceController(
                device=device,
                store=self._store,
                backend=self._backend,
                relay_factory=relay_factory,
                commit_timeout=config.commit_timeout,
                allow_insecure_http=config.allow_insecure_http,
                hardware=self._hardware,
                clear_retained=supervisor.clear_retained,
                wall_clock=self._wall_clock,
                attempts=attempts,
            )
            self._host = host = SessionHost(
                device,
                controller.dispatch,
                clock=self._clock,
                allow_insecure_http=config.allow_insecure_http,
                policy=controller.session_policy,
                on_established=controller.forget_pending,
                attempts=attempts,
            )
            self._window = window = ProvisioningWindow(host, claimed=record.claimed)
            window.open_for(Trigger.BOOT, record)
            controller.add_reset_listener(self._factory_reset_done)
            self._presence = presence = Presence(
                config,
                self._backend,
                store=self._store,
                changes=self._changes,
                host=host,
                controller=controller,
                device=device,
                window=window,
                status_led=self._status_led,
                ble_bus_address=self._ble_bus_address,
            )
            try:
                await presence.start()
                if config.port_file is not None:
                    await asyncio.to_thread(_write_port_file, config.port_file, self._ports())
                await self._actions.start_button()
                if self._advertise:
                    await presence.start_advertiser()
                controller.add_state_listener(self._changes)
                if record.claim_in_flight is not None:
                    controller.resume_claim(record.claim_in_flight)
                zero_touch = (
                    None
                    if config.zero_touch_url is None
                    else ZeroTouch(
                        config.zero_touch_url,
                        device,
                        store=self._store,
                        changes=self._changes,
                        relay_factory=relay_factory,
                        notify=self._notify,
                        wall_clock=self._wall_clock,
                    )
                )
                await self._run_loops(presence, supervisor, zero_touch)
            finally:
                await controller.aclose()
                await self._shutdown()
                await attempts.aclose()

    async def _run_loops(
        self, presence: Presence, supervisor: MqttSupervisor, zero_touch: ZeroTouch | None
    ) -> None:
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(presence.run(), name="iob-reconcile"),
                group.create_task(
                    self._actions.run(
                        store=self._store,
                        controller=self.controller,
                        window=self.window,
                        presence=presence,
                    ),
                    name="iob-actions",
                ),
            ]
            if self._runtime_factory is not None:
                tasks.append(group.create_task(supervisor.run(), name="iob-mqtt"))
            if zero_touch is not None:
                tasks.append(group.create_task(zero_touch.run(), name="iob-zero-touch"))
            if self._config.reonboard_after > 0:
                after = self._config.reonboard_after
                watchdog = WifiWatchdog(
                    self._backend,
                    self._wifi_lost,
                    after=after,
                    # A short outage limit (tests, impatient makers) is checked as often.
                    poll_interval=min(DEFAULT_POLL_INTERVAL, after / 4),
                    applies=lambda: watches_wifi(self._store.current),
                )
                tasks.append(group.create_task(watchdog.run(), name="iob-watchdog"))
            await presence.reconcile()
            self._ready.set()
            await self._stop.wait()
            for task in tasks:
                task.cancel()

    # --- what opens the window besides boot and the button -----------------------------------

    def _factory_reset_done(self) -> None:
        self.window.open_for(Trigger.FACTORY_RESET, self._store.current)

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

    def _released(self) -> None:
        """The household released the device: the old owner's session ends, the label's opens."""
        self.window.open_for(Trigger.RELEASED, self._store.current, end_session=True)
        self.controller.notify()

    def _notify(self) -> None:
        self.controller.notify()

    # --- stop -------------------------------------------------------------------------------

    def _ports(self) -> dict[str, int | None]:
        """What the port file says: this process and the ports it listens on."""
        ble = self.ble
        bridge = ble.port if isinstance(ble, BridgePeripheral) else None
        return {"pid": os.getpid(), "lan": self.lan_ports()[0], "ble_bridge": bridge}

    async def _shutdown(self) -> None:
        if self._config.port_file is not None:
            await asyncio.to_thread(_remove_port_file, self._config.port_file)
        await self._actions.aclose()
        if self._presence is not None:
            await self._presence.aclose()
        if self._window is not None:
            self._window.close()
        await self._backend.aclose()


def _write_port_file(path: Path, document: Mapping[str, int | None]) -> None:
    """Write the port file atomically (iob_protocol.portfile): readers never see half."""
    try:
        write_port_file(path, document)
    except OSError as err:
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
