"""docs/protocol.md is the whole wire contract an independent implementer needs: it is checked
against the code here - every route the device's HTTP servers register with the statuses it
can answer, every refusal code with its status, the session header, the ``info`` fields and
every ``window`` value, the ``setup-code.json`` keys - and the behaviours it describes (the
label's QR text line, the answer to a late CLIENT_FINISH) are checked against the device."""

from __future__ import annotations

import json
import re
from pathlib import Path

from iob_protocol.limiter import LimiterState
from iob_protocol.payload import QrPayload, SetupCode

from device_firmware.provisioning import captive, server
from device_firmware.provisioning.captive import create_captive_app
from device_firmware.provisioning.server import create_app
from device_firmware.provisioning.session_host import ReplyKind

from .conftest import AgentStarter, Provisioned
from .test_session_server import clocked_host_and_client

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def _section(title: str) -> str:
    """The text of the ``## <n>. <title>`` section."""
    text = DOC.read_text(encoding="utf-8")
    match = re.search(
        rf"^## \d+\. {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL
    )
    assert match is not None, f"docs/protocol.md has no section {title!r}"
    return match[1]


def _documented_statuses(section: str, method: str, path: str) -> set[int]:
    """The statuses in the table row of ``method path``."""
    rows = [line for line in section.splitlines() if line.startswith(f"| `{method} {path}`")]
    assert len(rows) == 1, f"{method} {path}: expected one row in docs/protocol.md, got {rows}"
    cells = rows[0].split("|")
    return {int(code) for code in re.findall(r"\b[1-5]\d\d\b", cells[2])}


async def test_every_route_of_the_device_servers_is_documented_with_its_statuses(
    start_agent: AgentStarter,
) -> None:
    section = _section("HTTP transport")
    async with start_agent() as running:
        host, controller = running.agent.session_host, running.agent.controller
        apps = {
            "lan": (create_app(host, controller), server.ROUTE_STATUSES),
            "captive": (
                create_captive_app(host, controller, origin="http://10.42.0.1"),
                captive.ROUTE_STATUSES,
            ),
        }
        for name, (app, statuses) in apps.items():
            registered = {
                (route.method, route.resource.canonical)
                for route in app.router.routes()
                if route.method != "HEAD" and route.resource is not None
            }
            assert registered == set(statuses), (name, registered ^ set(statuses))
            for (method, path), codes in statuses.items():
                assert _documented_statuses(section, method, path) == set(codes), (method, path)


def test_every_refusal_code_is_documented_with_its_status() -> None:
    section = _section("HTTP transport")
    for code, status in server.ERROR_STATUSES.items():
        assert re.search(rf"\b{status}\b[^|\n]*`{code}`", section), (code, status)
    assert f"`{server.SESSION_HEADER}`" in section


async def test_info_fields_and_window_values_are_documented(start_agent: AgentStarter) -> None:
    section = _section("HTTP transport")
    # Named, so the optional ``name`` must be documented too.
    async with (
        start_agent(name="Kitchen sensor") as running,
        running.http.get(f"{running.url}/iob/v1/info") as got,
    ):
        info = await got.json()
    for key in info:
        assert f"`{key}`" in section, key
    window = section[section.index("`window`") :]
    for state in LimiterState:
        assert f"`{state.value}`" in window, state
    assert info["window"] in {state.value for state in LimiterState}


def test_setup_code_json_format_is_documented() -> None:
    section = _section("Device files")
    document = json.loads(SetupCode.generate("0" * 16).to_json())
    assert "`setup-code.json`" in section
    for key in document:
        assert f"`{key}`" in section, key


def test_the_label_prints_the_qr_text(provisioned: Provisioned) -> None:
    label = next(path for path in provisioned.result.label_files if path.suffix == ".txt")
    lines = [line for line in label.read_text().splitlines() if line.startswith("QR text:")]
    assert len(lines) == 1, label.read_text()
    text = lines[0].removeprefix("QR text:").strip()
    assert text == provisioned.result.qr_payload
    assert QrPayload.parse(text).format() == text
    assert "QR text:" in _section("Setup payload")


async def test_a_late_client_finish_gets_the_documented_answer(provisioned: Provisioned) -> None:
    now = [1000.0]
    host, client = clocked_host_and_client(provisioned, now)
    hello = await host.handshake(client.start(), origin="lan:192.0.2.7")
    finish = client.handle_device_hello(hello.frame)
    now[0] += 61
    late = await host.handshake(finish, origin="lan:192.0.2.7")
    assert (late.kind, late.error) == (ReplyKind.AUTH_FAILED, "handshake_timeout")
    assert host.remaining_attempts() == 19  # counted once, when the deadline passed
    rules = _section("Handshake")
    assert "late CLIENT_FINISH" in rules
    assert re.search(r"late CLIENT_FINISH[^.]*`handshake_timeout`", rules)
    assert re.search(r"\b401\b[^|\n]*`handshake_timeout`", _section("HTTP transport"))
