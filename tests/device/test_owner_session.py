"""Claimed devices accept only their owner's session (DESIGN, re-onboarding).

Over real HTTP on loopback: the label (QR, manual code) is refused once the device is claimed,
the owner secret saved with the claim opens a session, a Wi-Fi-only commit changes the network
(and rolls back, keeping the claim, on every failure), a factory reset wipes the secret and
brings the label back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from iob_protocol.commands import (
    CommandResult,
    CommitRequest,
    ErrorResponse,
    FactoryResetRequest,
    InfoRequest,
    InfoResult,
    OkResponse,
    Request,
    ScanWifiRequest,
    SetClaimRequest,
    SetOwnerSecretRequest,
    SetWifiRequest,
    StatusRequest,
)
from iob_protocol.diagnostics import DiagnosticCode
from iob_protocol.errors import OwnerSessionRequiredError, WrongSetupCodeError
from iob_protocol.framing import FrameType, encode_frame
from iob_protocol.payload import OwnerSecret, QrPayload
from iob_protocol.session import ClientSession

from device_firmware.actions import Action
from device_firmware.decide import WindowReason
from device_firmware.errors import CommandRefusedError
from device_firmware.network.backend import WifiCredentials
from device_firmware.network.simulated import Scenario, SimulatedNetwork
from device_firmware.provisioning.session_host import ReplyKind, SessionHost, SessionPolicy
from device_firmware.state import (
    DeviceStateRecord,
    MqttCredentials,
    Ownership,
    Phase,
    StateStore,
)
from tests.plugins.ports import free_port
from tests.plugins.scripted_service import ScriptedService, error

from .commit_helpers import OWNER_SECRET, TOKEN, change_wifi, commit
from .conftest import (
    CONFIRM_PATH,
    HOME_PASSPHRASE,
    HOME_SSID,
    RELEASE_PATH,
    TEST_PASSWORD,
    WRONG_PASSPHRASE,
    AgentStarter,
    Provisioned,
    RunningAgent,
    confirmations,
    home_scenario,
)
from .real_relay import RealRelay
from .test_captive import captive_url, form_token, post_label_code

OLD_SSID = b"Cafe"  # the network the claimed device was on (open, in home_scenario)
NEW_SECRET = bytes(range(200, 232))


@pytest.fixture
async def broker_port() -> AsyncIterator[int]:
    """A TCP listener standing in for the broker: the Wi-Fi change only checks reachability."""

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


def claim_on_disk(
    provisioned: Provisioned,
    *,
    service_url: str,
    broker_port: int,
    broker_host: str = "127.0.0.1",
    owner_secret: bytes | None = OWNER_SECRET,
) -> DeviceStateRecord:
    """The state a claim through HA leaves: online on the old network, with the owner secret."""
    return StateStore(provisioned.config.state_file).write(
        DeviceStateRecord(
            phase=Phase.ONLINE,
            ownership=Ownership(household_id="hh_test", service_url=service_url, claimed_at=1),
            mqtt=MqttCredentials(
                host=broker_host,
                port=broker_port,
                tls=False,
                username="dev-test",
                password=TEST_PASSWORD,
            ),
            wifi_ssid=OLD_SSID,
            owner_secret=owner_secret,
        )
    )


async def open_owner_window(running: RunningAgent) -> None:
    """A short button press on a claimed device: a window for the owner's session only."""
    running.agent.request(Action.BUTTON)
    for _ in range(200):
        if running.agent.session_host.window_open:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the window did not open")


@pytest.fixture
def owned(
    provisioned: Provisioned, scripted_service: ScriptedService, broker_port: int
) -> Provisioned:
    """``provisioned``, claimed on disk (see :func:`claim_on_disk`)."""
    claim_on_disk(provisioned, service_url=scripted_service.url, broker_port=broker_port)
    return provisioned


@contextlib.asynccontextmanager
async def owner_window(start_agent: AgentStarter) -> AsyncIterator[RunningAgent]:
    """The owned device running on its old network, its owner's window open."""
    async with start_agent(home_scenario(saved=OLD_SSID)) as running:
        await open_owner_window(running)
        yield running


def session_counts(running: RunningAgent) -> bool:
    """Whether the established session fits the device's state (a call: mypy won't narrow)."""
    return running.agent.session_host.has_session


