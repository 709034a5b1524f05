"""Drive a commit over the session, as Home Assistant does, and wait for its outcome."""

from __future__ import annotations

import asyncio
from typing import Any

from iob_protocol.commands import (
    CommitRequest,
    CommitResult,
    OkResponse,
    SetClaimRequest,
    SetWifiRequest,
    StatusRequest,
    StatusResult,
)

from .conftest import HOME_PASSPHRASE, HOME_SSID, RunningAgent
from .lan_client import LanClient
from .real_relay import RealRelay

TOKEN = "tok_" + "A" * 40
#: What Home Assistant generates per device and sends with set_claim.
OWNER_SECRET = bytes(range(100, 132))


async def wait_status(client: LanClient, *, attempts: int = 1500) -> StatusResult:
    """Poll ``status`` until the commit has ended (bounded, not timed)."""
    for _ in range(attempts):
        response = await client.call(StatusRequest(request_id=client.next_id()))
        assert isinstance(response, OkResponse)
        assert isinstance(response.result, StatusResult)
        if response.result.state.value != "committing":
            return response.result
        await asyncio.sleep(0.01)
    raise AssertionError("commit did not finish")


async def commit(
    running: RunningAgent, service_url: str, *, client: LanClient | None = None, **options: Any
) -> tuple[LanClient, StatusResult]:
    """:func:`start_commit` (``options`` are its), then wait; return the final status."""
    client = client or await running.connected_client()
    await start_commit(client, service_url, **options)
    return client, await wait_status(client)


async def start_commit(
    client: LanClient,
    service_url: str,
    *,
    ssid: bytes | None = HOME_SSID,
    passphrase: str | None = HOME_PASSPHRASE,
    hidden: bool = False,
    wps: bool = False,
    token: str = TOKEN,
    owner_secret: bytes | None = OWNER_SECRET,
    **claim: object,
) -> None:
    """set_wifi (unless ``ssid`` is None), set_claim, commit: the device is committing."""
    if ssid is not None:
        ack = await client.call(
            SetWifiRequest(
                request_id=client.next_id(),
                ssid=ssid,
                passphrase=passphrase,
                hidden=hidden,
                wps=wps,
            )
        )
        assert isinstance(ack, OkResponse), ack
    ack = await client.call(
        SetClaimRequest(
            request_id=client.next_id(),
            service_url=service_url,
            claim_token=token,
            owner_secret=owner_secret,
            allow_insecure_http=True,
            **claim,  # type: ignore[arg-type]
        )
    )
    assert isinstance(ack, OkResponse), ack
    response = await client.call(CommitRequest(request_id=client.next_id()))
    assert isinstance(response, OkResponse), response
    assert isinstance(response.result, CommitResult)


async def change_wifi(
    client: LanClient,
    *,
    ssid: bytes = HOME_SSID,
    passphrase: str | None = HOME_PASSPHRASE,
    hidden: bool = False,
) -> StatusResult:
    """What HA's reconfigure flow sends over an owner session: only new Wi-Fi, then commit."""
    ack = await client.call(
        SetWifiRequest(request_id=client.next_id(), ssid=ssid, passphrase=passphrase, hidden=hidden)
    )
    assert isinstance(ack, OkResponse), ack
    response = await client.call(CommitRequest(request_id=client.next_id()))
    assert isinstance(response, OkResponse), response
    assert isinstance(response.result, CommitResult)
    return await wait_status(client)


async def commit_with_claim(
    running: RunningAgent, relay: RealRelay, **settings: Any
) -> tuple[LanClient, StatusResult]:
    """:func:`commit` (with ``settings``) of a claim the service just made for the device."""
    claim = await relay.claim(running.provisioned.device.identity.device_id)
    return await commit(running, relay.url, token=claim["token"], **settings)


async def claim_and_commit(running: RunningAgent, relay: RealRelay) -> None:
    """The service's claim for the running device, committed with the home Wi-Fi."""
    _client, status = await commit_with_claim(running, relay)
    assert status.state.value == "committed"
