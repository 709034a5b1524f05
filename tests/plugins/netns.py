"""A network namespace of its own for one program, joined to the test's by a veth pair.

A local-only household (an IoT VLAN without internet) as real network topology: the device
agent runs in a child namespace that sees only a veth pair to the test's namespace, on a
private /30 (``10.77.N.0/30``: the test's side ``.1``, the device's ``.2``). What listens on
the test's ``.1`` (Mosquitto, Home Assistant's side) is reachable from the device; what
listens only on the test's 127.0.0.1 (the account service) is not - the device's 127.0.0.1
is its own loopback, where nothing listens, so its connection is refused by its own kernel,
with no proxy in between.

The namespace is held by ``unshare --net sleep infinity`` (stopped by its pid); programs join
it with ``nsenter --net=/proc/PID/ns/net`` (:attr:`DeviceNamespace.prefix`), which execs them
(their pid stays theirs). Deleting the test's end of the veth deletes the pair; the namespace
goes with its last process. Nothing is named in ``/run/netns``, so nothing is left behind.

Needs root and ``ip``, ``nsenter``, ``unshare`` (CI runs the tests as root inside
``unshare --net``); :func:`device_namespace` skips the test with the reason otherwise.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT = 10.0
#: Run inside the namespace: connect to argv[1]:argv[2], print ``ok`` or the error's class.
_PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()
except OSError as err:
    print(type(err).__name__, err.errno)
else:
    print("ok")
"""


class NamespaceError(RuntimeError):
    """The namespace or its veth could not be made; the message has the command's output."""


@dataclass(frozen=True)
class DeviceNamespace:
    """The child namespace, its holder process and both ends of the veth."""

    holder: subprocess.Popen[bytes]
    #: The veth's name in the test's namespace (deleting it deletes the pair).
    host_interface: str
    #: The test's address on the veth: where the device reaches the broker and HA's side.
    host_address: str
    #: The device's address on the veth: where HA reaches the device.
    device_address: str

    @property
    def prefix(self) -> list[str]:
        """Put before a command to run it inside the namespace."""
        return ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net", "--"]

    def listening_socket(self, host: str, port: int) -> socket.socket:
        """A TCP socket listening on ``host:port`` inside the namespace; this process stays in
        its own (a worker thread joins the namespace to make it, and ends)."""

        def inside() -> socket.socket:
            with Path(f"/proc/{self.holder.pid}/ns/net").open("rb") as handle:
                _setns_net(handle.fileno())  # this thread only
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((host, port))
                sock.listen()
            except OSError:
                sock.close()
                raise
            return sock

        with ThreadPoolExecutor(max_workers=1) as worker:  # its thread ends with it
            return worker.submit(inside).result()

    def probe(self, host: str, port: int) -> str:
        """From inside: ``ok`` if ``host:port`` accepts a TCP connection, else why not (the
        error's class and errno, e.g. ``ConnectionRefusedError 111``)."""
        done = subprocess.run(
            [*self.prefix, sys.executable, "-c", _PROBE, host, str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return done.stdout.strip()


_CLONE_NEWNET = 0x40000000


def _setns_net(fd: int) -> None:
    """Move the calling thread into the network namespace open at ``fd`` (``os.setns`` is
    Python 3.12+; Bookworm's 3.11 goes through libc)."""
    if sys.version_info >= (3, 12):
        os.setns(fd, os.CLONE_NEWNET)
    else:
        import ctypes  # noqa: PLC0415 - only the 3.11 path needs it

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))


def missing_requirement() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "creating a network namespace and a veth pair needs root (CI runs as root)"
    for tool in ("ip", "nsenter", "unshare"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (Debian: iproute2, util-linux)"
    return None


def _run(*command: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise NamespaceError(f"{' '.join(command)} failed: {done.stderr.strip()}")


def _wait_for_own_namespace(holder: subprocess.Popen[bytes]) -> None:
    """Until the holder has left the test's namespace (``unshare`` runs before its exec)."""
    ours = Path("/proc/self/ns/net").readlink()
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if holder.poll() is not None:
            raise NamespaceError(f"unshare --net exited ({holder.returncode})")
        try:
            if Path(f"/proc/{holder.pid}/ns/net").readlink() != ours:
                return
        except FileNotFoundError:
            pass
        time.sleep(0.01)
    raise NamespaceError("unshare --net did not make a namespace")


@contextmanager
def device_namespace() -> Iterator[DeviceNamespace]:
    """A fresh child namespace with a veth to this one; skips the test without root or tools."""
    reason = missing_requirement()
    if reason is not None:
        pytest.skip(reason)
    suffix = secrets.token_hex(4)
    host_interface, device_interface = f"iobh{suffix}", f"iobd{suffix}"
    subnet = f"10.77.{secrets.randbelow(254) + 1}"
    host_address, device_address = f"{subnet}.1", f"{subnet}.2"
    holder = subprocess.Popen(
        ["unshare", "--net", "--", "sleep", "infinity"], stdin=subprocess.DEVNULL
    )
    namespace = DeviceNamespace(holder, host_interface, host_address, device_address)
    inside = namespace.prefix
    try:
        _wait_for_own_namespace(holder)
        _run("ip", "link", "add", host_interface, "type", "veth", "peer", "name",
             device_interface, "netns", str(holder.pid))  # fmt: skip
        _run("ip", "addr", "add", f"{host_address}/30", "dev", host_interface)
        _run("ip", "link", "set", host_interface, "up")
        _run(*inside, "ip", "addr", "add", f"{device_address}/30", "dev", device_interface)
        _run(*inside, "ip", "link", "set", device_interface, "up")
        _run(*inside, "ip", "link", "set", "lo", "up")
        yield namespace
    finally:
        subprocess.run(["ip", "link", "del", host_interface], capture_output=True, check=False)
        holder.terminate()
        holder.wait(START_TIMEOUT)
