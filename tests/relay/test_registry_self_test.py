"""The registry import keeps a unit's factory self-test with the unit."""

from __future__ import annotations

import json

import pytest

from cloud_relay.errors import RegistryImportError
from cloud_relay.registry import parse_records

from .helpers import Api, FakeDevice

SELF_TEST = {
    "at": 1_700_000_000,
    "checks": [
        {"name": "key", "result": "pass", "reason": "loads and signs"},
        {"name": "radio", "result": "fail", "reason": "no Wi-Fi device"},
    ],
    "passed": False,
}


async def test_import_keeps_the_self_test(api: Api) -> None:
    device = FakeDevice()
    line = json.dumps({**device.record(), "self_test": SELF_TEST})
    await api.relay.registry.import_records(parse_records(line), "test")
    stored = await api.relay.registry.device(device.id)
    assert stored.self_test is not None
    assert stored.self_test.to_dict() == SELF_TEST


@pytest.mark.parametrize(
    "self_test",
    [
        "pass",
        {**SELF_TEST, "passed": True},
        {**SELF_TEST, "checks": [{"name": "key", "result": "maybe", "reason": ""}]},
    ],
)
def test_import_refuses_a_malformed_self_test(self_test: object) -> None:
    line = json.dumps({**FakeDevice().record(), "self_test": self_test})
    with pytest.raises(RegistryImportError, match="line 1: self_test"):
        parse_records(line)
