"""Several ``serve`` processes over one PostgreSQL database, behind haproxy (issue 18, items 3-4).

The deployment docs/relay.md describes for scale, run as users run it: two ``python -m
cloud_relay serve`` processes with one configuration, Debian's haproxy balancing round-robin in
front (health-checked on ``/v1/health``), one PostgreSQL database and a Mosquitto of the test's
own. The tests talk to haproxy only, so consecutive requests of one user land on different
processes: the processes keep no state of their own, they share the rate limits, and a process
killed during a claim burst loses nothing that was acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from iob_protocol.canonical import b64url_encode

from cloud_relay.broker.mosquitto import MosquittoDynsecAdapter
from cloud_relay.config import load_config
from cloud_relay.context import Context
from cloud_relay.relay import Relay
from cloud_relay.storage import open_storage
from tests.plugins.mosquitto import MosquittoBroker, MosquittoProcess
from tests.plugins.relay_toml import relay_toml

from .helpers import (
    Api,
    FakeDevice,
    Reply,
    User,
    serve_port,
    serve_process,
    started_process,
)
from .mqtt import connect_code
from .test_mqtt_credential import fetch, signed

WAIT = 30.0  # bound for a process to start or haproxy to see it; never an assertion on speed


@dataclass
class Deployment:
    """Two ``serve`` processes behind haproxy, and a client that only knows haproxy."""

    api: Api
    processes: list[subprocess.Popen[bytes]]
    logs: list[Path]
    relay: Relay


class _BalancedApi(Api):
    """:class:`Api` over haproxy's address; ``relay`` is a third service on the same database
    (the factory import, the clock), as an operator's command line would be."""

    def __init__(self, session: aiohttp.ClientSession, relay: Relay) -> None:
        super().__init__(cast("Any", session))
        self._relay = relay

    @property
    def relay(self) -> Relay:
        return self._relay

    async def request(self, method: str, path: str, **options: Any) -> Reply:
        """The service's answer; :class:`AnswerLostError` for haproxy's own error page (the
        process died under the request: the service always answers JSON)."""
        try:
            return await super().request(method, path, **options)
        except json.JSONDecodeError as err:
            raise AnswerLostError(f"{method} {path}: not the service's answer") from err


class AnswerLostError(Exception):
    """haproxy answered itself (502): whether the request took effect is unknown."""


def _haproxy_config(listen_fd: int, ports: list[int]) -> str:
    """Round-robin over the processes; a process whose health check fails is taken out."""
    servers = "\n".join(
        f"  server relay{index} 127.0.0.1:{port} check" for index, port in enumerate(ports)
    )
    return f"""global
  maxconn 512
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  retries 3
  option redispatch
listen relay
  bind fd@{listen_fd}
  balance roundrobin
  option httpchk GET /v1/health
  http-check expect status 200
  default-server inter 200ms fall 1 rise 2
{servers}
"""


