"""A lost claim answer: the device ends owned and online, never stranded.

The REAL account service (SQLite) and the REAL Mosquitto, with the lossy proxy
(``tests/plugins/lossy_proxy.py``) between the device and the service: it forwards the
confirmation and loses the service's answer, as a crash, a broken uplink or a power cut in the
last instant does. The power cut is the state file as it was on disk when the answer was lost,
put back before the agent boots again from its state directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from iob_protocol.commands import (
    CommitRequest,
    OkResponse,
    SetClaimRequest,
    SetWifiRequest,
)
from iob_protocol.diagnostics import DiagnosticCode

from device_firmware.commit import CLAIM_TTL_LIMIT, ClaimPlan
from device_firmware.network.backend import WifiCredentials
from device_firmware.network.simulated import Scenario, SimulatedNetwork
from device_firmware.state import DeviceStateRecord, Phase, StateStore
from tests.plugins.lossy_proxy import lossy_proxy

from .commit_helpers import OWNER_SECRET, commit
from .conftest import (
    HOME_PASSPHRASE,
    HOME_SSID,
    AgentStarter,
    Provisioned,
    RunningAgent,
    home_scenario,
)
from .mqtt_clients import device_mqtt
from .real_relay import RealRelay


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


async def _audit_actions(relay: RealRelay, device_id: str) -> list[str]:
    status, body = await relay.call(
        "GET",
        f"/v1/households/{relay.household_id}/devices/{device_id}/audit",
        token=relay.user_token,
    )
    assert status == 200, body
    return [event["action"] for event in body["events"]]


async def _assert_owned_and_online(
    running: RunningAgent, relay: RealRelay, claim: dict[str, Any]
) -> DeviceStateRecord:
    record = running.agent.store.current
    assert (record.phase, record.diagnostic) == (Phase.ONLINE, None), record
    assert record.claim_in_flight is None
    assert record.ownership is not None
    assert record.ownership.household_id == relay.household_id
    assert record.owner_secret == OWNER_SECRET
    assert running.backend.saved_ssid == HOME_SSID
    assert await relay.claim_status(claim["claim_id"]) == "owned"
    mqtt = record.mqtt
    assert mqtt is not None
    # The credential the device kept really opens the broker (with the one client id the
    # broker binds to it: the device id).
    async with device_mqtt(mqtt, identifier=claim["device_id"]) as device_client:
        await device_client.publish(f"iob/{claim['device_id']}/availability", b"online", qos=1)
    saved = running.provisioned.config.state_file.read_text()
    assert HOME_PASSPHRASE not in saved  # the claim in flight (and its Wi-Fi) is gone
    return record


async def test_lost_answer_is_retried_until_owned(
    start_agent: AgentStarter,
    provisioned: Provisioned,
    account_service: RealRelay,
) -> None:
    relay = account_service
    device_id = provisioned.device.identity.device_id
    claim = await relay.claim(device_id)
    async with (
        lossy_proxy(*_address(relay.url), drop=1) as proxy,
        start_agent() as running,
    ):
        _client, status = await commit(running, proxy.url, token=claim["token"])
        assert proxy.dropped == 1
        assert proxy.matched == 2  # the lost one, and the retry that was answered
        assert (status.state.value, status.diagnostic) == ("committed", None)
        await _assert_owned_and_online(running, relay, claim)
    actions = await _audit_actions(relay, device_id)
    assert actions.count("device.claimed") == 1
    assert actions.count("device.claim_reconfirmed") == 1


async def _commit_and_cut_power(
    start_agent: AgentStarter,
    service_url: str,
    token: str,
    proxy_lost: asyncio.Event,
    *,
    scenario: Scenario | None = None,
    wps: bool = False,
) -> bytes:
    """Send the claim, wait until the service has handled the confirmation; the state file's
    bytes at that instant (what a power cut leaves on disk). ``wps``: joined by the router's
    button instead of the passphrase."""
    async with start_agent(scenario) as running:
        client = await running.connected_client()
        steps = (
            SetWifiRequest(request_id=client.next_id(), ssid=HOME_SSID, wps=True)
            if wps
            else SetWifiRequest(
                request_id=client.next_id(), ssid=HOME_SSID, passphrase=HOME_PASSPHRASE
            ),
            SetClaimRequest(
                request_id=client.next_id(),
                service_url=service_url,
                claim_token=token,
                owner_secret=OWNER_SECRET,
                allow_insecure_http=True,
            ),
            CommitRequest(request_id=client.next_id()),
        )
        for step in steps:
            assert isinstance(await client.call(step), OkResponse)
        await proxy_lost.wait()
        return running.provisioned.config.state_file.read_bytes()


@contextlib.asynccontextmanager
async def _answer_lost(
    start_agent: AgentStarter, relay: RealRelay, claim: dict[str, Any]
) -> AsyncIterator[bytes]:
    """``claim`` committed through a proxy that loses the service's answer (and holds the
    connection), the power cut then: the state file's bytes at that moment."""
    async with lossy_proxy(*_address(relay.url), drop=1, hold=True) as proxy:
        yield await _commit_and_cut_power(start_agent, proxy.url, claim["token"], proxy.answer_lost)


