"""Home Assistant's part in the VM stage, run inside the guest by tests/vm/guest.sh.

Runs on the guest's own Python (Bookworm's 3.11, Trixie's 3.13) in the account service's venv,
which has the project's wheel from the device package. Each subcommand prints one JSON object:

- ``account`` (in the router's namespace: the service is reachable only there): signs up an
  account, creates a household; prints its access token, household id and hub credential.
- ``claim`` (router namespace): a new claim for the device; prints claim id and token.
- ``claim-server`` (router namespace, in the background): answers each connection to the Unix
  socket ``--socket`` with a new claim (as ``claim``). A Unix socket is a path, not an address,
  so the onboarding steps reach it from the device's namespace with ``--claim-socket``: under
  TCG every Python start costs seconds, and one start per scenario is the budget.
- ``onboard`` (the device's namespace, where the agent's LAN server listens on loopback): the
  handshake with the label's QR text, ``set_wifi``, ``set_claim``, ``commit``, then ``status``
  until the commit ends; prints the device's final state and diagnostic code. With
  ``--until-online`` (the environments) it then waits for the device's ``online`` on the broker
  as the household's hub sees it, and prints when the onboarding began and when that came, in
  the guest's uptime (time-to-online).
- ``ble-onboard`` (the device's namespace, Bluetooth on the other emulated controller,
  ``--adapter hci1``): what Home Assistant's Bluetooth side does: finds the device by its
  advertised service (as HA's bluetooth matcher does, with the service data parsed), connects
  with bleak-retry-connector's ``establish_connection`` over real BlueZ, runs the same
  handshake and commands as ``onboard`` as frames over the GATT service (``iob_protocol.ble``'s
  ``FrameChannel``), and asks ``status`` over GATT until the commit ends (connecting again if
  the link dropped: the device keeps the session). Needs bleak and bleak-retry-connector on
  ``PYTHONPATH`` (guest.sh installs them from the image's wheels).
- ``ble-owner`` (the device's namespace, ``--adapter hci1``): the owner's Home Assistant
  re-onboards its claimed device over Bluetooth (the repair's reconfigure flow): waits for the
  device's advertisement (its window for the owner reopened), opens an owner session with the
  owner secret and device key ``onboard --owner-out`` saved at the claim, sends ``set_wifi``
  and ``commit`` (no claim), and asks ``status`` until the Wi-Fi change ends.
- ``improv`` (the device's namespace, ``--adapter hci1``): a phone's or Home Assistant's
  ``improv_ble`` side (py-improv-ble-client): finds the device's Improv advertisement, reads
  whether it needs authorization, presses the button (SIGUSR1 to ``--button-pid``, as the
  agent's docs say for boards without one), reads it again, and sends the Wi-Fi settings; prints
  what happened at each step (a refusal is a result here, not an error).
- ``online`` (router namespace): the claim's status and the device's retained availability on
  the broker, read with the household hub's credential, as Home Assistant reads it.

``onboard``, ``ble-onboard`` and ``improv`` take ``--record NAME --results FILE --since EPOCH``:
the step's result and what the device shows afterwards (the radio's side from the journal since
``EPOCH``, ``iob-device status --json`` and ``diagnose``, NetworkManager's active and saved
connections, and with ``--agent-log REGEX`` the agent's matching journal lines) go to ``FILE``
as one line of the VM stage's results, with the guest's uptime.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Final, TypeVar

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
    StatusRequest,
    StatusResult,
    decode_response,
    encode_request,
)

SESSION_HEADER: Final = "X-IOB-Session"
#: Under TCG a commit (scan, join, DHCP, DNS, claim) takes tens of seconds.
COMMIT_DEADLINE: Final = 240.0
STATUS_POLL: Final = 2.0
#: Connection attempts, each with its own client; every second failure forgets the device
#: (Bookworm's bluetoothd needed up to six in the VM: see ``Ble.connect``).
BLE_CONNECT_ATTEMPTS: Final = 8
#: Under TCG the emulated controllers advertise every few hundred ms; a margin for a restart.
BLE_SCAN_TIMEOUT: Final = 90.0
HTTP_TIMEOUT: Final = 30.0


T = TypeVar("T")


class DriverError(Exception):
    """A step failed; the message says which and why."""


def _http(
    method: str, url: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:  # noqa: S310
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def _api(base: str, method: str, path: str, body: Any = None, token: str = "") -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    status, _, answer = _http(method, base + path, data, headers)
    if status not in {200, 201}:
        raise DriverError(f"{method} {path}: HTTP {status}: {answer[:300]!r}")
    return json.loads(answer) if answer else None


class Lan:
    """An encrypted session with the agent's provisioning server (as bench/lan.py)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.protocol: ClientSession | None = None
        self.tag = ""
        self.ids = itertools.count(1)

    def _post(self, path: str, body: bytes, tag: str = "") -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": "application/octet-stream"}
        if tag:
            headers[SESSION_HEADER] = tag
        return _http("POST", self.base + path, body, headers)

    def handshake(self, qr: str) -> None:
        protocol = ClientSession.for_qr(QrPayload.parse(qr))
        status, _, hello = self._post("/iob/v1/session", protocol.start())
        if status != 200:
            raise DriverError(f"handshake refused: HTTP {status} {hello[:200]!r}")
        status, headers, _ = self._post("/iob/v1/session", protocol.handle_device_hello(hello))
        tag = headers.get(SESSION_HEADER, "")
        if status != 204 or not tag:
            raise DriverError(f"handshake not finished: HTTP {status}")
        self.protocol, self.tag = protocol, tag

    def call(self, request: Request) -> object:
        if self.protocol is None:
            raise DriverError("no session")
        status, _, reply = self._post(
            "/iob/v1/frame", self.protocol.seal(encode_request(request)), self.tag
        )
        if status != 200:
            raise DriverError(f"{request.command}: HTTP {status}")
        response = decode_response(self.protocol.open(reply))
        if isinstance(response, ErrorResponse):
            raise DriverError(f"{request.command} refused: {response.error}")
        return response.result


