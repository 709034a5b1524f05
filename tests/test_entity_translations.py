"""Every entity the device agent can publish is named from a translation the integration ships.

The integration names an entity from ``translations/en.json`` when the descriptor's
``translation_key`` is there (custom_components/iot_onboard/entity.py, ``TRANSLATED``, which
tests/integration/test_entities.py holds equal to en.json), else from the descriptor's English
name.
"""

from __future__ import annotations

import json
from pathlib import Path

from device_firmware.capabilities import default_capabilities
from device_firmware.capabilities.gpio import GpioSwitch, OutputLine

TRANSLATIONS = (
    Path(__file__).resolve().parent.parent
    / "custom_components"
    / "iot_onboard"
    / "translations"
    / "en.json"
)


def _no_line() -> OutputLine:
    raise AssertionError("the descriptor is read without opening the line")


def test_every_translation_key_the_agent_publishes_is_translated() -> None:
    translated = json.loads(TRANSLATIONS.read_text(encoding="utf-8"))["entity"]
    descriptors = [
        capability.descriptor
        for capability in default_capabilities(simulated=True, sysfs_root=Path("/nonexistent"))
    ]
    descriptors.append(GpioSwitch(_no_line).descriptor)
    assert len(descriptors) > 1
    for descriptor in descriptors:
        platform, key = descriptor.platform.value, descriptor.translation_key
        assert key is not None, descriptor.key
        assert translated.get(platform, {}).get(key, {}).get("name"), (platform, key)
