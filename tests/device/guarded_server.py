"""A guarded aiohttp server with no connection cap of its own, for the accept-failure test.

``python -m tests.device.guarded_server``: serves ``GET /iob/v1/info`` on 127.0.0.1 through
:class:`~device_firmware.provisioning.http_guard.GuardedAppRunner` with a cap far above the
process's open-file limit, so a flood of connections makes ``accept()`` fail with EMFILE -
the path the agent's own cap normally keeps it off. Prints ``PORT <n>``, logs to stderr, runs
until SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiohttp import web

from device_firmware.provisioning.http_guard import (
    ConnectionGuard,
    GuardedAppRunner,
    ServerLimits,
    body_limits,
)


async def _info(_request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def main() -> None:
    """Serve until SIGTERM."""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("device_firmware.http").setLevel(logging.DEBUG)
    guard = ConnectionGuard(ServerLimits(max_connections=100_000), open_files=1_000_000)
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(guard.exception_handler(loop.get_exception_handler()))
    app = web.Application(middlewares=[body_limits])
    app.router.add_get("/iob/v1/info", _info)
    runner = GuardedAppRunner(app, guard, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print("PORT", runner.addresses[0][1], flush=True)  # noqa: T201 - the parent reads it
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
