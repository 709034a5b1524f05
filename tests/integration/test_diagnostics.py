"""Diagnostics: what support sees, with every secret redacted (snapshot)."""

from __future__ import annotations

import json

from homeassistant.core import HomeAssistant
from syrupy.assertion import SnapshotAssertion

from custom_components.iot_onboard import wifi_memory
from custom_components.iot_onboard.const import (
    CONF_DEVICES,
    CONF_REMEMBERED_WIFI,
    DEVICE_HOST,
    DEVICE_MODEL,
    DEVICE_OWNER_SECRET,
    DEVICE_PORT,
    DEVICE_PUBLIC_KEY,
)
from custom_components.iot_onboard.diagnostics import async_get_config_entry_diagnostics
from custom_components.iot_onboard.helpers import device_entry
from custom_components.iot_onboard.wifi_memory import RememberedWifi
from tests.integration.fake_account import FakeAccountService
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
