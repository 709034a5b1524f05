"""A reconcile running while claims commit never undoes them (issue 13.6).

The service reconciles at start-up and after every broker reconnect, so a reconcile now runs
next to live requests. It reads the whole database and then rewrites the broker; a claim that
committed in between would lose its device's client again. The context's gate makes the
reconcile wait for mutations in flight, and new mutations wait for it.
"""

from __future__ import annotations

import asyncio

from cloud_relay.broker.mosquitto import MosquittoDynsecAdapter
from tests.plugins.mosquitto import MosquittoProcess

from .conftest import AppFactory, make_config
from .helpers import Api, FakeDevice
from .mqtt import client_exists, hub_topics

ROUNDS = 20
CLAIMS = 6


async def _claim(api: Api, device: FakeDevice, token: str) -> int:
    reply = await api.confirm(device, token)
    return reply.status


async def test_reconciles_racing_claims_leave_every_claim_on_the_broker(
    database_url: str, mosquitto_process: MosquittoProcess, start_api: AppFactory
) -> None:
    broker = mosquitto_process.broker
    async with MosquittoDynsecAdapter(
        broker.host, broker.port, broker.admin_username, broker.admin_password
    ) as adapter:
        api: Api = await start_api(make_config(database_url, broker), adapter)
        owner, home = await api.owner_household()
        await api.request("GET", f"/v1/households/{home}/hub", token=owner.token, expect=200)
        claimed: set[str] = set()
        for round_ in range(ROUNDS):
            devices = [await api.device() for _ in range(CLAIMS)]
            tokens = []
            for device in devices:
                started = await api.start_claim(owner, home, device)
                assert started.status == 201, started.body
                tokens.append(started.body["token"])
            claims = [
                _claim(api, device, token) for device, token in zip(devices, tokens, strict=True)
            ]
            # A reconcile started next to every claim.
            results = await asyncio.gather(
                *(step for claim in claims for step in (claim, api.relay.reconcile()))
            )
            assert results[::2] == [200] * CLAIMS, results
            claimed.update(device.id for device in devices)
            missing = [d for d in sorted(claimed) if not await client_exists(broker, d)]
            assert not missing, f"round {round_}: claimed devices without a broker client"
            topics = await hub_topics(broker, home)
            reached = {t.split("/")[1] for t in topics if t.endswith("/#") and "/cmd/" not in t}
            assert reached == claimed, f"round {round_}: hub role differs from the database"
