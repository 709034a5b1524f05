"""Helpers for the MQTT runtime tests: a device account on the real broker, an observer.

The device gets what the account service gives it: a dynsec client whose role allows only its
own subtree ``iob/<id>/#``. The observer is a hub-like client allowed ``iob/#``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from device_firmware.mqtt_runtime import MqttRuntime, MqttSettings
from tests.plugins.mosquitto import (
    MosquittoBroker,
    MosquittoError,
    MosquittoInstallation,
    MosquittoProcess,
    create_scoped_client,
)
from tests.plugins.ports import free_port

WAIT = 10.0  # generous bound for one expected message; never an assertion on speed


@dataclass(frozen=True)
class DeviceAccount:
    """A device's broker credentials, as the account service would create them."""

    device_id: str
    username: str
    password: str = field(repr=False)

    def settings(self, broker: MosquittoBroker, **changes: object) -> MqttSettings:
        values: dict[str, object] = {
            "host": broker.host,
            "port": broker.port,
            "username": self.username,
            "password": self.password,
            "tls": False,
        }
        values.update(changes)
        return MqttSettings(**values)  # type: ignore[arg-type]


async def create_device_account(broker: MosquittoBroker, device_id: str) -> DeviceAccount:
    """A dynsec client and role limited to ``iob/<device_id>/#``."""
    password = secrets.token_urlsafe(16)
    await create_scoped_client(
        broker,
        username=device_id,
        password=password,
        rolename=f"device-{device_id}",
        subtree=f"iob/{device_id}/#",
    )
    return DeviceAccount(device_id=device_id, username=device_id, password=password)


async def create_hub_account(broker: MosquittoBroker) -> tuple[str, str]:
    password = secrets.token_urlsafe(16)
    await create_scoped_client(
        broker, username="hub", password=password, rolename="hub", subtree="iob/#"
    )
    return "hub", password


class Observer:
    """A hub-side client that records what it receives."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.received: list[aiomqtt.Message] = []

    async def subscribe(self, topic: str) -> None:
        await self.client.subscribe(topic, qos=1)

    async def next(
        self, topic: str, payload: bytes | None = None, *, retained: bool | None = None
    ) -> aiomqtt.Message:
        """The next message on ``topic`` (with ``payload`` / retain flag, if given)."""
        async with asyncio.timeout(WAIT):
            async for message in self.client.messages:
                self.received.append(message)
                if str(message.topic) != topic:
                    continue
                if payload is not None and message.payload != payload:
                    continue
                if retained is not None and message.retain != retained:
                    continue
                return message
        raise AssertionError("message iterator ended")  # pragma: no cover

    async def retained_under(self, pattern: str, marker_topic: str) -> dict[str, bytes]:
        """Every retained message under ``pattern``, complete without waiting on a clock.

        The broker sends retained messages right after SUBACK; a marker published after the
        subscription arrives after all of them.
        """
        await self.client.subscribe(pattern, qos=1)
        await self.client.publish(marker_topic, b"marker", qos=1)
        found: dict[str, bytes] = {}
        async with asyncio.timeout(WAIT):
            async for message in self.client.messages:
                topic = str(message.topic)
                if topic == marker_topic and not message.retain:
                    return found
                if message.retain:
                    assert isinstance(message.payload, bytes)
                    found[topic] = message.payload
        raise AssertionError("message iterator ended")  # pragma: no cover


@pytest.fixture
async def hub(mosquitto_broker: MosquittoBroker) -> tuple[str, str]:
    return await create_hub_account(mosquitto_broker)


@contextlib.asynccontextmanager
async def observer(
    broker: MosquittoBroker, hub: tuple[str, str], *, port: int | None = None
) -> AsyncIterator[Observer]:
    username, password = hub
    async with aiomqtt.Client(
        broker.host,
        port or broker.port,
        username=username,
        password=password,
        identifier=f"observer-{secrets.token_hex(4)}",
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as client:
        yield Observer(client)


@contextlib.asynccontextmanager
async def running(runtime: MqttRuntime) -> AsyncIterator[asyncio.Task[None]]:
    """Run the runtime until the block ends, then cancel it (a clean stop)."""
    task = asyncio.create_task(runtime.run())
    try:
        async with asyncio.timeout(WAIT):
            connected = asyncio.create_task(runtime.wait_connected())
            done, _ = await asyncio.wait({task, connected}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                connected.cancel()
                task.result()  # raises what ended the runtime
        yield task
    finally:
        # A cancel must stop it even in the middle of a publish (Python 3.11's wait_for, which
        # aiomqtt uses, dropped one that arrived with the broker's reply): WAIT bounds the stop.
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(WAIT):
                await task


class TcpProxy:
    """A loopback TCP proxy whose connections can be cut, to kill a client uncleanly."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:
            writer.close()
            return
        self._writers.update({writer, upstream_writer})
        pumps = [
            asyncio.create_task(self._pump(reader, upstream_writer)),
            asyncio.create_task(self._pump(upstream_reader, writer)),
        ]
        self._tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        for stream in (writer, upstream_writer):
            stream.close()
            self._writers.discard(stream)

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()

    def cut(self) -> None:
        """Close every proxied connection without any MQTT DISCONNECT."""
        for writer in list(self._writers):
            writer.transport.abort()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


# --- a broker with a TLS listener (self-signed, as a self-hosted broker usually is) ------------


def _self_signed(directory: Path) -> bytes:
    """Write cert.pem and key.pem for 127.0.0.1 into ``directory``; return the DER cert."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "iob test broker")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (directory / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path = directory / "key.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return certificate.public_bytes(serialization.Encoding.DER)


class TlsMosquittoProcess(MosquittoProcess):
    """The shared broker supervisor plus a TLS listener on a second loopback port."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.tls_port = free_port()
        self.certificate_der = _self_signed(data_dir)

    def _write_config(self, installation: MosquittoInstallation) -> None:
        super()._write_config(installation)
        with self.config_path.open("a") as config:
            config.write(
                f"listener {self.tls_port} 127.0.0.1\n"
                f"certfile {self.data_dir / 'cert.pem'}\n"
                f"keyfile {self.data_dir / 'key.pem'}\n"
            )


@pytest.fixture
def tls_mosquitto(iob_socket_allowed: None) -> Iterator[TlsMosquittoProcess]:
    """A fresh broker with plain and TLS listeners; stopped by pid, its directory removed."""
    del iob_socket_allowed
    data_dir = Path(tempfile.mkdtemp(prefix="iob-mosquitto-tls-"))
    process = TlsMosquittoProcess(data_dir)
    try:
        process.start()
    except MosquittoError as err:
        process.close()
        shutil.rmtree(data_dir, ignore_errors=True)
        pytest.fail(f"Mosquitto with TLS could not be started: {err}", pytrace=False)
    try:
        yield process
    finally:
        process.close()
        shutil.rmtree(data_dir, ignore_errors=True)
