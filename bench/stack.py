"""The demo stack (scripts/demo_stack.py) as the benchmarks start it.

:class:`BenchStack` is the demo's own :class:`~demo_stack.Stack` with two changes: the account
service gets rate limits generous enough for hundreds of claims from one address (the defaults
stop a person's 31st claim in ten minutes, which is right for people and wrong for a benchmark),
and device agents are started in batches just before Home Assistant (100 Python processes
starting at once starve a 2-core machine; the demo caps itself at 20). Everything else -
Mosquitto with dynamic security, the account service, factory-provisioned agents, a real Home
Assistant with the integration - is exactly what ``scripts/develop`` runs.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, override

import aiohttp
from clients import IMPORT_BATCH, HaApi, RelayApi
from common import BenchError, say
from demo.isolation import listen
from demo.processes import Child, Signals, StackError, Supervisor
from demo_stack import (
    HA_USERS,
    LOOPBACK,
    MAKER_ACCOUNT,
    RECORDS_FILE,
    SERVICE_START_TIMEOUT,
    DeviceFacts,
    Stack,
)
from demo_stack import _parse as parse_demo_args

from tests.stack.helpers import get, ha_token

#: Budgets for the benchmark's account service: far above anything a run reaches.
GENEROUS_LIMITS: Final = """
# Added by bench/stack.py: a benchmark claims hundreds of devices from one address.
[limits]
sign_in_per_account = "100000/60"
sign_in_per_address = "100000/60"
sign_up_per_address = "100000/60"
claims_per_account = "100000/60"
claims_per_address = "100000/60"
claims_per_device = "100000/60"
confirm_per_address = "100000/60"
confirm_per_device = "100000/60"
"""


class BenchStack(Stack):
    """The demo stack with generous rate limits and device agents added in batches."""

    #: (count, batch): agents started before Home Assistant (set before :meth:`start`).
    agents_before_ha: tuple[int, int] = (0, 1)

    @override
    def _start_ha(self, supervisor: Supervisor, users_step: Child | None) -> Child:
        # As in the demo, the agents come first: Home Assistant starts with every device
        # advertising, and its CPU is not shared with 100 agents' start-up while it boots.
        count, batch = self.agents_before_ha
        if count:
            self.add_agents(count, batch)
        return super()._start_ha(supervisor, users_step)

    @override
    def _write_relay_config(self) -> Path:
        path = super()._write_relay_config()
        with path.open("a", encoding="utf-8") as handle:
            handle.write(GENEROUS_LIMITS)
        return path

    @property
    def relay_url(self) -> str:
        """The account service's base URL."""
        return f"http://{LOOPBACK}:{self.ports['relay']}"

    @property
    def ha_url(self) -> str:
        """Home Assistant's base URL."""
        return f"http://{LOOPBACK}:{self.ports['homeassistant']}"

    def add_agents(self, count: int, batch: int) -> list[DeviceFacts]:
        """Factory-provision, register and start ``count`` device agents, ``batch`` at a time."""
        supervisor = self.supervisor
        if supervisor is None:
            raise BenchError("start the stack before adding devices")
        first = len(self.devices) + 1
        added: list[DeviceFacts] = []
        for start in range(first, first + count, batch):
            indexes = range(start, min(start + batch, first + count))
            for index in indexes:
                # Port 0: each agent binds a free port itself and reports it in its port file
                # (wait_for_device). Choosing ports here by opening and closing a socket let
                # two agents of one batch get the same port.
                self.ports[f"device-{index}"] = 0
            steps = [self._start_factory(supervisor, index) for index in indexes]
            supervisor.wait_all([s for s in steps if s is not None], SERVICE_START_TIMEOUT)
            records = [
                json.loads(line)
                for index in indexes
                for line in (self.layout.device(index) / "label" / RECORDS_FILE)
                .read_text(encoding="utf-8")
                .splitlines()
                if line.strip()
            ]
            self.import_records(records)
            agents = [(index, self._start_device(supervisor, index)) for index in indexes]
            for index, agent in agents:
                self.wait_for_device(supervisor, index, agent, timeout=SERVICE_START_TIMEOUT * 2)
                facts = self._device_facts(index, agent)
                self.devices.append(facts)
                added.append(facts)
        return added

    def maker_token(self) -> str:
        """An access token of the service administrator (imports factory records)."""
        status, body = get(
            f"{self.relay_url}/v1/auth/sign-in",
            {"email": MAKER_ACCOUNT.email, "password": MAKER_ACCOUNT.password},
        )
        if status != 200:
            raise BenchError(f"the service administrator cannot sign in: HTTP {status} {body!r}")
        token: str = json.loads(body)["access_token"]
        return token

    def import_records(self, records: list[dict[str, Any]]) -> None:
        """Put factory records into the account service's registry (its admin API)."""
        token = self.maker_token()
        for start in range(0, len(records), IMPORT_BATCH):
            status, body = get(
                f"{self.relay_url}/v1/admin/registry/import",
                {"records": records[start : start + IMPORT_BATCH]},
                token=token,
            )
            if status != 200:
                raise BenchError(f"registry import refused: HTTP {status} {body!r}")


@contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    """``env`` in this process's environment while the block runs (the stack copies it into
    its children's at its start), then as before."""
    before = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def running_stack(
    *,
    with_ha: bool = True,
    label: str = "bench",
    agents: int = 0,
    batch: int = 10,
    env: Mapping[str, str] | None = None,
) -> Iterator[BenchStack]:
    """A fresh stack in a temporary directory, with ``agents`` device agents started before
    Home Assistant, ``batch`` at a time; stopped and removed after. ``env``: added to the
    environment of every process the stack starts (as the demo's orchestrator inherits it)."""
    # Not tmp_path-like 0700 dirs under root's home: the broker drops to the mosquitto user.
    state = Path(tempfile.mkdtemp(prefix=f"iob-{label}-"))
    ha_sock = listen(0)
    if ha_sock is None:
        raise BenchError(f"no free port on {LOOPBACK}")
    ha_port = int(ha_sock.getsockname()[1])
    ha_sock.close()
    # The demo's own command line, so options it gains later keep their defaults.
    args = parse_demo_args(
        [
            "--state-dir",
            str(state),
            "--ha-port",
            str(ha_port),
            "--devices",
            "0",
            # The benchmark isolated itself (common.isolate) before anything started.
            "--no-isolation",
            *([] if with_ha else ["--no-ha"]),
        ]
    )
    signals = Signals()
    signals.install()
    stack = BenchStack(args, io.StringIO(), signals)
    stack.agents_before_ha = (agents, batch)
    started = time.monotonic()
    try:
        try:
            with _environment(env or {}):
                stack.start()
        except StackError as err:
            raise BenchError(f"the stack did not start: {err}") from err
        say(f"stack up in {time.monotonic() - started:.1f} s (state in {state})")
        yield stack
    except BaseException:
        signals.stopping()
        stack.stop()
        print(f"the benchmark failed; the stack's logs are kept in {state}/logs", flush=True)
        raise
    signals.stopping()
    stack.stop()
    shutil.rmtree(state, ignore_errors=True)


@dataclass(slots=True)
class Household:
    """A bench account's household, with Home Assistant's entry for it."""

    relay: RelayApi
    household_id: str
    email: str
    password: str
    ha: HaApi


async def household_in_ha(
    stack: BenchStack, session: aiohttp.ClientSession, name: str
) -> Household:
    """A new account and household at the account service, added to Home Assistant."""
    email, password = f"{name}@bench.invalid", "benchmark password"
    relay = RelayApi(stack.relay_url, session)
    say(f"account and household {name!r}, Home Assistant entry")
    await relay.sign_up(email, password)
    household_id = await relay.create_household(name)
    owner = next(user for user in HA_USERS if user.admin)
    token = await asyncio.to_thread(ha_token, stack.ha_url, owner.username, owner.password)
    ha = HaApi(stack.ha_url, token, session)
    await ha.add_household_entry(stack.relay_url, email, password)
    return Household(relay, household_id, email, password, ha)


async def maker_api(stack: BenchStack, session: aiohttp.ClientSession) -> RelayApi:
    """The service administrator, signed in (imports factory records)."""
    maker = RelayApi(stack.relay_url, session)
    await maker.sign_in(MAKER_ACCOUNT.email, MAKER_ACCOUNT.password)
    return maker