def _account(args: argparse.Namespace) -> dict[str, Any]:
    email, password = "owner@vm.invalid", "vm stage owner password"
    tokens = _api(args.relay, "POST", "/v1/auth/sign-up", {"email": email, "password": password})
    token = tokens["access_token"]
    household = _api(args.relay, "POST", "/v1/households", {"name": "VM home"}, token)
    household_id = str(household["household_id"])
    hub = _api(args.relay, "GET", f"/v1/households/{household_id}/hub", token=token)
    return {
        "token": token,
        "refresh_token": tokens["refresh_token"],
        "household_id": household_id,
        "hub": hub,
    }


def _signed_in(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    """A request as the account's Home Assistant makes it: with the access token, which lives
    15 minutes (a slow VM run outlives it); on 401 the refresh token gets a new pair, saved to
    ``--account`` for the next step (the old refresh token is spent), and the request is
    repeated once."""
    account = json.loads(args.account.read_text())
    try:
        return _api(args.relay, method, path, body, account["token"])
    except DriverError as err:
        if "HTTP 401" not in str(err):
            raise
    tokens = _api(
        args.relay, "POST", "/v1/auth/refresh", {"refresh_token": account["refresh_token"]}
    )
    account.update(token=tokens["access_token"], refresh_token=tokens["refresh_token"])
    args.account.write_text(json.dumps(account))
    return _api(args.relay, method, path, body, account["token"])


def _claim(args: argparse.Namespace) -> dict[str, Any]:
    account = json.loads(args.account.read_text())
    path = f"/v1/households/{account['household_id']}/claims"
    answer = _signed_in(args, "POST", path, {"device_id": args.device_id})
    return {"claim_id": str(answer["claim_id"]), "token": str(answer["token"])}


def _claim_server(args: argparse.Namespace) -> dict[str, Any]:
    """Serve ``_claim`` on a Unix socket until killed: one claim (or its error) per connection."""
    args.socket.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(args.socket))
        server.listen()
        while True:
            connection, _ = server.accept()
            with connection:
                try:
                    answer: dict[str, Any] = _claim(args)
                except (DriverError, OSError, KeyError, ValueError) as err:
                    answer = {"error": f"claim: {err}"}
                connection.sendall(json.dumps(answer).encode())


def _claim_for(args: argparse.Namespace) -> dict[str, Any]:
    """The claim for this step: a new one from ``--claim-socket`` (saved to ``--claim`` for
    ``online``), else the one in ``--claim``."""
    if args.claim_socket is None:
        claim: dict[str, Any] = json.loads(args.claim.read_text())
        return claim
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(HTTP_TIMEOUT * 3)
        client.connect(str(args.claim_socket))
        chunks = []
        while chunk := client.recv(65536):
            chunks.append(chunk)
    claim = json.loads(b"".join(chunks))
    if "error" in claim:
        raise DriverError(claim["error"])
    args.claim.write_text(json.dumps(claim))
    return claim


