"""The commit: hand over Wi-Fi (and claim), commit, and wait until the outcome is known.

No Home Assistant here: the engine needs a device link, the account service's claim calls and
two callbacks (re-establish the link; is the Wi-Fi-lost repair still open), so it is tested
against a real device session without a running Home Assistant
(tests/integration/test_commit_engine.py). The config flow runs it as its progress task.

Success is decided by the claim (the account service confirms the device), failure by the
device (it rolls back and reports a diagnostic code).

A device that names ``claim-relay`` is told HA can relay (``hub_relay``). If it cannot reach the
account service itself (an IoT VLAN without internet), its ``status`` carries its signed
confirmation; the engine posts it to the service as it is (``relayed``) and hands the answer
back with ``claim_answer``. HA is only the courier: it can neither forge the confirmation (the
device's signature) nor alter the grant (the service's MAC, keyed by the claim token). With an
``http`` account service (an add-on or LAN service without TLS) the relay is the device's only
way: it sends such a service nothing in clear. A device that cannot be relayed for (older
firmware, Bluetooth) is told nothing then: the flow says so (``device_needs_https``), unless
the service is on this host's loopback (a development setup: a device on the same host with
``--allow-insecure-http`` posts to it itself).

The household's hub hears the device come online (its retained availability) as soon as it
joined the broker with the credential its claim gave it: ``watch_online`` tells the engine so,
and the claim is asked then, without waiting for the next device poll (a device that does not
hold a long poll, or one that left the link). Coming online never decides by itself: only the
claim's verdict (owned by this household) ends the commit as a success.

A Wi-Fi change has no claim: the device's own verdict decides, or (over Bluetooth, the device
left for the new network) the runtime seeing it online again, which closes the Wi-Fi-lost
repair.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from yarl import URL

from .account_client import (
    AccountConnectionError,
    AccountServiceError,
    AlreadyOwnedError,
    Claim,
    ClaimExpiredError,
    ClaimState,
    ClaimStatus,
    ClockSkewError,
    RateLimitedError,
    ServiceUnavailableError,
)
from .attempts import no_record
from .const import LOOPBACK_HOSTS
from .device_client import (
    DeviceClientError,
    DeviceCommandError,
    DeviceConnectionError,
    DeviceLink,
    SessionLostError,
)
from .flow_errors import Stage, diagnostic_error, flow_error
from .iob_protocol import (
    ClaimConfirmation,
    DeviceState,
    DiagnosticCode,
    OwnerSecret,
    StatusResult,
)
from .iob_protocol.attempts import Step

_LOGGER = logging.getLogger(__name__)

#: Seconds between status polls while the device commits.
POLL_INTERVAL: Final = 1.0
#: The first poll after the commit: a device on a good network is done in a few hundred ms, so
#: the polls start fast and back off to POLL_INTERVAL (0.25, 0.5, 1, 1, … s).
FIRST_POLL: Final = 0.25
#: Seconds a long-polled status waits on the device (below the LAN transport's 15 s timeout):
#: a device that :attr:`~.device_client.DeviceLink.waits_for_status` answers when its commit
#: ends, so the flow hears the outcome at once with one request instead of a poll a second.
STATUS_WAIT: Final = 10
#: A long poll answered "committing" sooner than this (seconds) was not held: the device is
#: polled with the back-off from then on.
HELD_AT_LEAST: Final = STATUS_WAIT / 2
#: Time added to the device's fail-safe timer before the flow stops waiting.
COMMIT_MARGIN: Final = 30.0
#: A claim with less life left than a commit needs is replaced before ``set_claim``.
CLAIM_MIN_LIFETIME: Final = 240
#: The device's fail-safe timer when it has not said (no commit in this flow yet).
DEFAULT_TIMER: Final = 180

#: A claim check that failed this way may work again: the device's verdict is awaited.
_TRANSIENT_ACCOUNT_ERRORS: Final = (
    AccountConnectionError,
    ServiceUnavailableError,
    RateLimitedError,
)


@dataclass(frozen=True, slots=True)
class WifiChoice:
    """The network the user picked; ``ssid`` None keeps the wired connection."""

    ssid: bytes | None
    #: Never in its repr (log lines, tracebacks).
    passphrase: str | None = field(repr=False)
    hidden: bool
    #: Join by the router's WPS push button: no passphrase, the device gets the key from the
    #: router (offered only for a device that names ``wps``, a secured network it sees).
    wps: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the commit ended: neither ``error`` nor ``abort`` means success."""

    error: str | None = None
    abort: str | None = None


