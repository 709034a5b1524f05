"""Projecting the database onto the broker: credentials, hub access, compensation.

The database is the source of truth. A mutation that changes what the broker must hold makes
its broker calls through a :class:`BrokerPlan` before it commits: while its transaction is
still open (after its writes, before the audit append and the commit), or, for a claim's
device client, just before the transaction begins (``mutate(prepare=...)``: the broker round
trip then holds no database lock; the transaction re-checks that what was put is what it
commits, see :meth:`BrokerPlan.put_before`). If anything fails, the transaction rolls back
and :meth:`BrokerPlan.compensate` re-projects every device and hub the plan touched from the
(unchanged) database, so nothing of the failed operation remains on the broker either. A
crash between broker call and commit is repaired by ``broker reconcile``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import Final, TypeVar

from .broker import (
    BrokerAdapter,
    BrokerError,
    BrokerState,
    DeviceCredential,
    HubCredential,
    HubState,
    ToolCredential,
)
from .config import RelayConfig
from .errors import BrokerUnavailableError, RelayError
from .storage import Connection, Storage
from .tokens import mqtt_password

_LOGGER: Final = logging.getLogger(__name__)
_T = TypeVar("_T")
#: A broker call that takes longer than this is treated as failed (and compensated).
BROKER_TIMEOUT: Final = 10.0


def device_credential(config: RelayConfig, device_id: str, version: int) -> DeviceCredential:
    """A device's MQTT credential at ``version``."""
    return DeviceCredential(
        device_id, mqtt_password(config.secret_key, "device", device_id, version)
    )


def hub_credential(config: RelayConfig, household_id: str, version: int) -> HubCredential:
    """A household hub's MQTT credential at ``version``."""
    return HubCredential(
        household_id, mqtt_password(config.secret_key, "hub", household_id, version)
    )


def tool_credential(
    config: RelayConfig, credential_id: str, household_id: str, *, control: bool
) -> ToolCredential:
    """A household's MQTT credential for another tool (never rotated: revoke and mint anew)."""
    return ToolCredential(
        credential_id,
        household_id,
        control,
        mqtt_password(config.secret_key, "tool", credential_id, 1),
    )


def household_lock(household_id: str) -> str:
    """The storage lock serialising the transactions that re-project a household's hub."""
    return f"household:{household_id}"


async def hub_access(conn: Connection, household_id: str) -> dict[str, bool]:
    """Device id → control, for every device the household owns or has been shared."""
    access = {
        row["device_id"]: True
        for row in await conn.fetch(
            "SELECT device_id FROM devices WHERE household_id = $1", household_id
        )
    }
    for row in await conn.fetch(
        "SELECT device_id, control FROM shares WHERE household_id = $1", household_id
    ):
        access.setdefault(row["device_id"], bool(row["control"]))
    return access


async def desired_state(conn: Connection, config: RelayConfig) -> BrokerState:
    """The whole broker state the database asks for (``broker reconcile``)."""
    devices = {
        row["device_id"]: device_credential(config, row["device_id"], row["credential_version"])
        for row in await conn.fetch(
            "SELECT device_id, credential_version FROM devices WHERE household_id IS NOT NULL"
        )
    }
    hubs: dict[str, HubState] = {}
    for row in await conn.fetch("SELECT household_id, credential_version FROM hubs"):
        household_id = row["household_id"]
        hubs[household_id] = HubState(
            hub_credential(config, household_id, row["credential_version"]),
            await hub_access(conn, household_id),
        )
    tools = {
        row["id"]: tool_credential(
            config, row["id"], row["household_id"], control=bool(row["control"])
        )
        for row in await conn.fetch(
            "SELECT c.id, c.household_id, c.control FROM mqtt_credentials c "
            "JOIN hubs h ON h.household_id = c.household_id"
        )
    }
    return BrokerState(devices=devices, hubs=hubs, tools=tools)


async def broker_call(call: Awaitable[_T], what: str) -> _T:
    """Run one adapter call with a deadline; broker failures become the service's own error.

    Anything else (a bug) propagates as it is; callers compensate for every exception alike.
    """
    try:
        async with asyncio.timeout(BROKER_TIMEOUT):
            return await call
    except (BrokerError, TimeoutError) as err:
        _LOGGER.warning("broker call %s failed: %s", what, err)
        raise BrokerUnavailableError from err