def _handover(
    args: argparse.Namespace,
    claim: dict[str, Any] | None,
    ids: Iterator[int],
    owner_secret: OwnerSecret | None = None,
) -> list[tuple[Request, type]]:
    """Home Assistant's hand-over, each with the answer it must get: Wi-Fi, claim (none in an
    owner's session: a Wi-Fi change), commit."""
    wifi = SetWifiRequest(
        request_id=next(ids),
        ssid=args.ssid.encode(),
        passphrase=args.passphrase or None,
        hidden=getattr(args, "hidden", False),
        wps=getattr(args, "wps", False),
    )
    if claim is None:
        return [(wifi, AckResult), (CommitRequest(request_id=next(ids)), CommitResult)]
    return [
        (wifi, AckResult),
        (
            SetClaimRequest(
                request_id=next(ids),
                service_url=args.service_url,
                claim_token=claim["token"],
                owner_secret=(owner_secret or OwnerSecret.generate()).secret,
                allow_insecure_http=True,
            ),
            AckResult,
        ),
        (CommitRequest(request_id=next(ids)), CommitResult),
    ]


def _expect(request: Request, answer: object, expected: type) -> None:
    if not isinstance(answer, expected):
        raise DriverError(f"{request.command}: unexpected answer {answer!r}")


def _ended(answer: object, started: float) -> StatusResult | None:
    """The status once the commit ended; None while it runs (within the deadline)."""
    if not isinstance(answer, StatusResult):
        raise DriverError(f"status: unexpected answer {answer!r}")
    if answer.state.value != "committing":
        return answer
    if time.monotonic() - started > COMMIT_DEADLINE:
        raise DriverError(f"the commit did not end within {COMMIT_DEADLINE:.0f} s")
    return None


def _outcome(status: StatusResult, started: float) -> dict[str, Any]:
    return {
        "state": status.state.value,
        "diagnostic": None if status.diagnostic is None else status.diagnostic.value,
        "seconds": round(time.monotonic() - started, 1),
    }


def _uptime() -> float:
    """The guest's uptime: the clock of the stage's results (``at``)."""
    return float(Path("/proc/uptime").read_text().split()[0])


def _onboard(args: argparse.Namespace) -> dict[str, Any]:
    claim = _claim_for(args)
    started_at = _uptime()
    lan = Lan(args.device)
    lan.handshake(args.qr)
    owner_secret = OwnerSecret.generate()
    if args.owner_out is not None and lan.protocol is not None:
        # What Home Assistant keeps with its entry for the owner's later sessions.
        key = lan.protocol.device_public_key or b""
        args.owner_out.write_text(
            json.dumps({"owner_secret": owner_secret.secret.hex(), "device_key": key.hex()})
        )
    for request, expected in _handover(args, claim, lan.ids, owner_secret):
        _expect(request, lan.call(request), expected)
    started = time.monotonic()
    while (status := _ended(lan.call(StatusRequest(request_id=next(lan.ids))), started)) is None:
        time.sleep(STATUS_POLL)
    outcome = _outcome(status, started)
    if args.until_online:
        # From the user's submit (the handshake) to the device's "online" as the household's
        # Home Assistant sees it: its hub's subscription on the broker, over the home network
        # the device has just joined. A factory reset cleared the retained availability, so
        # the first "online" is this onboarding's.
        outcome["started_at"] = started_at
        if outcome["state"] == "committed":
            account = json.loads(args.account.read_text())
            try:
                outcome["availability"] = asyncio.run(_availability(account["hub"], args.device_id))
            except (TimeoutError, OSError) as err:
                outcome["availability"] = f"not seen: {err!r}"
            outcome["online_at"] = _uptime()
    return outcome


