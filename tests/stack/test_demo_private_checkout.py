"""scripts/develop from a checkout the broker's user cannot reach: root's clone in /root.

On Debian /root is mode 0700. Run as root, Mosquitto drops to the ``mosquitto`` user, which
cannot get through such a directory to the demo's state in the checkout (``.demo/``). The demo
must start anyway, from any checkout location: the broker's data goes where that user can
reach it, and the rest of the state stays in the checkout.

The orchestrator runs from a copy of the checkout under a fresh 0700 directory, as
scripts/develop runs it (``.venv/bin/python scripts/demo_stack.py`` from the top of the
checkout, default state directory), with the copy's own sources first on the path.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from .helpers import REPO, Orchestrator, get, kill_leftovers

#: Checkout folders that are environments, caches or outputs (not copied).
_NOT_SOURCES = {".venv", ".git", ".cache", "config", "artifacts", ".demo", "build", "dist"}
_CACHES = shutil.ignore_patterns("__pycache__", "*.py[cod]", ".*_cache", ".hypothesis")


@pytest.fixture
def private_checkout() -> Iterator[Path]:
    """A copy of the checkout in a root-only 0700 directory, like a clone in /root."""
    home = Path(tempfile.mkdtemp(prefix="iob-private-home-"))
    assert stat.S_IMODE(home.stat().st_mode) == 0o700

    def ignore(folder: str, names: list[str]) -> set[str]:
        top = set(names) & _NOT_SOURCES if Path(folder) == REPO else set()
        return top | _CACHES(folder, names)

    checkout = home / "iot-onboard"
    shutil.copytree(REPO, checkout, ignore=ignore, symlinks=True)
    try:
        yield checkout
    finally:
        kill_leftovers(str(checkout))
        shutil.rmtree(home, ignore_errors=True)


async def _connect_as_admin(broker: dict[str, Any]) -> None:
    async with aiomqtt.Client(
        broker["host"],
        broker["port"],
        username=broker["admin_username"],
        password=broker["admin_password"],
        timeout=10,
    ) as client:
        await client.subscribe("$CONTROL/dynamic-security/v1/response")


def _start(checkout: Path, *args: str) -> tuple[Orchestrator, dict[str, Any]]:
    # The copy's packages before the venv's editable install (which points at the original).
    path = f"{checkout}:{checkout / 'custom_components' / 'iot_onboard'}"
    stack = Orchestrator("--no-ha", *args, checkout=checkout, env={"PYTHONPATH": path})
    try:
        return stack, stack.wait_ready()
    except BaseException:
        stack.kill()
        raise


def _stop(stack: Orchestrator) -> None:
    stack.process.send_signal(signal.SIGINT)
    assert stack.wait() == 0, stack.output


@pytest.mark.slow
def test_demo_starts_from_a_checkout_under_a_0700_directory(private_checkout: Path) -> None:
    broker_dirs: set[Path] = set()
    try:
        stack, ready = _start(private_checkout, "--devices", "1")
        try:
            broker_dir = Path(ready["broker"]["data_dir"])
            broker_dirs.add(broker_dir)
            # The broker started and accepts a connection (its dynsec admin signs in).
            asyncio.run(_connect_as_admin(ready["broker"]))
            status, _ = get(f"{ready['account_service']['url']}/v1/health")
            assert status == 200
            (device,) = ready["devices"]
            assert get(f"{device['url']}/iob/v1/info")[0] == 200
            _stop(stack)
        finally:
            stack.kill()
        # The rest of the state stays in the checkout.
        state = private_checkout / ".demo"
        assert (state / "stack.json").is_file()
        if os.geteuid() == 0:
            # As root, the broker's data lives where its user can reach it.
            assert not broker_dir.is_relative_to(private_checkout), broker_dir
            owner = pwd.getpwuid(broker_dir.stat().st_uid).pw_name
            assert owner in {"mosquitto", "nobody"}
            assert (broker_dir / "dynamic-security.json").is_file()
            assert f"{broker_dir}" in stack.output  # the start-up says where it went

        # A second run reuses the broker's data (same admin password from stack.json).
        stack, again = _start(private_checkout, "--devices", "0")
        try:
            assert Path(again["broker"]["data_dir"]) == broker_dir
            asyncio.run(_connect_as_admin(again["broker"]))
            _stop(stack)
        finally:
            stack.kill()

        # --fresh starts over: the old broker data goes with the state.
        stack, fresh = _start(private_checkout, "--devices", "0", "--fresh")
        try:
            broker_dirs.add(Path(fresh["broker"]["data_dir"]))
            asyncio.run(_connect_as_admin(fresh["broker"]))
            if broker_dir != Path(fresh["broker"]["data_dir"]):
                assert not broker_dir.exists()
            _stop(stack)
        finally:
            stack.kill()
    finally:
        for directory in broker_dirs:
            if not directory.is_relative_to(private_checkout):
                shutil.rmtree(directory, ignore_errors=True)
