"""The stand-in Supervisor answers in the shapes Home Assistant's own Supervisor client reads.

aiohasupervisor (the client HA's ``hassio`` integration uses, from HA's pins) parses every
answer into its models and refuses a missing field, so a drift of the stand-in from what HA
needs fails here in a second rather than as a warning in the browser test's HA log. Also: who
may ask what (HA's token, the add-on's), and the discovery rules the Supervisor enforces.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from uuid import UUID

import aiohttp
import pytest
from aiohasupervisor import SupervisorClient, SupervisorError
from aiohasupervisor.models import AddonState

from .supervisor import StandInSupervisor


@pytest.fixture
async def supervisor() -> AsyncIterator[StandInSupervisor]:
    stand_in = StandInSupervisor(ports={"8080/tcp": 18080, "1884/tcp": None})
    await asyncio.to_thread(stand_in.start)
    try:
        yield stand_in
    finally:
        await asyncio.to_thread(stand_in.stop)


async def _call(
    method: str, url: str, token: str, body: object = None
) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, url, json=body, headers={"Authorization": f"Bearer {token}"}
        ) as reply,
    ):
        answer: dict[str, object] = await reply.json()
        return reply.status, answer


async def test_home_assistant_s_client_reads_every_answer(supervisor: StandInSupervisor) -> None:
    async with aiohttp.ClientSession() as session:
        client = SupervisorClient(f"http://{supervisor.address}", supervisor.core_token, session)
        await client.supervisor.ping()
        slug = supervisor.addon.slug
        (installed,) = await client.addons.list()
        assert (installed.slug, installed.state) == (slug, AddonState.STARTED)
        info = await client.addons.addon_info(slug)
        assert info.name == "IoT Onboard account service"
        assert info.hostname == slug.replace("_", "-")
        assert info.discovery == ["iot_onboard"]
        assert info.network == {"8080/tcp": 18080, "1884/tcp": None}
        assert info.schema is not None
        assert {o["name"]: o.get("options") for o in info.schema} == {
            "log_level": ["debug", "info", "warning", "error"],
            "device_host": None,
        }
        store = await client.store.info()
        assert [a.slug for a in store.addons] == [slug]
        assert store.repositories[0].slug == slug.split("_")[0]
        assert "0.1.0" in await client.store.addon_changelog(slug)
        assert (await client.addons.addon_stats(slug)).memory_limit > 0
        resolution = await client.resolution.info()
        assert (resolution.unhealthy, resolution.issues) == ([], [])
        assert (await client.mounts.info()).mounts == []
        assert await client.discovery.list() == []
        with pytest.raises(SupervisorError):
            await client.addons.addon_info("core_mosquitto")
    assert supervisor.unknown == ["GET /addons/core_mosquitto/info"]
    assert supervisor.refused == []


async def test_only_the_add_on_announces_and_only_its_own_service(
    supervisor: StandInSupervisor,
) -> None:
    base = f"http://{supervisor.address}"
    announcement = {"service": "iot_onboard", "config": {"url": "http://x:8080", "token": "t"}}
    # The add-on's token: its own info and POST /discovery, nothing else.
    status, own = await _call("GET", f"{base}/addons/self/info", supervisor.addon_token)
    assert (status, own["data"]["slug"]) == (200, supervisor.addon.slug)  # type: ignore[index]
    status, _ = await _call("GET", f"{base}/discovery", supervisor.addon_token)
    assert status == 401
    status, refused = await _call(
        "POST", f"{base}/discovery", supervisor.addon_token, {**announcement, "service": "mqtt"}
    )
    assert (status, refused["result"]) == (403, "error")
    status, first = await _call("POST", f"{base}/discovery", supervisor.addon_token, announcement)
    assert status == 200
    # A restart announces again: the same message, updated.
    status, again = await _call("POST", f"{base}/discovery", supervisor.addon_token, announcement)
    assert again["data"] == first["data"]
    # No Home Assistant has given its API yet: nothing is pushed, HA reads it at its start.
    async with aiohttp.ClientSession() as session:
        client = SupervisorClient(base, supervisor.core_token, session)
        (message,) = await client.discovery.list()
        assert message.uuid == UUID(first["data"]["uuid"])  # type: ignore[index]
        assert (message.addon, message.config) == (supervisor.addon.slug, announcement["config"])
        assert await client.discovery.get(message.uuid) == message
    assert supervisor.pushes == []
    # Nobody else: a wrong token is refused everywhere.
    status, _ = await _call("GET", f"{base}/info", "not-a-token")
    assert status == 401
    assert supervisor.refused == ["addon GET /discovery", "None GET /info"]
