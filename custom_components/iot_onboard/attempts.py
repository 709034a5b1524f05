"""The last onboarding attempts the config flow saw, step by step, for the diagnostics.

Support reads one format: an attempt is what the device's ``iob-device attempts`` shows
(``device_firmware/attempts.py``): ``number``, ``started_at`` (Unix time), ``via`` (``lan``,
``ble``, or ``session``: a commit retried in the same session) and its steps, each with ``t``
(seconds since the attempt began, monotonic) and a ``result`` (``ok``, a kind or a code). The
step names are the device's (``iob_protocol.attempts.Step``); the flow records those it
sees, and ``failed`` (it stopped waiting: the result is its error key, e.g. ``timeout``; the
device finishes or rolls back by itself, and its own log says which).

Each household keeps its last :data:`MAX_ATTEMPTS` attempts (each tagged with its device) in
memory and in a storage file (``.storage/iot_onboard.attempts``, written a few seconds after a
step). Only codes are recorded: no SSID, passphrase, setup code, token or address. Every step
is also one debug log line (how to watch an attempt live: docs/support.md).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, Final

from homeassistant.core import HomeAssistant
from homeassistant.helpers.singleton import singleton
from homeassistant.helpers.storage import Store

from .const import DOMAIN
from .iob_protocol import DiagnosticCode
from .iob_protocol.attempts import OK, Step

_LOGGER = logging.getLogger(__name__)

#: Attempts kept per household (the oldest goes first).
MAX_ATTEMPTS: Final = 10
#: Steps kept per attempt (as on the device).
MAX_STEPS: Final = 32
STORAGE_KEY: Final = f"{DOMAIN}.attempts"
STORAGE_VERSION: Final = 1
#: Seconds a step waits before the file is written (the steps of an attempt share a write).
SAVE_DELAY: Final = 5.0
#: A result is a code, never free text (no secret can hide in one).
_TOKEN: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")


_ENDS: Final = frozenset(
    {Step.HANDSHAKE_FAILED, Step.CLAIM_CONFIRMED, Step.COMMITTED, Step.ROLLED_BACK, Step.FAILED}
)


def _code(value: str) -> str:
    return value if _TOKEN.fullmatch(value) else "other"


class AttemptLog:
    """Every household's last attempts (one instance per hass, see :func:`async_get_log`)."""

    def __init__(self, store: Store[dict[str, Any]], households: dict[str, list[Any]]) -> None:
        """``households``: household id -> its attempts, oldest first (as stored)."""
        self._store = store
        self._households = households

    def attempts(self, household_id: str, device_id: str | None = None) -> dict[str, list[Any]]:
        """The household's attempts by device, oldest first, in the device's format."""
        shown: dict[str, list[Any]] = {}
        for tagged in self._households.get(household_id, []):
            if device_id in (None, tagged["device_id"]):
                attempt = {key: value for key, value in tagged.items() if key != "device_id"}
                attempt["steps"] = [dict(step) for step in attempt["steps"]]
                shown.setdefault(tagged["device_id"], []).append(attempt)
        return shown

    def begin(self, household_id: str, device_id: str, via: str) -> dict[str, Any]:
        """A new attempt (the household's oldest beyond :data:`MAX_ATTEMPTS` goes)."""
        ring = self._households.setdefault(household_id, [])
        number = ring[-1]["number"] + 1 if ring else 1
        attempt: dict[str, Any] = {
            "device_id": device_id,
            "number": number,
            "started_at": int(time.time()),
            "steps": [],
            "via": _code(via),
        }
        ring.append(attempt)
        del ring[:-MAX_ATTEMPTS]
        return attempt

    def changed(self) -> None:
        """Write the file soon."""
        self._store.async_delay_save(lambda: {"households": self._households}, SAVE_DELAY)


@singleton(f"{DOMAIN}_attempts")
async def async_get_log(hass: HomeAssistant) -> AttemptLog:
    """The attempt log of this Home Assistant (read from its file the first time)."""
    store: Store[dict[str, Any]] = Store(hass, STORAGE_VERSION, STORAGE_KEY)
    stored = await store.async_load()
    households = stored.get("households") if isinstance(stored, dict) else None
    return AttemptLog(store, households if isinstance(households, dict) else {})


class AttemptRecorder:
    """One flow's attempts with one device: each step with its time since the attempt began."""

    def __init__(self, log: AttemptLog, household_id: str, device_id: str) -> None:
        """Nothing is recorded until the first :meth:`record`."""
        self._log = log
        self._household_id = household_id
        self._device_id = device_id
        self._current: dict[str, Any] | None = None
        self._started = 0.0

    def record(self, step: Step, result: str = OK, *, via: str = "session") -> None:
        """Add ``step``; a handshake, or a step after an ended attempt, begins a new one."""
        current = self._current
        ended = current is None or any(done["step"] in _ENDS for done in current["steps"][-1:])
        if step is Step.HANDSHAKE_STARTED or current is None or ended:
            current = self._current = self._log.begin(self._household_id, self._device_id, via)
            self._started = time.monotonic()
        if len(current["steps"]) >= MAX_STEPS:
            return
        seconds = round(max(0.0, time.monotonic() - self._started), 3)
        current["steps"].append({"result": _code(result), "step": step.value, "t": seconds})
        self._log.changed()
        _LOGGER.debug(
            "Onboarding attempt %d of %s: %s after %.3f s: %s",
            current["number"],
            self._device_id,
            step.value,
            seconds,
            _code(result),
        )


def no_record(step: Step, result: str = OK) -> None:
    """A recorder that keeps nothing (a commit engine without a flow, in tests)."""
    del step, result


def outcome_step(error: str | None, abort: str | None, *, claimed: bool) -> tuple[Step, str]:
    """The step that ends a commit, from the flow's outcome (an error key is a code's, lower)."""
    if error is None and abort is None:
        return (Step.CLAIM_CONFIRMED if claimed else Step.COMMITTED), OK
    if error is not None and error.upper() in DiagnosticCode.__members__:
        return Step.ROLLED_BACK, error.upper()
    return Step.FAILED, str(error or abort)
