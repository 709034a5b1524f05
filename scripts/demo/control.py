"""Commands to a running demo stack on its stdin (``--control``), for the fault tests.

One JSON object per line, ``{"op": "stop" | "kill" | "start", "part": "broker" | "relay"}``;
every command is answered with one line ``IOB-DEMO-CONTROL {json}`` on stdout: ``{"ok": true,
"op", "part", "pid"}`` or ``{"ok": false, "error": "..."}``. A part stopped this way is not
a failure of the stack until it is started again (on the same port, with the same data).
"""

from __future__ import annotations

import json
import os
import select
from dataclasses import dataclass
from typing import Final

ANSWER_PREFIX: Final = "IOB-DEMO-CONTROL "
PARTS: Final = frozenset({"broker", "relay"})
OPS: Final = frozenset({"stop", "kill", "start"})
_READ_SIZE: Final = 4096


class ControlError(Exception):
    """A command line the stack cannot run; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Command:
    """One parsed command."""

    op: str
    part: str


def parse(line: str) -> Command:
    """A command from one line of JSON; :class:`ControlError` names what is wrong."""
    try:
        document = json.loads(line)
    except ValueError as err:
        raise ControlError(f"not JSON: {err}") from err
    if not isinstance(document, dict):
        raise ControlError("a command is a JSON object")
    op, part = document.get("op"), document.get("part")
    if op not in OPS:
        raise ControlError(f"op must be one of {sorted(OPS)}, not {op!r}")
    if part not in PARTS:
        raise ControlError(f"part must be one of {sorted(PARTS)}, not {part!r}")
    return Command(str(op), str(part))


@dataclass(slots=True)
class ControlChannel:
    """Lines from a file descriptor, read without blocking the stack's watch loop."""

    fd: int
    _buffer: bytes = b""
    closed: bool = False

    def wait(self, timeout: float) -> list[str]:
        """Complete lines that arrive within ``timeout`` seconds (none when nothing came)."""
        if self.closed:
            return []
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        chunk = os.read(self.fd, _READ_SIZE)
        if not chunk:
            # The test closed our stdin: no more commands, the stack keeps running.
            self.closed = True
            return []
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        return [line.decode(errors="replace").strip() for line in lines if line.strip()]
