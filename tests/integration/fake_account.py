"""The HA tests' fault injector: a stand-in for the account service's ``/v1`` API, backed by
a REAL Mosquitto.

For the happy path and real behaviour use ``real_account_service`` (the real service as a
subprocess, tests/integration/conftest.py). This stand-in is for what the real service never
does on request: stop answering (``stop()``), refuse the hub credential (``hub_status``), a
chosen error, or state set directly on its attributes (members, shares, access levels).

It answers what the runtime asks (token refresh, hub credentials and rotation, devices,
members, release, shares, transfers) with the response shapes of cloud_relay/api, and drives
the broker's dynamic security exactly as docs/broker.md lays it out: a client and role per
device (``iob/<id>/#``), a hub client ``hub-<household>`` whose role may subscribe and receive
per device, publish ``cmd/#`` only with control, and a fallback receive deny on ``iob/#``.
``wildcard_hub=True`` adds subscribe patterns for ``iob/+/meta`` & co. (the layout the hub
prefers). It runs on a free 127.0.0.1 port inside the test's event loop.
"""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

from custom_components.iot_onboard.iob_protocol.account_api import (
    Account,
    DeviceAccess,
    DeviceCredentials,
    DeviceList,
    DeviceSummary,
    ErrorBody,
    ErrorCode,
    Member,
    MemberList,
    MqttCredentials,
    Released,
    Role,
    Share,
    ShareAccess,
    TokenPair,
    Transfer,
    TransferStatus,
    WireModel,
)
from tests.integration.fake_device import fake_device_command
from tests.plugins.mosquitto import MosquittoBroker, dynsec_command

