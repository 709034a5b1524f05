"""Errors of the device agent.

One base, :class:`DeviceError`, for everything this package raises (the network backend's
``NetworkError`` is a :class:`DiagnosedError` too). Errors a user can meet carry the
:class:`~iob_protocol.diagnostics.DiagnosticCode` they are shown.
"""

from __future__ import annotations

from iob_protocol.diagnostics import DiagnosticCode


class DeviceError(Exception):
    """Base of every error in the device agent."""


class ConfigError(DeviceError):
    """The configuration file or a command-line override is invalid."""


class NotProvisionedError(DeviceError):
    """No factory identity on this device yet: run ``factory-provision`` first."""


class FactoryError(DeviceError):
    """Factory provisioning could not complete."""


class IdentityExistsError(FactoryError):
    """An identity already exists; overwriting it orphans the registry record and the label."""


class StateError(DeviceError):
    """The persisted state cannot be read or written."""


class CorruptStateError(StateError):
    """The state file exists but is not a valid state (never produced by an atomic write)."""


class InvalidTransitionError(StateError):
    """A state change the state machine does not allow (a bug, or a race)."""


class ScenarioError(DeviceError):
    """A simulated-network scenario file is invalid."""


class DiagnosedError(DeviceError):
    """A failure with the diagnostic code the user is shown."""

    def __init__(self, code: DiagnosticCode, detail: str = "") -> None:
        """Keep the code and a technical detail for logs."""
        super().__init__(f"{code.value}: {detail}" if detail else code.value)
        self.code = code
        self.detail = detail


class RelayError(DiagnosedError):
    """The account service could not be used; ``relay_code`` is its error code, if it sent one."""

    def __init__(
        self, code: DiagnosticCode, detail: str = "", *, relay_code: str | None = None
    ) -> None:
        """Keep the service's own error code next to the diagnostic."""
        super().__init__(code, detail)
        self.relay_code = relay_code


class RelayCertificateError(RelayError):
    """TLS_FAILED in the handshake: the service's certificate was not the one trusted.

    A wrong or unknown CA, an expired certificate, or a captive portal answering port 443.
    """


class CommitError(DiagnosedError):
    """The fail-safe commit failed and was rolled back."""


class CommandRefusedError(DeviceError):
    """A session command cannot run now; ``error`` is the wire error code."""

    def __init__(self, error: str, message: str) -> None:
        """Keep the wire code and a short human message."""
        super().__init__(message)
        self.error = error
        self.message = message
