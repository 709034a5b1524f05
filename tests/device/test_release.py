"""A household releases its device at the account service; the device notices and returns to
unclaimed by itself, keeping its identity and its Wi-Fi.

End to end with the REAL account service (SQLite) and the REAL Mosquitto: the release kicks the
device, the broker refuses its reconnect, the device asks the service with its own signed
request, hears "unowned", wipes its claim in one atomic write and opens its provisioning
window; another household then claims it over the LAN with the label's code. A service that
fails (down, 5xx, a proxy's page, the uniform refusal) never unclaims a device. The unclaim
write is SIGKILLed at random instants: the old record or the new one, never a mixture.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from iob_protocol.diagnostics import DiagnosticCode

from device_firmware.state import DeviceStateRecord, Ownership, Phase, StateStore
from device_firmware.supervision import RuntimeFactory, default_runtime_factory
from tests.plugins.scripted_service import Answer, ScriptedService, error

from . import unclaim_writer
from .commit_helpers import commit
from .conftest import CREDENTIAL_PATH, HOME_SSID, AgentStarter, Provisioned, RunningAgent
from .mqtt_clients import hub_mqtt
from .power_cut import kill_mid_write, writer_context
from .real_relay import RealRelay
from .test_credential_rotation import Observer, owned_and_publishing, refused_by_broker


def runtime_factory() -> RuntimeFactory:
    return default_runtime_factory(simulated=True, model="pi-test", firmware="0.1.0")


async def until(what: str, check: Callable[[], bool]) -> None:
    """Wait (bounded, not timed) until ``check()``; fail with ``what`` otherwise."""
    for _ in range(6000):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


def window_open(running: RunningAgent) -> bool:
    """Whether the device accepts a handshake with the label's code now."""
    return running.agent.session_host.window_open


async def release(relay: RealRelay, device_id: str) -> None:
    status, body = await relay.call(
        "POST",
        f"/v1/households/{relay.household_id}/devices/{device_id}/release",
        token=relay.user_token,
    )
    assert status == 200, body


async def another_household_claims(
    relay: RealRelay, running: RunningAgent, device_id: str
) -> tuple[str, str]:
    """A second account claims the device over the LAN with the label's code (no Wi-Fi sent:
    the device is still on it); return (household id, account token)."""
    _account, token = await relay.sign_up()
    status, created = await relay.call("POST", "/v1/households", {"name": "Next"}, token=token)
    assert status == 201, created
    household = created["household_id"]
    status, claim = await relay.call(
        "POST", f"/v1/households/{household}/claims", {"device_id": device_id}, token=token
    )
    assert status == 201, claim
    _client, result = await commit(running, relay.url, ssid=None, token=claim["token"])
    assert result.state.value == "committed"
    return household, token


