"""The last onboarding attempts, step by step with timings, for ``iob-device attempts``.

Support's "watch onboarding" view: each attempt starts at a handshake (or a commit in a session
whose last attempt ended, or a claim resumed at boot) and records its steps with the seconds
since it began and a result: ``ok``, a kind (``claim``, ``wifi_change``), or a code (a
``DiagnosticCode`` or the handshake's error code). Nothing else is stored: no SSID, passphrase,
setup code, claim token, owner secret or address, so the file may be shown to anyone.

The file (``attempts.json`` next to ``state.json``) holds the last :data:`MAX_ATTEMPTS` attempts
of at most :data:`MAX_STEPS` steps each, written atomically with mode 0600 like the state. The
writes happen off the event loop in one writer task that always writes the newest snapshot, so
a step never waits for a disk. A file that cannot be read or parsed is ignored with one log line
(the log starts empty); a write that fails is one log line too: onboarding never depends on it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

# Re-exported: the agent's modules name the steps from here.
from iob_protocol.attempts import OK as OK  # noqa: PLC0414
from iob_protocol.attempts import Step as Step  # noqa: PLC0414
from iob_protocol.sources import MonotonicClock, WallClock, monotonic, unix_time

from .errors import StateError
from .state import STATE_FILE_MODE, atomic_write, read_small_file

_LOGGER = logging.getLogger(__name__)

ATTEMPTS_FORMAT: Final = "iob-device-attempts-v1"
#: Attempts kept (the oldest goes first).
MAX_ATTEMPTS: Final = 10
#: Steps kept per attempt (a retried claim cannot grow the file).
MAX_STEPS: Final = 32
_MAX_FILE_SIZE: Final = 64 * 1024
#: What a result or a transport may be: a code, never free text (no secret can hide in one).
_TOKEN: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")


#: Steps after which the attempt is over; the next step starts a new attempt.
_ENDS: Final = frozenset({Step.HANDSHAKE_FAILED, Step.ROLLED_BACK, Step.MQTT_ONLINE})


@dataclass(frozen=True, slots=True)
class StepRecord:
    """A step, when (seconds since the attempt began) and its result."""

    step: Step
    seconds: float
    result: str = OK

    def to_json(self) -> dict[str, Any]:
        """JSON form for the file."""
        return {"result": self.result, "step": self.step.value, "t": round(self.seconds, 3)}


@dataclass(frozen=True, slots=True)
class Attempt:
    """One onboarding attempt."""

    number: int
    #: Unix time the attempt began.
    started_at: int
    #: How it began: ``lan``, ``ble``, ``session`` (a new commit in an open session), ``boot``.
    via: str
    steps: tuple[StepRecord, ...] = ()

    @property
    def ended(self) -> bool:
        """Whether the attempt is over (failed, rolled back or online)."""
        return bool(self.steps) and self.steps[-1].step in _ENDS

    def to_json(self) -> dict[str, Any]:
        """JSON form for the file."""
        return {
            "number": self.number,
            "started_at": self.started_at,
            "steps": [step.to_json() for step in self.steps],
            "via": self.via,
        }

    @classmethod
    def from_json(cls, data: Any) -> Attempt:
        """Inverse of :meth:`to_json`; raises ``ValueError`` for anything a writer never wrote."""
        if not isinstance(data, dict) or set(data) != {"number", "started_at", "steps", "via"}:
            raise ValueError("an attempt needs exactly number, started_at, steps and via")
        number, started_at, via, steps = (
            data["number"],
            data["started_at"],
            data["via"],
            data["steps"],
        )
        if not _is_int(number) or not _is_int(started_at):
            raise ValueError("number and started_at are integers")
        if not isinstance(steps, list) or len(steps) > MAX_STEPS:
            raise ValueError(f"steps is a list of at most {MAX_STEPS}")
        return cls(number, started_at, _token(via), tuple(_step(step) for step in steps))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _token(value: Any) -> str:
    if not isinstance(value, str) or _TOKEN.fullmatch(value) is None:
        raise ValueError(f"not a code: {str(value)[:40]!r}")
    return value


def _step(data: Any) -> StepRecord:
    if not isinstance(data, dict) or set(data) != {"result", "step", "t"}:
        raise ValueError("a step needs exactly result, step and t")
    seconds = data["t"]
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
        raise ValueError("t is a non-negative number")
    return StepRecord(Step(data["step"]), float(seconds), _token(data["result"]))


def encode(attempts: tuple[Attempt, ...]) -> bytes:
    """The file's bytes."""
    document = {"attempts": [attempt.to_json() for attempt in attempts], "format": ATTEMPTS_FORMAT}
    return json.dumps(document, sort_keys=True, indent=1).encode("utf-8") + b"\n"


def decode(data: bytes) -> tuple[Attempt, ...]:
    """Parse the file; raises ``ValueError`` if it is not one a writer produced."""
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, RecursionError) as err:
        raise ValueError(str(err)) from err
    if not isinstance(document, dict) or document.get("format") != ATTEMPTS_FORMAT:
        raise ValueError(f"not an {ATTEMPTS_FORMAT} file")
    attempts = document.get("attempts")
    if not isinstance(attempts, list) or len(attempts) > MAX_ATTEMPTS:
        raise ValueError(f"attempts is a list of at most {MAX_ATTEMPTS}")
    return tuple(Attempt.from_json(attempt) for attempt in attempts)