def label_clients(provisioned: Provisioned) -> list[ClientSession]:
    return [provisioned.qr_client(), provisioned.manual_client()]


# --- the claim saves the secret -----------------------------------------------------------------


async def test_a_claim_without_owner_secret_cannot_commit(
    start_agent: AgentStarter, account_service: RealRelay
) -> None:
    async with start_agent() as running:
        claim = await account_service.claim(running.provisioned.device.identity.device_id)
        client = await running.connected_client()
        await client.call(SetWifiRequest(request_id=1, ssid=HOME_SSID, passphrase=HOME_PASSPHRASE))
        ack = await client.call(
            SetClaimRequest(
                request_id=2,
                service_url=account_service.url,
                claim_token=claim["token"],
                allow_insecure_http=True,
            )
        )
        assert isinstance(ack, OkResponse)  # an older HA's message still parses...
        refused = await client.call(CommitRequest(request_id=3))
        assert isinstance(refused, ErrorResponse)  # ...but cannot make the device owned
        assert refused.error == "owner_secret_required"
        assert refused.message is not None
        assert "update Home Assistant" in refused.message
        record = running.agent.store.current
        assert (record.claimed, record.owner_secret) == (False, None)
        assert record.phase is Phase.PROVISIONING
        assert await account_service.claim_status(claim["claim_id"]) == "pending"
        assert not [event for event in running.backend.events if event.startswith("connect")]
        # The same session recovers with a claim that carries a secret.
        _client, status = await commit(
            running, account_service.url, token=claim["token"], client=client
        )
        assert status.state.value == "committed"
        assert running.agent.store.current.owner_secret == OWNER_SECRET


@pytest.mark.parametrize("failure", ["wifi", "service"])
async def test_a_rolled_back_claim_leaves_no_owner_secret(
    start_agent: AgentStarter, scripted_service: ScriptedService, failure: str
) -> None:
    if failure == "service":
        scripted_service.answer("POST", CONFIRM_PATH, error(409, "claim_rejected", "owned"))
    passphrase = WRONG_PASSPHRASE if failure == "wifi" else HOME_PASSPHRASE
    async with start_agent() as running:
        _client, status = await commit(running, scripted_service.url, passphrase=passphrase)
        assert status.state.value == "provisioning"
        assert status.diagnostic in {
            DiagnosticCode.WIFI_AUTH_FAILED,
            DiagnosticCode.CLAIM_REJECTED,
        }
        record = running.agent.store.current
        assert (record.ownership, record.owner_secret) == (None, None)
        saved = running.provisioned.config.state_file.read_bytes()
        assert OwnerSecret(OWNER_SECRET).encode().encode() not in saved
        # Still unclaimed, so the label still opens the device.
        assert running.agent.session_host.window_open
        await running.connected_client(manual=True)


# --- who may connect ----------------------------------------------------------------------------


async def test_claimed_device_refuses_the_label_and_takes_its_owner(
    start_agent: AgentStarter,
    provisioned: Provisioned,
    scripted_service: ScriptedService,
    broker_port: int,
) -> None:
    claim_on_disk(provisioned, service_url=scripted_service.url, broker_port=broker_port)
    async with start_agent(home_scenario(saved=OLD_SSID)) as running:
        host = running.agent.session_host
        # Window closed (the device is online), yet the label gets the specific answer.
        for session in label_clients(provisioned):
            reply = await running.client().handshake(session)
            assert (reply.status, reply.error) == (403, "owner_session_required")
        owner = await running.client().handshake(provisioned.owner_client(OWNER_SECRET))
        assert (owner.status, owner.error) == (403, "window_closed")

        await open_owner_window(running)
        # An owner handshake in progress holds the one slot...
        pending = provisioned.owner_client(OWNER_SECRET)
        http = running.client()
        hello = await http.post("/iob/v1/session", pending.start())
        assert hello.status == 200
        # ...and a label hello is still answered at once: it is refused before any secret is
        # used, takes neither the slot nor an attempt.
        for session in label_clients(provisioned):
            reply = await running.client().handshake(session)
            assert (reply.status, reply.error) == (403, "owner_session_required")
        assert host.remaining_attempts() == 20
        done = await http.post("/iob/v1/session", pending.handle_device_hello(hello.body))
        assert done.status == 204
        http.session, http.tag = pending, done.headers["X-IOB-Session"]
        info = await http.call(InfoRequest(request_id=http.next_id()))
        assert isinstance(info, OkResponse)
        assert isinstance(info.result, InfoResult)
        assert info.result.claimed is True


