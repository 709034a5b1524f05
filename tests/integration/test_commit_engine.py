"""The commit engine without Home Assistant: a real device session, a claim service stand-in.

The device is test_device_client.py's aiohttp server running the protocol's real
``DeviceSession`` (handshake, encryption, request decoding); the link is the integration's
own ``DeviceClient``. The account side is the three calls the engine makes (``ClaimService``),
answered from a script. No ``hass`` fixture: commit_engine.py imports nothing from Home
Assistant (checked below), so it runs and is tested on its own.
"""

from __future__ import annotations

import ast
import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from custom_components.iot_onboard import commit_engine
from custom_components.iot_onboard.account_client import (
    AlreadyOwnedError,
    AuthenticationError,
    Claim,
    ClaimExpiredError,
    ClaimRejectedError,
    ClaimState,
    ClaimStatus,
    ServiceUnavailableError,
)
from custom_components.iot_onboard.commit_engine import (
    CommitEngine,
    Outcome,
    WatchOnline,
    WifiChoice,
)
from custom_components.iot_onboard.device_client import DeviceClient, DeviceLink
from custom_components.iot_onboard.flow_errors import FlowError, Stage, flow_error
from custom_components.iot_onboard.iob_protocol import (
    FEATURE_CLAIM_RELAY,
    FEATURE_STATUS_WAIT,
    FEATURE_WPS,
    ClaimAnswerRequest,
    ClaimConfirmation,
    CommandResult,
    DeviceState,
    DiagnosticCode,
    ErrorResponse,
    OwnerSecret,
    Request,
    SetClaimRequest,
    SetWifiRequest,
    StatusRequest,
    StatusResult,
)
from tests.integration.test_device_client import FakeDevice, default_answer, serving

pytestmark = pytest.mark.usefixtures("socket_enabled")

HID = "a" * 32
URL = "https://onboard.example"
PASSPHRASE = "correct horse battery"  # noqa: S105 - the test network
HOME = WifiChoice(ssid=b"HomeNet", passphrase=PASSPHRASE, hidden=False)


@dataclass
class Claims:
    """The account service as the engine sees it: claims created, statuses from a script."""

    device_id: str
    #: Successive claim_status answers (the last one repeats); an exception is raised.
    script: list[ClaimState | Exception] = field(default_factory=lambda: [ClaimState.OWNED])
    create_error: Exception | None = None
    created: list[Claim] = field(default_factory=list)
    base_url: str = URL
    #: What relaying a confirmation answers (an exception is raised); the ones relayed.
    relay_answer: dict[str, Any] | Exception = field(default_factory=dict)
    relayed: list[ClaimConfirmation] = field(default_factory=list)

    async def relay_claim_confirmation(self, confirmation: ClaimConfirmation) -> dict[str, Any]:
        self.relayed.append(confirmation)
        if isinstance(self.relay_answer, Exception):
            raise self.relay_answer
        return self.relay_answer

    async def create_claim(self, household_id: str, device_id: str) -> Claim:
        if self.create_error is not None:
            raise self.create_error
        claim = Claim(
            claim_id=f"{len(self.created):032d}",
            device_id=device_id,
            household_id=household_id,
            token="t" * 43,
            expires_at=int(time.time()) + 600,
        )
        self.created.append(claim)
        return claim

    async def claim_status(self, claim_id: str) -> ClaimStatus:
        answer = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(answer, Exception):
            raise answer
        return ClaimStatus(
            claim_id=claim_id,
            status=answer,
            device_id=self.device_id,
            household_id=HID,
            expires_at=0,
            completed_at=None,
        )


def statuses(
    device: FakeDevice, *states: StatusResult
) -> Callable[[Request], CommandResult | ErrorResponse]:
    """The device's answers, with ``status`` answered by ``states`` in turn (the last repeats)."""
    base = default_answer(device)
    queue = list(states)

    def answer(request: Request) -> CommandResult | ErrorResponse:
        if request.command.value == "status":
            return queue.pop(0) if len(queue) > 1 else queue[0]
        return base(request)

    return answer


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commit_engine, "POLL_INTERVAL", 0)
    monkeypatch.setattr(commit_engine, "FIRST_POLL", 0)


