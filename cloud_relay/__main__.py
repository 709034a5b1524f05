"""Command line: ``python -m cloud_relay serve | migrate | registry | admin | audit | broker``.

``provisioning-token`` mints a one-time token for the Home Assistant add-on's announcement.

Installed from the wheel it is also the ``iob-relay`` command.

Every command reads the same configuration as the server (``--config``, or the
``IOB_RELAY_CONFIG`` environment variable, default ``relay.toml``) and runs the same service
code. Exit status: 0 success, 1 failure (message on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from aiohttp import web

import contextlib

from .announce import SERVICE_TYPE, RelayAnnouncer, check_addresses, check_public_url
from .broker.mosquitto import MosquittoDynsecAdapter
from .config import RelayConfig, load_config, write_secret_key
from .context import Context
from .errors import ConfigError, RelayError, exit_status
from .provisioning import DEFAULT_TTL, mint_token, tokens_path
from .registry import parse_records
from .relay import Relay
from .storage import open_storage
from .storage.files import write_port_file, write_private_file

CLI_ACTOR: Final = "cli"
_SAMPLE_CONFIG: Final = """\
# IoT Onboard account service (see docs/relay.md).
database_url = "sqlite:///relay.db"
secret_key_file = "secret.key"

[http]
host = "127.0.0.1"
port = 8080