def read_attempts(path: Path, *, warn: bool = True) -> tuple[Attempt, ...]:
    """The attempts in ``path``; none if it is missing, or unreadable (one log line if ``warn``)."""
    try:
        data = read_small_file(path, _MAX_FILE_SIZE)
        return () if data is None else decode(data)
    except (StateError, ValueError) as err:
        if not warn:
            return ()
        _LOGGER.warning(
            "ignoring the onboarding attempts file %s (%s); the agent writes a new one at the "
            "next attempt",
            path,
            err,
        )
        return ()


def transport(origin: str | None) -> str:
    """The transport of a session origin (``lan:<address>`` -> ``lan``); never the address."""
    if origin is None:
        return "local"
    name = origin.split(":", 1)[0]
    return name if _TOKEN.fullmatch(name) else "other"


class AttemptLog:
    """Records the steps of the last onboarding attempts; persists them if given a path."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        attempts: tuple[Attempt, ...] = (),
        clock: MonotonicClock = monotonic,
        wall_clock: WallClock = unix_time,
    ) -> None:
        """``path`` None: kept in memory only (tests of single parts, tools)."""
        self._path = path
        self._attempts = attempts[-MAX_ATTEMPTS:]
        self._clock = clock
        self._wall_clock = wall_clock
        #: Monotonic start of the attempt being recorded (None: none yet in this process).
        self._started: float | None = None
        self._dirty = False
        self._writer: asyncio.Task[None] | None = None
        self._write_failed = False

    @classmethod
    def load(cls, path: Path, **kwargs: Any) -> AttemptLog:
        """The log of ``path`` (blocking: call it off the event loop)."""
        return cls(path, attempts=read_attempts(path), **kwargs)

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        """The attempts, oldest first."""
        return self._attempts

    @property
    def current(self) -> Attempt | None:
        """The attempt this process is recording, if any (one from the file is never resumed)."""
        return self._attempts[-1] if self._started is not None and self._attempts else None

    def begin(self, via: str) -> None:
        """Start a new attempt (the oldest beyond :data:`MAX_ATTEMPTS` is dropped)."""
        number = self._attempts[-1].number + 1 if self._attempts else 1
        attempt = Attempt(number, self._wall_clock(), _token_or_other(via))
        self._attempts = (*self._attempts, attempt)[-MAX_ATTEMPTS:]
        self._started = self._clock()
        self._schedule()

    def record(self, step: Step, result: str = OK, *, via: str = "session") -> None:
        """Add ``step`` to the current attempt.

        A handshake, or a step after an ended attempt, starts a new one (``via``).
        """
        current = self.current
        if step is Step.HANDSHAKE_STARTED or current is None or current.ended:
            self.begin(via)
        self._add(step, result)

    def record_if_open(self, step: Step, result: str = OK, *, after: Step) -> None:
        """Add ``step`` only if the current attempt's last step is ``after``.

        So MQTT online ends an attempt after its commit, not at every reconnect.
        """
        current = self.current
        if current is not None and current.steps and current.steps[-1].step is after:
            self._add(step, result)

    def _add(self, step: Step, result: str) -> None:
        current = self.current
        if current is None or self._started is None or len(current.steps) >= MAX_STEPS:
            return
        seconds = max(0.0, self._clock() - self._started)
        record = StepRecord(step, seconds, _token_or_other(result))
        self._attempts = (*self._attempts[:-1], replace(current, steps=(*current.steps, record)))
        self._schedule()

    # --- persistence ----------------------------------------------------------------------

    def _schedule(self) -> None:
        if self._path is None:
            return
        self._dirty = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write_now()  # no loop (a tool): write in place
            return
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_loop(), name="iob-attempts")

    async def _write_loop(self) -> None:
        while self._dirty:
            self._dirty = False
            data = encode(self._attempts)
            # A cancelled caller never stops a started write: it lands before the task ends.
            await asyncio.shield(asyncio.to_thread(self._write, data))

    def _write_now(self) -> None:
        self._dirty = False
        self._write(encode(self._attempts))

    def _write(self, data: bytes) -> None:
        path = self._path
        if path is None:
            return
        try:
            atomic_write(path, data, mode=STATE_FILE_MODE)
        except StateError as err:
            if not self._write_failed:  # one line, not one per step
                _LOGGER.warning("cannot save the onboarding attempts (%s); carrying on", err)
            self._write_failed = True
        else:
            self._write_failed = False

    async def aclose(self) -> None:
        """Wait until the newest snapshot is on disk."""
        writer = self._writer
        if writer is not None:
            await asyncio.wait({writer})


def _token_or_other(value: str) -> str:
    return value if _TOKEN.fullmatch(value) else "other"


# --- display -------------------------------------------------------------------------------


def format_header(attempt: Attempt) -> str:
    """The line that introduces an attempt."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(attempt.started_at))
    title = f"attempt {attempt.number}  {when}  via {attempt.via}"
    return f"{title}\n  {'step':<20} {'t+s':>9}  result\n"


def format_step(record: StepRecord) -> str:
    """One table row: step, seconds since the attempt began, result."""
    return f"  {record.step.value:<20} {record.seconds:>9.3f}  {record.result}\n"


def format_table(attempts: tuple[Attempt, ...]) -> str:
    """Every attempt with its steps, oldest first."""
    if not attempts:
        return "No onboarding attempts recorded yet.\n"
    return "\n".join(
        format_header(attempt) + "".join(format_step(step) for step in attempt.steps)
        for attempt in attempts
    )
