"""Constants for the IoT Onboard integration."""

from typing import Final

DOMAIN: Final = "iot_onboard"

CONF_ACCOUNT_URL: Final = "account_url"
