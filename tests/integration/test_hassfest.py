"""hassfest's rules on the integration's files (tests/integration/hassfest.py), and that the
port catches what hassfest catches: each broken copy below fails for the reason named."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from custom_components.iot_onboard import config_flow, onboarding
from custom_components.iot_onboard.account_client import MqttAccess
from tests.integration import hassfest
from tests.integration.hassfest import INTEGRATION


def test_the_integration_passes_hassfest() -> None:
    """manifest.json, translations/en.json, services.yaml, icons.json, quality_scale.yaml."""
    assert hassfest.validate() == []


def test_the_flow_offers_only_translatable_option_values() -> None:
    """The fixed choices of the flow's selectors are translation keys with a text in en.json."""
    selectors = json.loads((INTEGRATION / "translations/en.json").read_text("utf-8"))["selector"]
    for key, value in (
        ("household", config_flow.NEW_HOUSEHOLD),
        ("network", onboarding.HIDDEN_NETWORK),
        ("network", onboarding.KEEP_ETHERNET),
        *(("mqtt_access", access.value) for access in MqttAccess),
    ):
        assert hassfest.translation_key_validator(value) == value
        assert value in selectors[key]["options"], (key, value)


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / INTEGRATION.name
    shutil.copytree(
        INTEGRATION, target, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
    )
    return target


def _edit_json(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads(path.read_text("utf-8"))
    change(data)
    path.write_text(json.dumps(data), "utf-8")


def _edit_text(path: Path, old: str, new: str) -> None:
    text = path.read_text("utf-8")
    assert old in text, f"{old!r} is not in {path.name}"
    path.write_text(text.replace(old, new), "utf-8")


def _unchanged(copy: Path) -> None:
    """The copy as it is: the rule's own status is what fails."""
    del copy


def _enable_every_entity(copy: Path) -> None:
    """Turn every ``entity_registry_enabled_default = False`` into a no-op statement."""
    for module in copy.glob("*.py"):
        text = module.read_text("utf-8")
        module.write_text(
            re.sub(r"\S*entity_registry_enabled_default = False", "pass", text), "utf-8"
        )


def _only(errors: list[str], pattern: str) -> None:
    assert errors, "the broken copy passed"
    assert all(re.search(pattern, error) for error in errors), errors


def test_a_dunder_selector_option_is_refused(tmp_path: Path) -> None:
    """hassfest: translation keys are [a-z0-9-_]+ and neither start nor end with _ or -."""
    copy = _copy(tmp_path)
    _edit_json(
        copy / "translations/en.json",
        lambda d: d["selector"]["household"]["options"].update({"__new__": "Create one"}),
    )
    _only(hassfest.validate(copy), r"Invalid translation key '__new__'")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            lambda d: d["config"]["step"]["account"]["data_description"].update(
                {"account_url": "For example https://onboard.example.com"}
            ),
            "should not contain URLs",
        ),
        (
            lambda d: d["config"]["step"]["wifi"]["data_description"].update({"ssid": "Name"}),
            "data_description key ssid is not in data",
        ),
        (
            lambda d: d["exceptions"]["hub_error"].update({"message": "Failed: '{error}'"}),
            "placeholders inside single quotes",
        ),
        (
            lambda d: d["entity"]["sensor"]["load_1m"].update({"name": " Load"}),
            "leading or trailing spaces",
        ),
        (lambda d: d.update({"unknown_section": {}}), "unknown_section"),
    ],
    ids=["url", "stray-data-description", "quoted-placeholder", "spaces", "unknown-key"],
)
def test_translation_mistakes_are_refused(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], reason: str
) -> None:
    """translations/en.json against hassfest's strings schema."""
    copy = _copy(tmp_path)
    _edit_json(copy / "translations/en.json", change)
    _only(hassfest.validate(copy), re.escape(reason))


def test_a_field_without_data_description_is_refused(tmp_path: Path) -> None:
    """The config-flow rule: every field of the config and options flows is described."""
    copy = _copy(tmp_path)
    _edit_json(
        copy / "translations/en.json",
        lambda d: d["options"]["step"]["user_role"]["data_description"].pop("role"),
    )
    _only(hassfest.validate(copy), r"\[config-flow\] options\.step\.user_role\.data\.role has no")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d.update({"loggers": ["iot_onboard"]}), "Logger 'iot_onboard' in loggers"),
        (lambda d: d.pop("iot_class"), "missing an IoT Class"),
        (lambda d: d.pop("version"), "No 'version' key"),
        (lambda d: d.update({"documentation": "http://example.com/"}), "prefixed with https"),
        (lambda d: d.update({"domain": "other"}), "Domain does not match dir name"),
    ],
    ids=["logger", "iot-class", "version", "documentation", "domain"],
)
def test_manifest_mistakes_are_refused(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], reason: str
) -> None:
    """manifest.json against hassfest's custom-integration manifest rules."""
    copy = _copy(tmp_path)
    _edit_json(copy / "manifest.json", change)
    _only(hassfest.validate(copy), re.escape(reason))


