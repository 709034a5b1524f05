"""The user guide's YAML examples work in the demo stack as printed.

Every entity id an example names must be one the demo creates: Home Assistant makes an entity id
from the device's name and the entity's name (``has_entity_name``), slugified, and the demo's
devices are named by ``scripts/demo/names.py`` and publish the simulated capabilities of
``device_firmware``; the entity names are the integration's translations (or the descriptor's
English name for a key it does not translate). And the demo's Home Assistant can save an
automation or a script made in its editor: its configuration has ``automation:`` and ``script:``
with the files they include.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from device_firmware.capabilities import default_capabilities

REPO = Path(__file__).resolve().parent.parent
GUIDE = REPO / "docs" / "user-guide.md"
README = REPO / "README.md"
TRANSLATIONS = REPO / "custom_components" / "iot_onboard" / "translations" / "en.json"
_YAML_BLOCK = re.compile(r"^```ya?ml\n(.*?)^```", re.MULTILINE | re.DOTALL)
_ENTITY_ID = re.compile(r"^(?P<domain>[a-z_]+)\.(?P<object_id>[a-z0-9_]+)$")
#: Platforms whose entities the integration creates (an id in another domain is not ours).
_PLATFORMS = {"sensor", "binary_sensor", "switch", "button", "number"}


def _demo_module(name: str) -> Any:
    """A module of ``scripts/demo`` (the demo stack imports it as ``demo.<name>``)."""
    path = REPO / "scripts" / "demo" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_iob_demo_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _slugify(text: str) -> str:
    """Home Assistant's ``slugify`` for ASCII text: lower case, runs of others to ``_``."""
    assert text.isascii(), f"{text!r}: this check handles ASCII names only"
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def demo_entity_ids() -> set[str]:
    """The entity ids the demo's devices get in Home Assistant (first onboarding)."""
    names = _demo_module("names")
    translated: dict[str, dict[str, dict[str, str]]] = json.loads(
        TRANSLATIONS.read_text(encoding="utf-8")
    )["entity"]
    ids: set[str] = set()
    # The demo's device agents run ``--simulate-network``: simulated entities and the system
    # sensors this machine has.
    descriptors = [c.descriptor for c in default_capabilities(simulated=True)]
    for index in range(1, names.MAX_DEVICES + 1):
        device_name: str = names.device_name(index)
        for descriptor in descriptors:
            platform = str(descriptor.platform)
            entry = translated.get(platform, {}).get(descriptor.translation_key or "")
            entity_name = entry["name"] if entry else descriptor.name
            ids.add(f"{platform}.{_slugify(f'{device_name} {entity_name}')}")
    return ids


def _entity_id_values(node: object) -> Iterator[str]:
    """Every value of an ``entity_id`` key (triggers, conditions, targets, data)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "entity_id":
                yield from [value] if isinstance(value, str) else value
            else:
                yield from _entity_id_values(value)
    elif isinstance(node, list):
        for item in node:
            yield from _entity_id_values(item)


def example_entity_ids(markdown: str) -> list[str]:
    """Entity ids of the integration's platforms that the YAML examples name."""
    found: list[str] = []
    for block in _YAML_BLOCK.findall(markdown):
        for text in _entity_id_values(yaml.safe_load(block)):
            for word in re.split(r"[\s,]+", text.strip()):
                match = _ENTITY_ID.match(word)
                if match and match["domain"] in _PLATFORMS:
                    found.append(word)
    return found


def test_the_demo_names_its_devices_so_entity_ids_are_the_same_in_every_demo() -> None:
    names = _demo_module("names")
    all_names = [names.device_name(i) for i in range(1, names.MAX_DEVICES + 1)]
    assert len(set(all_names)) == len(all_names)
    # Every simulated entity of every demo device gets an id of its own (no ``_2`` suffixes).
    descriptors = default_capabilities(simulated=True)
    assert len(demo_entity_ids()) == names.MAX_DEVICES * len(descriptors)


@pytest.mark.parametrize("document", [GUIDE, README], ids=lambda p: p.name)
def test_every_entity_id_in_the_examples_is_one_the_demo_creates(document: Path) -> None:
    used = example_entity_ids(document.read_text(encoding="utf-8"))
    if document == GUIDE:
        assert used, "the user guide's automation example names an entity"
    created = demo_entity_ids()
    missing = [entity_id for entity_id in used if entity_id not in created]
    assert not missing, (
        f"{document.name} names {missing}, which the demo does not create; "
        f"the demo creates for example {sorted(e for e in created if e.startswith('switch.'))[:3]}"
    )


def guide_automation() -> dict[str, Any]:
    """The user guide's automation example (one automation, as the editor's YAML mode has it)."""
    blocks = [yaml.safe_load(b) for b in _YAML_BLOCK.findall(GUIDE.read_text(encoding="utf-8"))]
    automations = [b for b in blocks if isinstance(b, dict) and "triggers" in b]
    assert len(automations) == 1, "the user guide has one automation example"
    found: dict[str, Any] = automations[0]
    return found


def test_the_guides_automation_example_fits_the_automation_editor() -> None:
    assert {"alias", "triggers", "actions"} <= guide_automation().keys()


def test_the_demo_home_assistant_saves_automations_and_scripts(tmp_path: Path) -> None:
    """configuration.yaml includes automations.yaml and scripts.yaml; saved ones are kept."""
    ha_config = _demo_module("ha_config")
    ha_config.write_config(tmp_path, http_host="127.0.0.1", http_port=8123)
    configuration = (tmp_path / "configuration.yaml").read_text(encoding="utf-8")
    assert re.search(r"^automation: !include automations\.yaml$", configuration, re.MULTILINE)
    assert re.search(r"^script: !include scripts\.yaml$", configuration, re.MULTILINE)
    # What Home Assistant's own default configuration starts them with.
    assert yaml.safe_load((tmp_path / "automations.yaml").read_text(encoding="utf-8")) == []
    assert yaml.safe_load((tmp_path / "scripts.yaml").read_text(encoding="utf-8")) is None

    # The next start rewrites configuration.yaml but keeps what the editors saved.
    saved = "- id: '1'\n  alias: Saved in the editor\n  triggers: []\n  actions: []\n"
    (tmp_path / "automations.yaml").write_text(saved, encoding="utf-8")
    ha_config.write_config(tmp_path, http_host="127.0.0.1", http_port=8124)
    assert (tmp_path / "automations.yaml").read_text(encoding="utf-8") == saved
    assert "server_port: 8124" in (tmp_path / "configuration.yaml").read_text(encoding="utf-8")
