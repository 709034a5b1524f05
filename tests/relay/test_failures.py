"""A failure anywhere in a claim or release leaves nothing behind: not in the database, not on
the broker. Failures are injected around the real adapter (and the real audit append), and
``broker reconcile`` repairs what a crash between broker and commit would leave.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from cloud_relay import audit
from cloud_relay.broker import (
    DeviceCredential,
)
from cloud_relay.broker.mosquitto import MosquittoDynsecAdapter
from cloud_relay.errors import StorageError
from cloud_relay.storage import Connection
from tests.plugins.mosquitto import MosquittoBroker

from .conftest import AppFactory, make_config
from .failing_broker import FailingBroker
from .helpers import Api
from .mqtt import client_exists, connect_code, hub_topics


async def _claimed_state(api: Api, device_id: str) -> tuple[str | None, list[str], list[str]]:
    async with api.relay.ctx.storage.read() as conn:
        owner = await conn.fetchval(
            "SELECT household_id FROM devices WHERE device_id = $1", device_id
        )
        claims = [
            row["status"]
            for row in await conn.fetch("SELECT status FROM claims WHERE device_id = $1", device_id)
        ]
        events = [
            row["action"]
            for row in await conn.fetch(
                "SELECT action FROM audit_log WHERE device_id = $1 ORDER BY seq", device_id
            )
        ]
    return owner, claims, events


@pytest.mark.parametrize(
    ("in_place", "failing_call"),
    [(True, "grant_device"), (False, "put_hub")],
    ids=["grant-in-place", "whole-hub"],
)
async def test_broker_failure_during_claim_leaves_nothing(
    failing: tuple[Api, FailingBroker],
    broker: MosquittoBroker,
    failing_call: str,
    *,
    in_place: bool,
) -> None:
    """The hub's new right fails after the device's client was put: nothing of the claim stays.
    In place (Mosquitto's ``addRoleACL``), the grant reached the broker and its answer was lost:
    the compensation takes it back; an adapter without in-place grants puts the whole hub."""
    api, wrapper = failing
    wrapper.in_place = in_place
    owner, household = await api.owner_household()
    await api.request("GET", f"/v1/households/{household}/hub", token=owner.token, expect=200)
    device = await api.device()
    started = await api.start_claim(owner, household, device)

    # put_device reaches the broker, then the hub update fails.
    wrapper.fail = {failing_call}
    reply = await api.confirm(device, started.body["token"])
    assert (reply.status, reply.code) == (503, "broker_unavailable")
    assert not await client_exists(broker, device.id)
    assert await hub_topics(broker, household) == set()
    assert await _claimed_state(api, device.id) == (None, ["pending"], ["claim.created"])

    # The broker is back: the device's retry within the TTL succeeds.
    wrapper.fail = set()
    reply = await api.confirm(device, started.body["token"], expect=200)
    assert await connect_code(broker, reply.body["mqtt"]) == 0
    assert any(device.id in topic for topic in await hub_topics(broker, household))


async def test_a_claim_grants_the_hub_its_device_in_place(
    failing: tuple[Api, FailingBroker], broker: MosquittoBroker
) -> None:
    """Issue 18, item 1: a claim into a household whose Home Assistant is linked adds the one
    device to its hub's rights; the hub's other devices are neither read nor sent again (the
    whole hub was put on every claim: its work grew with the household)."""
    api, wrapper = failing
    owner, household = await api.owner_household()
    await api.request("GET", f"/v1/households/{household}/hub", token=owner.token, expect=200)
    for _ in range(3):
        await api.claim(owner, household, await api.device())
    wrapper.calls.clear()
    device = await api.device()
    await api.claim(owner, household, device)
    assert wrapper.calls == ["put_device", "grant_device"]
    assert sum(device.id in topic for topic in await hub_topics(broker, household)) >= 1
    assert len(await hub_topics(broker, household)) >= 4 * 2  # the others kept their rights


async def test_database_failure_after_broker_call_leaves_nothing(
    failing: tuple[Api, FailingBroker], broker: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    api, _ = failing
    _owner, _household, device, started = await api.started_claim()
    real_append = audit.append

    async def failing_append(conn: Connection, **kwargs: Any) -> int:
        if kwargs["action"] == "device.claimed":
            raise StorageError("injected: the database went away")
        return await real_append(conn, **kwargs)

    monkeypatch.setattr(audit, "append", failing_append)
    reply = await api.confirm(device, started.body["token"])
    assert (reply.status, reply.code) == (503, "storage_unavailable")
    assert not await client_exists(broker, device.id)
    assert await _claimed_state(api, device.id) == (None, ["pending"], ["claim.created"])


async def test_broker_failure_during_release_keeps_the_device(
    failing: tuple[Api, FailingBroker], broker: MosquittoBroker
) -> None:
    api, wrapper = failing
    owner, household = await api.owner_household()
    device = await api.device()
    owned = await api.claim(owner, household, device)
    wrapper.fail = {"remove_device"}
    reply = await api.release(owner, household, device)
    assert (reply.status, reply.code) == (503, "broker_unavailable")
    owner_now, _, events = await _claimed_state(api, device.id)
    assert owner_now == household
    assert "device.released" not in events
    assert await connect_code(broker, owned["mqtt"]) == 0


@pytest.fixture
async def own_broker(
    mosquitto_broker: MosquittoBroker,
) -> AsyncIterator[tuple[MosquittoBroker, MosquittoDynsecAdapter]]:
    """A broker of this test alone (reconcile removes every IoT Onboard client it does not know)."""
    adapter = MosquittoDynsecAdapter(
        mosquitto_broker.host,
        mosquitto_broker.port,
        mosquitto_broker.admin_username,
        mosquitto_broker.admin_password,
    )
    await adapter.connect()
    yield mosquitto_broker, adapter
    await adapter.aclose()


async def test_reconcile_repairs_a_crash_between_broker_and_commit(
    start_api: AppFactory,
    database_url: str,
    own_broker: tuple[MosquittoBroker, MosquittoDynsecAdapter],
) -> None:
    broker, adapter = own_broker
    api = await start_api(make_config(database_url, broker), adapter)
    owner, household = await api.owner_household()
    await api.request("GET", f"/v1/households/{household}/hub", token=owner.token, expect=200)
    kept = await api.device()
    owned = await api.claim(owner, household, kept)

    # A crash after the broker call, before the commit: a client the database never recorded.
    orphan = await api.device()
    await adapter.put_device(DeviceCredential(orphan.id, "orphan-password"))
    # And a client the broker lost (e.g. restored from an old backup).
    await adapter.remove_device(kept.id)

    report = await api.relay.reconcile()
    assert orphan.id in report.removed
    assert kept.id in report.created
    assert not await client_exists(broker, orphan.id)
    assert await connect_code(broker, owned["mqtt"]) == 0
    assert any(kept.id in topic for topic in await hub_topics(broker, household))
    again = await api.relay.reconcile()
    assert not again.changed