class Ble:
    """An encrypted session with the agent over its GATT service (as ``ble_client.py``)."""

    def __init__(self, device: Any, name: str, adapter: str) -> None:
        self.device = device
        self.name = name
        self.adapter = adapter
        self.client: Any = None
        self.channel: Any = None
        self.protocol: ClientSession | None = None
        self.ids = itertools.count(1)
        self.connects = 0
        self.retries: list[str] = []
        self.mtu = 0
        #: The features characteristic as read at the first connection (as ``ble_client.py``).
        self.features: str | None = None

    async def connect(self) -> Any:
        from bleak_retry_connector import (  # noqa: PLC0415 - only this subcommand needs them
            BleakClientWithServiceCache,
            establish_connection,
        )
        from iob_protocol.ble import (  # noqa: PLC0415
            FEATURES_UUID,
            RX_UUID,
            TX_UUID,
            FrameChannel,
            chunk_payload_size,
        )

        if self.channel is not None and self.channel.connected:
            return self.channel
        channel: Any = None

        def dropped(_client: Any) -> None:
            if channel is not None:
                channel.disconnected("the Bluetooth link dropped")

        async def attempt(device: Any) -> Any:
            return await establish_connection(
                BleakClientWithServiceCache,
                device,
                self.name,
                disconnected_callback=dropped,
                max_attempts=1,
            )

        client, self.device = await _connect(self.adapter, self.device, self.retries, attempt)
        self.connects += 1
        self.mtu = client.mtu_size

        async def write(chunk: bytes) -> None:
            await client.write_gatt_char(RX_UUID, chunk, response=True)

        channel = FrameChannel(write, payload_size=chunk_payload_size(client.mtu_size), timeout=30)
        await client.start_notify(TX_UUID, lambda _char, data: channel.notified(bytes(data)))
        if self.features is None:
            self.features = bytes(await client.read_gatt_char(FEATURES_UUID)).decode()
        self.client, self.channel = client, channel
        return channel

    async def exchange(self, frame: bytes) -> bytes:
        channel = await self.connect()
        channel.discard_pending()
        await channel.send(frame)
        reply: bytes = await channel.receive()
        return reply

    async def handshake(self, protocol: ClientSession) -> None:
        hello = await self.exchange(protocol.start())
        channel = await self.connect()
        await channel.send(protocol.handle_device_hello(hello))
        self.protocol = protocol

    async def call(self, request: Request) -> object:
        if self.protocol is None:
            raise DriverError("no session")
        reply = await self.exchange(self.protocol.seal(encode_request(request)))
        response = decode_response(self.protocol.open(reply))
        if isinstance(response, ErrorResponse):
            raise DriverError(f"{request.command} refused: {response.error}")
        return response.result

    async def close(self) -> None:
        if self.client is not None:
            await self.client.disconnect()


async def _remove_device(bus: Any, adapter: str, path: str) -> Any:
    """BlueZ's ``RemoveDevice`` of the object ``path`` on ``adapter``; the reply."""
    from dbus_fast import Message  # noqa: PLC0415 - Bluetooth steps only

    return await bus.call(
        Message(
            destination="org.bluez",
            path=f"/org/bluez/{adapter}",
            interface="org.bluez.Adapter1",
            member="RemoveDevice",
            signature="o",
            body=[path],
        )
    )


async def _forget_and_find(adapter: str, address: str) -> Any:
    """BlueZ's ``RemoveDevice`` for ``address`` on ``adapter`` (what ``bluetoothctl remove``
    does), then a scan for it: a new device object, without the old one's connection state."""
    from bleak import BleakScanner  # noqa: PLC0415 - only the Bluetooth subcommands need them
    from dbus_fast import BusType, MessageType  # noqa: PLC0415
    from dbus_fast.aio import MessageBus  # noqa: PLC0415

    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    try:
        path = f"/org/bluez/{adapter}/dev_{address.replace(':', '_')}"
        reply = await _remove_device(bus, adapter, path)
    finally:
        bus.disconnect()
    if reply is not None and reply.message_type == MessageType.ERROR:
        # Already gone (org.bluez.Error.DoesNotExist) is fine: the scan finds it again.
        print(f"RemoveDevice {address}: {reply.error_name} {reply.body}", file=sys.stderr)  # noqa: T201
    bluez: Any = {"adapter": adapter}
    device = await BleakScanner.find_device_by_address(
        address, timeout=BLE_SCAN_TIMEOUT, bluez=bluez
    )
    if device is None:
        raise DriverError(
            f"{address} not seen again on {adapter} in {BLE_SCAN_TIMEOUT:.0f} s after forgetting it"
        )
    return device


#: Before a scan: how long the adapter must hold no link, and the most to wait for that.
LINKS_QUIET: Final = 15.0
LINKS_WAIT: Final = 60.0


async def _connected(bus: Any, adapter: str) -> dict[str, str]:
    """The devices ``adapter`` holds a link to: object path -> address."""
    from dbus_fast import Message, MessageType  # noqa: PLC0415 - Bluetooth steps only

    reply = await bus.call(
        Message(
            destination="org.bluez",
            path="/",
            interface="org.freedesktop.DBus.ObjectManager",
            member="GetManagedObjects",
        )
    )
    if reply is None or reply.message_type == MessageType.ERROR:
        return {}
    prefix = f"/org/bluez/{adapter}/dev_"
    return {
        path: interfaces["org.bluez.Device1"]["Address"].value
        for path, interfaces in reply.body[0].items()
        if path.startswith(prefix)
        and "org.bluez.Device1" in interfaces
        and interfaces["org.bluez.Device1"]["Connected"].value
    }


