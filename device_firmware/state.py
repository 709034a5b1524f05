"""The persisted onboarding state machine: a power cut at any instant leaves a valid state.

Phases::

    unclaimed ──set_wifi/set_claim──▶ provisioning ──commit──▶ committing ──owned──▶ online
        ▲                                  ▲                       │
        │                                  └── failure/timeout ────┘  (diagnostic kept)
        └──────────────── factory reset / release (from any phase) ───────────────────┘

A claimed device that changes its Wi-Fi goes ``online → committing → online`` (a failure keeps
the old network and records the diagnostic while staying online); the phone's captive page
joins a network without a claim (``provisioning → committing → provisioning``).

A release by the household (the account service answers the device's own signed credential
request with "unowned") is ``online → unclaimed`` in one write that keeps only the Wi-Fi
(:meth:`StateStore.release_claim`): the device stays on the network for its next owner.

A failed commit is the error state: ``provisioning`` with the last diagnostic code, which
``status`` and ``diagnose`` report. ``committing`` found at boot means the power went during a
commit: if the account service had already answered "owned" (the ownership is saved before the
network is made permanent) the device is online; if a confirmation was in flight the commit is
resumed; otherwise the trial network is gone with the power and the device is back in
``provisioning`` with ``TIMEOUT``.

A claim in flight (:class:`ClaimInFlight`: the token, the service, the owner secret, the broker
override and the trial Wi-Fi) is saved, still ``committing``, before the device posts its
confirmation, and cleared in the write that saves the ownership or the rollback. Found at boot,
the commit is resumed (:meth:`~device_firmware.commit.FailSafeCommit.resume`): the service
may have recorded the claim while the answer or the power was lost.

The owner secret (what the owner's Home Assistant sent with the claim; the only credential a
claimed device accepts for a session) is saved in the same write as the ownership, so no file
ever holds one without the other, and a factory reset wipes both.

Every write is atomic: a temporary file in the same directory, written and fsynced, renamed
over the old file, then the directory fsynced. A reader therefore sees the old or the new
state, never a mixture; stale temporary files of killed writers are removed on open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Self, TypeVar

from iob_protocol.canonical import b64url_decode, b64url_encode
from iob_protocol.commands import DeviceState
from iob_protocol.diagnostics import DiagnosticCode
from iob_protocol.errors import EncodingError, PayloadError
from iob_protocol.payload import OwnerSecret

from .errors import CorruptStateError, InvalidTransitionError, StateError

STATE_FORMAT: Final = "iob-device-state-v1"
STATE_FILE_MODE: Final = 0o600
_MAX_STATE_SIZE: Final = 64 * 1024
_T = TypeVar("_T")


class Phase(StrEnum):
    """Where the device is in onboarding."""

    UNCLAIMED = "unclaimed"
    PROVISIONING = "provisioning"
    COMMITTING = "committing"
    ONLINE = "online"

    @property
    def wire_state(self) -> DeviceState:
        """The coarser state the session's ``status`` command reports."""
        if self is Phase.COMMITTING:
            return DeviceState.COMMITTING
        if self is Phase.ONLINE:
            return DeviceState.COMMITTED
        return DeviceState.PROVISIONING


