"""What HACS's own validation (hacs/action, category integration) checks in this repository.

The rules follow HACS's validators (``custom_components/hacs/validate/`` and
``utils/validate.py`` of hacs/integration): ``hacsjson`` (hacs.json at the root, only known
keys, ``name`` required), ``integration_manifest`` (``codeowners``, ``documentation``,
``domain``, ``issue_tracker``, ``name``, ``version``), ``information`` (a README), ``license``
(GitHub must recognise an open-source licence: a LICENSE file with the standard text), the
content path (the first folder under ``custom_components/`` is the integration) and hassfest's
key order, which the action runs too. The remaining checks (archived, description, topics,
issues, brands) are settings of the GitHub repository, not files in it.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from packaging.version import InvalidVersion, Version

REPO = Path(__file__).resolve().parent.parent
#: Debian's copy of the Apache License 2.0 (package base-files, on every Debian system).
DEBIAN_APACHE = Path("/usr/share/common-licenses/Apache-2.0")

#: hacs.json keys HACS accepts (HACS_MANIFEST_JSON_SCHEMA, extra keys prevented).
HACS_JSON_KEYS: dict[str, type | tuple[type, ...]] = {
    "content_in_root": bool,
    "country": (str, list),
    "filename": str,
    "hacs": str,
    "hide_default_branch": bool,
    "homeassistant": str,
    "persistent_directory": str,
    "render_readme": bool,
    "zip_release": bool,
    "name": str,
}
#: manifest.json keys HACS requires (INTEGRATION_MANIFEST_JSON_SCHEMA).
MANIFEST_REQUIRED = {"codeowners", "documentation", "domain", "issue_tracker", "name", "version"}


def _words(text: str) -> list[str]:
    return text.split()


def _hacs_json() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((REPO / "hacs.json").read_text())
    return data


def _integration_dirs() -> list[Path]:
    return sorted(
        path
        for path in (REPO / "custom_components").iterdir()
        if path.is_dir() and path.name != "__pycache__"
    )


def _manifest() -> dict[str, Any]:
    (integration,) = _integration_dirs()
    data: dict[str, Any] = json.loads((integration / "manifest.json").read_text())
    return data


def _is_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in {"http", "https"} and bool(parts.netloc)


def test_hacs_json_has_only_known_keys_of_the_right_type() -> None:
    data = _hacs_json()
    assert isinstance(data.get("name"), str)
    assert data["name"]
    assert set(data) - set(HACS_JSON_KEYS) == set()
    for key, value in data.items():
        assert isinstance(value, HACS_JSON_KEYS[key]), key
    # The integration is under custom_components/, not at the root; no zip release.
    assert data.get("content_in_root", False) is False
    assert not data.get("zip_release", False)


def test_hacs_json_minimum_home_assistant_is_the_oldest_tested() -> None:
    minimum = Version(_hacs_json()["homeassistant"])
    oldest_in = (REPO / "requirements" / "oldest.lock").read_text()
    pinned = re.search(r"^homeassistant==(\S+)$", oldest_in, re.MULTILINE)
    assert pinned is not None
    tested = Version(pinned.group(1))
    assert (minimum.major, minimum.minor) == (tested.major, tested.minor)


def test_one_integration_folder_named_after_its_domain() -> None:
    dirs = _integration_dirs()
    assert [d.name for d in dirs] == [_manifest()["domain"]]


def test_manifest_has_what_hacs_requires() -> None:
    manifest = _manifest()
    assert MANIFEST_REQUIRED - set(manifest) == set()
    assert isinstance(manifest["name"], str)
    assert manifest["name"]
    assert isinstance(manifest["codeowners"], list)
    assert manifest["codeowners"]
    assert all(re.fullmatch(r"@[\w.-]+(/[\w.-]+)?", owner) for owner in manifest["codeowners"])
    assert _is_url(manifest["documentation"])
    assert _is_url(manifest["issue_tracker"])
    try:
        Version(manifest["version"])
    except InvalidVersion:
        pytest.fail(f"manifest version {manifest['version']!r} is not a valid version")


def test_manifest_keys_in_hassfest_order() -> None:
    keys = list(_manifest())
    assert keys[:2] == ["domain", "name"]
    assert keys[2:] == sorted(keys[2:])


def test_manifest_version_matches_the_release() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert _manifest()["version"] == project["version"]


def test_readme_is_the_information_file() -> None:
    # render_readme: HACS shows README.md as the repository's information.
    assert _hacs_json().get("render_readme") is True
    readme = REPO / "README.md"
    assert readme.is_file()
    assert readme.read_text().strip()


def test_license_file_is_the_standard_apache_2_text() -> None:
    """GitHub recognises the licence from LICENSE's text; HACS asks GitHub (key apache-2.0)."""
    license_file = REPO / "LICENSE"
    assert license_file.is_file(), "no LICENSE at the repository root"
    words = _words(license_file.read_text())
    assert words[:5] == ["Apache", "License", "Version", "2.0,", "January"]
    assert "END OF TERMS AND CONDITIONS" in " ".join(words)
    if DEBIAN_APACHE.is_file():  # the full standard text, word for word
        assert words == _words(DEBIAN_APACHE.read_text())


def test_pyproject_declares_the_same_license() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