async def _settle_links(adapter: str) -> dict[str, Any]:
    """Wait until ``adapter`` has held no link for ``LINKS_QUIET`` s (at most ``LINKS_WAIT``),
    then forget (BlueZ's ``RemoveDevice``) the devices it still holds one to.

    A client process that ended (the Improv step before this one) leaves its link in
    bluetoothd for a while, and Bookworm's (5.66) even connects it again; a connected device
    does not advertise, so a scan at once would not find it. Forgetting at once is no cure:
    Trixie's btvirt crashed (general protection fault) when a link it was closing was removed.
    """
    from dbus_fast import BusType  # noqa: PLC0415 - Bluetooth steps only
    from dbus_fast.aio import MessageBus  # noqa: PLC0415

    started = quiet_since = time.monotonic()
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    try:
        while True:
            links = await _connected(bus, adapter)
            now = time.monotonic()
            if links:
                quiet_since = now
            if now - quiet_since >= LINKS_QUIET or now - started >= LINKS_WAIT:
                break
            await asyncio.sleep(0.5)
        for path in links:
            await _remove_device(bus, adapter, path)
    finally:
        bus.disconnect()
    return {"waited": round(time.monotonic() - started, 1), "forgotten": sorted(links.values())}


async def _find_ble(
    adapter: str, short_id: str, *, scan_seconds: float = 0.0
) -> tuple[Any, dict[str, Any], float]:
    """The device's advertisement on ``adapter``: the first with our service and its id (the
    service data is on air only while the device's provisioning window is open). The adapter's
    links settle first (``links``: :func:`_settle_links`)."""
    timeout = scan_seconds or BLE_SCAN_TIMEOUT
    from bleak import BleakScanner  # noqa: PLC0415 - only this subcommand needs it
    from iob_protocol.ble import SERVICE_UUID, AdvertisedState  # noqa: PLC0415

    started = time.monotonic()
    seen: dict[str, Any] = {"links": await _settle_links(adapter)}

    def ours(_device: Any, advertisement: Any) -> bool:
        data = advertisement.service_data.get(SERVICE_UUID)
        if data is None:
            return False
        state = AdvertisedState.parse(data)
        if state.short_id != short_id:
            return False
        seen.update(
            phase=state.phase.name,
            window_open=state.window_open,
            failed=state.failed,
            short_id=state.short_id,
            rssi=advertisement.rssi,
            local_name=advertisement.local_name,
        )
        return True

    # The adapter by name (bleak ≥ 1: ``bluez={"adapter": ...}``; older type stubs lack the key).
    bluez: Any = {"adapter": adapter}
    device = await BleakScanner.find_device_by_filter(ours, timeout=timeout, bluez=bluez)
    if device is None:
        raise DriverError(f"no advertisement of {short_id} on {adapter} in {timeout:.0f} s")
    return device, seen, round(time.monotonic() - started, 1)


async def _ble_commit(
    args: argparse.Namespace,
    session: Callable[[], ClientSession],
    claim: dict[str, Any] | None,
    *,
    scan_seconds: float = 0.0,
) -> dict[str, Any]:
    """Find the device's advertisement, open ``session()`` over GATT, hand over (Wi-Fi, the
    claim if any, commit) and ask ``status`` until the commit ends."""
    device, advertised, found_after = await _find_ble(
        args.adapter, args.device_id[:8], scan_seconds=scan_seconds
    )
    ble = Ble(device, f"IoT Onboard {args.device_id[:8]}", args.adapter)
    try:
        await ble.handshake(session())
        for request, expected in _handover(args, claim, ble.ids):
            _expect(request, await ble.call(request), expected)
        started = time.monotonic()
        status = None
        while status is None:
            await asyncio.sleep(STATUS_POLL)
            status = _ended(await ble.call(StatusRequest(request_id=next(ble.ids))), started)
    finally:
        await ble.close()
    return {
        "advertised": advertised,
        "found_after": found_after,
        "mtu": ble.mtu,
        "features": ble.features,
        "connects": ble.connects,
        "connect_retries": ble.retries,
        **_outcome(status, started),
    }


async def _ble_onboard_async(args: argparse.Namespace) -> dict[str, Any]:
    claim = _claim_for(args)
    return await _ble_commit(args, lambda: ClientSession.for_qr(QrPayload.parse(args.qr)), claim)


