"""Join by the router's WPS push button: a NetworkManager secret agent for one activation.

NetworkManager runs WPS by itself. When a profile with ``key-mgmt=wpa-psk`` and no ``psk``
(``psk-flags`` 0, so NetworkManager keeps the key it learns) is activated on an access point
that advertises WPS, NetworkManager starts a push-button session in wpa_supplicant and asks the
registered secret agents for the key with :data:`FLAG_WPS_PBC_ACTIVE` set. The agent holds that
request: when the router hands the key over, NetworkManager cancels it (``CancelGetSecrets``)
and activates with the key. Without the flag (the access point offers no WPS) or past the
agent's wait, it answers ``NoSecrets`` and the activation fails (``no-secrets``): the caller
says WPS_FAILED.

The agent lives only while the device joins by button, and it answers only for that profile:
after a wrong typed passphrase NetworkManager also tries WPS on a WPS router, and then no agent
must hold the request (the join fails as the wrong passphrase it is). Verified on Debian
Bookworm (NetworkManager 1.42, hostapd 2.10) in the VM stage, scenario ``wps_push_button``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from dbus_fast import Message, MessageFlag, MessageType
from dbus_fast.aio import MessageBus

from device_firmware.dbus_call import DBUS_BUS, DBUS_PATH, NM_BUS, DBusCallError, call

_LOGGER = logging.getLogger(__name__)

AGENT_PATH: Final = "/org/freedesktop/NetworkManager/SecretAgent"
AGENT_MANAGER_PATH: Final = "/org/freedesktop/NetworkManager/AgentManager"
IFACE_SECRET_AGENT: Final = "org.freedesktop.NetworkManager.SecretAgent"  # noqa: S105 - a name
IFACE_AGENT_MANAGER: Final = "org.freedesktop.NetworkManager.AgentManager"
#: The agent's name at NetworkManager (unique per user).
AGENT_IDENTIFIER: Final = "org.iot_onboard.device.wps"
#: ``NMSecretAgentGetSecretsFlags``: a WPS push-button session is running.
FLAG_WPS_PBC_ACTIVE: Final = 0x8
NO_SECRETS: Final = "org.freedesktop.NetworkManager.SecretAgent.NoSecrets"
_CANCELED: Final = "org.freedesktop.NetworkManager.SecretAgent.AgentCanceled"
_UNKNOWN_METHOD: Final = "org.freedesktop.DBus.Error.UnknownMethod"
_ACCESS_DENIED: Final = "org.freedesktop.DBus.Error.AccessDenied"


class WpsAgent:
    """Holds NetworkManager's key request for one profile while its WPS session runs.

    ``outcome`` says what happened, for the caller's diagnostic: ``"waiting"`` (no request
    yet), ``"held"``, ``"handed-over"`` (NetworkManager cancelled the request: the router gave
    the key), ``"no-wps"`` (asked without a WPS session) or ``"timed-out"``.
    """

    def __init__(
        self, bus: MessageBus, profile: str, *, wait: float, caller: str | None = None
    ) -> None:
        """Answer for ``profile`` only; hold its request at most ``wait`` seconds.

        ``caller``: the only bus name whose calls are answered (NetworkManager's unique name,
        looked up at :meth:`register` when None); anyone else on the bus is refused, so no
        other process can release or cancel NetworkManager's request.
        """
        self._bus = bus
        self._profile = profile
        self._wait = wait
        self._caller = caller
        self._held: Message | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.outcome = "waiting"

    async def register(self) -> None:
        """Serve the agent's object and register it; NetworkManager asks it from now on."""
        if self._caller is None:
            try:
                (owner,) = await call(
                    self._bus, DBUS_BUS, DBUS_PATH, DBUS_BUS, "GetNameOwner",
                    signature="s", body=[NM_BUS],
                )  # fmt: skip
            except (DBusCallError, ValueError) as err:
                raise WpsAgentError(f"NetworkManager is not on the bus ({err})") from err
            self._caller = str(owner)
        self._bus.add_message_handler(self._handle)
        try:
            await self._manager("RegisterWithCapabilities", "su", [AGENT_IDENTIFIER, 0])
        except DBusCallError as err:
            self._bus.remove_message_handler(self._handle)
            raise WpsAgentError(f"NetworkManager refused the WPS agent ({err})") from err
        _LOGGER.debug("WPS secret agent registered for %s", self._profile)

    async def unregister(self) -> None:
        """Stop answering (a held request gets ``NoSecrets``) and leave NetworkManager."""
        self._release(NO_SECRETS, "the join ended")
        self._bus.remove_message_handler(self._handle)
        if not self._bus.connected:
            return
        try:
            await self._manager("Unregister")
        except DBusCallError as err:
            _LOGGER.debug("WPS agent unregister refused: %s", err)

    async def _manager(
        self, member: str, signature: str = "", body: list[object] | None = None
    ) -> None:
        """Call NetworkManager's AgentManager (as the agent's own connection: it is the agent)."""
        await call(
            self._bus,
            NM_BUS,
            AGENT_MANAGER_PATH,
            IFACE_AGENT_MANAGER,
            member,
            signature=signature,
            body=body or [],
        )

    def describe(self) -> str:
        """Why the router's key did not arrive, in the user's words (for WPS_FAILED)."""
        if self.outcome == "no-wps":
            return (
                "the router does not offer WPS push-button now (its button was not pressed "
                "within two minutes before the join, or WPS is off)"
            )
        if self.outcome == "timed-out":
            return f"the router handed over no key within {self._wait:g} s of WPS push-button"
        return f"NetworkManager's WPS session ended without a key ({self.outcome})"

    # --- the SecretAgent object ---------------------------------------------------------------

    def _handle(self, message: Message) -> Message | bool | None:
        if (
            message.message_type is not MessageType.METHOD_CALL
            or message.path != AGENT_PATH
            or message.interface != IFACE_SECRET_AGENT
        ):
            return None
        if message.sender != self._caller:
            return Message.new_error(message, _ACCESS_DENIED, "only NetworkManager may ask")
        member = message.member
        if member == "GetSecrets":
            return self._get_secrets(message)
        if member == "CancelGetSecrets":
            connection, _setting = message.body
            if connection == self._profile and self._held is not None:
                self.outcome = "handed-over"
                self._release(_CANCELED, "cancelled by NetworkManager")
            return self._ack(message)
        if member in {"SaveSecrets", "DeleteSecrets"}:
            return self._ack(message)  # NetworkManager stores the key itself (psk-flags 0)
        return Message.new_error(message, _UNKNOWN_METHOD, f"no method {member}")

    def _get_secrets(self, message: Message) -> Message | bool:
        _settings, connection, setting, _hints, flags = message.body
        if connection != self._profile or setting != "802-11-wireless-security":
            return Message.new_error(message, NO_SECRETS, "not this agent's profile")
        if not int(flags) & FLAG_WPS_PBC_ACTIVE:
            self.outcome = "no-wps"
            return Message.new_error(message, NO_SECRETS, "no WPS session: no key to give")
        self._release(NO_SECRETS, "a newer request")
        self._held = message
        self.outcome = "held"
        self._timer = asyncio.get_running_loop().call_later(self._wait, self._expire)
        _LOGGER.info("WPS push-button session running: waiting for the router's key")
        return True  # answered later: by CancelGetSecrets, the wait, or unregister

    def _expire(self) -> None:
        if self._held is not None:
            self.outcome = "timed-out"
            self._release(NO_SECRETS, "no key from the router in time")

    def _release(self, error: str, detail: str) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        held, self._held = self._held, None
        if held is None or not self._bus.connected:
            return
        if not held.flags & MessageFlag.NO_REPLY_EXPECTED:
            self._bus.send(Message.new_error(held, error, detail))

    @staticmethod
    def _ack(message: Message) -> Message | bool:
        if message.flags & MessageFlag.NO_REPLY_EXPECTED:
            return True
        return Message.new_method_return(message)


class WpsAgentError(Exception):
    """NetworkManager did not accept the agent (polkit, an old NetworkManager)."""
