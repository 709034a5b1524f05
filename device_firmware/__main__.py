"""``python -m device_firmware`` (installed as ``iob-device``): the agent's command line.

``run``                 the agent (systemd runs this)
``factory-provision``   identity, setup code, manufacturing record and label
``status``              state, owner, network (never secrets)
``diagnose``            the last failure, what it means and what to do next
``attempts``            the last onboarding attempts step by step (``--watch``: follow them)
``reset``               factory reset (signals a running agent, or resets in place)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, TextIO

from iob_protocol.commands import display_ssid
from iob_protocol.diagnostics import DiagnosticCode

from . import __version__
from .actions import Action
from .agent import Agent, recover_boot
from .attempts import format_header, format_step, format_table, read_attempts
from .config import DEFAULT_CONFIG_FILE, DeviceConfig
from .errors import ConfigError, DeviceError, NotProvisionedError
from .factory import FactoryInfo, ProvisionedDevice, factory_provision
from .led import find_status_led
from .network.backend import NetworkBackend
from .relay_client import RelayClient, build_ssl_context
from .reset import ResetReport, factory_reset
from .state import DeviceStateRecord, StateStore
from .supervision import RuntimeFactory, default_runtime_factory

_LOGGER = logging.getLogger("device_firmware")
EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
RESET_WAIT_SECONDS: Final = 60.0
#: How often ``attempts --watch`` reads the file.
WATCH_INTERVAL: Final = 0.2
#: Signals the running agent handles (stop, button, reset).
_AGENT_SIGNALS: Final = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2})

#: Hints beyond the protocol's one-line next step, for the person at the device's shell.
_SHELL_HINTS: Final[dict[DiagnosticCode, str]] = {
    DiagnosticCode.WIFI_AUTH_FAILED: (
        "journalctl -u iot-onboard-device shows NetworkManager's reason."
    ),
    DiagnosticCode.WIFI_AP_NOT_FOUND: "nmcli device wifi list shows what the device sees.",
    DiagnosticCode.DHCP_TIMEOUT: "nmcli device show wlan0 shows whether an address was offered.",
    DiagnosticCode.DNS_FAILED: (
        "resolvectl status (or /etc/resolv.conf) shows the DNS servers in use."
    ),
    DiagnosticCode.NO_INTERNET: "nmcli networking connectivity check asks NetworkManager.",
    DiagnosticCode.RELAY_UNREACHABLE: "curl -sS <service URL>/v1/health from the device tests it.",
    DiagnosticCode.TLS_FAILED: "openssl s_client -connect <host>:443 shows the certificate chain.",
    DiagnosticCode.CLOCK_SKEW: "timedatectl shows whether the clock is synchronised.",
    DiagnosticCode.CLAIM_REJECTED: "The device id is in the output of 'status'.",
    DiagnosticCode.CLAIM_EXPIRED: "Start the setup again in Home Assistant.",
    DiagnosticCode.BROKER_AUTH_FAILED: "Run the account service's reconcile command.",
    DiagnosticCode.BROKER_UNREACHABLE: (
        "'iob-device status' shows the broker; nc -vz <host> <port> from the device tests it."
    ),
    DiagnosticCode.TIMEOUT: "journalctl -u iot-onboard-device shows the step that was running.",
    DiagnosticCode.CAPTIVE_PORTAL: (
        "curl -sI http://network-test.debian.org/nm shows the portal's redirect."
    ),
    DiagnosticCode.WPS_FAILED: (
        "nmcli -f SSID,WPA-FLAGS,RSN-FLAGS device wifi list shows the network; "
        "journalctl -u iot-onboard-device -u NetworkManager shows why no key came."
    ),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iob-device", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"configuration file (default {DEFAULT_CONFIG_FILE}, if it exists)",
    )
    parser.add_argument("--data-dir", type=Path, help="identity and state directory")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the agent")
    run.add_argument("--simulate-network", type=Path, metavar="FILE", help="scenario file")
    run.add_argument("--zero-touch", metavar="URL", help="claim a pre-assigned device via URL")
    run.add_argument("--listen", action="append", help="LAN server address (repeatable)")
    run.add_argument("--port", type=int, help="LAN server port (0: any free port)")
    run.add_argument(
        "--port-file",
        type=Path,
        metavar="PATH",
        help="write the pid and the bound ports here as JSON once listening (with --port 0)",
    )
    run.add_argument("--advertise", action="append", help="zeroconf address or interface")
    run.add_argument("--no-advertise", action="store_true", help="no zeroconf at all")
    run.add_argument("--no-hotspot", action="store_true", help="never open the setup hotspot")
    run.add_argument("--no-mqtt", action="store_true", help="provisioning only, no MQTT")
    run.add_argument("--no-ble", action="store_true", help="no BLE provisioning (BlueZ)")
    run.add_argument("--ble-adapter", metavar="NAME", help="BlueZ adapter, such as hci0")
    run.add_argument(
        "--ble-bridge",
        metavar="HOST:PORT",
        help="serve BLE provisioning to TCP clients on loopback instead of BlueZ "
        "(tests and demos; port 0: any free port, logged as 'BLE bridge listening on')",
    )
    run.add_argument(
        "--button-gpio",
        type=int,
        metavar="N",
        help="push button on this GPIO line (short: provisioning window, hold: factory reset)",
    )
    run.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="accept http:// account-service URLs (local development only)",
    )

    factory = commands.add_parser("factory-provision", help="create identity and label")
    factory.add_argument("--model", required=True, help="model identifier in the registry")
    factory.add_argument("--output", type=Path, required=True, help="record and label directory")
    factory.add_argument("--force", action="store_true", help="replace an existing identity")
    factory.add_argument(
        "--self-test",
        action="store_true",
        help="check key and label, and add the result to the manufacturing record",
    )

    status = commands.add_parser("status", help="show the state")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    commands.add_parser("diagnose", help="explain the last failure")
    attempts = commands.add_parser(
        "attempts", help="the last onboarding attempts, step by step with timings"
    )
    attempts.add_argument(
        "--watch", action="store_true", help="then print new steps as they happen, until Ctrl-C"
    )
    reset = commands.add_parser("reset", help="factory reset")
    reset.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    return parser


def _config(args: argparse.Namespace) -> DeviceConfig:
    overrides: dict[str, Any] = {"data_dir": args.data_dir}
    if args.command == "run":
        if args.no_ble and args.ble_bridge:
            raise ConfigError("--no-ble and --ble-bridge contradict each other: drop one")
        overrides |= {
            "simulate_network": args.simulate_network,
            "zero_touch_url": args.zero_touch,
            "listen": tuple(args.listen) if args.listen else None,
            "port": args.port,
            "port_file": args.port_file,
            "advertise": tuple(args.advertise) if args.advertise else None,
            "allow_insecure_http": True if args.allow_insecure_http else None,
            "hotspot": False if args.no_hotspot else None,
            "ble": False if args.no_ble else (True if args.ble_bridge else None),
            "ble_adapter": args.ble_adapter,
            "ble_bridge": args.ble_bridge,
            "button_gpio": args.button_gpio,
        }
    path = args.config if args.config is not None else DEFAULT_CONFIG_FILE
    return DeviceConfig.load(path, **overrides)


def make_backend(config: DeviceConfig) -> NetworkBackend:
    """The simulated backend for a scenario file, NetworkManager otherwise."""
    if config.simulate_network is not None:
        from .network.simulated import Scenario, SimulatedBackend  # noqa: PLC0415

        return SimulatedBackend(Scenario.load(config.simulate_network))
    from .network.networkmanager import NetworkManagerBackend  # noqa: PLC0415 - needs D-Bus

    return NetworkManagerBackend(interface=config.wifi_interface)


def _runtime_factory(config: DeviceConfig, *, enabled: bool) -> RuntimeFactory | None:
    if not enabled:
        return None
    try:
        info = FactoryInfo.load(config.factory_file)
    except NotProvisionedError:
        return None  # run reports this with its next step
    return default_runtime_factory(
        simulated=config.simulate_network is not None,
        model=info.model,
        firmware=info.firmware_version,
        name=config.name,
    )


# --- run ----------------------------------------------------------------------------------------


def _hold_lock(config: DeviceConfig) -> int:
    """Take the agent lock (one agent per data directory) and record our pid in it."""
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(config.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise DeviceError(f"another agent is running on {config.data_dir}") from None
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{os.getpid()}\n".encode())
    return descriptor


def running_agent_pid(config: DeviceConfig) -> int | None:
    """The pid of the agent holding the lock, or None when no agent runs."""
    try:
        descriptor = os.open(config.lock_file, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(descriptor, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        return None
    finally:
        os.close(descriptor)


async def _run(config: DeviceConfig, *, advertise: bool, mqtt: bool) -> int:
    status_led = await asyncio.to_thread(find_status_led)
    agent = Agent(
        config,
        make_backend(config),
        runtime_factory=_runtime_factory(config, enabled=mqtt),
        advertise=advertise and bool(config.advertise),
        status_led=status_led,
    )
    if advertise and not config.advertise:
        _LOGGER.warning("no 'advertise' addresses configured: zeroconf is off")
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, agent.stop)
    loop.add_signal_handler(signal.SIGINT, agent.stop)
    loop.add_signal_handler(signal.SIGUSR1, agent.request, Action.BUTTON)
    loop.add_signal_handler(signal.SIGUSR2, agent.request, Action.RESET)
    # Handled from here on: what arrived since the lock was taken is delivered now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _AGENT_SIGNALS)
    await agent.run()
    return EXIT_OK


# --- status and diagnose ------------------------------------------------------------------------


def _load_for_display(config: DeviceConfig) -> tuple[FactoryInfo, DeviceStateRecord]:
    info = FactoryInfo.load(config.factory_file)
    record = StateStore(config.state_file).load()
    return info, record


def _status(config: DeviceConfig, *, as_json: bool, out: TextIO) -> int:
    info, record = _load_for_display(config)
    document: dict[str, Any] = {
        "device_id": info.device_id,
        "model": info.model,
        "firmware_version": info.firmware_version,
        "phase": record.phase.value,
        "diagnostic": None if record.diagnostic is None else record.diagnostic.value,
        "diagnostic_at": record.diagnostic_at,
        "household_id": None if record.ownership is None else record.ownership.household_id,
        "service_url": None if record.ownership is None else record.ownership.service_url,
        "wifi_ssid": None if record.wifi_ssid is None else display_ssid(record.wifi_ssid),
        "mqtt_broker": None
        if record.mqtt is None
        else f"{record.mqtt.host}:{record.mqtt.port}{' (TLS)' if record.mqtt.tls else ''}",
        # Whether the owner's Home Assistant can reopen a session (never the secret itself).
        "owner_secret_saved": record.owner_secret is not None,
        "agent_pid": running_agent_pid(config),
    }
    if as_json:
        out.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
        return EXIT_OK
    out.writelines(
        f"{key.replace('_', ' '):17} {'-' if value is None else value}\n"
        for key, value in document.items()
    )
    return EXIT_OK


def _diagnose(config: DeviceConfig, out: TextIO) -> int:
    info, record = _load_for_display(config)
    code = record.diagnostic
    if code is None:
        out.write(f"Device {info.device_id} is {record.phase.value}; no failure is recorded.\n")
        return EXIT_OK
    when = (
        time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(record.diagnostic_at))
        if record.diagnostic_at is not None
        else "unknown time"
    )
    out.write(
        f"Last failure: {code.value} ({when})\n"
        f"What happened: {code.message}\n"
        f"Next step:     {code.next_step}\n"
        f"On the device: {_SHELL_HINTS[code]}\n"
        f"State:         {record.phase.value}"
        f"{' (the previous network was kept)' if record.phase.value == 'provisioning' else ''}\n"
    )
    return EXIT_OK


def _attempts(config: DeviceConfig, *, watch: bool, out: TextIO) -> int:
    """Print the recorded attempts; with ``watch``, follow the file until Ctrl-C."""
    path = config.attempts_file
    attempts = read_attempts(path)
    out.write(format_table(attempts))
    if not watch:
        return EXIT_OK
    seen = {(attempt.number, index) for attempt in attempts for index in range(len(attempt.steps))}
    out.write(f"Watching {path} for new steps (Ctrl-C to stop)...\n")
    out.flush()
    try:
        while True:
            time.sleep(WATCH_INTERVAL)
            for attempt in read_attempts(path, warn=False):
                new = [
                    (index, step)
                    for index, step in enumerate(attempt.steps)
                    if (attempt.number, index) not in seen
                ]
                if not new:
                    continue
                if not any(number == attempt.number for number, _index in seen):
                    out.write(format_header(attempt))
                for index, step in new:
                    seen.add((attempt.number, index))
                    out.write(format_step(step))
                out.flush()
    except KeyboardInterrupt:
        out.write("Stopped.\n")
        return EXIT_OK


# --- reset --------------------------------------------------------------------------------------


def _reset(config: DeviceConfig, *, out: TextIO) -> int:
    pid = running_agent_pid(config)
    if pid is not None:
        before = StateStore(config.state_file).load().generation
        os.kill(pid, signal.SIGUSR2)
        out.write(f"Asked the running agent (pid {pid}) to factory-reset...\n")
        deadline = time.monotonic() + RESET_WAIT_SECONDS
        while time.monotonic() < deadline:
            record = StateStore(config.state_file).load()
            if (
                record.generation > before
                and not record.claimed
                and record.phase.value == "unclaimed"
            ):
                out.write("Done: the device is unclaimed and its provisioning window is open.\n")
                return EXIT_OK
            time.sleep(0.2)
        out.write("The agent did not confirm the reset; see journalctl -u iot-onboard-device.\n")
        return EXIT_ERROR
    report = asyncio.run(_reset_in_place(config))
    _print_report(report, out)
    return EXIT_OK


async def _reset_in_place(config: DeviceConfig) -> ResetReport:
    device = await asyncio.to_thread(ProvisionedDevice.load, config)
    backend = make_backend(config)
    store = StateStore(config.state_file)
    await recover_boot(store, backend)
    ssl_context = await asyncio.to_thread(build_ssl_context, config.relay_ca_file)
    runtime_factory = _runtime_factory(config, enabled=True)

    async def clear_retained(record: DeviceStateRecord) -> None:
        if runtime_factory is not None and record.mqtt is not None:
            await runtime_factory(device.info.device_id, record.mqtt).clear_retained()

    try:
        return await factory_reset(
            identity=device.identity,
            store=store,
            backend=backend,
            relay_factory=lambda url: RelayClient(
                url,
                timeout=config.relay_timeout,
                ssl_context=ssl_context,
                allow_insecure_http=config.allow_insecure_http,
            ),
            clear_retained=clear_retained,
        )
    finally:
        await backend.aclose()


def _print_report(report: ResetReport, out: TextIO) -> None:
    out.write("Factory reset done: Wi-Fi, owner and MQTT credentials are gone.\n")
    out.writelines(f"  note: {problem}\n" for problem in report.problems)
    out.write("The provisioning window opens when the agent starts.\n")


# --- main ---------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Entry point; returns the exit status."""
    out = out or sys.stdout
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return _command(args, _config(args), out)
    except DeviceError as err:
        sys.stderr.write(f"error: {err}\n")
        return EXIT_ERROR