async def _ble_owner_async(args: argparse.Namespace) -> dict[str, Any]:
    """The owner's Home Assistant re-onboards its device: once the device's window for the
    owner is open (its advertisement comes back), an owner session, Wi-Fi, commit."""
    owner = json.loads(args.owner.read_text())

    def session() -> ClientSession:
        return ClientSession.for_owner(
            device_id=args.device_id,
            device_public_key=bytes.fromhex(owner["device_key"]),
            owner_secret=bytes.fromhex(owner["owner_secret"]),
        )

    return await _ble_commit(args, session, None, scan_seconds=args.scan_timeout)


def _ble_owner(args: argparse.Namespace) -> dict[str, Any]:
    try:
        return asyncio.run(_ble_owner_async(args))
    except Exception as err:  # bleak's and the protocol's errors, reported as JSON
        raise DriverError(f"{type(err).__name__}: {err}") from err


def _ble_onboard(args: argparse.Namespace) -> dict[str, Any]:
    try:
        return asyncio.run(_ble_onboard_async(args))
    except Exception as err:  # bleak's and the protocol's errors, reported as JSON
        raise DriverError(f"{type(err).__name__}: {err}") from err


async def _let_go(client: Any) -> None:
    """Disconnect an Improv client's link: the library disconnects only on its idle timer."""
    bleak_client = getattr(client, "_client", None)
    if bleak_client is not None:
        with contextlib.suppress(Exception):  # a link that failed to come up: nothing to close
            await bleak_client.disconnect()


async def _connect(
    adapter: str, device: Any, retries: list[str], attempt: Callable[[Any], Awaitable[T]]
) -> tuple[T, Any]:
    """``attempt(device)`` until it connects; its result and the device it connected to.

    As Home Assistant's Bluetooth manager does: a link this adapter still holds (a client that
    exited, Improv's) is closed first, and a failed connect is retried with a new client
    (``attempt`` makes one each time, and lets go of it when it fails: establish_connection's
    own retries reuse a client that bleak may still count as connected, "Client is already
    connected"). Each failure is kept in ``retries``. Bookworm's bluetoothd (5.66) can keep a
    link that dropped as connected and then refuses the next one ("Device ... is already
    connected" in its journal); forgetting the device and finding it again, every second
    failure, clears that, as ``bluetoothctl remove`` does.
    """
    from bleak_retry_connector import close_stale_connections_by_address  # noqa: PLC0415

    await close_stale_connections_by_address(device.address)
    for number in range(BLE_CONNECT_ATTEMPTS):
        try:
            return await attempt(device), device
        except Exception as err:  # bleak's errors: retried, then reported
            cause = f" ({err.__cause__!r})" if err.__cause__ is not None else ""
            retries.append(f"{type(err).__name__}: {err}{cause}")
            if number == BLE_CONNECT_ATTEMPTS - 1:
                raise
        await asyncio.sleep(1)
        await close_stale_connections_by_address(device.address)
        if number % 2 == 1:
            device = await _forget_and_find(adapter, device.address)
    raise DriverError("unreachable")


async def _improv_connect(
    adapter: str, device: Any, advertisement: Any, retries: list[str]
) -> tuple[Any, Any, bool]:
    """An Improv client connected to ``device`` and whether it needs authorization (the first
    read connects), retried as :func:`_connect` does."""
    from improv_ble_client import ImprovBLEClient  # noqa: PLC0415

    async def attempt(device: Any) -> tuple[Any, bool]:
        client = ImprovBLEClient(device, advertisement)
        try:
            return client, await client.need_authorization()
        except Exception:
            await _let_go(client)
            raise

    (client, needs), device = await _connect(adapter, device, retries, attempt)
    return client, device, needs


