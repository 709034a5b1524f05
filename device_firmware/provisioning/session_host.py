"""Drives the protocol's device-side session for any transport (LAN HTTP now, BLE later).

The transport hands in frames and sends back what this returns; everything that decides - the
attempt limiter, one handshake at a time, the 60 s deadline, which session is current, how a
command is answered - is here, so HTTP and BLE cannot drift apart.

Limiter wiring (DESIGN "attempt limits"): the provisioning window is opened only by something
physical (boot while unclaimed, a button press, a factory reset) and counts failed handshakes;
a CLIENT_HELLO takes the one handshake slot, CLIENT_FINISH (or the deadline) ends it. The
captive page's code check draws from the same budget.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from iob_protocol.commands import (
    CommandResult,
    ErrorResponse,
    OkResponse,
    Request,
    ResultError,
    decode_request,
    encode_response,
)
from iob_protocol.errors import (
    FramingError,
    HandshakeTimeoutError,
    LimiterError,
    PayloadError,
    ProtocolError,
    SessionClosedError,
    StaleAttemptError,
    UnexpectedMessageError,
)
from iob_protocol.framing import FrameType, decode_frame, encode_error_frame
from iob_protocol.limiter import Attempt, AttemptLimiter, LimiterState
from iob_protocol.payload import ManualCode
from iob_protocol.session import HANDSHAKE_TIMEOUT, DeviceSession
from iob_protocol.sources import MonotonicClock, monotonic

from device_firmware.errors import CommandRefusedError, DiagnosedError
from device_firmware.factory import ProvisionedDevice

_LOGGER = logging.getLogger(__name__)

type Dispatcher = Callable[[Request], Awaitable[CommandResult]]

#: Error code for a DATA frame that names no current session.
NO_SESSION: Final = "no_session"
#: An established session with no frame for this long is ended.
SESSION_IDLE_TIMEOUT: Final = 600.0


class ReplyKind(StrEnum):
    """How a transport should present a reply (HTTP picks a status code from it)."""

    OK = "ok"
    FINISHED = "finished"  # handshake complete: nothing to send but the session tag
    REFUSED = "refused"  # limiter: window closed, locked out, busy
    BAD_REQUEST = "bad_request"  # malformed or unexpected frame
    AUTH_FAILED = "auth_failed"  # the handshake or a DATA frame failed (wrong code, tamper)
    NO_SESSION = "no_session"


@dataclass(frozen=True, slots=True)
class Reply:
    """A frame to send back, how to present it, and the current session's tag."""

    kind: ReplyKind
    frame: bytes
    session_tag: str | None = None
    error: str | None = None