SUCCESS: Final = Outcome()


def relay_refusal(err: AccountServiceError) -> DiagnosticCode:
    """What the device is told when the service refused (or missed) a relayed confirmation."""
    if isinstance(err, _TRANSIENT_ACCOUNT_ERRORS):
        return DiagnosticCode.RELAY_UNREACHABLE
    if isinstance(err, ClaimExpiredError):
        return DiagnosticCode.CLAIM_EXPIRED
    if isinstance(err, ClockSkewError):
        return DiagnosticCode.CLOCK_SKEW
    return DiagnosticCode.CLAIM_REJECTED


_CLAIM_VERDICTS: Final = {
    ClaimState.OWNED: SUCCESS,
    ClaimState.EXPIRED: Outcome(error=diagnostic_error(DiagnosticCode.CLAIM_EXPIRED)),
    ClaimState.REJECTED: Outcome(error=diagnostic_error(DiagnosticCode.CLAIM_REJECTED)),
}


type WatchOnline = Callable[[Callable[[], None]], Callable[[], None]]
"""``watch(notify)`` calls ``notify()`` whenever the household's hub sees the device come
online; it returns the function that stops watching."""


class ClaimService(Protocol):
    """What the engine needs from the account service (``AccountClient`` has it)."""

    @property
    def base_url(self) -> str:
        """The service's address, handed to the device with the claim."""

    async def create_claim(self, household_id: str, device_id: str) -> Claim:
        """A new claim for ``device_id`` in ``household_id``."""

    async def claim_status(self, claim_id: str) -> ClaimStatus:
        """Where the claim stands."""

    async def relay_claim_confirmation(self, confirmation: ClaimConfirmation) -> dict[str, Any]:
        """Post a device's signed confirmation for it; the service's answer, verbatim."""


def device_verdict(status: StatusResult) -> Outcome | None:
    """The device ended its commit: committed, or rolled back with a diagnostic code."""
    if status.state is not DeviceState.COMMITTING and status.diagnostic is not None:
        return Outcome(error=diagnostic_error(status.diagnostic))
    if status.state is DeviceState.COMMITTED:
        return SUCCESS
    return None


