"""Power cuts in tests: a writer process killed (SIGKILL) at a random instant of its writes."""

from __future__ import annotations

import multiprocessing
import random
import time
from collections.abc import Callable
from multiprocessing.context import ForkServerContext
from pathlib import Path

from device_firmware.state import StateStore


def writer_context(module: str) -> ForkServerContext:
    """A fork server with ``module`` (the writer's) imported once, not in every child."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([module])
    return context


def generation_of(path: Path) -> int:
    """The generation a reader sees now (0 before the first write)."""
    try:
        return StateStore(path).load().generation
    except FileNotFoundError:
        return 0


def kill_mid_write(  # noqa: PLR0917 - the one place these steps live
    context: ForkServerContext,
    target: Callable[[str], None],
    path: Path,
    last: int,
    rng: random.Random,
    tries: int = 5000,
) -> bool:
    """Start ``target(path)``, wait (bounded, not timed) until it has written past generation
    ``last``, SIGKILL it at a random instant; whether it left a temporary file behind."""
    writer = context.Process(target=target, args=(str(path),))
    writer.start()
    for _ in range(tries):
        if generation_of(path) > last:
            break
        time.sleep(0.001)
    time.sleep(rng.uniform(0, 0.01))
    writer.kill()
    writer.join()
    assert writer.exitcode == -9
    return bool(list(path.parent.glob(f".{path.name}.*.tmp")))