class SessionHost:
    """One device session at a time, behind the attempt limiter."""

    def __init__(
        self,
        device: ProvisionedDevice,
        dispatcher: Dispatcher,
        *,
        limiter: AttemptLimiter | None = None,
        clock: MonotonicClock = monotonic,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        allow_insecure_http: bool = False,
    ) -> None:
        """Answer as ``device``; commands go to ``dispatcher``."""
        self._device = device
        self._dispatcher = dispatcher
        self._limiter = limiter or AttemptLimiter(handshake_seconds=handshake_timeout)
        self._clock = clock
        self._handshake_timeout = handshake_timeout
        self._allow_insecure_http = allow_insecure_http
        self._pending: tuple[DeviceSession, Attempt] | None = None
        self._active: DeviceSession | None = None
        self._last_frame = 0.0
        self._handshake_lock = asyncio.Lock()
        self._exchange_lock = asyncio.Lock()

    # --- window -----------------------------------------------------------------------------

    def open_window(self, reason: str) -> None:
        """Open a fresh 15-minute window with a fresh failure budget."""
        _LOGGER.info("provisioning window opened (%s)", reason)
        self._limiter.open_window(self._clock())
        self._pending = None

    def close_window(self, *, end_session: bool = False) -> None:
        """Close the window (the device is claimed): no new handshakes.

        The established session stays (Home Assistant still reads the commit's outcome with
        ``status``) until it idles out, unless ``end_session`` (shutdown).
        """
        self._limiter.close_window()
        self._pending = None
        if end_session and self._active is not None:
            self._active.close()
            self._active = None

    @property
    def limiter_state(self) -> LimiterState:
        """What a new handshake would meet now."""
        self._expire_pending()
        return self._limiter.state(self._clock())

    @property
    def window_open(self) -> bool:
        """Whether handshakes are accepted at all (open, or open but busy)."""
        return self.limiter_state in {LimiterState.OPEN, LimiterState.BUSY}

    def remaining_attempts(self) -> int:
        """Failures still allowed in this window."""
        return self._limiter.remaining(self._clock())

    @property
    def has_session(self) -> bool:
        """Whether a session is established."""
        return self._active is not None

    # --- handshake --------------------------------------------------------------------------

    def _expire_pending(self) -> None:
        if self._pending is not None and self._clock() > self._pending[1].deadline:
            session, attempt = self._pending
            session.close()
            self._limiter.fail(attempt, self._clock())
            self._pending = None
            _LOGGER.info("handshake timed out; counted as a failed attempt")

    async def handshake(self, data: bytes) -> Reply:
        """Take CLIENT_HELLO or CLIENT_FINISH; return DEVICE_HELLO, or the finished session."""
        async with self._handshake_lock:
            self._expire_pending()
            try:
                frame = decode_frame(data)
            except FramingError as err:
                return _error(ReplyKind.BAD_REQUEST, err.code)
            if frame.type is FrameType.CLIENT_HELLO:
                return await self._client_hello(data)
            if frame.type is FrameType.CLIENT_FINISH:
                return await self._client_finish(data)
            return _error(ReplyKind.BAD_REQUEST, UnexpectedMessageError.code)

    async def _client_hello(self, data: bytes) -> Reply:
        now = self._clock()
        try:
            attempt = self._limiter.begin(now)
        except LimiterError as err:
            return _error(ReplyKind.REFUSED, err.code)
        session = DeviceSession(
            self._device.identity,
            self._device.setup_code,
            clock=self._clock,
            timeout=self._handshake_timeout,
        )
        try:
            # SPAKE2 in pure Python takes milliseconds of CPU: keep the loop responsive.
            reply = await asyncio.to_thread(session.handle_client_hello, data)
        except ProtocolError as err:
            self._limiter.fail(attempt, self._clock())
            _LOGGER.info("handshake refused at CLIENT_HELLO: %s", err.code)
            return _error(ReplyKind.BAD_REQUEST, err.code)
        self._pending = (session, attempt)
        return Reply(ReplyKind.OK, reply)

    async def _client_finish(self, data: bytes) -> Reply:
        if self._pending is None:
            return _error(ReplyKind.BAD_REQUEST, UnexpectedMessageError.code)
        session, attempt = self._pending
        self._pending = None
        try:
            session.handle_client_finish(data)
            self._limiter.succeed(attempt, self._clock())
        except (ProtocolError, StaleAttemptError) as err:
            session.close()
            self._limiter.fail(attempt, self._clock())
            code = HandshakeTimeoutError.code if isinstance(err, StaleAttemptError) else err.code
            _LOGGER.warning(
                "handshake failed (%s); %d attempts left in this window",
                code,
                self._limiter.remaining(self._clock()),
            )
            return _error(ReplyKind.AUTH_FAILED, code)
        if self._active is not None:
            self._active.close()
        self._active = session
        self._last_frame = self._clock()
        _LOGGER.info("secure session established (%s code)", session.credential_kind)
        return Reply(ReplyKind.FINISHED, b"", session_tag=self.session_tag)

    @property
    def session_tag(self) -> str | None:
        """Hex session id of the established session: names it on transports without a link."""
        if self._active is None or self._active.session_id is None:
            return None
        return self._active.session_id.hex()

    # --- established session ----------------------------------------------------------------

    async def exchange(self, data: bytes, session_tag: str | None = None) -> Reply:
        """Decrypt a request, run it, encrypt the response.

        ``session_tag`` (HTTP) must name the current session, so a stray or stale client is
        turned away without touching the channel (any failed decryption ends a session).
        """
        async with self._exchange_lock:
            if self._active is not None and self._clock() - self._last_frame > SESSION_IDLE_TIMEOUT:
                self._active.close()
                self._active = None
            self._last_frame = self._clock()
            session = self._active
            if session is None or (session_tag is not None and session_tag != self.session_tag):
                return _error(ReplyKind.NO_SESSION, NO_SESSION)
            try:
                plaintext = session.open(data)
            except ProtocolError as err:
                # Replayed, reordered, tampered: the channel is closed for good (fail closed).
                self._active = None
                _LOGGER.warning("session ended by a bad frame: %s", err.code)
                return _error(ReplyKind.AUTH_FAILED, err.code)
            response = await self._answer(plaintext)
            try:
                sealed = session.seal(encode_response(response))
            except (ProtocolError, SessionClosedError) as err:
                self._active = None
                return _error(ReplyKind.AUTH_FAILED, err.code)
            return Reply(ReplyKind.OK, sealed, session_tag=self.session_tag)

    async def _answer(self, plaintext: bytes) -> OkResponse | ErrorResponse:
        try:
            request = decode_request(plaintext, allow_insecure_http=self._allow_insecure_http)
        except ProtocolError as err:
            return ErrorResponse.from_error(err)
        try:
            result = await self._dispatcher(request)
        except CommandRefusedError as err:
            return ErrorResponse(
                request_id=request.request_id,
                command=request.command,
                error=err.error,
                message=err.message[:256],
            )
        except DiagnosedError as err:
            return ErrorResponse(
                request_id=request.request_id,
                command=request.command,
                error=ResultError.FAILED.value,
                diagnostic=err.code,
                message=err.code.message[:256],
            )
        except ProtocolError as err:
            return ErrorResponse.from_error(
                err, request_id=request.request_id, command=request.command
            )
        return OkResponse(request_id=request.request_id, command=request.command, result=result)

    # --- captive page -----------------------------------------------------------------------

    async def check_manual_code(self, text: str) -> bool:
        """Check a typed setup code against the stored verifier, under the same limiter.

        A typo caught by the check digit costs no attempt (it tests nothing about the code);
        a well-formed wrong code does. Raises :class:`LimiterError` when refused.
        """
        try:
            code = ManualCode.parse(text)
        except PayloadError:
            return False
        async with self._handshake_lock:
            self._expire_pending()
            attempt = self._limiter.begin(self._clock())
            try:
                ok = await asyncio.to_thread(
                    self._device.verifier.verify, self._device.identity.device_id, code
                )
            except BaseException:
                self._limiter.fail(attempt, self._clock())
                raise
            if ok:
                self._limiter.succeed(attempt, self._clock())
            else:
                self._limiter.fail(attempt, self._clock())
            return ok


def _error(kind: ReplyKind, code: str) -> Reply:
    return Reply(kind, encode_error_frame(code), error=code)