@pytest.fixture
async def device() -> AsyncIterator[FakeDevice]:
    async with serving(default_answer) as fake:
        yield fake


async def _opened(device: FakeDevice) -> AsyncIterator[DeviceLink]:
    async with aiohttp.ClientSession() as http:
        client = DeviceClient(device.host, device.port, session=http)
        opened = await client.connect(device.qr, device_id=device.identity.device_id)
        yield opened
        await opened.aclose()


@pytest.fixture
async def link(device: FakeDevice) -> AsyncIterator[DeviceLink]:
    """A link to an older device: it names no features, so status is polled."""
    async for opened in _opened(device):
        yield opened


@pytest.fixture
async def waiting_link(device: FakeDevice) -> AsyncIterator[DeviceLink]:
    """A link to a device that names ``status-wait`` when the handshake finishes."""
    device.features = FEATURE_STATUS_WAIT
    async for opened in _opened(device):
        assert opened.waits_for_status
        yield opened


def commit_ending(
    device: FakeDevice, outcome: StatusResult, *, long_polls: int = 1, plain_polls: int = 3
) -> None:
    """The device's commit ends with ``outcome`` while the ``long_polls``-th long poll waits
    (the device holds it), or at the ``plain_polls``-th plain status (a polling client)."""
    base = default_answer(device)
    asked = {"wait": 0, "plain": 0}

    async def hold(request: Request) -> None:
        if isinstance(request, StatusRequest):
            asked["wait" if request.wait else "plain"] += 1
            await asyncio.sleep(0)  # the device's commit runs while the request waits

    def answer(request: Request) -> CommandResult | ErrorResponse:
        if not isinstance(request, StatusRequest):
            return base(request)
        ended = asked["wait"] >= long_polls or asked["plain"] >= plain_polls
        return outcome if ended else StatusResult(state=DeviceState.COMMITTING)

    device.hold = hold
    device.answer = answer


def status_waits(device: FakeDevice) -> list[int]:
    """The ``wait`` of each status request the device received (0: a plain poll)."""
    return [request.wait for request in device.requests if isinstance(request, StatusRequest)]


def engine(
    link: DeviceLink,
    claims: Claims,
    *,
    owner_secret: OwnerSecret | None,
    bluetooth: bool = False,
    wifi_lost_reported: Callable[[], bool] = lambda: False,
    watch_online: WatchOnline | None = None,
) -> CommitEngine:
    async def ensure_link() -> DeviceLink:
        return link

    return CommitEngine(
        claims,
        household_id=HID,
        device_id=claims.device_id,
        owner_secret=owner_secret,
        ensure_link=ensure_link,
        bluetooth=bluetooth,
        wifi_lost_reported=wifi_lost_reported,
        watch_online=watch_online,
    )


def commands(device: FakeDevice) -> list[str]:
    return [request.command.value for request in device.requests]


