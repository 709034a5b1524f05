"""A lossy TCP proxy on loopback: forwards a request, then loses the answer.

Stands between a client (the device agent, Home Assistant) and a real server (the account
service). Bytes pass through unchanged, except that the answer to the first ``drop`` requests
whose request line starts with ``method path`` is swallowed: the proxy forwards the request,
waits until the server's answer begins to arrive (the server has handled it: for the account
service, the transaction is committed), then closes the client's connection without a byte of
it - what a crashed service, a broken uplink or a power cut in the last instant looks like to
the client. ``hold=True`` instead keeps the client's connection open and silent (the client
waits for its own timeout), so a test can cut the power while the device waits.

    async with lossy_proxy("127.0.0.1", port, drop=1) as proxy:
        ... proxy.url ...
        await proxy.answer_lost.wait()
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import pytest

_CHUNK = 64 * 1024


@dataclass
class LossyProxy:
    """What the proxy did; ``url`` is where clients connect."""

    target_host: str
    target_port: int
    #: Requests whose request line starts with one of these are matched.
    request_lines: tuple[bytes, ...]
    drop: int
    hold: bool
    #: The first ``skip`` matching requests are answered (not counted against ``drop``).
    skip: int = 0
    url: str = ""
    #: Requests matching one of ``request_lines`` seen so far.
    matched: int = 0
    #: Matching requests whose answer is (to be) swallowed.
    armed: int = 0
    #: Answers swallowed so far.
    dropped: int = 0
    #: Set once an answer was swallowed (the server had handled the request).
    answer_lost: asyncio.Event = field(default_factory=asyncio.Event)
    #: The address of every client that connected, in order.
    peers: list[str] = field(default_factory=list)
    _held: list[asyncio.StreamWriter] = field(default_factory=list)

    async def handle(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        """Forward one client connection (see the module)."""
        self.peers.append(client.get_extra_info("peername")[0])
        try:
            upstream_reader, upstream = await asyncio.open_connection(
                self.target_host, self.target_port
            )
        except OSError:
            client.close()
            return
        lose_next_answer = asyncio.Event()
        try:
            await asyncio.gather(
                self._to_server(client_reader, upstream, lose_next_answer),
                self._to_client(upstream_reader, upstream, client, lose_next_answer),
            )
        except OSError:
            pass
        finally:
            upstream.close()
            if client not in self._held:
                client.close()

    async def _to_server(
        self,
        client_reader: asyncio.StreamReader,
        upstream: asyncio.StreamWriter,
        lose_next_answer: asyncio.Event,
    ) -> None:
        tail = b""
        while data := await client_reader.read(_CHUNK):
            # A request line may straddle two reads: keep the end of the last one.
            keep = max(len(line) for line in self.request_lines)
            window, tail = tail + data, (tail + data)[-keep:]
            if any(line in window for line in self.request_lines):
                tail = b""
                self.matched += 1
                if self.matched > self.skip and self.armed < self.drop:
                    self.armed += 1
                    lose_next_answer.set()
            upstream.write(data)
            await upstream.drain()
        if not upstream.is_closing():
            upstream.write_eof()

    async def _to_client(
        self,
        upstream_reader: asyncio.StreamReader,
        upstream: asyncio.StreamWriter,
        client: asyncio.StreamWriter,
        lose_next_answer: asyncio.Event,
    ) -> None:
        while data := await upstream_reader.read(_CHUNK):
            if lose_next_answer.is_set():
                # The server answered: the request was handled. The client never hears.
                self.dropped += 1
                self.answer_lost.set()
                upstream.close()
                if self.hold:
                    self._held.append(client)
                else:
                    client.transport.abort()
                return
            client.write(data)
            await client.drain()
        client.close()

    def close_held(self) -> None:
        """Drop the connections kept silent (``hold``)."""
        for writer in self._held:
            writer.transport.abort()
        self._held.clear()


ProxyFactory: TypeAlias = Callable[..., contextlib.AbstractAsyncContextManager[LossyProxy]]


@contextlib.asynccontextmanager
async def lossy_proxy(
    target_host: str,
    target_port: int,
    *,
    method: str = "POST",
    path: str = "/v1/claims/confirm",
    drop: int = 1,
    hold: bool = False,
    also: Sequence[str] = (),
    skip: int = 0,
    sock: socket.socket | None = None,
) -> AsyncIterator[LossyProxy]:
    """Serve the proxy on 127.0.0.1 (a free port) in front of ``target_host:target_port``, or
    on ``sock``, a listening socket (one bound in another network namespace, say).

    ``also``: more request-line prefixes to match, as sent (``"GET /v1/claims/"`` matches
    every claim-status request): their answers count against the same ``drop``. ``skip``:
    the first that many matching requests are answered.
    """
    lines = (f"{method} {path} ", *also)
    proxy = LossyProxy(
        target_host,
        target_port,
        tuple(line.encode("ascii") for line in lines),
        drop=drop,
        hold=hold,
        skip=skip,
    )
    tasks: set[asyncio.Task[Any]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            tasks.add(task)
        try:
            await proxy.handle(reader, writer)
        finally:
            if task is not None:
                tasks.discard(task)

    if sock is None:
        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    else:
        server = await asyncio.start_server(on_connect, sock=sock)
    host, port = server.sockets[0].getsockname()[:2]
    proxy.url = f"http://{host}:{port}"
    try:
        yield proxy
    finally:
        server.close()
        proxy.close_held()
        for task in list(tasks):
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        await server.wait_closed()


@pytest.fixture
def lossy_proxy_factory() -> ProxyFactory:
    """``async with lossy_proxy_factory(host, port, drop=1) as proxy:`` (see the module)."""
    return lossy_proxy