async def test_release_returns_the_device_to_unclaimed_and_it_can_be_claimed_again(
    start_agent: AgentStarter,
    provisioned: Provisioned,
    account_service: RealRelay,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    relay = account_service
    device_id = provisioned.device.identity.device_id
    async with start_agent(runtime_factory=runtime_factory()) as running:
        store = running.agent.store
        # (The household's hub session ends before the release: the release disconnects
        # it, which is test_hub_kick.py's subject, not this test's.)
        async with owned_and_publishing(relay, running, device_id):
            claimed = store.current
            assert claimed.owner_secret is not None
            assert claimed.wifi_ssid == HOME_SSID
            assert not window_open(running)  # closed by the claim
        await release(relay, device_id)
        # Nobody tells the device: the kick, the refused reconnect and its own signed
        # question to the service bring it back to unclaimed.
        # (The state is written before the window opens: wait for both.)
        await until(
            "the device is unclaimed with its window open",
            lambda: not store.current.claimed and window_open(running),
        )

        record = store.current
        assert record == DeviceStateRecord(wifi_ssid=HOME_SSID, generation=record.generation)
        assert record.phase is Phase.UNCLAIMED
        assert record.owner_secret is None
        assert record.mqtt is None
        # On disk too, in the same form (a reboot starts unclaimed, on the same Wi-Fi).
        assert StateStore(provisioned.config.state_file).load() == record
        # The identity stays (the label still fits); the network stays joined.
        assert provisioned.device.identity.device_id == device_id
        assert await running.backend.wifi_connected()
        assert running.backend.saved_ssid == HOME_SSID
        # The label's window is open, as for an unclaimed device at boot; no hotspot.
        assert running.backend.hotspot is None
        assert claimed.mqtt is not None
        assert await refused_by_broker(claimed.mqtt)

        # Another household claims it over the LAN with the label's code.
        household, token = await another_household_claims(relay, running, device_id)
        owned = store.current
        assert owned.phase is Phase.ONLINE
        assert owned.ownership is not None
        assert owned.ownership.household_id == household
        assert owned.wifi_ssid == HOME_SSID
        status, hub = await relay.call("GET", f"/v1/households/{household}/hub", token=token)
        assert status == 200, hub
        async with hub_mqtt(hub) as client:
            await client.subscribe(f"iob/{device_id}/#", qos=1)
            await Observer(client, device_id).answers_commands()  # a live session again
        assert store.current.diagnostic is None

    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "released by its household" in logged
    assert "set it up again with its label code" in logged


FAILURES: dict[str, Answer | None] = {
    "down": None,
    "503": error(503, "broker_unavailable", "x"),
    "proxy-502": Answer(502, b"<html><body>Bad Gateway</body></html>", "text/html"),
    "refused": error(403, "credential_refused", "not yours"),
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
async def test_a_failing_service_never_unclaims_the_device(
    failure: str,
    start_agent: AgentStarter,
    provisioned: Provisioned,
    account_service: RealRelay,
    scripted_service: ScriptedService,
) -> None:
    """Released at the service, but the device's question fails: it keeps its claim (and says
    BROKER_AUTH_FAILED), since only a definitive "unowned" may wipe a working device."""
    relay = account_service
    device_id = provisioned.device.identity.device_id
    # The real service behind the fault injector, until the credential request is made to fail.
    service, url = scripted_service, scripted_service.url
    service.upstream = relay.url
    async with start_agent(runtime_factory=runtime_factory()) as running:
        store = running.agent.store
        # Claimed through the fault injector: the device's service URL is its URL.
        claim = await relay.claim(device_id)
        _client, result = await commit(running, url, token=claim["token"])
        assert result.state.value == "committed"
        await until("the device is online", lambda: store.current.phase is Phase.ONLINE)
        claimed = store.current
        assert claimed.ownership is not None
        assert claimed.ownership.service_url == url
        answer = FAILURES[failure]
        asked_before = len(service.received("POST", CREDENTIAL_PATH))
        if answer is None:
            await service.close()  # the service is gone: connection refused
        else:
            service.answer("POST", CREDENTIAL_PATH, answer)
        await release(relay, device_id)
        await until(
            "the device records BROKER_AUTH_FAILED",
            lambda: store.current.diagnostic is DiagnosticCode.BROKER_AUTH_FAILED,
        )
        if answer is not None:  # it did ask, and got the failure
            assert len(service.received("POST", CREDENTIAL_PATH)) > asked_before
        record = store.current
        assert record.phase is Phase.ONLINE
        assert record.ownership == claimed.ownership
        assert record.mqtt == claimed.mqtt
        assert record.owner_secret == claimed.owner_secret
        assert record.wifi_ssid == claimed.wifi_ssid
        assert StateStore(provisioned.config.state_file).load() == record
        assert not window_open(running)


# --- the unclaim write ------------------------------------------------------------------------


async def test_release_claim_only_undoes_the_ownership_it_was_asked_about(
    tmp_path: Path,
) -> None:
    store = StateStore(tmp_path / "state.json")
    store.write(unclaim_writer.CLAIMED)
    # A late answer about an earlier owner (the device was claimed again meanwhile).
    earlier = Ownership(household_id="other", service_url="https://relay.example", claimed_at=0)
    assert not await store.release_claim(earlier)
    assert store.load() == replace(unclaim_writer.CLAIMED, generation=1)
    # Changing its Wi-Fi (committing): not now either.
    store.write(replace(store.current, phase=Phase.COMMITTING))
    assert not await store.release_claim(unclaim_writer.OWNERSHIP)
    store.write(replace(store.current, phase=Phase.ONLINE))
    assert await store.release_claim(unclaim_writer.OWNERSHIP)
    assert store.load() == replace(unclaim_writer.UNCLAIMED, generation=store.current.generation)
    assert not await store.release_claim(unclaim_writer.OWNERSHIP)  # already unclaimed


def test_power_cut_while_returning_to_unclaimed(tmp_path: Path) -> None:
    """SIGKILL a writer that claims and releases 40 times at random instants: every restart
    finds the whole claimed record or the whole unclaimed one, never a mixture."""
    path = tmp_path / "state.json"
    StateStore(path).write(unclaim_writer.CLAIMED)
    context = writer_context("tests.device.unclaim_writer")
    rng = random.Random(20261123)  # noqa: S311 - reproducible kill times, not crypto
    last = StateStore(path).load().generation
    seen: set[Phase] = set()
    killed_mid_write = 0
    for _ in range(40):
        killed_mid_write += kill_mid_write(
            context, unclaim_writer.claim_and_release_forever, path, last, rng
        )
        record = StateStore(path).recover()  # the restart: must never raise
        assert replace(record, generation=0) in {
            unclaim_writer.CLAIMED,
            unclaim_writer.UNCLAIMED,
        }
        assert record.generation > last
        last = record.generation
        seen.add(record.phase)
        assert list(tmp_path.glob(".state.json.*.tmp")) == []
    # Meaningful only if kills landed inside writes and both records were written.
    assert killed_mid_write > 0
    assert seen == {Phase.ONLINE, Phase.UNCLAIMED}