async def _all_up(session: aiohttp.ClientSession, haproxy: subprocess.Popen[bytes]) -> None:
    """Until haproxy answers health through every server (two answers in a row)."""
    async with asyncio.timeout(WAIT):
        healthy = 0
        while healthy < 4:
            assert haproxy.poll() is None, "haproxy exited"
            try:
                async with session.get("/v1/health") as response:
                    healthy = healthy + 1 if response.status == 200 else 0
            except aiohttp.ClientError:
                healthy = 0
            if healthy < 4:
                await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def _deployment(
    tmp_path: Path, database_url: str, broker: MosquittoBroker, *, generous: bool
) -> AsyncIterator[Deployment]:
    haproxy_bin = shutil.which("haproxy", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    assert haproxy_bin is not None, "haproxy is missing: run scripts/setup"
    (tmp_path / "secret.key").write_text(b64url_encode(os.urandom(32)))
    config = tmp_path / "relay.toml"
    config.write_text(
        relay_toml(
            database_url, broker, http_port=0, public_host=broker.host, generous_limits=generous
        )
    )
    storage = await open_storage(database_url)
    adapter = MosquittoDynsecAdapter(
        broker.host, broker.port, broker.admin_username, broker.admin_password
    )
    await adapter.connect()
    relay = Relay(Context(config=load_config(config), storage=storage, broker=adapter))
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        with contextlib.ExitStack() as stack:
            processes, logs, ports = [], [], []
            for name in ("a", "b"):
                log, port_file = tmp_path / f"serve-{name}.log", tmp_path / f"serve-{name}.port"
                process = stack.enter_context(serve_process(config, port_file, log))
                processes.append(process)
                logs.append(log)
                ports.append(await serve_port(process, port_file, log))
            haproxy_config = tmp_path / "haproxy.cfg"
            haproxy_config.write_text(_haproxy_config(listener.fileno(), ports))
            haproxy = stack.enter_context(
                started_process(
                    [haproxy_bin, "-db", "-f", str(haproxy_config)],
                    tmp_path / "haproxy.log",
                    pass_fds=(listener.fileno(),),
                )
            )
            address = listener.getsockname()
            async with aiohttp.ClientSession(
                base_url=f"http://{address[0]}:{address[1]}"
            ) as session:
                await _all_up(session, haproxy)
                yield Deployment(_BalancedApi(session, relay), processes, logs, relay)
    finally:
        listener.close()
        await adapter.aclose()
        await storage.close()


@pytest.fixture
def postgres_url(fresh_postgres: Callable[[bool], str]) -> str:
    """A fresh, migrated PostgreSQL database."""
    return fresh_postgres(True)


async def test_a_user_is_served_by_both_processes_as_by_one(
    tmp_path: Path, postgres_url: str, broker: MosquittoBroker
) -> None:
    async with _deployment(tmp_path, postgres_url, broker, generous=False) as deployment:
        api = deployment.api
        # Sign-up, household, claim and confirmation: consecutive requests, alternate processes.
        owner, household = await api.owner_household()
        device = await api.device()
        owned = await api.claim(owner, household, device)
        assert owned["household_id"] == household
        assert await connect_code(broker, owned["mqtt"]) == 0
        # Five wrong passwords (the default budget per account) spread over both processes:
        # the sixth try, with the right password, is refused by whichever process gets it.
        for _ in range(5):
            reply = await api.request(
                "POST",
                "/v1/auth/sign-in",
                json_body={"email": owner.email, "password": "wrong one!"},
            )
            assert reply.code == "invalid_credentials"
        for _ in range(2):
            reply = await api.request(
                "POST",
                "/v1/auth/sign-in",
                json_body={"email": owner.email, "password": owner.password},
            )
            assert (reply.status, reply.code) == (429, "rate_limited")


async def _claim_until_owned(
    api: Api, owner: User, household: str, device: FakeDevice, lost: list[str]
) -> bool:
    """Create and confirm a claim as Home Assistant and the device do: a lost answer (the
    process died under it: haproxy's 502) is asked again, a confirmation with the same token.
    True once the confirmation was acknowledged (200)."""
    token = None
    for _ in range(20):
        try:
            if token is None:
                started = await api.start_claim(owner, household, device)
                if started.status != 201:
                    await asyncio.sleep(0.1)
                    continue
                token = started.body["token"]
            reply = await api.confirm(device, token)
        except (aiohttp.ClientError, AnswerLostError) as err:
            lost.append(str(err))
            await asyncio.sleep(0.1)
            continue
        if reply.status == 200:
            return True
        await asyncio.sleep(0.1)
    return False


async def test_a_process_killed_during_a_claim_burst_loses_no_acknowledged_claim(
    tmp_path: Path, postgres_url: str, mosquitto_process: MosquittoProcess
) -> None:
    broker = mosquitto_process.broker
    async with _deployment(tmp_path, postgres_url, broker, generous=True) as deployment:
        api, relay = deployment.api, deployment.relay
        owner, household = await api.owner_household()
        devices = [await api.device() for _ in range(40)]
        lost: list[str] = []
        burst = [
            asyncio.create_task(_claim_until_owned(api, owner, household, device, lost))
            for device in devices
        ]
        await asyncio.sleep(0.3)
        assert not all(task.done() for task in burst)
        deployment.processes[0].kill()  # SIGKILL: no shutdown, transactions cut mid-way
        acknowledged = await asyncio.gather(*burst)
        assert lost, "no request was cut by the kill: the burst did not overlap it"
        assert deployment.processes[0].wait() == -signal.SIGKILL
        assert deployment.processes[1].poll() is None, deployment.logs[1].read_text()
        # Every claim ends acknowledged (the survivor answered the retries) ...
        assert all(acknowledged)
        async with relay.ctx.storage.read() as conn:
            owners = {
                row["device_id"]: row["household_id"]
                for row in await conn.fetch("SELECT device_id, household_id FROM devices")
            }
        assert {owners[device.id] for device in devices} == {household}
        # ... with a credential that works: the one the device would ask for now.
        for device in devices[:5] + devices[-5:]:
            credential = await fetch(api, signed(device.identity, api.now()))
            assert credential.status == 200, credential.body
            assert await connect_code(broker, credential.body["mqtt"]) == 0
        # ... and the broker holds exactly what the database says: no orphan credentials.
        report = await relay.reconcile()
        assert not report.changed, report
