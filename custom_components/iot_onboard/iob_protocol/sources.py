"""Injectable clocks and randomness.

Every component that needs time or random bytes takes them as parameters, so tests and the
committed test vectors can replay a run byte for byte, and so nothing here reads the wall clock
where a monotonic one is needed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeAlias

#: Returns ``n`` random bytes; the default is :func:`os.urandom`.
RandomSource: TypeAlias = Callable[[int], bytes]

#: Returns seconds from a monotonic clock (deadlines, windows).
MonotonicClock: TypeAlias = Callable[[], float]

#: Returns Unix seconds (signed timestamps).
WallClock: TypeAlias = Callable[[], int]


def system_random(size: int) -> bytes:
    """Random bytes from the operating system's CSPRNG."""
    return os.urandom(size)


def monotonic() -> float:
    """Seconds from the system's monotonic clock."""
    return time.monotonic()


def unix_time() -> int:
    """Whole Unix seconds from the wall clock."""
    return int(time.time())
