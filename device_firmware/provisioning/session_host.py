"""Drives the protocol's device-side session for any transport (LAN HTTP now, BLE later).

The transport hands in frames and sends back what this returns; everything that decides - the
attempt limiter, one handshake at a time, the 60 s deadline, which session is current, how a
command is answered - is here, so HTTP and BLE cannot drift apart.

Limiter wiring (DESIGN "attempt limits"): the provisioning window is opened only by something
physical (boot while unclaimed, a button press, a factory reset) and counts failed handshakes;
a CLIENT_HELLO takes the one handshake slot, CLIENT_FINISH (or the deadline) ends it. A client
that gives up mid-handshake - it posts an ERROR frame (a wrong code it noticed itself), or its BLE
link drops - frees the slot at once (:meth:`SessionHost.abort_handshake`), counted as a failed
attempt: the PAKE exchange was spent, so the budget is the same as letting the deadline pass, but
the user's immediate retry is not turned away as ``busy``. Only the transport that started the
handshake (its ``origin``) can abort it, and only it can finish it: a CLIENT_FINISH or ERROR
frame from any other origin (another LAN address, another BLE link) is answered
``handshake_origin_mismatch`` and leaves the pending handshake and the budget untouched, so a
stranger on the LAN cannot spend the real user's attempt or spoil its handshake. The captive
page's code check draws from the same budget.

Who may connect (DESIGN: "claimed devices accept only the owner's authorised session") comes
from a :class:`SessionPolicy` read at every hello: an unclaimed device answers the label's
codes (QR, manual); a claimed one only the owner secret saved with its claim. A hello of a
refused kind is answered with its own error frame (``owner_session_required``,
``setup_code_required``, ``no_owner_secret``) *without* taking the slot or an attempt: it is
decided from the hello's kind byte and the device's public state before any secret is used, so
it tests no guess and reveals only whether the device is claimed, which ``/iob/v1/info``, the
zeroconf record and the BLE advertisement already say. A wrong owner secret is an ordinary
failed handshake and counts. Once established, a session may only run the commands its kind
allows in the device's current state (:func:`command_refusal`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, TypeAlias

from iob_protocol.commands import (
    CommandResult,
    CommandType,
    ErrorResponse,
    OkResponse,
    Request,
    ResultError,
    decode_request,
    encode_response,
    request_reference,
)
from iob_protocol.errors import (
    CredentialRefusedError,
    FramingError,
    HandshakeTimeoutError,
    LimiterError,
    NoOwnerSecretError,
    OwnerSessionRequiredError,
    PayloadError,
    ProtocolError,
    SessionClosedError,
    SetupCodeRequiredError,
    StaleAttemptError,
    UnexpectedMessageError,
)
from iob_protocol.framing import FrameType, decode_error_body, decode_frame, encode_error_frame
from iob_protocol.limiter import Attempt, AttemptLimiter, LimiterState
from iob_protocol.payload import CredentialKind, ManualCode
from iob_protocol.session import (
    HANDSHAKE_TIMEOUT,
    DeviceSession,
    check_credential_kind,
    client_hello_kind,
)
from iob_protocol.sources import MonotonicClock, monotonic

from device_firmware.attempts import AttemptLog, Step, transport
from device_firmware.decide import WindowReason
from device_firmware.errors import CommandRefusedError, DiagnosedError
from device_firmware.factory import ProvisionedDevice

_LOGGER = logging.getLogger(__name__)

Dispatcher: TypeAlias = Callable[[Request], Awaitable[CommandResult]]

#: Error code for a DATA frame that names no current session.
NO_SESSION: Final = "no_session"
#: Error code for a CLIENT_FINISH or ERROR frame from another origin than the pending
#: handshake's hello: refused without touching that handshake or the attempt budget.
HANDSHAKE_ORIGIN_MISMATCH: Final = "handshake_origin_mismatch"
#: An established session with no frame for this long is ended.
SESSION_IDLE_TIMEOUT: Final = 600.0
#: What a session whose kind no longer matches the device's state may still do: read. (A label
#: session under which the device became claimed reads the commit's outcome; an owner session
#: after a factory reset sees the reset device.)
READ_ONLY_COMMANDS: Final = frozenset({CommandType.INFO, CommandType.STATUS, CommandType.IDENTIFY})


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionPolicy:
    """Which credential opens a session now, from the persisted state.

    Unclaimed: the label's (QR, manual code). Claimed: only ``owner_secret``, the one saved
    with the claim; a claimed device without one (zero-touch) accepts nobody.
    """

    claimed: bool = False
    owner_secret: bytes | None = field(default=None, repr=False)

    def check(self, kind: CredentialKind) -> None:
        """Raise the protocol's refusal for ``kind`` (see ``check_credential_kind``)."""
        check_credential_kind(
            kind, claimed=self.claimed, owner_secret_known=self.owner_secret is not None
        )


