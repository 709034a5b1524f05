"""State changes as a version number the agent's loops wait on."""

from __future__ import annotations

import asyncio

from .state import DeviceStateRecord


class StateChanges:
    """Counts the controller's state notifications; loops wait for the next one.

    Register an instance with ``DeviceController.add_state_listener``.
    """

    def __init__(self) -> None:
        """No change seen yet."""
        self._version = 0
        self._waiters: set[asyncio.Future[None]] = set()

    @property
    def version(self) -> int:
        """Incremented by every notification."""
        return self._version

    def __call__(self, _record: DeviceStateRecord) -> None:
        """A state notification: wake every waiter."""
        self._version += 1
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def wait(self, seen: int | None = None) -> int:
        """Wait for a state change after version ``seen`` (now, if None); return the version.

        Loops pass the version they acted on, so a change made while they were busy is never
        missed.
        """
        if seen is None:
            seen = self._version
        while self._version == seen:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.add(waiter)
            await waiter
        return self._version
