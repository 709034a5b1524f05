"""A throwaway PostgreSQL cluster from Debian's packages, for the relay's tests.

One cluster per test session on a free loopback port (≈ 1 s to start); each test gets a fresh
database cloned from a migrated template (``CREATE DATABASE … TEMPLATE``, a few ms). As root
the server runs as the ``postgres`` user (``runuser``), which owns the data directory. The
cluster is stopped by ``pg_ctl`` and, failing that, by its postmaster's pid.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.plugins.ports import free_port

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin")
SETUP_HINT = (
    "PostgreSQL's server is required for the relay tests: install Debian's `postgresql` "
    "package (scripts/setup does), which provides initdb and pg_ctl under "
    "/usr/lib/postgresql/<version>/bin."
)


class PostgresError(RuntimeError):
    """The test cluster could not be created, started or stopped."""


def find_pg_bin() -> Path:
    """The directory with initdb and pg_ctl."""
    for candidate in PG_BIN_CANDIDATES:
        path = Path(candidate)
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    raise PostgresError(SETUP_HINT)


@dataclass
class PostgresCluster:
    """A running cluster: connect as ``postgres`` on 127.0.0.1:``port``."""

    port: int
    data_dir: Path
    pid: int

    def dsn(self, database: str = "postgres") -> str:
        """A DSN for ``database``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"


class PostgresProcess:
    """Creates, starts and stops one cluster."""

    def __init__(self) -> None:
        """Find the binaries; nothing runs yet."""
        self.bin = find_pg_bin()
        self.root = Path(tempfile.mkdtemp(prefix="iob-relay-pg-"))
        self.data_dir = self.root / "data"
        self.cluster: PostgresCluster | None = None
        self._user = None
        if os.geteuid() == 0:
            try:
                self._user = pwd.getpwnam("postgres")
            except KeyError as err:
                raise PostgresError(
                    "running as root, the server must run as the `postgres` user, which does "
                    "not exist. " + SETUP_HINT
                ) from err

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._user is not None:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise PostgresError(
                f"{args[0]} failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}"
            )

    def start(self) -> PostgresCluster:
        """initdb and start on a free port."""
        if self._user is not None:
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )
        port = free_port()
        options = (
            f"-p {port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.root / "server.log"),
            "-w",
            "start",
            "-o",
            options,
        )
        pid_file = self.data_dir / "postmaster.pid"
        pid = int(pid_file.read_text().splitlines()[0])
        self.cluster = PostgresCluster(port, self.data_dir, pid)
        return self.cluster

    def stop(self) -> None:
        """pg_ctl stop (fast); SIGKILL the postmaster by pid if it is still there."""
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            with contextlib.suppress(PostgresError, subprocess.TimeoutExpired):
                self._run(
                    "pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop", timeout=30
                )
            deadline = time.monotonic() + 10
            while _alive(cluster.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(cluster.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(cluster.pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self) -> str:
        """The end of the server log."""
        with contextlib.suppress(OSError):
            return (self.root / "server.log").read_text()[-3000:]
        return "(no log)"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); pg_ctl's child is not ours, so no wait() needed.
    with contextlib.suppress(OSError):
        status = Path(f"/proc/{pid}/stat").read_text().split()[2]
        return status != "Z"
    return True
