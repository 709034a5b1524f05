"""bench/stack.py starts a batch of agents at once, each on the port it bound itself.

The benchmarks used to choose each agent's port by opening and closing a socket; two agents of
one run got the same port and the handshake failed with ``device_id_mismatch``. Here a whole
batch starts together (no Home Assistant) and every device answers with its own id on the port
the stack reports for it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
AGENTS = 6

_SCRIPT = """
import json, sys, urllib.request
sys.path.insert(0, sys.argv[1])
import common  # noqa: F401 - puts scripts/ and the checkout on sys.path
from stack import running_stack

with running_stack(with_ha=False, label="agents-test") as stack:
    facts = stack.add_agents(int(sys.argv[2]), int(sys.argv[2]))
    served = []
    for fact in facts:
        url = f"http://127.0.0.1:{fact.port}/iob/v1/info"
        with urllib.request.urlopen(url, timeout=10) as answer:
            served.append(json.loads(answer.read())["device_id"])
    print("AGENTS " + json.dumps({
        "ports": [fact.port for fact in facts],
        "ids": [fact.device_id for fact in facts],
        "served": served,
        "stack_ports": {k: v for k, v in stack.ports.items() if k.startswith("device-")},
    }))
"""


@pytest.mark.slow
def test_a_batch_of_agents_gets_distinct_working_ports(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(REPO / "bench"), str(AGENTS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("AGENTS "))
    report = json.loads(line.removeprefix("AGENTS "))
    assert len(report["ports"]) == AGENTS
    assert len(set(report["ports"])) == AGENTS
    assert all(port > 0 for port in report["ports"])
    assert report["served"] == report["ids"]
    assert len(set(report["ids"])) == AGENTS
    assert sorted(report["stack_ports"].values()) == sorted(report["ports"])
