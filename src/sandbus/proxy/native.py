"""The native back end: on a bus with Containers1 (sandbus) an ADDRESS PATH
group is not proxied at all.  We bind and listen on PATH ourselves (Flatpak
made it as an empty file and bind-mounts it into the app's sandbox) and
hand the socket to the bus with AddServer: type org.flatpak, the app id as
name, /.flatpak-info as metadata, and with --filter the group's policy as
Allow rules (containers/shorthand.py).  The app then talks to the bus
directly, and the bus knows its instance and its own pid."""

import os
import socket

from ..containers.rules import (
    BUS_NAME_IS_SUBTREE,
    CALL_METHODS,
    OBJECT_PATH_IS_SUBTREE,
    SEND_UNIX_FDS,
    UNIQUE_NAMES,
)
from ..containers.shorthand import ShorthandError, compile_rules
from ..io.client import BUS_NAME, BUS_PATH, BusError, Client, ClientError
from ..wire.marshal import Variant

IFACE = "org.freedesktop.DBus.Containers1"
PROPERTIES = "org.freedesktop.DBus.Properties"
CONTAINER_TYPE = "org.flatpak"
# What a group needs of the bus's Containers1 (docs/containers.md).
NEEDED_ARGUMENTS = ("Socket", "Allow", "LogDenials")
NEEDED_FLAGS = ("ExactMember",)
SLOPPY_NAMES_RULE = (BUS_NAME_IS_SUBTREE | OBJECT_PATH_IS_SUBTREE, UNIQUE_NAMES, "/", "")


class GroupError(Exception):
    """Why a group could not start: one line."""


def allow_rules(group) -> list:
    """The Allow rules of a --filter group, in the order given.  xdg-dbus-proxy
    passes fds wherever a call may go (portals take them: OpenFile, Print...),
    so every rule that allows calls allows fds too."""
    try:
        rules = compile_rules(see=group.see, talk=group.talk, own=group.own, call=group.call,
                              broadcast=group.broadcast)
    except ShorthandError as e:
        raise GroupError(str(e)) from None
    rules = [(f | SEND_UNIX_FDS if f & CALL_METHODS else f, n, p, i) for f, n, p, i in rules]
    if group.sloppy_names:
        rules.append(SLOPPY_NAMES_RULE)
    return rules


def connect(address: str, timeout: float = 10.0) -> Client:
    try:
        return Client(address, timeout=timeout)
    except (ClientError, OSError, ValueError) as e:  # ValueError: wire.address.AddressError
        raise GroupError(f"Failed to connect to bus {address}: {e}") from None


def has_native_support(client) -> bool:
    """Whether the bus's Containers1 takes what a group needs (sandbus's
    does; dbus-daemon's experimental one has no Socket or Allow)."""
    try:
        props = client.call(BUS_NAME, BUS_PATH, PROPERTIES, "GetAll", "s", (IFACE,))[0]
    except BusError:
        return False
    args = props.get("SupportedArguments")
    flags = props.get("SupportedAccessFlags")
    if args is None or flags is None:
        return False
    return all(a in args.value for a in NEEDED_ARGUMENTS) and all(f in flags.value for f in NEEDED_FLAGS)


def listen_on(path: str) -> socket.socket:
    """A listening socket at path, replacing the placeholder file there."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        sock.bind(path)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise GroupError(f"Failed to listen on {path}: {e.strerror or e}") from None
    return sock


class NativeGroup:
    """One group as a container instance; the manager connection it is
    tied to (StopOnDisconnect) stays open while we run."""

    def __init__(self, group, client):
        self.group = group
        self.client = client
        self.path = None  # the instance's object path
        self.socket_path = None  # what we bound, removed at exit

    def start(self, app_id: str, metadata: dict) -> None:
        g = self.group
        rules = allow_rules(g) if g.filter else None
        sock = listen_on(g.path)
        self.socket_path = g.path
        named = {"Socket": Variant("h", 0), "LogDenials": Variant("b", g.log)}
        if rules is not None:
            named["Allow"] = Variant("a(usos)", rules)
        try:
            self.path = self.client.call(BUS_NAME, BUS_PATH, IFACE, "AddServer", "ssa{sv}a{sv}",
                                         (CONTAINER_TYPE, app_id, metadata, named), fds=[sock.fileno()])[0]
        except BusError as e:
            raise GroupError(f"The bus at {g.address} refused AddServer: {e}") from None
        except (ClientError, OSError) as e:
            raise GroupError(f"Lost the bus at {g.address}: {e}") from None
        finally:
            sock.close()  # the bus has its own copy now

    def stop(self) -> None:
        if self.path is not None:
            try:
                self.client.call(BUS_NAME, BUS_PATH, IFACE, "StopInstance", "o", (self.path,), timeout=5)
            except (ClientError, OSError):
                pass
            self.path = None
        if self.socket_path is not None:
            try:
                os.unlink(self.socket_path)
            except OSError:
                pass
            self.socket_path = None

    def close(self) -> None:
        self.client.close()
