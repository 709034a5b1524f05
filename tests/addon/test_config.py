"""The add-on repository as the Home Assistant Supervisor reads it.

The schemas below are ports of the Supervisor's voluptuous schemas (home-assistant/supervisor,
read at commit 090ef31e of 2026-08, where add-ons are called "apps"; the older
``supervisor/addons/validate.py`` at 00788af8 has the same schema under the add-on names):

- ``supervisor/apps/validate.py`` (formerly ``supervisor/addons/validate.py``):
  ``_SCHEMA_APP_CONFIG`` (config.yaml), ``_warn_app_config`` (advisories), ``SCHEMA_BUILD_CONFIG``
  (build.yaml), ``SCHEMA_APP_TRANSLATIONS`` (translations/*.yaml);
- ``supervisor/apps/options.py``: ``RE_SCHEMA_ELEMENT`` and how options are checked against the
  schema (``AppOptions``, the parts our options use);
- ``supervisor/validate.py``: ``network_port``, ``docker_port(s)``, ``version_tag``,
  ``docker_image``;
- ``supervisor/const.py`` / ``supervisor/apps/const.py``: the enums (arch, startup, boot, stage,
  backup mode, roles, map types, ``RE_SLUG``);
- ``supervisor/store/validate.py``: ``SCHEMA_REPOSITORY_CONFIG`` (repository.yaml);
- ``supervisor/store/data.py``: how a repository is read (``_read_git_repository``:
  the first ``**/repository.{yaml,yml,json}``; ``_find_app_configs``: every
  ``**/config.{yaml,yml,json}`` outside hidden folders and ``rootfs`` is an add-on);
- ``supervisor/apps/build.py``: the build context is the add-on's folder, ``Dockerfile`` (or
  ``Dockerfile.<arch>``), ``build.{yaml,yml,json}``, build args ``BUILD_FROM``, ``BUILD_VERSION``,
  ``BUILD_ARCH``;
- ``supervisor/api/discovery.py``: ``POST /discovery`` is refused for a service the add-on's
  ``discovery`` list does not name.

Only the schemas are ported (no Supervisor code is vendored); keys we do not use keep the
Supervisor's types so a mistaken edit is caught.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import voluptuous as vol
import yaml
from awesomeversion import AwesomeVersion

from cloud_relay import addon as runner

REPO = Path(__file__).resolve().parents[2]
ADDON = REPO / "addon" / "iot_onboard_relay"
SUFFIXES = (".yaml", ".yml", ".json")

# --- supervisor/const.py, supervisor/apps/const.py ---------------------------------------------
ARCH_ALL_COMPAT = ["aarch64", "amd64", "armhf", "armv7", "i386"]
ARCH_DEPRECATED = ["armhf", "armv7", "i386"]
RE_SLUG = r"[-_.A-Za-z0-9]+"
STARTUP = ["initialize", "system", "services", "application", "once"]
BOOT_CONFIG = ["auto", "manual", "manual_only"]
STAGE = ["stable", "experimental", "deprecated"]
BACKUP_MODE = ["hot", "cold"]
ROLE_ALL = ["default", "homeassistant", "backup", "manager", "admin"]
MAPPING_TYPES = [
    "config",
    "ssl",
    "addons",
    "backup",
    "share",
    "media",
    "homeassistant_config",
    "all_addon_configs",
    "addon_config",
    "data",
]

# --- supervisor/validate.py -------------------------------------------------------------------
network_port = vol.All(vol.Coerce(int), vol.Range(min=1, max=65535))
docker_port = vol.All(str, vol.Match(r"^\d+(?:/tcp|/udp)?$"))
docker_ports = vol.Schema({docker_port: vol.Maybe(network_port)})
docker_ports_description = vol.Schema({docker_port: str})


def version_tag(value: object) -> AwesomeVersion:
    """``version_tag``: AwesomeVersion of the value (a YAML number would be a float: quote it)."""
    if not isinstance(value, str):
        raise vol.Invalid(f"version {value!r} must be a string")
    return AwesomeVersion(value)


# --- supervisor/apps/options.py ---------------------------------------------------------------
RE_SCHEMA_ELEMENT = re.compile(
    r"^(?:"
    r"|bool"
    r"|email"
    r"|url"
    r"|port"
    r"|device(?:\((?P<filter>subsystem=[a-z]+)\))?"
    r"|str(?:\((?P<s_min>\d+)?,(?P<s_max>\d+)?\))?"
    r"|password(?:\((?P<p_min>\d+)?,(?P<p_max>\d+)?\))?"
    r"|int(?:\((?P<i_min>-?\d+)?,(?P<i_max>-?\d+)?\))?"
    r"|float(?:\((?P<f_min>-?\d*\.?\d+)?,(?P<f_max>-?\d*\.?\d+)?\))?"
    r"|match\((?P<match>.*)\)"
    r"|list\((?P<list>.+)\)"
    r")\??$"
)
SCHEMA_ELEMENT = vol.Schema(
    vol.Any(
        vol.Match(RE_SCHEMA_ELEMENT),
        [vol.Any(vol.Match(RE_SCHEMA_ELEMENT), {str: vol.Self})],
        {str: vol.Self},
    )
)

# --- supervisor/apps/validate.py --------------------------------------------------------------
RE_SERVICE = re.compile(r"^(?P<service>mqtt|mysql):(?P<rights>provide|want|need)$")
RE_DOCKER_IMAGE_BUILD = re.compile(
    r"^([a-zA-Z\-\.:\d{}]+/)*?([\-\w{}]+)/([\-\w{}]+)(:[\.\-\w{}]+)?$"
)

SCHEMA_APP_CONFIG = vol.Schema(
    {
        vol.Required("name"): str,
        vol.Required("version"): version_tag,
        vol.Required("slug"): vol.Match(rf"^{RE_SLUG}$"),
        vol.Required("description"): str,
        vol.Required("arch"): [vol.In(ARCH_ALL_COMPAT)],
        vol.Optional("url"): vol.Url(),
        vol.Optional("startup", default="application"): vol.In(STARTUP),
        vol.Optional("boot", default="auto"): vol.In(BOOT_CONFIG),
        vol.Optional("init", default=True): vol.Boolean(),
        vol.Optional("stage", default="stable"): vol.In(STAGE),
        vol.Optional("ports"): docker_ports,
        vol.Optional("ports_description"): docker_ports_description,
        vol.Optional("watchdog"): vol.Match(
            r"^(?:https?|\[PROTO:\w+\]|tcp):\/\/\[HOST\]:(\[PORT:\d+\]|\d+).*$"
        ),
        vol.Optional("webui"): vol.Match(r"^(?:https?|\[PROTO:\w+\]):\/\/\[HOST\]:\[PORT:\d+\].*$"),
        vol.Optional("ingress", default=False): vol.Boolean(),
        vol.Optional("ingress_port", default=8099): vol.Any(network_port, vol.Equal(0)),
        vol.Optional("panel_icon", default="mdi:puzzle"): str,
        vol.Optional("homeassistant"): version_tag,
        vol.Optional("host_network", default=False): vol.Boolean(),
        vol.Optional("host_dbus", default=False): vol.Boolean(),
        vol.Optional("devices"): [str],
        vol.Optional("tmpfs", default=False): vol.Boolean(),
        vol.Optional("map", default=list): [
            vol.Schema(
                {
                    vol.Required("type"): vol.In(MAPPING_TYPES),
                    vol.Optional("read_only", default=True): bool,
                    vol.Optional("path"): str,
                }
            )
        ],
        vol.Optional("environment"): {vol.Match(r"\w*"): str},
        vol.Optional("apparmor", default=True): vol.Boolean(),
        vol.Optional("full_access", default=False): vol.Boolean(),
        vol.Optional("hassio_api", default=False): vol.Boolean(),
        vol.Optional("hassio_role", default="default"): vol.In(ROLE_ALL),
        vol.Optional("homeassistant_api", default=False): vol.Boolean(),
        vol.Optional("auth_api", default=False): vol.Boolean(),
        vol.Optional("services"): [vol.Match(RE_SERVICE)],
        vol.Optional("discovery"): [str],
        vol.Optional("backup_exclude"): [str],
        vol.Optional("backup_pre"): str,
        vol.Optional("backup_post"): str,
        vol.Optional("backup", default="hot"): vol.In(BACKUP_MODE),
        vol.Optional("options", default={}): dict,
        vol.Optional("schema", default={}): vol.Any(vol.Schema({str: SCHEMA_ELEMENT}), False),
        vol.Optional("timeout", default=10): vol.All(vol.Coerce(int), vol.Range(min=10, max=300)),
        vol.Optional("journald", default=False): vol.Boolean(),
    },
    # The Supervisor drops unknown keys (REMOVE_EXTRA); a typo would be silently ignored there,
    # so here every key we write must be one it knows.
    extra=vol.PREVENT_EXTRA,
)

SCHEMA_BUILD_CONFIG = vol.Schema(
    {
        vol.Optional("build_from", default=dict): vol.Any(
            vol.Match(RE_DOCKER_IMAGE_BUILD),
            vol.Schema({vol.In(ARCH_ALL_COMPAT): vol.Match(RE_DOCKER_IMAGE_BUILD)}),
        ),
        vol.Optional("squash", default=False): vol.Boolean(),
        vol.Optional("args", default=dict): vol.Schema({str: str}),
        vol.Optional("labels", default=dict): vol.Schema({str: str}),
    },
    extra=vol.PREVENT_EXTRA,
)

SCHEMA_TRANSLATION_CONFIGURATION = vol.Schema(
    {
        vol.Required("name"): str,
        vol.Optional("description"): vol.Maybe(str),
        vol.Optional("fields"): {str: vol.Self},
    },
    extra=vol.PREVENT_EXTRA,
)
SCHEMA_APP_TRANSLATIONS = vol.Schema(
    {
        vol.Optional("configuration"): {str: SCHEMA_TRANSLATION_CONFIGURATION},
        vol.Optional("network"): {str: str},
    },
    extra=vol.PREVENT_EXTRA,
)

# --- supervisor/store/validate.py -------------------------------------------------------------
SCHEMA_REPOSITORY_CONFIG = vol.Schema(
    {
        vol.Required("name"): str,
        vol.Optional("url"): vol.Url(),
        vol.Optional("maintainer"): str,
    },
    extra=vol.PREVENT_EXTRA,
)


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _config() -> dict[str, Any]:
    data: dict[str, Any] = SCHEMA_APP_CONFIG(_load(ADDON / "config.yaml"))
    return data


def _hidden_or_rootfs(path: Path) -> bool:
    return any(part.startswith(".") or part == "rootfs" for part in path.relative_to(REPO).parts)


def _tracked(pattern: str) -> list[Path]:
    """Files the Supervisor's glob would find in a clone (build outputs and venvs are not)."""
    ignored = {"build", "dist", "node_modules", "__pycache__"}
    return sorted(
        path
        for path in REPO.glob(pattern)
        if path.suffix in SUFFIXES
        and not _hidden_or_rootfs(path)
        and not ignored & set(path.relative_to(REPO).parts)
        and not path.relative_to(REPO).parts[0].endswith(".egg-info")
    )


