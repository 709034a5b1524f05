"""Test helpers: a validating API client, fake devices, a movable clock."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from aiohttp.test_utils import TestClient
from iob_protocol.canonical import b64url_encode
from iob_protocol.claim import ClaimConfirmation, ReleaseNotice, ZeroTouchConfirmation
from iob_protocol.identity import DeviceIdentity
from iob_protocol.payload import SetupCode, SetupVerifier

from cloud_relay.api.common import RELAY
from cloud_relay.api.openapi import document
from cloud_relay.registry import FactoryRecord
from cloud_relay.relay import Relay


@cache
def _shared_verifier() -> str:
    # Most tests only need a well-formed verifier, so one (slow, scrypt) verifier serves them.
    identity = DeviceIdentity.generate()
    return SetupVerifier.create(SetupCode.generate(identity.device_id), log2_n=14).encode()


@cache
def _verifier_for(code: SetupCode) -> str:
    return SetupVerifier.create(code, log2_n=14).encode()


@dataclass
class FakeDevice:
    """A device with a factory identity, as the registry knows it.

    With ``with_code=True`` it also has a setup code whose real verifier goes to the registry
    (the manual-code key lookup checks it); otherwise it shares one well-formed verifier.
    """

    identity: DeviceIdentity = field(default_factory=DeviceIdentity.generate)
    model: str = "pi-sensor"
    with_code: bool = False
    code: SetupCode | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.with_code:
            self.code = SetupCode.generate(self.identity.device_id)

    @property
    def id(self) -> str:
        return self.identity.device_id

    @property
    def manual_code(self) -> str:
        """The manual code as printed on the label."""
        assert self.code is not None, "create the device with with_code=True"
        return self.code.manual_code().format()

    def verifier(self) -> str:
        return _shared_verifier() if self.code is None else _verifier_for(self.code)

    def record(self) -> dict[str, str]:
        """Its factory-provision record (JSON form)."""
        return {
            "device_id": self.id,
            "model": self.model,
            "public_key": b64url_encode(self.identity.public_key),
            "setup_verifier": self.verifier(),
        }

    def factory_record(self) -> FactoryRecord:
        return FactoryRecord(self.id, self.model, self.identity.public_key, self.verifier())

    def confirm(self, token: str, now: int) -> dict[str, Any]:
        """The signed claim confirmation, as the JSON object the device posts."""
        confirmation = ClaimConfirmation.create(self.identity, token, clock=lambda: now)
        return _object(confirmation.to_json())

    def zero_touch(self, now: int) -> dict[str, Any]:
        statement = ZeroTouchConfirmation.create(self.identity, clock=lambda: now)
        return _object(statement.to_json())

    def release(self, now: int) -> dict[str, Any]:
        notice = ReleaseNotice.create(self.identity, clock=lambda: now)
        return _object(notice.to_json())


def _object(data: bytes) -> dict[str, Any]:
    value = json.loads(data)
    assert isinstance(value, dict)
    return value


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]

    @property
    def code(self) -> str | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return str(self.body["error"]["code"])
        return None


@dataclass
class User:
    email: str
    password: str
    account_id: str
    token: str
    refresh_token: str


_PARAM_RE = re.compile(r"\{[^}]+\}")


@cache
def _operations() -> list[tuple[re.Pattern[str], str, dict[str, Any]]]:
    doc = document()
    return [
        (re.compile("^" + _PARAM_RE.sub("[^/]+", path) + "$"), path, item)
        for path, item in doc["paths"].items()
    ]


def response_schema(method: str, path: str, status: int) -> dict[str, Any] | None:
    """The documented schema for a response; fails when the response is undocumented."""
    candidates = [(template, item) for regex, template, item in _operations() if regex.match(path)]
    # A literal segment beats a parameter (/v1/claims/confirm vs /v1/claims/{claim_id}).
    candidates.sort(key=lambda candidate: candidate[0].count("{"))
    for template, item in candidates:
        operation = item.get(method.lower())
        if operation is None:
            continue
        responses = operation["responses"]
        response = responses.get(str(status)) or responses.get("default")
        if response is None:
            raise AssertionError(f"{method} {template} does not document status {status}")
        if "$ref" in response:
            response = document()["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
        content = response.get("content")
        if content is None:
            return None
        schema: dict[str, Any] = content["application/json"]["schema"]
        return schema
    if status in {404, 405}:
        return {"$ref": "#/components/schemas/Error"}
    raise AssertionError(f"{method} {path} is not in the OpenAPI document")


def validate_response(method: str, path: str, status: int, body: Any) -> None:
    """Validate a real response against /openapi.json (jsonschema, draft 2020-12)."""
    schema = response_schema(method, path, status)
    if schema is None:
        assert body is None, f"{method} {path} {status} documents no body but sent {body!r}"
        return
    root = {**schema, "components": document()["components"]}
    jsonschema.Draft202012Validator(root).validate(body)


class Api:
    """A client for the relay under test; every response is checked against the document."""

    def __init__(self, client: TestClient[Any, Any]) -> None:
        self.client = client
        self.validated = 0

    @property
    def relay(self) -> Relay:
        app = self.client.app
        assert app is not None
        relay: Relay = app[RELAY]
        return relay

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: bytes | str | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        expect: int | None = None,
    ) -> Reply:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        if json_body is not None:
            data = json.dumps(json_body)
            all_headers.setdefault("Content-Type", "application/json")
        async with self.client.request(method, path, data=data, headers=all_headers) as response:
            raw = await response.read()
            body = json.loads(raw) if raw else None
            if raw:
                assert response.content_type == "application/json", response.content_type
            reply = Reply(response.status, body, dict(response.headers))
        validate_response(method, path.split("?", 1)[0], reply.status, body)
        self.validated += 1
        if expect is not None:
            assert reply.status == expect, f"{method} {path}: {reply.status} {reply.body}"
        return reply

    async def sign_up(self, email: str | None = None, password: str | None = None) -> User:
        email = email or f"user-{secrets.token_hex(4)}@example.com"
        password = password or secrets.token_urlsafe(12)
        reply = await self.request(
            "POST",
            "/v1/auth/sign-up",
            json_body={"email": email, "password": password},
            expect=201,
        )
        return User(
            email,
            password,
            reply.body["account"]["account_id"],
            reply.body["access_token"],
            reply.body["refresh_token"],
        )

    async def owner_household(self) -> tuple[User, str]:
        """A new account and the household it creates (named "Home")."""
        owner = await self.sign_up()
        return owner, await self.household(owner)

    async def household(self, user: User, name: str = "Home") -> str:
        reply = await self.request(
            "POST", "/v1/households", json_body={"name": name}, token=user.token, expect=201
        )
        return str(reply.body["household_id"])

    async def join(self, owner: User, household_id: str, role: str) -> User:
        """A new account that joins ``household_id`` with ``role`` through an invitation."""
        member = await self.sign_up()
        invitation = await self.invite(owner, household_id, role)
        await self.accept(member, invitation.body["token"], expect=201)
        return member

    async def invite(self, user: User, household_id: str, role: str, **extra: str) -> Reply:
        """``user`` invites to ``household_id`` with ``role`` (and ``extra`` fields): 201."""
        return await self.request(
            "POST",
            f"/v1/households/{household_id}/invitations",
            json_body={"role": role, **extra},
            token=user.token,
            expect=201,
        )

    async def accept(self, user: User, token: str, *, expect: int | None = None) -> Reply:
        """``user`` accepts the invitation ``token``."""
        return await self.request(
            "POST",
            "/v1/invitations/accept",
            json_body={"token": token},
            token=user.token,
            expect=expect,
        )

    async def share(
        self,
        user: User,
        household_id: str,
        device: FakeDevice,
        to: str,
        access: str,
        *,
        expect: int | None = None,
    ) -> Reply:
        """``user`` shares ``device`` of ``household_id`` with the household ``to``."""
        return await self.request(
            "PUT",
            f"/v1/households/{household_id}/devices/{device.id}/shares/{to}",
            json_body={"access": access},
            token=user.token,
            expect=expect,
        )

    async def release(
        self, user: User, household_id: str, device: FakeDevice, *, expect: int | None = None
    ) -> Reply:
        """``user`` releases ``device`` of ``household_id``."""
        return await self.request(
            "POST",
            f"/v1/households/{household_id}/devices/{device.id}/release",
            token=user.token,
            expect=expect,
        )

    async def admin(self) -> User:
        user = await self.sign_up()
        await self.relay.accounts.set_admin(user.account_id, is_admin=True, actor="test")
        return user

    async def device(self, model: str = "pi-sensor", *, with_code: bool = False) -> FakeDevice:
        device = FakeDevice(model=model, with_code=with_code)
        await self.relay.registry.import_records([device.factory_record()], "test")
        return device

    async def start_claim(self, user: User, household_id: str, device: FakeDevice) -> Reply:
        return await self.request(
            "POST",
            f"/v1/households/{household_id}/claims",
            json_body={"device_id": device.id},
            token=user.token,
        )

    async def offer_transfer(
        self, user: User, household_id: str, device: FakeDevice, to: str
    ) -> Reply:
        """``user`` offers ``device`` of ``household_id`` to the household ``to``: 201."""
        return await self.request(
            "POST",
            f"/v1/households/{household_id}/devices/{device.id}/transfers",
            json_body={"to_household_id": to},
            token=user.token,
            expect=201,
        )

    async def device_audit(
        self, user: User, household_id: str, device: FakeDevice
    ) -> list[dict[str, Any]]:
        """The audit events of ``device`` in ``household_id``, as ``user`` reads them."""
        reply = await self.request(
            "GET",
            f"/v1/households/{household_id}/devices/{device.id}/audit",
            token=user.token,
            expect=200,
        )
        return list(reply.body["events"])

    async def started_claim(self) -> tuple[User, str, FakeDevice, Reply]:
        """A new owner, its household, a new device and the claim it started (the reply)."""
        owner, household = await self.owner_household()
        device = await self.device()
        return owner, household, device, await self.start_claim(owner, household, device)

    async def claim(self, user: User, household_id: str, device: FakeDevice) -> dict[str, Any]:
        """Claim ``device`` for ``household_id`` end to end; return the owned body."""
        started = await self.start_claim(user, household_id, device)
        assert started.status == 201, started.body
        reply = await self.confirm(device, started.body["token"], expect=200)
        return dict(reply.body)

    async def confirm(self, device: FakeDevice, token: str, *, expect: int | None = None) -> Reply:
        """POST /v1/claims/confirm: ``device`` confirms the claim ``token`` (signed now)."""
        return await self.request(
            "POST",
            "/v1/claims/confirm",
            json_body={"confirmation": device.confirm(token, self.now())},
            expect=expect,
        )

    def now(self) -> int:
        return self.relay.ctx.now()


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Stop a service the test started, by its pid: SIGTERM, then SIGKILL after 10 s."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


ROOT = Path(__file__).parents[2]
#: Bound for a started service to name its port; never an assertion on speed.
START_WAIT = 30.0


@contextlib.contextmanager
def started_process(
    command: list[str], log: Path, **options: Any
) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` with its output in ``log``, in a session of its own; stopped by its pid."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **options,
        )
    try:
        yield process
    finally:
        stop_process(process)


def serve_process(config: Path, port_file: Path, log: Path) -> Any:
    """``python -m cloud_relay serve`` of this checkout, as users run it (a context manager)."""
    return started_process(
        [
            *(sys.executable, "-m", "cloud_relay", "--config", str(config), "serve"),
            *("--port-file", str(port_file)),
        ],
        log,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _named_port(process: subprocess.Popen[bytes], port_file: Path, log: Path) -> int | None:
    """The port a ``serve`` process named once it listened; None before."""
    assert process.poll() is None, f"serve exited:\n{log.read_text(errors='replace')}"
    try:
        named = json.loads(port_file.read_text())
    except FileNotFoundError:
        return None
    assert named["pid"] == process.pid
    return int(named["http"])


async def serve_port(process: subprocess.Popen[bytes], port_file: Path, log: Path) -> int:
    """The port, once the service listens (it reconciles before it does) and named it."""
    async with asyncio.timeout(START_WAIT):
        while True:
            port = _named_port(process, port_file, log)
            if port is not None:
                break
            await asyncio.sleep(0.05)
    # Written once bound: the port answers at once.
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()
    await writer.wait_closed()
    return port
