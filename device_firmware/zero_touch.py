"""Zero-touch: a device pre-assigned to a household in the registry claims itself over Ethernet.

Opt-in per device (``run --zero-touch URL`` or ``zero_touch_url`` in the configuration), never
automatic: an unclaimed device that is not pre-assigned would otherwise announce itself to a
service on every boot. While unclaimed, the agent retries with backoff until the service answers
"owned" (then the device is online without any Wi-Fi change) or refuses (``CLAIM_REJECTED``:
not pre-assigned; the device stays unclaimed and can be set up by hand).
"""

from __future__ import annotations

import json
from typing import Any

from iob_protocol.claim import ZeroTouchConfirmation
from iob_protocol.identity import DeviceIdentity
from iob_protocol.sources import RandomSource, WallClock, system_random, unix_time


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