async def _improv_async(args: argparse.Namespace) -> dict[str, Any]:
    from bleak import BleakScanner  # noqa: PLC0415 - only this subcommand needs them
    from bleak_retry_connector import close_stale_connections_by_address  # noqa: PLC0415
    from improv_ble_client import device_filter  # noqa: PLC0415
    from improv_ble_client.errors import ProvisioningFailed  # noqa: PLC0415

    bluez: Any = {"adapter": args.adapter}
    seen: list[Any] = []

    def offered(_device: Any, advertisement: Any) -> bool:
        if device_filter(advertisement):
            seen.append(advertisement)
            return True
        return False

    device = await BleakScanner.find_device_by_filter(
        offered, timeout=args.scan_timeout, bluez=bluez
    )
    if device is None:
        return {"advertised": False}
    result: dict[str, Any] = {"advertised": True, "connect_retries": []}
    client, device, result["needs_authorization"] = await _improv_connect(
        args.adapter, device, seen[-1], result["connect_retries"]
    )
    try:
        if args.button_pid:
            os.kill(args.button_pid, signal.SIGUSR1)
            # The agent handles the signal at once; its state notification may lag a little.
            for _ in range(20):
                needs = await client.need_authorization()
                if not needs:
                    break
                await asyncio.sleep(0.5)
            result["needs_authorization_after_button"] = needs
        try:
            redirect = await client.provision(args.ssid, args.passphrase, None)
        except ProvisioningFailed as err:
            result["provision"] = err.error.name
        else:
            result["provision"] = "PROVISIONED"
            result["redirect"] = redirect
    finally:
        # Let go of the device now, and of any link the adapter still holds to it (the next
        # scenario connects again).
        await _let_go(client)
        await close_stale_connections_by_address(device.address)
    return result


def _improv(args: argparse.Namespace) -> dict[str, Any]:
    try:
        return asyncio.run(_improv_async(args))
    except Exception as err:  # bleak's and the library's errors, reported as JSON
        raise DriverError(f"{type(err).__name__}: {err}") from err


async def _availability(hub: dict[str, Any], device_id: str) -> str:
    import aiomqtt  # noqa: PLC0415 - only this subcommand needs it

    async with aiomqtt.Client(
        hub["host"],
        int(hub["port"]),
        username=hub["username"],
        password=hub["password"],
        identifier=hub["username"],
        protocol=aiomqtt.ProtocolVersion.V5,
        timeout=60,
    ) as client:
        await client.subscribe(f"iob/{device_id}/availability", qos=1)
        async with asyncio.timeout(60):
            async for message in client.messages:
                if message.payload == b"online":
                    return "online"
    return "none"


def _online(args: argparse.Namespace) -> dict[str, Any]:
    account = json.loads(args.account.read_text())
    claim = json.loads(args.claim.read_text())
    status = _signed_in(args, "GET", f"/v1/claims/{claim['claim_id']}")
    try:
        availability = asyncio.run(_availability(account["hub"], args.device_id))
    except (TimeoutError, OSError) as err:
        availability = f"not seen: {err!r}"
    return {"claim": status["status"], "availability": availability}


def _air_of(text: str) -> dict[str, Any]:
    modes = re.findall(r"added 'key_mgmt' value '([^']*)'", text)
    # wpa_supplicant: "Trying to associate with <bssid> (SSID='<ssid>' freq=<MHz> MHz)".
    tried = re.findall(r"associate with ([0-9a-f:]{17}) \(SSID='([^']*)' freq=(\d+) MHz\)", text)
    return {
        "key_mgmt": modes[-1] if modes else None,
        "associated": [
            {"bssid": bssid, "ssid": ssid, "mhz": int(mhz)} for bssid, ssid, mhz in tried[-4:]
        ],
        "connected": "CTRL-EVENT-CONNECTED" in text,
        # NetworkManager ran a WPS push-button session, and the router handed the key over.
        "wps_pbc": "wps: type pbc start" in text,
        "wps_success": "WPS-SUCCESS" in text,
    }


def _journal(since: int, *units: str) -> str:
    command = ["journalctl", "-b", "--no-pager", "-o", "cat", "--since", f"@{since}"]
    for unit in units:
        command += ["-u", unit]
    return subprocess.run(command, capture_output=True, text=True, check=False).stdout


def _iob_device(*argv: str) -> str:
    """What ``iob-device ARGV`` prints (stdout and stderr), run in this process: the same code
    as the installed command, without another Python start."""
    from device_firmware.__main__ import main as iob_device  # noqa: PLC0415 - the guest only

    out = io.StringIO()
    # argparse's errors exit; the text says why.
    with contextlib.redirect_stderr(out), contextlib.suppress(SystemExit):
        iob_device(list(argv), out=out)
    return out.getvalue().rstrip("\n")


def _nmcli(*argv: str) -> str:
    command = ["nmcli", "-t", *argv]
    return subprocess.run(command, capture_output=True, text=True, check=False).stdout.rstrip("\n")


