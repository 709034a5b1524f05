"""What the device does for each session command, and the commit and reset it runs.

Transports (the LAN server, the captive page, later BLE) call only this class, through
:class:`~.provisioning.session_host.SessionHost` for session commands. It owns the pending
Wi-Fi credentials and claim (kept in memory only: a passphrase is never written to disk before
the network is committed, and then only by the network backend), the background commit task
and the listeners that keep the LED, the zeroconf TXT record and the MQTT runtime in step with
the persisted state.

It also answers who may open a session (:meth:`DeviceController.session_policy`): the label's
codes while unclaimed, only the owner secret saved with the claim afterwards. On a claimed
device ``commit`` is a Wi-Fi-only change (``run_wifi_change``); a claim needs an owner secret
(``owner_secret_required``) so that no device ends up owned by a session nobody can reopen.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeAlias
from urllib.parse import urlsplit

from iob_protocol.claim import ClaimConfirmation
from iob_protocol.commands import (
    MAX_SCAN_RESULTS,
    AckResult,
    ClaimAnswerRequest,
    CommandResult,
    CommitRequest,
    CommitResult,
    DeviceState,
    FactoryResetRequest,
    IdentifyRequest,
    InfoRequest,
    InfoResult,
    Request,
    ResultError,
    ScanWifiRequest,
    ScanWifiResult,
    SetClaimRequest,
    SetOwnerSecretRequest,
    SetWifiRequest,
    StatusRequest,
    StatusResult,
    WifiNetwork,
    WifiSecurity,
)
from iob_protocol.diagnostics import DiagnosticCode
from iob_protocol.errors import ClaimError, OwnerSessionRequiredError
from iob_protocol.session import PROTOCOL_VERSION
from iob_protocol.sources import WallClock, unix_time

from .attempts import AttemptLog, Step
from .commit import (
    BrokerProbe,
    ClaimDelivery,
    ClaimPlan,
    FailSafeCommit,
    HubExchange,
    RelayFactory,
    tcp_probe,
)
from .errors import CommandRefusedError, CommitError
from .factory import ProvisionedDevice
from .hardware import Hardware
from .network.backend import AccessPoint, NetworkBackend, NetworkError, WifiCredentials
from .provisioning.session_host import SessionPolicy
from .reset import ClearRetained, ResetReport, factory_reset
from .state import ClaimInFlight, DeviceStateRecord, Phase, StateStore

_LOGGER = logging.getLogger(__name__)
_MIN_RSSI: Final = -127

StateListener: TypeAlias = Callable[[DeviceStateRecord], None]
ResetListener: TypeAlias = Callable[[], None]


def rssi_from_strength(strength: int) -> int:
    """NetworkManager's 0-100 % back to dBm (its own mapping: % = 2 * (dBm + 100))."""
    return max(_MIN_RSSI, min(0, strength // 2 - 100))


def wifi_network(access_point: AccessPoint) -> WifiNetwork:
    """A scan result for the session."""
    return WifiNetwork(
        ssid=access_point.ssid,
        rssi=rssi_from_strength(access_point.strength),
        security=WifiSecurity.WPA_PERSONAL if access_point.secured else WifiSecurity.OPEN,
    )


class DeviceController:
    """Commands, commit and reset for one device."""

    def __init__(
        self,
        *,
        device: ProvisionedDevice,
        store: StateStore,
        backend: NetworkBackend,
        relay_factory: RelayFactory,
        commit_timeout: float,
        hardware: Hardware | None = None,
        clear_retained: ClearRetained | None = None,
        wall_clock: WallClock = unix_time,
        broker_probe: BrokerProbe = tcp_probe,
        attempts: AttemptLog | None = None,
        allow_insecure_http: bool = False,
    ) -> None:
        """Wire the device's parts together; nothing runs until a command arrives.

        ``attempts`` records the onboarding steps (``iob-device attempts``).
        ``allow_insecure_http`` (local development): the device posts its confirmation to an
        ``http`` service itself; without it such a claim is confirmed through Home Assistant.
        """
        self._device = device
        self._store = store
        self._backend = backend
        self._relay_factory = relay_factory
        self._commit_timeout = commit_timeout
        self._hardware = hardware or Hardware()
        self._clear_retained = clear_retained
        self._wall_clock = wall_clock
        self._attempts = attempts = attempts or AttemptLog()
        self._pending_wifi: WifiCredentials | None = None
        self._pending_claim: ClaimPlan | None = None
        self._commit_task: asyncio.Task[DeviceStateRecord] | None = None
        self._hub_exchange: HubExchange | None = None
        self._allow_insecure_http = allow_insecure_http
        self._state_listeners: list[StateListener] = []
        #: Set (and replaced) by :meth:`notify`: a long-polled ``status`` looks again.
        self._changed = asyncio.Event()
        self._reset_listeners: list[ResetListener] = []
        self._committer = FailSafeCommit(
            identity=device.identity,
            store=store,
            backend=backend,
            relay_factory=relay_factory,
            timeout=commit_timeout,
            wall_clock=wall_clock,
            on_hub_exchange=self._set_hub_exchange,
            broker_probe=broker_probe,
            attempts=attempts,
        )

    # --- observation ------------------------------------------------------------------------

    @property
    def state(self) -> DeviceStateRecord:
        """The persisted state."""
        return self._store.current

    @property
    def hardware(self) -> Hardware:
        """LED and button."""
        return self._hardware

    @property
    def committing(self) -> bool:
        """Whether a commit is running."""
        return self._commit_task is not None and not self._commit_task.done()

    def session_policy(self) -> SessionPolicy:
        """Who may open a session now: the label while unclaimed, then only the owner."""
        record = self.state
        return SessionPolicy(claimed=record.claimed, owner_secret=record.owner_secret)

    @property
    def hub_exchange(self) -> HubExchange | None:
        """The confirmation waiting for Home Assistant to relay it (HUB delivery)."""
        return self._hub_exchange

    def add_state_listener(self, listener: StateListener) -> None:
        """Call ``listener`` after every persisted change (and once now)."""
        self._state_listeners.append(listener)
        listener(self.state)

    def add_reset_listener(self, listener: ResetListener) -> None:
        """Call ``listener`` after a factory reset (the agent reopens the window)."""
        self._reset_listeners.append(listener)

    def notify(self) -> None:
        """Tell listeners about the current state."""
        record = self.state
        self._hardware.show_state(record.phase, record.diagnostic)
        for listener in self._state_listeners:
            listener(record)
        self._changed.set()  # wakes each status_after; the next wait needs a new change
        self._changed = asyncio.Event()

    def _set_hub_exchange(self, exchange: HubExchange | None) -> None:
        self._hub_exchange = exchange
        self.notify()

    # --- commands ---------------------------------------------------------------------------

    async def dispatch(  # noqa: C901, PLR0911 - one case per command
        self, request: Request
    ) -> CommandResult:
        """Run one session command; refusals raise :class:`CommandRefusedError`."""
        match request:
            case InfoRequest():
                return self.info()
            case ScanWifiRequest():
                return await self.scan()
            case SetWifiRequest():
                await self.set_wifi(
                    WifiCredentials(
                        ssid=request.ssid,
                        passphrase=request.passphrase,
                        hidden=request.hidden,
                        wps=request.wps,
                    )
                )
                return AckResult()
            case SetClaimRequest():
                await self.set_claim(
                    ClaimPlan(
                        service_url=request.service_url,
                        claim_token=request.claim_token,
                        broker_pin=request.broker_pin,
                        broker_host=request.broker_host,
                        broker_port=request.broker_port,
                        owner_secret=request.owner_secret,
                        hub_relay=request.hub_relay,
                        delivery=self._delivery(request),
                    )
                )
                return AckResult()
            case ClaimAnswerRequest():
                if request.answer is not None:
                    self.deliver_hub_answer(request.answer)
                elif request.diagnostic is not None:
                    self.fail_hub_outcome(request.diagnostic)
                return AckResult()
            case SetOwnerSecretRequest():
                await self.set_owner_secret(request.owner_secret)
                return AckResult()
            case CommitRequest():
                return await self.start_commit()
            case StatusRequest():
                return await self.status_after(request.wait)
            case IdentifyRequest():
                record = self.state
                self._hardware.identify(record.phase, record.diagnostic)
                return AckResult()
            case FactoryResetRequest():
                await self.factory_reset()
                return AckResult()
        raise CommandRefusedError(ResultError.UNSUPPORTED.value, "unknown command")

    def info(self) -> InfoResult:
        """Who the device is."""
        info = self._device.info
        return InfoResult(
            device_id=info.device_id,
            model=info.model,
            firmware_version=info.firmware_version,
            protocol_version=PROTOCOL_VERSION,
            claimed=self.state.claimed,
        )

    async def scan(self) -> ScanWifiResult:
        """Networks in range, strongest first (hidden ones cannot be listed)."""
        try:
            access_points = await self._backend.scan()
        except NetworkError as err:
            raise CommandRefusedError(ResultError.FAILED.value, f"scan failed: {err}") from err
        networks = []
        seen: set[bytes] = set()
        for access_point in access_points:
            if access_point.ssid in seen or not access_point.ssid:
                continue
            seen.add(access_point.ssid)
            networks.append(wifi_network(access_point))
            if len(networks) == MAX_SCAN_RESULTS:
                break
        return ScanWifiResult(networks=tuple(networks))

    def status(self) -> StatusResult:
        """State and the last diagnostic code; the confirmation waiting for HA to relay it."""
        record = self.state
        return StatusResult(
            state=record.phase.wire_state,
            diagnostic=record.diagnostic,
            relay=self._relay_waiting(),
        )

    def _relay_waiting(self) -> ClaimConfirmation | None:
        """The signed confirmation Home Assistant is to relay, until it answers."""
        exchange = self._hub_exchange
        return None if exchange is None or exchange.done else exchange.confirmation

    async def status_after(self, wait: float) -> StatusResult:
        """:meth:`status`; while committing, once the commit ends or after ``wait`` seconds.

        The long poll of ``status`` (``wait``): the hub hears the outcome when it is known,
        with one request instead of a poll every second.
        """
        if wait:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    while (
                        self.state.phase.wire_state is DeviceState.COMMITTING
                        and self._relay_waiting() is None
                    ):
                        await self._changed.wait()
        return self.status()

    def _refuse_while_committing(self) -> None:
        if self.committing:
            raise CommandRefusedError(ResultError.BUSY.value, "a commit is running")

    async def _enter_provisioning(self) -> None:
        if self.state.phase is Phase.UNCLAIMED:
            await self._store.update(phase=Phase.PROVISIONING)
            self.notify()

    def forget_pending(self) -> None:
        """Drop the Wi-Fi and claim a previous session set but did not commit.

        A new session starts clean: what someone else's session left behind (a label holder's
        network before the device was claimed) must never ride along with the owner's commit.
        """
        self._pending_wifi = None
        self._pending_claim = None

    async def set_wifi(self, credentials: WifiCredentials) -> None:
        """Remember the network for the next commit (validated by the protocol decoder)."""
        self._refuse_while_committing()
        self._pending_wifi = credentials
        self._attempts.record(Step.WIFI_SET)
        await self._enter_provisioning()

    def _refuse_if_claimed(self) -> None:
        if self.state.claimed:
            raise CommandRefusedError(
                ResultError.ALREADY_CLAIMED.value,
                "the device already has an owner; only its Wi-Fi can change (a factory reset "
                "is needed before a new claim)",
            )

    async def set_claim(self, plan: ClaimPlan) -> None:
        """Remember where and how to confirm the claim (and the owner secret it saves)."""
        self._refuse_while_committing()
        self._refuse_if_claimed()
        self._pending_claim = plan
        self._attempts.record(Step.CLAIM_SET)
        await self._enter_provisioning()

    def _delivery(self, request: SetClaimRequest) -> ClaimDelivery:
        """HUB for an ``http`` service that HA relays for: the device sends nothing in clear.

        (Without ``hub_relay`` the session accepted the ``http`` URL only because the agent
        runs with ``allow_insecure_http``: the device posts it itself, as before.)
        """
        in_clear = urlsplit(request.service_url).scheme == "http"
        if request.hub_relay and in_clear and not self._allow_insecure_http:
            return ClaimDelivery.HUB
        return ClaimDelivery.DEVICE

    def set_claim_delivery(self, delivery: ClaimDelivery) -> None:
        """Choose who posts the confirmation (HUB: HA relays it; IoT VLAN without internet)."""
        if self._pending_claim is None:
            raise CommandRefusedError(ResultError.NOT_READY.value, "send set_claim first")
        self._pending_claim = dataclasses.replace(self._pending_claim, delivery=delivery)

    async def set_owner_secret(self, secret: bytes) -> None:
        """Replace the owner secret (the owner hands a new one to a transfer's recipient).

        The session that sends it stays open; the next handshake needs the new secret.
        """
        self._refuse_while_committing()
        if not self.state.claimed:
            raise CommandRefusedError(
                ResultError.NOT_CLAIMED.value,
                "the device has no owner yet; the owner secret travels with set_claim",
            )
        await self._store.update(owner_secret=secret)
        _LOGGER.info("owner secret replaced")
        self.notify()

    async def start_commit(self) -> CommitResult:
        """Arm the timer and start the fail-safe commit in the background.

        Unclaimed: the claim (with the Wi-Fi if ``set_wifi`` came). Claimed: a Wi-Fi-only
        change; the claim, MQTT credentials and owner secret stay.
        """
        self._refuse_while_committing()
        record = self.state
        wifi, plan = self._pending_wifi, self._pending_claim
        if record.claimed:
            if plan is not None:
                self._pending_claim = None
                self._refuse_if_claimed()
            if wifi is None:
                raise CommandRefusedError(
                    ResultError.NOT_READY.value,
                    "the device already has an owner: send set_wifi with the new network first",
                )
        elif plan is None:
            raise CommandRefusedError(
                ResultError.NOT_READY.value,
                "send set_claim (and set_wifi unless the device is already on the network) first",
            )
        elif plan.owner_secret is None:
            raise CommandRefusedError(
                ResultError.OWNER_SECRET_REQUIRED.value,
                "set_claim carried no owner secret; update Home Assistant's IoT Onboard "
                "integration, then set the device up again",
            )
        self._pending_wifi = None
        self._pending_claim = None
        await self._begin_commit()
        if plan is not None:
            self._start(self._committer.run(wifi, plan))
        elif wifi is not None:
            self._start(self._committer.run_wifi_change(wifi))
        return CommitResult(timeout_seconds=int(self._commit_timeout))

    async def _begin_commit(self) -> None:
        """Persist ``committing`` before answering, so the next ``status`` already says so."""
        await self._store.update(phase=Phase.COMMITTING, diagnostic=None, diagnostic_at=None)
        self.notify()

    async def start_network_commit(self, wifi: WifiCredentials) -> None:
        """Join ``wifi`` without a claim (the captive page; unclaimed devices only)."""
        self._refuse_while_committing()
        if self.state.claimed:
            raise CommandRefusedError(
                OwnerSessionRequiredError.code,
                "this device is owned; use its owner's Home Assistant, or factory-reset it",
            )
        self._pending_wifi = None
        await self._begin_commit()
        self._start(self._committer.run_network_only(wifi))

    def _start(self, work: Coroutine[Any, Any, DeviceStateRecord]) -> None:
        async def runner() -> DeviceStateRecord:
            try:
                return await work
            finally:
                self.notify()

        self._commit_task = asyncio.create_task(runner(), name="iob-commit")
        self._commit_task.add_done_callback(_log_task_failure)

    async def wait_for_commit(self) -> DeviceStateRecord:
        """The outcome of the running (or last) commit."""
        if self._commit_task is None:
            return self.state
        return await asyncio.shield(self._commit_task)

    def deliver_hub_answer(self, answer: object) -> None:
        """HA relayed the confirmation and passes the service's "owned" answer back verbatim.

        Refused (and the commit rolls back, CLAIM_REJECTED) unless its MAC shows it is the
        service's answer to this confirmation.
        """
        if self._hub_exchange is None or self._hub_exchange.done:
            raise CommandRefusedError(ResultError.NOT_READY.value, "no confirmation is waiting")
        try:
            self._hub_exchange.deliver(answer)
        except CommitError as err:
            raise CommandRefusedError(ClaimError.code, str(err)[:200]) from err

    def fail_hub_outcome(self, code: DiagnosticCode) -> None:
        """HA relayed the confirmation and the service refused (or was unreachable)."""
        if self._hub_exchange is None or self._hub_exchange.done:
            raise CommandRefusedError(ResultError.NOT_READY.value, "no confirmation is waiting")
        self._hub_exchange.fail(code)

    async def factory_reset(self) -> ResetReport:
        """Cancel any commit, then wipe Wi-Fi, claim and MQTT credentials."""
        await self.cancel_commit()
        self._pending_wifi = None
        self._pending_claim = None
        report = await factory_reset(
            identity=self._device.identity,
            store=self._store,
            backend=self._backend,
            relay_factory=self._relay_factory,
            clear_retained=self._clear_retained,
            wall_clock=self._wall_clock,
        )
        self.notify()
        for listener in self._reset_listeners:
            listener()
        return report

    def resume_claim(self, flight: ClaimInFlight) -> None:
        """Boot found a claim in flight: finish it in the background (retry or settle)."""
        self._start(self._committer.resume(flight))

    async def cancel_commit(self, *, suspend: bool = False) -> None:
        """Stop a running commit (it rolls back before it ends).

        ``suspend`` (the agent stopping): a claim in flight stays saved for the next start,
        since the service may already own the device.
        """
        task = self._commit_task
        self._committer.suspend_on_cancel = suspend
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if suspend and self.state.claim_in_flight is not None:
            return
        if self.state.phase is Phase.COMMITTING:
            # Cancelled before its first step ran: the commit could not clean up itself.
            await self._committer.abort("agent stopped during commit")
            self.notify()

    async def aclose(self) -> None:
        """Stop background work; a running commit rolls back (a claim in flight is kept)."""
        await self.cancel_commit(suspend=True)


def _log_task_failure(task: asyncio.Task[DeviceStateRecord]) -> None:
    if not task.cancelled() and task.exception() is not None:
        _LOGGER.error("commit task failed", exc_info=task.exception())