async def test_a_wrong_owner_secret_counts_against_the_limiter(
    start_agent: AgentStarter, owned: Provisioned
) -> None:
    async with owner_window(start_agent) as running:
        http = running.client()
        session = owned.owner_client(NEW_SECRET)  # not the secret the device holds
        hello = await http.post("/iob/v1/session", session.start())
        assert hello.status == 200
        with pytest.raises(WrongSetupCodeError):
            session.handle_device_hello(hello.body)
        finish = await http.post(
            "/iob/v1/session", encode_frame(FrameType.CLIENT_FINISH, bytes(32))
        )
        assert (finish.status, finish.error) == (401, "wrong_setup_code")
        assert running.agent.session_host.remaining_attempts() == 19
        await running.connected_client(owner_secret=OWNER_SECRET)


async def test_zero_touch_device_without_owner_secret_accepts_nobody(
    start_agent: AgentStarter,
    provisioned: Provisioned,
    scripted_service: ScriptedService,
    broker_port: int,
) -> None:
    claim_on_disk(
        provisioned, service_url=scripted_service.url, broker_port=broker_port, owner_secret=None
    )
    async with start_agent(home_scenario(saved=OLD_SSID)) as running:
        await open_owner_window(running)
        reply = await running.client().handshake(provisioned.owner_client(OWNER_SECRET))
        assert (reply.status, reply.error) == (403, "no_owner_secret")
        reply = await running.client().handshake(provisioned.qr_client())
        assert (reply.status, reply.error) == (403, "owner_session_required")
        # Even a malformed hello never gets a label session on a claimed device.
        garbled = await running.client().post(
            "/iob/v1/session", encode_frame(FrameType.CLIENT_HELLO, b"x")
        )
        assert (garbled.status, garbled.error) == (403, "no_owner_secret")
        assert running.agent.session_host.remaining_attempts() == 20


# --- the Wi-Fi-only commit ----------------------------------------------------------------------


async def test_owner_session_changes_the_wifi_and_keeps_the_claim(
    start_agent: AgentStarter,
    provisioned: Provisioned,
    scripted_service: ScriptedService,
    broker_port: int,
) -> None:
    before = claim_on_disk(
        provisioned,
        service_url=scripted_service.url,
        broker_port=broker_port,
        broker_host="localhost",
    )
    async with start_agent(home_scenario(saved=OLD_SSID)) as running:
        await open_owner_window(running)
        client = await running.connected_client(owner_secret=OWNER_SECRET)
        scan = await client.call(ScanWifiRequest(request_id=client.next_id()))
        assert isinstance(scan, OkResponse)
        # set_claim is the one thing an owner session may not do.
        claim = await client.call(
            SetClaimRequest(
                request_id=client.next_id(),
                service_url=scripted_service.url,
                claim_token=TOKEN,
                owner_secret=NEW_SECRET,
                allow_insecure_http=True,
            )
        )
        assert isinstance(claim, ErrorResponse)
        assert claim.error == "already_claimed"
        # Without set_wifi there is nothing to commit on a claimed device.
        early = await client.call(CommitRequest(request_id=client.next_id()))
        assert isinstance(early, ErrorResponse)
        assert early.error == "not_ready"

        status = await change_wifi(client)
        assert (status.state.value, status.diagnostic) == ("committed", None)
        record = running.agent.store.current
        assert (record.phase, record.wifi_ssid) == (Phase.ONLINE, HOME_SSID)
        assert running.backend.saved_ssid == HOME_SSID
        # Ownership, MQTT credentials and owner secret are exactly as before.
        assert (record.ownership, record.mqtt, record.owner_secret) == (
            before.ownership,
            before.mqtt,
            before.owner_secret,
        )
        assert "dns:localhost" in running.backend.events  # the broker's name was resolved
        assert confirmations(scripted_service) == []  # no claim step
        # The label is still refused after the change.
        reply = await running.client().handshake(provisioned.qr_client())
        assert (reply.status, reply.error) == (403, "owner_session_required")


NEW_HOME = b"NewHome"


