"""The fail-safe commit over the real session: success, every diagnostic path, rollback."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from iob_protocol.claim import ClaimConfirmation
from iob_protocol.commands import (
    FEATURE_STATUS_WAIT,
    FEATURES_HEADER,
    MAX_STATUS_WAIT,
    DeviceState,
    OkResponse,
    StatusRequest,
    StatusResult,
)
from iob_protocol.diagnostics import DiagnosticCode

from device_firmware.attempts import Step, read_attempts
from device_firmware.network.simulated import Scenario, SimulatedNetwork
from device_firmware.state import Phase
from tests.plugins.ports import free_port
from tests.plugins.scripted_service import Answer, ScriptedService, error, scripted

from .commit_helpers import OWNER_SECRET, TOKEN, commit, commit_with_claim, start_commit
from .conftest import (
    CONFIRM_PATH,
    CREDENTIAL_PATH,
    HEALTH_PATH,
    HOME_PASSPHRASE,
    HOME_SSID,
    WRONG_PASSPHRASE,
    AgentStarter,
    confirmations,
    device_api,
    health,
    home_scenario,
    owned,
)
from .real_relay import RealRelay
from .tls import make_pki


def closed_port_url() -> str:
    """A loopback URL nothing listens on (connection refused)."""
    return f"http://127.0.0.1:{free_port()}"


async def test_commit_success_makes_network_permanent(
    start_agent: AgentStarter, scripted_service: ScriptedService
) -> None:
    """Against the fault injector's default answers, which record what the device posted."""
    async with start_agent() as running:
        client, status = await commit(running, scripted_service.url)
        assert status.state.value == "committed"
        assert status.diagnostic is None
        assert running.backend.saved_ssid == HOME_SSID
        assert running.backend.trial_ssid is None
        record = running.agent.store.current
        assert record.phase is Phase.ONLINE
        assert record.ownership is not None
        assert record.ownership.household_id == "hh_test"
        assert record.mqtt is not None
        assert record.mqtt.username.startswith("dev-")
        assert record.wifi_ssid == HOME_SSID
        # The confirmation the device posted is signed by its identity key, for this token.
        (posted,) = confirmations(scripted_service)
        confirmation = ClaimConfirmation.from_json(
            json.dumps(posted, sort_keys=True, separators=(",", ":")).encode()
        )
        device = running.provisioned.device
        confirmation.verify(device.identity.public_key, now=int(time.time()))
        assert confirmation.claim_token == TOKEN
        # The state file holds the MQTT password: owner-only.
        assert running.provisioned.config.state_file.stat().st_mode & 0o777 == 0o600
        # The owner secret HA sent is saved with the claim, in the same owner-only file.
        assert record.owner_secret == OWNER_SECRET
        # Claimed: the label opens nothing, and the window is closed for the owner too.
        again = await running.client().handshake(running.provisioned.qr_client())
        assert (again.status, again.error) == (403, "owner_session_required")
        owner = await running.client().handshake(running.provisioned.owner_client(OWNER_SECRET))
        assert (owner.status, owner.error) == (403, "window_closed")
        assert running.hardware.pattern.value == "solid"
        del client


@pytest.mark.parametrize(
    ("scenario", "ssid", "passphrase", "hidden", "code"),
    [
        (home_scenario(), HOME_SSID, "wrong password", False, DiagnosticCode.WIFI_AUTH_FAILED),
        (home_scenario(), HOME_SSID, None, False, DiagnosticCode.WIFI_AUTH_FAILED),
        (home_scenario(), b"Cafe", "unneeded password", False, DiagnosticCode.WIFI_AUTH_FAILED),
        (home_scenario(), b"Elsewhere", HOME_PASSPHRASE, False, DiagnosticCode.WIFI_AP_NOT_FOUND),
        (home_scenario(), b"Attic", "hidden network pw", False, DiagnosticCode.WIFI_AP_NOT_FOUND),
        (
            Scenario(
                networks=(SimulatedNetwork(ssid=HOME_SSID, passphrase=HOME_PASSPHRASE, dhcp=False),)
            ),
            HOME_SSID,
            HOME_PASSPHRASE,
            False,
            DiagnosticCode.DHCP_TIMEOUT,
        ),
    ],
    ids=[
        "wrong-passphrase",
        "missing-passphrase",
        "open-with-passphrase",
        "not-in-range",
        "hidden-without-flag",
        "no-dhcp",
    ],
)
async def test_wifi_failures_roll_back_with_their_code(  # noqa: PLR0917 - parametrised
    start_agent: AgentStarter,
    account_service: RealRelay,
    scenario: Scenario,
    ssid: bytes,
    passphrase: str | None,
    hidden: bool,
    code: DiagnosticCode,
) -> None:
    async with start_agent(scenario) as running:
        claim = await account_service.claim(running.provisioned.device.identity.device_id)
        _client, status = await commit(
            running,
            account_service.url,
            token=claim["token"],
            ssid=ssid,
            passphrase=passphrase,
            hidden=hidden,
        )
        assert (status.state.value, status.diagnostic) == ("provisioning", code)
        assert running.backend.saved_ssid is None
        assert running.backend.trial_ssid is None
        assert running.backend.events[-1] == "rollback"
        assert await account_service.claim_status(claim["claim_id"]) == "pending"  # not sent
        assert running.agent.store.current.diagnostic is code
        assert running.hardware.pattern.value == "triple_blink"


