"""The stack tests' state directory (the orchestrator's ``--state-dir``)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import kill_leftovers


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # Not tmp_path: it lies under a root-only 0700 directory the broker's user cannot reach.
    directory = Path(tempfile.mkdtemp(prefix="iob-demo-test-"))
    try:
        yield directory
    finally:
        kill_leftovers(str(directory))
        shutil.rmtree(directory, ignore_errors=True)