def test_the_engine_imports_nothing_from_home_assistant() -> None:
    tree = ast.parse(Path(commit_engine.__file__).read_text(encoding="utf-8"))
    imported = {
        node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert imported
    assert not any(name.startswith("homeassistant") for name in imported)


async def test_onboarding_commit_ends_owned(device: FakeDevice, link: DeviceLink) -> None:
    """Wi-Fi, then the claim with the owner secret, then commit; the claim decides."""
    device.answer = statuses(device, StatusResult(state=DeviceState.COMMITTING))
    claims = Claims(device.identity.device_id, [ClaimState.PENDING, ClaimState.OWNED])
    owner = OwnerSecret.generate()
    run = engine(link, claims, owner_secret=owner)
    assert await run.async_run(HOME) == Outcome()
    assert commands(device) == ["set_wifi", "set_claim", "commit", "status", "status"]
    handed = device.requests[1]
    assert isinstance(handed, SetClaimRequest)
    assert handed.claim_token == claims.created[0].token
    assert handed.owner_secret == owner.secret
    assert not handed.hub_relay  # an older device: never offered (it would refuse the field)
    assert run.timer == 180
    assert run.claim == claims.created[0]


@pytest.fixture
async def relaying_link(device: FakeDevice) -> AsyncIterator[DeviceLink]:
    """A link to a device that names ``claim-relay`` (and ``status-wait``)."""
    device.features = f"{FEATURE_STATUS_WAIT},{FEATURE_CLAIM_RELAY}"
    async for opened in _opened(device):
        assert opened.relays_claims
        yield opened


def _out_of_reach(device: FakeDevice) -> ClaimConfirmation:
    """The device cannot reach the service: its first status hands over its confirmation."""
    confirmation = ClaimConfirmation.create(device.identity, "t" * 43)
    device.answer = statuses(
        device,
        StatusResult(state=DeviceState.COMMITTING, relay=confirmation),
        StatusResult(state=DeviceState.COMMITTED),
    )
    return confirmation


async def test_the_engine_relays_the_confirmation_of_a_device_without_internet(
    device: FakeDevice, relaying_link: DeviceLink
) -> None:
    """HA offers to relay; the device hands over its signed confirmation; HA posts exactly
    that statement and returns the service's answer verbatim; the device's verdict decides."""
    confirmation = _out_of_reach(device)
    claims = Claims(device.identity.device_id, [ClaimState.PENDING])
    claims.relay_answer = {"status": "owned", "grant_mac": "m" * 43}  # passed on, not read
    outcome = await engine(relaying_link, claims, owner_secret=OwnerSecret.generate()).async_run(
        HOME
    )
    assert outcome == Outcome()
    handed = device.requests[1]
    assert isinstance(handed, SetClaimRequest)
    assert handed.hub_relay
    assert [c.to_json() for c in claims.relayed] == [confirmation.to_json()]
    answers = [r for r in device.requests if isinstance(r, ClaimAnswerRequest)]
    assert [(a.answer, a.diagnostic) for a in answers] == [(claims.relay_answer, None)]


#: An account service without TLS (an add-on, a LAN service).
PLAIN_URL = "http://192.168.1.10:8099"


async def test_an_http_service_is_handed_with_the_relay(
    device: FakeDevice, relaying_link: DeviceLink
) -> None:
    """HA offers its relay with an ``http`` URL: the device's only way to confirm it."""
    _out_of_reach(device)
    claims = Claims(device.identity.device_id, [ClaimState.PENDING], base_url=PLAIN_URL)
    claims.relay_answer = {"status": "owned", "grant_mac": "m" * 43}
    outcome = await engine(relaying_link, claims, owner_secret=OwnerSecret.generate()).async_run(
        HOME
    )
    assert outcome == Outcome()
    handed = device.requests[1]
    assert isinstance(handed, SetClaimRequest)
    assert (handed.service_url, handed.hub_relay) == (PLAIN_URL, True)
    assert len(claims.relayed) == 1


async def test_an_http_service_and_a_device_without_the_relay_is_said_plainly(
    device: FakeDevice, link: DeviceLink
) -> None:
    """An older device (or Bluetooth) cannot be relayed for; it would refuse the ``http`` URL
    with a protocol error. The flow names the cause before the device is told anything."""
    claims = Claims(device.identity.device_id, [ClaimState.PENDING], base_url=PLAIN_URL)
    outcome = await engine(link, claims, owner_secret=OwnerSecret.generate()).async_run(HOME)
    assert outcome == Outcome(error="device_needs_https")
    assert commands(device) == []
    assert claims.created == []


async def test_a_refused_relay_is_told_to_the_device(
    device: FakeDevice, relaying_link: DeviceLink
) -> None:
    device.answer = statuses(
        device,
        StatusResult(
            state=DeviceState.COMMITTING, relay=ClaimConfirmation.create(device.identity, "t" * 43)
        ),
        StatusResult(state=DeviceState.PROVISIONING, diagnostic=DiagnosticCode.CLAIM_EXPIRED),
    )
    claims = Claims(device.identity.device_id, [ClaimState.PENDING])
    claims.relay_answer = ClaimExpiredError(410, "claim_expired", "")
    outcome = await engine(relaying_link, claims, owner_secret=OwnerSecret.generate()).async_run(
        HOME
    )
    assert outcome == Outcome(error="claim_expired")
    answers = [r for r in device.requests if isinstance(r, ClaimAnswerRequest)]
    assert [(a.answer, a.diagnostic) for a in answers] == [(None, DiagnosticCode.CLAIM_EXPIRED)]


async def test_device_rolls_back_with_its_diagnostic(device: FakeDevice, link: DeviceLink) -> None:
    device.answer = statuses(
        device,
        StatusResult(state=DeviceState.COMMITTING),
        StatusResult(state=DeviceState.PROVISIONING, diagnostic=DiagnosticCode.WIFI_AUTH_FAILED),
    )
    claims = Claims(device.identity.device_id, [ClaimState.PENDING])
    outcome = await engine(link, claims, owner_secret=OwnerSecret.generate()).async_run(HOME)
    assert outcome == Outcome(error="wifi_auth_failed")


async def test_claim_refusals_end_the_flow(device: FakeDevice, link: DeviceLink) -> None:
    """From the one table (flow_errors.py): a refused claim aborts, nothing is sent."""
    claims = Claims(device.identity.device_id)
    claims.create_error = ClaimRejectedError(409, "claim_rejected", "")
    outcome = await engine(link, claims, owner_secret=OwnerSecret.generate()).async_run(HOME)
    assert outcome == Outcome(abort="claim_rejected")
    assert commands(device) == []


async def test_owned_by_someone_else_at_commit_time(device: FakeDevice, link: DeviceLink) -> None:
    """No claim of this flow to converge on: the device is another household's."""
    claims = Claims(device.identity.device_id)
    claims.create_error = AlreadyOwnedError(409, "already_owned", "")
    outcome = await engine(link, claims, owner_secret=OwnerSecret.generate()).async_run(HOME)
    assert outcome == Outcome(abort="already_owned")
    assert commands(device) == []


async def test_a_claim_owned_before_while_the_device_still_commits(
    device: FakeDevice, link: DeviceLink
) -> None:
    """Converging on a device that is still committing: its verdict decides, no new claim."""
    device.answer = statuses(
        device,
        StatusResult(state=DeviceState.COMMITTING),
        StatusResult(state=DeviceState.COMMITTING),
        StatusResult(state=DeviceState.COMMITTED),
    )
    claims = Claims(device.identity.device_id, [ClaimState.OWNED])
    run = engine(link, claims, owner_secret=OwnerSecret.generate())
    await run.async_new_claim()
    assert await run.async_run(HOME) == Outcome()
    assert commands(device) == ["status", "status", "status"]
    assert len(claims.created) == 1


def test_a_failure_the_table_does_not_know_is_not_hidden() -> None:
    """flow_errors.flow_error: an unmapped exception propagates (a bug, not a form error)."""
    with pytest.raises(KeyError):
        flow_error(Stage.COMMIT, KeyError("bug"))
    assert flow_error(Stage.COMMIT, TimeoutError()) == FlowError("timeout")


async def test_a_revoked_session_asks_for_reauth(device: FakeDevice, link: DeviceLink) -> None:
    device.answer = statuses(device, StatusResult(state=DeviceState.PROVISIONING))
    claims = Claims(device.identity.device_id, [AuthenticationError(401, "unauthorized", "")])
    outcome = await engine(link, claims, owner_secret=OwnerSecret.generate()).async_run(HOME)
    assert outcome == Outcome(abort="reauth_required")


async def test_service_down_while_the_device_commits_waits_for_the_device(
    device: FakeDevice, link: DeviceLink
) -> None:
    device.answer = statuses(
        device,
        StatusResult(state=DeviceState.COMMITTING),
        StatusResult(state=DeviceState.COMMITTING),
        StatusResult(state=DeviceState.PROVISIONING, diagnostic=DiagnosticCode.RELAY_UNREACHABLE),
    )
    claims = Claims(device.identity.device_id, [ServiceUnavailableError(503, "unavailable", "")])
    outcome = await engine(link, claims, owner_secret=OwnerSecret.generate()).async_run(HOME)
    assert outcome == Outcome(error="relay_unreachable")


async def test_a_claim_owned_before_converges_without_a_new_one(
    device: FakeDevice, link: DeviceLink
) -> None:
    """The answer to the device was lost and the device finished by itself: done."""
    device.answer = statuses(device, StatusResult(state=DeviceState.COMMITTED))
    claims = Claims(device.identity.device_id, [ClaimState.OWNED])
    run = engine(link, claims, owner_secret=OwnerSecret.generate())
    await run.async_new_claim()
    assert await run.async_run(HOME) == Outcome()
    assert commands(device) == ["status"]
    assert len(claims.created) == 1


async def test_wifi_change_has_no_claim_and_the_device_decides(
    device: FakeDevice, link: DeviceLink
) -> None:
    device.answer = statuses(
        device,
        StatusResult(state=DeviceState.COMMITTING),
        StatusResult(state=DeviceState.COMMITTED),
    )
    claims = Claims(device.identity.device_id)
    assert await engine(link, claims, owner_secret=None).async_run(HOME) == Outcome()
    assert commands(device) == ["set_wifi", "commit", "status", "status"]
    assert claims.created == []


WPS_HOME = WifiChoice(ssid=b"HomeNet", passphrase=None, hidden=False, wps=True)


async def test_a_wps_join_asks_the_device_for_wps_and_sends_no_passphrase(
    device: FakeDevice,
) -> None:
    device.features = FEATURE_WPS
    device.answer = statuses(
        device,
        StatusResult(state=DeviceState.PROVISIONING, diagnostic=DiagnosticCode.WPS_FAILED),
    )
    claims = Claims(device.identity.device_id, [ClaimState.PENDING])
    async for link in _opened(device):
        run = engine(link, claims, owner_secret=OwnerSecret.generate())
        # The router handed over no key: the device's verdict, shown as its own error.
        assert await run.async_run(WPS_HOME) == Outcome(error="wps_failed")
    assert commands(device) == ["set_wifi", "set_claim", "commit", "status"]
    wifi = device.requests[0]
    assert isinstance(wifi, SetWifiRequest)
    assert (wifi.ssid, wifi.passphrase, wifi.hidden, wifi.wps) == (b"HomeNet", None, False, True)


async def test_a_wps_join_of_a_device_without_wps_sends_nothing(
    device: FakeDevice, link: DeviceLink
) -> None:
    """Never offered by the flow; should it happen, the older device gets no unknown field."""
    claims = Claims(device.identity.device_id, [ClaimState.PENDING])
    run = engine(link, claims, owner_secret=OwnerSecret.generate())
    assert await run.async_run(WPS_HOME) == Outcome(error="device_error")
    assert commands(device) == []


async def test_keeping_ethernet_sends_no_wifi(device: FakeDevice, link: DeviceLink) -> None:
    device.answer = statuses(device, StatusResult(state=DeviceState.COMMITTED))
    claims = Claims(device.identity.device_id)
    wired = WifiChoice(ssid=None, passphrase=None, hidden=False)
    assert await engine(link, claims, owner_secret=OwnerSecret.generate()).async_run(wired) == (
        Outcome()
    )
    assert commands(device) == ["set_claim", "commit", "status"]


def vanishing(device: FakeDevice) -> Callable[[Request], CommandResult | ErrorResponse]:
    """Answers ``status`` once (committing), then the device is gone from the link."""
    base = default_answer(device)

    def answer(request: Request) -> CommandResult | ErrorResponse:
        if request.command.value == "status":
            device.frame_status = 409  # every later frame: the session is gone
            return StatusResult(state=DeviceState.COMMITTING)
        return base(request)

    return answer


async def test_a_device_gone_over_bluetooth_says_so(device: FakeDevice, link: DeviceLink) -> None:
    """A Wi-Fi change whose device vanished: the Bluetooth wording of ``device_lost``."""
    device.answer = vanishing(device)
    run = engine(link, Claims(device.identity.device_id), owner_secret=None, bluetooth=True)
    assert await run.async_run(HOME) == Outcome(error="bluetooth_lost")


async def test_a_device_gone_with_its_repair_open_is_done_when_the_repair_closes(
    device: FakeDevice, link: DeviceLink
) -> None:
    """Over BLE the device leaves for its new network: back online (repair closed) = done."""
    device.answer = vanishing(device)
    open_repair = [True, True, False]

    def reported() -> bool:
        return open_repair.pop(0) if len(open_repair) > 1 else open_repair[0]

    run = engine(
        link,
        Claims(device.identity.device_id),
        owner_secret=None,
        bluetooth=True,
        wifi_lost_reported=reported,
    )
    assert await run.async_run(HOME) == Outcome()
    assert open_repair == [False]


def test_the_wifi_choice_never_shows_its_password() -> None:
    """A choice that ends up in a log line or a traceback's locals does not carry the password."""
    assert PASSPHRASE not in repr(HOME)
    assert PASSPHRASE not in str(HOME)
    assert "HomeNet" in repr(HOME)


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (StatusResult(state=DeviceState.COMMITTED), Outcome()),
        (
            StatusResult(
                state=DeviceState.PROVISIONING, diagnostic=DiagnosticCode.WIFI_AUTH_FAILED
            ),
            Outcome(error="wifi_auth_failed"),
        ),
    ],
    ids=["committed", "rolled-back"],
)
async def test_a_device_that_waits_is_asked_once_per_outcome(
    device: FakeDevice, waiting_link: DeviceLink, outcome: StatusResult, expected: Outcome
) -> None:
    """One long-polled status, answered when the commit ends: no polls, no claim checks."""
    commit_ending(device, outcome)
    claims = Claims(device.identity.device_id, [ClaimState.PENDING])
    run = engine(waiting_link, claims, owner_secret=OwnerSecret.generate())
    assert await run.async_run(HOME) == expected
    assert status_waits(device) == [commit_engine.STATUS_WAIT]


