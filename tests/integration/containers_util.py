"""Helpers for the Containers1 integration tests: a bus whose container
sockets land in a private XDG_RUNTIME_DIR, and AddServer wrappers."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from jeepney import HeaderFields, MessageType, new_method_call, DBusAddress

from itutil import (
    BUS_NAME,
    BUS_PATH,
    IS_DBUS_DAEMON,
    MINIMAL_CONFIG,
    TIMEOUT,
    Client,
    DaemonBus,
    DBusErrorReply,
    write_config,
)

CIFACE = "org.freedesktop.DBus.Containers1"
NOT_CONTAINER = "org.freedesktop.DBus.Error.NotContainer"
ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
LIMITS_EXCEEDED = "org.freedesktop.DBus.Error.LimitsExceeded"
NAME_HAS_NO_OWNER = "org.freedesktop.DBus.Error.NameHasNoOwner"
SERVICE_UNKNOWN = "org.freedesktop.DBus.Error.ServiceUnknown"

# Access flags (docs/containers.md)
PATH_SUBTREE = 1
NAME_SUBTREE = 2
CALL = 4
BROADCASTS = 8
FDS = 16
OWN = 32
TALK = CALL | BROADCASTS
EXACT_MEMBER = 64

NOBODY = 65534

# Everyone may connect to the main socket (for the other-uid tests).
OPEN_CONFIG = MINIMAL_CONFIG.replace(
    '<policy context="default">\n', '<policy context="default">\n    <allow user="*"/>\n', 1)
assert '<allow user="*"/>' in OPEN_CONFIG

# The reference dbus-daemon has Containers1 only with --enable-containers,
# and none of the sandbus extensions: test modules skip themselves on it.
SKIP_REFERENCE = pytest.mark.skipif(IS_DBUS_DAEMON, reason="Containers1 tests target sandbus")


class ContainerBus:
    """A running sandbus daemon in a world-traversable temp dir, with
    XDG_RUNTIME_DIR pointing into it (so container sockets land there)."""

    def __init__(self, extra_xml: str = "", open_policy: bool = True):
        self.root = Path(tempfile.mkdtemp(prefix="sbc-"))
        os.chmod(self.root, 0o755)
        self.runtime = self.root / "run"
        (self.runtime / "dbus-1" / "containers").mkdir(parents=True)
        for p in (self.runtime, self.runtime / "dbus-1", self.runtime / "dbus-1" / "containers"):
            os.chmod(p, 0o755)
        workdir = self.root / "bus"
        workdir.mkdir()
        os.chmod(workdir, 0o755)
        conf = write_config(self.root / "bus.conf", extra_xml,
                            OPEN_CONFIG.format(extra=extra_xml) if open_policy else None)
        old = os.environ.get("XDG_RUNTIME_DIR")
        os.environ["XDG_RUNTIME_DIR"] = str(self.runtime)
        try:
            self.daemon = DaemonBus(workdir, config_file=conf)
        finally:
            if old is None:
                os.environ.pop("XDG_RUNTIME_DIR", None)
            else:
                os.environ["XDG_RUNTIME_DIR"] = old
        os.chmod(self.daemon.socket_path, 0o777)
        self.address = self.daemon.address
        self.socket_dir = self.runtime / "dbus-1" / "containers"
        self.clients = []

    def client(self, address=None, enable_fds=False) -> Client:
        c = Client(address or self.address, enable_fds=enable_fds)
        self.clients.append(c)
        return c

    def env(self, **extra):
        return self.daemon.env(**extra)

    def stop(self, check=True):
        for c in self.clients:
            try:
                c.close()
            except Exception:
                pass
        self.daemon.stop(check=check)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def cbus_factory():
    started = []

    def factory(extra_xml: str = "", open_policy: bool = True) -> ContainerBus:
        b = ContainerBus(extra_xml, open_policy)
        started.append(b)
        return b

    try:
        yield factory
    finally:
        for b in started:
            b.stop()


@pytest.fixture
def cbus(cbus_factory) -> ContainerBus:
    return cbus_factory()


def ccall(client: Client, member, signature=None, *body, timeout=TIMEOUT):
    return client.call(BUS_NAME, BUS_PATH, CIFACE, member, signature, body, timeout=timeout)


def cerror(client: Client, member, signature=None, *body) -> DBusErrorReply:
    return client.bus_error(member, signature, *body, iface=CIFACE)


def add_server(client: Client, ctype="com.example.App", name="app", metadata=None, named=None):
    """AddServer; returns (path, socket_path bytes, address)."""
    return tuple(ccall(client, "AddServer", "ssa{sv}a{sv}", ctype, name, metadata or {}, named or {}))


def allow(*rules):
    """Named arguments with an Allow list of (flags, name, path, iface)."""
    return {"Allow": ("a(usos)", list(rules))}


def error_of(client: Client, dest, path, iface, member, signature=None, body=(), flags=0):
    try:
        r = client.call(dest, path, iface, member, signature, body, flags=flags)
    except DBusErrorReply as e:
        return (e.name, e.text)
    return ("ok", r)


def raw_reply(client: Client, msg):
    """(error name or None, body) of a call, with the exact error text."""
    r = client.call_msg(msg)
    return (r.header.fields.get(HeaderFields.error_name), r.body)


def call_msg(dest, path, iface, member, signature=None, body=()):
    return new_method_call(DBusAddress(path, bus_name=dest, interface=iface), member, signature, tuple(body))


def is_error(m, name=None):
    return m.header.message_type == MessageType.error and (
        name is None or m.header.fields.get(HeaderFields.error_name) == name)
