"""The writer the power-cut test kills: it cycles through every phase, writing as fast as it can.

Runs in a child forked from a multiprocessing fork server (so 100+ children cost a second, not a
minute of interpreter start-ups); SIGKILL lands anywhere, including inside ``atomic_write``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from iob_protocol.diagnostics import DiagnosticCode

from device_firmware.state import (
    DeviceStateRecord,
    MqttCredentials,
    Ownership,
    Phase,
    StateStore,
)


def next_record(current: DeviceStateRecord, step: int) -> DeviceStateRecord:
    """A valid successor of ``current``, with payloads of varying size."""
    phase = Phase.PROVISIONING
    if current.phase is Phase.PROVISIONING:
        phase = Phase.COMMITTING
    elif current.phase is Phase.COMMITTING:
        phase = Phase.ONLINE if step % 2 else Phase.PROVISIONING
    elif current.phase is Phase.ONLINE:
        phase = Phase.UNCLAIMED
    if phase is Phase.ONLINE:
        return DeviceStateRecord(
            phase=phase,
            ownership=Ownership(
                household_id=f"hh_{step}", service_url="https://relay.example", claimed_at=step
            ),
            mqtt=MqttCredentials(
                host="broker.example",
                port=8883,
                tls=True,
                username=f"dev-{step}",
                password="p" * (16 + step % 200),
            ),
            wifi_ssid=bytes([step % 256]) * (1 + step % 32),
            # Saved in the same write as the owner, never in a write of its own.
            owner_secret=hashlib.sha256(step.to_bytes(8, "big")).digest(),
        )
    diagnostic = (
        list(DiagnosticCode)[step % len(DiagnosticCode)] if phase is Phase.PROVISIONING else None
    )
    return DeviceStateRecord(
        phase=phase, diagnostic=diagnostic, diagnostic_at=step if diagnostic else None
    )


def write_forever(path: str) -> None:
    """Open the store as the agent does at boot, then write until killed."""
    store = StateStore(Path(path))
    store.recover()
    step = store.current.generation
    while True:
        step += 1
        store.write(next_record(store.current, step))
