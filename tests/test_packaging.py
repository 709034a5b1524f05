"""The shared protocol package, the device and the account service import without HA."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Runs in a fresh interpreter: any import of homeassistant fails as if it were not installed.
_PROBE = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class NoHomeAssistant(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "homeassistant" or name.startswith("homeassistant."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
            return None

    sys.meta_path.insert(0, NoHomeAssistant())
    import iob_protocol, device_firmware, cloud_relay  # noqa: E401
    import iob_protocol.errors
    print(json.dumps({
        "loaded": sorted(m for m in sys.modules if m.split(".")[0] in
                         {"iob_protocol", "device_firmware", "cloud_relay"}),
        "ha": sorted(m for m in sys.modules if m.split(".")[0] == "homeassistant"),
        "protocol_file": iob_protocol.__file__,
    }))
    """
)


def test_shared_packages_import_without_homeassistant() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=False, cwd="/"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ha"] == []
    assert {"iob_protocol", "device_firmware", "cloud_relay"} <= set(report["loaded"])
    # The top-level package is the one inside the integration folder, not a copy.
    assert (
        Path(report["protocol_file"])
        .resolve()
        .is_relative_to(REPO / "custom_components" / "iot_onboard" / "iob_protocol")
    )


def test_blocker_really_blocks_homeassistant() -> None:
    """A positive control: the probe's blocker makes an HA import fail."""
    probe = _PROBE.split("import iob_protocol")[0] + "import homeassistant\n"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False, cwd="/"
    )
    assert result.returncode != 0
    assert "blocked by the test" in result.stderr


def test_protocol_package_has_no_homeassistant_import() -> None:
    package = REPO / "custom_components" / "iot_onboard" / "iob_protocol"
    sources = list(package.rglob("*.py"))
    assert sources
    for source in sources:
        text = source.read_text()
        assert "import homeassistant" not in text, source
        assert "from homeassistant" not in text, source
