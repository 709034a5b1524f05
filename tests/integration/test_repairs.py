"""Repairs: device offline (with its reason), hub credentials refused, Wi-Fi lost."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

import pytest
from homeassistant.config_entries import SOURCE_REAUTH, SOURCE_RECONFIGURE, ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_time_changed
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.iot_onboard import repairs
from custom_components.iot_onboard.const import (
    CONF_DEVICE_ID,
    CONF_HOUSEHOLD_ID,
    DEVICE_HOST,
    DEVICE_MODEL,
    DEVICE_OWNER_SECRET,
    DEVICE_PORT,
    DEVICE_PUBLIC_KEY,
    DOMAIN,
)
from custom_components.iot_onboard.coordinator import OFFLINE_ISSUE_DELAY
from custom_components.iot_onboard.helpers import find_device
from custom_components.iot_onboard.iob_protocol import DeviceIdentity, OwnerSecret, b64url_encode
from tests.integration.fake_account import FakeAccountService
from tests.integration.runtime_helpers import (
    DeviceProcesses,
    flow_sources,
    publish_as_device,
    set_up,
    setup_entry,
    start_device,
    wait_for,
)
from tests.plugins.mosquitto import dynsec_command

DEVICE_RECORD = {
    DEVICE_HOST: "192.0.2.10",
    DEVICE_PORT: 8423,
    DEVICE_MODEL: "demo",
    DEVICE_PUBLIC_KEY: b64url_encode(DeviceIdentity.generate().public_key),
    DEVICE_OWNER_SECRET: OwnerSecret.generate().encode(),
}


async def _ready(
    hass: HomeAssistant, fake_account: FakeAccountService, device_processes: DeviceProcesses
) -> MockConfigEntry:
    await start_device(fake_account, device_processes, "dev1")
    entry = await setup_entry(hass, fake_account)
    coordinator = entry.runtime_data.coordinator
    await wait_for(
        hass,
        lambda: (
            (data := coordinator.device("dev1")) is not None
            and data.online is True
            and find_device(hass, "dev1", entry.entry_id) is not None
        ),
        "dev1 online and registered",
    )
    return entry


def _issue(hass: HomeAssistant, issue_id: str) -> ir.IssueEntry | None:
    return ir.async_get(hass).async_get_issue(DOMAIN, issue_id)


async def test_offline_device_raises_an_issue_with_its_reason(
    hass: HomeAssistant, fake_account: FakeAccountService, device_processes: DeviceProcesses
) -> None:
    entry = await _ready(hass, fake_account, device_processes)
    coordinator = entry.runtime_data.coordinator
    event = {"event": "wifi_weak", "code": "WIFI_AP_NOT_FOUND"}
    await publish_as_device(fake_account, "dev1", "diag", json.dumps(event).encode(), retain=False)
    await wait_for(hass, lambda: coordinator.device("dev1").last_diagnostic == event, "the event")
    device_processes.kill("dev1")  # the will: offline
    await wait_for(hass, lambda: coordinator.device("dev1").online is False, "dev1 offline")
    assert _issue(hass, "device_offline_dev1") is None  # not before the delay

    async_fire_time_changed(hass, dt_util.utcnow() + OFFLINE_ISSUE_DELAY)
    await hass.async_block_till_done()
    issue = _issue(hass, "device_offline_dev1")
    assert issue is not None
    assert issue.translation_key == "device_offline_diagnosed"
    assert issue.translation_placeholders is not None
    assert issue.translation_placeholders["code"] == "WIFI_AP_NOT_FOUND"
    assert "router" in issue.translation_placeholders["next_step"]

    await publish_as_device(fake_account, "dev1", "availability", b"online")
    await wait_for(hass, lambda: _issue(hass, "device_offline_dev1") is None, "issue deleted")


async def test_offline_without_a_reason(
    hass: HomeAssistant, fake_account: FakeAccountService, device_processes: DeviceProcesses
) -> None:
    entry = await _ready(hass, fake_account, device_processes)
    coordinator = entry.runtime_data.coordinator
    device_processes.kill("dev1")
    await wait_for(hass, lambda: coordinator.device("dev1").online is False, "dev1 offline")
    async_fire_time_changed(hass, dt_util.utcnow() + OFFLINE_ISSUE_DELAY)
    await hass.async_block_till_done()
    issue = _issue(hass, "device_offline_dev1")
    assert issue is not None
    assert issue.translation_key == "device_offline"


async def _fix(
    client: Any, issue_id: str, user_input: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = await client.post(
        "/api/repairs/issues/fix", json={"handler": DOMAIN, "issue_id": issue_id}
    )
    assert response.status == HTTPStatus.OK, await response.text()
    flow = await response.json()
    assert flow.get("step_id") == "confirm", flow
    response = await client.post(
        f"/api/repairs/issues/fix/{flow['flow_id']}", json=user_input or {}
    )
    assert response.status == HTTPStatus.OK, await response.text()
    result: dict[str, Any] = await response.json()
    return result


async def test_hub_refused_issue_leads_to_reauth(
    hass: HomeAssistant,
    fake_account: FakeAccountService,
    mock_config_entry: MockConfigEntry,
    hass_client: ClientSessionGenerator,
) -> None:
    assert await async_setup_component(hass, "repairs", {})
    fake_account.hub_status = 403  # the signed-in account lost its admin role
    entry = mock_config_entry
    assert await set_up(hass, entry) is ConfigEntryState.SETUP_RETRY
    issue_id = f"hub_refused_{entry.entry_id}"
    issue = _issue(hass, issue_id)
    assert issue is not None
    assert issue.is_fixable

    result = await _fix(await hass_client(), issue_id)
    assert result["type"] == "create_entry"
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert [flow["context"]["source"] for flow in flows] == [SOURCE_REAUTH]


async def test_expired_sign_in_starts_reauth(
    hass: HomeAssistant, fake_account: FakeAccountService, mock_config_entry: MockConfigEntry
) -> None:
    entry = mock_config_entry
    # Another client refreshed with these tokens: ours are spent.
    fake_account.access_token = "changed-elsewhere-access"  # noqa: S105 - test value
    fake_account.refresh_token = "changed-elsewhere-refresh"  # noqa: S105 - test value
    assert await set_up(hass, entry) is ConfigEntryState.SETUP_ERROR
    assert flow_sources(hass) == [SOURCE_REAUTH]


async def test_wifi_lost_issue_starts_the_reconfigure_flow(
    hass: HomeAssistant,
    fake_account: FakeAccountService,
    device_processes: DeviceProcesses,
    hass_client: ClientSessionGenerator,
) -> None:
    assert await async_setup_component(hass, "repairs", {})
    entry = await _ready(hass, fake_account, device_processes)
    assert repairs.async_report_wifi_lost(hass, "dev1")
    assert not repairs.async_report_wifi_lost(hass, "unknown-device")
    issue = _issue(hass, "wifi_lost_dev1")
    assert issue is not None
    assert issue.is_fixable

    client = await hass_client()
    result = await _fix(client, "wifi_lost_dev1")
    # Listed in the household but not onboarded by this Home Assistant: no entry to change.
    assert (result["type"], result["reason"]) == ("abort", "reconfigure_failed")
    assert result["description_placeholders"] == {"reason": "unknown_device"}
    onboarded = MockConfigEntry(
        domain=DOMAIN,
        version=2,
        unique_id="dev1",
        title="demo dev1",
        data={**DEVICE_RECORD, CONF_DEVICE_ID: "dev1", CONF_HOUSEHOLD_ID: entry.unique_id},
    )
    onboarded.add_to_hass(hass)
    result = await _fix(client, "wifi_lost_dev1")
    assert (result["type"], result["reason"]) == ("abort", "reconfigure_started")
    [flow] = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert flow["context"]["source"] == SOURCE_RECONFIGURE
    assert flow["context"]["entry_id"] == onboarded.entry_id  # the device entry's flow
    assert flow["step_id"] == "device_select"
    # The issue stays until the device is back online.
    assert _issue(hass, "wifi_lost_dev1") is not None
    del entry
    await publish_as_device(fake_account, "dev1", "availability", b"offline")
    await publish_as_device(fake_account, "dev1", "availability", b"online")
    await wait_for(hass, lambda: _issue(hass, "wifi_lost_dev1") is None, "issue deleted")


@pytest.mark.parametrize("issue_id", ["device_offline_x", "something_else"])
async def test_unknown_fix_flow(hass: HomeAssistant, issue_id: str) -> None:
    with pytest.raises(ValueError, match="unknown issue"):
        await repairs.async_create_fix_flow(hass, issue_id, None)


@pytest.mark.parametrize(("status", "outcome"), [(403, "issue"), (401, "reauth")])
async def test_hub_credentials_revoked_while_running(
    hass: HomeAssistant,
    fake_account: FakeAccountService,
    init_integration: MockConfigEntry,
    status: int,
    outcome: str,
) -> None:
    entry = init_integration
    coordinator = entry.runtime_data.coordinator
    await wait_for(hass, lambda: coordinator.connected, "the hub connected")
    # The broker no longer takes the hub's password (its live session is kicked), and the
    # account service will not hand out a new one.
    fake_account.hub_status = status
    await dynsec_command(
        fake_account.broker,
        [
            {
                "command": "setClientPassword",
                "username": fake_account.hub_username,
                "password": "revoked-elsewhere",
            }
        ],
    )
    if outcome == "issue":
        await wait_for(
            hass,
            lambda: _issue(hass, f"hub_refused_{entry.entry_id}") is not None,
            "the hub_refused issue",
        )
    else:
        await wait_for(
            hass,
            lambda: (
                [f["context"]["source"] for f in hass.config_entries.flow.async_progress()]
                == [SOURCE_REAUTH]
            ),
            "a reauth flow",
        )
    assert not coordinator.connected
