"""Home Assistant's part in the VM stage, run inside the guest by tests/vm/guest.sh.

Runs on the guest's own Python (Bookworm's 3.11, Trixie's 3.13) in the account service's venv,
which has the project's wheel from the device package. Each subcommand prints one JSON object:

- ``account`` (in the router's namespace: the service is reachable only there): signs up an
  account, creates a household; prints its access token, household id and hub credential.
- ``claim`` (router namespace): a new claim for the device; prints claim id and token.
- ``onboard`` (the device's namespace, where the agent's LAN server listens on loopback): the
  handshake with the label's QR text, ``set_wifi``, ``set_claim``, ``commit``, then ``status``
  until the commit ends; prints the device's final state and diagnostic code.
- ``air`` (anywhere): reads NetworkManager's and wpa_supplicant's journal of one scenario on
  stdin; prints the key management the supplicant was given and whether it connected (the
  radio's side of a join that the agent then rolled back).
- ``online`` (router namespace): the claim's status and the device's retained availability on
  the broker, read with the household hub's credential, as Home Assistant reads it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Final

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
HTTP_TIMEOUT: Final = 30.0


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
    token = _api(args.relay, "POST", "/v1/auth/sign-up", {"email": email, "password": password})[
        "access_token"
    ]
    household = _api(args.relay, "POST", "/v1/households", {"name": "VM home"}, token)
    household_id = str(household["household_id"])
    hub = _api(args.relay, "GET", f"/v1/households/{household_id}/hub", token=token)
    return {"token": token, "household_id": household_id, "hub": hub}


def _claim(args: argparse.Namespace) -> dict[str, Any]:
    account = json.loads(args.account.read_text())
    answer = _api(
        args.relay,
        "POST",
        f"/v1/households/{account['household_id']}/claims",
        {"device_id": args.device_id},
        account["token"],
    )
    return {"claim_id": str(answer["claim_id"]), "token": str(answer["token"])}


def _onboard(args: argparse.Namespace) -> dict[str, Any]:
    claim = json.loads(args.claim.read_text())
    lan = Lan(args.device)
    lan.handshake(args.qr)
    lan.call(
        SetWifiRequest(
            request_id=next(lan.ids),
            ssid=args.ssid.encode(),
            passphrase=args.passphrase or None,
            hidden=args.hidden,
        )
    )
    ack = lan.call(
        SetClaimRequest(
            request_id=next(lan.ids),
            service_url=args.service_url,
            claim_token=claim["token"],
            owner_secret=OwnerSecret.generate().secret,
            allow_insecure_http=True,
        )
    )
    if not isinstance(ack, AckResult):
        raise DriverError(f"set_claim: unexpected answer {ack!r}")
    if not isinstance(lan.call(CommitRequest(request_id=next(lan.ids))), CommitResult):
        raise DriverError("commit: unexpected answer")
    started = time.monotonic()
    while True:
        status = lan.call(StatusRequest(request_id=next(lan.ids)))
        if not isinstance(status, StatusResult):
            raise DriverError(f"status: unexpected answer {status!r}")
        if status.state.value != "committing":
            break
        if time.monotonic() - started > COMMIT_DEADLINE:
            raise DriverError(f"the commit did not end within {COMMIT_DEADLINE:.0f} s")
        time.sleep(STATUS_POLL)
    return {
        "state": status.state.value,
        "diagnostic": None if status.diagnostic is None else status.diagnostic.value,
        "seconds": round(time.monotonic() - started, 1),
    }


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
    status = _api(args.relay, "GET", f"/v1/claims/{claim['claim_id']}", token=account["token"])
    try:
        availability = asyncio.run(_availability(account["hub"], args.device_id))
    except (TimeoutError, OSError) as err:
        availability = f"not seen: {err!r}"
    return {"claim": status["status"], "availability": availability}


def _air(_args: argparse.Namespace) -> dict[str, Any]:
    text = sys.stdin.read()
    modes = re.findall(r"added 'key_mgmt' value '([^']*)'", text)
    return {
        "key_mgmt": modes[-1] if modes else None,
        "connected": "CTRL-EVENT-CONNECTED" in text,
    }


def main(argv: list[str]) -> int:
    """One subcommand; its JSON on stdout, or ``{"error": ...}`` and exit status 1."""
    parser = argparse.ArgumentParser(prog="driver.py")
    parser.add_argument("--relay", default="http://127.0.0.1:8080")
    parser.add_argument("--account", type=_path)
    parser.add_argument("--claim", type=_path)
    parser.add_argument("--device-id", default="")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("account")
    sub.add_parser("claim")
    sub.add_parser("online")
    sub.add_parser("air")
    onboard = sub.add_parser("onboard")
    onboard.add_argument("--device", default="http://127.0.0.1:8423")
    onboard.add_argument("--qr", required=True)
    onboard.add_argument("--ssid", required=True)
    onboard.add_argument("--passphrase", default="")
    onboard.add_argument("--hidden", action="store_true")
    onboard.add_argument("--service-url", required=True)
    args = parser.parse_args(argv)
    steps = {
        "account": _account,
        "claim": _claim,
        "onboard": _onboard,
        "online": _online,
        "air": _air,
    }
    try:
        result = steps[args.command](args)
    except (DriverError, OSError, KeyError, ValueError) as err:
        print(json.dumps({"error": f"{args.command}: {err}"}))  # noqa: T201 - the guest reads it
        return 1
    print(json.dumps(result))  # noqa: T201 - the guest reads it
    return 0


def _path(text: str) -> Any:
    from pathlib import Path  # noqa: PLC0415

    return Path(text)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
