"""A broker adapter that fails chosen calls: failures injected around the real adapter."""

from __future__ import annotations

from collections.abc import Mapping

from cloud_relay.broker import (
    BrokerAdapter,
    BrokerState,
    BrokerUnavailableError,
    DeviceCredential,
    HubCredential,
    ReconcileReport,
    ToolCredential,
)


class FailingBroker(BrokerAdapter):
    """The real adapter, with chosen calls failing after (or instead of) reaching the broker."""

    def __init__(self, inner: BrokerAdapter) -> None:
        self.inner = inner
        self.fail: set[str] = set()
        self.calls: list[str] = []
        #: False: grants nothing in place, as an adapter without ``grant_device`` (the caller
        #: puts the whole hub).
        self.in_place = True

    def _maybe_fail(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise BrokerUnavailableError(f"injected failure in {name}")

    async def put_device(self, credential: DeviceCredential) -> None:
        await self.inner.put_device(credential)
        self._maybe_fail("put_device")

    async def remove_device(self, device_id: str) -> None:
        if "remove_device" in self.fail:
            self._maybe_fail("remove_device")
        await self.inner.remove_device(device_id)

    async def put_hub(self, credential: HubCredential, access: Mapping[str, bool]) -> None:
        self._maybe_fail("put_hub")
        await self.inner.put_hub(credential, access)

    async def grant_device(
        self, credential: HubCredential, device_id: str, *, control: bool
    ) -> bool:
        if not self.in_place:
            return False
        granted = await self.inner.grant_device(credential, device_id, control=control)
        self._maybe_fail("grant_device")  # after it reached the broker: the answer was lost
        return granted

    async def remove_hub(self, household_id: str) -> None:
        self._maybe_fail("remove_hub")
        await self.inner.remove_hub(household_id)

    async def put_tool(self, credential: ToolCredential) -> None:
        await self.inner.put_tool(credential)
        self._maybe_fail("put_tool")

    async def remove_tool(self, credential_id: str) -> None:
        self._maybe_fail("remove_tool")
        await self.inner.remove_tool(credential_id)

    async def reconcile(self, desired: BrokerState) -> ReconcileReport:
        return await self.inner.reconcile(desired)

    async def aclose(self) -> None:
        """The inner adapter belongs to its fixture."""
