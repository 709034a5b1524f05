"""Config flow tests: every error followed by recovery, and the duplicate abort."""

from __future__ import annotations

import pytest
from homeassistant.config_entries import SOURCE_USER
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.iot_onboard.config_flow import normalize_account_url
from custom_components.iot_onboard.const import CONF_ACCOUNT_URL, DOMAIN


async def test_user_flow_recovers_from_invalid_url(hass: HomeAssistant) -> None:
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"
    assert result["errors"] == {}

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_ACCOUNT_URL: "http://onboard.example"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_ACCOUNT_URL: "invalid_url"}

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_ACCOUNT_URL: "https://onboard.example/"}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "onboard.example"
    assert result["data"] == {CONF_ACCOUNT_URL: "https://onboard.example"}
    assert result["result"].unique_id == "https://onboard.example"


async def test_user_flow_aborts_when_already_configured(hass: HomeAssistant) -> None:
    MockConfigEntry(
        domain=DOMAIN,
        unique_id="https://onboard.example",
        data={CONF_ACCOUNT_URL: "https://onboard.example"},
    ).add_to_hass(hass)

    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_ACCOUNT_URL: "https://onboard.example"}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://onboard.example", "https://onboard.example"),
        ("  https://onboard.example:8443/  ", "https://onboard.example:8443"),
        ("http://localhost:8470", "http://localhost:8470"),
        ("http://127.0.0.1:8470/", "http://127.0.0.1:8470"),
        ("http://onboard.example", None),
        ("ftp://onboard.example", None),
        ("onboard.example", None),
        ("https://user:pw@onboard.example", None),
        ("https://onboard.example/?token=x", None),
        ("https://[::1", None),
    ],
)
def test_normalize_account_url(raw: str, expected: str | None) -> None:
    assert normalize_account_url(raw) == expected