# --- the repository's layout (supervisor/store/data.py) ---------------------------------------


def test_one_repository_file_at_the_root_and_it_validates() -> None:
    # find_one_filetype takes the FIRST **/repository.* match: there must be only ours.
    assert _tracked("**/repository.*") == [REPO / "repository.yaml"]
    repository = SCHEMA_REPOSITORY_CONFIG(_load(REPO / "repository.yaml"))
    assert repository["name"]


def test_the_only_addon_config_in_the_repository_is_ours() -> None:
    # Every **/config.{yaml,yml,json} outside hidden folders and rootfs is read as an add-on:
    # a stray one would be reported as a broken add-on in the store.
    assert _tracked("**/config.*") == [ADDON / "config.yaml"]


def test_addon_folder_has_what_the_supervisor_builds_and_shows() -> None:
    for name in ("Dockerfile", "build.yaml", "DOCS.md", "CHANGELOG.md", "translations/en.yaml"):
        assert (ADDON / name).is_file(), name
    # find_one_filetype(path, "build", ...) must find only build.yaml.
    assert sorted(p.name for p in ADDON.glob("**/build.*")) == ["build.yaml"]
    run_script = ADDON / "rootfs" / "run.sh"
    assert run_script.stat().st_mode & 0o111 == 0o111
    dockerfile = (ADDON / "Dockerfile").read_text()
    assert "COPY rootfs /" in dockerfile
    assert 'CMD [ "/run.sh" ]' in dockerfile
    # BUILD_FROM: given by build.yaml (older Supervisors), defaulted in the Dockerfile (newer).
    assert re.search(r"^ARG BUILD_FROM=\S+$", dockerfile, re.MULTILINE)
    assert re.search(r"^ARG BUILD_VERSION$", dockerfile, re.MULTILINE)


