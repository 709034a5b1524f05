"""Home Assistant's validator (hassfest), re-implemented for this custom integration's files.

hassfest (``python -m script.hassfest --integration-path custom_components/iot_onboard``) lives in
Home Assistant core's repository, not in the ``homeassistant`` wheel, so CI cannot run it. This
module checks the same rules for our files with voluptuous schemas modelled on hassfest's and
with Home Assistant's own runtime validators (``config_validation``, ``selector``). Each check
names the file of home-assistant/core it follows; where a check is stricter than hassfest (it
enforces for this custom integration what hassfest enforces for core ones) the comment says so.

    python -m tests.integration.hassfest [INTEGRATION_DIR]     (prints each problem; exit 1)

``validate(path)`` returns the problems as ``"[plugin] message"`` lines (empty: valid);
tests/integration/test_hassfest.py runs it on the integration and on broken copies.
"""

from __future__ import annotations

import ast
import json
import re
import string
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import voluptuous as vol
from awesomeversion import AwesomeVersion, AwesomeVersionException, AwesomeVersionStrategy
from homeassistant.const import Platform
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers import selector
from homeassistant.util.yaml import load_yaml_dict
from voluptuous.humanize import humanize_error

REPO: Final = Path(__file__).resolve().parents[2]
INTEGRATION: Final = REPO / "custom_components" / "iot_onboard"

#: Home Assistant serves a custom integration's own brand/icon.png from this version on; older
#: frontends fetch brand images from brands.home-assistant.io only.
LOCAL_BRANDS_SINCE: Final = AwesomeVersion("2026.3.0")

type Validator = Callable[[Any], Any]


