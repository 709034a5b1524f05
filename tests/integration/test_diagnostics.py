"""Diagnostics: what support sees, with every secret redacted (snapshot)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from homeassistant.const import EVENT_HOMEASSISTANT_FINAL_WRITE
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from syrupy.assertion import SnapshotAssertion

from custom_components.iot_onboard import attempts, wifi_memory
from custom_components.iot_onboard.const import (
    CONF_DEVICES,
    CONF_HOUSEHOLD_ID,
    CONF_REMEMBERED_WIFI,
    DEVICE_HOST,
    DEVICE_MODEL,
    DEVICE_OWNER_SECRET,
    DEVICE_PORT,
    DEVICE_PUBLIC_KEY,
    DOMAIN,
)
from custom_components.iot_onboard.diagnostics import async_get_config_entry_diagnostics
from custom_components.iot_onboard.helpers import device_entry, household_entry
from custom_components.iot_onboard.iob_protocol import (
    SetupCode,
    b64url_decode,
    public_key_fingerprint,
)
from custom_components.iot_onboard.iob_protocol.attempts import Step
from custom_components.iot_onboard.wifi_memory import RememberedWifi
from tests.integration.fake_account import FakeAccountService
from tests.integration.onboarding_services import (
    HOME_PASSPHRASE,
    AccountService,
    Device,
    change_wifi,
    discovered,
    qr_text,
    sign_up,
    submit_wifi,
)
from tests.integration.runtime_helpers import DeviceProcesses, setup_entry, start_device, wait_for


async def test_diagnostics_redact_secrets(
    hass: HomeAssistant,
    fake_account: FakeAccountService,
    device_processes: DeviceProcesses,
    snapshot: SnapshotAssertion,
) -> None:
    await start_device(fake_account, device_processes, "dev1")
    owner_secret = "b3duZXItc2VjcmV0LW9mLWRldjEtbm90LWEtcmVhbC1vbmU"  # noqa: S105 - test data
    device_record = {
        DEVICE_HOST: "127.0.0.1",
        DEVICE_PORT: 8080,
        DEVICE_MODEL: "demo",
        DEVICE_PUBLIC_KEY: "cHVibGljLWtleS1vZi1kZXYx",
        DEVICE_OWNER_SECRET: owner_secret,
    }
    entry = await setup_entry(
        hass, fake_account, extra_data={CONF_DEVICES: {"dev1": device_record}}
    )
    coordinator = entry.runtime_data.coordinator
    await wait_for(
        hass,
        lambda: (
            (data := coordinator.device("dev1")) is not None
            and len(data.states) == 7
            and data.last_diagnostic is None
        ),
        "dev1's states",
    )
    diagnostics = await async_get_config_entry_diagnostics(hass, entry)
    text = json.dumps(diagnostics)
    for secret in (
        fake_account.access_token,
        fake_account.refresh_token,
        fake_account.hub_password,
        fake_account.device_passwords["dev1"],
        "owner@example.com",
        owner_secret,
    ):
        assert secret not in text
    onboarded = device_entry(hass, "dev1")
    assert onboarded is not None
    device_text = json.dumps(await async_get_config_entry_diagnostics(hass, onboarded))
    assert "dev1" in device_text
    assert owner_secret not in device_text
    # Loopback ports differ between runs.
    diagnostics["entry"]["data"]["account_url"] = "http://127.0.0.1:<port>"
    diagnostics["hub"]["broker"]["port"] = "<port>"
    assert diagnostics == snapshot


async def test_diagnostics_redact_the_remembered_wifi(
    hass: HomeAssistant, fake_account: FakeAccountService
) -> None:
    """Neither the sealed Wi-Fi nor (of course) the password or network name is shown."""
    entry = await setup_entry(hass, fake_account)
    passphrase = "remembered-password-1234"  # noqa: S105 - test data
    await wifi_memory.async_remember(
        hass, entry, RememberedWifi(b"AtticNet", passphrase, hidden=False)
    )
    sealed = entry.data[CONF_REMEMBERED_WIFI]
    diagnostics = await async_get_config_entry_diagnostics(hass, entry)
    text = json.dumps(diagnostics)
    for secret in (sealed, passphrase, "AtticNet"):
        assert secret not in text
    assert diagnostics["entry"]["data"][CONF_REMEMBERED_WIFI] == "**REDACTED**"


# --- the onboarding attempts the setup dialog saw -----------------------------------------------

WRONG_PASSPHRASE = "not the password"  # noqa: S105 - test data


def _steps(attempts: dict[str, list[Any]]) -> list[list[tuple[str, str]]]:
    """Each attempt's (step, result) pairs; its times only rise (they vary between runs)."""
    shown = []
    for attempt in (attempt for device in attempts.values() for attempt in device):
        times = [step["t"] for step in attempt["steps"]]
        assert times == sorted(times)
        assert all(isinstance(t, float | int) and t >= 0 for t in times)
        assert isinstance(attempt["started_at"], int)
        shown.append([(step["step"], step["result"]) for step in attempt["steps"]])
    return shown


def _without_times(attempts: dict[str, list[Any]], device_id: str) -> dict[str, list[Any]]:
    """For the snapshot: times and the device id (new at each run) replaced."""
    return {
        "<device id>" if name == device_id else name: [
            {
                **attempt,
                "started_at": "<unix time>",
                "steps": [{**step, "t": "<s>"} for step in attempt["steps"]],
            }
            for attempt in device
        ]
        for name, device in attempts.items()
    }


