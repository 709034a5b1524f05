"""The writer the credential power-cut test kills: it swaps the saved MQTT credential back and
forth with :meth:`StateStore.replace_mqtt`, as fast as it can, until SIGKILL lands."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from device_firmware.state import DeviceStateRecord, MqttCredentials, Ownership, Phase, StateStore

OLD = MqttCredentials(
    host="broker.example", port=8883, tls=True, username="DEVICE", password="o" * 43
)
NEW = replace(OLD, password="n" * 43)
ONLINE = DeviceStateRecord(
    phase=Phase.ONLINE,
    ownership=Ownership(household_id="hh", service_url="https://relay.example", claimed_at=1),
    mqtt=OLD,
)


def swap_forever(path: str) -> None:
    """Open the store as the agent does at boot, then replace the credential until killed."""
    store = StateStore(Path(path))
    store.recover()

    async def run() -> None:
        while True:
            current = store.current.mqtt
            assert current is not None
            await store.replace_mqtt(current, NEW if current == OLD else OLD)

    asyncio.run(run())