def _show(args: argparse.Namespace, config: DeviceConfig, out: TextIO) -> int:
    """The read-only commands."""
    if args.command == "status":
        return _status(config, as_json=args.json, out=out)
    if args.command == "diagnose":
        return _diagnose(config, out)
    return _attempts(config, watch=args.watch, out=out)


def _command(args: argparse.Namespace, config: DeviceConfig, out: TextIO) -> int:
    if args.command == "run":
        # The lock tells `reset` that an agent runs; a SIGUSR2 sent before the handlers exist
        # would otherwise kill the agent (the default action) instead of resetting it.
        signal.pthread_sigmask(signal.SIG_BLOCK, _AGENT_SIGNALS)
        try:
            lock = _hold_lock(config)
            try:
                return asyncio.run(
                    _run(config, advertise=not args.no_advertise, mqtt=not args.no_mqtt)
                )
            finally:
                os.close(lock)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _AGENT_SIGNALS)
    if args.command == "factory-provision":
        result = factory_provision(
            config,
            model=args.model,
            output_dir=args.output,
            force=args.force,
            self_test=args.self_test,
        )
        out.write(
            f"Device {result.device_id} provisioned.\n"
            f"Manual code: {result.manual_code}\n"
            f"Record appended to {result.record_file}\n"
            f"Label: {', '.join(str(path) for path in result.label_files)}\n"
        )
        if result.self_test is None:
            return EXIT_OK
        for check in result.self_test.checks:
            out.write(f"Self-test {check.name}: {check.result} ({check.reason})\n")
            if check.result == "fail":
                out.write(f"  next step: {check.next_step}\n")
        return EXIT_OK if result.self_test.passed else EXIT_ERROR
    if args.command in {"status", "diagnose", "attempts"}:
        return _show(args, config, out)
    if not args.yes and sys.stdin.isatty():
        answer = input("Factory reset: forget Wi-Fi, owner and MQTT credentials? [y/N] ")
        if answer.strip().lower() not in {"y", "yes"}:
            out.write("Cancelled.\n")
            return EXIT_ERROR
    return _reset(config, out=out)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