async def _boots_and_resumes(
    start_agent: AgentStarter, relay: RealRelay, claim: dict[str, Any], **config: Any
) -> None:
    """The agent boots (with ``config``), resumes the claim in flight and ends owned, online."""
    async with start_agent(**config) as running:
        await running.agent.ready()
        await running.agent.controller.wait_for_commit()
        await _assert_owned_and_online(running, relay, claim)


@pytest.mark.parametrize("stop", ["power_cut", "agent_stopped"])
async def test_power_cut_with_claim_in_flight_resumes_at_boot(
    start_agent: AgentStarter,
    provisioned: Provisioned,
    account_service: RealRelay,
    stop: str,
) -> None:
    """``power_cut``: the disk as it was when the answer was lost. ``agent_stopped``: a clean
    stop (systemd restarting the service) keeps the claim in flight as well."""
    state_file = provisioned.config.state_file
    relay = account_service
    device_id = provisioned.device.identity.device_id
    claim = await relay.claim(device_id)
    async with _answer_lost(start_agent, relay, claim) as on_disk:
        if stop == "power_cut":
            state_file.write_bytes(on_disk)  # nothing written after the cut reached the disk
        assert StateStore(state_file).load().claim_in_flight is not None

        await _boots_and_resumes(start_agent, relay, claim)  # the same state directory
    actions = await _audit_actions(relay, device_id)
    assert actions.count("device.claim_reconfirmed") == 1


async def test_power_cut_after_a_wps_join_resumes_with_the_routers_key(
    start_agent: AgentStarter,
    provisioned: Provisioned,
    account_service: RealRelay,
) -> None:
    """Joined by the router's WPS button, then the power is cut with the claim in flight: the
    claim in flight kept the key the router handed over, so the device rejoins at boot without
    the button (its two minutes are long over) and ends owned."""
    state_file = provisioned.config.state_file
    relay = account_service
    claim = await relay.claim(provisioned.device.identity.device_id)
    pressed = home_scenario(
        networks=(SimulatedNetwork(ssid=HOME_SSID, passphrase=HOME_PASSPHRASE, wps_pressed=True),)
    )
    async with lossy_proxy(*_address(relay.url), drop=1, hold=True) as proxy:
        on_disk = await _commit_and_cut_power(
            start_agent, proxy.url, claim["token"], proxy.answer_lost, scenario=pressed, wps=True
        )
        state_file.write_bytes(on_disk)
        flight = StateStore(state_file).load().claim_in_flight
        assert flight is not None
        assert (flight.wifi_ssid, flight.wifi_passphrase) == (HOME_SSID, HOME_PASSPHRASE)

        await _boots_and_resumes(start_agent, relay, claim)  # home_scenario(): nobody presses


async def test_power_cut_past_the_ttl_fetches_the_credential(
    start_agent: AgentStarter,
    provisioned: Provisioned,
    account_service: RealRelay,
) -> None:
    state_file = provisioned.config.state_file
    relay = account_service
    device_id = provisioned.device.identity.device_id
    claim = await relay.claim(device_id)
    async with _answer_lost(start_agent, relay, claim) as on_disk:
        state_file.write_bytes(on_disk)
        # The device stays off longer than any claim token lives.
        later = CLAIM_TTL_LIMIT + 60
        relay.clock.advance(later)
        await _boots_and_resumes(
            start_agent, relay, claim, wall_clock=lambda: int(time.time()) + later
        )
    actions = await _audit_actions(relay, device_id)
    assert "device.claim_reconfirmed" not in actions
    assert actions.count("device.credentials_fetched") == 1


async def test_claim_in_flight_that_never_reached_the_service_rolls_back(
    start_agent: AgentStarter,
    provisioned: Provisioned,
    account_service: RealRelay,
) -> None:
    """The power went before the confirmation left, and the token lapsed meanwhile: the
    service says nobody owns the device; it is back in provisioning with CLAIM_EXPIRED."""
    relay = account_service
    claim = await relay.claim(provisioned.device.identity.device_id)
    store = StateStore(provisioned.config.state_file)
    store.change(phase=Phase.PROVISIONING)
    plan = ClaimPlan(service_url=relay.url, claim_token=claim["token"], owner_secret=OWNER_SECRET)
    wifi = WifiCredentials(ssid=HOME_SSID, passphrase=HOME_PASSPHRASE)
    later = CLAIM_TTL_LIMIT + 60
    store.change(phase=Phase.COMMITTING, claim_in_flight=plan.in_flight(wifi, int(time.time())))
    relay.clock.advance(later)
    async with start_agent(wall_clock=lambda: int(time.time()) + later) as running:
        await running.agent.ready()
        record = await running.agent.controller.wait_for_commit()
        assert (record.phase, record.diagnostic) == (
            Phase.PROVISIONING,
            DiagnosticCode.CLAIM_EXPIRED,
        )
        assert (record.ownership, record.mqtt, record.owner_secret) == (None, None, None)
        assert record.claim_in_flight is None
        assert running.agent.session_host.window_open
        assert "rollback" in running.backend.events
    assert await relay.devices() == []


