"""``iob-device attempts``: the last onboarding attempts step by step, from real onboardings.

The agent runs on loopback over the simulated Wi-Fi (``start_agent``) against the real account
service and Mosquitto (``account_service``) or the fault injector (``scripted_service``); the
CLI reads the file the agent wrote, once or following it (``--watch``, a real subprocess
stopped with SIGINT).
"""

from __future__ import annotations

import asyncio
import io
import logging
import signal
import stat
from pathlib import Path

import pytest
from iob_protocol.canonical import b64url_encode
from iob_protocol.commands import OkResponse, SetClaimRequest, SetWifiRequest
from iob_protocol.diagnostics import DiagnosticCode
from iob_protocol.payload import QrPayload

from device_firmware.__main__ import main
from device_firmware.attempts import (
    MAX_ATTEMPTS,
    MAX_STEPS,
    AttemptLog,
    Step,
    read_attempts,
)
from device_firmware.state import DeviceStateRecord, Phase, StateStore
from device_firmware.supervision import default_runtime_factory
from tests.plugins.scripted_service import ScriptedService

from .commit_helpers import OWNER_SECRET, TOKEN, commit, wait_status
from .conftest import (
    HOME_PASSPHRASE,
    HOME_SSID,
    WRONG_PASSPHRASE,
    AgentStarter,
    Provisioned,
    RunningAgent,
    agent_command,
    provision,
)
from .real_relay import RealRelay

REPO = Path(__file__).resolve().parents[2]

CLAIM_STEPS = [
    Step.HANDSHAKE_STARTED,
    Step.HANDSHAKE_FINISHED,
    Step.WIFI_SET,
    Step.CLAIM_SET,
    Step.COMMIT_STARTED,
    Step.WIFI_JOINED,
    Step.SERVICE_CHECKED,
    Step.CLAIM_CONFIRMED,
    Step.COMMITTED,
    Step.MQTT_ONLINE,
]


def cli(provisioned: Provisioned, *args: str) -> tuple[int, str]:
    config = provisioned.config.data_dir.parent / "none.toml"
    config.write_text("")
    out = io.StringIO()
    code = main(
        ["--config", str(config), "--data-dir", str(provisioned.config.data_dir), *args], out=out
    )
    return code, out.getvalue()


def secrets_of(provisioned: Provisioned, *more: str) -> list[str]:
    """What must never be in the attempts file."""
    qr = QrPayload.parse(provisioned.result.qr_payload)
    return [
        HOME_PASSPHRASE,
        WRONG_PASSPHRASE,
        HOME_SSID.decode(),
        TOKEN,
        provisioned.result.manual_code,
        provisioned.result.manual_code.replace("-", ""),
        provisioned.result.qr_payload,
        b64url_encode(OWNER_SECRET),
        OWNER_SECRET.hex(),
        qr.setup_secret.hex(),
        b64url_encode(qr.setup_secret),
        *more,
    ]


async def wait_for_step(running: RunningAgent, step: Step) -> None:
    """Until the agent's current attempt has ``step`` (bounded, not timed)."""
    for _ in range(3000):
        current = running.agent.attempts.current
        if current is not None and step in [record.step for record in current.steps]:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no {step} in {running.agent.attempts.current}")


async def read_until(stream: asyncio.StreamReader, needle: str, seen: list[str]) -> None:
    async with asyncio.timeout(30):
        while True:
            line = (await stream.readline()).decode()
            assert line, f"the watcher ended before printing {needle!r}: {seen}"
            seen.append(line)
            if needle in line:
                return