HOUSEHOLD = "h0000000000000000000000000000001"
OWNER_ACCOUNT = "a0000000000000000000000000000001"
TOKEN_TTL = 900
REFRESH_TTL = 30 * 86400


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class FakeAccountService:
    """The account service as the runtime sees it; state is plain attributes tests change."""

    broker: MosquittoBroker
    wildcard_hub: bool = False
    household_id: str = HOUSEHOLD
    access_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    refresh_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    hub_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    devices: dict[str, str] = field(default_factory=dict)
    device_passwords: dict[str, str] = field(default_factory=dict)
    members: list[Member] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)
    #: HTTP status the hub endpoint answers with instead of credentials (403, 401, 503...).
    hub_status: int | None = None
    url: str = ""
    _runner: web.AppRunner | None = None
    _hub_acls: set[tuple[str, str, bool, int]] = field(default_factory=set)
    _hub_exists: bool = False

    def __post_init__(self) -> None:
        """The household starts with its owner (the signed-in account)."""
        self.members.append(member("m-owner", OWNER_ACCOUNT, None, "Owner", Role.OWNER))

    def link_owner(self, external_id: str) -> None:
        """The household's owner stands for the Home Assistant user ``external_id``."""
        self.members[:] = [
            replace(m, external_id=external_id) if m.role is Role.OWNER else m for m in self.members
        ]

    def owner(self) -> Member:
        """The household's owner."""
        return next(m for m in self.members if m.role is Role.OWNER)

    @property
    def hub_username(self) -> str:
        """The hub's broker username."""
        return f"hub-{self.household_id}"

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self, port: int | None = None) -> str:
        """Serve on ``port`` (default: a free loopback port); return the base URL."""
        app = web.Application(middlewares=[self._record])
        app.router.add_post("/v1/auth/refresh", self._refresh)
        prefix = "/v1/households/{household}"
        app.router.add_get(prefix + "/hub", self._hub)
        app.router.add_post(prefix + "/hub/rotate", self._rotate_hub)
        app.router.add_get(prefix + "/devices", self._devices)
        app.router.add_get(prefix + "/members", self._members)
        app.router.add_post(prefix + "/members", self._add_member)
        app.router.add_patch(prefix + "/members/{member}", self._update_member)
        app.router.add_delete(prefix + "/members/{member}", self._remove_member)
        app.router.add_post(prefix + "/devices/{device}/release", self._release)
        app.router.add_post(prefix + "/devices/{device}/credentials", self._rotate_device)
        app.router.add_put(prefix + "/devices/{device}/shares/{target}", self._share)
        app.router.add_delete(prefix + "/devices/{device}/shares/{target}", self._unshare)
        app.router.add_post(prefix + "/devices/{device}/transfers", self._transfer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = _free_port() if port is None else port
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def entry_data(self) -> dict[str, Any]:
        """What the config flow stores for this household (const.py's layout)."""
        return {
            "account_url": self.url,
            "account_id": OWNER_ACCOUNT,
            "email": "owner@example.com",
            "household_id": self.household_id,
            "access_token": self.access_token,
            "access_expires_at": 4_000_000_000,
            "refresh_token": self.refresh_token,
            "refresh_expires_at": 4_100_000_000,
        }

    # --- broker state -------------------------------------------------------------------------

    async def add_device(self, device_id: str, access: str = "owner") -> str:
        """A device client on the broker and in the household; returns its password."""
        password = secrets.token_urlsafe(12)
        role = f"iob-device-{device_id}"
        acls = [
            {"acltype": kind, "topic": f"iob/{device_id}/#", "allow": True}
            for kind in ("publishClientSend", "subscribePattern", "publishClientReceive")
        ]
        await dynsec_command(
            self.broker,
            [
                {"command": "createRole", "rolename": role, "acls": acls},
                {
                    "command": "createClient",
                    "username": device_id,
                    "password": password,
                    "roles": [{"rolename": role}],
                },
            ],
        )
        self.devices[device_id] = access
        self.device_passwords[device_id] = password
        await self.sync_hub()
        return password

    async def drop_device(self, device_id: str) -> None:
        """Release: the device's client is deleted (its session kicked), the hub loses it."""
        self.devices.pop(device_id, None)
        await dynsec_command(
            self.broker,
            [
                {"command": "deleteClient", "username": device_id},
                {"command": "deleteRole", "rolename": f"iob-device-{device_id}"},
            ],
        )
        await self.sync_hub()

    def _wanted_hub_acls(self) -> set[tuple[str, str, bool, int]]:
        wanted = {("publishClientReceive", "iob/#", False, -1)}
        for device_id, access in self.devices.items():
            wanted.add(("subscribePattern", f"iob/{device_id}/#", True, 0))
            wanted.add(("publishClientReceive", f"iob/{device_id}/#", True, 0))
            if access in {"owner", "control"}:
                wanted.add(("publishClientSend", f"iob/{device_id}/cmd/#", True, 0))
        if self.wildcard_hub:
            for pattern in ("iob/+/meta", "iob/+/availability", "iob/+/state/+", "iob/+/diag"):
                wanted.add(("subscribePattern", pattern, True, 0))
        return wanted

    async def sync_hub(self) -> None:
        """Make the hub's client and role what the household's devices say (like put_hub)."""
        role = f"iob-hub-{self.household_id}"
        commands: list[dict[str, Any]] = []
        if not self._hub_exists:
            commands += [
                {"command": "createRole", "rolename": role, "acls": []},
                {
                    "command": "createClient",
                    "username": self.hub_username,
                    "password": self.hub_password,
                    # Bound like the account service's: only hub-<household> may connect.
                    "clientid": self.hub_username,
                    "roles": [{"rolename": role}],
                },
            ]
            self._hub_exists = True
        wanted = self._wanted_hub_acls()
        for kind, topic, _allow, _priority in sorted(self._hub_acls - wanted):
            commands.append(
                {"command": "removeRoleACL", "rolename": role, "acltype": kind, "topic": topic}
            )
        for kind, topic, allow, priority in sorted(wanted - self._hub_acls):
            commands.append(
                {
                    "command": "addRoleACL",
                    "rolename": role,
                    "acltype": kind,
                    "topic": topic,
                    "allow": allow,
                    "priority": priority,
                }
            )
        if commands:
            await dynsec_command(self.broker, commands)
        self._hub_acls = wanted

    def device_command(
        self, device_id: str, meta: dict[str, Any], states: dict[str, str]
    ) -> list[str]:
        """The command line of a fake device process for ``device_id``."""
        return fake_device_command(
            self.broker.host,
            self.broker.port,
            device_id=device_id,
            password=self.device_passwords[device_id],
            meta=meta,
            states=states,
        )

    # --- HTTP ---------------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.calls.append((request.method, request.path))
        if request.path != "/v1/auth/refresh":
            if request.headers.get("Authorization") != f"Bearer {self.access_token}":
                return _error(401, ErrorCode.AUTHENTICATION_REQUIRED, "Sign in first.")
            if request.match_info.get("household") != self.household_id:
                return _error(404, ErrorCode.HOUSEHOLD_NOT_FOUND, "No such household.")
        response: web.StreamResponse = await handler(request)
        return response

    async def _refresh(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("refresh_token") != self.refresh_token:
            return _error(
                401, ErrorCode.REFRESH_TOKEN_INVALID, "The session has ended; sign in again."
            )
        self.access_token = secrets.token_urlsafe(24)
        self.refresh_token = secrets.token_urlsafe(24)
        account = Account(
            account_id=OWNER_ACCOUNT,
            email="owner@example.com",
            display_name="Owner",
            is_admin=False,
        )
        return _json(
            TokenPair(
                access_token=self.access_token,
                expires_in=TOKEN_TTL,
                refresh_token=self.refresh_token,
                refresh_expires_in=REFRESH_TTL,
                account=account,
            )
        )

    def _mqtt(self) -> MqttCredentials:
        return MqttCredentials(
            host=self.broker.host,
            port=self.broker.port,
            tls=False,
            username=self.hub_username,
            password=self.hub_password,
            client_id=self.hub_username,
        )

    async def _hub(self, _request: web.Request) -> web.Response:
        if self.hub_status is not None:
            return _error(self.hub_status, "refused", "This needs the admin role or higher.")
        await self.sync_hub()
        return _json(self._mqtt())

    async def _rotate_hub(self, _request: web.Request) -> web.Response:
        self.hub_password = secrets.token_urlsafe(18)
        await dynsec_command(
            self.broker,
            [
                {
                    "command": "setClientPassword",
                    "username": self.hub_username,
                    "password": self.hub_password,
                }
            ],
        )
        return _json(self._mqtt())

    async def _devices(self, _request: web.Request) -> web.Response:
        return _json(
            DeviceList(
                devices=tuple(
                    DeviceSummary(
                        device_id=device_id,
                        model="pi-sensor",
                        access=DeviceAccess(access),
                        owner_household_id=self.household_id if access == "owner" else "h-other",
                        since=1_764_000_000,
                    )
                    for device_id, access in sorted(self.devices.items())
                )
            )
        )

    async def _members(self, _request: web.Request) -> web.Response:
        return _json(MemberList(members=tuple(self.members)))

    async def _add_member(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body["role"] == "owner":
            return _error(400, ErrorCode.INVALID_REQUEST, "the owner role cannot be granted")
        added = member(
            f"m-{secrets.token_hex(4)}",
            None,
            body["external_id"],
            body["display_name"],
            Role(body["role"]),
        )
        self.members.append(added)
        return _json(added, status=201)

    async def _update_member(self, request: web.Request) -> web.Response:
        body = await request.json()
        member_id = request.match_info["member"]
        index = next((i for i, m in enumerate(self.members) if m.member_id == member_id), None)
        if index is None:
            return _error(404, ErrorCode.MEMBER_NOT_FOUND, "No such member.")
        changes: dict[str, Any] = {k: v for k, v in body.items() if v is not None}
        if "role" in changes:
            changes["role"] = Role(changes["role"])
        self.members[index] = replace(self.members[index], **changes)
        return _json(self.members[index])

    async def _remove_member(self, request: web.Request) -> web.Response:
        self.members[:] = [m for m in self.members if m.member_id != request.match_info["member"]]
        return web.Response(status=204)

    async def _release(self, request: web.Request) -> web.Response:
        device_id = request.match_info["device"]
        if self.devices.get(device_id) != "owner":
            return _error(404, ErrorCode.DEVICE_NOT_FOUND, "No such device in this household.")
        await self.drop_device(device_id)
        return _json(Released())

    async def _rotate_device(self, request: web.Request) -> web.Response:
        """The relay's answer shape; the device-side follow-up is tested in tests/device."""
        device_id = request.match_info["device"]
        if self.devices.get(device_id) != "owner":
            return _error(404, ErrorCode.DEVICE_NOT_FOUND, "No such device in this household.")
        self.device_passwords[device_id] = secrets.token_urlsafe(16)
        mqtt = MqttCredentials(
            host=self.broker.host,
            port=self.broker.port,
            tls=False,
            username=device_id,
            password=self.device_passwords[device_id],
            client_id=device_id,
        )
        return _json(DeviceCredentials(device_id=device_id, mqtt=mqtt))

    async def _share(self, request: web.Request) -> web.Response:
        body = await request.json()
        return _json(
            Share(
                device_id=request.match_info["device"],
                household_id=request.match_info["target"],
                access=ShareAccess(body["access"]),
                created_at=1_764_000_000,
            )
        )

    async def _unshare(self, _request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _transfer(self, request: web.Request) -> web.Response:
        body = await request.json()
        transfer = Transfer(
            transfer_id="t1",
            device_id=request.match_info["device"],
            from_household_id=self.household_id,
            to_household_id=body["to_household_id"],
            status=TransferStatus.PENDING,
            created_at=1_764_000_000,
            expires_at=1_764_600_000,
        )
        return _json(transfer, status=201)


def member(
    member_id: str, account_id: str | None, external_id: str | None, name: str, role: Role
) -> Member:
    """A member of the fake's household."""
    return Member(
        member_id=member_id,
        household_id=HOUSEHOLD,
        account_id=account_id,
        external_id=external_id,
        display_name=name,
        role=role,
        created_at=1_764_000_000,
    )


def _json(model: WireModel, status: int = 200) -> web.Response:
    return web.json_response(model.to_dict(), status=status)


def _error(status: int, code: ErrorCode | str, message: str) -> web.Response:
    return _json(ErrorBody.of(code, message), status=status)
