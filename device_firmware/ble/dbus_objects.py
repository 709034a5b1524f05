"""A small D-Bus object server on dbus-fast's message level, for the objects BlueZ calls back.

BlueZ reads an application's objects with ``ObjectManager.GetManagedObjects`` and
``Properties.GetAll``, then calls methods on them (``WriteValue``, ``StartNotify``, ``Release``)
and watches ``PropertiesChanged``. Serving that from one message handler keeps the D-Bus types
explicit (no string annotations for dbus-fast's ``ServiceInterface``), lets a handler answer
synchronously in call order, and keeps the objects testable as plain Python.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Mapping
from typing import Final, TypeAlias
from xml.sax.saxutils import quoteattr

from dbus_fast import Message, MessageFlag, MessageType, Variant
from dbus_fast.aio import MessageBus

from .errors import GattError

_LOGGER = logging.getLogger(__name__)

IFACE_PROPERTIES: Final = "org.freedesktop.DBus.Properties"
IFACE_OBJECT_MANAGER: Final = "org.freedesktop.DBus.ObjectManager"
IFACE_INTROSPECTABLE: Final = "org.freedesktop.DBus.Introspectable"
_IFACE_PEER: Final = "org.freedesktop.DBus.Peer"
_UNKNOWN_METHOD: Final = "org.freedesktop.DBus.Error.UnknownMethod"
_UNKNOWN_INTERFACE: Final = "org.freedesktop.DBus.Error.UnknownInterface"
_UNKNOWN_PROPERTY: Final = "org.freedesktop.DBus.Error.UnknownProperty"
_READ_ONLY: Final = "org.freedesktop.DBus.Error.PropertyReadOnly"
_INVALID_ARGS: Final = "org.freedesktop.DBus.Error.InvalidArgs"
_MANAGED_OBJECTS_SIGNATURE: Final = "a{oa{sa{sv}}}"

Properties: TypeAlias = dict[str, Variant]


class ExportedObject(abc.ABC):
    """An object at a path with read-only properties and (optionally) methods."""

    def __init__(self, path: str) -> None:
        """Live at ``path``."""
        self.path = path

    @abc.abstractmethod
    def properties(self) -> dict[str, Properties]:
        """Properties by interface (every interface the object implements)."""

    def call(self, message: Message) -> Message | None:
        """Answer a method call on one of the object's own interfaces; None if unknown.

        Raise :class:`GattError` to refuse with a BlueZ error.
        """
        del message
        return None


class ObjectServer:
    """Serves :class:`ExportedObject` instances on one bus connection."""

    def __init__(self, bus: MessageBus) -> None:
        """Install the message handler on ``bus``."""
        self._bus = bus
        self._objects: dict[str, ExportedObject] = {}
        self._roots: set[str] = set()
        bus.add_message_handler(self._handle)

    def export(self, obj: ExportedObject) -> None:
        """Make ``obj`` reachable."""
        self._objects[obj.path] = obj

    def add_root(self, path: str) -> None:
        """A path that answers ``GetManagedObjects`` for the objects below it (an app root)."""
        self._roots.add(path)

    def unexport(self, path: str) -> None:
        """Remove the object (and root) at ``path``."""
        self._objects.pop(path, None)
        self._roots.discard(path)

    def close(self) -> None:
        """Stop answering."""
        self._bus.remove_message_handler(self._handle)
        self._objects.clear()
        self._roots.clear()

    def emit_properties_changed(
        self, path: str, interface: str, changed: Mapping[str, Variant]
    ) -> None:
        """Emit ``PropertiesChanged`` (how BlueZ learns a new Value or advertisement data)."""
        if not self._bus.connected:
            return
        self._bus.send(
            Message.new_signal(
                path,
                IFACE_PROPERTIES,
                "PropertiesChanged",
                "sa{sv}as",
                [interface, dict(changed), []],
            )
        )

    def managed_objects(self, root: str) -> dict[str, dict[str, Properties]]:
        """``GetManagedObjects`` of ``root``: the objects strictly below it, and itself if any."""
        prefix = root.rstrip("/") + "/"
        return {
            path: obj.properties()
            for path, obj in sorted(self._objects.items())
            if path == root or path.startswith(prefix)
        }

    # --- dispatch ---------------------------------------------------------------------------

    def _handle(self, message: Message) -> Message | bool | None:
        if message.message_type is not MessageType.METHOD_CALL or message.path is None:
            return None
        if message.interface == _IFACE_PEER:
            return None  # dbus-fast answers Ping and GetMachineId for every path
        path = message.path
        if path not in self._objects and path not in self._roots:
            return None
        try:
            reply = self._dispatch(path, message)
        except GattError as err:
            reply = Message.new_error(message, err.kind.dbus_name, err.detail)
        if message.flags & MessageFlag.NO_REPLY_EXPECTED:
            return True
        return reply

    def _dispatch(self, path: str, message: Message) -> Message:
        interface, member = message.interface, message.member
        if interface == IFACE_OBJECT_MANAGER and member == "GetManagedObjects":
            return Message.new_method_return(
                message, _MANAGED_OBJECTS_SIGNATURE, [self.managed_objects(path)]
            )
        if interface == IFACE_INTROSPECTABLE and member == "Introspect":
            return Message.new_method_return(message, "s", [self._introspect(path)])
        obj = self._objects.get(path)
        if obj is None:
            return Message.new_error(message, _UNKNOWN_METHOD, f"{path} is only an app root")
        if interface == IFACE_PROPERTIES:
            return self._properties(obj, message)
        reply = obj.call(message)
        if reply is None:
            return Message.new_error(
                message, _UNKNOWN_METHOD, f"{interface}.{member} is not implemented at {path}"
            )
        return reply

    @staticmethod
    def _properties(obj: ExportedObject, message: Message) -> Message:
        everything = obj.properties()
        member, body = message.member, message.body
        if member == "GetAll" and message.signature == "s":
            return Message.new_method_return(message, "a{sv}", [everything.get(body[0], {})])
        if member == "Get" and message.signature == "ss":
            interface, name = body
            if interface not in everything:
                return Message.new_error(message, _UNKNOWN_INTERFACE, interface)
            if name not in everything[interface]:
                return Message.new_error(message, _UNKNOWN_PROPERTY, name)
            return Message.new_method_return(message, "v", [everything[interface][name]])
        if member == "Set":
            return Message.new_error(message, _READ_ONLY, "properties are read-only")
        return Message.new_error(message, _INVALID_ARGS, f"Properties.{member}")

    def _introspect(self, path: str) -> str:
        """Interfaces of the object and its direct children (for busctl and d-feet)."""
        parts = ['<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"']
        parts.append('"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n<node>')
        obj = self._objects.get(path)
        names = [IFACE_INTROSPECTABLE]
        if path in self._roots:
            names.append(IFACE_OBJECT_MANAGER)
        if obj is not None:
            names += [IFACE_PROPERTIES, *obj.properties()]
        parts.extend(f"<interface name={quoteattr(name)}/>" for name in names)
        prefix = path.rstrip("/") + "/"
        children = sorted(
            {
                other[len(prefix) :].split("/", 1)[0]
                for other in self._objects
                if other.startswith(prefix)
            }
        )
        parts.extend(f"<node name={quoteattr(child)}/>" for child in children)
        parts.append("</node>")
        return "".join(parts)