class _DecidedError(Exception):
    """The claim decided while the engine waited on the device (it came online at the hub)."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(str(outcome))
        self.outcome = outcome


class _ClaimRefusedError(Exception):
    """Creating the claim failed: shown as in the credentials step (Stage.CLAIM)."""

    def __init__(self, cause: AccountServiceError) -> None:
        super().__init__(str(cause))
        self.cause = cause


class CommitEngine:
    """One device's commits (a retry reuses the claim and the owner secret).

    ``owner_secret`` None: a Wi-Fi change (no claim, the device keeps its owner).
    """

    def __init__(
        self,
        account: ClaimService,
        *,
        household_id: str,
        device_id: str,
        owner_secret: OwnerSecret | None,
        ensure_link: Callable[[], Awaitable[DeviceLink]],
        bluetooth: bool,
        wifi_lost_reported: Callable[[], bool],
        record: Callable[[Step, str], None] = no_record,
        watch_online: WatchOnline | None = None,
    ) -> None:
        """Nothing is sent until :meth:`async_new_claim` or :meth:`async_run`.

        ``record``: told each step handed to the device (the flow's attempt log).
        ``watch_online``: the household's hub telling when it sees the device come online
        (None: no hub running, the claim is polled).
        """
        self._account = account
        self._household_id = household_id
        self._device_id = device_id
        self._owner_secret = owner_secret
        self._ensure_link = ensure_link
        self._bluetooth = bluetooth
        self._wifi_lost_reported = wifi_lost_reported
        self._record = record
        self._watch_online = watch_online
        #: The claim handed over (or pre-validated); kept for a retry.
        self.claim: Claim | None = None
        #: The device's fail-safe timer from its last commit (0: not committed yet).
        self.timer = 0

    @property
    def timeout(self) -> int:
        """Seconds the device takes at most to finish or roll back."""
        return self.timer or DEFAULT_TIMER

    async def async_new_claim(self) -> Claim:
        """Create a claim (account-service errors propagate)."""
        self.claim = await self._account.create_claim(self._household_id, self._device_id)
        return self.claim

    async def async_run(self, choice: WifiChoice) -> Outcome:
        """Commit ``choice``; every failure becomes an outcome, never an exception."""
        try:
            return await self._async_commit(choice)
        except _ClaimRefusedError as err:
            shown = flow_error(Stage.CLAIM, err.cause)
        except (TimeoutError, DeviceClientError, AccountServiceError) as err:
            _LOGGER.debug("Commit of %s failed: %s", self._device_id, err)
            shown = flow_error(Stage.COMMIT, err, bluetooth=self._bluetooth)
        return Outcome(error=shown.error, abort=shown.abort)

    async def _async_commit(self, choice: WifiChoice) -> Outcome:
        link = await self._ensure_link()
        claim: Claim | None = None
        owned_already = False
        service = URL(self._account.base_url)
        in_clear = service.scheme == "http"
        # Only a device on this host (a development setup) could use a loopback one directly.
        off_host = service.host not in LOOPBACK_HOSTS
        if self._owner_secret is not None and in_clear and off_host and not link.relays_claims:
            _LOGGER.warning(
                "Device %s needs an https account service: it confirms an http one only "
                "through Home Assistant's relay, which it does not offer here",
                self._device_id,
            )
            return Outcome(error="device_needs_https")
        if self._owner_secret is not None:
            claim, owned_already = await self._async_fresh_claim()
            if owned_already:
                converged = await self._async_converged(link, claim)
                if converged is not None:
                    return converged
        if choice.ssid is not None:
            await self._async_set_wifi(link, choice.ssid, choice)
        if claim is not None and self._owner_secret is not None:
            account_url = self._account.base_url
            await link.set_claim(
                account_url,
                claim.token,
                owner_secret=self._owner_secret,
                allow_insecure_http=in_clear,
                # Offered to a device that can use it; an older one gets today's request.
                hub_relay=link.relays_claims,
            )
            self._record(Step.CLAIM_SET, "ok")
        came_online: asyncio.Event | None = None
        stop_watching: Callable[[], None] | None = None
        if claim is not None and not owned_already and self._watch_online is not None:
            # Watched from before the commit: a device already on the network may be online
            # at the broker before the commit's answer is read.
            came_online = asyncio.Event()
            stop_watching = self._watch_online(came_online.set)
        try:
            self.timer = await link.commit()
            self._record(Step.COMMIT_STARTED, "wifi_change" if claim is None else "claim")
            async with asyncio.timeout(self.timer + COMMIT_MARGIN):
                return await self._async_wait(
                    link, claim, owned_already=owned_already, came_online=came_online
                )
        except _DecidedError as decided:
            return decided.outcome
        finally:
            if stop_watching is not None:
                stop_watching()

    async def _async_set_wifi(self, link: DeviceLink, ssid: bytes, choice: WifiChoice) -> None:
        """The network to join; by WPS the device asks the router for the key (none sent)."""
        if choice.wps:
            await link.set_wifi(ssid, None, wps=True)
        else:
            await link.set_wifi(ssid, choice.passphrase, hidden=choice.hidden)
        self._record(Step.WIFI_SET, "ok")

    async def _async_converged(self, link: DeviceLink, claim: Claim) -> Outcome | None:
        """This household owns the device already: done, unless it still needs the token.

        None: the device is back in provisioning (it never heard the answer) and gets the
        same claim again.
        """
        try:
            state = (await link.status()).state
        except (DeviceConnectionError, SessionLostError):
            # Gone from this network (or the link): the service's word decides, as while
            # waiting for a commit; the device finishes (or resumes) its claim by itself.
            return SUCCESS
        if state is DeviceState.COMMITTED:
            # The device already finished this flow's claim by itself (it retried the
            # confirmation whose answer was lost, or fetched its credential).
            return SUCCESS
        if state is DeviceState.COMMITTING:  # still at it: its verdict decides
            async with asyncio.timeout(self.timeout + COMMIT_MARGIN):
                return await self._async_wait(link, claim, owned_already=True)
        return None

    async def _async_wait(
        self,
        link: DeviceLink,
        claim: Claim | None,
        *,
        owned_already: bool = False,
        came_online: asyncio.Event | None = None,
    ) -> Outcome:
        """Ask the device (the failure code) and the claim (the success) until one decides.

        A device that waits for status is long-polled while it commits: it answers when the
        commit ends (or after :data:`STATUS_WAIT`), so there is no sleep in between. Others,
        and the claim once the device is out of reach, are polled with a back-off.

        ``owned_already``: the claim was owned before this commit (its answer to the device
        was lost), so it tells nothing about this commit while the device can still be asked.
        ``came_online``: set when the household's hub sees the device come online; every wait
        (a pause, a status request) ends then if the claim has a verdict.
        """
        verdict: Outcome | None = None
        device_reachable = True
        committing = True  # until the device says otherwise: the first ask may wait
        holds = link.waits_for_status
        clock = asyncio.get_running_loop().time
        delay = FIRST_POLL
        while verdict is None:
            long_poll = device_reachable and committing and holds
            if not long_poll:
                await self._async_unless_decided(
                    asyncio.sleep(min(delay, POLL_INTERVAL)), claim, came_online
                )
                delay *= 2
            if device_reachable:
                asked = clock()
                try:
                    status = await self._async_unless_decided(
                        self._async_ask(link, claim, wait=STATUS_WAIT if long_poll else 0),
                        claim,
                        came_online,
                    )
                except (DeviceConnectionError, SessionLostError):
                    if claim is None and not self._wifi_lost_reported():
                        raise
                    # It may have left this network (or Bluetooth) for the new one: the
                    # claim tells, or (a Wi-Fi change) the device coming back online.
                    device_reachable = committing = False
                else:
                    committing = status.state is DeviceState.COMMITTING
                    verdict = device_verdict(status)
                    if long_poll and committing and clock() - asked < HELD_AT_LEAST:
                        # "Committing" at once: it does not hold the wait, so it is polled
                        # with the back-off from now on (no loop without a pause).
                        holds = False
            if verdict is None and claim is not None and not (owned_already and device_reachable):
                verdict = await self._async_claim_verdict(claim, device_committing=committing)
            elif verdict is None and not device_reachable and not self._wifi_lost_reported():
                # The runtime deletes the Wi-Fi-lost repair once the device is online again.
                verdict = SUCCESS
        return verdict

    async def _async_unless_decided[T](
        self,
        work: Coroutine[Any, Any, T],
        claim: Claim | None,
        came_online: asyncio.Event | None,
    ) -> T:
        """``work``'s result, unless the claim decides once the hub saw the device come online.

        Each time ``came_online`` is set while ``work`` runs, the claim is asked: a verdict
        (owned by this household, or expired or rejected) cancels ``work`` and raises
        :class:`_DecidedError` with it; pending (or the service failing) lets ``work`` go on.
        Availability alone never ends the commit.
        """
        if came_online is None or claim is None:
            return await work
        task = asyncio.ensure_future(work)
        try:
            while True:
                online = asyncio.ensure_future(came_online.wait())
                try:
                    await asyncio.wait((task, online), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    online.cancel()
                if task.done():
                    return task.result()
                came_online.clear()
                _LOGGER.debug("%s is online at the hub: asking its claim", self._device_id)
                verdict = await self._async_claim_verdict(claim, device_committing=True)
                if verdict is not None:
                    raise _DecidedError(verdict)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _async_ask(self, link: DeviceLink, claim: Claim | None, *, wait: int) -> StatusResult:
        """The device's status; a confirmation it hands over is relayed, then it is asked again."""
        status = await (link.status(wait=wait) if wait else link.status())
        if status.relay is not None and claim is not None:
            await self._async_courier(link, status.relay)
            status = await (link.status(wait=wait) if wait else link.status())
        return status

    async def _async_courier(self, link: DeviceLink, confirmation: ClaimConfirmation) -> None:
        """Relay the device's signed confirmation and hand the service's answer back."""
        _LOGGER.info("%s cannot reach the account service: relaying its claim", self._device_id)
        try:
            answer = await self._account.relay_claim_confirmation(confirmation)
        except AccountServiceError as err:
            _LOGGER.warning("Relaying the claim of %s failed: %s", self._device_id, err)
            await self._async_tell_device(link, diagnostic=relay_refusal(err))
            return
        await self._async_tell_device(link, answer=answer)

    async def _async_tell_device(
        self,
        link: DeviceLink,
        *,
        answer: dict[str, Any] | None = None,
        diagnostic: DiagnosticCode | None = None,
    ) -> None:
        try:
            await link.claim_answer(answer=answer, diagnostic=diagnostic)
        except DeviceCommandError as err:
            # The device refused the answer (not for its confirmation) or stopped waiting:
            # its own verdict, read by the next status, says how the commit ended.
            _LOGGER.warning("%s refused the relayed answer: %s", self._device_id, err)

    async def _async_claim_verdict(
        self, claim: Claim, *, device_committing: bool
    ) -> Outcome | None:
        """The claim's verdict; None while it is pending.

        The account service failing while the device still commits says nothing yet: the
        device reaches it (or not) by itself, and if it cannot it rolls back and reports why
        (``RELAY_UNREACHABLE``). Stopping here would show an error while the device is still
        busy, and a retry right away would find it committing.
        """
        try:
            state = (await self._account.claim_status(claim.claim_id)).status
        except _TRANSIENT_ACCOUNT_ERRORS as err:
            if not device_committing:
                raise
            _LOGGER.debug("Claim check failed while %s commits: %s", self._device_id, err)
            return None
        return _CLAIM_VERDICTS.get(state)

    async def _async_fresh_claim(self) -> tuple[Claim, bool]:
        """The claim to hand over, and whether the household owns the device already.

        The pre-validated claim while it is pending and has time left; a new one if it was
        used up or is about to expire. Owned already: an earlier commit of this flow confirmed
        it and the answer never reached the device (the connection dropped after the service's
        commit), so the device rolled back. The same claim is handed over again: the device's
        fresh confirmation within the TTL gets the same grant, after it the device fetches its
        credential by its own signed request; either way it ends owned by this household.
        """
        claim = self.claim
        if claim is not None and claim.expires_at - time.time() > CLAIM_MIN_LIFETIME:
            state = (await self._account.claim_status(claim.claim_id)).status
            if state is ClaimState.PENDING:
                return claim, False
            if state is ClaimState.OWNED:
                _LOGGER.info("%s is this household's already: converging", self._device_id)
                return claim, True
        try:
            return await self.async_new_claim(), False
        except AlreadyOwnedError as err:
            if claim is None:
                raise _ClaimRefusedError(err) from err
            # This household owns the device (the service says so only to its own members):
            # through this flow's claim, confirmed while the device heard nothing.
            _LOGGER.info("%s is this household's already: converging", self._device_id)
            return claim, True
        except AccountServiceError as err:
            raise _ClaimRefusedError(err) from err