def _scenario(**network: object) -> Scenario:
    """The old network (saved, open) and the new one with the given properties."""
    new = SimulatedNetwork(ssid=NEW_HOME, passphrase=HOME_PASSPHRASE, **network)  # type: ignore[arg-type]
    return Scenario(networks=(SimulatedNetwork(ssid=OLD_SSID), new), saved=OLD_SSID)


@pytest.mark.parametrize(
    ("scenario", "change", "broker", "code"),
    [
        (_scenario(), {"passphrase": WRONG_PASSPHRASE}, "open", DiagnosticCode.WIFI_AUTH_FAILED),
        (_scenario(), {"ssid": b"Elsewhere"}, "open", DiagnosticCode.WIFI_AP_NOT_FOUND),
        (_scenario(hidden=True), {}, "open", DiagnosticCode.WIFI_AP_NOT_FOUND),
        (_scenario(dhcp=False), {}, "open", DiagnosticCode.DHCP_TIMEOUT),
        (_scenario(dns=False), {}, "named", DiagnosticCode.DNS_FAILED),
        (_scenario(), {}, "closed", DiagnosticCode.BROKER_UNREACHABLE),
        (_scenario(internet=False), {}, "closed", DiagnosticCode.NO_INTERNET),
        (_scenario(connect_delay=30), {}, "open", DiagnosticCode.TIMEOUT),
    ],
    ids=[
        "wrong-passphrase",
        "not-in-range",
        "hidden-without-flag",
        "no-dhcp",
        "no-dns",
        "broker-unreachable",
        "no-internet",
        "commit-timer",
    ],
)
async def test_every_wifi_change_failure_rolls_back_and_keeps_the_claim(  # noqa: PLR0917 - parametrised
    start_agent: AgentStarter,
    provisioned: Provisioned,
    scripted_service: ScriptedService,
    broker_port: int,
    scenario: Scenario,
    change: dict[str, object],
    broker: str,
    code: DiagnosticCode,
) -> None:
    before = claim_on_disk(
        provisioned,
        service_url=scripted_service.url,
        broker_port=free_port() if broker == "closed" else broker_port,
        broker_host="localhost" if broker == "named" else "127.0.0.1",
    )
    timer = {"commit_timeout": 1} if code is DiagnosticCode.TIMEOUT else {}
    async with start_agent(scenario, **timer) as running:
        await open_owner_window(running)
        client = await running.connected_client(owner_secret=OWNER_SECRET)
        wifi = {"ssid": NEW_HOME, "passphrase": HOME_PASSPHRASE, **change}
        status = await change_wifi(client, **wifi)  # type: ignore[arg-type]
        # Still owned and online, on the old network, with the code to show.
        assert (status.state.value, status.diagnostic) == ("committed", code)
        record = running.agent.store.current
        assert (record.phase, record.diagnostic, record.wifi_ssid) == (Phase.ONLINE, code, OLD_SSID)
        assert (record.ownership, record.mqtt, record.owner_secret) == (
            before.ownership,
            before.mqtt,
            before.owner_secret,
        )
        assert running.backend.saved_ssid == OLD_SSID
        assert running.backend.trial_ssid is None
        assert running.backend.events[-1] == "rollback"
        # The same session can try again at once (no reboot, no new handshake).
        retry = await client.call(StatusRequest(request_id=client.next_id()))
        assert isinstance(retry, OkResponse)


@pytest.mark.usefixtures("owned")
async def test_a_failed_change_can_be_retried_in_the_same_session(
    start_agent: AgentStarter,
) -> None:
    async with owner_window(start_agent) as running:
        client = await running.connected_client(owner_secret=OWNER_SECRET)
        status = await change_wifi(client, passphrase=WRONG_PASSPHRASE)
        assert status.diagnostic is DiagnosticCode.WIFI_AUTH_FAILED
        # The owner's window survives the failure (only the claim itself closes the label's).
        assert running.agent.session_host.window_open
        status = await change_wifi(client)
        assert (status.state.value, status.diagnostic) == ("committed", None)
        assert running.backend.saved_ssid == HOME_SSID


# --- sessions that no longer match the state ----------------------------------------------------


