"""Files at rest: password hashes, e-mail addresses and the audit log are the owner's only.

The data directory is created 0700 and every file the service writes in it (the SQLite
database with its ``-wal`` and ``-shm``, the secret key, the configuration written by ``init``)
is 0600, whatever the umask; files an older version left readable are tightened at start.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_relay.storage import open_storage

ROOT = Path(__file__).parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o000, 0o022, 0o277])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """A permissive, the usual and an odd umask (one that would leave files read-only)."""
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


async def _write_something(url: str) -> None:
    storage = await open_storage(url)
    try:
        await storage.migrate()  # writes: the -wal and -shm exist from here on
        # WAL mode keeps -wal and -shm while a connection is open: check them now.
        data = Path(url.removeprefix("sqlite:///")).parent
        names = {path.name for path in data.iterdir()}
        assert {"relay.db", "relay.db-wal", "relay.db-shm"} <= names, names
        assert {path.name: mode(path) for path in data.iterdir()} == dict.fromkeys(names, 0o600)
    finally:
        await storage.close()


async def test_the_database_directory_and_files_are_private(tmp_path: Path, umask: int) -> None:
    data = tmp_path / "state" / "relay"
    await _write_something(f"sqlite:///{data}/relay.db")
    assert mode(data) == 0o700, oct(mode(data))
    assert mode(data.parent) == 0o700, "every directory the service creates"
    assert mode(data / "relay.db") == 0o600
    assert umask in {0o000, 0o022, 0o277}


async def test_files_an_older_version_left_readable_are_tightened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    await _write_something(f"sqlite:///{data}/relay.db")
    for name in ("relay.db", "relay.db-wal", "relay.db-shm"):
        (data / name).touch()
        (data / name).chmod(0o644)
    await _write_something(f"sqlite:///{data}/relay.db")
    # A directory the operator made is theirs to set (it may be shared, e.g. the working
    # directory of the default sqlite:///relay.db); the files in it are the service's.
    assert mode(data) == 0o755


def test_init_writes_its_files_private(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "relay.toml"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            (
                "import os, sys; os.umask(0); from cloud_relay.__main__ import main; "
                "sys.exit(main(sys.argv[1:]))"
            ),
            "--config",
            str(config),
            "init",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert mode(config.parent) == 0o700
    assert mode(config) == 0o600
    assert mode(config.parent / "secret.key") == 0o600
