"""The fail-safe commit (DESIGN: "no half-onboarded devices").

``commit`` arms a timer (180 s by default). Under it the device joins the new Wi-Fi as a trial
(the previous configuration is kept by the backend), checks that it can resolve the account
service's host, reach it (``/v1/health``, which also proves TLS) and that its clock agrees with
the service's; then it signs the claim confirmation. Only when the service has answered
"owned" is the new network made permanent. Any failure, or the timer, rolls the network back
and leaves the device in ``provisioning`` with the specific diagnostic code, readable through
``status`` in the same session; nothing needs a reboot.

Order of the checks, and why: DHCP happens inside ``connect``; then DNS of the service's host;
then the service itself. Only if the service is unreachable is general internet access
checked, to tell NO_INTERNET (and a captive portal, CAPTIVE_PORTAL) from RELAY_UNREACHABLE - a
self-hosted service on the LAN (or an IoT VLAN with no route out) must not fail a check it does
not need.

Two ways for the confirmation to reach the service: the device posts it itself
(``ClaimDelivery.DEVICE``), or it hands the signed confirmation over the session and Home
Assistant relays it and returns the service's answer (``ClaimDelivery.HUB``, for an IoT VLAN
without internet). The device takes the second way only when its ``set_claim`` carried
``hub_relay`` (HA offered) and it cannot reach the service itself (DNS, the service's health
check or the uplink fail, before anything was signed); it then needs only the broker. The
service verifies the same signature either way; its relayed answer carries a MAC keyed by the
claim token over the confirmation's nonce (``iob_protocol.claim.ClaimGrant``), so a grant HA
altered, or one for another confirmation, is refused.

Crash safety: the ownership, the MQTT credentials and the owner secret are saved in one atomic
write (still ``committing``) before the network is made permanent, so a power cut after the
service said "owned" boots online, and a power cut before the confirmation was sent boots back
in ``provisioning`` (the trial network is gone with the power) with no owner secret on disk.

A lost answer: the service may have recorded the claim and answered, and the answer never
arrived (the connection dropped after its commit, the power went). So the claim is saved as
"in flight" (:class:`~device_firmware.state.ClaimInFlight`) before the confirmation is posted;
an answer that does not arrive is retried with backoff (a fresh signature over the same token,
which the service answers with the same grant within the token's TTL); a power cut resumes the
retry at boot (:meth:`FailSafeCommit.resume`). A refusal of the token (spent, expired) or a
token past its TTL is settled with the device's own signed credential request: "owned" is the
grant (the claim went through), "unowned" rolls back with the refusal's code. The device ends
owned and online, or in ``provisioning`` with a diagnostic - never owned at the service and
without its credential on the device.

A claimed device changing its Wi-Fi (an owner session after re-onboarding) runs
:meth:`FailSafeCommit.run_wifi_change`: no claim step - owner, MQTT credentials and owner secret
stay - and instead of the account service the checks are the broker's: its name resolves and it
accepts a TCP connection (BROKER_UNREACHABLE, or NO_INTERNET when nothing is reachable). Same
timer, same rollback; a failure keeps the old network and the device stays online with the code.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Final, TypeAlias
from urllib.parse import urlsplit

from iob_protocol.account_api import RelayedOwned, WireFormatError
from iob_protocol.claim import MAX_SKEW_SECONDS, ClaimConfirmation, MqttCredentialRequest
from iob_protocol.diagnostics import DiagnosticCode
from iob_protocol.errors import ClaimError
from iob_protocol.identity import DeviceIdentity
from iob_protocol.sources import WallClock, unix_time

from .attempts import AttemptLog, Step
from .errors import CommitError, DiagnosedError, RelayCertificateError, RelayError, StateError
from .network.backend import NetworkBackend, NetworkError, WifiCredentials
from .relay_client import ClaimOutcome, NotOwned, RelayClient
from .state import (
    ClaimInFlight,
    DeviceStateRecord,
    MqttCredentials,
    Ownership,
    Phase,
    StateStore,
)

_LOGGER = logging.getLogger(__name__)
#: Rolling back must itself be bounded: a hung backend cannot keep the device in limbo.
ROLLBACK_TIMEOUT: Final = 30.0
#: One TCP connection attempt to the broker during a Wi-Fi change.
BROKER_PROBE_TIMEOUT: Final = 10.0
#: A confirmation without an answer is retried after this many seconds, doubling...
CLAIM_RETRY_FIRST: Final = 0.5
#: ...up to this (jittered); the commit timer bounds the whole.
CLAIM_RETRY_MAX: Final = 8.0
#: The longest claim TTL a service gives (DESIGN: at most 10 min). Past it, counted from the
#: first confirmation, the token is surely spent: only the credential request can tell.
CLAIM_TTL_LIMIT: Final = 600
#: Answers that say the token cannot be (or no longer be) confirmed; the credential request
#: tells whether an earlier confirmation of it went through.
_SETTLED_BY_CREDENTIAL: Final = frozenset(
    {DiagnosticCode.CLAIM_REJECTED, DiagnosticCode.CLAIM_EXPIRED}
)
#: No usable answer, once a confirmation may have gone out: a glitch of the uplink or its
#: resolver must not end the retries (the service may own the device already), nor a clock
#: that NTP has not set yet (a Pi has no RTC: a commit resumed at boot may start before NTP).
_UNANSWERED: Final = frozenset(
    {DiagnosticCode.RELAY_UNREACHABLE, DiagnosticCode.DNS_FAILED, DiagnosticCode.CLOCK_SKEW}
)
#: The device cannot reach the account service (nothing was signed or sent yet): Home
#: Assistant relays the confirmation if it offered to (``hub_relay``).
_OUT_OF_REACH: Final = frozenset(
    {
        DiagnosticCode.RELAY_UNREACHABLE,
        DiagnosticCode.DNS_FAILED,
        DiagnosticCode.NO_INTERNET,
        DiagnosticCode.CAPTIVE_PORTAL,
    }
)

#: ``claim_relayed``'s result when the service's URL is ``http``: nothing was tried directly.
INSECURE_URL: Final = "insecure_url"

RelayFactory: TypeAlias = Callable[[str], RelayClient]
#: Opens (and closes) a TCP connection to ``host:port``; raises ``OSError`` when it cannot.
BrokerProbe: TypeAlias = Callable[[str, int], Awaitable[None]]


async def tcp_probe(host: str, port: int) -> None:
    """Whether the broker accepts a TCP connection over the current (trial) network."""
    _reader, writer = await asyncio.open_connection(host, port)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


class ClaimDelivery(StrEnum):
    """Who posts the signed confirmation to the account service."""

    DEVICE = "device"
    HUB = "hub"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimPlan:
    """What ``set_claim`` said."""

    service_url: str
    claim_token: str = field(repr=False)
    broker_pin: bytes | None = None
    broker_host: str | None = None
    broker_port: int | None = None
    #: Saved with the claim; the controller refuses to commit a plan without one.
    owner_secret: bytes | None = field(default=None, repr=False)
    delivery: ClaimDelivery = ClaimDelivery.DEVICE
    #: Home Assistant offered to relay the confirmation if the service is out of reach.
    hub_relay: bool = False

    @property
    def service_host(self) -> str:
        """The account service's host name (validated by the protocol's URL check)."""
        return urlsplit(self.service_url).hostname or ""

    @classmethod
    def from_flight(cls, flight: ClaimInFlight) -> ClaimPlan:
        """The plan of a claim found in flight at boot (always posted by the device)."""
        return cls(
            service_url=flight.service_url,
            claim_token=flight.claim_token,
            broker_pin=flight.broker_pin,
            broker_host=flight.broker_host,
            broker_port=flight.broker_port,
            owner_secret=flight.owner_secret,
        )

    def in_flight(self, wifi: WifiCredentials | None, started_at: int) -> ClaimInFlight:
        """What is saved before the confirmation is posted."""
        if self.owner_secret is None:
            raise StateError("a claim needs an owner secret")
        return ClaimInFlight(
            service_url=self.service_url,
            claim_token=self.claim_token,
            owner_secret=self.owner_secret,
            started_at=started_at,
            broker_host=self.broker_host,
            broker_port=self.broker_port,
            broker_pin=self.broker_pin,
            wifi_ssid=None if wifi is None else wifi.ssid,
            wifi_passphrase=None if wifi is None else wifi.passphrase,
            wifi_hidden=False if wifi is None else wifi.hidden,
        )


def flight_wifi(flight: ClaimInFlight) -> WifiCredentials | None:
    """The trial network a claim in flight was confirmed over."""
    if flight.wifi_ssid is None:
        return None
    return WifiCredentials(
        ssid=flight.wifi_ssid, passphrase=flight.wifi_passphrase, hidden=flight.wifi_hidden
    )


class HubExchange:
    """Hand-off for ``ClaimDelivery.HUB``: the signed confirmation out, the service's answer in."""

    def __init__(self, confirmation: ClaimConfirmation) -> None:
        """Wait for Home Assistant to relay ``confirmation``."""
        self.confirmation = confirmation
        self._answer: asyncio.Future[ClaimOutcome] = asyncio.get_running_loop().create_future()

    @property
    def done(self) -> bool:
        """Whether an answer (or a failure) has been delivered."""
        return self._answer.done()

    def deliver(self, answer: object) -> None:
        """The service's relayed "owned" answer, verbatim: taken only if its MAC is right.

        Raises :class:`~device_firmware.errors.CommitError` (CLAIM_REJECTED) for an answer that
        is not the service's to this confirmation, after ending the exchange with it: a courier
        that alters the grant gets nothing owned.
        """
        try:
            outcome = RelayedOwned.parse(answer).opened(self.confirmation)
        except (WireFormatError, ClaimError) as err:
            refused = CommitError(
                DiagnosticCode.CLAIM_REJECTED,
                f"the relayed answer is not the account service's to this confirmation: {err}",
            )
            if not self._answer.done():
                self._answer.set_exception(refused)
            raise refused from err
        if not self._answer.done():
            self._answer.set_result(outcome)

    def fail(self, code: DiagnosticCode, detail: str = "") -> None:
        """The service refused, or HA could not reach it."""
        if not self._answer.done():
            self._answer.set_exception(CommitError(code, detail or "reported by Home Assistant"))

    async def wait(self) -> ClaimOutcome:
        """The answer, as soon as HA delivers it."""
        return await self._answer


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class FailSafeCommit:
    """Runs one commit from ``committing`` to ``online`` or back to ``provisioning``."""

    def __init__(
        self,
        *,
        identity: DeviceIdentity,
        store: StateStore,
        backend: NetworkBackend,
        relay_factory: RelayFactory,
        timeout: float,
        wall_clock: WallClock = unix_time,
        on_hub_exchange: Callable[[HubExchange | None], None] | None = None,
        broker_probe: BrokerProbe = tcp_probe,
        attempts: AttemptLog | None = None,
    ) -> None:
        """Wire the commit's parts.

        ``on_hub_exchange`` publishes the pending hand-off to the session (HUB delivery);
        ``attempts`` records each step (``iob-device attempts``).
        """
        self._identity = identity
        self._store = store
        self._backend = backend
        self._relay_factory = relay_factory
        self._timeout = timeout
        self._wall_clock = wall_clock
        self._on_hub_exchange = on_hub_exchange or (lambda _exchange: None)
        self._broker_probe = broker_probe
        self._attempts = attempts or AttemptLog()
        #: Why the last confirmation got no answer (the diagnostic if the timer ends the retries).
        self._unanswered: RelayError | None = None
        #: Set when the agent stops: a cancelled claim in flight is kept for the next start
        #: (a factory reset's cancel rolls it back).
        self.suspend_on_cancel = False

    async def resume(self, flight: ClaimInFlight) -> DeviceStateRecord:
        """Finish a claim found in flight at boot: rejoin its network, retry, or settle."""
        _LOGGER.warning(
            "boot during a claim whose confirmation may have reached the service: resuming it"
        )
        self._attempts.begin("boot")
        return await self.run(flight_wifi(flight), ClaimPlan.from_flight(flight), flight=flight)

    async def run(
        self,
        wifi: WifiCredentials | None,
        plan: ClaimPlan,
        *,
        flight: ClaimInFlight | None = None,
    ) -> DeviceStateRecord:
        """Commit; the returned record is ``online`` or ``provisioning`` with a diagnostic.

        The owner secret is written in the same atomic write as the ownership, only after the
        service answered "owned": a failed or rolled-back claim leaves none behind. ``flight``:
        a claim already in flight (resumed at boot), confirmed again or settled.
        """
        await self._begin()
        self._attempts.record(Step.COMMIT_STARTED, "claim" if flight is None else "resumed")
        owned = False
        self._unanswered = None
        try:
            try:
                async with asyncio.timeout(self._timeout):
                    if wifi is not None:
                        wifi = await self._join(wifi)
                    outcome = await self._confirm(plan, wifi, flight)
            finally:
                self._on_hub_exchange(None)
            self._attempts.record(Step.CLAIM_CONFIRMED)
            await self._store.update(
                ownership=Ownership(
                    household_id=outcome.household_id,
                    service_url=plan.service_url,
                    claimed_at=self._wall_clock(),
                ),
                mqtt=MqttCredentials(
                    host=plan.broker_host or outcome.mqtt.host,
                    port=plan.broker_port or outcome.mqtt.port,
                    tls=outcome.mqtt.tls,
                    username=outcome.mqtt.username,
                    password=outcome.mqtt.password,
                    ca_pin=plan.broker_pin,
                ),
                owner_secret=plan.owner_secret,
                claim_in_flight=None,
            )
            owned = True
        except TimeoutError as err:
            unanswered = self._last_unanswered()
            if unanswered is not None:
                # The timer ended the retries: say why nothing answered.
                return await self._fail(
                    unanswered.code, f"no usable answer before the commit timer: {unanswered}"
                )
            return await self._fail(DiagnosticCode.TIMEOUT, str(err) or "commit timer")
        except (NetworkError, DiagnosedError) as err:
            return await self._fail(err.code, str(err))
        except asyncio.CancelledError:
            # The agent is stopping mid-commit: leave the network as it was.
            if not owned:
                if self.suspend_on_cancel and self._store.current.claim_in_flight is not None:
                    # The service may own the device: the next start resumes the claim.
                    await self._rollback_network()
                    self._attempts.record(Step.ROLLED_BACK, "suspended")
                    _LOGGER.warning("stopped with a claim in flight: resumed at the next start")
                else:
                    await self._fail(DiagnosticCode.TIMEOUT, "agent stopped during commit")
            raise
        except StateError as err:
            return await self._fail(DiagnosticCode.TIMEOUT, f"cannot save the state: {err}")
        return await self._finish(wifi)

    async def _confirm(
        self, plan: ClaimPlan, wifi: WifiCredentials | None, flight: ClaimInFlight | None
    ) -> ClaimOutcome:
        if plan.delivery is ClaimDelivery.HUB:
            if urlsplit(plan.service_url).scheme == "http":
                # An http service: the device's credential must not cross the LAN in clear.
                _LOGGER.info("the account service's URL is not https: Home Assistant relays")
                self._attempts.record(Step.CLAIM_RELAYED, INSECURE_URL)
            return await self._through_hub(plan)
        if flight is None and plan.hub_relay:
            try:
                return await self._direct(plan, wifi, flight)
            except DiagnosedError as err:
                if err.code not in _OUT_OF_REACH:
                    raise
                _LOGGER.warning(
                    "cannot reach the account service (%s): Home Assistant relays the signed "
                    "confirmation",
                    err,
                )
                self._attempts.record(Step.CLAIM_RELAYED, err.code.value)
                return await self._through_hub(plan)
        return await self._direct(plan, wifi, flight)

    async def _through_hub(self, plan: ClaimPlan) -> ClaimOutcome:
        """Hand the signed confirmation to Home Assistant and wait for the service's answer."""
        if plan.broker_host is not None and not _is_ip_literal(plan.broker_host):
            await self._backend.check_dns(plan.broker_host)
        exchange = HubExchange(
            ClaimConfirmation.create(self._identity, plan.claim_token, clock=self._wall_clock)
        )
        self._on_hub_exchange(exchange)
        return await exchange.wait()

    async def _direct(
        self, plan: ClaimPlan, wifi: WifiCredentials | None, flight: ClaimInFlight | None
    ) -> ClaimOutcome:
        """Post the confirmation to the service (checked first unless resumed)."""
        host = plan.service_host
        if not _is_ip_literal(host):
            await self._backend.check_dns(host)
        async with self._relay_factory(plan.service_url) as relay:
            if flight is None:
                await self._check_service(relay)
                flight = plan.in_flight(wifi, self._wall_clock())
                # Before the confirmation leaves: from here on the service may own the device.
                await self._store.update(claim_in_flight=flight)
            return await self._deliver(relay, flight)

    def _last_unanswered(self) -> RelayError | None:
        """Why the last confirmation got no answer, if the retries were still going."""
        return self._unanswered

    async def _check_service(self, relay: RelayClient) -> None:
        """Reachability, TLS and the clock, before anything is signed."""
        try:
            health = await relay.health()
        except RelayCertificateError as err:
            # Something answered with a certificate the device does not trust: the service (a
            # private CA not configured), or a captive portal answering port 443 itself. Only a
            # portal changes the diagnostic: a service on the LAN needs no internet.
            try:
                await self._backend.check_internet()
            except NetworkError as probe:
                if probe.code is DiagnosticCode.CAPTIVE_PORTAL:
                    raise NetworkError(
                        probe.code, f"{probe.detail}; the service's TLS answer: {err.detail}"
                    ) from err
            raise
        except DiagnosedError as err:
            if err.code is DiagnosticCode.RELAY_UNREACHABLE:
                # Unreachable: is it the service, or the whole uplink?
                await self._backend.check_internet()
            raise
        skew = self._wall_clock() - health.time
        if abs(skew) > MAX_SKEW_SECONDS:
            raise CommitError(
                DiagnosticCode.CLOCK_SKEW,
                f"device clock is {skew:+d} s off the service's (limit {MAX_SKEW_SECONDS} s)",
            )
        self._attempts.record(Step.SERVICE_CHECKED)

    async def _join(self, wifi: WifiCredentials) -> WifiCredentials:
        """Join the trial network (DHCP included); the attempt log says how it went.

        Returns the credentials that joined (a WPS join: with the key the router handed over,
        which a claim in flight keeps so that a resumed commit can rejoin without the button).
        """
        try:
            joined = await self._backend.connect(wifi)
        except NetworkError as err:
            self._attempts.record(Step.WIFI_FAILED, err.code.value)
            raise
        if wifi.wps:
            self._attempts.record(Step.WIFI_JOINED, "wps")
        else:
            self._attempts.record(Step.WIFI_JOINED)
        return joined

    async def _deliver(self, relay: RelayClient, flight: ClaimInFlight) -> ClaimOutcome:
        """Confirm until an answer arrives; a refused or lapsed token is settled by credential.

        Each attempt is a fresh signature over the same token (the service refuses a second use
        of a signed confirmation). No usable answer (connection dropped, timeout, 5xx, the name
        not resolving, the service's ``clock_skew``): again after 0.5 s, doubling to 8 s,
        jittered, until the commit timer ends, whose diagnostic is then the last such answer.
        """
        delay = CLAIM_RETRY_FIRST
        while True:
            try:
                if self._wall_clock() - flight.started_at > CLAIM_TTL_LIMIT:
                    return await self._settle(relay, None)
                confirmation = ClaimConfirmation.create(
                    self._identity, flight.claim_token, clock=self._wall_clock
                )
                try:
                    return await relay.confirm_claim(confirmation)
                except RelayError as err:
                    if err.code not in _SETTLED_BY_CREDENTIAL:
                        raise
                    return await self._settle(relay, err)
            except RelayError as err:
                if err.code not in _UNANSWERED:
                    raise
                if self._unanswered is None:
                    _LOGGER.warning(
                        "claim confirmation got no answer (%s); the service may have recorded "
                        "it: retrying with backoff",
                        err,
                    )
                self._unanswered = err
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter
            delay = min(delay * 2, CLAIM_RETRY_MAX)

    async def _settle(self, relay: RelayClient, refusal: RelayError | None) -> ClaimOutcome:
        """Ask the service whether the device is owned: its signed credential request.

        ``refusal`` is the token's refusal (None: the token's TTL has passed). "owned": an
        earlier confirmation went through and its answer was lost; this is its grant.
        "unowned": the claim never happened; the refusal (or CLAIM_EXPIRED) stands.
        """
        request = MqttCredentialRequest.create(self._identity, clock=self._wall_clock)
        try:
            answer = await relay.fetch_mqtt_credential(request)
        except RelayError as err:
            if err.code in _UNANSWERED:
                raise  # retried like a confirmation without an answer
            if refusal is not None:
                raise refusal from err
            # The service refuses this identity's request (credential_refused): for the user,
            # a refused claim.
            raise CommitError(
                DiagnosticCode.CLAIM_REJECTED, f"the claim token lapsed and {err}"
            ) from err
        if isinstance(answer, NotOwned):
            code = DiagnosticCode.CLAIM_EXPIRED if refusal is None else refusal.code
            detail = "the claim token lapsed" if refusal is None else str(refusal)
            raise CommitError(
                code, f"{detail}; the account service says no household owns this device"
            )
        _LOGGER.info(
            "the account service says household %s owns this device (a confirmation's answer "
            "was lost): taking its credential",
            answer.household_id,
        )
        return answer

    async def _finish(self, wifi: WifiCredentials | None) -> DeviceStateRecord:
        """Owned: make the network permanent, then say online (even if that step fails)."""
        try:
            async with asyncio.timeout(ROLLBACK_TIMEOUT):
                await self._backend.commit()
        except (NetworkError, TimeoutError) as err:
            # The ownership is real; the watchdog re-onboards if the network does not hold.
            _LOGGER.warning("claimed, but making the network permanent failed: %s", err)
        ssid = wifi.ssid if wifi is not None else self._store.current.wifi_ssid
        record = await self._store.update(phase=Phase.ONLINE, wifi_ssid=ssid)
        self._attempts.record(Step.COMMITTED)
        _LOGGER.info("commit succeeded: device is owned and online")
        return record

    async def run_network_only(self, wifi: WifiCredentials) -> DeviceStateRecord:
        """Join a network without a claim, under the same timer and rollback (unclaimed only).

        For the phone's captive page: an unclaimed device gets onto the household's Wi-Fi,
        where Home Assistant then finds and claims it. Checks association and DHCP.
        """
        if self._store.current.claimed:
            raise StateError("a claimed device changes its Wi-Fi with run_wifi_change")
        self._attempts.record(Step.COMMIT_STARTED, "network_only")
        return await self._trial(wifi, Phase.PROVISIONING, checks=None)

    async def run_wifi_change(self, wifi: WifiCredentials) -> DeviceStateRecord:
        """A claimed device moves to another network: no claim step, the broker is checked.

        Owner, MQTT credentials and owner secret are kept whatever happens; success saves the
        new network, failure rolls back to the old one and records the diagnostic (online).
        """
        mqtt = self._store.current.mqtt
        if mqtt is None:
            raise StateError("only a claimed device (with MQTT credentials) changes its Wi-Fi")

        async def broker_reachable() -> None:
            await self._check_broker(mqtt.host, mqtt.port)
            self._attempts.record(Step.BROKER_CHECKED)

        self._attempts.record(Step.COMMIT_STARTED, "wifi_change")
        return await self._trial(wifi, Phase.ONLINE, checks=broker_reachable)

    async def _check_broker(self, host: str, port: int) -> None:
        """DNS of the broker's name, then a TCP connection; tell a dead uplink apart."""
        if not _is_ip_literal(host):
            await self._backend.check_dns(host)
        try:
            async with asyncio.timeout(BROKER_PROBE_TIMEOUT):
                await self._broker_probe(host, port)
        except (OSError, TimeoutError) as err:
            # Unreachable: is it the broker, or the whole uplink?
            await self._backend.check_internet()
            detail = str(err) or "no answer"
            raise CommitError(
                DiagnosticCode.BROKER_UNREACHABLE, f"broker {host}:{port}: {detail}"
            ) from err

    async def _trial(
        self,
        wifi: WifiCredentials,
        success: Phase,
        *,
        checks: Callable[[], Awaitable[None]] | None,
    ) -> DeviceStateRecord:
        await self._begin()
        try:
            async with asyncio.timeout(self._timeout):
                await self._join(wifi)
                if checks is not None:
                    await checks()
        except (DiagnosedError, TimeoutError) as err:  # NetworkError is a DiagnosedError
            code = err.code if isinstance(err, DiagnosedError) else DiagnosticCode.TIMEOUT
            return await self._fail(code, str(err) or "commit timer")
        except asyncio.CancelledError:
            await self._fail(DiagnosticCode.TIMEOUT, "agent stopped during commit")
            raise
        try:
            async with asyncio.timeout(ROLLBACK_TIMEOUT):
                await self._backend.commit()
        except (NetworkError, TimeoutError) as err:
            return await self._fail(
                err.code if isinstance(err, NetworkError) else DiagnosticCode.TIMEOUT, str(err)
            )
        record = await self._store.update(phase=success, wifi_ssid=wifi.ssid)
        self._attempts.record(Step.COMMITTED)
        _LOGGER.info("network change committed (%s)", success.value)
        return record

    async def _begin(self) -> None:
        """Persist ``committing`` (the controller usually has, before answering ``commit``)."""
        if self._store.current.phase is not Phase.COMMITTING:
            await self._store.update(phase=Phase.COMMITTING, diagnostic=None, diagnostic_at=None)

    async def abort(self, detail: str) -> DeviceStateRecord:
        """End a commit that can no longer run (roll back, TIMEOUT; online if already owned)."""
        return await self._fail(DiagnosticCode.TIMEOUT, detail)

    async def _rollback_network(self) -> None:
        try:
            async with asyncio.timeout(ROLLBACK_TIMEOUT):
                await asyncio.shield(self._backend.rollback())
        except (NetworkError, TimeoutError) as err:
            _LOGGER.error("rollback failed: %s", err)  # noqa: TRY400 - the cause is in err

    async def _fail(self, code: DiagnosticCode, detail: str) -> DeviceStateRecord:
        _LOGGER.warning("commit failed (%s): %s", code.value, detail)
        await self._rollback_network()
        self._attempts.record(Step.ROLLED_BACK, code.value)
        now = self._wall_clock()

        def failed(record: DeviceStateRecord) -> DeviceStateRecord:
            # An owner on record (a claimed device's Wi-Fi change, or a cancel while the
            # "owned" answer was being saved) keeps the device online.
            phase = Phase.ONLINE if record.claimed else Phase.PROVISIONING
            return replace(
                record, phase=phase, diagnostic=code, diagnostic_at=now, claim_in_flight=None
            )

        return await self._store.apply(failed)
