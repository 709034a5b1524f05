"""The setup hotspot's captive page: form, code check under the limiter, network commit."""

from __future__ import annotations

import asyncio
import re

import pytest
from iob_protocol.diagnostics import DiagnosticCode

from device_firmware import presence
from device_firmware.factory import hotspot_passphrase, hotspot_ssid
from device_firmware.network.backend import NetworkError
from device_firmware.network.simulated import SimulatedBackend
from device_firmware.state import Phase

from .conftest import HOME_PASSPHRASE, HOME_SSID, WRONG_PASSPHRASE, AgentStarter, RunningAgent
from .test_session_server import wrong_code


def captive_url(running: RunningAgent) -> str:
    ports = running.agent.captive_ports()
    assert ports, "captive page not running"
    return f"http://127.0.0.1:{ports[0]}"


async def form_token(running: RunningAgent) -> str:
    async with running.http.get(captive_url(running) + "/") as response:
        assert response.status == 200
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        page = await response.text()
    assert "HomeNet" in page
    assert "Cafe" in page
    match = re.search(r'name="token" value="([^"]+)"', page)
    assert match
    return match[1]


async def post(running: RunningAgent, **fields: str) -> tuple[int, str]:
    async with running.http.post(
        captive_url(running) + "/setup", data=fields, allow_redirects=False
    ) as response:
        return response.status, await response.text()


async def post_label_code(running: RunningAgent, **fields: str) -> tuple[int, str]:
    """:func:`post` with the label's (right) manual code."""
    return await post(running, code=running.provisioned.result.manual_code, **fields)


async def commit_ended(running: RunningAgent) -> None:
    """Wait (up to 5 s) until the device is no longer committing."""
    for _ in range(500):
        if running.agent.store.current.phase is not Phase.COMMITTING:
            break
        await asyncio.sleep(0.01)


async def test_hotspot_opens_with_the_derived_key_and_probes_redirect(
    start_agent: AgentStarter,
) -> None:
    async with start_agent() as running:
        device = running.provisioned.device
        assert running.backend.hotspot == (
            hotspot_ssid(device.identity.device_id),
            hotspot_passphrase(device.setup_code),
        )
        for path in ("/generate_204", "/hotspot-detect.html", "/anything/else"):
            async with running.http.get(
                captive_url(running) + path, allow_redirects=False
            ) as response:
                assert response.status == 302
                assert response.headers["Location"] == "http://127.0.0.1:0/"


async def test_a_hotspot_that_did_not_open_is_tried_again(
    start_agent: AgentStarter, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """wpa_supplicant can fail to start the AP once on a real radio (seen in the VM stage right
    after a failed join): the device must open its hotspot on its own later, not wait for a
    state change that may never come while nobody can join it."""
    monkeypatch.setattr(presence, "HOTSPOT_RETRY", 0.05)
    real_start = SimulatedBackend.start_hotspot
    calls: list[str] = []

    async def flaky_start(self: SimulatedBackend, ssid: str, passphrase: str | None) -> None:
        calls.append(ssid)
        if len(calls) <= 2:  # two failures, then the radio starts the AP
            raise NetworkError(
                DiagnosticCode.WIFI_AUTH_FAILED, "activation failed (SUPPLICANT_TIMEOUT)"
            )
        await real_start(self, ssid, passphrase)

    monkeypatch.setattr(SimulatedBackend, "start_hotspot", flaky_start)
    async with start_agent() as running:
        for _ in range(500):
            if running.backend.hotspot is not None and running.agent.captive_ports():
                break
            await asyncio.sleep(0.01)
        device = running.provisioned.device
        assert running.backend.hotspot == (
            hotspot_ssid(device.identity.device_id),
            hotspot_passphrase(device.setup_code),
        )
        assert running.agent.captive_ports()
        assert len(calls) == 3
        assert len(calls) == 3
    assert "cannot open the setup hotspot: activation failed (SUPPLICANT_TIMEOUT)" in caplog.text
    assert "WIFI_AUTH_FAILED" not in caplog.text  # a join's code, not the hotspot's
    assert "trying again in" in caplog.text
    assert "rfkill list" in caplog.text


async def test_wrong_codes_count_and_lock_like_handshakes(start_agent: AgentStarter) -> None:
    async with start_agent() as running:
        token = await form_token(running)
        bad = wrong_code(running.provisioned)
        status, _ = await post(running, token=WRONG_PASSPHRASE, ssid="HomeNet", code=bad)
        assert status == 403
        status, page = await post(
            running, token=token, ssid="HomeNet", passphrase=WRONG_PASSPHRASE[:5], code=bad
        )
        assert status == 400
        assert "passphrase" in page
        status, page = await post(running, token=token, ssid="HomeNet", code="12345-67891")
        assert status == 401  # a typo caught by the check digit costs nothing
        assert running.agent.session_host.remaining_attempts() == 20
        for _ in range(20):
            status, page = await post(
                running, token=token, ssid="HomeNet", passphrase=HOME_PASSPHRASE, code=bad
            )
            assert status == 401
        status, page = await post_label_code(
            running, token=token, ssid="HomeNet", passphrase=HOME_PASSPHRASE
        )
        assert status == 429
        assert "Too many wrong codes" in page
        # The secure session is locked out too: one budget.
        reply = await running.client().handshake(running.provisioned.qr_client())
        assert (reply.status, reply.error) == (429, "locked_out")


async def test_right_code_joins_the_network_unclaimed(start_agent: AgentStarter) -> None:
    async with start_agent() as running:
        token = await form_token(running)
        status, _ = await post_label_code(
            running, token=token, ssid_choice="HomeNet", passphrase=HOME_PASSPHRASE
        )
        assert status == 303
        await commit_ended(running)
        record = running.agent.store.current
        assert (record.phase, record.diagnostic, record.wifi_ssid) == (
            Phase.PROVISIONING,
            None,
            HOME_SSID,
        )
        assert not record.claimed
        assert running.backend.saved_ssid == HOME_SSID
        for _ in range(500):
            if running.backend.hotspot is None and not running.agent.captive_ports():
                break
            await asyncio.sleep(0.01)
        assert running.backend.hotspot is None
        # Still unclaimed: Home Assistant can now set it up on the LAN.
        assert running.agent.session_host.window_open


async def test_wrong_wifi_password_shows_the_diagnostic(start_agent: AgentStarter) -> None:
    async with start_agent() as running:
        token = await form_token(running)
        status, _ = await post_label_code(
            running, token=token, ssid="HomeNet", passphrase=WRONG_PASSPHRASE
        )
        assert status == 303
        await commit_ended(running)
        async with running.http.get(captive_url(running) + "/status") as response:
            page = await response.text()
        assert "WIFI_AUTH_FAILED" in page
        assert "password" in page
        assert running.backend.hotspot is not None  # rolled back to the hotspot