# --- config.yaml --------------------------------------------------------------------------------


def test_config_validates_and_raises_no_supervisor_advisory() -> None:
    config = _config()
    assert config["slug"] == ADDON.name
    # _warn_app_config: cold backups with pre/post commands; deprecated architectures.
    assert not (config["backup"] == "cold" and ("backup_pre" in config or "backup_post" in config))
    assert not set(config["arch"]) & set(ARCH_DEPRECATED)
    assert sorted(config["arch"]) == ["aarch64", "amd64"]


def test_config_version_is_the_release_and_in_the_changelog() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert str(_config()["version"]) == project["version"]
    assert f"## {project['version']}" in (ADDON / "CHANGELOG.md").read_text()


def test_ports_watchdog_and_discovery_match_the_runner() -> None:
    config = _config()
    ports = {
        f"{runner.HTTP_PORT}/tcp": runner.HTTP_PORT,
        f"{runner.MQTT_PORT}/tcp": runner.MQTT_PORT,
    }
    assert config["ports"] == ports
    assert set(config["ports_description"]) == set(ports)
    # The user's Mosquitto add-on keeps 1883.
    assert 1883 not in config["ports"].values()
    assert config["watchdog"] == f"http://[HOST]:[PORT:{runner.HTTP_PORT}]/v1/health"
    # POST /discovery needs the Supervisor API and the service listed (api/discovery.py).
    assert config["hassio_api"] is True
    assert config["discovery"] == [runner.DISCOVERY_SERVICE]
    # The runner is the image's init-less CMD under s6-overlay.
    assert config["init"] is False
    # Stopping the service (closing SQLite) and then the broker fits in the stop timeout.
    assert config["timeout"] >= runner._STOP_WAIT + 10