async def test_hidden_network_with_flag_and_hex_psk(
    start_agent: AgentStarter, account_service: RealRelay
) -> None:
    psk = hashlib.pbkdf2_hmac("sha1", b"hidden network pw", b"Attic", 4096, 32).hex()
    async with start_agent() as running:
        _client, status = await commit_with_claim(
            running,
            account_service,
            ssid=b"Attic",
            passphrase=psk,
            hidden=True,
        )
        assert status.state.value == "committed"
        assert running.backend.saved_ssid == b"Attic"


async def test_dns_failure(start_agent: AgentStarter, scripted_service: ScriptedService) -> None:
    scenario = Scenario(
        networks=(SimulatedNetwork(ssid=HOME_SSID, passphrase=HOME_PASSPHRASE, dns=False),)
    )
    port = scripted_service.url.rsplit(":", 1)[1]
    async with start_agent(scenario) as running:
        _client, status = await commit(running, f"http://localhost:{port}")
        assert status.diagnostic is DiagnosticCode.DNS_FAILED
        assert "dns:localhost" in running.backend.events


async def test_no_internet_versus_unreachable_service(
    start_agent: AgentStarter, scripted_service: ScriptedService
) -> None:
    offline = Scenario(
        networks=(SimulatedNetwork(ssid=HOME_SSID, passphrase=HOME_PASSPHRASE, internet=False),)
    )
    async with start_agent(offline) as running:
        # The service is unreachable and so is everything else: NO_INTERNET.
        client, status = await commit(running, closed_port_url())
        assert status.diagnostic is DiagnosticCode.NO_INTERNET
        # A service on the LAN does not need the internet: the same network works.
        client, status = await commit(running, scripted_service.url, client=client)
        assert status.state.value == "committed"


async def test_unreachable_service(start_agent: AgentStarter) -> None:
    async with start_agent() as running:
        _client, status = await commit(running, closed_port_url())
        assert status.diagnostic is DiagnosticCode.RELAY_UNREACHABLE