#: Allowed changes; any phase may go back to unclaimed (factory reset, release).
TRANSITIONS: Final[dict[Phase, frozenset[Phase]]] = {
    Phase.UNCLAIMED: frozenset(
        {Phase.UNCLAIMED, Phase.PROVISIONING, Phase.COMMITTING, Phase.ONLINE}
    ),
    Phase.PROVISIONING: frozenset({Phase.UNCLAIMED, Phase.PROVISIONING, Phase.COMMITTING}),
    Phase.COMMITTING: frozenset(
        {Phase.UNCLAIMED, Phase.PROVISIONING, Phase.COMMITTING, Phase.ONLINE}
    ),
    # online -> committing: a claimed device changing its Wi-Fi (re-onboarding).
    Phase.ONLINE: frozenset({Phase.UNCLAIMED, Phase.COMMITTING, Phase.ONLINE}),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttCredentials:
    """What the account service created on the broker for this device."""

    host: str
    port: int
    tls: bool
    username: str
    password: str = field(repr=False)
    #: SHA-256 of the broker's certificate (``set_claim``'s broker pin), if HA sent one.
    ca_pin: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form for the state file."""
        return {
            "ca_pin": None if self.ca_pin is None else b64url_encode(self.ca_pin),
            "host": self.host,
            "password": self.password,
            "port": self.port,
            "tls": self.tls,
            "username": self.username,
        }

    @classmethod
    def from_json(cls, data: Any) -> Self:
        """Inverse of :meth:`to_json`."""
        document = _object(data, "mqtt", {"ca_pin", "host", "password", "port", "tls", "username"})
        pin = document["ca_pin"]
        return cls(
            host=_text(document, "host"),
            port=_integer(document, "port"),
            tls=_boolean(document, "tls"),
            username=_text(document, "username"),
            password=_text(document, "password"),
            ca_pin=None if pin is None else _binary(pin, "ca_pin"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Ownership:
    """Who owns the device, as the account service answered."""

    household_id: str
    service_url: str
    claimed_at: int

    def to_json(self) -> dict[str, Any]:
        """JSON form for the state file."""
        return {
            "claimed_at": self.claimed_at,
            "household_id": self.household_id,
            "service_url": self.service_url,
        }

    @classmethod
    def from_json(cls, data: Any) -> Self:
        """Inverse of :meth:`to_json`."""
        document = _object(data, "ownership", {"claimed_at", "household_id", "service_url"})
        return cls(
            household_id=_text(document, "household_id"),
            service_url=_text(document, "service_url"),
            claimed_at=_integer(document, "claimed_at"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimInFlight:
    """A claim confirmation that may have reached the service: what a retry needs.

    Saved before the confirmation is posted, so that a lost answer or a power cut never leaves
    a device the service calls owned without its credential. It holds the trial Wi-Fi's
    passphrase (a resumed commit must rejoin that network) for at most the commit's life, in
    the same 0600 file as the MQTT password and the owner secret.
    """

    service_url: str
    claim_token: str = field(repr=False)
    owner_secret: bytes = field(repr=False)
    #: Device wall time of the first confirmation: the token's TTL runs from before it.
    started_at: int
    broker_host: str | None = None
    broker_port: int | None = None
    broker_pin: bytes | None = None
    #: The trial network (None: the device stays on the network it has, e.g. Ethernet).
    wifi_ssid: bytes | None = None
    wifi_passphrase: str | None = field(default=None, repr=False)
    wifi_hidden: bool = False

    def to_json(self) -> dict[str, Any]:
        """JSON form for the state file."""
        return {
            "broker_host": self.broker_host,
            "broker_pin": None if self.broker_pin is None else b64url_encode(self.broker_pin),
            "broker_port": self.broker_port,
            "claim_token": self.claim_token,
            "owner_secret": b64url_encode(self.owner_secret),
            "service_url": self.service_url,
            "started_at": self.started_at,
            "wifi_hidden": self.wifi_hidden,
            "wifi_passphrase": self.wifi_passphrase,
            "wifi_ssid": None if self.wifi_ssid is None else b64url_encode(self.wifi_ssid),
        }

    @classmethod
    def from_json(cls, data: Any) -> Self:
        """Inverse of :meth:`to_json`."""
        document = _object(
            data,
            "claim_in_flight",
            {
                "broker_host",
                "broker_pin",
                "broker_port",
                "claim_token",
                "owner_secret",
                "service_url",
                "started_at",
                "wifi_hidden",
                "wifi_passphrase",
                "wifi_ssid",
            },
        )
        pin, ssid = document["broker_pin"], document["wifi_ssid"]
        return cls(
            service_url=_text(document, "service_url"),
            claim_token=_text(document, "claim_token"),
            owner_secret=_binary(document["owner_secret"], "owner_secret"),
            started_at=_integer(document, "started_at"),
            broker_host=None if document["broker_host"] is None else _text(document, "broker_host"),
            broker_port=None
            if document["broker_port"] is None
            else _integer(document, "broker_port"),
            broker_pin=None if pin is None else _binary(pin, "broker_pin"),
            wifi_ssid=None if ssid is None else _binary(ssid, "wifi_ssid"),
            wifi_passphrase=None
            if document["wifi_passphrase"] is None
            else _text(document, "wifi_passphrase"),
            wifi_hidden=_boolean(document, "wifi_hidden"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceStateRecord:
    """Everything the agent must remember across a reboot."""

    phase: Phase = Phase.UNCLAIMED
    diagnostic: DiagnosticCode | None = None
    #: Unix time of the last diagnostic.
    diagnostic_at: int | None = None
    ownership: Ownership | None = None
    mqtt: MqttCredentials | None = None
    #: The network this agent saved (shown by ``status``; forgotten by a factory reset).
    wifi_ssid: bytes | None = None
    #: The owner's session secret (saved with the claim; never shown or logged).
    owner_secret: bytes | None = field(default=None, repr=False)
    #: A confirmation posted (or about to be) whose answer is not saved yet (``committing``).
    claim_in_flight: ClaimInFlight | None = None
    #: Incremented by every write; tells which write a reader sees.
    generation: int = 0

    @property
    def claimed(self) -> bool:
        """Whether an owner is recorded (online, or owned mid-commit)."""
        return self.ownership is not None

    def to_json(self) -> bytes:
        """The state file's bytes."""
        document = {
            "claim_in_flight": None
            if self.claim_in_flight is None
            else self.claim_in_flight.to_json(),
            "diagnostic": None if self.diagnostic is None else self.diagnostic.value,
            "diagnostic_at": self.diagnostic_at,
            "format": STATE_FORMAT,
            "generation": self.generation,
            "mqtt": None if self.mqtt is None else self.mqtt.to_json(),
            "owner_secret": None if self.owner_secret is None else b64url_encode(self.owner_secret),
            "ownership": None if self.ownership is None else self.ownership.to_json(),
            "phase": self.phase.value,
            "wifi_ssid": None if self.wifi_ssid is None else b64url_encode(self.wifi_ssid),
        }
        return json.dumps(document, sort_keys=True, indent=1).encode("utf-8") + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> Self:
        """Parse and validate the state file, refusing anything a writer never produces."""
        try:
            raw = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
            raise CorruptStateError(f"state file is not JSON: {err}") from err
        if isinstance(raw, dict) and "owner_secret" not in raw:
            # Written before owner secrets existed: a claimed device without one.
            raw = {**raw, "owner_secret": None}
        if isinstance(raw, dict) and "claim_in_flight" not in raw:
            # Written before claims in flight were saved.
            raw = {**raw, "claim_in_flight": None}
        document = _object(
            raw,
            "state",
            {
                "claim_in_flight",
                "diagnostic",
                "diagnostic_at",
                "format",
                "generation",
                "mqtt",
                "owner_secret",
                "ownership",
                "phase",
                "wifi_ssid",
            },
        )
        if document["format"] != STATE_FORMAT:
            raise CorruptStateError(f"state file format is not {STATE_FORMAT}")
        try:
            phase = Phase(_text(document, "phase"))
            diagnostic_text = document["diagnostic"]
            diagnostic = (
                None if diagnostic_text is None else DiagnosticCode(_text(document, "diagnostic"))
            )
        except ValueError as err:
            raise CorruptStateError(f"state file: {err}") from err
        diagnostic_at = document["diagnostic_at"]
        ssid = document["wifi_ssid"]
        secret = document["owner_secret"]
        record = cls(
            phase=phase,
            diagnostic=diagnostic,
            diagnostic_at=None if diagnostic_at is None else _integer(document, "diagnostic_at"),
            ownership=None
            if document["ownership"] is None
            else Ownership.from_json(document["ownership"]),
            mqtt=None if document["mqtt"] is None else MqttCredentials.from_json(document["mqtt"]),
            wifi_ssid=None if ssid is None else _binary(ssid, "wifi_ssid"),
            owner_secret=None if secret is None else _binary(secret, "owner_secret"),
            claim_in_flight=None
            if document["claim_in_flight"] is None
            else ClaimInFlight.from_json(document["claim_in_flight"]),
            generation=_integer(document, "generation"),
        )
        record.check()
        return record

    def _check_claim_in_flight(self, flight: ClaimInFlight) -> None:
        if self.phase is not Phase.COMMITTING or self.ownership is not None:
            raise CorruptStateError("a claim in flight outside an unowned commit")
        try:
            OwnerSecret(flight.owner_secret)
        except PayloadError as err:
            raise CorruptStateError(f"claim in flight: owner secret: {err}") from err

    def check(self) -> None:
        """Invariants every persisted record satisfies."""
        if self.phase is Phase.ONLINE and (self.ownership is None or self.mqtt is None):
            raise CorruptStateError("online without ownership and MQTT credentials")
        if (self.ownership is None) != (self.mqtt is None):
            raise CorruptStateError("ownership and MQTT credentials are saved together")
        if self.phase in {Phase.UNCLAIMED, Phase.PROVISIONING} and self.ownership is not None:
            raise CorruptStateError(f"{self.phase.value} with an owner")
        if self.owner_secret is not None:
            if self.ownership is None:
                raise CorruptStateError("an owner secret without an owner")
            try:
                OwnerSecret(self.owner_secret)
            except PayloadError as err:
                raise CorruptStateError(f"owner secret: {err}") from err
        if self.claim_in_flight is not None:
            self._check_claim_in_flight(self.claim_in_flight)
        if self.generation < 0:
            raise CorruptStateError("negative generation")


# --- strict JSON helpers ---------------------------------------------------------------------


def _object(data: Any, where: str, expected: set[str]) -> dict[str, Any]:
    if not isinstance(data, dict) or set(data) != expected:
        raise CorruptStateError(f"{where}: expected exactly the fields {sorted(expected)}")
    return data


def _field(document: dict[str, Any], name: str, kind: type[_T], what: str) -> _T:
    value = document[name]
    # A JSON true/false is a bool, which Python counts as an int: not an integer here.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CorruptStateError(f"{name} must be {what}")
    return value


def _text(document: dict[str, Any], name: str) -> str:
    return _field(document, name, str, "a string")


def _integer(document: dict[str, Any], name: str) -> int:
    return _field(document, name, int, "an integer")


def _boolean(document: dict[str, Any], name: str) -> bool:
    return _field(document, name, bool, "true or false")


def _binary(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise CorruptStateError(f"{name} must be a string")
    try:
        return b64url_decode(value)
    except EncodingError as err:
        raise CorruptStateError(f"{name}: {err}") from err


# --- atomic files ----------------------------------------------------------------------------

_temporary_counter = 0
_counter_lock = threading.Lock()


def _temporary_name(path: Path) -> Path:
    global _temporary_counter  # noqa: PLW0603 - a process-wide counter keeps names unique
    with _counter_lock:
        _temporary_counter += 1
        number = _temporary_counter
    return path.with_name(f".{path.name}.{os.getpid()}.{number}.tmp")


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def atomic_write(path: Path, data: bytes, *, mode: int = STATE_FILE_MODE) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new file.

    The temporary file is created with ``mode`` from its first byte (secrets are never briefly
    world-readable), in the same directory (rename is atomic only within one file system).
    """
    temporary = _temporary_name(path)
    try:
        descriptor = os.open(
            temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode
        )
        try:
            view = memoryview(data)
            while view:
                written = os.write(descriptor, view)
                view = view[written:]
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        temporary.replace(path)
        fsync_directory(path.parent)
    except OSError as err:
        temporary.unlink(missing_ok=True)
        raise StateError(f"cannot write {path}: {err}") from err


def remove_stale_temporaries(path: Path) -> int:
    """Delete temporary files a killed writer left next to ``path``; return how many."""
    removed = 0
    try:
        candidates = list(path.parent.glob(f".{path.name}.*.tmp"))
    except OSError:
        return 0
    for candidate in candidates:
        try:
            candidate.unlink()
            removed += 1
        except FileNotFoundError:
            continue
        except OSError:
            continue
    return removed


def read_small_file(path: Path, limit: int = _MAX_STATE_SIZE) -> bytes | None:
    """The file's bytes, ``None`` if it does not exist; refuses symlinks and huge files."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StateError(f"cannot open {path}: {err}") from err
    try:
        data = os.read(descriptor, limit + 1)
    except OSError as err:
        raise StateError(f"cannot read {path}: {err}") from err
    finally:
        os.close(descriptor)
    if len(data) > limit:
        raise CorruptStateError(f"{path} is larger than {limit} bytes")
    return data


# --- the store -------------------------------------------------------------------------------


class StateStore:
    """The state file, with the transition rules enforced on every write.

    Synchronous methods are for the CLI and tests; the agent uses :meth:`update`, which writes
    in a worker thread (fsync blocks) and serialises writers.
    """

    def __init__(self, path: Path) -> None:
        """Open the store; nothing is read until :meth:`load`."""
        self._path = path
        self._current: DeviceStateRecord | None = None
        self._lock = asyncio.Lock()

    @property
    def path(self) -> Path:
        """The state file."""
        return self._path

    @property
    def current(self) -> DeviceStateRecord:
        """The state as last loaded or written."""
        if self._current is None:
            return self.load()
        return self._current

    def load(self) -> DeviceStateRecord:
        """Read the state file (a missing file is a fresh, unclaimed device)."""
        data = read_small_file(self._path)
        record = DeviceStateRecord() if data is None else DeviceStateRecord.from_json(data)
        self._current = record
        return record

    def recover(self) -> DeviceStateRecord:
        """Load at boot, removing temporaries of a killed writer first."""
        remove_stale_temporaries(self._path)
        return self.load()

    def write(self, record: DeviceStateRecord) -> DeviceStateRecord:
        """Persist ``record`` (transition checked against the current state)."""
        current = self.current
        if record.phase not in TRANSITIONS[current.phase]:
            raise InvalidTransitionError(
                f"{current.phase.value} cannot become {record.phase.value}"
            )
        record = replace(record, generation=current.generation + 1)
        record.check()
        self._path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self._path, record.to_json())
        self._current = record
        return record

    def change(self, **changes: Any) -> DeviceStateRecord:
        """Persist the current record with ``changes`` applied."""
        return self.write(replace(self.current, **changes))

    async def update(self, **changes: Any) -> DeviceStateRecord:
        """:meth:`change` off the event loop, one writer at a time."""
        return await self._locked(lambda: self.change(**changes))

    async def apply(
        self, change: Callable[[DeviceStateRecord], DeviceStateRecord]
    ) -> DeviceStateRecord:
        """Persist ``change(current)``, computed under the writer lock (read-modify-write)."""
        return await self._locked(lambda: self.write(change(self.current)))

    async def replace_with(self, record: DeviceStateRecord) -> DeviceStateRecord:
        """:meth:`write` off the event loop, one writer at a time."""
        return await self._locked(lambda: self.write(record))

    async def replace_mqtt(self, expected: MqttCredentials, new: MqttCredentials) -> bool:
        """Swap the broker credential for ``new`` if the saved one is still ``expected``.

        A rotated password fetched from the account service: one atomic write, so a power cut
        leaves the old credential or the new one, never neither. Nothing is written (False) if
        the device left ``online`` or its credential changed meanwhile (a reset, a new claim).
        """

        def write() -> DeviceStateRecord:
            current = self.current
            if current.phase is not Phase.ONLINE or current.mqtt != expected:
                return current
            return self.write(replace(current, mqtt=new))

        return (await self._locked(write)).mqtt == new

    async def release_claim(self, expected: Ownership) -> bool:
        """Back to unclaimed after the account service said no household owns the device.

        One atomic write of a fresh record that keeps only the saved Wi-Fi: the claim, the
        household, the MQTT credential and the owner secret go together, so a power cut leaves
        the old record or the new one. Nothing is written (False) unless the device is still
        ``online`` for ``expected`` (the ownership the service was asked about): a late answer
        never undoes a newer claim or a commit in progress.
        """

        def write() -> DeviceStateRecord | None:
            current = self.current
            if current.phase is not Phase.ONLINE or current.ownership != expected:
                return None
            return self.write(DeviceStateRecord(wifi_ssid=current.wifi_ssid))

        async with self._lock:
            return await self._finish_in_thread(write) is not None

    async def _locked(self, write: Callable[[], DeviceStateRecord]) -> DeviceStateRecord:
        """Run ``write`` in a thread holding the lock until the thread is done.

        A cancelled caller cannot stop a thread: if the lock were released at the cancel, the
        next writer could read the state before the abandoned write lands and be overwritten
        by it. So the write always completes (or fails) before the lock is released, and the
        cancellation is delivered afterwards.
        """
        async with self._lock:
            return await self._finish_in_thread(write)

    @staticmethod
    async def _finish_in_thread(write: Callable[[], _T]) -> _T:
        """Run ``write`` in a thread; a cancellation is delivered only after it is done."""
        work = asyncio.ensure_future(asyncio.to_thread(write))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await work
            raise
