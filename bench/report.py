"""Merge the benchmark modules' JSON files into one document and print one table.

.venv/bin/python bench/report.py OUT.json MODULE.json... [--failed NAME...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from common import host_facts, table


def merge(paths: list[Path], failed: list[str]) -> dict[str, Any]:
    """One document: every module's results (in order), facts and quick flag."""
    modules: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for path in paths:
        doc = json.loads(path.read_text(encoding="utf-8"))
        modules[doc["benchmark"]] = {"quick": doc["quick"], "facts": doc["facts"]}
        rows += [{**row, "benchmark": doc["benchmark"]} for row in doc["results"]]
    return {"host": host_facts(), "benchmarks": modules, "failed": failed, "results": rows}


def main() -> None:
    """Write OUT.json and print the table (and the notes under it)."""
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("out", type=Path)
    args.add_argument("inputs", type=Path, nargs="*")
    args.add_argument("--failed", nargs="*", default=[], help="modules that did not finish")
    options = args.parse_args()
    document = merge(options.inputs, options.failed)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(table(document["results"]))
    notes = [f"  {row['metric']}: {row['note']}" for row in document["results"] if row["note"]]
    if notes:
        print("\nnotes:\n" + "\n".join(notes))
    if options.failed:
        print(f"\nFAILED (no numbers): {', '.join(options.failed)}")
    print(f"\nresults: {options.out}")


if __name__ == "__main__":
    main()
