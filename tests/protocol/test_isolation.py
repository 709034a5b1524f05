"""The package must stay importable without Home Assistant and use only allowed imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import iob_protocol

PACKAGE_DIR = Path(iob_protocol.__file__).parent
ALLOWED_TOP_LEVEL = {"cryptography", "mashumaro", "spake2"}


def test_imports_are_relative_stdlib_or_allowed() -> None:
    for path in PACKAGE_DIR.glob("*.py"):
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    continue
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top in ALLOWED_TOP_LEVEL, (path.name, name)


def test_importable_with_homeassistant_blocked() -> None:
    code = (
        "import sys\n"
        "sys.modules['homeassistant'] = None\n"
        "import iob_protocol\n"
        "assert not any(m.startswith('homeassistant') and sys.modules[m] for m in sys.modules)\n"
        "print(len(iob_protocol.__all__))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 50


def test_public_api_is_exported() -> None:
    for name in iob_protocol.__all__:
        assert hasattr(iob_protocol, name), name
