"""The one fault-injecting HTTP service: it answers from a script and records what it was asked.

Use it only for what the real account service cannot be made to do on demand: a 5xx, an
answer that is not the API (a proxy's HTML page, malformed JSON, a redirect), a slow service,
a scripted sequence of answers, or the real service with one route failing (``upstream``).
For a working service use the real one in-process (``account_service`` in tests/device,
``api`` in tests/relay); for an answer lost on the way back (the server handled the request),
``lossy_proxy_factory`` (tests/plugins/lossy_proxy.py).

``scripted_service`` (the fixture) is started on a free loopback port and stopped after the
test. A request is answered by the first of:

0. ``gate``, if set and it returns an answer (rules that hold for every route, such as a 401
   for a token the service no longer accepts);
1. the answers ``queue``\\ d for its method and path, each used once, in order;
2. the answer set with ``answer`` for its method and path (``"*", "*"`` matches any request);
3. the real service at ``upstream``, if set (the request is forwarded as it came);
4. a baseline answer a tree's conftest installed with ``default`` (tests/device installs the
   device API's successful answers, so a device test scripts only the route it breaks);
5. 404 with an empty body.

An answer is an :class:`Answer`, or a function of the :class:`Received` request returning one
(for answers that depend on the request). Nothing here imports the project's packages: the
Home Assistant tree and the HA-free trees share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import aiohttp
import pytest
from aiohttp import web

ANY: str = "*"


@dataclass(frozen=True)
class Answer:
    """One HTTP answer. ``body``: JSON-encoded, unless ``bytes`` (sent as is) or None (empty)."""

    status: int = 200
    body: Any = None
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Seconds before answering: a slow service (the handler stops if the client goes away).
    delay: float = 0.0


@dataclass(frozen=True)
class Received:
    """A request the service got."""

    method: str
    path: str
    raw_path: str
    query: dict[str, str]
    #: The bearer token of the ``Authorization`` header, if any.
    token: str | None
    #: The body as JSON (None when empty; the raw text when it is not JSON).
    body: Any


Script: TypeAlias = Answer | Callable[[Received], Answer]


def error(status: int, code: str, message: str = "scripted") -> Answer:
    """An error answer in the account service's shape."""
    return Answer(status, {"error": {"code": code, "message": message}})


class ScriptedService:
    """An HTTP server on 127.0.0.1 answering from a script (see the module)."""

    def __init__(self) -> None:
        """An empty script; ``start`` serves it."""
        self.url = ""
        self.requests: list[Received] = []
        #: Where unscripted requests go (a real service's base URL), or None.
        self.upstream: str | None = None
        #: Asked first for every request; an answer it returns wins over the script.
        self.gate: Callable[[Received], Answer | None] | None = None
        self._queued: defaultdict[tuple[str, str], deque[Script]] = defaultdict(deque)
        self._answers: dict[tuple[str, str], Script] = {}
        self._defaults: dict[tuple[str, str], Script] = {}
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    # --- the script ------------------------------------------------------------------------

    def answer(self, method: str, path: str, answer: Script) -> None:
        """Answer every ``method path`` request (``"*", "*"``: every request) with ``answer``."""
        self._answers[(method, path)] = answer

    def queue(self, method: str, path: str, *answers: Script) -> None:
        """Answer the next ``method path`` requests with ``answers``, once each, in order."""
        self._queued[(method, path)].extend(answers)

    def default(self, method: str, path: str, answer: Script) -> None:
        """A baseline answer (a tree's conftest): used when nothing else is scripted for the
        request and there is no ``upstream``."""
        self._defaults[(method, path)] = answer

    def received(self, method: str, path: str) -> list[Received]:
        """The ``method path`` requests so far, in order."""
        return [r for r in self.requests if (r.method, r.path) == (method, path)]

    def _scripted(self, key: tuple[str, str]) -> Script | None:
        queued = self._queued.get(key)
        if queued:
            return queued.popleft()
        tables = (self._answers,) if self.upstream is not None else (self._answers, self._defaults)
        for table in tables:
            for candidate in (key, (ANY, ANY)):
                if candidate in table:
                    return table[candidate]
        return None

    # --- serving ---------------------------------------------------------------------------

    async def start(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        """Serve on a free loopback port (the kernel's choice: no race); set ``url``."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a slow answer stops when its client went away.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
        scheme = "https" if ssl_context is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self._runner.addresses[0][1]}"

    async def close(self) -> None:
        """Stop serving (a test may call it early: the service is gone, connections refused)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        auth = request.headers.get("Authorization")
        received = Received(
            method=request.method,
            path=request.path,
            raw_path=request.raw_path,
            query=dict(request.query),
            token=auth.removeprefix("Bearer ") if auth else None,
            body=_parsed(raw),
        )
        self.requests.append(received)
        answer = self.gate(received) if self.gate is not None else None
        if answer is None:
            script = self._scripted((request.method, request.path))
            if script is None:
                if self.upstream is not None:
                    return await self._forward(request, raw)
                return web.Response(status=404)
            answer = script if isinstance(script, Answer) else script(received)
        if answer.delay:
            await asyncio.sleep(answer.delay)
        if answer.body is None:
            body = b""
        elif isinstance(answer.body, bytes):
            body = answer.body
        else:
            body = json.dumps(answer.body).encode()
        return web.Response(
            status=answer.status,
            body=body,
            content_type=answer.content_type,
            headers=dict(answer.headers),
        )

    async def _forward(self, request: web.Request, raw: bytes) -> web.Response:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        headers = {
            name: value
            for name, value in request.headers.items()
            if name in {"Content-Type", "Authorization"}
        }
        async with self._http.request(
            request.method, f"{self.upstream}{request.path_qs}", data=raw, headers=headers
        ) as reply:
            return web.Response(
                status=reply.status,
                body=await reply.read(),
                content_type=reply.content_type,
            )


def _parsed(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


@contextlib.asynccontextmanager
async def scripted(*, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[ScriptedService]:
    """A started :class:`ScriptedService`, closed on exit (for a second one, or one over TLS)."""
    service = ScriptedService()
    await service.start(ssl_context=ssl_context)
    try:
        yield service
    finally:
        await service.close()


@pytest.fixture
async def scripted_service() -> AsyncIterator[ScriptedService]:
    """The fault-injecting service (see the module), on a free loopback port."""
    async with scripted() as service:
        yield service
