"""A private network namespace for the demo stack, and the forwarder that publishes its ports.

As root the orchestrator moves its main thread into a new network namespace
(``unshare(CLONE_NEWNET)``) before it starts anything. Every child inherits it, so nothing the
stack runs (Home Assistant's zeroconf, the devices' mDNS, a stray HTTP fetch) can send or answer
on the machine's real interfaces. The namespace has only loopback, brought up with multicast on
and a 224.0.0.0/4 route: without a multicast route Home Assistant's zeroconf fails with ENODEV.

The ports a person or a test needs (Home Assistant, the account service, the broker, each
device) are published on the host's 127.0.0.1 under the same numbers. The listening sockets
are created in the host namespace *before* unsharing (a socket stays in the namespace it was
created in); a thread started afterwards, and so inside the namespace, accepts on them and
connects to the same port on the namespace's own 127.0.0.1. So a URL printed by the demo works
the same from the host and from inside the stack (Home Assistant reaches the account service at
the address a person types into its form).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import Final

from .processes import StackError

LOOPBACK: Final = "127.0.0.1"
_CONNECT_TIMEOUT: Final = 5.0
_CHUNK: Final = 65536


def can_isolate() -> bool:
    """Whether this process may create a network namespace (root on Linux)."""
    return os.geteuid() == 0 and hasattr(os, "unshare")


def listen(port: int) -> socket.socket | None:
    """A listening socket on 127.0.0.1:``port`` (0: any free port), or None if it is taken."""
    try:
        return socket.create_server((LOOPBACK, port))
    except OSError:
        return None


def enter_private_network() -> None:
    """Move this thread (and every child started from it) into a new network namespace."""
    ip = shutil.which("ip") or "/usr/sbin/ip"
    if not os.access(ip, os.X_OK):
        raise StackError("the `ip` command is missing: install iproute2 (scripts/setup does)")
    try:
        os.unshare(os.CLONE_NEWNET)
    except OSError as err:
        raise StackError(
            f"could not create a private network namespace ({err}). Inside a container that "
            "forbids it, use --no-isolation: the stack then binds 127.0.0.1 only."
        ) from err
    for argv in (
        [ip, "link", "set", "lo", "up", "multicast", "on"],
        [ip, "route", "add", "224.0.0.0/4", "dev", "lo"],
    ):
        result = subprocess.run(  # noqa: S603 - fixed arguments
            argv, capture_output=True, text=True, timeout=10, check=False
        )
        if result.returncode != 0:
            raise StackError(
                f"setting up loopback in the private network failed: {' '.join(argv)}: "
                f"{result.stderr.strip()}"
            )


class Forwarder:
    """Accepts on host-namespace sockets; connects to the same port inside the namespace."""

    def __init__(self, listeners: Sequence[socket.socket]) -> None:
        """Take ownership of ``listeners`` (bound and listening in the host namespace)."""
        self._listeners = list(listeners)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def ports(self) -> list[int]:
        """The published ports."""
        return [int(sock.getsockname()[1]) for sock in self._listeners]

    def start(self) -> None:
        """Start the forwarding thread (call it from the thread inside the namespace)."""
        self._thread = threading.Thread(target=self._run, name="iob-demo-forwarder", daemon=True)
        self._thread.start()
        self._started.wait(timeout=10)
        if self._error is not None:
            raise StackError(f"the port forwarder did not start: {self._error}")

    def alive(self) -> bool:
        """Whether the forwarding thread still runs."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Close the listeners and every forwarded connection; wait for the thread."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout=10)
        for sock in self._listeners:
            sock.close()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as err:  # noqa: BLE001 - reported to start() or by alive()
            self._error = err
        finally:
            self._started.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        servers = [
            await asyncio.start_server(self._connection, sock=sock) for sock in self._listeners
        ]
        self._started.set()
        await self._stop.wait()
        for server in servers:
            server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        port = int(writer.get_extra_info("sockname")[1])
        try:
            try:
                async with asyncio.timeout(_CONNECT_TIMEOUT):
                    inner_reader, inner_writer = await asyncio.open_connection(LOOPBACK, port)
            except (OSError, TimeoutError):
                return  # nothing listens inside yet: the client sees the connection close

            def close_both() -> None:
                inner_writer.close()
                writer.close()

            try:
                await asyncio.gather(
                    _pipe(reader, inner_writer, close_both), _pipe(inner_reader, writer, close_both)
                )
            finally:
                inner_writer.close()
        finally:
            writer.close()
            if task is not None:
                self._connections.discard(task)


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, close_both: Callable[[], None]
) -> None:
    """Copy one direction; pass a half-close on; a broken side closes both."""
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, RuntimeError):
        close_both()