async def test_tls_failure_and_private_ca(start_agent: AgentStarter, tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    async with scripted(ssl_context=pki.server_context()) as service:
        device_api(service)
        url = service.url
        async with start_agent() as running:
            _client, status = await commit(running, url)
            assert status.diagnostic is DiagnosticCode.TLS_FAILED
        # Same device, restarted with the private CA configured: the retry succeeds.
        async with start_agent(relay_ca_file=pki.ca_file) as running:
            _client, status = await commit(running, url)
            assert status.state.value == "committed"


async def test_a_portal_answering_the_services_https_is_captive_portal(
    start_agent: AgentStarter, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A portal that answers port 443 itself shows its own certificate: the device looks for
    a portal before it blames the service's certificate. A service on the LAN with an untrusted
    certificate is TLS_FAILED also on a network without internet."""
    pki = make_pki(tmp_path)
    portal = Scenario(
        networks=(
            SimulatedNetwork(ssid=HOME_SSID, passphrase=HOME_PASSPHRASE, captive_portal=True),
        )
    )
    offline = Scenario(
        networks=(SimulatedNetwork(ssid=HOME_SSID, passphrase=HOME_PASSPHRASE, internet=False),)
    )
    async with scripted(ssl_context=pki.server_context()) as service:
        device_api(service)
        async with start_agent(portal) as running:
            _client, status = await commit(running, service.url)
            assert status.diagnostic is DiagnosticCode.CAPTIVE_PORTAL
            assert "internet" in running.backend.events
            assert running.backend.trial_ssid is None
        # The log says both: the portal, and what answered in its place.
        (failed,) = [r for r in caplog.records if r.getMessage().startswith("commit failed")]
        assert "portal" in failed.getMessage()
        assert "certificate verify failed" in failed.getMessage()
        async with start_agent(offline) as running:
            _client, status = await commit(running, service.url)
            assert status.diagnostic is DiagnosticCode.TLS_FAILED


async def test_a_join_by_the_routers_wps_button(
    start_agent: AgentStarter, scripted_service: ScriptedService
) -> None:
    """No passphrase typed: with the router's button pressed the device joins with the key the
    router hands over and saves the network (it opens without the button later)."""
    pressed = home_scenario(
        networks=(SimulatedNetwork(ssid=HOME_SSID, passphrase=HOME_PASSPHRASE, wps_pressed=True),)
    )
    async with start_agent(pressed) as running:
        _client, status = await commit(running, scripted_service.url, passphrase=None, wps=True)
        assert (status.state.value, status.diagnostic) == ("committed", None)
        assert running.backend.saved_ssid == HOME_SSID
    (attempt,) = read_attempts(running.provisioned.config.attempts_file)
    results = {record.step: record.result for record in attempt.steps}
    assert results[Step.WIFI_JOINED] == "wps"  # what `iob-device attempts` shows


async def test_a_wps_join_without_the_button_is_wps_failed(
    start_agent: AgentStarter, scripted_service: ScriptedService
) -> None:
    """Nobody pressed the router's button: WPS_FAILED (not "the password was rejected"), rolled
    back, nothing confirmed."""
    async with start_agent(home_scenario()) as running:
        _client, status = await commit(running, scripted_service.url, passphrase=None, wps=True)
        assert status.diagnostic is DiagnosticCode.WPS_FAILED
        assert running.backend.trial_ssid is None
        assert confirmations(scripted_service) == []


async def test_device_clock_skew(
    start_agent: AgentStarter, scripted_service: ScriptedService
) -> None:
    async with start_agent(wall_clock=lambda: int(time.time()) + 3600) as running:
        _client, status = await commit(running, scripted_service.url)
        assert status.diagnostic is DiagnosticCode.CLOCK_SKEW
        assert confirmations(scripted_service) == []


@pytest.mark.parametrize(
    ("http_status", "error_code", "diagnostic"),
    [
        (409, "claim_rejected", DiagnosticCode.CLAIM_REJECTED),
        (410, "claim_expired", DiagnosticCode.CLAIM_EXPIRED),
        (400, "clock_skew", DiagnosticCode.CLOCK_SKEW),
        (400, "bad_signature", DiagnosticCode.CLAIM_REJECTED),
        (404, "not_found", DiagnosticCode.CLAIM_REJECTED),
        (503, "unavailable", DiagnosticCode.RELAY_UNREACHABLE),
    ],
)
async def test_service_refusals(
    start_agent: AgentStarter,
    scripted_service: ScriptedService,
    http_status: int,
    error_code: str,
    diagnostic: DiagnosticCode,
) -> None:
    scripted_service.answer("POST", CONFIRM_PATH, error(http_status, error_code, "refused"))
    # A 5xx may hide a claim the service recorded: retried until the commit timer ends.
    async with start_agent(commit_timeout=2) as running:
        _client, status = await commit(running, scripted_service.url)
        assert status.diagnostic is diagnostic
        assert running.backend.saved_ssid is None
        assert running.agent.store.current.ownership is None
        assert running.agent.store.current.claim_in_flight is None
        # A refused token is settled by the device's credential request ("unowned" here).
        settled = diagnostic in {DiagnosticCode.CLAIM_REJECTED, DiagnosticCode.CLAIM_EXPIRED}
        assert len(scripted_service.received("POST", CREDENTIAL_PATH)) == (1 if settled else 0)
        # No usable answer (5xx, the service's clock_skew) once the confirmation went out.
        retried = diagnostic in {DiagnosticCode.RELAY_UNREACHABLE, DiagnosticCode.CLOCK_SKEW}
        assert (len(confirmations(scripted_service)) > 1) is retried


async def test_malformed_service_answers(
    start_agent: AgentStarter, scripted_service: ScriptedService
) -> None:
    scripted_service.answer(
        "POST", CONFIRM_PATH, Answer(200, {"status": "owned", "device_id": "nope"})
    )
    # An answer the device cannot use is no answer: retried until the commit timer ends.
    async with start_agent(commit_timeout=2) as running:
        _client, status = await commit(running, scripted_service.url)
        assert status.diagnostic is DiagnosticCode.RELAY_UNREACHABLE
        scripted_service.answer("POST", CONFIRM_PATH, Answer(200, owned("0123456789ABCDEF")))
        _client, status = await commit(running, scripted_service.url)
        assert status.diagnostic is DiagnosticCode.CLAIM_REJECTED  # answer for another device


async def test_commit_timer(start_agent: AgentStarter, scripted_service: ScriptedService) -> None:
    slow = Scenario(
        networks=(SimulatedNetwork(ssid=HOME_SSID, passphrase=HOME_PASSPHRASE, connect_delay=30),)
    )
    async with start_agent(slow, commit_timeout=1) as running:
        _client, status = await commit(running, scripted_service.url)
        assert status.diagnostic is DiagnosticCode.TIMEOUT
        assert running.backend.saved_ssid is None


async def test_commit_timer_slow_service(
    start_agent: AgentStarter, scripted_service: ScriptedService
) -> None:
    scripted_service.answer("GET", HEALTH_PATH, lambda _request: health(delay=30))
    async with start_agent(commit_timeout=1) as running:
        _client, status = await commit(running, scripted_service.url)
        assert status.diagnostic is DiagnosticCode.TIMEOUT


async def test_rollback_restores_previous_network_and_retry_works(
    start_agent: AgentStarter, account_service: RealRelay
) -> None:
    scenario = home_scenario(saved=b"Cafe")
    async with start_agent(scenario) as running:
        claim = await account_service.claim(running.provisioned.device.identity.device_id)
        url, token = account_service.url, claim["token"]
        client, status = await commit(running, url, token=token, passphrase=WRONG_PASSPHRASE)
        assert status.diagnostic is DiagnosticCode.WIFI_AUTH_FAILED
        assert running.backend.saved_ssid == b"Cafe"
        assert await running.backend.wifi_connected()
        # Same session, no reboot: fix the password and commit again.
        client, status = await commit(running, url, token=token, client=client)
        assert (status.state.value, status.diagnostic) == ("committed", None)
        assert running.backend.saved_ssid == HOME_SSID


async def test_claim_without_wifi_change(
    start_agent: AgentStarter, account_service: RealRelay
) -> None:
    """A device already on the LAN (Ethernet) only confirms the claim."""
    async with start_agent(Scenario(wired=True)) as running:
        _client, status = await commit_with_claim(running, account_service, ssid=None)
        assert status.state.value == "committed"
        assert "commit:none" in running.backend.events


async def test_broker_override_and_pin(
    start_agent: AgentStarter, account_service: RealRelay
) -> None:
    async with start_agent() as running:
        _client, status = await commit_with_claim(
            running,
            account_service,
            broker_host="mqtt.lan",
            broker_port=8883,
            broker_pin=b"\x01" * 32,
        )
        assert status.state.value == "committed"
        mqtt = running.agent.store.current.mqtt
        assert mqtt is not None
        assert (mqtt.host, mqtt.port, mqtt.ca_pin) == ("mqtt.lan", 8883, b"\x01" * 32)


async def test_a_long_polled_status_answers_when_the_commit_ends(
    start_agent: AgentStarter, scripted_service: ScriptedService
) -> None:
    """``status`` with ``wait``: one request, answered with the outcome, not with "committing".

    The service's health check is slow, so the commit is still running when the status
    request arrives; the finish reply of the handshake names the feature.
    """
    scripted_service.default("GET", HEALTH_PATH, lambda _request: health(delay=0.3))
    async with start_agent() as running:
        client = running.client()
        done = await client.handshake(running.provisioned.qr_client())
        assert FEATURE_STATUS_WAIT in done.headers[FEATURES_HEADER].split(",")
        await start_commit(client, scripted_service.url)
        answer = await client.call(StatusRequest(request_id=client.next_id(), wait=MAX_STATUS_WAIT))
        assert isinstance(answer, OkResponse)
        assert answer.result == StatusResult(state=DeviceState.COMMITTED)
        # Not committing: a wait answers at once.
        again = await client.call(StatusRequest(request_id=client.next_id(), wait=1))
        assert isinstance(again, OkResponse)
        assert again.result == StatusResult(state=DeviceState.COMMITTED)
