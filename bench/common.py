"""What every benchmark module shares: results, their JSON and table, isolation, RSS.

Each module measures its own baseline in the same run and reports :class:`Result` rows: a value,
the baseline measured next to it and their ratio (``value / baseline`` unless the row says
otherwise). Absolute numbers vary between machines and runs; the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

REPO: Final = Path(__file__).resolve().parents[1]
for _path in (REPO / "scripts", REPO):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from demo.isolation import can_isolate, enter_private_network  # noqa: E402


class BenchError(Exception):
    """A benchmark could not run; the message says what to look at."""


@dataclass(frozen=True, slots=True)
class Result:
    """One row of the table: a measured value next to a baseline from the same run."""

    metric: str
    value: float
    unit: str
    baseline: float
    baseline_label: str
    ratio: float
    note: str = ""
    #: The baseline's unit when it differs from the value's.
    baseline_unit: str = ""


def result(
    metric: str,
    value: float,
    unit: str,
    baseline: float,
    baseline_label: str,
    *,
    note: str = "",
) -> Result:
    """A row whose ratio is ``value / baseline``."""
    ratio = value / baseline if baseline else math.nan
    return Result(metric, value, unit, baseline, baseline_label, ratio, note)


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (0-1), linear between samples; one sample is its own."""
    if not samples:
        raise BenchError("no samples to take a percentile of")
    if len(samples) == 1:
        return samples[0]
    ordered = sorted(samples)
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(samples: Sequence[float]) -> float:
    """The median (BenchError when empty)."""
    if not samples:
        raise BenchError("no samples")
    return statistics.median(samples)


_STARTED = time.monotonic()


def say(text: str) -> None:
    """A progress line on stderr (the table goes to stdout)."""
    print(f"[{time.monotonic() - _STARTED:6.1f} s] {text}", file=sys.stderr, flush=True)


def parser(description: str | None) -> argparse.ArgumentParser:
    """The options every module takes: ``--quick`` and ``--json``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small N: a smoke test, not numbers")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    return parser


def isolate() -> bool:
    """As root: a private network namespace (loopback, multicast route) before anything starts.

    Must run before any thread exists (it moves only the calling thread). Home Assistant's
    zeroconf and the devices' mDNS then stay inside; elsewhere everything binds 127.0.0.1.
    """
    if not can_isolate():
        return False
    enter_private_network()
    return True


def host_facts() -> dict[str, Any]:
    """Where the numbers were measured."""
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def document(name: str, results: Sequence[Result], *, quick: bool, **facts: Any) -> dict[str, Any]:
    """The JSON a module writes (and the runner merges)."""
    return {
        "benchmark": name,
        "quick": quick,
        "host": host_facts(),
        "facts": facts,
        "results": [asdict(row) for row in results],
    }


def _number(value: float, unit: str) -> str:
    if math.isnan(value):
        return "-"
    text = f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{text} {unit}".strip()


def table(rows: Sequence[dict[str, Any]]) -> str:
    """One table: metric, value, baseline (with what it is), ratio."""
    lines = [("metric", "value", "baseline", "ratio")]
    for row in rows:
        baseline = _number(row["baseline"], row.get("baseline_unit") or row["unit"])
        lines.append(
            (
                row["metric"],
                _number(row["value"], row["unit"]),
                f"{baseline} ({row['baseline_label']})",
                "-" if math.isnan(row["ratio"]) else f"{row['ratio']:.3g}",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    out = []
    for number, line in enumerate(lines):
        out.append(
            f"{line[0]:<{widths[0]}}  {line[1]:>{widths[1]}}  "
            f"{line[2]:<{widths[2]}}  {line[3]:>{widths[3]}}"
        )
        if number == 0:
            out.append("  ".join("-" * width for width in widths))
    return "\n".join(out)


def finish(name: str, results: Sequence[Result], args: argparse.Namespace, **facts: Any) -> None:
    """Print the module's table (and notes), write its JSON when asked."""
    doc = document(name, results, quick=args.quick, **facts)
    print(table(doc["results"]))
    for row in results:
        if row.note:
            print(f"  {row.metric}: {row.note}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2, allow_nan=True) + "\n", encoding="utf-8")
        print(f"results: {args.json}")


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` and every descendant, in KiB (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    total = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    if total == 0:
        raise BenchError(f"process {pid} is gone: no memory to measure")
    return total