async def test_a_claim_is_recorded_step_by_step_and_watched_live(
    start_agent: AgentStarter, provisioned: Provisioned, account_service: RealRelay
) -> None:
    relay = account_service
    config = provisioned.config.data_dir.parent / "none.toml"
    config.write_text("")
    watcher = await asyncio.create_subprocess_exec(
        *agent_command(provisioned, "attempts", "--watch", config=config),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    lines: list[str] = []
    try:
        assert watcher.stdout is not None
        await read_until(watcher.stdout, "Watching", lines)
        assert lines[0] == "No onboarding attempts recorded yet.\n"
        factory = default_runtime_factory(simulated=True, model="pi-test", firmware="0.1.0")
        claim = await relay.claim(provisioned.device.identity.device_id)
        async with start_agent(runtime_factory=factory) as running:
            _client, status = await commit(running, relay.url, token=claim["token"])
            assert (status.state.value, status.diagnostic) == ("committed", None)
            await wait_for_step(running, Step.MQTT_ONLINE)
        # The watcher prints each step as the agent writes it, the last one included.
        await read_until(watcher.stdout, "mqtt_online", lines)
    finally:
        if watcher.returncode is None:
            watcher.send_signal(signal.SIGINT)
        rest, errors = await watcher.communicate()
    assert watcher.returncode == 0, errors.decode()
    assert rest.decode().endswith("Stopped.\n")
    watched = [line.split()[0] for line in lines if line.startswith("  ") and "t+s" not in line]
    assert watched == [step.value for step in CLAIM_STEPS]
    assert any(line.startswith("attempt 1 ") and "via lan" in line for line in lines)

    path = provisioned.config.attempts_file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (attempt,) = read_attempts(path)
    assert [record.step for record in attempt.steps] == CLAIM_STEPS
    assert attempt.via == "lan"
    results = {record.step: record.result for record in attempt.steps}
    assert results[Step.COMMIT_STARTED] == "claim"
    assert {result for step, result in results.items() if step is not Step.COMMIT_STARTED} == {"ok"}
    times = [record.seconds for record in attempt.steps]
    assert times == sorted(times)
    assert times[0] >= 0

    text = path.read_text()
    mqtt = running.agent.store.current.mqtt
    assert mqtt is not None
    for secret in secrets_of(provisioned, claim["token"], mqtt.password):
        assert secret not in text, f"the attempts file holds a secret: {secret[:6]}..."

    code, table = cli(provisioned, "attempts")
    assert code == 0
    rows = [line.split() for line in table.splitlines() if line.startswith("  ")]
    assert rows[0] == ["step", "t+s", "result"]
    assert [row[0] for row in rows[1:]] == [step.value for step in CLAIM_STEPS]
    assert [float(row[1]) for row in rows[1:]] == [round(t, 3) for t in times]


async def test_a_failed_wifi_shows_its_diagnostic_and_the_retry_is_a_new_attempt(
    start_agent: AgentStarter, provisioned: Provisioned, scripted_service: ScriptedService
) -> None:
    async with start_agent() as running:
        client, status = await commit(running, scripted_service.url, passphrase=WRONG_PASSPHRASE)
        assert (status.state.value, status.diagnostic) == (
            "provisioning",
            DiagnosticCode.WIFI_AUTH_FAILED,
        )
        # The user types the right password: same session, a new attempt.
        await commit(running, scripted_service.url, client=client)
        await wait_for_step(running, Step.COMMITTED)
    first, second = read_attempts(provisioned.config.attempts_file)
    assert [(record.step, record.result) for record in first.steps] == [
        (Step.HANDSHAKE_STARTED, "ok"),
        (Step.HANDSHAKE_FINISHED, "ok"),
        (Step.WIFI_SET, "ok"),
        (Step.CLAIM_SET, "ok"),
        (Step.COMMIT_STARTED, "claim"),
        (Step.WIFI_FAILED, "WIFI_AUTH_FAILED"),
        (Step.ROLLED_BACK, "WIFI_AUTH_FAILED"),
    ]
    assert (second.number, second.via) == (first.number + 1, "session")
    # The retry: the same session, so no handshake; no MQTT after the failed first try.
    assert [record.step for record in second.steps] == CLAIM_STEPS[2:-1]
    code, table = cli(provisioned, "attempts")
    assert code == 0
    failed = [line.split() for line in table.splitlines() if "wifi_failed" in line]
    assert len(failed) == 1
    assert failed[0][0] == "wifi_failed"
    assert failed[0][2] == "WIFI_AUTH_FAILED"
    text = provisioned.config.attempts_file.read_text()
    for secret in secrets_of(provisioned):
        assert secret not in text, f"the attempts file holds a secret: {secret[:6]}..."


async def test_a_wrong_label_is_a_failed_handshake(
    start_agent: AgentStarter, provisioned: Provisioned, tmp_path: Path
) -> None:
    other = provision(tmp_path / "other")
    async with start_agent() as running:
        reply = await running.client().handshake(other.qr_client())
        assert reply.status != 204
        await wait_for_step(running, Step.HANDSHAKE_FAILED)
    (attempt,) = read_attempts(provisioned.config.attempts_file)
    assert [record.step for record in attempt.steps] == [
        Step.HANDSHAKE_STARTED,
        Step.HANDSHAKE_FAILED,
    ]
    assert attempt.steps[1].result == reply.error


async def test_a_malformed_file_is_ignored_with_one_line_and_replaced(
    start_agent: AgentStarter,
    provisioned: Provisioned,
    scripted_service: ScriptedService,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = provisioned.config.attempts_file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"format": "iob-device-attempts-v1", "attempts": [{"number": "x"}]}')
    caplog.set_level(logging.WARNING, logger="device_firmware.attempts")
    code, table = cli(provisioned, "attempts")
    assert (code, table) == (0, "No onboarding attempts recorded yet.\n")
    caplog.clear()
    async with start_agent() as running:
        await commit(running, scripted_service.url)
        await wait_for_step(running, Step.COMMITTED)
    warnings = [r for r in caplog.records if r.name == "device_firmware.attempts"]
    assert len(warnings) == 1
    assert warnings[0].exc_info is None
    assert "ignoring the onboarding attempts file" in warnings[0].getMessage()
    (attempt,) = read_attempts(path)
    assert attempt.number == 1
    assert attempt.steps[-1].step is Step.COMMITTED


async def test_a_restart_keeps_the_attempts_and_numbers_on(
    start_agent: AgentStarter, provisioned: Provisioned, tmp_path: Path
) -> None:
    other = provision(tmp_path / "other")
    async with start_agent() as running:
        await running.client().handshake(other.qr_client())
        await wait_for_step(running, Step.HANDSHAKE_FAILED)
    async with start_agent() as running:
        client = await running.connected_client()
        ack = await client.call(
            SetWifiRequest(request_id=client.next_id(), ssid=HOME_SSID, passphrase=HOME_PASSPHRASE)
        )
        assert isinstance(ack, OkResponse)
        await wait_for_step(running, Step.WIFI_SET)
    first, second = read_attempts(provisioned.config.attempts_file)
    assert (first.number, second.number) == (1, 2)
    assert [record.step for record in second.steps] == [
        Step.HANDSHAKE_STARTED,
        Step.HANDSHAKE_FINISHED,
        Step.WIFI_SET,
    ]


def test_the_file_is_bounded_and_private(tmp_path: Path) -> None:
    path = tmp_path / "attempts.json"
    ticks = iter(range(1000))
    log = AttemptLog(path, clock=lambda: float(next(ticks)), wall_clock=lambda: 1_700_000_000)
    for _ in range(MAX_ATTEMPTS + 3):
        log.record(Step.HANDSHAKE_STARTED, via="lan")
        for _ in range(2 * MAX_STEPS):
            log.record(Step.WIFI_SET)
    attempts = read_attempts(path)
    assert [attempt.number for attempt in attempts] == list(range(4, MAX_ATTEMPTS + 4))
    assert {len(attempt.steps) for attempt in attempts} == {MAX_STEPS}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Free text never gets in: a result is a code or "other".
    log.record(Step.HANDSHAKE_STARTED, via="lan")
    log.record(Step.ROLLED_BACK, "pass phrase with spaces")
    assert read_attempts(path)[-1].steps[-1].result == "other"


async def test_set_claim_records_no_token(
    start_agent: AgentStarter, provisioned: Provisioned, scripted_service: ScriptedService
) -> None:
    async with start_agent() as running:
        client = await running.connected_client()
        ack = await client.call(
            SetClaimRequest(
                request_id=client.next_id(),
                service_url=scripted_service.url,
                claim_token=TOKEN,
                owner_secret=OWNER_SECRET,
                allow_insecure_http=True,
            )
        )
        assert isinstance(ack, OkResponse)
        await wait_for_step(running, Step.CLAIM_SET)
        status = await wait_status(client)
        assert status.state.value == "provisioning"
    text = provisioned.config.attempts_file.read_text()
    assert TOKEN not in text
    assert scripted_service.url not in text


async def test_a_commit_cut_by_a_power_loss_is_rolled_back_at_boot(
    start_agent: AgentStarter, provisioned: Provisioned
) -> None:
    """The power went during an unconfirmed commit: the boot's rollback is an attempt too."""
    StateStore(provisioned.config.state_file).write(DeviceStateRecord(phase=Phase.COMMITTING))
    async with start_agent() as running:
        assert running.agent.store.current.diagnostic is DiagnosticCode.TIMEOUT
    (attempt,) = read_attempts(provisioned.config.attempts_file)
    assert attempt.via == "boot"
    assert [(record.step, record.result) for record in attempt.steps] == [
        (Step.ROLLED_BACK, "TIMEOUT")
    ]
    code, table = cli(provisioned, "attempts")
    assert code == 0
    assert "via boot" in table
