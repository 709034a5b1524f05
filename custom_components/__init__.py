"""Custom integrations for Home Assistant (only iot_onboard is ours)."""
