"""Every error the broker adapters raise.

One base, :class:`BrokerError`, kept local to this package (it subclasses ``Exception``, not the
account service's error base) so the adapters stay usable without the rest of the service; the
service maps it to its own errors at the call site. Messages say what failed and what to do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class BrokerError(Exception):
    """Base of every error in this package."""


class InvalidIdentifierError(BrokerError, ValueError):
    """A device or household id cannot be used in a topic or username.

    Raised before the broker is touched: an id with ``+``, ``#`` or ``/`` in it would widen
    the ACL it lands in to other devices' topics.
    """


class InvalidCredentialError(BrokerError, ValueError):
    """A password the broker would refuse (empty, or not a string)."""


class BrokerUnavailableError(BrokerError):
    """The broker cannot be reached, or the connection to it broke and did not come back."""


class BrokerTimeoutError(BrokerUnavailableError):
    """The broker did not answer in time."""


class BrokerAuthenticationError(BrokerError):
    """The broker refused the adapter's own (admin) username or password."""


class BrokerPermissionError(BrokerError):
    """The adapter's user is not allowed to drive the broker's security plugin."""


class BrokerProtocolError(BrokerError):
    """The broker answered something the adapter does not understand."""


class BrokerCommandError(BrokerError):
    """The broker refused one or more commands.

    ``failures`` holds each refused command (without secrets) and the broker's reason.
    """

    def __init__(self, message: str, failures: Sequence[Mapping[str, Any]] = ()) -> None:
        """Keep the failed commands for callers and logs."""
        super().__init__(message)
        self.failures = tuple(failures)


class BrokerConflictError(BrokerError):
    """The broker's state kept changing under the adapter while it applied a change."""


class AdapterClosedError(BrokerError):
    """The adapter was used after ``aclose()``."""
