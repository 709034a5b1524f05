"""Factory reset: the device forgets its owner, its owner secret, its Wi-Fi and MQTT credentials.

The state is replaced by a fresh record in one atomic write, so the owner secret goes with the
claim: afterwards only the label opens a session again.

Order matters: the retained MQTT messages are cleared first (that needs the device's broker
credentials), then the account service is told (the signed release revokes those credentials),
then the Wi-Fi is forgotten and the state wiped. The service and the broker are told *when
reachable*: a device reset offline still resets, and the owner can release it from the service.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from iob_protocol.claim import ReleaseNotice, ReleaseReason
from iob_protocol.identity import DeviceIdentity
from iob_protocol.sources import WallClock, unix_time

from .commit import RelayFactory
from .errors import DeviceError
from .network.backend import NetworkBackend, NetworkError
from .state import DeviceStateRecord, StateStore

_LOGGER = logging.getLogger(__name__)
#: Each best-effort step of a reset is bounded: the button must always work.
STEP_TIMEOUT: Final = 20.0

ClearRetained: TypeAlias = Callable[[DeviceStateRecord], Awaitable[None]]


@dataclass(slots=True)
class ResetReport:
    """What the reset managed to do (``None``: nothing to do for that step)."""

    retained_cleared: bool | None = None
    released: bool | None = None
    wifi_forgotten: bool = False
    problems: list[str] = field(default_factory=list)


async def factory_reset(
    *,
    identity: DeviceIdentity,
    store: StateStore,
    backend: NetworkBackend,
    relay_factory: RelayFactory,
    clear_retained: ClearRetained | None,
    wall_clock: WallClock = unix_time,
) -> ResetReport:
    """Wipe Wi-Fi, claim and MQTT credentials; tell the broker and the service when reachable."""
    report = ResetReport()
    record = store.current
    if record.mqtt is not None and clear_retained is not None:
        try:
            async with asyncio.timeout(STEP_TIMEOUT):
                await clear_retained(record)
            report.retained_cleared = True
        except (DeviceError, OSError, TimeoutError) as err:
            report.retained_cleared = False
            report.problems.append(f"retained MQTT messages not cleared: {err}")
    if record.ownership is not None:
        notice = ReleaseNotice.create(identity, ReleaseReason.FACTORY_RESET, clock=wall_clock)
        try:
            async with relay_factory(record.ownership.service_url) as relay:
                async with asyncio.timeout(STEP_TIMEOUT):
                    await relay.release(notice)
            report.released = True
        except (DeviceError, TimeoutError) as err:
            report.released = False
            report.problems.append(
                f"account service not told ({err}); the owner can release the device there"
            )
    try:
        async with asyncio.timeout(STEP_TIMEOUT):
            await backend.forget()
        report.wifi_forgotten = True
    except (NetworkError, TimeoutError) as err:
        report.problems.append(f"saved Wi-Fi not removed: {err}")
    await store.replace_with(DeviceStateRecord())
    for problem in report.problems:
        _LOGGER.warning("factory reset: %s", problem)
    _LOGGER.info("factory reset done: the device is unclaimed")
    return report
