"""Fixtures of the broker adapter tests: a fresh real broker and a connected adapter per test.

``harness`` is parametrised over ``ADAPTERS``: the contract suite (``test_contract.py``) runs
once per adapter. Only Mosquitto exists today; an EMQX adapter adds ``"emqx"`` here and an
``EmqxHarness`` (see ``harness.py``), and must then pass the same suite.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cloud_relay.broker import BrokerAdapter
from tests.plugins.mosquitto import MosquittoProcess

from .harness import BrokerHarness, MosquittoHarness
from .rabbitmq import rabbit_node  # noqa: F401 - the session's RabbitMQ node, a fixture

ADAPTERS = ["mosquitto"]


@pytest.fixture(params=ADAPTERS)
def harness(request: pytest.FixtureRequest) -> BrokerHarness:
    """A fresh broker of each kind, behind the harness interface."""
    if request.param == "mosquitto":
        process: MosquittoProcess = request.getfixturevalue("mosquitto_process")
        return MosquittoHarness(process)
    raise AssertionError(f"no harness for adapter {request.param!r}")


@pytest.fixture
async def adapter(harness: BrokerHarness) -> AsyncIterator[BrokerAdapter]:
    """A connected adapter for the harness's broker, closed after the test."""
    async with harness.adapter() as connected:
        yield connected


@pytest.fixture
def mosquitto(mosquitto_process: MosquittoProcess) -> MosquittoHarness:
    """The Mosquitto harness, for the Mosquitto-specific tests."""
    return MosquittoHarness(mosquitto_process)
