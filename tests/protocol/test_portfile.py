"""The one port-file writer (iob_protocol/portfile.py) of the account service and the device agent.

Their own tests (tests/device/test_port_file.py, tests/relay/test_serve_reconciles.py) read the
file a running process wrote; these check how it is written.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from iob_protocol.portfile import write_port_file

OLD = {"pid": 1, "http": 8080}
NEW = {"pid": os.getpid(), "lan": 40123, "ble_bridge": None}


def _names(directory: Path) -> list[str]:
    return sorted(entry.name for entry in directory.iterdir())


def test_one_json_line_with_the_mode_of_any_new_file(tmp_path: Path) -> None:
    path = tmp_path / "ports.json"
    write_port_file(path, NEW)
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    assert text.count("\n") == 1
    assert json.loads(text) == NEW
    # The mode the writers had before (Path.write_text): the process's umask decides.
    reference = tmp_path / "reference"
    reference.write_text("")
    assert path.stat().st_mode == reference.stat().st_mode


def test_replaces_the_old_file_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "ports.json"
    write_port_file(path, OLD)
    write_port_file(path, NEW)
    assert json.loads(path.read_text(encoding="utf-8")) == NEW
    assert _names(tmp_path) == ["ports.json"]


def test_the_data_is_on_disk_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsync of the temporary file, then the rename over the old one: a power cut in between
    leaves the old file or a complete new one, never an empty file under the name."""
    path = tmp_path / "ports.json"
    events: list[tuple[str, ...]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor: int) -> None:
        name = Path(f"/proc/self/fd/{descriptor}").readlink()
        events.append(("fsync", str(name), name.read_text(encoding="utf-8")))
        real_fsync(descriptor)

    def replace(source: str | Path, target: str | Path) -> None:
        events.append(("replace", str(source), str(target)))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_port_file(path, NEW)
    [(first, synced, content), (second, renamed, target)] = events
    assert (first, second) == ("fsync", "replace")
    assert json.loads(content) == NEW
    assert renamed == synced != str(path)
    assert Path(synced).parent == tmp_path
    assert target == str(path)


def _fail_in(monkeypatch: pytest.MonkeyPatch, call: str) -> None:
    """Make ``os.<call>`` fail as a full disk or an I/O error would; ``write`` fails halfway."""
    if call == "write":
        real_write = os.write
        calls = 0

        def write(descriptor: int, data: bytes | memoryview) -> int:
            nonlocal calls
            calls += 1
            if calls > 1:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(descriptor, bytes(data)[: len(data) // 2])

        monkeypatch.setattr(os, "write", write)
        return

    def fail(*_args: object) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, call, fail)


@pytest.mark.parametrize("call", ["write", "fsync", "replace"])
def test_a_crash_while_writing_leaves_the_old_file_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    path = tmp_path / "ports.json"
    write_port_file(path, OLD)
    before = path.read_bytes()
    cause = os.strerror(errno.ENOSPC if call == "write" else errno.EIO)
    with monkeypatch.context() as patched:
        _fail_in(patched, call)
        with pytest.raises(OSError, match=cause):
            write_port_file(path, NEW)
    assert path.read_bytes() == before
    assert _names(tmp_path) == ["ports.json"]


def test_a_missing_directory_is_an_os_error_for_the_caller(tmp_path: Path) -> None:
    path = tmp_path / "no-such-dir" / "ports.json"
    with pytest.raises(FileNotFoundError):
        write_port_file(path, NEW)
    assert _names(tmp_path) == []
