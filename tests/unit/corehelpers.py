"""Helpers for socket-free tests of the sans-I/O bus core.

A ``FakeSink`` stands in for the io layer's connection: it records what the
bus sends and whether it closed the connection.  A ``Client`` wraps one peer:
it builds messages with ``sandbus.wire.message.build_message``, feeds them to
``Bus.receive`` and parses what the peer received with ``Message``.
"""

import os

from sandbus.config.model import Limits
from sandbus.core.bus import Bus, BusSettings
from sandbus.core.peer import Credentials
from sandbus.wire.message import (
    ERROR,
    METHOD_CALL,
    METHOD_RETURN,
    NO_REPLY_EXPECTED,
    SIGNAL,
    Message,
    build_message,
)

BUS_NAME = "org.freedesktop.DBus"
BUS_PATH = "/org/freedesktop/DBus"
BUS_IFACE = "org.freedesktop.DBus"
ERR = "org.freedesktop.DBus.Error."
GUID = "0123456789abcdef0123456789abcdef"
MACHINE_ID = "fedcba9876543210fedcba9876543210"
OTHER_UID = os.getuid() + 4242  # an unprivileged uid (not the bus owner, not root)


class FakeSink:
    def __init__(self):
        self.sent = []  # [(bytes, tuple(fds))]
        self.closed = None  # the reason, once closed
        self.queued_bytes = 0

    def send(self, data, fds):
        assert self.closed is None, "the bus wrote to a connection it had closed"
        self.sent.append((bytes(data), tuple(fds)))

    def close(self, reason):
        self.closed = reason


def make_bus(**limits) -> Bus:
    """A session bus; keyword arguments override Limits fields."""
    base = Limits.defaults("session")
    if limits:
        base = base.with_overrides(limits)
    return Bus(BusSettings(GUID, MACHINE_ID, limits=base, bus_uid=os.getuid(), bus_pid=os.getpid()),
               release_fds=lambda fds: None)


class Client:
    """One connection to the bus, driven by hand."""

    def __init__(self, bus: Bus, *, uid=None, pid=4321, unix_fds=True, gids=None, listener=None):
        self.bus = bus
        self.sink = FakeSink()
        uid = os.getuid() if uid is None else uid
        self.peer = bus.connect(self.sink, Credentials(uid=uid, pid=pid, gids=gids), unix_fds, listener)
        self._serial = 0
        self._read = 0  # index into sink.sent of the first unread message
        self.unique_name = None

    # -- sending ---------------------------------------------------------------

    def next_serial(self) -> int:
        self._serial += 1
        return self._serial

    def send_raw(self, data: bytes, fds=()) -> None:
        if fds:
            self.peer.incoming_fds.extend(fds)
        self.bus.receive(self.peer, data)

    def send(self, mtype=METHOD_CALL, *, serial=None, endian="l", fds=(), **fields) -> int:
        serial = self.next_serial() if serial is None else serial
        if fds and "unix_fds" not in fields:
            fields["unix_fds"] = len(fds)
        self.send_raw(build_message(mtype, serial, endian=endian, **fields), fds)
        return serial

    def call(self, destination, member, signature="", body=(), *, path="/", interface=None,
             flags=0, **kw) -> int:
        return self.send(METHOD_CALL, destination=destination, path=path, interface=interface,
                         member=member, signature=signature, body=body, flags=flags, **kw)

    def signal(self, member, signature="", body=(), *, path="/a/b", interface="com.example.Iface",
               destination=None, **kw) -> int:
        return self.send(SIGNAL, path=path, interface=interface, member=member,
                         destination=destination, signature=signature, body=body, **kw)

    def reply(self, call: Message, signature="", body=(), **kw) -> int:
        return self.send(METHOD_RETURN, reply_serial=call.serial, destination=call.sender,
                         signature=signature, body=body, **kw)

    def error(self, call: Message, name="com.example.Error.Oops", text="oops", **kw) -> int:
        return self.send(ERROR, reply_serial=call.serial, destination=call.sender, error_name=name,
                         signature="s", body=(text,), **kw)

    def driver(self, member, signature="", body=(), *, interface=BUS_IFACE, path=BUS_PATH, flags=0) -> int:
        """Send a driver call without reading anything."""
        return self.call(BUS_NAME, member, signature, body, path=path, interface=interface, flags=flags)

    def bus_call(self, member, signature="", body=(), **kw) -> Message:
        """Call the driver and return its reply (method return or error);
        other messages stay unread in order."""
        serial = self.driver(member, signature, body, **kw)
        return self.reply_to(serial)

    def bus_ok(self, member, signature="", body=(), **kw) -> list:
        r = self.bus_call(member, signature, body, **kw)
        assert r.type == METHOD_RETURN, f"{member} failed: {r.error_name}: {r.body()}"
        return r.body()

    def bus_error(self, member, signature="", body=(), **kw):
        """(error name, error text) of a driver call expected to fail."""
        r = self.bus_call(member, signature, body, **kw)
        assert r.type == ERROR, f"{member} unexpectedly succeeded: {r.body()}"
        return r.error_name, r.body()[0]

    def hello(self) -> str:
        self.unique_name = self.bus_ok("Hello")[0]
        return self.unique_name

    # -- receiving -------------------------------------------------------------

    @property
    def closed(self):
        return self.sink.closed

    def all_received(self) -> list:
        return [Message(data, fds) for data, fds in self.sink.sent]

    def received(self) -> list:
        """Messages not read yet (and mark them read)."""
        new = self.sink.sent[self._read:]
        self._read = len(self.sink.sent)
        return [Message(data, fds) for data, fds in new]

    def reply_to(self, serial: int) -> Message:
        """Remove and return the reply to serial among the unread messages."""
        for i in range(self._read, len(self.sink.sent)):
            data, fds = self.sink.sent[i]
            m = Message(data, fds)
            if m.type in (METHOD_RETURN, ERROR) and m.reply_serial == serial:
                del self.sink.sent[i]
                return m
        raise AssertionError(f"no reply to serial {serial}; unread: {describe(self.peek())}")

    def peek(self) -> list:
        return [Message(d, f) for d, f in self.sink.sent[self._read:]]

    def signals(self, member=None) -> list:
        """Unread signals (all of them are marked read), optionally only one member."""
        return [m for m in self.received() if m.type == SIGNAL and (member is None or m.member == member)]

    def clear(self) -> None:
        self._read = len(self.sink.sent)


def connect(bus: Bus, hello=True, **kw) -> Client:
    c = Client(bus, **kw)
    if hello:
        c.hello()
        c.clear()
    return c


def describe(msgs) -> list:
    out = []
    for m in msgs:
        body = m.body() if m.signature else []
        if m.type == ERROR:
            out.append(("error", m.error_name, m.reply_serial, body))
        elif m.type == METHOD_RETURN:
            out.append(("return", m.reply_serial, body))
        else:
            kind = "signal" if m.type == SIGNAL else "call"
            out.append((kind, m.sender, m.destination, m.member, body))
    return out


def sig_summary(msgs) -> list:
    """(member, body) of each signal, for order checks."""
    return [(m.member, tuple(m.body())) for m in msgs if m.type == SIGNAL]


__all__ = [
    "BUS_IFACE", "BUS_NAME", "BUS_PATH", "Client", "ERR", "ERROR", "FakeSink", "GUID",
    "MACHINE_ID", "METHOD_CALL", "METHOD_RETURN", "Message", "NO_REPLY_EXPECTED", "OTHER_UID",
    "SIGNAL", "build_message", "connect", "describe", "make_bus", "sig_summary",
]
