"""docs/support.md cannot drift: a section per diagnostic code, quotes equal to the translations,
only commands and admin endpoints that exist."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from aiohttp import web
from iob_protocol.diagnostics import DiagnosticCode

from cloud_relay.__main__ import _parser as relay_parser
from cloud_relay.api.admin import routes as admin_routes
from device_firmware.__main__ import _parser as device_parser

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "support.md"
TRANSLATIONS = REPO / "custom_components" / "iot_onboard" / "translations" / "en.json"

#: A heading per code: ``## `WIFI_AUTH_FAILED` ``.
_HEADING = re.compile(r"^## `([A-Z_]+)`\s*$", re.MULTILINE)
#: ``(`config.error.key`):`` followed by a blank line and a one-line block quote.
_QUOTE = re.compile(r"\(`config\.(error|abort)\.([a-z_]+)`\):\n\n> (.+)\n")
_DEVICE_COMMAND = re.compile(r"iob-device ([a-z-]+)((?: --[a-z-]+)*)")
_RELAY_COMMAND = re.compile(r"python -m cloud_relay ([a-z-]+)(?: ([a-z-]+))?")
_ADMIN_ENDPOINT = re.compile(r"(GET|POST|PUT|DELETE) (/v1/admin/[^\s`?]*)")


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def _sections(text: str) -> dict[str, str]:
    """Each code's section text, by code."""
    matches = list(_HEADING.finditer(text))
    ends = [match.start() for match in matches[1:]] + [len(text)]
    return {
        match.group(1): text[match.end() : end] for match, end in zip(matches, ends, strict=True)
    }


def _translations() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(TRANSLATIONS.read_text(encoding="utf-8"))["config"]
    return document


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse has no public accessor
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def test_every_diagnostic_code_has_a_section() -> None:
    sections = _sections(_doc())
    missing = [code.value for code in DiagnosticCode if code.value not in sections]
    assert not missing, f"docs/support.md has no section for {missing}"
    unknown = [name for name in sections if name not in DiagnosticCode.__members__]
    assert not unknown, f"docs/support.md has sections for codes that do not exist: {unknown}"
    for code, section in sections.items():
        for part in ("**Meaning.**", "**What the user saw**", "**Ask.**", "**Check.**"):
            assert part in section, f"the {code} section lacks {part}"
        assert "**Next step.**" in section, f"the {code} section lacks its next step"


def test_each_section_quotes_what_the_flow_shows_for_its_code() -> None:
    """The flow shows a code as ``config.error.<code in lower case>`` (flow_errors.py's
    ``diagnostic_error``, not importable without Home Assistant)."""
    errors = _translations()["error"]
    for code, section in _sections(_doc()).items():
        key = code.lower()
        assert key in errors, f"translations/en.json has no config.error.{key} for {code}"
        quoted = {(kind, name) for kind, name, _text in _QUOTE.findall(section)}
        assert ("error", key) in quoted, f"the {code} section does not quote config.error.{key}"


def test_every_quote_equals_the_current_translation() -> None:
    translations = _translations()
    quotes = _QUOTE.findall(_doc())
    assert len(quotes) >= len(DiagnosticCode)
    wrong = [
        f"config.{kind}.{key}"
        for kind, key, text in quotes
        if translations[kind].get(key) != text.strip()
    ]
    assert not wrong, f"docs/support.md quotes these differently from translations/en.json: {wrong}"


def test_every_named_command_and_endpoint_exists() -> None:
    text = _doc()
    device = _subcommands(device_parser())
    named = _DEVICE_COMMAND.findall(text)
    assert {"diagnose", "status", "attempts"} <= {name for name, _flags in named}
    for name, flags in named:
        assert name in device, f"docs/support.md names `iob-device {name}`, which does not exist"
        for flag in flags.split():
            assert flag in _options(device[name]), f"`iob-device {name}` has no {flag}"
    relay = _subcommands(relay_parser())
    relay_named = _RELAY_COMMAND.findall(text)
    assert relay_named
    for command, action in relay_named:
        assert command in relay, f"`python -m cloud_relay {command}` does not exist"
        if action:
            assert action in _subcommands(relay[command]), (
                f"`python -m cloud_relay {command} {action}` does not exist"
            )
    served = {
        (route.method, route.path) for route in admin_routes if isinstance(route, web.RouteDef)
    }
    endpoints = _ADMIN_ENDPOINT.findall(text)
    assert endpoints
    for method, path in endpoints:
        assert (method, path) in served, f"the account service has no {method} {path}"


def test_the_checks_catch_drift() -> None:
    """The patterns find what they must (a check that matches nothing would pass anything)."""
    section = "(`config.error.timeout`):\n\n> Some old text.\n"
    assert _QUOTE.findall(section) == [("error", "timeout", "Some old text.")]
    assert _translations()["error"]["timeout"] != "Some old text."
    assert _DEVICE_COMMAND.findall("`iob-device attempts --watch`") == [("attempts", " --watch")]
    assert "no-such" not in _subcommands(device_parser())
    assert _ADMIN_ENDPOINT.findall("`GET /v1/admin/audit?device_id=x`") == [
        ("GET", "/v1/admin/audit")
    ]
