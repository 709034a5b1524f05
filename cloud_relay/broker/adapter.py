"""The boundary between the account service and a broker (Mosquitto today, EMQX for scale).

Every method is idempotent, so a retried or replayed call converges on the same state, and
``reconcile`` can repair anything a crash between database and broker left behind. The
database is the source of truth; the broker is a projection of it.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Self

from .model import BrokerState, DeviceCredential, HubCredential, ReconcileReport, ToolCredential


class BrokerAdapter(abc.ABC):
    """Credentials and ACLs on an MQTT broker.

    Usable as ``async with adapter:`` (``connect()`` on enter, ``aclose()`` on exit).
    """

    async def connect(self) -> None:  # noqa: B027 - optional hook, not abstract on purpose
        """Connect eagerly, so a wrong address or credential shows at start-up.

        Adapters also connect lazily on their first call; the default does nothing.
        """

    async def __aenter__(self) -> Self:
        """Connect."""
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close."""
        await self.aclose()

    def set_reconnect_hook(self, hook: Callable[[], Awaitable[None]] | None) -> None:  # noqa: B027
        """Run ``hook`` whenever the adapter's connection to the broker is back after a loss.

        A broker that restarted may have lost changes (or kept changes made while the service
        could not see it), so the service reconciles then. Adapters with a persistent
        connection watch it and reconnect on their own once a hook is set; an adapter without
        one keeps this default and never calls the hook. None removes the hook.
        """

    @abc.abstractmethod
    async def put_device(self, credential: DeviceCredential) -> None:
        """Create or update a device client that may touch only ``iob/<device_id>/#``."""

    @abc.abstractmethod
    async def remove_device(self, device_id: str) -> None:
        """Delete a device client at once, disconnecting a live session (release, reset)."""

    @abc.abstractmethod
    async def put_hub(self, credential: HubCredential, access: Mapping[str, bool]) -> None:
        """Create or update a household hub and what it reaches.

        ``access`` maps device id → control: every listed device's subtree may be subscribed;
        ``iob/<device_id>/cmd/#`` may be published only where control is True (viewer shares
        are subscribe-only). Devices not listed are no longer reachable.
        """

    async def grant_device(
        self, credential: HubCredential, device_id: str, *, control: bool
    ) -> bool:
        """Let an existing hub reach one more device, leaving the rest of its rights alone.

        What a claim needs: the household's hub gains its new device (``control`` as in
        :meth:`put_hub`), so the broker work does not grow with the household. Idempotent. False
        when it was not done: an adapter that cannot add to a hub's rights in place (this
        default), or no such hub on the broker; the caller then puts the whole hub.
        """
        del credential, device_id, control
        return False

    @abc.abstractmethod
    async def remove_hub(self, household_id: str) -> None:
        """Delete a household hub client, disconnecting it."""

    @abc.abstractmethod
    async def put_tool(self, credential: ToolCredential) -> None:
        """Create or update a household's credential for another MQTT tool.

        It reaches what the household's hub reaches (whose client must have been put first),
        read-only unless ``credential.control``: then it may publish the commands the hub may,
        except a factory reset. It receives no commands and no diagnostics. Devices joining or
        leaving the household change it through the hub alone.
        """

    @abc.abstractmethod
    async def remove_tool(self, credential_id: str) -> None:
        """Delete a tool credential at once, disconnecting its live session (revocation)."""

    async def kick_hub(self, household_id: str) -> None:  # noqa: B027 - optional, see below
        """Disconnect the hub's live sessions, keeping its client (it may reconnect at once).

        After a device leaves a household (transfer, release, unshare), so its Home Assistant
        reconnects and re-reads the device list instead of showing the device until its next
        periodic refresh. A hub that does not exist is not an error. An adapter whose broker
        cannot disconnect a client keeps this default, which does nothing: then Home Assistant
        learns at its periodic refresh (the ACLs are right either way).
        """

    @abc.abstractmethod
    async def reconcile(self, desired: BrokerState) -> ReconcileReport:
        """Make the broker's IoT Onboard clients exactly ``desired``; leave others alone."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release the adapter's connection."""