def test_unsorted_manifest_keys_are_refused(tmp_path: Path) -> None:
    """domain, name, then the rest in alphabetical order."""
    copy = _copy(tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text("utf-8"))
    shuffled = {"name": manifest.pop("name"), **manifest}
    (copy / "manifest.json").write_text(json.dumps(shuffled), "utf-8")
    _only(hassfest.validate(copy), "not sorted correctly")


def test_a_discoverable_flow_without_unique_ids_is_refused(tmp_path: Path) -> None:
    """hassfest's config_flow check: zeroconf and Bluetooth flows must set a unique id."""
    copy = _copy(tmp_path)
    _edit_text(copy / "config_flow.py", "self.async_set_unique_id", "self.async_set_flow_key")
    errors = hassfest.validate(copy)
    assert "[config_flow] Config flows that are discoverable need to set a unique ID" in errors
    # The quality scale's unique-config-entry rule (done) notices too; nothing else does.
    _only(errors, r"need to set a unique ID|\[unique-config-entry\]")


def test_services_and_icons_mistakes_are_refused(tmp_path: Path) -> None:
    """services.yaml's selectors and translations; icons.json's mdi: icons."""
    copy = _copy(tmp_path)
    _edit_text(copy / "services.yaml", "translation_key: share_access", "translation_key: nope")
    _edit_json(copy / "icons.json", lambda d: d["services"]["share"].update({"service": "x"}))
    errors = hassfest.validate(copy)
    assert any("translation key nope that is not in the translations file" in e for e in errors)
    assert any("start with `mdi:`" in e for e in errors), errors
    assert len(errors) == 2, errors


@pytest.mark.parametrize(
    ("rule", "break_it", "reason"),
    [
        (
            "runtime-data",
            lambda copy: _edit_text(
                copy / "config_flow.py",
                "def async_get_options_flow(config_entry: IotOnboardConfigEntry)",
                "def async_get_options_flow(config_entry: ConfigEntry)",
            ),
            "async_get_options_flow does not use typed ConfigEntry",
        ),
        (
            "runtime-data",
            lambda copy: _edit_text(copy / "__init__.py", "entry.runtime_data = ", "data = "),
            "does not set entry.runtime_data",
        ),
        (
            "strict-typing",
            _unchanged,
            r"Requirements \['spake2==0.9'\] do not conform PEP 561",
        ),
        ("brands", _unchanged, "served by Home Assistant 2026.3.0 and later only"),
        (
            "entity-disabled-by-default",
            _enable_every_entity,
            "No entity is disabled by default",
        ),
    ],
    ids=["typed-entry", "runtime-data", "strict-typing", "brands", "disabled-by-default"],
)
def test_quality_scale_rules_marked_done_are_checked(
    tmp_path: Path, rule: str, break_it: Callable[[Path], None], reason: str
) -> None:
    """A rule marked done in quality_scale.yaml must pass its validator."""
    copy = _copy(tmp_path)
    scale = copy / "quality_scale.yaml"
    scale.write_text(
        re.sub(rf"(?m)^  {rule}:(\n    .*)*(.*)$", f"  {rule}: done", scale.read_text("utf-8")),
        "utf-8",
    )
    assert hassfest.rule_statuses(hassfest.Integration(copy))[rule] == "done"
    break_it(copy)
    _only(hassfest.validate(copy), rf"\[{re.escape(rule)}\] .*{reason}")


def test_quality_scale_statuses_follow_the_schema(tmp_path: Path) -> None:
    """done/todo, or a status with a comment; exempt always with its comment."""
    copy = _copy(tmp_path)
    scale = copy / "quality_scale.yaml"
    scale.write_text(scale.read_text("utf-8") + "  made-up-rule: done\n", "utf-8")
    _only(hassfest.validate(copy), r"Invalid quality_scale\.yaml: .*made-up-rule")
    _edit_text(scale, "  made-up-rule: done\n", "")
    _edit_text(scale, "  devices: done", "  devices: exempt")
    _only(hassfest.validate(copy), "Invalid quality_scale.yaml")
