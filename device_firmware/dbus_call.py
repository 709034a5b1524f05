"""One D-Bus method call, shared by the NetworkManager and BlueZ code.

:func:`call` builds the method-call message, waits for the reply (optionally bounded) and
returns its body; every failure is one :class:`DBusCallError`. The callers turn it into their
own error with the next step for the person at the device (``NetworkManagerError``,
``BluezError``), which is why this module only says what failed, never what to do.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Sequence
from typing import Any, Final

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

from .errors import DeviceError

#: The bus daemon itself (``GetNameOwner``, ``AddMatch``, ``RemoveMatch``).
DBUS_BUS: Final = "org.freedesktop.DBus"
DBUS_PATH: Final = "/org/freedesktop/DBus"
#: NetworkManager's well-known name (the backend calls it; the WPS agent answers only it).
NM_BUS: Final = "org.freedesktop.NetworkManager"


class DBusCallError(DeviceError):
    """A D-Bus method call failed.

    ``error_name`` is the D-Bus error the peer answered with (for example
    ``org.freedesktop.DBus.Error.ServiceUnknown``) and ``detail`` its text; when the call never
    got an answer (the connection broke, the timeout passed) ``error_name`` is empty and
    ``detail`` says what happened.
    """

    def __init__(self, member: str, detail: str, *, error_name: str = "") -> None:
        """Keep the method, the peer's error name (if it answered) and the detail."""
        super().__init__(
            f"{member}: {error_name}: {detail}" if error_name else f"{member}: {detail}"
        )
        self.member = member
        self.detail = detail
        self.error_name = error_name


async def connect(bus_address: str | None) -> MessageBus:
    """The system bus, or the bus at ``bus_address`` (a private one), connected.

    Raises :class:`DBusCallError` (member ``connect``, the failure as its ``detail``).
    """
    try:
        if bus_address is None:
            bus = MessageBus(bus_type=BusType.SYSTEM)
        else:
            bus = MessageBus(bus_address=bus_address)
        return await bus.connect()
    except (OSError, EOFError, DBusError) as err:
        raise DBusCallError("connect", str(err)) from err


async def call(
    bus: MessageBus,
    destination: str,
    path: str,
    interface: str,
    member: str,
    *,
    signature: str = "",
    body: Sequence[Any] = (),
    timeout: float | None = None,  # noqa: ASYNC109 - bounding the reply is this helper's job
) -> list[Any]:
    """Call ``interface.member`` on ``path`` at ``destination`` and return the reply's body.

    ``signature`` and ``body`` are the arguments' D-Bus signature and values. ``timeout``
    (seconds) bounds the wait for the reply; ``None`` waits as long as the bus connection
    lives. Raises :class:`DBusCallError`.
    """
    message = Message(
        destination=destination,
        path=path,
        interface=interface,
        member=member,
        signature=signature,
        body=list(body),
    )
    try:
        async with asyncio.timeout(timeout):
            reply = await bus.call(message)
    except (OSError, EOFError, DBusError) as err:  # TimeoutError is an OSError
        raise DBusCallError(member, str(err)) from err
    if reply is None:  # only for a message sent without expecting a reply; never the case here
        return []
    if reply.message_type is MessageType.ERROR:
        text = str(reply.body[0]) if reply.body else ""
        raise DBusCallError(member, text, error_name=reply.error_name or "unknown")
    return list(reply.body)


class BusClient(abc.ABC):
    """A backend that calls one service on the bus (BlueZ, NetworkManager) through :func:`call`.

    Subclasses say which bus to use, the service's bus name and how a failed call reads as
    their own error.
    """

    __slots__ = ()

    #: The service's bus name, where :meth:`_call` sends to unless told otherwise.
    _DESTINATION: str
    #: Seconds a reply may take; None: as long as the connection lives.
    _CALL_TIMEOUT: float | None = None

    @abc.abstractmethod
    async def _bus_for_call(self) -> MessageBus:
        """The connected bus to call on (or raise the backend's error)."""

    @abc.abstractmethod
    def _call_error(self, err: DBusCallError) -> Exception:
        """The failed call as the backend's error."""

    async def _call(
        self,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        body: Sequence[Any] = (),
        *,
        destination: str | None = None,
    ) -> list[Any]:
        bus = await self._bus_for_call()
        try:
            return await call(
                bus,
                self._DESTINATION if destination is None else destination,
                path,
                interface,
                member,
                signature=signature,
                body=body,
                timeout=self._CALL_TIMEOUT,
            )
        except DBusCallError as err:
            raise self._call_error(err) from err
