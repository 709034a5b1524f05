"""Config flow for IoT Onboard."""

from __future__ import annotations

from typing import Any

import voluptuous as vol
from homeassistant.config_entries import ConfigFlow, ConfigFlowResult
from homeassistant.helpers.selector import TextSelector, TextSelectorConfig, TextSelectorType
from yarl import URL

from .const import CONF_ACCOUNT_URL, DOMAIN

_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

STEP_USER_SCHEMA = vol.Schema(
    {
        vol.Required(CONF_ACCOUNT_URL): TextSelector(TextSelectorConfig(type=TextSelectorType.URL)),
    }
)


def normalize_account_url(raw: str) -> str | None:
    """Return the canonical account service URL, or None when it is not acceptable.

    Plain http is only accepted on loopback (a self-hosted service on the HA host):
    tokens and claims must never cross a network unencrypted.
    """
    try:
        url = URL(raw.strip())
    except ValueError:
        return None
    if not url.is_absolute() or url.host is None or url.user or url.query_string:
        return None
    if url.scheme == "https" or (url.scheme == "http" and url.host in _LOOPBACK_HOSTS):
        return str(url.with_fragment(None)).rstrip("/")
    return None


class IotOnboardConfigFlow(ConfigFlow, domain=DOMAIN):
    """Add a household account of an IoT Onboard account service."""

    VERSION = 1

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Ask for the account service URL."""
        errors: dict[str, str] = {}
        if user_input is not None:
            account_url = normalize_account_url(user_input[CONF_ACCOUNT_URL])
            if account_url is None:
                errors[CONF_ACCOUNT_URL] = "invalid_url"
            else:
                await self.async_set_unique_id(account_url)
                self._abort_if_unique_id_configured()
                return self.async_create_entry(
                    title=URL(account_url).host or account_url,
                    data={CONF_ACCOUNT_URL: account_url},
                )
        return self.async_show_form(
            step_id="user",
            data_schema=self.add_suggested_values_to_schema(STEP_USER_SCHEMA, user_input),
            errors=errors,
        )