def test_backup_is_cold_and_skips_only_logs() -> None:
    config = _config()
    assert config["backup"] == "cold"
    assert all(entry.endswith((".log", ".stderr")) for entry in config["backup_exclude"])


def _check_options(options: dict[str, Any], schema: dict[str, str]) -> None:
    """AppOptions (supervisor/apps/options.py) for the element types our schema uses."""
    for key in options:
        if key not in schema:
            raise vol.Invalid(f"Extra option {key}")
    for key, element in schema.items():
        match = RE_SCHEMA_ELEMENT.match(element)
        assert match is not None, element
        if key not in options:
            if not element.endswith("?"):
                raise vol.Invalid(f"Missing option '{key}'")
            continue
        value = options[key]
        if match.group("list"):
            vol.In(match.group("list").split("|"))(value)
        elif element.rstrip("?") == "str":
            vol.Coerce(str)(value)
        else:  # pragma: no cover - a new element type needs its check here
            pytest.fail(f"no check for schema element {element}")


def test_options_follow_the_schema_and_the_runner_reads_them() -> None:
    config = _config()
    _check_options(config["options"], config["schema"])
    assert set(config["schema"]) == set(runner.Options.__dataclass_fields__)
    levels = RE_SCHEMA_ELEMENT.match(config["schema"]["log_level"])
    assert levels is not None
    assert tuple(levels.group("list").split("|")) == runner.LOG_LEVELS
    assert config["options"]["log_level"] == runner.Options().log_level
    with pytest.raises(vol.Invalid):
        _check_options({"log_level": "loud"}, config["schema"])
    with pytest.raises(vol.Invalid):
        _check_options({"log_level": "info", "port": 1883}, config["schema"])


def test_a_broken_config_is_refused_by_the_port() -> None:
    """The port is strict where the Supervisor is: these are the mistakes it would reject."""
    good = _load(ADDON / "config.yaml")
    for broken in (
        {**good, "arch": ["x86"]},
        {**good, "startup": "later"},
        {**good, "watchdog": "http://localhost:8080/v1/health"},
        {**good, "ports": {"8080/sctp": 8080}},
        {**good, "timeout": 5},
        {**good, "schema": {"log_level": "choice(info)"}},
        {**good, "backups": "cold"},
    ):
        with pytest.raises(vol.Invalid):
            SCHEMA_APP_CONFIG(broken)


# --- build.yaml and translations ---------------------------------------------------------------


def test_build_config_has_a_base_image_per_architecture() -> None:
    build = SCHEMA_BUILD_CONFIG(_load(ADDON / "build.yaml"))
    assert set(build["build_from"]) == set(_config()["arch"])
    for arch, image in build["build_from"].items():
        assert image == f"ghcr.io/home-assistant/{arch}-base-debian:trixie"


def test_translations_name_every_option_and_port() -> None:
    config = _config()
    for path in sorted((ADDON / "translations").iterdir()):
        assert path.suffix in SUFFIXES, path
        translations = SCHEMA_APP_TRANSLATIONS(_load(path))
        assert set(translations["configuration"]) == set(config["schema"]), path
        assert set(translations["network"]) == set(config["ports"]), path
