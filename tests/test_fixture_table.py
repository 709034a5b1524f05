"""docs/development.md's fixture table names only fixtures that exist where it says."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEADING = "### Which fixture: to test X, use fixture Y from Z"


def _rows() -> list[tuple[list[str], str]]:
    text = (REPO / "docs" / "development.md").read_text(encoding="utf-8")
    assert HEADING in text, f"docs/development.md lost its heading {HEADING!r}"
    section = text.split(HEADING, 1)[1]
    rows: list[tuple[list[str], str]] = []
    for line in section.splitlines():
        if line.startswith(("|---", "| to test")):
            continue
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == 3, f"a fixture row needs three cells: {line}"
        names = re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", cells[1])
        (where,) = re.findall(r"`([^`]+)`", cells[2])
        rows.append((names, where))
    return rows


def _defines_fixture(source: str, name: str) -> bool:
    pattern = rf"@pytest\.fixture\b[^\n]*\n(?:@[^\n]*\n)*(?:async )?def {name}\("
    return re.search(pattern, source) is not None


def test_every_fixture_in_the_table_is_defined_where_it_says() -> None:
    rows = _rows()
    assert len(rows) >= 10, "the fixture table is missing or cut short"
    missing = []
    for names, where in rows:
        assert names, f"a row of the fixture table names no fixture (from {where})"
        path = REPO / where
        assert path.is_file(), f"the fixture table names {where}, which does not exist"
        source = path.read_text(encoding="utf-8")
        missing += [f"{name} ({where})" for name in names if not _defines_fixture(source, name)]
    assert not missing, f"fixtures named in docs/development.md but not defined: {missing}"


def test_the_check_finds_a_missing_fixture() -> None:
    source = '@pytest.fixture\nasync def present(x: int) -> None:\n    """doc"""\n'
    assert _defines_fixture(source, "present")
    assert not _defines_fixture(source, "absent")
    assert not _defines_fixture("def helper(x: int) -> None: ...\n", "helper")
