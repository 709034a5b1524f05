"""Every benchmark module runs in --quick mode and writes every metric as a number.

A smoke test, not a measurement: tiny N, and no assertion on any value beyond it being a
finite number (speed belongs in bench/, never in a test). The modules start the real stack
(Mosquitto, the account service, device agents, Home Assistant) as subprocesses on 127.0.0.1,
so they run side by side here to keep the wall time down.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Each module and the metrics its JSON must hold: prefixes, in which "N" stands for the
#: row's number (a household's or a fleet's size).
EXPECTED = {
    "protocol": ["protocol: handshakes", "protocol: AEAD frames (64 B"],
    "relay": [
        "relay: full claims/s on SQLite",
        "relay: claim p99 on SQLite",
        "relay: full claims/s on PostgreSQL",
        "relay: claim p99 on PostgreSQL",
    ],
    "broker": [
        "broker: claim → CONNECT accepted",
        "broker: CONNECT/s, RabbitMQ, 10,000",
        "broker: CONNECT/s, RabbitMQ (HTTP auth",
        "broker: publish → receive, RabbitMQ",
    ],
    "household": [
        "household: claim into a household of N, median",
        "household: claim into a household of N, p90",
    ],
    "storage": [
        "storage: claims/s on SQLite, c1",
        "storage: claims/s on SQLite, c64",
        "storage: CPU per claim on PostgreSQL, c64",
    ],
    "telemetry": ["telemetry: device → HA state, p50", "telemetry: device → HA state, p99"],
    "onboarding": [
        "onboarding: discovery → entities available, p50",
        "onboarding: discovery → entities available, p95",
    ],
    "memory": [
        "memory: account service per device",
        "memory: broker per device",
        "memory: HA per device",
        "adding a device to a household of N: other entities available, min",
        "adding a device to a household of N: other entities written",
    ],
}
#: A bound, not an expectation: together they take well under a minute here.
TIMEOUT = 600.0


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Every module run once in --quick mode, all at the same time."""
    out = tmp_path_factory.mktemp("bench")
    running: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    try:
        for name in EXPECTED:
            log = (out / f"{name}.log").open("wb")
            running[name] = (
                subprocess.Popen(
                    [
                        sys.executable,
                        str(REPO / "bench" / f"bench_{name}.py"),
                        "--quick",
                        "--json",
                        str(out / f"{name}.json"),
                    ],
                    cwd=REPO,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                ),
                out / f"{name}.log",
            )
            log.close()
        deadline = time.monotonic() + TIMEOUT
        for name, (process, log_path) in running.items():
            try:
                code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"bench_{name}.py --quick did not finish within {TIMEOUT:.0f} s")
            assert code == 0, f"bench_{name}.py --quick failed:\n{log_path.read_text()[-3000:]}"
    finally:
        for process, _ in running.values():
            if process.poll() is None:
                process.terminate()  # the modules stop their stacks on SIGTERM
                try:
                    process.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    return {name: json.loads((out / f"{name}.json").read_text()) for name in EXPECTED}


def _names(wanted: str, metric: str) -> bool:
    """Whether `metric` starts with `wanted`, where a word "N" in `wanted` is any number."""
    pattern = r" [\d,]+\b".join(re.escape(part) for part in re.split(r" N\b", wanted))
    return re.match(pattern, metric) is not None


@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_metric_is_a_number(documents: dict[str, dict[str, Any]], name: str) -> None:
    document = documents[name]
    assert document["benchmark"] == name
    assert document["quick"] is True
    metrics = [row["metric"] for row in document["results"]]
    for wanted in EXPECTED[name]:
        assert any(_names(wanted, metric) for metric in metrics), (wanted, metrics)
    for row in document["results"]:
        for field in ("value", "baseline", "ratio"):
            value = row[field]
            assert isinstance(value, int | float), row
            assert math.isfinite(value), row
        assert row["value"] >= 0, row
        assert row["baseline"] > 0, row
        assert row["unit"], row
        assert row["baseline_label"], row


def test_the_report_merges_every_module(
    documents: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    inputs = []
    for name, document in documents.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(document))
        inputs.append(str(path))
    out = tmp_path / "results.json"
    printed = subprocess.run(
        [sys.executable, str(REPO / "bench" / "report.py"), str(out), *inputs],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    merged = json.loads(out.read_text())
    assert merged["failed"] == []
    assert {row["benchmark"] for row in merged["results"]} == set(EXPECTED)
    header = printed.splitlines()[0].split()
    assert header == ["metric", "value", "baseline", "ratio"]
    for row in merged["results"]:
        assert row["metric"] in printed
