"""A device leaving (or joining) a household disconnects that household's hub session, so its
Home Assistant reconnects and re-reads the device list at once (both databases, the real
broker)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest

from cloud_relay.broker import BrokerUnavailableError
from cloud_relay.broker.mosquitto import MosquittoDynsecAdapter
from cloud_relay.config import RelayConfig
from tests.plugins.mosquitto import MosquittoBroker

from .conftest import AppFactory
from .helpers import Api, FakeDevice, User
from .mqtt import connect_code, hub_topics, mqtt_client

#: Bound on waiting for the broker's disconnect (a generous bound, not an expectation).
WAIT = 30


async def hub_credential(api: Api, user: User, household: str) -> dict[str, Any]:
    reply = await api.request("GET", f"/v1/households/{household}/hub", token=user.token)
    assert reply.status == 200, reply.body
    return dict(reply.body)


@contextlib.asynccontextmanager
async def hub_session(
    broker: MosquittoBroker, mqtt: dict[str, Any]
) -> AsyncIterator[aiomqtt.Client]:
    async with mqtt_client(broker, mqtt, timeout=10) as client:
        yield client


async def kicked(client: aiomqtt.Client) -> bool:
    """Whether the broker ends the session (waits up to :data:`WAIT` for it)."""
    try:
        async with asyncio.timeout(WAIT):
            async for _ in client.messages:
                pass
    except aiomqtt.MqttError:
        return True
    except TimeoutError:
        return False
    return False


async def device_ids(api: Api, user: User, household: str) -> set[str]:
    reply = await api.request("GET", f"/v1/households/{household}/devices", token=user.token)
    assert reply.status == 200, reply.body
    return {device["device_id"] for device in reply.body["devices"]}


async def owned(api: Api) -> tuple[User, str, FakeDevice]:
    owner, household = await api.owner_household()
    device = await api.device()
    await api.claim(owner, household, device)
    return owner, household, device


async def test_transfer_accept_disconnects_both_hubs(api: Api, broker: MosquittoBroker) -> None:
    """Both Home Assistants reconnect, and what they then read already shows the transfer."""
    owner, home, device = await owned(api)
    recipient, theirs = await api.owner_household()
    old_hub = await hub_credential(api, owner, home)
    new_hub = await hub_credential(api, recipient, theirs)
    offer = await api.offer_transfer(owner, home, device, theirs)
    async with hub_session(broker, old_hub) as old, hub_session(broker, new_hub) as new:
        await api.request(
            "POST",
            f"/v1/households/{theirs}/transfers/{offer.body['transfer_id']}/accept",
            token=recipient.token,
            expect=200,
        )
        assert await kicked(old)
        # The kick came after the commit: the re-read list no longer has the device.
        assert device.id not in await device_ids(api, owner, home)
        assert await kicked(new)
        assert device.id in await device_ids(api, recipient, theirs)
    # Only disconnected, not locked out: both reconnect at once with the same credentials.
    for mqtt in (old_hub, new_hub):
        async with hub_session(broker, mqtt):
            pass


async def test_release_disconnects_the_owner_and_sharee_hubs(
    api: Api, broker: MosquittoBroker
) -> None:
    owner, home, device = await owned(api)
    neighbour, next_door = await api.owner_household()
    await api.share(owner, home, device, next_door, "read", expect=200)
    own_hub = await hub_credential(api, owner, home)
    their_hub = await hub_credential(api, neighbour, next_door)
    async with hub_session(broker, own_hub) as own, hub_session(broker, their_hub) as shared:
        await api.release(owner, home, device, expect=200)
        assert await kicked(own)
        assert await kicked(shared)
    assert device.id not in await device_ids(api, neighbour, next_door)


async def test_unshare_disconnects_only_the_sharee_hub(api: Api, broker: MosquittoBroker) -> None:
    owner, home, device = await owned(api)
    neighbour, next_door = await api.owner_household()
    await api.share(owner, home, device, next_door, "control", expect=200)
    own_hub = await hub_credential(api, owner, home)
    their_hub = await hub_credential(api, neighbour, next_door)
    async with hub_session(broker, own_hub) as own, hub_session(broker, their_hub) as shared:
        # The owner's hub stays subscribed to its device; it must see this marker, proving
        # its session outlived the unshare.
        await own.subscribe(f"iob/{device.id}/#", qos=1)
        await api.request(
            "DELETE",
            f"/v1/households/{home}/devices/{device.id}/shares/{next_door}",
            token=owner.token,
            expect=204,
        )
        assert await kicked(shared)
        await own.publish(f"iob/{device.id}/cmd/x", b"marker", qos=1)
        async with asyncio.timeout(WAIT):
            message = await anext(own.messages)
        assert (str(message.topic), message.payload) == (f"iob/{device.id}/cmd/x", b"marker")


async def test_a_new_share_disconnects_the_sharee_hub(api: Api, broker: MosquittoBroker) -> None:
    """The sharee's Home Assistant shows the shared device at once, not at its next refresh."""
    owner, home, device = await owned(api)
    neighbour, next_door = await api.owner_household()
    their_hub = await hub_credential(api, neighbour, next_door)
    async with hub_session(broker, their_hub) as shared:
        await api.share(owner, home, device, next_door, "read", expect=200)
        assert await kicked(shared)
    assert device.id in await device_ids(api, neighbour, next_door)


async def test_zero_touch_disconnects_the_buyer_hub(api: Api, broker: MosquittoBroker) -> None:
    """Nobody's Home Assistant asked for a zero-touch claim: the buyer's re-reads its list now."""
    admin = await api.admin()
    buyer, home = await api.owner_household()
    device = await api.device()
    await api.request(
        "PUT",
        f"/v1/admin/registry/devices/{device.id}/preassignment",
        json_body={"household_id": home, "order_ref": "order-7"},
        token=admin.token,
        expect=200,
    )
    hub = await hub_credential(api, buyer, home)
    async with hub_session(broker, hub) as session:
        await api.request(
            "POST",
            "/v1/zero-touch/confirm",
            json_body={"confirmation": device.zero_touch(api.now())},
            expect=200,
        )
        assert await kicked(session)
    assert device.id in await device_ids(api, buyer, home)


class KickFails(MosquittoDynsecAdapter):
    """The real adapter whose ``kick_hub`` fails (the broker went away after the commit)."""

    async def kick_hub(self, household_id: str) -> None:
        raise BrokerUnavailableError(f"injected: cannot kick {household_id}")


async def test_a_failed_kick_keeps_the_committed_change(
    start_api: AppFactory,
    relay_config: RelayConfig,
    broker: MosquittoBroker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Best effort: the unshare stands (the ACL too), the failure is logged with what follows."""
    adapter = KickFails(broker.host, broker.port, broker.admin_username, broker.admin_password)
    async with adapter:
        api: Api = await start_api(relay_config, adapter)
        owner, home, device = await owned(api)
        neighbour, next_door = await api.owner_household()
        await api.share(owner, home, device, next_door, "read", expect=200)
        their_hub = await hub_credential(api, neighbour, next_door)
        await api.request(
            "DELETE",
            f"/v1/households/{home}/devices/{device.id}/shares/{next_door}",
            token=owner.token,
            expect=204,
        )
        assert device.id not in await device_ids(api, neighbour, next_door)
        assert f"iob/{device.id}/#" not in await hub_topics(broker, next_door)
        assert await connect_code(broker, their_hub) == 0
    assert any(
        "was not disconnected" in record.getMessage()
        and "next device-list refresh" in record.getMessage()
        for record in caplog.records
    )