@dataclass
class Integration:
    """One integration directory and the problems found in it."""

    path: Path
    errors: list[str] = field(default_factory=list)

    @property
    def domain(self) -> str:
        """The directory name (the manifest's domain must match it)."""
        return self.path.name

    def add_error(self, plugin: str, message: str) -> None:
        """Record one problem, prefixed with the hassfest plugin that reports it."""
        self.errors.append(f"[{plugin}] {message}")

    def manifest(self) -> dict[str, Any]:
        """manifest.json (empty when missing or invalid: the manifest check reports that)."""
        try:
            value = json.loads((self.path / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def module(self, name: str) -> ast.Module | None:
        """The parsed ``name``.py of the integration, None when it does not exist."""
        file = self.path / f"{name}.py"
        if not file.is_file():
            return None
        return ast.parse(file.read_text(encoding="utf-8"), str(file))


# --- manifest.json: script/hassfest/manifest.py ---------------------------------------------

SUPPORTED_IOT_CLASSES: Final = [
    "assumed_state",
    "calculated",
    "cloud_polling",
    "cloud_push",
    "local_polling",
    "local_push",
]
SUPPORTED_QUALITY_SCALES: Final = ["bronze", "silver", "gold", "platinum", "internal", "legacy"]
INTEGRATION_TYPES: Final = ["device", "entity", "hardware", "helper", "hub", "service", "system"]


def _lowercase(value: str) -> str:
    if value.lower() != value:
        raise vol.Invalid("Value needs to be lowercase")
    return value


def _uppercase(value: str) -> str:
    if value.upper() != value:
        raise vol.Invalid("Value needs to be uppercase")
    return value


def _wildcard(value: str) -> str:
    if "*" not in value:
        raise vol.Invalid(f"'{value}' needs to contain a wildcard matcher")
    return value


def _version(value: str) -> str:
    try:
        AwesomeVersion(
            value,
            ensure_strategy=[
                AwesomeVersionStrategy.CALVER,
                AwesomeVersionStrategy.SEMVER,
                AwesomeVersionStrategy.SIMPLEVER,
                AwesomeVersionStrategy.BUILDVER,
                AwesomeVersionStrategy.PEP440,
            ],
        )
    except AwesomeVersionException as err:
        raise vol.Invalid(f"'{value}' is not a valid version.") from err
    return value


def _documentation_url(value: str) -> str:
    if not value.startswith("https://"):
        raise vol.Invalid("Documentation url is not prefixed with https")
    if value.startswith("https://www.home-assistant.io/") and not value.startswith(
        "https://www.home-assistant.io/integrations/"
    ):
        raise vol.Invalid(
            "Documentation url does not begin with www.home-assistant.io/integrations"
        )
    return value


# hassfest's CUSTOM_INTEGRATION_MANIFEST_SCHEMA (INTEGRATION_MANIFEST_SCHEMA + version).
CUSTOM_MANIFEST_SCHEMA: Final = vol.Schema(
    {
        vol.Required("domain"): str,
        vol.Required("name"): str,
        vol.Optional("integration_type"): vol.In(INTEGRATION_TYPES),
        vol.Optional("config_flow"): bool,
        vol.Optional("mqtt"): [str],
        vol.Optional("zeroconf"): [
            vol.Any(
                str,
                vol.Schema(
                    {
                        vol.Required("type"): str,
                        vol.Optional("name"): vol.All(str, _lowercase),
                        vol.Optional("properties"): vol.Schema({str: _lowercase}),
                    }
                ),
            )
        ],
        vol.Optional("ssdp"): [vol.All(vol.Schema({}, extra=vol.ALLOW_EXTRA), vol.Length(min=1))],
        vol.Optional("bluetooth"): [
            vol.Schema(
                {
                    vol.Optional("connectable"): bool,
                    vol.Optional("service_uuid"): vol.All(str, _lowercase),
                    vol.Optional("service_data_uuid"): vol.All(str, _lowercase),
                    vol.Optional("local_name"): str,
                    vol.Optional("manufacturer_id"): int,
                    vol.Optional("manufacturer_data_start"): [int],
                }
            )
        ],
        vol.Optional("homekit"): vol.Schema({vol.Optional("models"): [str]}),
        vol.Optional("dhcp"): [
            vol.Schema(
                {
                    vol.Optional("macaddress"): vol.All(str, _uppercase, _wildcard),
                    vol.Optional("hostname"): vol.All(str, _lowercase),
                    vol.Optional("registered_devices"): cv.boolean,
                }
            )
        ],
        vol.Optional("usb"): [
            vol.Schema(
                {
                    vol.Optional("vid"): vol.All(str, _uppercase),
                    vol.Optional("pid"): vol.All(str, _uppercase),
                    vol.Optional("serial_number"): vol.All(str, _lowercase),
                    vol.Optional("manufacturer"): vol.All(str, _lowercase),
                    vol.Optional("description"): vol.All(str, _lowercase),
                }
            )
        ],
        vol.Required("documentation"): vol.All(vol.Url(), _documentation_url),
        vol.Optional("issue_tracker"): vol.Url(),
        vol.Optional("quality_scale"): vol.In(SUPPORTED_QUALITY_SCALES),
        vol.Optional("requirements"): [str],
        vol.Optional("dependencies"): [str],
        vol.Optional("after_dependencies"): [str],
        vol.Required("codeowners"): [str],
        vol.Optional("loggers"): [str],
        vol.Optional("disabled"): str,
        vol.Optional("iot_class"): vol.In(SUPPORTED_IOT_CLASSES),
        vol.Optional("single_config_entry"): bool,
        vol.Optional("version"): vol.All(str, _version),
        vol.Optional("import_executor"): bool,
    }
)


def _sort_key(key: str) -> str:
    return {"domain": ".domain", "name": ".name"}.get(key, key)


def validate_manifest(integration: Integration) -> None:
    """Schema, domain = directory, IoT class, version, key order; loggers that exist."""
    try:
        manifest = json.loads((integration.path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        integration.add_error("manifest", f"Invalid manifest.json: {err}")
        return
    try:
        CUSTOM_MANIFEST_SCHEMA(manifest)
    except vol.Invalid as err:
        integration.add_error("manifest", f"Invalid manifest: {humanize_error(manifest, err)}")
        return
    if manifest["domain"] != integration.domain:
        integration.add_error("manifest", "Domain does not match dir name")
    if "iot_class" not in manifest:
        integration.add_error("manifest", "Domain is missing an IoT Class")
    if not manifest.get("version"):
        integration.add_error("manifest", "No 'version' key in the manifest file.")
    keys = list(manifest)
    if sorted(keys, key=_sort_key) != keys:
        integration.add_error(
            "manifest", "Manifest keys are not sorted correctly: domain, name, then alphabetical"
        )
    # Not in hassfest (it cannot know): each logger named is one the integration's code or a
    # requirement creates, so Home Assistant's "enable debug logging" reaches a real logger.
    known = _created_loggers(integration, manifest.get("requirements", []))
    for name in manifest.get("loggers", []):
        if not any(logger == name or logger.startswith(f"{name}.") for logger in known):
            integration.add_error(
                "manifest",
                f"Logger {name!r} in loggers is created by neither the integration nor its "
                f"requirements (known: {sorted(known)}); name the requirements' loggers",
            )


def _created_loggers(integration: Integration, requirements: list[str]) -> set[str]:
    """Names passed to logging.getLogger in the integration and its requirements' modules."""
    sources: list[tuple[str, Path]] = [
        (f"custom_components.{integration.domain}", integration.path)
    ]
    for requirement in requirements:
        name = re.split(r"[\[=<>~!;]", requirement, maxsplit=1)[0]
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        top_level = distribution.read_text("top_level.txt") or ""
        packages = set(top_level.split()) or {
            str(file.parts[0]).removesuffix(".py")
            for file in distribution.files or []
            if file.suffix == ".py" and ".dist-info" not in str(file.parts[0])
        }
        for package in packages:
            root = Path(str(distribution.locate_file(package)))
            sources.append((package, root if root.is_dir() else root.with_suffix(".py")))
    loggers: set[str] = set()
    for package, root in sources:
        files = [root] if root.is_file() else sorted(root.rglob("*.py"))
        for file in files:
            module = package if file == root else _module_name(package, root, file)
            loggers.update(_getlogger_names(file, module))
    return loggers


def _module_name(package: str, root: Path, file: Path) -> str:
    parts = [package, *file.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _getlogger_names(file: Path, module: str) -> Iterator[str]:
    try:
        tree = ast.parse(file.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError):
        return
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            == "getLogger"
            and node.args
        ):
            continue
        argument = node.args[0]
        if isinstance(argument, ast.Name) and argument.id == "__name__":
            yield module
        elif isinstance(argument, ast.Constant) and isinstance(argument.value, str):
            yield argument.value
        elif (
            isinstance(argument, ast.JoinedStr)
            and argument.values
            and isinstance(first := argument.values[0], ast.FormattedValue)
            and isinstance(first.value, ast.Name)
            and first.value.id == "__name__"
        ):
            yield module


# --- config_flow.py: script/hassfest/config_flow.py ------------------------------------------

_DISCOVERY_SOURCES: Final = (
    "bluetooth",
    "discovery",
    "dhcp",
    "hassio",
    "homekit",
    "mqtt",
    "ssdp",
    "usb",
    "zeroconf",
)
_UNIQUE_ID_MARKERS: Final = (
    "self.async_set_unique_id",
    "self._async_handle_discovery_without_unique_id",
    "register_discovery_flow",
    "AbstractOAuth2FlowHandler",
)


def validate_config_flow(integration: Integration) -> None:
    """A config flow in config_flow.py when the manifest says so; discoverable ones set ids."""
    file = integration.path / "config_flow.py"
    if not file.is_file():
        if integration.manifest().get("config_flow"):
            integration.add_error(
                "config_flow", "Config flows need to be defined in the file config_flow.py"
            )
        return
    text = file.read_text(encoding="utf-8")
    discoverable = any(f"async_step_{source}" in text for source in _DISCOVERY_SOURCES)
    if discoverable and not any(marker in text for marker in _UNIQUE_ID_MARKERS):
        # hassfest warns (custom integrations) or fails (core); a duplicate flow per device is
        # a bug either way, so it fails here.
        integration.add_error(
            "config_flow", "Config flows that are discoverable need to set a unique ID"
        )


# --- strings.json and translations/en.json: script/hassfest/translations.py ----------------

RE_TRANSLATION_KEY: Final = re.compile(r"^(?!.+[_-]{2})(?![_-])[a-z0-9-_]+(?<![_-])$")
RE_COMBINED_REFERENCE: Final = re.compile(r"(.+\[%)|(%\].+)")
RE_PLACEHOLDER_IN_SINGLE_QUOTES: Final = re.compile(r"'{\w+}'")
RE_URL: Final = re.compile(
    r"(((ftp|ftps|scp|http|https|mqtt|mqtts|socket|socks5):\/\/|www\.)"
    r"[a-z0-9]+([\-\.]{1}[a-z0-9]+)*\.[a-z]{2,5}(:[0-9]{1,5})?(\/.*)?)",
    re.IGNORECASE,
)


def translation_key_validator(value: str) -> str:
    """hassfest's rule for translation keys (selector options, entity keys, services, …)."""
    if RE_TRANSLATION_KEY.match(value) is None:
        raise vol.Invalid(
            f"Invalid translation key '{value}', need to be [a-z0-9-_]+ and"
            " cannot start or end with a hyphen or underscore."
        )
    return value


def _translation_value(allow_placeholders: bool = True) -> Validator:
    def validate(value: Any) -> str:
        text: str = cv.string_with_no_html(value)
        if RE_PLACEHOLDER_IN_SINGLE_QUOTES.search(text):
            raise vol.Invalid("the string should not contain placeholders inside single quotes")
        for _, name, _, _ in string.Formatter().parse(text):
            if name:
                if not allow_placeholders:
                    raise vol.Invalid("placeholders are not supported in this value")
                if not name.isidentifier():
                    raise vol.Invalid(
                        "placeholders must be valid identifiers ([a-zA-Z_][a-zA-Z0-9_]*)"
                    )
        if RE_COMBINED_REFERENCE.search(text):
            raise vol.Invalid("the string should not contain combined translations")
        if text != text.strip():
            raise vol.Invalid("the string should not contain leading or trailing spaces")
        if RE_URL.search(text):
            raise vol.Invalid(
                "the string should not contain URLs, please use description placeholders instead"
            )
        return text

    return validate


TEXT: Final = _translation_value()
TEXT_NO_PLACEHOLDERS: Final = _translation_value(allow_placeholders=False)


def _keys(validator: Any, key: Validator = translation_key_validator) -> Validator:
    return cv.schema_with_slug_keys(validator, slug_validator=key)


def _data_entry_schema(*, flow_title_removed: bool) -> Validator:
    """gen_data_entry_schema: one flow's steps, errors, aborts, progress."""
    schema: dict[Any, Any] = {
        vol.Optional("flow_title"): TEXT,
        vol.Required("step"): {
            str: {
                vol.Optional("title"): TEXT,
                vol.Optional("description"): TEXT,
                vol.Optional("data"): {str: TEXT},
                vol.Optional("data_description"): {str: TEXT},
                vol.Optional("menu_options"): {str: TEXT},
                vol.Optional("menu_option_descriptions"): {str: TEXT},
                vol.Optional("submit"): TEXT,
                vol.Optional("sections"): {
                    str: {
                        vol.Optional("data"): {str: TEXT},
                        vol.Optional("data_description"): {str: TEXT},
                        vol.Optional("description"): TEXT,
                        vol.Optional("name"): TEXT,
                    }
                },
            }
        },
        vol.Optional("error"): {str: TEXT},
        vol.Optional("abort"): {str: TEXT},
        vol.Optional("progress"): {str: TEXT},
        vol.Optional("create_entry"): {str: TEXT},
        vol.Optional("initiate_flow"): {vol.Required("user"): TEXT},
    }
    if not flow_title_removed:
        schema[vol.Optional("title")] = TEXT

    def data_description_in_data(value: dict[str, Any]) -> dict[str, Any]:
        for step_id, step in value["step"].items():
            for key in step.get("data_description", {}):
                if key not in step.get("data", {}):
                    raise vol.Invalid(f"data_description key {key} is not in data ({step_id})")
        return value

    return vol.All(vol.Schema(schema), data_description_in_data)


STRINGS_SCHEMA: Final = vol.Schema(
    {
        vol.Optional("title"): TEXT,
        vol.Optional("config"): _data_entry_schema(flow_title_removed=True),
        vol.Optional("options"): _data_entry_schema(flow_title_removed=False),
        vol.Optional("selector"): cv.schema_with_slug_keys(
            {
                vol.Optional("choices"): _keys(TEXT),
                vol.Optional("options"): _keys(TEXT),
                vol.Optional("unit_of_measurement"): _keys(TEXT),
                vol.Optional("fields"): _keys(
                    {vol.Required("name"): str, vol.Required("description"): TEXT}
                ),
            },
            slug_validator=vol.Any("_", cv.slug),
        ),
        vol.Optional("device"): _keys({vol.Optional("name"): TEXT}),
        vol.Optional("entity"): cv.schema_with_slug_keys(
            _keys(
                {
                    vol.Optional("name"): TEXT,
                    vol.Optional("state"): _keys(TEXT_NO_PLACEHOLDERS),
                    vol.Optional("state_attributes"): _keys(
                        {
                            vol.Optional("name"): TEXT_NO_PLACEHOLDERS,
                            vol.Optional("state"): _keys(TEXT_NO_PLACEHOLDERS),
                        }
                    ),
                    vol.Optional("unit_of_measurement"): TEXT_NO_PLACEHOLDERS,
                }
            ),
            slug_validator=cv.slug,
        ),
        vol.Optional("exceptions"): cv.schema_with_slug_keys(
            {vol.Optional("message"): TEXT}, slug_validator=cv.slug
        ),
        vol.Optional("issues"): {
            str: vol.All(
                cv.has_at_least_one_key("description", "fix_flow"),
                vol.Schema(
                    {
                        vol.Required("title"): TEXT,
                        vol.Exclusive("description", "fixable"): TEXT,
                        vol.Exclusive("fix_flow", "fixable"): _data_entry_schema(
                            flow_title_removed=False
                        ),
                    }
                ),
            )
        },
        vol.Optional("services"): _keys(
            {
                vol.Required("name"): TEXT,
                vol.Required("description"): TEXT,
                vol.Optional("fields"): _keys(
                    {
                        vol.Required("name"): str,
                        vol.Required("description"): TEXT,
                        vol.Optional("example"): TEXT,
                    }
                ),
                vol.Optional("sections"): _keys(
                    {vol.Required("name"): str, vol.Optional("description"): TEXT}
                ),
            }
        ),
    }
)

#: The string files hassfest reads for a custom integration (``--integration-path``).
STRING_FILES: Final = ("strings.json", "translations/en.json")


def load_strings(integration: Integration) -> dict[str, Any]:
    """translations/en.json, the file Home Assistant reads for a custom integration."""
    try:
        value = json.loads((integration.path / "translations/en.json").read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def validate_translations(integration: Integration) -> None:
    """Each string file against hassfest's strings schema."""
    if not (integration.path / "translations").is_dir():
        integration.add_error("translations", "No translations/ directory")
    for name in STRING_FILES:
        file = integration.path / name
        if not file.is_file():
            continue
        try:
            strings = json.loads(file.read_text(encoding="utf-8"))
        except ValueError as err:
            integration.add_error("translations", f"Invalid JSON in {name}: {err}")
            continue
        try:
            STRINGS_SCHEMA(strings)
        except vol.Invalid as err:
            integration.add_error("translations", f"Invalid {name}: {humanize_error(strings, err)}")


# --- services.yaml: script/hassfest/services.py ---------------------------------------------


def _exists(value: Any) -> Any:
    if value is None:
        raise vol.Invalid("Value cannot be None")
    return value


_FIELD_SCHEMA: Final = vol.Schema(
    {
        vol.Optional("example"): _exists,
        vol.Optional("default"): _exists,
        vol.Optional("required"): bool,
        vol.Optional("advanced"): bool,
        vol.Optional("selector"): selector.validate_selector,
        vol.Optional("description"): str,
        vol.Optional("name"): str,
    }
)
_SECTION_SCHEMA: Final = vol.Schema(
    {
        vol.Optional("collapsed"): bool,
        vol.Required("fields"): vol.Schema({str: _FIELD_SCHEMA}),
        vol.Optional("description"): str,
        vol.Optional("name"): str,
    }
)
_SERVICE_SCHEMA: Final = vol.Any(
    vol.Schema(
        {
            vol.Optional("target"): vol.Any(selector.TargetSelector.CONFIG_SCHEMA, None),
            vol.Optional("fields"): vol.Schema({str: vol.Any(_FIELD_SCHEMA, _SECTION_SCHEMA)}),
            vol.Optional("description"): str,
            vol.Optional("name"): str,
        }
    ),
    None,
)
# CUSTOM_INTEGRATION_SERVICES_SCHEMA
SERVICES_SCHEMA: Final = vol.Schema({cv.slug: _SERVICE_SCHEMA})


def validate_services(integration: Integration) -> None:
    """services.yaml's schema; every action, field and select translation in en.json."""
    file = integration.path / "services.yaml"
    if not file.is_file():
        if any(
            re.search(r"hass\.services\.(async_)?register|async_register_entity_service", text)
            for text in (p.read_text(encoding="utf-8") for p in integration.path.rglob("*.py"))
        ):
            integration.add_error("services", "Registers services but has no services.yaml")
        return
    try:
        data = load_yaml_dict(str(file))
    except HomeAssistantError:
        integration.add_error("services", "Invalid services.yaml")
        return
    try:
        services: dict[str, Any] = SERVICES_SCHEMA(data)
    except vol.Invalid as err:
        integration.add_error("services", f"Invalid services.yaml: {humanize_error(data, err)}")
        return
    strings = load_strings(integration)
    for service, schema in services.items():
        for error in _service_text_errors(service, schema or {}, strings):
            integration.add_error("services", error)


def _service_text_errors(
    service: str, schema: dict[str, Any], strings: dict[str, Any]
) -> Iterator[str]:
    """Names and descriptions of an action and its fields; its select translation keys.

    hassfest requires names and descriptions in the strings of core integrations only; the
    frontend shows them for ours too, so this enforces them.
    """
    texts = strings.get("services", {}).get(service, {})
    for key in ("name", "description"):
        if key not in schema and key not in texts:
            yield f"Service {service} has no {key} in the translations file"
    for field_name, field_schema in schema.get("fields", {}).items():
        if "fields" in field_schema:
            continue
        field_texts = texts.get("fields", {}).get(field_name, {})
        for key in ("name", "description"):
            if key not in field_schema and key not in field_texts:
                yield (
                    f"Service {service} has a field {field_name} with no {key} in the "
                    "translations file"
                )
        select = field_schema.get("selector", {}).get("select") or {}
        translation_key = select.get("translation_key")
        if translation_key is not None and translation_key not in strings.get("selector", {}):
            yield (
                f"Service {service} has a field {field_name} with a selector with a "
                f"translation key {translation_key} that is not in the translations file"
            )


# --- icons.json: script/hassfest/icons.py ---------------------------------------------------


def _icon(value: Any) -> str:
    text: str = cv.string_with_no_html(value)
    if not text.startswith("mdi:"):
        raise vol.Invalid(
            "The icon needs to be a valid icon from Material Design Icons and start with `mdi:`"
        )
    return text


_ICON_STATES: Final = _keys(_icon)
ICONS_SCHEMA: Final = vol.Schema(
    {
        vol.Optional("services"): _keys(
            {vol.Required("service"): _icon, vol.Optional("sections"): _ICON_STATES}
        ),
        vol.Optional("entity"): cv.schema_with_slug_keys(
            _keys(
                {
                    vol.Optional("default"): _icon,
                    vol.Optional("state"): _ICON_STATES,
                    vol.Optional("state_attributes"): _keys(
                        {vol.Optional("default"): _icon, vol.Optional("state"): _ICON_STATES}
                    ),
                }
            ),
            slug_validator=cv.slug,
        ),
    }
)


def validate_icons(integration: Integration) -> None:
    """icons.json against hassfest's icon schema (when the file exists)."""
    file = integration.path / "icons.json"
    if not file.is_file():
        return
    try:
        icons = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as err:
        integration.add_error("icons", f"Invalid JSON in icons.json: {err}")
        return
    try:
        ICONS_SCHEMA(icons)
    except vol.Invalid as err:
        integration.add_error("icons", f"Invalid icons.json: {humanize_error(icons, err)}")


# --- quality_scale.yaml: script/hassfest/quality_scale.py and quality_scale_validation/*.py --

RULES: Final = [
    # Bronze
    "action-setup",
    "appropriate-polling",
    "brands",
    "common-modules",
    "config-flow",
    "config-flow-test-coverage",
    "dependency-transparency",
    "docs-actions",
    "docs-conditions",
    "docs-high-level-description",
    "docs-installation-instructions",
    "docs-removal-instructions",
    "docs-triggers",
    "entity-event-setup",
    "entity-unique-id",
    "has-entity-name",
    "runtime-data",
    "test-before-configure",
    "test-before-setup",
    "unique-config-entry",
    # Silver
    "action-exceptions",
    "config-entry-unloading",
    "docs-configuration-parameters",
    "docs-installation-parameters",
    "entity-unavailable",
    "integration-owner",
    "log-when-unavailable",
    "parallel-updates",
    "reauthentication-flow",
    "test-coverage",
    # Gold
    "devices",
    "diagnostics",
    "discovery",
    "discovery-update-info",
    "docs-data-update",
    "docs-examples",
    "docs-known-limitations",
    "docs-supported-devices",
    "docs-supported-functions",
    "docs-troubleshooting",
    "docs-use-cases",
    "dynamic-devices",
    "entity-category",
    "entity-device-class",
    "entity-disabled-by-default",
    "entity-translations",
    "exception-translations",
    "icon-translations",
    "reconfiguration-flow",
    "repair-issues",
    "stale-devices",
    # Platinum
    "async-dependency",
    "inject-websession",
    "strict-typing",
]
QUALITY_SCALE_SCHEMA: Final = vol.Schema(
    {
        vol.Required("rules"): vol.Schema(
            {
                vol.Optional(rule): vol.Any(
                    vol.In(["todo", "done"]),
                    vol.Schema(
                        {
                            vol.Required("status"): vol.In(["todo", "done"]),
                            vol.Required("comment"): str,
                        }
                    ),
                    vol.Schema({vol.Required("status"): "exempt", vol.Required("comment"): str}),
                )
                for rule in RULES
            }
        )
    }
)

_DISCOVERY_MANIFEST_KEYS: Final = (
    "bluetooth",
    "dhcp",
    "homekit",
    "mqtt",
    "ssdp",
    "usb",
    "zeroconf",
)
_DISCOVERY_STEPS: Final = frozenset(
    f"async_step_{source}"
    for source in ("bluetooth", "discovery", "dhcp", "hassio", "homekit", "mqtt", "ssdp", "usb")
) | {"async_step_zeroconf"}
_ANNOTATION_MATCH: Final = re.compile(r"^[A-Za-z]+ConfigEntry$")
#: quality_scale_validation/runtime_data.py: functions taking the entry, and its position.
_ENTRY_FUNCTIONS: Final[dict[str, dict[str, int]]] = {
    "__init__": {
        "async_migrate_entry": 2,
        "async_remove_config_entry_device": 2,
        "async_remove_entry": 2,
        "async_setup_entry": 2,
        "async_unload_entry": 2,
    },
    "diagnostics": {
        "async_get_config_entry_diagnostics": 2,
        "async_get_device_diagnostics": 2,
    },
    **{platform.value: {"async_setup_entry": 2} for platform in Platform},
}
_SETUP_EXCEPTIONS: Final = frozenset(
    {"ConfigEntryNotReady", "ConfigEntryAuthFailed", "ConfigEntryError"}
)


def _top_function(module: ast.Module, name: str) -> ast.AsyncFunctionDef | ast.FunctionDef | None:
    for item in module.body:
        if isinstance(item, ast.AsyncFunctionDef | ast.FunctionDef) and item.name == name:
            return item
    return None


def _entry_annotation_error(
    function: ast.AsyncFunctionDef | ast.FunctionDef, position: int
) -> str | None:
    if len(function.args.args) < position:
        return f"{function.name} has incorrect signature"
    annotation = function.args.args[position - 1].annotation
    if not (isinstance(annotation, ast.Name) and _ANNOTATION_MATCH.match(annotation.id)):
        return f"{function.name} does not use typed ConfigEntry"
    return None


def _calls(module: ast.Module, name: str) -> bool:
    return any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == name
        for node in ast.walk(module)
    )


def _defines(module: ast.Module, names: frozenset[str] | set[str]) -> bool:
    return any(
        isinstance(node, ast.AsyncFunctionDef) and node.name in names for node in ast.walk(module)
    )


def _rule_config_flow(integration: Integration) -> list[str]:
    """quality_scale_validation/config_flow.py, and the rule's data_description requirement.

    The rule (developers.home-assistant.io, integration-quality-scale/rules/config-flow) asks
    for a ``data_description`` giving context to every field of the config and options flows;
    hassfest leaves that to review, this checks it in the strings.
    """
    errors: list[str] = []
    if not integration.manifest().get("config_flow"):
        errors.append("Integration does not set config_flow in its manifest")
    if not (integration.path / "config_flow.py").is_file():
        errors.append("Integration does not implement config flow (is missing config_flow.py)")
    strings = load_strings(integration)
    errors.extend(
        f"{flow}.step.{step_id}.data.{key} has no data_description"
        for flow in ("config", "options")
        for step_id, step in strings.get(flow, {}).get("step", {}).items()
        for key in step.get("data", {})
        if key not in step.get("data_description", {})
    )
    return errors


def _rule_runtime_data(integration: Integration) -> list[str]:
    """quality_scale_validation/runtime_data.py.

    hassfest checks the typed ConfigEntry annotations only when strict-typing is done; this
    integration is type-checked with mypy --strict in CI either way, so they are always checked.
    """
    init = integration.module("__init__")
    if init is None or not isinstance(
        setup := _top_function(init, "async_setup_entry"), ast.AsyncFunctionDef
    ):
        return ["Could not find `async_setup_entry` in __init__.py"]
    if len(setup.args.args) != 2:
        return ["async_setup_entry has incorrect signature in __init__.py"]
    entry_name = setup.args.args[1].arg
    errors: list[str] = []
    if not any(
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == entry_name
        and node.attr == "runtime_data"
        and isinstance(node.ctx, ast.Store)
        for node in ast.walk(setup)
    ):
        errors.append("Integration does not set entry.runtime_data in async_setup_entry")
    return errors + _typed_entry_errors(integration)


def _typed_entry_errors(integration: Integration) -> list[str]:
    """Entry arguments annotated with the integration's ConfigEntry alias (runtime_data.py)."""
    errors: list[str] = []
    for file, functions in _ENTRY_FUNCTIONS.items():
        if (module := integration.module(file)) is None:
            continue
        for name, position in functions.items():
            function = _top_function(module, name)
            if function is not None and (error := _entry_annotation_error(function, position)):
                errors.append(f"{error} in {file}.py")
    config_flow = integration.module("config_flow")
    errors.extend(
        f"{error} in config_flow.py"
        for node in (config_flow.body if config_flow is not None else [])
        if isinstance(node, ast.ClassDef)
        for item in node.body
        if isinstance(item, ast.FunctionDef)
        and item.name == "async_get_options_flow"
        and (error := _entry_annotation_error(item, 1))
    )
    return errors


def _rule_strict_typing(integration: Integration) -> list[str]:
    """quality_scale_validation/strict_typing.py: strict type checking, typed requirements.

    Home Assistant core lists strictly typed integrations in .strict-typing; here the
    equivalent is ``strict = true`` in pyproject.toml's [tool.mypy] (CI runs mypy on
    custom_components). Requirements installed at the pinned version must ship py.typed.
    """
    errors: list[str] = []
    pyproject = REPO / "pyproject.toml"
    mypy = tomllib.loads(pyproject.read_text("utf-8")).get("tool", {}).get("mypy", {})
    if mypy.get("strict") is not True:
        errors.append("Integration does not have strict typing enabled ([tool.mypy] strict)")
    untyped = []
    for requirement in integration.manifest().get("requirements", []):
        name, _, version = requirement.partition("==")
        try:
            distribution = metadata.distribution(name.split("[")[0])
        except metadata.PackageNotFoundError:
            continue
        if distribution.version != version:
            continue
        if not any(file.name == "py.typed" for file in distribution.files or []):
            untyped.append(requirement)
    if untyped:
        errors.append(
            f"Requirements {untyped} do not conform PEP 561: they should be typed and have a "
            "'py.typed' file"
        )
    return errors


def _rule_discovery(integration: Integration) -> list[str]:
    """quality_scale_validation/discovery.py."""
    if any(key in integration.manifest() for key in _DISCOVERY_MANIFEST_KEYS):
        return []
    config_flow = integration.module("config_flow")
    if config_flow is None or not _defines(config_flow, _DISCOVERY_STEPS):
        return ["Integration is missing a discovery step in config_flow.py"]
    return []


def _rule_reconfiguration_flow(integration: Integration) -> list[str]:
    """quality_scale_validation/reconfiguration_flow.py."""
    config_flow = integration.module("config_flow")
    if config_flow is None or not _defines(config_flow, {"async_step_reconfigure"}):
        return ["Integration does not support a reconfiguration flow (async_step_reconfigure)"]
    return []


def _rule_test_before_setup(integration: Integration) -> list[str]:
    """quality_scale_validation/test_before_setup.py."""
    init = integration.module("__init__")
    setup = None if init is None else _top_function(init, "async_setup_entry")
    if setup is None:
        return ["Could not find `async_setup_entry` in __init__.py"]
    if any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "async_config_entry_first_refresh"
        for node in ast.walk(setup)
    ):
        return []
    for file in integration.path.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and node.exc is not None:
                exc: ast.expr = node.exc
                while isinstance(exc, ast.Call | ast.Attribute):
                    exc = exc.func if isinstance(exc, ast.Call) else exc.value
                if isinstance(exc, ast.Name) and exc.id in _SETUP_EXCEPTIONS:
                    return []
    return [f"Integration does not raise one of {sorted(_SETUP_EXCEPTIONS)}"]


def _rule_unique_config_entry(integration: Integration) -> list[str]:
    """quality_scale_validation/unique_config_entry.py."""
    if integration.manifest().get("single_config_entry"):
        return []
    config_flow = integration.module("config_flow")
    if config_flow is not None and (
        _calls(config_flow, "_async_abort_entries_match")
        or (
            _calls(config_flow, "async_set_unique_id")
            and _calls(config_flow, "_abort_if_unique_id_configured")
        )
    ):
        return []
    return ["Integration doesn't prevent the same device or service from being set up twice"]


def _rule_brands(integration: Integration) -> list[str]:
    """Not in hassfest (core integrations' brands live in home-assistant/brands).

    A custom integration's own brand/icon.png is served from Home Assistant 2026.3 on; the
    rule is met on every supported version only when hacs.json's minimum is at least that.
    """
    if not (integration.path / "brand" / "icon.png").is_file():
        return ["Integration has no brand/icon.png"]
    try:
        minimum = json.loads((REPO / "hacs.json").read_text("utf-8"))["homeassistant"]
    except (OSError, ValueError, KeyError):
        return ["hacs.json names no minimum Home Assistant version"]
    if AwesomeVersion(minimum) < LOCAL_BRANDS_SINCE:
        return [
            (
                f"brand/icon.png is served by Home Assistant {LOCAL_BRANDS_SINCE} and later "
                f"only; hacs.json supports {minimum}, where brands come from "
                "brands.home-assistant.io"
            )
        ]
    return []


def _rule_entity_disabled_by_default(integration: Integration) -> list[str]:
    """Not in hassfest: done means some entity sets entity_registry_enabled_default False."""
    pattern = re.compile(r"_?(attr_)?entity_registry_enabled_default\s*=\s*False")
    for file in integration.path.glob("*.py"):
        if pattern.search(file.read_text(encoding="utf-8")):
            return []
    return ["No entity is disabled by default (entity_registry_enabled_default = False)"]


RULE_VALIDATORS: Final[dict[str, Callable[[Integration], list[str]]]] = {
    "brands": _rule_brands,
    "config-flow": _rule_config_flow,
    "discovery": _rule_discovery,
    "entity-disabled-by-default": _rule_entity_disabled_by_default,
    "reconfiguration-flow": _rule_reconfiguration_flow,
    "runtime-data": _rule_runtime_data,
    "strict-typing": _rule_strict_typing,
    "test-before-setup": _rule_test_before_setup,
    "unique-config-entry": _rule_unique_config_entry,
}


def rule_statuses(integration: Integration) -> dict[str, str]:
    """quality_scale.yaml's rules: name → done, todo or exempt (empty when unreadable)."""
    try:
        data = load_yaml_dict(str(integration.path / "quality_scale.yaml"))
    except (HomeAssistantError, FileNotFoundError):
        return {}
    rules = data.get("rules", {})
    return {
        name: value["status"] if isinstance(value, dict) else value for name, value in rules.items()
    }


def validate_quality_scale(integration: Integration) -> None:
    """The file's schema, then each rule marked done against its validator."""
    file = integration.path / "quality_scale.yaml"
    if not file.is_file():
        return
    try:
        data = load_yaml_dict(str(file))
    except HomeAssistantError:
        integration.add_error("quality_scale", "Invalid quality_scale.yaml")
        return
    try:
        QUALITY_SCALE_SCHEMA(data)
    except vol.Invalid as err:
        integration.add_error(
            "quality_scale", f"Invalid quality_scale.yaml: {humanize_error(data, err)}"
        )
        return
    for rule, status in rule_statuses(integration).items():
        if status == "done" and (validator := RULE_VALIDATORS.get(rule)) is not None:
            for error in validator(integration):
                integration.add_error("quality_scale", f"[{rule}] {error}")


# --- all of it --------------------------------------------------------------------------------

CHECKS: Final = (
    validate_manifest,
    validate_config_flow,
    validate_translations,
    validate_services,
    validate_icons,
    validate_quality_scale,
)


def validate(path: Path = INTEGRATION) -> list[str]:
    """Every check on the integration at ``path``; the problems found (empty: valid)."""
    integration = Integration(path)
    for check in CHECKS:
        check(integration)
    return integration.errors


def main(argv: list[str]) -> int:
    """Print the problems of the integration (default: ours); 1 when there are any."""
    path = Path(argv[0]) if argv else INTEGRATION
    errors = validate(path)
    for error in errors:
        print(error)  # noqa: T201 - a command-line report
    if not errors:
        print(f"{path}: valid")  # noqa: T201
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