#: The policy of a host given none: a device that is never claimed (tests, tools).
UNCLAIMED_POLICY: Final = SessionPolicy()


def command_refusal(
    kind: CredentialKind | None, *, claimed: bool, command: CommandType
) -> tuple[str, str] | None:
    """``(error code, message)`` if a session of ``kind`` may not run ``command`` now.

    A claimed device's owner session may do what re-onboarding needs - info, status, scan,
    set_wifi, a Wi-Fi-only commit, identify, factory_reset, set_owner_secret - but never
    set_claim. An unclaimed device's label session may do everything but set_owner_secret.
    A session whose kind no longer matches the state may only read (:data:`READ_ONLY_COMMANDS`).
    """
    if claimed and command is CommandType.SET_CLAIM:
        return (
            ResultError.ALREADY_CLAIMED.value,
            "the device already has an owner; only its Wi-Fi can change",
        )
    owner_session = kind is CredentialKind.OWNER
    if owner_session == claimed:
        if not claimed and command is CommandType.SET_OWNER_SECRET:
            return (
                ResultError.NOT_CLAIMED.value,
                "the device has no owner yet; the owner secret travels with set_claim",
            )
        return None
    if command in READ_ONLY_COMMANDS:
        return None
    if claimed:
        return (
            OwnerSessionRequiredError.code,
            "this device is owned; use its owner's Home Assistant, or factory-reset it",
        )
    return (
        SetupCodeRequiredError.code,
        "this device has no owner any more; set it up again with the code on its label",
    )