async def test_diagnostics_show_the_onboarding_attempts_step_by_step(
    hass: HomeAssistant,
    services: tuple[AccountService, Device],
    snapshot: SnapshotAssertion,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A wrong setup code, a rejected Wi-Fi password, then success, then a Wi-Fi change: each
    attempt with its steps, times and codes, in the device's format; no secret anywhere."""
    caplog.set_level(logging.DEBUG, logger="custom_components.iot_onboard.attempts")
    relay, device = services
    flow_id = (await discovered(hass, device))["flow_id"]
    # One sign-in form: the new account's household is created with it.
    result = await sign_up(hass, flow_id, relay.url)
    assert result["step_id"] == "credentials", result
    # The label's QR code with another setup secret: the device refuses the handshake.
    label = device.label()
    fingerprint = public_key_fingerprint(b64url_decode(label["factory"]["public_key"]))
    wrong_code = SetupCode.generate(device.device_id).qr_payload(fingerprint).format()
    result = await hass.config_entries.flow.async_configure(flow_id, {"setup_code": wrong_code})
    assert result["step_id"] == "credentials", result
    right_code = qr_text(device)
    result = await hass.config_entries.flow.async_configure(flow_id, {"setup_code": right_code})
    for passphrase in (WRONG_PASSPHRASE, HOME_PASSPHRASE):
        result = await submit_wifi(hass, result, passphrase)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    entry = household_entry(hass, result["result"].data[CONF_HOUSEHOLD_ID])
    assert entry is not None
    await hass.async_block_till_done()
    await change_wifi(hass, entry, device)

    diagnostics = await async_get_config_entry_diagnostics(hass, entry)
    attempts = diagnostics["onboarding_attempts"]
    assert list(attempts) == [device.device_id]
    assert _steps(attempts) == [
        [("handshake_started", "ok"), ("handshake_failed", "wrong_setup_code")],
        [
            ("handshake_started", "ok"),
            ("handshake_finished", "ok"),
            ("wifi_set", "ok"),
            ("claim_set", "ok"),
            ("commit_started", "claim"),
            ("rolled_back", "WIFI_AUTH_FAILED"),
        ],
        [
            ("wifi_set", "ok"),
            ("claim_set", "ok"),
            ("commit_started", "claim"),
            ("claim_confirmed", "ok"),
        ],
        [
            ("handshake_started", "ok"),
            ("handshake_finished", "ok"),
            ("wifi_set", "ok"),
            ("commit_started", "wifi_change"),
            ("committed", "ok"),
        ],
    ]
    # One format for support: the fields of the device's attempts.json (device_firmware's
    # attempts.py; this test tree does not import the device's code).
    for attempt in attempts[device.device_id]:
        assert set(attempt) == {"number", "started_at", "steps", "via"}
        assert all(set(step) == {"result", "step", "t"} for step in attempt["steps"])
    assert [attempt["via"] for attempt in attempts[device.device_id]] == [
        "lan",
        "lan",
        "session",
        "lan",
    ]
    onboarded = device_entry(hass, device.device_id)
    assert onboarded is not None
    device_diagnostics = await async_get_config_entry_diagnostics(hass, onboarded)
    assert device_diagnostics["onboarding_attempts"] == attempts
    # No secret in what support downloads, nor in the debug log (one line per step).
    text = json.dumps([diagnostics, device_diagnostics])
    secrets = (WRONG_PASSPHRASE, HOME_PASSPHRASE, right_code, wrong_code, device.manual_code)
    for secret in secrets:
        assert secret not in text
        assert secret not in caplog.text
    step_lines = [r for r in caplog.records if r.getMessage().startswith("Onboarding attempt")]
    assert len(step_lines) == sum(len(steps) for steps in _steps(attempts))
    assert all(r.levelno == logging.DEBUG and r.exc_info is None for r in step_lines)
    assert step_lines[-1].getMessage().startswith(f"Onboarding attempt 4 of {device.device_id}:")
    assert _without_times(attempts, device.device_id) == snapshot


async def test_the_attempts_are_bounded_and_kept(
    hass: HomeAssistant, fake_account: FakeAccountService, hass_storage: dict[str, Any]
) -> None:
    """A household keeps its last MAX_ATTEMPTS attempts; they are read back from storage."""
    entry = await setup_entry(hass, fake_account)
    household_id = entry.runtime_data.coordinator.household_id
    log = await attempts.async_get_log(hass)
    recorder = attempts.AttemptRecorder(log, household_id, "dev1")
    for _ in range(attempts.MAX_ATTEMPTS + 3):
        recorder.record(Step.HANDSHAKE_STARTED, via="lan")
        recorder.record(Step.HANDSHAKE_FAILED, "window_closed")
    for _ in range(attempts.MAX_STEPS + 5):
        recorder.record(Step.WIFI_SET)  # a new attempt, no longer than MAX_STEPS
    shown = (await async_get_config_entry_diagnostics(hass, entry))["onboarding_attempts"]
    numbers = [attempt["number"] for attempt in shown["dev1"]]
    assert numbers == list(range(5, attempts.MAX_ATTEMPTS + 5))
    assert len(shown["dev1"][-1]["steps"]) == attempts.MAX_STEPS
    assert shown["dev1"][0]["via"] == "lan"
    assert shown["dev1"][-1]["via"] == "session"
    # Written a few seconds later, or when Home Assistant stops; it reads them back.
    hass.bus.async_fire(EVENT_HOMEASSISTANT_FINAL_WRITE)
    await hass.async_block_till_done()
    stored = hass_storage[attempts.STORAGE_KEY]["data"]
    assert stored["households"][household_id][-1]["number"] == attempts.MAX_ATTEMPTS + 4
    hass.data.pop(f"{DOMAIN}_attempts")
    reread = await attempts.async_get_log(hass)
    assert reread is not log
    assert reread.attempts(household_id) == shown
