"""bench/bench_browser.py's table: a column per journey, each with its own targets' verdicts."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from bench_browser import COLUMNS, TARGETS, report_table
from klm import Journey, Screen

FIRST = Journey(
    (
        Screen("card", "card", 6),
        Screen("discovery_confirm", "confirm", 38, (11,)),
        Screen("account", "account", 57, (18, 17)),
        Screen("wifi", "wifi", 64, (28,), 1),
        Screen("create_entry", "done", 18),
    )
)
LATER = Journey(
    (
        Screen("card", "card", 6),
        Screen("discovery_confirm", "confirm", 53, (11,)),
        Screen("create_entry", "done", 18),
    )
)
#: The add-on's card, its one confirm and success screen, then the device without a sign-in.
ADDON = Journey(
    (
        Screen("add-on card", "card", 8),
        Screen("hassio_confirm", "account", 49),
        Screen("add-on linked", "done", 8),
        Screen("card", "card", 6),
        Screen("discovery_confirm", "confirm", 38, (11,)),
        Screen("wifi", "wifi", 64, (28,), 1),
        Screen("create_entry", "done", 18),
    )
)


def row(table: str, label: str) -> str:
    (line,) = (line for line in table.splitlines() if line.startswith(label))
    return line.removeprefix(label)


def test_the_addon_journey_is_a_third_column_with_the_first_devices_targets() -> None:
    assert TARGETS["addon"] == TARGETS["first"]
    table = report_table({"first": FIRST, "later": LATER, "addon": ADDON}, 0.2)
    header = table.splitlines()[0]
    columns = [header.index(COLUMNS[which]) for which in ("first", "later", "addon")]
    assert columns == sorted(columns)
    assert row(table, "characters typed").split() == ["74", "11", "39"]
    assert row(table, "forms before Wi-Fi").split()[:3] == ["2", "1", "2"]
    # Each column's verdicts against its own targets: 3 forms for the add-on's, as the first's.
    assert row(table, "forms before Wi-Fi").endswith(
        "first ≤ 3: PASS; later ≤ 2: PASS; addon ≤ 3: PASS"
    )
    user = row(table, "user time (KLM)")
    assert f"{ADDON.user_seconds:.1f} s" in user
    assert "addon ≤ 60 s: FAIL" in user  # 85.8 s of reading, clicks and typing
    # The per-screen breakdown: the add-on's confirm is read and clicked, nothing typed.
    breakdown = table.split(f"{COLUMNS['addon']}, per screen:")[1]
    assert "\n  hassio_confirm (account) 49 0 1 " in breakdown
