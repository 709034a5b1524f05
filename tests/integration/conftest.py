"""Fixtures for the Home Assistant integration tests (run with the phcc plugin)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Let Home Assistant load the integration from custom_components/."""


@pytest.fixture
def iob_socket_allowed(socket_enabled: None) -> None:
    """Real services (Mosquitto, the account service) need real loopback sockets."""