async def test_claim_in_flight_that_never_reached_the_service_is_confirmed_at_boot(
    start_agent: AgentStarter,
    provisioned: Provisioned,
    account_service: RealRelay,
) -> None:
    """The power went between saving the claim in flight and posting it: the resumed commit
    posts the first confirmation the service sees, within the TTL."""
    relay = account_service
    device_id = provisioned.device.identity.device_id
    claim = await relay.claim(device_id)
    store = StateStore(provisioned.config.state_file)
    store.change(phase=Phase.PROVISIONING)
    plan = ClaimPlan(service_url=relay.url, claim_token=claim["token"], owner_secret=OWNER_SECRET)
    wifi = WifiCredentials(ssid=HOME_SSID, passphrase=HOME_PASSPHRASE)
    store.change(phase=Phase.COMMITTING, claim_in_flight=plan.in_flight(wifi, int(time.time())))
    await _boots_and_resumes(start_agent, relay, claim)
    actions = await _audit_actions(relay, device_id)
    assert actions.count("device.claimed") == 1
    assert "device.claim_reconfirmed" not in actions


async def test_every_answer_lost_until_the_timer_then_the_same_token_again(
    start_agent: AgentStarter,
    provisioned: Provisioned,
    account_service: RealRelay,
) -> None:
    """No answer gets through before the commit timer: the device rolls back with
    RELAY_UNREACHABLE (the service owns it meanwhile). Home Assistant's retry hands over the
    same token (the flow finds its claim owned); the device confirms it again and is online."""
    relay = account_service
    device_id = provisioned.device.identity.device_id
    claim = await relay.claim(device_id)
    async with (
        lossy_proxy(*_address(relay.url), drop=1000) as proxy,
        start_agent(commit_timeout=2) as running,
    ):
        client, status = await commit(running, proxy.url, token=claim["token"])
        assert (status.state.value, status.diagnostic) == (
            "provisioning",
            DiagnosticCode.RELAY_UNREACHABLE,
        )
        assert proxy.dropped >= 2  # retried, every answer lost
        record = running.agent.store.current
        assert (record.ownership, record.claim_in_flight) == (None, None)
        assert await relay.claim_status(claim["claim_id"]) == "owned"

        _client, status = await commit(running, relay.url, token=claim["token"], client=client)
        assert (status.state.value, status.diagnostic) == ("committed", None)
        await _assert_owned_and_online(running, relay, claim)
    actions = await _audit_actions(relay, device_id)
    assert actions.count("device.claimed") == 1
    assert actions.count("device.claim_reconfirmed") >= 2


async def test_resumed_before_ntp_set_the_clock(
    start_agent: AgentStarter,
    provisioned: Provisioned,
    account_service: RealRelay,
) -> None:
    """A Pi has no RTC: the resumed commit may sign before NTP set the clock. The service's
    clock_skew is no answer to give up on; once the clock is right the claim goes through."""
    relay = account_service
    device_id = provisioned.device.identity.device_id
    claim = await relay.claim(device_id)
    offset = [3600]
    async with lossy_proxy(
        *_address(relay.url), path="/v1/device/mqtt-credential", drop=0
    ) as proxy:
        store = StateStore(provisioned.config.state_file)
        store.change(phase=Phase.PROVISIONING)
        plan = ClaimPlan(
            service_url=proxy.url, claim_token=claim["token"], owner_secret=OWNER_SECRET
        )
        wifi = WifiCredentials(ssid=HOME_SSID, passphrase=HOME_PASSPHRASE)
        store.change(phase=Phase.COMMITTING, claim_in_flight=plan.in_flight(wifi, int(time.time())))
        async with start_agent(wall_clock=lambda: int(time.time()) + offset[0]) as running:
            await running.agent.ready()
            for _ in range(3000):  # the clock looks an hour ahead: a credential request
                if proxy.matched:
                    break
                await asyncio.sleep(0.01)
            assert proxy.matched >= 1
            assert running.agent.store.current.phase is Phase.COMMITTING  # not given up
            offset[0] = 0  # NTP set the clock
            await running.agent.controller.wait_for_commit()
            await _assert_owned_and_online(running, relay, claim)
    assert (await _audit_actions(relay, device_id)).count("device.claimed") == 1
