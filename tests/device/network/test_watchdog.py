"""The re-onboarding watchdog with an injected clock and a scripted backend."""

from __future__ import annotations

import asyncio
import logging

import pytest
from iob_protocol.diagnostics import DiagnosticCode

from device_firmware.errors import DeviceError
from device_firmware.network.backend import (
    AccessPoint,
    NetworkBackend,
    NetworkError,
    WifiCredentials,
)
from device_firmware.watchdog import WifiWatchdog
from tests.plugins.clock import MONOTONIC_START, FakeClock

MINUTE = 60.0


class ScriptedBackend(NetworkBackend):
    """Only ``wifi_connected`` matters to the watchdog."""

    def __init__(self) -> None:
        self.connected = True
        self.broken = False
        self.checks = 0

    async def wifi_connected(self) -> bool:
        self.checks += 1
        if self.broken:
            raise NetworkError(DiagnosticCode.TIMEOUT, "NetworkManager is not running")
        return self.connected

    async def scan(self) -> list[AccessPoint]:
        raise NotImplementedError

    async def connect(self, credentials: WifiCredentials) -> WifiCredentials:
        raise NotImplementedError

    async def check_dns(self, host: str) -> None:
        raise NotImplementedError

    async def check_internet(self) -> None:
        raise NotImplementedError

    async def commit(self) -> None:
        raise NotImplementedError

    async def rollback(self) -> None:
        raise NotImplementedError

    async def forget(self) -> None:
        raise NotImplementedError

    async def start_hotspot(self, ssid: str, passphrase: str | None) -> None:
        raise NotImplementedError

    async def stop_hotspot(self) -> None:
        raise NotImplementedError


def _watchdog(
    backend: ScriptedBackend, clock: FakeClock[float], calls: list[float]
) -> WifiWatchdog:
    return WifiWatchdog(backend, lambda: calls.append(clock.now), after=10 * MINUTE, clock=clock)


async def test_fires_after_a_continuous_outage_and_not_before() -> None:
    backend, clock, calls = ScriptedBackend(), FakeClock(MONOTONIC_START), list[float]()
    watchdog = _watchdog(backend, clock, calls)
    assert not await watchdog.check()
    backend.connected = False
    for _ in range(10):  # 9 min 59 s of outage in 1-minute-ish steps
        assert not await watchdog.check()
        clock.now += 59.9
    clock.now = watchdog.down_since + 10 * MINUTE  # type: ignore[operator]
    assert await watchdog.check()
    assert calls == [clock.now]


async def test_one_good_check_restarts_the_count() -> None:
    backend, clock, calls = ScriptedBackend(), FakeClock(MONOTONIC_START), list[float]()
    watchdog = _watchdog(backend, clock, calls)
    backend.connected = False
    await watchdog.check()
    clock.now += 9 * MINUTE
    backend.connected = True
    await watchdog.check()  # back for a moment
    assert watchdog.down_since is None
    backend.connected = False
    clock.now += MINUTE
    assert not await watchdog.check()  # a new outage starts here
    clock.now += 9 * MINUTE
    assert not await watchdog.check()
    assert calls == []


async def test_repeats_while_down_and_rearms_after_recovery() -> None:
    backend, clock, calls = ScriptedBackend(), FakeClock(MONOTONIC_START), list[float]()
    watchdog = _watchdog(backend, clock, calls)
    backend.connected = False
    await watchdog.check()
    start = clock.now
    clock.now = start + 10 * MINUTE
    assert await watchdog.check()
    clock.now = start + 15 * MINUTE
    assert not await watchdog.check()
    clock.now = start + 20 * MINUTE
    assert await watchdog.check()  # the provisioning window closed meanwhile: reopen it
    backend.connected = True
    await watchdog.check()
    backend.connected = False
    clock.now += MINUTE
    await watchdog.check()
    clock.now += 10 * MINUTE
    assert await watchdog.check()
    assert len(calls) == 3


async def test_backend_errors_count_as_down_and_callback_errors_are_contained(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend, clock = ScriptedBackend(), FakeClock(MONOTONIC_START)
    backend.broken = True

    async def reopen() -> None:
        raise DeviceError("the session server is restarting")

    watchdog = WifiWatchdog(backend, reopen, after=MINUTE, clock=clock)
    await watchdog.check()
    clock.now += MINUTE
    assert await watchdog.check()
    assert "Reopening provisioning failed: the session server is restarting" in caplog.text
    assert caplog.text.count("Cannot ask the network backend") == 1  # logged once per outage


async def test_run_polls_until_cancelled() -> None:
    backend = ScriptedBackend()
    backend.connected = False
    fired = asyncio.Event()
    ticks = iter(range(1_000_000))
    watchdog = WifiWatchdog(
        backend, fired.set, after=3, poll_interval=0.001, clock=lambda: float(next(ticks))
    )
    task = asyncio.create_task(watchdog.run())
    async with asyncio.timeout(5):
        await fired.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert backend.checks >= 4


def test_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="positive"):
        WifiWatchdog(ScriptedBackend(), lambda: None, after=0)


async def test_an_unclaimed_device_logs_no_outage_and_reopens_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The agent watches only a claimed device with a saved Wi-Fi: an unclaimed one offline
    for ten minutes and more must not log "reopening provisioning" (it reopens nothing)."""
    backend, clock, calls = ScriptedBackend(), FakeClock(MONOTONIC_START), list[float]()
    claimed = [False]
    watchdog = WifiWatchdog(
        backend,
        lambda: calls.append(clock.now),
        after=10 * MINUTE,
        clock=clock,
        applies=lambda: claimed[0],
    )
    backend.connected = False
    caplog.set_level(logging.DEBUG, "device_firmware.watchdog")
    for _ in range(30):
        assert not await watchdog.check()
        clock.now += MINUTE
    assert calls == []
    assert not caplog.records, caplog.text
    claimed[0] = True  # claimed meanwhile: an outage counts from now
    assert not await watchdog.check()
    clock.now += 10 * MINUTE
    assert await watchdog.check()
    assert calls == [clock.now]
    assert "reopening provisioning" in caplog.text
