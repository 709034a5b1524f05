"""The persisted state machine: transitions, strict parsing, and power cuts at any instant."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from iob_protocol.commands import DeviceState
from iob_protocol.diagnostics import DiagnosticCode

from device_firmware.errors import CorruptStateError, InvalidTransitionError, StateError
from device_firmware.state import (
    ClaimInFlight,
    DeviceStateRecord,
    MqttCredentials,
    Ownership,
    Phase,
    StateStore,
    atomic_write,
)

from . import state_writer
from .conftest import TEST_PASSWORD
from .power_cut import kill_mid_write, writer_context

OWNERSHIP = Ownership(household_id="hh", service_url="https://relay.example", claimed_at=1)
MQTT = MqttCredentials(
    host="b", port=1883, tls=False, username="u", password=TEST_PASSWORD, ca_pin=b"x" * 32
)


def test_missing_file_is_a_fresh_unclaimed_device(tmp_path: Path) -> None:
    record = StateStore(tmp_path / "state.json").load()
    assert record == DeviceStateRecord()
    assert record.phase.wire_state is DeviceState.PROVISIONING


def test_round_trip_and_generation(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    store.change(phase=Phase.PROVISIONING)
    store.change(phase=Phase.COMMITTING)
    written = store.change(phase=Phase.ONLINE, ownership=OWNERSHIP, mqtt=MQTT, wifi_ssid=b"\xffX")
    assert written.generation == 3
    again = StateStore(tmp_path / "state.json").load()
    assert again == written
    assert again.phase.wire_state is DeviceState.COMMITTED
    assert (tmp_path / "state.json").stat().st_mode & 0o777 == 0o600
    assert "p" not in repr(again.mqtt).split("password")[-1][:3]  # the password is not in repr


def test_transitions_are_enforced(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    with pytest.raises(CorruptStateError):
        store.change(phase=Phase.ONLINE)  # online needs an owner
    store.change(phase=Phase.PROVISIONING)
    with pytest.raises(InvalidTransitionError):
        store.change(phase=Phase.ONLINE, ownership=OWNERSHIP, mqtt=MQTT)
    with pytest.raises(CorruptStateError):
        store.change(phase=Phase.COMMITTING, ownership=OWNERSHIP)  # owner without credentials
    store.change(phase=Phase.COMMITTING)
    failed = store.change(
        phase=Phase.PROVISIONING, diagnostic=DiagnosticCode.DNS_FAILED, diagnostic_at=5
    )
    assert failed.diagnostic is DiagnosticCode.DNS_FAILED
    assert store.change(phase=Phase.UNCLAIMED).phase is Phase.UNCLAIMED


SECRET = bytes(range(1, 33))


def test_owner_secret_is_saved_with_the_owner_and_never_shown(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    written = store.change(phase=Phase.ONLINE, ownership=OWNERSHIP, mqtt=MQTT, owner_secret=SECRET)
    again = StateStore(tmp_path / "state.json").load()
    assert again == written
    assert again.owner_secret == SECRET
    assert SECRET.hex() not in repr(again)
    assert "owner_secret" not in repr(again)
    # A reset record forgets it.
    assert store.write(DeviceStateRecord()).owner_secret is None


def _load_without(tmp_path: Path, line: bytes) -> tuple[DeviceStateRecord, DeviceStateRecord]:
    """A claimed record written without ``line`` (a field older firmware did not write) and
    what the store loads from that file."""
    record = DeviceStateRecord(phase=Phase.ONLINE, ownership=OWNERSHIP, mqtt=MQTT)
    legacy = record.to_json().replace(line, b"")
    assert line.split(b":")[0].strip() not in legacy  # the field's name, quoted
    path = tmp_path / "state.json"
    path.write_bytes(legacy)
    return record, StateStore(path).load()


def test_state_files_from_before_owner_secrets_still_load(tmp_path: Path) -> None:
    """A claimed device updated from older firmware: owned, but without an owner secret."""
    _record, loaded = _load_without(tmp_path, b' "owner_secret": null,\n')
    assert (loaded.claimed, loaded.owner_secret) == (True, None)


def _refused_everywhere(tmp_path: Path, record: DeviceStateRecord) -> None:
    """``record`` fails its check, and a state file holding it does not load."""
    with pytest.raises(CorruptStateError):
        record.check()
    path = tmp_path / "state.json"
    path.write_bytes(record.to_json())
    with pytest.raises(CorruptStateError):
        StateStore(path).load()


@pytest.mark.parametrize(
    "record",
    [
        DeviceStateRecord(owner_secret=SECRET),  # a secret without an owner
        DeviceStateRecord(
            phase=Phase.ONLINE, ownership=OWNERSHIP, mqtt=MQTT, owner_secret=bytes(32)
        ),
        DeviceStateRecord(phase=Phase.ONLINE, ownership=OWNERSHIP, mqtt=MQTT, owner_secret=b"x"),
    ],
)
def test_owner_secret_invariants(tmp_path: Path, record: DeviceStateRecord) -> None:
    _refused_everywhere(tmp_path, record)


FLIGHT = ClaimInFlight(
    service_url="https://relay.example",
    claim_token="tok_" + "A" * 40,
    owner_secret=SECRET,
    started_at=1_800_000_000,
    broker_host="broker.lan",
    broker_port=8883,
    broker_pin=b"p" * 32,
    wifi_ssid=b"\xffHome",
    wifi_passphrase="correct horse battery",  # noqa: S106 - a test network's password
    wifi_hidden=True,
)


def test_claim_in_flight_round_trip_and_cleared_with_the_outcome(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    store.change(phase=Phase.PROVISIONING)
    store.change(phase=Phase.COMMITTING)
    written = store.change(claim_in_flight=FLIGHT)
    again = StateStore(tmp_path / "state.json").load()
    assert again == written
    assert again.claim_in_flight == FLIGHT
    for secret in ("tok_", "correct horse", SECRET.hex()):
        assert secret not in repr(again)
    # Saved in the same write as the ownership, which drops it: nothing of it stays.
    owned = store.change(
        phase=Phase.ONLINE,
        ownership=OWNERSHIP,
        mqtt=MQTT,
        owner_secret=SECRET,
        claim_in_flight=None,
    )
    assert owned.claim_in_flight is None
    assert b"correct horse" not in (tmp_path / "state.json").read_bytes()


def test_state_files_from_before_claims_in_flight_still_load(tmp_path: Path) -> None:
    record, loaded = _load_without(tmp_path, b'"claim_in_flight": null,\n ')
    assert loaded == record


@pytest.mark.parametrize(
    "record",
    [
        DeviceStateRecord(phase=Phase.PROVISIONING, claim_in_flight=FLIGHT),
        DeviceStateRecord(phase=Phase.UNCLAIMED, claim_in_flight=FLIGHT),
        DeviceStateRecord(
            phase=Phase.COMMITTING, ownership=OWNERSHIP, mqtt=MQTT, claim_in_flight=FLIGHT
        ),
        DeviceStateRecord(
            phase=Phase.COMMITTING,
            claim_in_flight=ClaimInFlight(
                service_url="https://relay.example",
                claim_token="t",  # noqa: S106 - a test token
                owner_secret=b"short",
                started_at=1,
            ),
        ),
    ],
)
def test_claim_in_flight_invariants(tmp_path: Path, record: DeviceStateRecord) -> None:
    _refused_everywhere(tmp_path, record)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{",
        b"[]",
        b'{"format": "iob-device-state-v1"}',
        b"\xff\xfe",
        DeviceStateRecord().to_json().replace(b'"unclaimed"', b'"hacked"'),
        DeviceStateRecord().to_json().replace(b'"generation": 0', b'"generation": -1'),
        DeviceStateRecord().to_json().replace(b'"diagnostic": null', b'"diagnostic": "NOPE"'),
        DeviceStateRecord().to_json().replace(b'"phase": "unclaimed"', b'"phase": "online"'),
        DeviceStateRecord().to_json().replace(b"iob-device-state-v1", b"other"),
        DeviceStateRecord().to_json().replace(b'"owner_secret": null', b'"owner_secret": 5'),
        DeviceStateRecord().to_json().replace(b'"owner_secret": null', b'"owner_secret": "%"'),
        b"x" * 70_000,
    ],
)
def test_corrupt_files_are_refused_not_reset(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with pytest.raises(CorruptStateError):
        StateStore(path).load()


def test_atomic_write_failure_leaves_old_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    atomic_write(path, b"old")
    (tmp_path / "sub").mkdir()
    with pytest.raises(StateError):
        atomic_write(tmp_path / "missing" / "state.json", b"new")
    assert path.read_bytes() == b"old"
    assert list(tmp_path.glob(".*.tmp")) == []


def test_symlinked_state_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_bytes(DeviceStateRecord().to_json())
    (tmp_path / "state.json").symlink_to(target)
    with pytest.raises(StateError):
        StateStore(tmp_path / "state.json").load()


async def test_async_updates_are_serialised(tmp_path: Path) -> None:

    store = StateStore(tmp_path / "state.json")
    await asyncio.gather(
        *(store.update(diagnostic=code, diagnostic_at=n) for n, code in enumerate(DiagnosticCode))
    )
    assert store.load().generation == len(DiagnosticCode)


def test_power_cut_at_random_points_always_leaves_a_valid_state(tmp_path: Path) -> None:
    """SIGKILL a writer 120 times at random instants; every restart finds a valid state that is
    never older than the previous one, and stale temporary files are cleaned up."""
    path = tmp_path / "state.json"
    context = writer_context("tests.device.state_writer")
    rng = random.Random(20261123)  # noqa: S311 - reproducible kill times, not crypto
    last_generation = 0
    killed_mid_write = 0
    progressed = 0
    iterations = 120
    for _ in range(iterations):
        killed_mid_write += kill_mid_write(
            context, state_writer.write_forever, path, last_generation, rng, tries=2000
        )
        store = StateStore(path)
        record = store.recover()  # the restart: must never raise
        record.check()
        assert record.generation >= last_generation
        progressed += record.generation > last_generation
        last_generation = record.generation
        assert list(tmp_path.glob(".state.json.*.tmp")) == []
    # The test is only meaningful if kills really landed inside writes and writes happened.
    assert progressed == iterations
    assert killed_mid_write > 0
