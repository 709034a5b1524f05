"""The IoT Onboard add-on on Home Assistant OS: installed, started and linked from the flow.

The add-on (``addon/iot_onboard_relay`` in this repository) lives in a third-party add-on
repository, so the Supervisor's store knows it only once that repository is added. Installing
it from the integration therefore takes four steps, each skipped when already done: add the
repository, install the add-on (the Supervisor's :class:`AddonManager`, as the matter and
zwave_js integrations use it), start it, and wait for its announcement (the Supervisor's
discovery message with the service's URL and a one-time provisioning token), which the flow
redeems like the ``hassio`` discovery step does.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any, Final

from aiohasupervisor import SupervisorError
from aiohasupervisor.models import StoreAddRepository
from homeassistant.components.hassio.addon_manager import AddonError, AddonManager, AddonState
from homeassistant.components.hassio.handler import get_supervisor_client
from homeassistant.core import HomeAssistant
from homeassistant.helpers.singleton import singleton

_LOGGER = logging.getLogger(__name__)

#: The add-on repository (this repository: ``repository.yaml`` at its root).
ADDON_REPOSITORY: Final = "https://github.com/iot-onboard/iot-onboard"
ADDON_NAME: Final = "IoT Onboard account service"


def addon_slug(repository: str = ADDON_REPOSITORY) -> str:
    """The add-on's slug in the store: the repository's hash (the Supervisor's rule) + its own."""
    digest = hashlib.sha1(repository.lower().encode(), usedforsecurity=False).hexdigest()
    return f"{digest[:8]}_iot_onboard_relay"


#: How long the started add-on may take to announce itself (it starts Mosquitto, migrates the
#: database and waits for its own health check first).
ANNOUNCE_TIMEOUT: Final = 120.0
ANNOUNCE_POLL: Final = 2.0


@dataclass(frozen=True, slots=True)
class AddonAnnouncement:
    """What the add-on told Home Assistant through the Supervisor's discovery."""

    url: str
    token: str = field(repr=False)
    name: str


class AddonSetupError(Exception):
    """The add-on could not be installed, started or heard from; ``reason`` is the abort."""

    def __init__(self, reason: str, cause: str) -> None:
        """``reason``: the flow's abort key; ``cause``: one line for the log."""
        super().__init__(cause)
        self.reason = reason


@singleton("iot_onboard_addon_manager")
def get_addon_manager(hass: HomeAssistant) -> AddonManager:
    """The one manager of the add-on (it tracks its running tasks)."""
    return AddonManager(hass, _LOGGER, ADDON_NAME, addon_slug())


async def async_set_up_addon(hass: HomeAssistant) -> dict[str, Any]:
    """Add the repository, install and start the add-on; return its announcement's config."""
    manager = get_addon_manager(hass)
    try:
        supervisor = get_supervisor_client(hass)
        known = {repository.source for repository in await supervisor.store.repositories_list()}
        if ADDON_REPOSITORY not in known:
            _LOGGER.info("adding the add-on repository %s", ADDON_REPOSITORY)
            await supervisor.store.add_repository(StoreAddRepository(repository=ADDON_REPOSITORY))
        info = await manager.async_get_addon_info()
        if info.state is AddonState.NOT_INSTALLED:
            _LOGGER.info("installing the %s add-on", ADDON_NAME)
            await manager.async_install_addon()
            info = await manager.async_get_addon_info()
        if info.state is not AddonState.RUNNING:
            _LOGGER.info("starting the %s add-on", ADDON_NAME)
            await manager.async_start_addon()
    except SupervisorError as err:
        raise AddonSetupError("addon_install_failed", f"the Supervisor refused: {err}") from err
    except AddonError as err:
        raise AddonSetupError("addon_install_failed", str(err)) from err
    async with asyncio.timeout(ANNOUNCE_TIMEOUT):
        while True:
            try:
                return await manager.async_get_addon_discovery_info()
            except AddonError:
                await asyncio.sleep(ANNOUNCE_POLL)