def _facts(args: argparse.Namespace) -> dict[str, Any]:
    """What the device shows after a step: the radio's side of the join since ``--since``, the
    agent's status and diagnosis, NetworkManager's active and saved connections, and with
    ``--agent-log`` the agent's journal lines that match it (the last 20)."""
    status_text = _iob_device("status", "--json")
    try:
        status: Any = json.loads(status_text)
    except ValueError:
        status = {"error": f"iob-device status --json: {status_text[:2000]}"}
    facts: dict[str, Any] = {
        "air": _air_of(_journal(args.since, "NetworkManager", "wpa_supplicant")),
        "status": status,
        "diagnose": _iob_device("diagnose"),
        "active": _nmcli("-f", "NAME,DEVICE", "connection", "show", "--active"),
        "saved": _nmcli("-f", "NAME,TYPE", "connection", "show"),
    }
    if args.agent_log:
        pattern = re.compile(args.agent_log, re.IGNORECASE)
        lines = _journal(args.since, "iot-onboard-device.service").splitlines()
        facts["agent_log"] = "\n".join([line for line in lines if pattern.search(line)][-20:])
    return facts


def _record(results: Path, name: str, result: Any) -> None:
    """One line of the VM stage's results, as guest.sh's ``record`` writes it."""
    with results.open("a") as file:
        file.write(json.dumps({"name": name, "at": _uptime(), "result": result}) + "\n")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="driver.py")
    parser.add_argument("--relay", default="http://127.0.0.1:8080")
    parser.add_argument("--account", type=_path)
    parser.add_argument("--claim", type=_path)
    parser.add_argument("--device-id", default="")
    parser.add_argument("--claim-socket", type=_path, default=None)
    parser.add_argument("--record", default="", help="the step's name in --results")
    parser.add_argument("--results", type=_path, default=None)
    parser.add_argument("--since", type=int, default=0, help="the step's start (epoch seconds)")
    parser.add_argument("--agent-log", default="", help="the agent's journal lines to keep")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("account")
    sub.add_parser("claim")
    claims = sub.add_parser("claim-server")
    claims.add_argument("--socket", type=_path, required=True)
    sub.add_parser("online")
    onboard = sub.add_parser("onboard")
    onboard.add_argument("--device", default="http://127.0.0.1:8423")
    onboard.add_argument("--qr", required=True)
    onboard.add_argument("--ssid", required=True)
    onboard.add_argument("--passphrase", default="")
    onboard.add_argument("--hidden", action="store_true")
    onboard.add_argument("--wps", action="store_true", help="join by the router's WPS button")
    onboard.add_argument("--service-url", required=True)
    onboard.add_argument("--owner-out", type=_path, default=None)
    onboard.add_argument(
        "--until-online", action="store_true", help="after a commit, wait for 'online'"
    )
    ble = sub.add_parser("ble-onboard")
    ble.add_argument("--adapter", default="hci1")
    ble.add_argument("--qr", required=True)
    ble.add_argument("--ssid", required=True)
    ble.add_argument("--passphrase", default="")
    ble.add_argument("--service-url", required=True)
    owner = sub.add_parser("ble-owner")
    owner.add_argument("--adapter", default="hci1")
    owner.add_argument("--owner", type=_path, required=True)
    owner.add_argument("--ssid", required=True)
    owner.add_argument("--passphrase", default="")
    owner.add_argument("--scan-timeout", type=float, default=BLE_SCAN_TIMEOUT)
    improv = sub.add_parser("improv")
    improv.add_argument("--adapter", default="hci1")
    improv.add_argument("--ssid", required=True)
    improv.add_argument("--passphrase", default="")
    improv.add_argument("--button-pid", type=int, default=0)
    improv.add_argument("--scan-timeout", type=float, default=BLE_SCAN_TIMEOUT)
    return parser


def main(argv: list[str]) -> int:
    """One subcommand; its JSON on stdout, or ``{"error": ...}`` and exit status 1."""
    args = _parser().parse_args(argv)
    steps = {
        "improv": _improv,
        "ble-owner": _ble_owner,
        "ble-onboard": _ble_onboard,
        "account": _account,
        "claim": _claim,
        "claim-server": _claim_server,
        "onboard": _onboard,
        "online": _online,
    }
    try:
        result = steps[args.command](args)
    except (DriverError, OSError, KeyError, ValueError) as err:
        result, status = {"error": f"{args.command}: {err}"}, 1
    else:
        status = 0
    if args.record and args.results is not None:
        # The step's own result under its kind's key, then what the device shows.
        key = "improv" if args.command == "improv" else "onboard"
        extra = {"device_id": args.device_id} if args.command == "ble-onboard" else {}
        _record(args.results, args.record, {**extra, key: result, **_facts(args)})
    print(json.dumps(result))  # noqa: T201 - the guest reads it
    return status


def _path(text: str) -> Path:
    return Path(text)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