class ReplyKind(StrEnum):
    """How a transport should present a reply (HTTP picks a status code from it)."""

    OK = "ok"
    FINISHED = "finished"  # handshake complete: nothing to send but the session tag
    REFUSED = "refused"  # limiter: window closed, locked out, busy
    BAD_REQUEST = "bad_request"  # malformed or unexpected frame
    AUTH_FAILED = "auth_failed"  # the handshake or a DATA frame failed (wrong code, tamper)
    NO_SESSION = "no_session"
    ABORTED = "aborted"  # the client's ERROR frame ended its handshake: nothing to send


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
        policy: Callable[[], SessionPolicy] | None = None,
        on_established: Callable[[], None] | None = None,
        attempts: AttemptLog | None = None,
    ) -> None:
        """Answer as ``device``; commands go to ``dispatcher``.

        ``policy`` says, at each hello and each command, whether the device is claimed and
        with which owner secret (the agent passes ``DeviceController.session_policy``); without
        it the device is treated as never claimed. ``on_established`` runs when a new session
        replaces the old one (the agent drops settings the old session left pending).
        ``attempts`` records each handshake's start and outcome (``iob-device attempts``).
        """
        self._device = device
        self._dispatcher = dispatcher
        self._limiter = limiter or AttemptLimiter(handshake_seconds=handshake_timeout)
        self._clock = clock
        self._handshake_timeout = handshake_timeout
        self._allow_insecure_http = allow_insecure_http
        self._policy = policy or (lambda: UNCLAIMED_POLICY)
        self._on_established = on_established or (lambda: None)
        self._attempts = attempts or AttemptLog()
        self._pending: tuple[DeviceSession, Attempt, SessionPolicy, str | None] | None = None
        self._window_reason: WindowReason | None = None
        #: The origin of the last handshake that ran out (a 1-tuple: the origin may be None),
        #: so its late CLIENT_FINISH is told ``handshake_timeout``, not ``unexpected_message``.
        self._expired: tuple[str | None] | None = None
        self._active: DeviceSession | None = None
        self._last_frame = 0.0
        self._handshake_lock = asyncio.Lock()
        self._exchange_lock = asyncio.Lock()

    # --- window -----------------------------------------------------------------------------

    def open_window(self, reason: WindowReason) -> None:
        """Open a fresh 15-minute window with a fresh failure budget.

        The agent opens it through :class:`~device_firmware.window.ProvisioningWindow`, which
        asks :func:`~device_firmware.decide.window_for` whether and why.
        """
        _LOGGER.info("provisioning window opened (%s)", reason)
        self._limiter.open_window(self._clock())
        self._window_reason = reason
        self._pending = None

    def close_window(self, *, end_session: bool = False) -> None:
        """Close the window (the device is claimed): no new handshakes.

        The established session stays (Home Assistant still reads the commit's outcome with
        ``status``) until it idles out, unless ``end_session`` (shutdown).
        """
        self._limiter.close_window()
        self._window_reason = None
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

    @property
    def window_reason(self) -> WindowReason | None:
        """Why the window is open; None while it is closed (also once it lapsed or locked)."""
        return self._window_reason if self.window_open else None

    def remaining_attempts(self) -> int:
        """Failures still allowed in this window."""
        return self._limiter.remaining(self._clock())

    @property
    def has_session(self) -> bool:
        """Whether a session is established whose credential fits the device's state now.

        A label session under which the device became claimed, or an owner session after a
        factory reset, may still read, but no longer counts (BLE's Improv authorizes on this).
        """
        active = self._active
        if active is None or active.credential_kind is None:
            return False
        return (active.credential_kind is CredentialKind.OWNER) == self._policy().claimed

    def session_idle(self) -> float | None:
        """Seconds since the last frame of the session :attr:`has_session` counts; None if none."""
        if not self.has_session:
            return None
        return max(self._clock() - self._last_frame, 0.0)

    # --- handshake --------------------------------------------------------------------------

    def _expire_pending(self) -> None:
        if self._pending is not None and self._clock() > self._pending[1].deadline:
            session, attempt, _policy, origin = self._pending
            session.close()
            self._limiter.fail(attempt, self._clock())
            self._pending = None
            self._expired = (origin,)
            self._attempts.record(Step.HANDSHAKE_FAILED, HandshakeTimeoutError.code)
            _LOGGER.info("handshake timed out; counted as a failed attempt")

    async def handshake(self, data: bytes, *, origin: str | None = None) -> Reply:
        """Take CLIENT_HELLO, CLIENT_FINISH or the client's ERROR frame.

        Returns DEVICE_HELLO, the finished session, or ABORTED (the client gave up, see
        :meth:`abort_handshake`). ``origin`` names the client's transport (``ble:<link>``,
        ``lan:<address>``): only the origin that said hello can finish or give up the
        handshake; the others are refused (``handshake_origin_mismatch``) without touching it.
        """
        async with self._handshake_lock:
            self._expire_pending()
            try:
                frame = decode_frame(data)
            except FramingError as err:
                return _error(ReplyKind.BAD_REQUEST, err.code)
            if self.refuses_origin(frame.type, origin):
                _LOGGER.info(
                    "%s from %s refused (%s): the pending handshake belongs to another client",
                    frame.type.name,
                    origin or "an unnamed transport",
                    HANDSHAKE_ORIGIN_MISMATCH,
                )
                return _error(ReplyKind.REFUSED, HANDSHAKE_ORIGIN_MISMATCH)
            if frame.type is FrameType.CLIENT_HELLO:
                return await self._client_hello(data, origin)
            if frame.type is FrameType.CLIENT_FINISH:
                return await self._client_finish(data, origin)
            if frame.type is FrameType.ERROR:
                return self._client_error(frame.body, origin)
            return _error(ReplyKind.BAD_REQUEST, UnexpectedMessageError.code)

    def _client_error(self, body: bytes, origin: str | None) -> Reply:
        """The client gave up: end its own pending handshake, if any."""
        try:
            code = decode_error_body(body)
        except FramingError as err:
            return _error(ReplyKind.BAD_REQUEST, err.code)
        self._abort(origin, f"the client reported {code}")
        return Reply(ReplyKind.ABORTED, b"")

    def refuses_origin(self, frame_type: int, origin: str | None) -> bool:
        """Whether :meth:`handshake` would refuse a frame of ``frame_type`` from ``origin`` now.

        For transports that must refuse before queueing (BLE answers at the ATT level, since its
        notifications reach every central, the real user's included).
        """
        pending = self._pending
        return (
            frame_type in {FrameType.CLIENT_FINISH, FrameType.ERROR}
            and pending is not None
            and pending[3] != origin
            and self._clock() <= pending[1].deadline
        )

    async def abort_handshake(self, origin: str | None = None, reason: str = "aborted") -> bool:
        """End the pending handshake ``origin`` started, counted as a failed attempt.

        For a client that gave up before CLIENT_FINISH (its ERROR frame, its link dropped):
        the slot is free for the retry at once instead of at the 60 s deadline. Returns
        whether a handshake was ended.
        """
        async with self._handshake_lock:
            self._expire_pending()
            return self._abort(origin, reason)

    def _abort(self, origin: str | None, reason: str) -> bool:
        pending = self._pending
        if pending is None or pending[3] != origin:
            return False
        session, attempt, _policy, _origin = pending
        self._pending = None
        session.close()
        self._limiter.fail(attempt, self._clock())
        self._attempts.record(Step.HANDSHAKE_FAILED, "aborted")
        _LOGGER.info(
            "handshake aborted (%s); counted as a failed attempt, %d left in this window",
            reason,
            self._limiter.remaining(self._clock()),
        )
        return True

    async def _client_hello(self, data: bytes, origin: str | None) -> Reply:
        self._attempts.record(Step.HANDSHAKE_STARTED, via=transport(origin))
        policy = self._policy()
        refusal = _kind_refusal(data, policy)
        if refusal is not None:
            # Not an attempt: nothing secret was used (see the module docstring).
            _LOGGER.info("handshake refused before any secret was used: %s", refusal.code)
            return self._hello_failed(ReplyKind.REFUSED, refusal.code)
        session = self._new_session(policy)
        if session is None:
            return self._hello_failed(ReplyKind.REFUSED, NoOwnerSecretError.code)
        now = self._clock()
        try:
            attempt = self._limiter.begin(now)
        except LimiterError as err:
            return self._hello_failed(ReplyKind.REFUSED, err.code)
        self._expired = None
        try:
            # SPAKE2 in pure Python takes milliseconds of CPU: keep the loop responsive.
            reply = await asyncio.to_thread(session.handle_client_hello, data)
        except ProtocolError as err:
            self._limiter.fail(attempt, self._clock())
            _LOGGER.info("handshake refused at CLIENT_HELLO: %s", err.code)
            return self._hello_failed(ReplyKind.BAD_REQUEST, err.code)
        self._pending = (session, attempt, policy, origin)
        return Reply(ReplyKind.OK, reply)

    def _hello_failed(self, kind: ReplyKind, code: str) -> Reply:
        self._attempts.record(Step.HANDSHAKE_FAILED, code)
        return _error(kind, code)

    def _new_session(self, policy: SessionPolicy) -> DeviceSession | None:
        """A session holding exactly the secrets ``policy`` allows.

        Never the label's once claimed; None for a claimed device without an owner secret.
        """
        identity = self._device.identity
        if not policy.claimed:
            return DeviceSession(
                identity,
                self._device.setup_code,
                clock=self._clock,
                timeout=self._handshake_timeout,
            )
        if policy.owner_secret is None:
            return None
        return DeviceSession.for_owner(
            identity,
            owner_secret=policy.owner_secret,
            clock=self._clock,
            timeout=self._handshake_timeout,
        )

    async def _client_finish(self, data: bytes, origin: str | None) -> Reply:
        if self._pending is None:
            if self._expired == (origin,):
                # Its handshake ran out (already counted as a failed attempt): say so, once.
                self._expired = None
                return _error(ReplyKind.AUTH_FAILED, HandshakeTimeoutError.code)
            return _error(ReplyKind.BAD_REQUEST, UnexpectedMessageError.code)
        session, attempt, policy, _origin = self._pending
        self._pending = None
        try:
            if self._policy() != policy:
                # Claimed, reset or re-keyed since the hello: that secret no longer opens it.
                raise CredentialRefusedError("the device's owner changed during the handshake")
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
            self._attempts.record(Step.HANDSHAKE_FAILED, code)
            return _error(ReplyKind.AUTH_FAILED, code)
        self._attempts.record(Step.HANDSHAKE_FINISHED)
        if self._active is not None:
            self._active.close()
        self._active = session
        self._last_frame = self._clock()
        self._on_established()
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
            response = await self._answer(plaintext, session.credential_kind)
            try:
                sealed = session.seal(encode_response(response))
            except (ProtocolError, SessionClosedError) as err:
                self._active = None
                return _error(ReplyKind.AUTH_FAILED, err.code)
            return Reply(ReplyKind.OK, sealed, session_tag=self.session_tag)

    async def _answer(
        self, plaintext: bytes, kind: CredentialKind | None
    ) -> OkResponse | ErrorResponse:
        try:
            request = decode_request(plaintext, allow_insecure_http=self._allow_insecure_http)
        except ProtocolError as err:
            request_id, command = request_reference(plaintext)
            _LOGGER.info("request %d refused: %s (%s)", request_id, err.code, err)
            return ErrorResponse.from_error(err, request_id=request_id, command=command)
        refusal = command_refusal(kind, claimed=self._policy().claimed, command=request.command)
        if refusal is not None:
            error, message = refusal
            _LOGGER.info("%s refused in a %s session: %s", request.command.value, kind, error)
            return ErrorResponse(
                request_id=request.request_id, command=request.command, error=error, message=message
            )
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
        a well-formed wrong code does. Raises :class:`LimiterError` when refused, and
        :class:`~iob_protocol.errors.OwnerSessionRequiredError` on a claimed device (the label
        opens nothing once the device is owned).
        """
        self._policy().check(CredentialKind.MANUAL)
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


def _kind_refusal(data: bytes, policy: SessionPolicy) -> CredentialRefusedError | None:
    """The refusal for the kind this hello names, if the policy refuses it."""
    try:
        policy.check(client_hello_kind(data))
    except CredentialRefusedError as err:
        return err
    except ProtocolError:
        return None  # malformed: the handshake itself refuses it, and counts the attempt
    return None


def _error(kind: ReplyKind, code: str) -> Reply:
    return Reply(kind, encode_error_frame(code), error=code)