class NeedsBrokerError(Exception):
    """A body run without the broker (:attr:`BrokerPlan.offline`) reached a broker call.

    Raised before the plan changes anything, so the body can run again, online.
    """


class BrokerPlan:
    """Broker changes made inside one transaction, and how to undo them."""

    def __init__(self, broker: BrokerAdapter, config: RelayConfig) -> None:
        """Track calls made on ``broker``."""
        self._broker = broker
        self._config = config
        #: Set while the body runs on SQLite's writer thread (no event loop there): a broker
        #: call raises :class:`NeedsBrokerError` instead (see :func:`cloud_relay.mutation.mutate`).
        self.offline = False
        self._devices: set[str] = set()
        self._hubs: set[str] = set()
        self._kicks: set[str] = set()
        self._put: dict[str, int] = {}
        self._tools: set[str] = set()

    def _online(self) -> None:
        if self.offline:
            raise NeedsBrokerError

    async def put_device(self, device_id: str, version: int) -> DeviceCredential:
        """Create or update the device's client; return the credential."""
        self._online()
        credential = device_credential(self._config, device_id, version)
        self._devices.add(device_id)
        self._put.pop(device_id, None)
        await broker_call(self._broker.put_device(credential), f"put_device {device_id}")
        self._put[device_id] = version
        return credential

    async def put_before(self, device_id: str, version: int) -> DeviceCredential:
        """:meth:`put_device` unless this plan already put exactly that credential.

        A claim puts the device's client before its transaction takes the write lock, at the
        version it read then; inside the transaction it calls this with the version it reads
        under the lock: equal, the earlier call stands (nothing changed in between that the
        broker must reflect); different, the client is put again at the locked version.
        """
        if self._put.get(device_id) == version:
            return device_credential(self._config, device_id, version)
        return await self.put_device(device_id, version)

    async def remove_device(self, device_id: str) -> None:
        """Delete the device's client and kick its session."""
        self._online()
        self._devices.add(device_id)
        self._put.pop(device_id, None)
        await broker_call(self._broker.remove_device(device_id), f"remove_device {device_id}")

    async def remove_hub(self, household_id: str) -> None:
        """Delete the household's hub client and kick its sessions (the household is deleted)."""
        self._online()
        self._hubs.add(household_id)
        self._kicks.discard(household_id)
        await broker_call(self._broker.remove_hub(household_id), f"remove_hub {household_id}")

    async def put_hub(self, conn: Connection, household_id: str, version: int) -> HubCredential:
        """Create or update a hub with the access the transaction's view of the database gives.

        Takes the household's lock first (:func:`household_lock`), so concurrent transactions
        of one household put its hub one after another, each from a view that holds every
        change committed before it: the broker never grants more, or less, than the database.
        """
        self._online()
        credential = hub_credential(self._config, household_id, version)
        self._hubs.add(household_id)
        await conn.lock(household_lock(household_id))
        access = await hub_access(conn, household_id)
        await broker_call(self._broker.put_hub(credential, access), f"put_hub {household_id}")
        return credential

    async def grant_device(
        self, conn: Connection, household_id: str, device_id: str, *, kick: bool = False
    ) -> None:
        """The household's hub, if it has one, may now reach its new device, with control.

        A claim's part: one grant in place (:meth:`BrokerAdapter.grant_device`), so its broker
        work does not grow with the household; where the adapter cannot, or the hub is missing
        on the broker, the whole hub is put (:meth:`put_hub`). Under the household's lock as
        :meth:`put_hub`: a concurrent re-projection of the hub (a release, an unshare) runs
        wholly before or after it, from a view that has or lacks the device accordingly.
        ``kick`` as in :meth:`sync_hubs`.
        """
        version = await conn.fetchval(
            "SELECT credential_version FROM hubs WHERE household_id = $1", household_id
        )
        if version is None:
            return
        self._online()
        credential = hub_credential(self._config, household_id, int(version))
        self._hubs.add(household_id)
        await conn.lock(household_lock(household_id))
        granted = await broker_call(
            self._broker.grant_device(credential, device_id, control=True),
            f"grant_device {device_id} to {household_id}",
        )
        if not granted:
            await self.put_hub(conn, household_id, int(version))
        if kick:
            self._kicks.add(household_id)

    async def put_tool(self, credential: ToolCredential) -> None:
        """Create a household's tool credential (its hub must have been put)."""
        self._online()
        self._tools.add(credential.credential_id)
        await broker_call(self._broker.put_tool(credential), f"put_tool {credential.credential_id}")

    async def remove_tool(self, credential_id: str) -> None:
        """Delete a tool credential and kick its live session."""
        self._online()
        self._tools.add(credential_id)
        await broker_call(self._broker.remove_tool(credential_id), f"remove_tool {credential_id}")

    async def sync_hubs(
        self, conn: Connection, household_ids: Iterable[str], *, kick: bool = False
    ) -> None:
        """Re-project the hubs of ``household_ids`` (those that have one).

        ``kick``: their device lists changed in a way their Home Assistant must learn now (a
        device left or arrived by transfer, release or unshare); their live sessions are
        disconnected once the transaction has committed (:meth:`after_commit`), so the
        reconnect re-reads a device list that already shows the change.
        """
        for household_id in sorted(set(household_ids)):
            version = await conn.fetchval(
                "SELECT credential_version FROM hubs WHERE household_id = $1", household_id
            )
            if version is not None:
                await self.put_hub(conn, household_id, int(version))
                if kick:
                    self._kicks.add(household_id)

    async def after_commit(self) -> None:
        """Disconnect the hubs :meth:`sync_hubs` was asked to kick; never raises.

        Best effort: the broker's ACLs are already right, so a hub that could not be kicked
        only learns of the change at its Home Assistant's periodic refresh (logged).
        """
        for household_id in sorted(self._kicks):
            try:
                await broker_call(self._broker.kick_hub(household_id), f"kick_hub {household_id}")
            except RelayError as err:
                _LOGGER.warning(
                    "household %s's Home Assistant was not disconnected (%s); it sees the "
                    "change at its next device-list refresh (at most 15 minutes)",
                    household_id,
                    err,
                )
        self._kicks.clear()

    async def _undo_tool(self, conn: Connection, credential_id: str) -> None:
        row = await conn.fetchrow(
            "SELECT household_id, control FROM mqtt_credentials WHERE id = $1", credential_id
        )
        if row is None:
            call = self._broker.remove_tool(credential_id)
        else:
            call = self._broker.put_tool(
                tool_credential(
                    self._config, credential_id, row["household_id"], control=bool(row["control"])
                )
            )
        await broker_call(call, f"undo tool {credential_id}")

    async def compensate(self, storage: Storage) -> None:
        """After a rollback: make every touched device and hub match the database again."""
        if not (self._devices or self._hubs or self._tools):
            return
        try:
            async with storage.read() as conn:
                for device_id in sorted(self._devices):
                    row = await conn.fetchrow(
                        "SELECT household_id, credential_version FROM devices WHERE device_id = $1",
                        device_id,
                    )
                    if row is None or row["household_id"] is None:
                        await broker_call(
                            self._broker.remove_device(device_id), f"undo {device_id}"
                        )
                    else:
                        credential = device_credential(
                            self._config, device_id, row["credential_version"]
                        )
                        await broker_call(self._broker.put_device(credential), f"undo {device_id}")
                # Tools first: they hold their hub's role (docs/broker.md).
                for credential_id in sorted(self._tools):
                    await self._undo_tool(conn, credential_id)
                for household_id in sorted(self._hubs):
                    version = await conn.fetchval(
                        "SELECT credential_version FROM hubs WHERE household_id = $1",
                        household_id,
                    )
                    if version is None:
                        await broker_call(
                            self._broker.remove_hub(household_id), f"undo hub {household_id}"
                        )
                    else:
                        hub = hub_credential(self._config, household_id, int(version))
                        access = await hub_access(conn, household_id)
                        await broker_call(
                            self._broker.put_hub(hub, access), f"undo hub {household_id}"
                        )
        except RelayError as err:
            _LOGGER.error(  # noqa: TRY400 - the cause was logged by broker_call
                "could not undo broker changes (%s); run `python -m cloud_relay broker "
                "reconcile` once the broker is back",
                err,
            )
