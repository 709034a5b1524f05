"""The device's client of the account service (``cloud_relay``).

Five calls: ``GET /v1/health`` (reachability, TLS and the service's clock), the signed claim
confirmation, the zero-touch confirmation, the signed release and the signed request for the
current MQTT credential (answered with the credential, or :class:`NotOwned` after a release).
Every failure becomes a :class:`RelayError` with the diagnostic code the user sees: connection
refused or unreachable is RELAY_UNREACHABLE, a certificate problem TLS_FAILED, the service's
``clock_skew`` answer CLOCK_SKEW, ``claim_rejected`` CLAIM_REJECTED, ``claim_expired``
CLAIM_EXPIRED, ``credential_refused`` BROKER_AUTH_FAILED. An ``http`` URL is refused before
anything is sent (TLS_FAILED) unless the agent runs with ``allow_insecure_http`` (local
development): the device's MQTT credential never crosses the LAN in clear. A device given an
``http`` URL with Home Assistant's relay (``hub_relay``) confirms through it instead.

:class:`CredentialRecovery` is how a rotated MQTT password reaches the device: when the broker
refuses the saved one, the agent asks it for the current grant, at most once per refusal and
with backoff between fruitless attempts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, TypeVar
from urllib.parse import urlsplit

import aiohttp
from iob_protocol.account_api import (
    ConfirmationRequest,
    CredentialRequest,
    ErrorBody,
    ErrorCode,
    Health,
    MqttCredentials,
    Owned,
    Released,
    ReleaseRequest,
    Unowned,
    WireFormatError,
    WireModel,
)
from iob_protocol.boundedjson import load_json
from iob_protocol.claim import ClaimConfirmation, MqttCredentialRequest, ReleaseNotice
from iob_protocol.diagnostics import DiagnosticCode
from iob_protocol.errors import MalformedMessageError
from iob_protocol.identity import DeviceIdentity
from iob_protocol.sources import MonotonicClock, WallClock, monotonic, unix_time

from .errors import RelayCertificateError, RelayError

_LOGGER: Final = logging.getLogger(__name__)

DEFAULT_TIMEOUT: Final = 15.0
#: After a credential fetch that brought nothing new, wait this long before the next one...
CREDENTIAL_RETRY_FIRST: Final = 60.0
#: ...doubling up to this (a device its owner released must not knock every minute forever).
CREDENTIAL_RETRY_MAX: Final = 3600.0
#: Largest answer the device reads from the service (the claim answer is a few hundred bytes).
MAX_RESPONSE_SIZE: Final = 64 * 1024
_HTTP_SERVER_ERROR: Final = 500

#: The service's error codes and what the user is shown.
_ERROR_CODES: Final[dict[str, DiagnosticCode]] = {
    ErrorCode.CLAIM_REJECTED: DiagnosticCode.CLAIM_REJECTED,
    ErrorCode.CLAIM_EXPIRED: DiagnosticCode.CLAIM_EXPIRED,
    ErrorCode.CLOCK_SKEW: DiagnosticCode.CLOCK_SKEW,
    # The registry key does not match this device's key: for the user this is a refused claim.
    ErrorCode.BAD_SIGNATURE: DiagnosticCode.CLAIM_REJECTED,
    # No credential for this device (not owned, or not its key): the broker refusal stands.
    ErrorCode.CREDENTIAL_REFUSED: DiagnosticCode.BROKER_AUTH_FAILED,
}

# The answers are the shared wire model's (iob_protocol.account_api), under the names the
# agent uses: the service is up (``time`` is its clock), the "owned" answer with the broker
# credentials, and the genuine device's "unowned" answer. Only a 200 answer of exactly
# ``{"status": "unowned", "device_id": <this device>}`` is :data:`NotOwned`; every error, refusal
# or other shape is a :class:`RelayError`, so a failing service can never unclaim a device.
RelayHealth = Health
MqttGrant = MqttCredentials
ClaimOutcome = Owned
NotOwned = Unowned


_Answer = TypeVar("_Answer", bound=WireModel)


def _parse(model: type[_Answer], url: str, document: object) -> _Answer:
    try:
        return model.parse(document)
    except WireFormatError as err:
        raise RelayError(
            DiagnosticCode.RELAY_UNREACHABLE, f"{url}: unexpected answer ({err})"
        ) from err


def build_ssl_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """Verifying TLS context: system CAs plus an optional private CA (blocking: use a thread)."""
    context = ssl.create_default_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as err:
            raise RelayError(DiagnosticCode.TLS_FAILED, f"cannot load CA file {ca_file}") from err
    return context


class RelayClient:
    """Talks to one account service; owns its ``aiohttp`` session unless one is injected."""

    def __init__(
        self,
        base_url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
        allow_insecure_http: bool = True,
    ) -> None:
        """``ssl_context`` replaces the default verification (a private CA); never disables it.

        ``allow_insecure_http``: the agent passes its config switch (off on a real device);
        tests against a local ``http`` service keep the default.
        """
        self._base_url = base_url.rstrip("/")
        self._in_clear_refused = not allow_insecure_http and urlsplit(base_url).scheme == "http"
        self._session = session
        self._owns_session = session is None
        self._timeout = timeout
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True

    @property
    def base_url(self) -> str:
        """The service URL, without a trailing slash."""
        return self._base_url

    async def __aenter__(self) -> Self:
        """Use as ``async with RelayClient(...) as relay``."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the session if it is ours."""
        await self.close()

    async def close(self) -> None:
        """Close the owned session."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def health(self) -> RelayHealth:
        """``GET /v1/health``: reachability, TLS and the service's clock."""
        return _parse(Health, self._base_url, await self._request("GET", "/v1/health", None))

    async def confirm_claim(self, confirmation: ClaimConfirmation) -> ClaimOutcome:
        """Post the signed confirmation; the answer carries the MQTT credentials."""
        body = ConfirmationRequest(confirmation=json.loads(confirmation.to_json())).body()
        return self._outcome(
            await self._request("POST", "/v1/claims/confirm", body), confirmation.device_id
        )

    async def confirm_zero_touch(self, message: dict[str, Any], device_id: str) -> ClaimOutcome:
        """Post a device-signed zero-touch confirmation (pre-assigned devices, over Ethernet)."""
        body = ConfirmationRequest(confirmation=message).body()
        return self._outcome(await self._request("POST", "/v1/zero-touch/confirm", body), device_id)

    async def release(self, notice: ReleaseNotice) -> None:
        """Tell the service the device let go of its owner (factory reset)."""
        body = ReleaseRequest(release=json.loads(notice.to_json())).body()
        document = await self._request("POST", "/v1/devices/release-by-device", body)
        _parse(Released, self._base_url, document)

    async def fetch_mqtt_credential(
        self, request: MqttCredentialRequest
    ) -> ClaimOutcome | NotOwned:
        """Post the signed request: the current MQTT credential, or :class:`NotOwned`."""
        body = CredentialRequest(request=json.loads(request.to_json())).body()
        document = await self._request("POST", "/v1/device/mqtt-credential", body)
        if document.get("status") == "unowned":
            answer = _parse(Unowned, self._base_url, document)
            if answer.device_id != request.device_id:
                raise RelayError(
                    DiagnosticCode.RELAY_UNREACHABLE, "the service answered for another device"
                )
            return answer
        return self._outcome(document, request.device_id)

    def _outcome(self, document: dict[str, Any], device_id: str) -> ClaimOutcome:
        if document.get("status") != "owned":
            status = document.get("status")
            raise RelayError(DiagnosticCode.CLAIM_REJECTED, f"service answered {status!r:.40}")
        outcome = _parse(Owned, self._base_url, document)
        if outcome.device_id != device_id:
            raise RelayError(
                DiagnosticCode.CLAIM_REJECTED, "the service answered for another device"
            )
        return outcome

    async def _request(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        url = self._base_url + path
        if self._in_clear_refused:
            raise RelayError(
                DiagnosticCode.TLS_FAILED,
                f"{self._base_url}: not https; this device sends nothing to the account service "
                "in clear (serve it over https, or confirm claims through Home Assistant)",
            )
        try:
            async with asyncio.timeout(self._timeout):
                async with self._client().request(
                    method, url, json=body, ssl=self._ssl, allow_redirects=False
                ) as response:
                    raw = await response.content.read(MAX_RESPONSE_SIZE + 1)
                    status = response.status
        except TimeoutError as err:
            raise RelayError(
                DiagnosticCode.RELAY_UNREACHABLE, f"{url}: no answer in {self._timeout:g} s"
            ) from err
        except (aiohttp.ClientSSLError, aiohttp.ServerFingerprintMismatch, ssl.SSLError) as err:
            raise RelayCertificateError(
                DiagnosticCode.TLS_FAILED, f"{url}: {_describe(err)}"
            ) from err
        except aiohttp.ClientConnectorDNSError as err:
            raise RelayError(DiagnosticCode.DNS_FAILED, f"{url}: {_describe(err)}") from err
        except (aiohttp.ClientError, OSError) as err:
            raise RelayError(DiagnosticCode.RELAY_UNREACHABLE, f"{url}: {_describe(err)}") from err
        if len(raw) > MAX_RESPONSE_SIZE:
            raise RelayError(DiagnosticCode.RELAY_UNREACHABLE, f"{url}: answer too large")
        try:
            document = load_json(raw, max_bytes=MAX_RESPONSE_SIZE) if raw else {}
        except MalformedMessageError as err:
            raise RelayError(
                DiagnosticCode.RELAY_UNREACHABLE, f"{url}: HTTP {status}, not JSON"
            ) from err
        if not isinstance(document, dict):
            raise RelayError(
                DiagnosticCode.RELAY_UNREACHABLE, f"{url}: HTTP {status}, not an object"
            )
        if status >= 400:  # noqa: PLR2004
            raise _error_from(url, status, document)
        return document


def _describe(err: BaseException) -> str:
    """A connection error's cause, for the user.

    aiohttp's own text shows the TLS context's repr ("ssl:<ssl.SSLContext object at 0x…>") and
    repeats the host the URL already names.
    """
    if isinstance(err, aiohttp.ClientConnectorCertificateError):
        cause: object = err.certificate_error
    elif isinstance(err, aiohttp.ClientConnectorError):
        cause = err.os_error
        if isinstance(cause, socket.gaierror):
            cause = cause.strerror or cause  # "Name or service not known"
        elif isinstance(cause, ConnectionError) or type(cause) is OSError:
            # "Connection refused" rather than asyncio's "Connect call failed ('10.0.0.5', 443)".
            # Not for a resolver's or TLS error: their numbers are not errno values.
            cause = os.strerror(cause.errno) if cause.errno else cause
    else:
        return str(err) or type(err).__name__
    return str(cause) or type(cause).__name__


def _error_from(url: str, status: int, document: dict[str, Any]) -> RelayError:
    try:
        error = ErrorBody.parse(document).error
        relay_code: str | None = error.code
        detail = f"{url}: HTTP {status} {error.code} {error.message}"
    except WireFormatError:
        relay_code, detail = None, f"{url}: HTTP {status}"
    if relay_code in _ERROR_CODES:
        return RelayError(_ERROR_CODES[relay_code], detail, relay_code=relay_code)
    if status >= _HTTP_SERVER_ERROR or relay_code is None:
        # A proxy's error page, a crashing service: from the device, the service is not there.
        return RelayError(DiagnosticCode.RELAY_UNREACHABLE, detail, relay_code=relay_code)
    return RelayError(DiagnosticCode.CLAIM_REJECTED, detail, relay_code=relay_code)


class CredentialRecovery:
    """Fetches the current MQTT credential after the broker refused the saved one.

    The owner rotated the device's password at the account service (or the broker lost it):
    the device signs a fresh :class:`~iob_protocol.claim.MqttCredentialRequest` and gets the
    current grant. One fetch per refusal, and after a fetch that brought nothing new (the
    service refused, was unreachable, or answered the refused password again) none for
    :data:`CREDENTIAL_RETRY_FIRST` seconds, doubling up to :data:`CREDENTIAL_RETRY_MAX`.
    """

    def __init__(
        self,
        identity: DeviceIdentity,
        relay_factory: Callable[[str], RelayClient],
        *,
        wall_clock: WallClock = unix_time,
        clock: MonotonicClock = monotonic,
        first_retry: float = CREDENTIAL_RETRY_FIRST,
        max_retry: float = CREDENTIAL_RETRY_MAX,
    ) -> None:
        """Sign with ``identity``; reach the service with ``relay_factory(url)``."""
        self._identity = identity
        self._relay_factory = relay_factory
        self._wall_clock = wall_clock
        self._clock = clock
        self._first_retry = first_retry
        self._max_retry = max_retry
        self._delay = first_retry
        self._not_before: float | None = None

    async def fetch(
        self, service_url: str, *, refused_password: str
    ) -> MqttGrant | NotOwned | None:
        """The current grant if it differs from the refused one; None otherwise (or too soon).

        :class:`NotOwned` when the service answered that no household owns the device (the
        caller returns it to unclaimed). Never raises for the service's failures: they are
        logged (without any password) and the caller keeps its BROKER_AUTH_FAILED diagnostic.
        """
        now = self._clock()
        if self._not_before is not None and now < self._not_before:
            return None
        try:
            request = MqttCredentialRequest.create(self._identity, clock=self._wall_clock)
            async with self._relay_factory(service_url) as relay:
                outcome = await relay.fetch_mqtt_credential(request)
        except RelayError as err:
            if err.relay_code == ErrorCode.CREDENTIAL_REFUSED:
                _LOGGER.warning(
                    "MQTT: the account service refused this device's credential request (it "
                    "does not know this identity, or the request was not fresh); check the "
                    "service address, or factory-reset the device and set it up again from "
                    "Home Assistant"
                )
            else:
                _LOGGER.warning(
                    "MQTT: cannot fetch the current credential (%s); next try in %.0f s or later",
                    err,
                    self._delay,
                )
            self._back_off(now)
            return None
        if isinstance(outcome, NotOwned):
            _LOGGER.warning(
                "MQTT: the account service says no household owns this device any more "
                "(released by its household)"
            )
            self._back_off(now)  # if the caller cannot act on it, not again at once
            return outcome
        if outcome.mqtt.password == refused_password:
            _LOGGER.warning(
                "MQTT: the account service holds the credential the broker refused; run the "
                "service's broker reconcile command"
            )
            self._back_off(now)
            return None
        self._delay = self._first_retry
        self._not_before = None
        _LOGGER.info("MQTT: fetched the current credential for user %s", outcome.mqtt.username)
        return outcome.mqtt

    def _back_off(self, now: float) -> None:
        self._not_before = now + self._delay
        self._delay = min(self._delay * 2, self._max_retry)
