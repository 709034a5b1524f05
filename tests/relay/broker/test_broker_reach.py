"""Whether a root-started Mosquitto can reach a data directory after it drops root."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_relay.broker.local import MosquittoError, MosquittoProcess, unreachable_by_broker

AS_ROOT = os.geteuid() == 0


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """A root-only 0700 directory like /root on Debian (mkdtemp makes it 0700)."""
    directory = Path(tempfile.mkdtemp(prefix="iob-reach-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_under_a_0700_directory_the_reason_names_the_parent(private_dir: Path) -> None:
    reason = unreachable_by_broker(private_dir / "checkout" / ".demo" / "mosquitto")
    if not AS_ROOT:  # the broker keeps this process's user: there is nothing to get through
        assert reason is None
        return
    assert reason is not None
    assert f"{private_dir} is not searchable by that user (mode drwx------)" in reason


def test_a_searchable_path_is_fine(private_dir: Path) -> None:
    private_dir.chmod(0o755)
    assert unreachable_by_broker(private_dir / "not-made-yet" / "mosquitto") is None


def test_the_broker_refuses_such_a_directory_with_the_next_step(private_dir: Path) -> None:
    process = MosquittoProcess(private_dir / "mosquitto")
    try:
        if not AS_ROOT:  # no user switch: the broker starts there
            assert process.start().pid > 0
            return
        with pytest.raises(MosquittoError, match=r"chmod o\+x") as caught:
            process.start()
        assert f"{private_dir} is not searchable" in str(caught.value)
        assert not process.running
    finally:
        process.close()
