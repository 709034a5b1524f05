"""Re-onboarding watchdog: reopen provisioning when the saved Wi-Fi stays down.

A router replaced, a passphrase changed: the device can no longer join, and without a screen
the owner has no way to tell it the new credentials. When ``wifi_connected`` has been false at
every check for ``after`` seconds, the watchdog calls ``on_wifi_lost`` (the agent reopens the
provisioning window for the owner's authorised session). While the outage lasts it calls again
every ``after`` seconds, since a provisioning window closes on its own; one successful check
re-arms it.

It watches only while ``applies()`` (the agent: a claimed device with a saved Wi-Fi). An
unclaimed device has nothing to re-onboard - its label window opened at boot and reopens only
by something physical (button, factory reset) - so it neither logs an outage nor claims to
reopen anything.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

from device_firmware.errors import DeviceError
from device_firmware.network.backend import NetworkBackend, NetworkError

_LOGGER = logging.getLogger(__name__)

DEFAULT_AFTER: Final = 10 * 60.0
DEFAULT_POLL_INTERVAL: Final = 15.0


class WifiWatchdog:
    """Polls ``backend.wifi_connected`` and reports an outage that lasts ``after`` seconds."""

    def __init__(
        self,
        backend: NetworkBackend,
        on_wifi_lost: Callable[[], Awaitable[None] | None],
        *,
        after: float = DEFAULT_AFTER,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        applies: Callable[[], bool] = lambda: True,
    ) -> None:
        """Configure; nothing runs until :meth:`run` (or :meth:`check`).

        Args:
            backend: where ``wifi_connected`` comes from.
            on_wifi_lost: reopens provisioning; sync or async.
            after: seconds of continuous outage before ``on_wifi_lost``.
            poll_interval: seconds between checks in :meth:`run`.
            clock: monotonic seconds (injectable for tests).
            applies: whether an outage matters now; while False nothing is checked or logged.
        """
        if after <= 0 or poll_interval <= 0:
            raise ValueError("after and poll_interval must be positive")
        self._backend = backend
        self._on_wifi_lost = on_wifi_lost
        self._after = after
        self._poll_interval = poll_interval
        self._clock = clock
        self._applies = applies
        self._down_since: float | None = None
        self._due: float | None = None

    @property
    def down_since(self) -> float | None:
        """Clock time of the first failed check of the current outage, or None."""
        return self._down_since

    async def check(self) -> bool:
        """One check; True when it called ``on_wifi_lost``."""
        now = self._clock()
        if not self._applies():
            self._down_since = self._due = None
            return False
        try:
            connected = await self._backend.wifi_connected()
        except NetworkError as err:
            if self._down_since is None:
                _LOGGER.warning("Cannot ask the network backend about Wi-Fi: %s", err)
            connected = False
        if connected:
            if self._down_since is not None:
                _LOGGER.info("Wi-Fi is back after %.0f s", now - self._down_since)
            self._down_since = self._due = None
            return False
        if self._down_since is None:
            _LOGGER.warning(
                "Wi-Fi is down; provisioning reopens if it stays down for %.0f s", self._after
            )
            self._down_since = now
            self._due = now + self._after
        if self._due is None or now < self._due:
            return False
        self._due = now + self._after
        _LOGGER.warning("Wi-Fi down for %.0f s: reopening provisioning", now - self._down_since)
        try:
            result = self._on_wifi_lost()
            if inspect.isawaitable(result):
                await result
        except DeviceError as err:
            _LOGGER.warning("Reopening provisioning failed: %s", err)
        return True

    async def run(self) -> None:
        """Check every ``poll_interval`` seconds until cancelled."""
        while True:
            await self.check()
            await asyncio.sleep(self._poll_interval)
