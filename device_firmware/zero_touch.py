"""Zero-touch: a device pre-assigned to a household in the registry claims itself over Ethernet.

Opt-in per device (``run --zero-touch URL`` or ``zero_touch_url`` in the configuration), never
automatic: an unclaimed device that is not pre-assigned would otherwise announce itself to a
service on every boot. While unclaimed, the agent retries with backoff until the service answers
"owned" (then the device is online without any Wi-Fi change) or refuses (``CLAIM_REJECTED``:
not pre-assigned; the device stays unclaimed and can be set up by hand).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from typing import Any, Final

from iob_protocol.claim import MAX_SKEW_SECONDS, ZeroTouchConfirmation
from iob_protocol.diagnostics import DiagnosticCode
from iob_protocol.identity import DeviceIdentity
from iob_protocol.sources import RandomSource, WallClock, system_random, unix_time

from .changes import StateChanges
from .errors import DiagnosedError, RelayError, StateError
from .factory import ProvisionedDevice
from .relay_client import RelayClient
from .state import MqttCredentials, Ownership, Phase, StateStore

_LOGGER = logging.getLogger(__name__)

ZERO_TOUCH_FIRST_RETRY: Final = 30.0
ZERO_TOUCH_MAX_RETRY: Final = 600.0


def sign_zero_touch(
    identity: DeviceIdentity,
    *,
    clock: WallClock = unix_time,
    random_bytes: RandomSource = system_random,
) -> dict[str, Any]:
    """The JSON object posted to ``/v1/zero-touch/confirm`` (the protocol's signed statement)."""
    statement = ZeroTouchConfirmation.create(identity, clock=clock, random_bytes=random_bytes)
    document: dict[str, Any] = json.loads(statement.to_json())
    return document


class ZeroTouch:
    """The zero-touch loop of one device against the service at ``url``."""

    def __init__(
        self,
        url: str,
        device: ProvisionedDevice,
        *,
        store: StateStore,
        changes: StateChanges,
        relay_factory: Callable[[str], RelayClient],
        notify: Callable[[], None],
        wall_clock: WallClock = unix_time,
    ) -> None:
        """``notify`` tells the controller's listeners once the device is owned."""
        self._url = url
        self._device = device
        self._store = store
        self._changes = changes
        self._relay_factory = relay_factory
        self._notify = notify
        self._wall_clock = wall_clock

    async def run(self) -> None:
        """Try until the device is claimed, the service refuses, or the loop is cancelled."""
        url = self._url
        device = self._device
        delay = ZERO_TOUCH_FIRST_RETRY
        while not self._store.current.claimed:
            seen = self._changes.version
            if self._store.current.phase is not Phase.UNCLAIMED:
                await self._changes.wait(seen)  # someone is setting the device up by hand
                continue
            try:
                await self._once(url, device)
            except RelayError as err:
                if err.code is DiagnosticCode.CLAIM_REJECTED:
                    _LOGGER.info("zero-touch: not pre-assigned (%s); set it up by hand", err)
                    await self._store.update(diagnostic=err.code, diagnostic_at=self._wall_clock())
                    return
                _LOGGER.info("zero-touch: %s; retrying in %.0f s", err, delay)
            except (DiagnosedError, StateError) as err:
                _LOGGER.info("zero-touch: %s; retrying in %.0f s", err, delay)
            else:
                return
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter
            delay = min(delay * 2, ZERO_TOUCH_MAX_RETRY)

    async def _once(self, url: str, device: ProvisionedDevice) -> None:
        async with self._relay_factory(url) as relay:
            health = await relay.health()
            skew = self._wall_clock() - health.time
            if abs(skew) > MAX_SKEW_SECONDS:
                raise RelayError(DiagnosticCode.CLOCK_SKEW, f"device clock is {skew:+d} s off")
            message = sign_zero_touch(device.identity, clock=self._wall_clock)
            outcome = await relay.confirm_zero_touch(message, device.info.device_id)
        if self._store.current.phase is not Phase.UNCLAIMED:
            return
        await self._store.update(
            phase=Phase.ONLINE,
            diagnostic=None,
            diagnostic_at=None,
            ownership=Ownership(
                household_id=outcome.household_id, service_url=url, claimed_at=self._wall_clock()
            ),
            mqtt=MqttCredentials(
                host=outcome.mqtt.host,
                port=outcome.mqtt.port,
                tls=outcome.mqtt.tls,
                username=outcome.mqtt.username,
                password=outcome.mqtt.password,
            ),
        )
        _LOGGER.info("zero-touch: owned by household %s", outcome.household_id)
        self._notify()
