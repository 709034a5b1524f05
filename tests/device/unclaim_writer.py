"""The writer the release power-cut test kills: it claims the record and releases it again with
:meth:`StateStore.release_claim`, as fast as it can, until SIGKILL lands."""

from __future__ import annotations

import asyncio
from pathlib import Path

from device_firmware.state import DeviceStateRecord, Ownership, Phase, StateStore

from .credential_writer import OLD

OWNERSHIP = Ownership(household_id="hh", service_url="https://relay.example", claimed_at=1)
WIFI = b"HomeNet"
CLAIMED = DeviceStateRecord(
    phase=Phase.ONLINE,
    ownership=OWNERSHIP,
    mqtt=OLD,
    wifi_ssid=WIFI,
    owner_secret=bytes(range(100, 132)),
)
#: What a release leaves: nothing of the owner, the Wi-Fi kept.
UNCLAIMED = DeviceStateRecord(wifi_ssid=WIFI)


def claim_and_release_forever(path: str) -> None:
    """Open the store as the agent does at boot, then claim and release until killed."""
    store = StateStore(Path(path))
    store.recover()

    async def run() -> None:
        while True:
            if store.current.phase is Phase.UNCLAIMED:
                await store.replace_with(CLAIMED)
            else:
                await store.release_claim(OWNERSHIP)

    asyncio.run(run())