async def test_a_long_poll_that_runs_out_asks_the_claim_and_waits_again(
    device: FakeDevice, waiting_link: DeviceLink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The device still commits after STATUS_WAIT: the claim is checked, then one more wait."""
    monkeypatch.setattr(commit_engine, "HELD_AT_LEAST", 0)  # the fake's wait "ran out"
    commit_ending(device, StatusResult(state=DeviceState.COMMITTED), long_polls=2)
    claims = Claims(device.identity.device_id, [ClaimState.PENDING])
    checked = counted_claim_checks(claims)
    run = engine(waiting_link, claims, owner_secret=OwnerSecret.generate())
    assert await run.async_run(HOME) == Outcome()
    assert status_waits(device) == [commit_engine.STATUS_WAIT] * 2
    # One claim check, between the two waits (the device was still committing).
    assert checked == [claims.created[0].claim_id]


async def test_a_device_without_the_feature_is_polled(device: FakeDevice, link: DeviceLink) -> None:
    """An older device names no features: plain status requests with a back-off, as before."""
    commit_ending(device, StatusResult(state=DeviceState.COMMITTED))
    claims = Claims(device.identity.device_id, [ClaimState.PENDING])
    assert not link.waits_for_status
    outcome = await engine(link, claims, owner_secret=OwnerSecret.generate()).async_run(HOME)
    assert outcome == Outcome()
    assert status_waits(device) == [0, 0, 0]


async def test_converging_on_a_waiting_device_long_polls_its_commit(
    device: FakeDevice, waiting_link: DeviceLink
) -> None:
    """The lost-answer case on a device that waits: one plain look, then one long poll."""
    commit_ending(device, StatusResult(state=DeviceState.COMMITTED))
    claims = Claims(device.identity.device_id, [ClaimState.OWNED])
    run = engine(waiting_link, claims, owner_secret=OwnerSecret.generate())
    await run.async_new_claim()
    assert await run.async_run(HOME) == Outcome()
    assert status_waits(device) == [0, commit_engine.STATUS_WAIT]
    assert len(claims.created) == 1


async def test_a_device_that_does_not_hold_the_wait_is_polled(
    device: FakeDevice, waiting_link: DeviceLink
) -> None:
    """It names the feature but answers "committing" at once: back to the back-off polls."""
    commit_ending(device, StatusResult(state=DeviceState.COMMITTED), long_polls=1000, plain_polls=2)
    claims = Claims(device.identity.device_id, [ClaimState.PENDING])
    run = engine(waiting_link, claims, owner_secret=OwnerSecret.generate())
    assert await run.async_run(HOME) == Outcome()
    assert status_waits(device) == [commit_engine.STATUS_WAIT, 0, 0]


@dataclass
class Hub:
    """The household's hub as the engine sees it: it tells when the device comes online."""

    notify: Callable[[], None] | None = None
    watching: bool = False

    def watch(self, notify: Callable[[], None]) -> Callable[[], None]:
        self.notify, self.watching = notify, True

        def stop() -> None:
            self.watching = False

        return stop

    def device_online(self) -> None:
        assert self.notify is not None, "the engine does not watch the hub"
        self.notify()


def counted_claim_checks(claims: Claims) -> list[str]:
    """The claim ids ``claims`` is asked about, in order."""
    checked: list[str] = []
    claim_status = claims.claim_status

    async def counted(claim_id: str) -> ClaimStatus:
        checked.append(claim_id)
        return await claim_status(claim_id)

    claims.claim_status = counted  # type: ignore[method-assign]
    return checked


async def test_the_device_online_at_the_hub_ends_the_wait_on_its_claim(
    device: FakeDevice, waiting_link: DeviceLink
) -> None:
    """The device answers no more status once it committed (it left the link); the hub sees it
    come online: the claim is asked then and, owned by this household, ends the commit at
    once, without another device request (the one still waiting is dropped)."""
    hub = Hub()
    answered_never = asyncio.Event()

    async def hold(request: Request) -> None:
        if isinstance(request, StatusRequest):
            hub.device_online()
            await answered_never.wait()

    device.hold = hold
    claims = Claims(device.identity.device_id, [ClaimState.OWNED])
    checked = counted_claim_checks(claims)
    run = engine(waiting_link, claims, owner_secret=OwnerSecret.generate(), watch_online=hub.watch)
    try:
        async with asyncio.timeout(5):  # a bound: the device's own wait is STATUS_WAIT (10 s)
            assert await run.async_run(HOME) == Outcome()
    finally:
        answered_never.set()
    assert status_waits(device) == [commit_engine.STATUS_WAIT]
    assert checked == [claims.created[0].claim_id]
    assert not hub.watching


async def test_online_at_the_hub_alone_never_ends_the_commit(
    device: FakeDevice, waiting_link: DeviceLink
) -> None:
    """Online, but the claim still pending: the engine keeps waiting, and the device's own
    verdict (here a rollback) decides. Only the claim (owned by this household) succeeds."""
    hub = Hub()

    async def hold(request: Request) -> None:
        if isinstance(request, StatusRequest):
            hub.device_online()
            await asyncio.sleep(0.2)  # the engine asks the claim meanwhile

    device.hold = hold
    device.answer = statuses(
        device,
        StatusResult(state=DeviceState.PROVISIONING, diagnostic=DiagnosticCode.WIFI_AUTH_FAILED),
    )
    claims = Claims(device.identity.device_id, [ClaimState.PENDING])
    checked = counted_claim_checks(claims)
    run = engine(waiting_link, claims, owner_secret=OwnerSecret.generate(), watch_online=hub.watch)
    assert await run.async_run(HOME) == Outcome(error="wifi_auth_failed")
    assert checked == [claims.created[0].claim_id]
    assert status_waits(device) == [commit_engine.STATUS_WAIT]