async def test_the_claiming_label_session_can_only_read_afterwards(
    start_agent: AgentStarter, account_service: RealRelay
) -> None:
    async with start_agent() as running:
        claim = await account_service.claim(running.provisioned.device.identity.device_id)
        client, status = await commit(running, account_service.url, token=claim["token"])
        assert status.state.value == "committed"
        # Still open for reading, but no longer a session that authorizes anything (Improv).
        assert not session_counts(running)
        for request, error in (
            (SetWifiRequest(request_id=client.next_id(), ssid=b"Other"), "owner_session_required"),
            (CommitRequest(request_id=client.next_id()), "owner_session_required"),
            (FactoryResetRequest(request_id=client.next_id()), "owner_session_required"),
            (
                SetOwnerSecretRequest(request_id=client.next_id(), owner_secret=NEW_SECRET),
                "owner_session_required",
            ),
            (
                SetClaimRequest(
                    request_id=client.next_id(),
                    service_url=account_service.url,
                    claim_token=claim["token"],
                    owner_secret=NEW_SECRET,
                    allow_insecure_http=True,
                ),
                "already_claimed",
            ),
        ):
            refused = await client.call(request)
            assert isinstance(refused, ErrorResponse), request
            assert refused.error == error
        assert running.agent.store.current.claimed
        assert running.agent.store.current.owner_secret == OWNER_SECRET
        for allowed in (StatusRequest, InfoRequest):
            assert isinstance(await client.call(allowed(request_id=client.next_id())), OkResponse)


async def test_a_new_session_does_not_inherit_pending_settings(
    start_agent: AgentStarter, scripted_service: ScriptedService
) -> None:
    """Someone's half-finished setup (a network, a claim) never rides along with the next
    session's commit: each session commits only what it sent itself."""
    async with start_agent() as running:
        first = await running.connected_client()
        await first.call(SetWifiRequest(request_id=1, ssid=b"Cafe"))
        await first.call(
            SetClaimRequest(
                request_id=2,
                service_url=scripted_service.url,
                claim_token=TOKEN,
                owner_secret=NEW_SECRET,
                allow_insecure_http=True,
            )
        )
        second = await running.connected_client(manual=True)
        refused = await second.call(CommitRequest(request_id=1))
        assert isinstance(refused, ErrorResponse)
        assert refused.error == "not_ready"
        assert confirmations(scripted_service) == []


async def test_set_owner_secret_needs_an_owner(start_agent: AgentStarter) -> None:
    async with start_agent() as running:
        client = await running.connected_client()
        refused = await client.call(SetOwnerSecretRequest(request_id=1, owner_secret=NEW_SECRET))
        assert isinstance(refused, ErrorResponse)
        assert refused.error == "not_claimed"
        assert running.agent.store.current.owner_secret is None


async def test_the_owner_hands_a_new_secret_over(
    start_agent: AgentStarter, owned: Provisioned
) -> None:
    """Before a transfer: the current owner re-keys the device for the recipient's HA."""
    async with owner_window(start_agent) as running:
        client = await running.connected_client(owner_secret=OWNER_SECRET)
        ack = await client.call(
            SetOwnerSecretRequest(request_id=client.next_id(), owner_secret=NEW_SECRET)
        )
        assert isinstance(ack, OkResponse)
        assert running.agent.store.current.owner_secret == NEW_SECRET
        # The session that sent it goes on; the next handshake needs the new secret.
        assert isinstance(await client.call(StatusRequest(request_id=client.next_id())), OkResponse)
        old = running.client()
        session = owned.owner_client(OWNER_SECRET)
        hello = await old.post("/iob/v1/session", session.start())
        with pytest.raises(WrongSetupCodeError):
            session.handle_device_hello(hello.body)
        finish = await old.post("/iob/v1/session", encode_frame(FrameType.CLIENT_FINISH, bytes(32)))
        assert finish.status == 401
        await running.connected_client(owner_secret=NEW_SECRET)


