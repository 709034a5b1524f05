"""MQTT supervision: the runtime runs while the device is online, and what happens when it fails.

:class:`MqttSupervisor` runs the MQTT runtime (``device_firmware.mqtt_runtime``) while
:func:`~device_firmware.decide.runs_mqtt` says so and restarts it when the credentials change. A
runtime that gives up (``BROKER_AUTH_FAILED``, ``TLS_FAILED``) leaves its diagnostic and is
retried later; on ``BROKER_AUTH_FAILED`` the device first fetches its rotated password with its
signed request, and the service's definitive "unowned" answer releases it (back to unclaimed,
the label's window opens). A factory reset clears the retained messages with the running
runtime or a fresh one.

This module is the one place that knows the MQTT runtime's interface: a factory builds a
runtime from the saved credentials (tests substitute it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from iob_protocol.diagnostics import DiagnosticCode
from iob_protocol.sources import MonotonicClock, WallClock, monotonic, unix_time

from .attempts import AttemptLog, Step
from .capabilities import default_capabilities
from .changes import StateChanges
from .decide import runs_mqtt
from .errors import DiagnosedError, StateError
from .factory import ProvisionedDevice
from .hardware import Hardware
from .mqtt_runtime import DeviceCommand, DeviceInfo, MqttRuntime, MqttSettings
from .relay_client import CredentialRecovery, NotOwned, RelayClient
from .state import DeviceStateRecord, MqttCredentials, Ownership, Phase, StateStore

_LOGGER = logging.getLogger(__name__)

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
    *,
    simulated: bool,
    model: str | None = None,
    firmware: str | None = None,
    name: str | None = None,
) -> RuntimeFactory:
    """Build the MQTT runtime with this device's capabilities (system sensors, demo or GPIO).

    ``name``: the device's name in its descriptor (configuration key ``name``).
    """
    capabilities = default_capabilities(simulated=simulated)
    info = DeviceInfo(name=name, model=model, sw_version=firmware)

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


class MqttSupervisor:
    """Runs the MQTT runtime while online; handles its failures, rotation and release."""

    def __init__(
        self,
        runtime_factory: RuntimeFactory | None,
        device: ProvisionedDevice,
        *,
        store: StateStore,
        changes: StateChanges,
        hardware: Hardware,
        relay_factory: Callable[[str], RelayClient],
        request_reset: Callable[[], None],
        notify: Callable[[], None],
        on_released: Callable[[], None],
        wall_clock: WallClock = unix_time,
        clock: MonotonicClock = monotonic,
        attempts: AttemptLog | None = None,
    ) -> None:
        """``runtime_factory`` None: no MQTT (:meth:`run` returns at once).

        ``attempts``: the first connection after a commit ends that onboarding attempt.

        ``request_reset`` queues a factory reset (the owner's ``factory_reset`` command);
        ``notify`` tells the controller's listeners about a state change made here;
        ``on_released`` runs once the device saved its release (the agent reopens the window).
        """
        self._runtime_factory = runtime_factory
        self._device = device
        self._store = store
        self._changes = changes
        self._hardware = hardware
        self._relay_factory = relay_factory
        self._request_reset = request_reset
        self._notify = notify
        self._on_released = on_released
        self._wall_clock = wall_clock
        self._clock = clock
        self._attempts = attempts or AttemptLog()
        self._runtime: MqttRuntimeLike | None = None
        self._credential_recovery: CredentialRecovery | None = None

    async def run(self) -> None:
        """Run the MQTT runtime while online; restart it when the credentials change."""
        factory = self._runtime_factory
        if factory is None:
            return
        while True:
            seen = self._changes.version
            record = self._store.current
            if not runs_mqtt(record) or record.mqtt is None:
                await self._changes.wait(seen)
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
                    changed = asyncio.create_task(self._changes.wait(seen))
                    try:
                        await asyncio.wait({*watch, changed}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        changed.cancel()  # also when the agent stops meanwhile: no orphan task
                    seen = self._changes.version
                    if connected in watch and connected.done():
                        watch.discard(connected)
                        self._attempts.record_if_open(Step.MQTT_ONLINE, after=Step.COMMITTED)
                        await self._clear_broker_diagnostic()
                    now = self._store.current
                    if not runs_mqtt(now) or now.mqtt != credentials:
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
            self._request_reset()

        return {"identify": identify, "factory_reset": factory_reset}

    async def _clear_broker_diagnostic(self) -> None:
        record = self._store.current
        if record.diagnostic in {DiagnosticCode.BROKER_AUTH_FAILED, DiagnosticCode.TLS_FAILED}:
            await self._store.update(diagnostic=None, diagnostic_at=None)
            self._notify()

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
            self._notify()
        else:
            _LOGGER.error("MQTT runtime stopped", exc_info=error)
        # The owner's fix (broker reconcile, a new pin) happens elsewhere: retry, slowly.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(MQTT_RETRY_SECONDS):
                await self._changes.wait()

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
        self._on_released()
        return True

    async def clear_retained(self, record: DeviceStateRecord) -> None:
        """Factory reset: clear retained messages with the running runtime, or a fresh one."""
        runtime = self._runtime
        if runtime is None:
            if self._runtime_factory is None or record.mqtt is None:
                return
            runtime = self._runtime_factory(self._device.info.device_id, record.mqtt)
        await runtime.clear_retained()
