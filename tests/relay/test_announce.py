"""``serve --announce``: the service's zeroconf record, found on 127.0.0.1 as HA's zeroconf would.

The approach of tests/device/test_advertise.py: zeroconf bound to 127.0.0.1 only (the test runs
in a private network namespace), a browser asking with QM questions.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TypeAlias

import aiohttp
import pytest
from zeroconf import DNSQuestionType, IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from cloud_relay.announce import SERVICE_TYPE
from tests.plugins.mosquitto import MosquittoBroker
from tests.plugins.ports import free_port
from tests.plugins.relay_toml import relay_toml

REPO = Path(__file__).parents[2]


def _write_config(directory: Path, broker: MosquittoBroker, http_port: int) -> Path:
    config = directory / "relay.toml"
    (directory / "secret.key").write_text("A" * 43 + "\n")
    config.write_text(
        relay_toml(
            f"sqlite:///{directory}/relay.db", broker, http_port=http_port, cheap_argon2=False
        )
    )
    return config


def _serve(config: Path, *args: str) -> subprocess.Popen[bytes]:
    log = (config.parent / "serve.log").open("wb")
    with log:
        return subprocess.Popen(
            [sys.executable, "-m", "cloud_relay", "--config", str(config), "serve", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )


Events: TypeAlias = asyncio.Queue[tuple[ServiceStateChange, str]]


async def _next(events: Events, process: subprocess.Popen[bytes]) -> tuple[ServiceStateChange, str]:
    """The browser's next event; fails early if the service exits instead."""
    async with asyncio.timeout(30):
        while True:
            try:
                return await asyncio.wait_for(events.get(), 0.5)
            except TimeoutError:
                assert process.poll() is None or process.returncode == 0, "serve failed"


@pytest.mark.parametrize(
    "public_url",
    [None, "https://relay.home.example:8443"],
    ids=["own-address", "tls-proxy-address"],
)
async def test_serve_announce_is_found_and_answers_then_withdrawn(
    tmp_path: Path, mosquitto_broker: MosquittoBroker, public_url: str | None
) -> None:
    port = free_port()
    config = _write_config(tmp_path, mosquitto_broker, port)
    listener = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    events: Events = asyncio.Queue()

    def on_change(
        zeroconf: object, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        del zeroconf, service_type
        events.put_nowait((state_change, name))

    browser = AsyncServiceBrowser(
        listener.zeroconf, SERVICE_TYPE, handlers=[on_change], question_type=DNSQuestionType.QM
    )
    extra = () if public_url is None else ("--announce-url", public_url)
    process = _serve(config, "--announce", "127.0.0.1", *extra)
    try:
        change, name = await _next(events, process)
        assert change is ServiceStateChange.Added
        assert name.endswith("." + SERVICE_TYPE)
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        assert await info.async_request(listener.zeroconf, 3000)
        properties = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
        expected = {"path": "/", "api": "v1", "version": "0.1.0"}
        assert properties == expected | ({} if public_url is None else {"url": public_url})
        assert info.port == port
        assert info.parsed_addresses() == ["127.0.0.1"]
        # What HA would do next: talk to the announced address and port.
        url = f"http://{info.parsed_addresses()[0]}:{info.port}{properties['path']}v1/health"
        async with aiohttp.ClientSession() as http, http.get(url) as reply:
            assert reply.status == 200
            assert (await reply.json())["status"] == "ok"
        # Stopped, the service exits cleanly and nobody answers for the record any more (a
        # fresh instance without a cache asks; goodbye packets do not cross this loopback).
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
        fresh = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        try:
            assert not await AsyncServiceInfo(SERVICE_TYPE, name).async_request(
                fresh.zeroconf, 1500
            )
        finally:
            await fresh.async_close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        await browser.async_cancel()
        await listener.async_close()
    log = (tmp_path / "serve.log").read_text()
    assert f"announcing {name} on 127.0.0.1 port {port}" in log
    assert "Traceback" not in log


def test_announcing_an_address_the_server_does_not_listen_on_is_refused(
    tmp_path: Path, mosquitto_broker: MosquittoBroker
) -> None:
    config = _write_config(tmp_path, mosquitto_broker, free_port())
    process = _serve(config, "--announce", "192.0.2.10")
    assert process.wait(60) == 1
    assert (tmp_path / "serve.log").read_text() == (
        "error: --announce 192.0.2.10, but the service listens on 127.0.0.1 only: set "
        '[http] host = "0.0.0.0" (or "192.0.2.10") in the configuration\n'
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--announce", "127.0.0.1", "--announce-url", "http://relay.home.example"),
            (
                "error: --announce-url http://relay.home.example: give the https address of the "
                "TLS proxy in front of the service, such as https://relay.home.example:8443\n"
            ),
        ),
        (
            ("--announce-url", "https://relay.home.example"),
            "error: --announce-url goes with --announce ADDRESS\n",
        ),
    ],
)
def test_an_announced_address_that_is_not_https_is_refused(
    tmp_path: Path, mosquitto_broker: MosquittoBroker, args: tuple[str, ...], message: str
) -> None:
    process = _serve(_write_config(tmp_path, mosquitto_broker, 0), *args)
    assert process.wait(60) == 1
    assert (tmp_path / "serve.log").read_text() == message