async def test_factory_reset_over_the_owner_session_wipes_the_secret(
    start_agent: AgentStarter, owned: Provisioned, scripted_service: ScriptedService
) -> None:
    async with owner_window(start_agent) as running:
        client = await running.connected_client(owner_secret=OWNER_SECRET)
        assert session_counts(running)
        ack = await client.call(FactoryResetRequest(request_id=client.next_id()))
        assert isinstance(ack, OkResponse)
        assert not session_counts(running)
        record = running.agent.store.current
        assert (record.phase, record.ownership, record.owner_secret) == (
            Phase.UNCLAIMED,
            None,
            None,
        )
        saved = owned.config.state_file.read_bytes()
        assert OwnerSecret(OWNER_SECRET).encode().encode() not in saved
        assert len(scripted_service.received("POST", RELEASE_PATH)) == 1  # the service was told
        # The old owner's session now sees an unowned device: it may read, nothing more.
        refused = await client.call(SetWifiRequest(request_id=client.next_id(), ssid=b"x"))
        assert isinstance(refused, ErrorResponse)
        assert refused.error == "setup_code_required"
        assert isinstance(await client.call(StatusRequest(request_id=client.next_id())), OkResponse)
        # The owner secret opens nothing any more; the label is back.
        reply = await running.client().handshake(owned.owner_client(OWNER_SECRET))
        assert (reply.status, reply.error) == (403, "setup_code_required")
        for manual in (False, True):
            await running.connected_client(manual=manual)


# --- the phone's captive page -------------------------------------------------------------------


async def test_captive_page_refuses_a_device_claimed_while_it_is_up(
    start_agent: AgentStarter, scripted_service: ScriptedService, broker_port: int
) -> None:
    async with start_agent() as running:
        token = await form_token(running)  # unclaimed: the hotspot and page are up
        claim_on_disk(
            running.provisioned, service_url=scripted_service.url, broker_port=broker_port
        )
        running.agent.store.load()  # the claim landed; the page has not been closed yet
        async with running.http.get(captive_url(running) + "/") as response:
            assert response.status == 403
            assert "owned" in await response.text()
        status, page = await post_label_code(
            running, token=token, ssid="HomeNet", passphrase=HOME_PASSPHRASE
        )
        assert status == 403
        assert "owner's Home Assistant" in page
        assert not [event for event in running.backend.events if event.startswith("connect")]
        # The layers below refuse too.
        with pytest.raises(OwnerSessionRequiredError):
            await running.agent.session_host.check_manual_code(
                running.provisioned.result.manual_code
            )
        with pytest.raises(CommandRefusedError):
            await running.agent.controller.start_network_commit(
                WifiCredentials(ssid=HOME_SSID, passphrase=HOME_PASSPHRASE)
            )
        # Told of the change, the agent closes the hotspot and the page.
        running.agent.controller.notify()
        for _ in range(500):
            if running.backend.hotspot is None and not running.agent.captive_ports():
                break
            await asyncio.sleep(0.01)
        assert running.backend.hotspot is None
        assert not running.agent.captive_ports()


# --- the session host on its own ----------------------------------------------------------------


async def no_commands(_request: Request) -> CommandResult:
    raise AssertionError("no command expected")


async def test_an_owner_change_mid_handshake_ends_it(provisioned: Provisioned) -> None:
    """Re-keyed (or reset) between hello and finish: the old secret no longer opens it."""

    policy = [SessionPolicy(claimed=True, owner_secret=OWNER_SECRET)]
    host = SessionHost(provisioned.device, no_commands, policy=lambda: policy[0])
    host.open_window(WindowReason.BUTTON_OWNER)
    client = provisioned.owner_client(OWNER_SECRET)
    hello = await host.handshake(client.start())
    assert hello.kind is ReplyKind.OK
    policy[0] = SessionPolicy(claimed=True, owner_secret=NEW_SECRET)
    finish = await host.handshake(client.handle_device_hello(hello.frame))
    assert (finish.kind, finish.error) == (ReplyKind.AUTH_FAILED, "credential_refused")
    assert host.remaining_attempts() == 19  # a PAKE ran: it counts
    assert not host.has_session


async def test_a_host_without_policy_is_never_claimed(provisioned: Provisioned) -> None:

    host = SessionHost(provisioned.device, no_commands)
    host.open_window(WindowReason.BOOT_UNCLAIMED)
    reply = await host.handshake(provisioned.owner_client(OWNER_SECRET).start())
    assert (reply.kind, reply.error) == (ReplyKind.REFUSED, "setup_code_required")
    client = ClientSession.for_qr(QrPayload.parse(provisioned.result.qr_payload))
    hello = await host.handshake(client.start())
    assert hello.kind is ReplyKind.OK
    done = await host.handshake(client.handle_device_hello(hello.frame))
    assert done.kind is ReplyKind.FINISHED
    assert host.has_session