[broker]
# Where the relay administers Mosquitto's dynamic security (its admin client).
host = "127.0.0.1"
port = 1883
username = "iob-admin"
# password = "..."   # or IOB_RELAY_BROKER_PASSWORD
# What devices and hubs are told.
public_host = "mqtt.example.com"
public_port = 8883
public_tls = true
"""


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _parser() -> argparse.ArgumentParser:
    # Usage names the command as it was typed: the installed script or ``python -m``.
    script = Path(sys.argv[0]).name
    prog = "python -m cloud_relay" if script in {"__main__.py", ""} else script
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(os.environ.get("IOB_RELAY_CONFIG", "relay.toml")),
        help="TOML configuration (default: $IOB_RELAY_CONFIG or relay.toml)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP server")
    serve.add_argument(
        "--announce",
        action="append",
        metavar="ADDRESS",
        default=[],
        help=f"announce the service as {SERVICE_TYPE} on this IPv4 address (repeatable)",
    )
    serve.add_argument(
        "--announce-url",
        metavar="URL",
        help="with --announce: the https address of a TLS proxy in front of the service "
        "(TXT url; Home Assistant accepts plain http only on its own host)",
    )
    serve.add_argument(
        "--port-file",
        type=Path,
        metavar="PATH",
        help='once listening, write {"pid": ..., "http": PORT} here (with [http] port = 0: '
        "any free port, named without a race)",
    )
    commands.add_parser("migrate", help="apply pending database migrations")
    commands.add_parser("init", help="write a sample config (if missing) and the secret key")
    provision = commands.add_parser(
        "provisioning-token", help="mint a one-time provisioning token (printed, stored hashed)"
    )
    provision.add_argument(
        "--ttl", type=int, default=DEFAULT_TTL, help=f"seconds (default {DEFAULT_TTL})"
    )

    registry = commands.add_parser("registry", help="manufacturing registry").add_subparsers(
        dest="action", required=True
    )
    registry_import = registry.add_parser("import", help="import factory-provision records")
    registry_import.add_argument("file", type=Path, help="JSON lines, one record per line")
    preassign = registry.add_parser("preassign", help="pre-assign a device (zero-touch)")
    preassign.add_argument("device_id")
    preassign.add_argument("household_id", nargs="?", help="omit with --clear")
    preassign.add_argument("--order", help="order reference")
    preassign.add_argument("--clear", action="store_true", help="remove the pre-assignment")

    admin = commands.add_parser("admin", help="accounts and models").add_subparsers(
        dest="action", required=True
    )
    create = admin.add_parser("create-account", help="create an account")
    create.add_argument("email")
    create.add_argument("--admin", action="store_true", help="make it a service administrator")
    create.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    grant = admin.add_parser("grant-admin", help="make an account a service administrator")
    grant.add_argument("email")
    revoke = admin.add_parser("revoke-sessions", help="sign an account out everywhere")
    revoke.add_argument("email")
    model = admin.add_parser("set-model", help="create or replace a device model")
    model.add_argument("model")
    model.add_argument("--name", required=True)
    model.add_argument("--manufacturer", default="")
    model.add_argument("--metadata", default="{}", help="a JSON object")

    audit = commands.add_parser("audit", help="audit log").add_subparsers(
        dest="action", required=True
    )
    audit.add_parser("verify", help="check the hash chain; exit 1 if it is broken")
    broker = commands.add_parser("broker", help="broker").add_subparsers(
        dest="action", required=True
    )
    broker.add_parser("reconcile", help="make the broker match the database")
    return parser


async def _with_relay(config: RelayConfig, work: Callable[[Relay], Awaitable[int]]) -> int:
    storage = await open_storage(config.database_url)
    # Connects lazily: only commands that touch the broker reach it.
    adapter = MosquittoDynsecAdapter(
        config.broker.host, config.broker.port, config.broker.username, config.broker.password
    )
    try:
        await storage.migrate()
        return await work(Relay(Context(config=config, storage=storage, broker=adapter)))
    finally:
        await adapter.aclose()
        await storage.close()


async def _account_id(relay: Relay, email: str) -> str:
    account = await relay.accounts.find(email)
    if account is None:
        raise RelayError(f"no account with e-mail {email}; create it with admin create-account")
    return account.id


async def _run(args: argparse.Namespace, config: RelayConfig) -> int:  # noqa: C901 - dispatcher
    command, action = args.command, getattr(args, "action", None)

    async def work(relay: Relay) -> int:  # noqa: C901, PLR0912 - one branch per command
        if command == "migrate":
            _out("database is at the latest schema version")
        elif (command, action) == ("registry", "import"):
            text = await asyncio.to_thread(args.file.read_text, encoding="utf-8")
            report = await relay.registry.import_records(parse_records(text), CLI_ACTOR)
            _out(f"imported {report.imported} device(s), {report.unchanged} unchanged")
        elif (command, action) == ("registry", "preassign"):
            if args.clear == (args.household_id is not None):
                raise RelayError("give a household id, or --clear (not both)")
            device = await relay.registry.preassign(
                args.device_id, args.household_id, args.order, CLI_ACTOR
            )
            _out(json.dumps(device.to_dict(), indent=2))
        elif (command, action) == ("admin", "create-account"):
            if args.password_stdin:
                password = sys.stdin.readline().rstrip("\n")
            else:
                password = await asyncio.to_thread(getpass.getpass, "Password: ")
            account = await relay.accounts.create_account(
                args.email, password, "", is_admin=args.admin
            )
            _out(f"created account {account.id} ({account.email})")
        elif (command, action) == ("admin", "grant-admin"):
            account_id = await _account_id(relay, args.email)
            await relay.accounts.set_admin(account_id, is_admin=True, actor=CLI_ACTOR)
            _out(f"{args.email} is now a service administrator")
        elif (command, action) == ("admin", "revoke-sessions"):
            count = await relay.accounts.revoke_all(await _account_id(relay, args.email), CLI_ACTOR)
            _out(f"revoked {count} session(s)")
        elif (command, action) == ("admin", "set-model"):
            try:
                metadata = json.loads(args.metadata)
            except ValueError as err:
                raise RelayError(f"--metadata is not JSON: {err}") from err
            model = await relay.registry.put_model(
                args.model,
                name=args.name,
                manufacturer=args.manufacturer,
                metadata=metadata,
                actor=CLI_ACTOR,
            )
            _out(json.dumps(model.to_dict(), indent=2, ensure_ascii=False))
        elif (command, action) == ("audit", "verify"):
            chain = await relay.verify_audit()
            _out(
                f"audit log intact: {chain.count} event(s) in {chain.chains} chain(s); "
                f"heads {chain.head_hash.hex()}"
            )
        elif (command, action) == ("broker", "reconcile"):
            result = await relay.reconcile()
            _out(
                f"broker reconciled: {len(result.created)} created, {len(result.updated)} "
                f"updated, {len(result.removed)} removed"
            )
        else:  # pragma: no cover - argparse rejects the rest
            return 2
        return 0

    return await _with_relay(config, work)


def _init(path: Path) -> int:
    if not path.exists():
        # 0600 like everything the service writes: the broker password may go in here.
        write_private_file(path, _SAMPLE_CONFIG.encode("utf-8"))
        _out(f"wrote {path} (mode 0600); set the broker password, then run `serve`")
    key_file = path.parent / "secret.key"
    write_secret_key(key_file)
    _out(f"secret key in {key_file} (mode 0600); keep it: it derives every MQTT password")
    return 0


def _serve(
    config: RelayConfig, announce: Sequence[str], port_file: Path | None, public_url: str | None
) -> int:
    from aiohttp import web  # noqa: PLC0415 - only the server needs it

    from .app import create_app  # noqa: PLC0415

    addresses = check_addresses(announce, config.http_host) if announce else []
    if public_url is not None:
        if not addresses:
            raise ConfigError("--announce-url goes with --announce ADDRESS")
        public_url = check_public_url(public_url)
    app = create_app(config)
    with contextlib.suppress(web.GracefulExit, KeyboardInterrupt):
        asyncio.run(_serve_until_stopped(app, config, addresses, port_file, public_url))
    return 0


async def _serve_until_stopped(
    app: web.Application,
    config: RelayConfig,
    addresses: Sequence[str],
    port_file: Path | None,
    public_url: str | None,
) -> None:
    """Serve; once the port accepts connections, name it and announce it.

    Nothing is said during start-up: the start-up hooks (the broker reconcile among them) run
    before the port is bound, so an announcement made earlier sent HA's zeroconf to a port
    that refused, and a port file written earlier named a port nobody answered on.
    """
    from aiohttp import web  # noqa: PLC0415 - only the server needs it

    runner = web.AppRunner(app, handle_signals=True)
    await runner.setup()
    try:
        await web.TCPSite(runner, config.http_host, config.http_port).start()
        port: int = runner.addresses[0][1]
        logging.getLogger("cloud_relay").info(
            "account service listening on %s port %d", config.http_host, port
        )
        if port_file is not None:
            await asyncio.to_thread(write_port_file, port_file, {"pid": os.getpid(), "http": port})
        announcer = (
            RelayAnnouncer(port=port, addresses=addresses, public_url=public_url)
            if addresses
            else None
        )
        if announcer is not None:
            await announcer.start()
        try:
            await asyncio.Event().wait()  # until SIGTERM/SIGINT (GracefulExit)
        finally:
            if announcer is not None:
                await announcer.stop()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the exit status."""
    args = _parser().parse_args(argv)
    # IOB_RELAY_LOG_LEVEL (DEBUG, INFO, WARNING, ERROR): the add-on passes its option on.
    level = logging.getLevelNamesMapping().get(
        os.environ.get("IOB_RELAY_LOG_LEVEL", ""), logging.INFO
    )
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if os.environ.get("IOB_RELAY_ACCESS_LOG") == "0":  # the add-on, below its debug level
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return exit_status(lambda: _command(args))


def _command(args: argparse.Namespace) -> int:
    if args.command == "init":
        return _init(args.config)
    if args.command == "provisioning-token":
        token = mint_token(tokens_path(args.config), ttl=args.ttl, now=time.time())
        _out(token)
        return 0
    config = load_config(args.config)
    if args.command == "serve":
        return _serve(config, args.announce, args.port_file, args.announce_url)
    return asyncio.run(_run(args, config))


if __name__ == "__main__":
    sys.exit(main())
