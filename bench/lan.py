"""The onboarding baseline: a device's bare handshake and commit over the LAN, without HA.

The same steps Home Assistant's config flow takes (custom_components/iot_onboard/device_client.py
and config_flow.py), driven directly over the device's HTTP provisioning server with the shared
protocol package: the handshake with the QR payload, Wi-Fi, a claim from the account service and
``set_claim`` with a fresh owner secret, ``commit``; then the claim's status until ``owned`` and
the device's retained ``online`` on the broker (read with the household hub's credential).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Final

import aiohttp
import aiomqtt
from clients import Mqtt, RelayApi, mqtt_client
from common import BenchError
from iob_protocol import (
    AckResult,
    ClientSession,
    CommitRequest,
    CommitResult,
    ErrorResponse,
    OwnerSecret,
    QrPayload,
    Request,
    SetClaimRequest,
    SetWifiRequest,
    decode_response,
    encode_request,
)

SESSION_HEADER: Final = "X-IOB-Session"
POLL: Final = 0.05
COMMIT_TIMEOUT: Final = 240.0
_HTTP_OK: Final = 200
_HTTP_NO_CONTENT: Final = 204


class LanLink:
    """An encrypted session with one device's provisioning server."""

    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        """``base``: ``http://host:port``; no session until :meth:`handshake`."""
        self.base = base
        self.http = session
        self.protocol: ClientSession | None = None
        self.tag = ""
        self.ids = itertools.count(1)

    async def _post(self, path: str, body: bytes, tag: str | None = None) -> aiohttp.ClientResponse:
        headers = {"Content-Type": "application/octet-stream"}
        if tag:
            headers[SESSION_HEADER] = tag
        response = await self.http.post(self.base + path, data=body, headers=headers)
        await response.read()
        return response

    async def handshake(self, qr: str) -> None:
        """SPAKE2 with the QR payload's code, the device key checked against its fingerprint."""
        protocol = ClientSession.for_qr(QrPayload.parse(qr))
        hello = await self._post("/iob/v1/session", protocol.start())
        if hello.status != _HTTP_OK:
            raise BenchError(f"{self.base}: handshake refused (HTTP {hello.status})")
        finish = protocol.handle_device_hello(await hello.read())
        done = await self._post("/iob/v1/session", finish)
        tag = done.headers.get(SESSION_HEADER)
        if done.status != _HTTP_NO_CONTENT or not tag:
            raise BenchError(f"{self.base}: handshake not finished (HTTP {done.status})")
        self.protocol, self.tag = protocol, tag

    async def call[T](self, factory: Callable[[int], Request], expected: type[T]) -> T:
        """One encrypted command and its result."""
        if self.protocol is None:
            raise BenchError("no session: run the handshake first")
        request = factory(next(self.ids))
        reply = await self._post(
            "/iob/v1/frame", self.protocol.seal(encode_request(request)), self.tag
        )
        if reply.status != _HTTP_OK:
            raise BenchError(f"{self.base}: {request.command} not delivered (HTTP {reply.status})")
        response = decode_response(self.protocol.open(await reply.read()))
        if isinstance(response, ErrorResponse):
            raise BenchError(f"{self.base}: {request.command} failed: {response.error}")
        answer = response.result
        if not isinstance(answer, expected):
            raise BenchError(f"{self.base}: unexpected answer to {request.command}")
        return answer


async def onboard(
    device_url: str,
    qr: str,
    *,
    wifi: tuple[str, str],
    relay: RelayApi,
    household: str,
    hub: Mqtt,
    session: aiohttp.ClientSession,
) -> float:
    """Handshake, Wi-Fi, claim, commit, until the device is ``online``; seconds it took."""
    started = time.perf_counter()
    link = LanLink(device_url, session)
    await link.handshake(qr)
    device_id = QrPayload.parse(qr).device_id
    ssid, passphrase = wifi
    await link.call(
        lambda rid: SetWifiRequest(
            request_id=rid, ssid=ssid.encode(), passphrase=passphrase, hidden=False
        ),
        AckResult,
    )
    claim_id, token = await relay.claim(household, device_id)
    await link.call(
        lambda rid: SetClaimRequest(
            request_id=rid,
            service_url=relay.base,
            claim_token=token,
            owner_secret=OwnerSecret.generate().secret,
            allow_insecure_http=True,
        ),
        AckResult,
    )
    await link.call(lambda rid: CommitRequest(request_id=rid), CommitResult)
    async with asyncio.timeout(COMMIT_TIMEOUT):
        while (state := await relay.claim_status(claim_id)) != "owned":
            if state in {"expired", "rejected"}:
                raise BenchError(f"{device_id}: the claim ended {state}")
            await asyncio.sleep(POLL)
        # The hub may read the device's topics from the moment it is owned.
        async with mqtt_client(hub) as client:
            await client.subscribe(f"iob/{device_id}/availability", qos=1)
            await _wait_online(client)
    return time.perf_counter() - started


async def _wait_online(client: aiomqtt.Client) -> None:
    async for message in client.messages:
        if message.payload == b"online":
            return
