"""One connection's flood must not make the bus keep others waiting behind
it (issue 11): the bus routes a bounded number of one connection's messages
per event-loop turn (io/connection.py MESSAGES_PER_TURN), so a message
another client sends after a flood was written is routed while the flood
is still being routed; and the flood itself arrives whole and in order.

Order, not time, is checked: a service reads, in the order the bus routed
them, the flooder's pipelined calls and the victim's one call."""

import os
import signal
import socket
import time

from jeepney import new_method_call
from jeepney.low_level import MessageFlag, MessageType, Parser
from jeepney.wrappers import DBusAddress

from itutil import IS_DBUS_DAEMON, TIMEOUT, hello_bytes, raw_auth, raw_connect

# About 110 KB in one write: it fits the socket's buffer, so the write is
# complete while the bus is stopped, and it is far more than one turn's share.
FLOOD = 1500


def _registered(bus):
    """A raw connection after Hello and its NameAcquired, and its unique name."""
    s = raw_connect(bus)
    raw_auth(s)
    s.sendall(hello_bytes())
    parser = Parser()
    name = acquired = None
    while name is None or acquired is None:
        for m in parser.feed(s.recv(65536)):
            if m.header.message_type == MessageType.method_return:
                name = m.body[0]
            elif m.header.fields.get(3) == "NameAcquired":
                acquired = m.body[0]
    return s, name, parser


def _read(s, parser, count):
    """count messages from s (AssertionError if they do not come)."""
    got = []
    deadline = time.monotonic() + TIMEOUT * 4
    while len(got) < count:
        assert time.monotonic() < deadline, f"only {len(got)} of {count} messages arrived"
        got.extend(parser.feed(s.recv(1 << 20)))
    return got


def _call(dest, member, serial, no_reply=False):
    msg = new_method_call(DBusAddress("/flood", bus_name=dest, interface="com.example.Flood"), member)
    if no_reply:
        msg.header.flags |= MessageFlag.no_reply_expected
    return msg.serialise(serial=serial)


def test_victim_is_routed_while_a_flood_is(bus):
    service, service_name, service_parser = _registered(bus)
    flooder, _, _ = _registered(bus)
    victim, victim_name, _ = _registered(bus)
    flood = b"".join(_call(service_name, "Flood", serial, no_reply=True) for serial in range(2, FLOOD + 2))
    flooder.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    # Both writes are waiting when the bus wakes, the flood first: the
    # victim's call is sent after the whole flood, whatever the scheduler does.
    os.kill(bus.pid, signal.SIGSTOP)
    try:
        flooder.sendall(flood)
        victim.sendall(_call(service_name, "Victim", 2, no_reply=True))
    finally:
        os.kill(bus.pid, signal.SIGCONT)
    got = _read(service, service_parser, FLOOD + 1)
    members = [m.header.fields[3] for m in got]
    at = members.index("Victim")
    if not IS_DBUS_DAEMON:
        # Before the bound, the flooder's whole write was routed in its
        # turn and the victim's call came after the last of it.
        assert at < FLOOD, "the victim's call waited for the whole flood"
    flood_serials = [m.header.serial for m in got if m.header.fields[3] == "Flood"]
    assert flood_serials == list(range(2, FLOOD + 2)), "the flood lost or reordered messages"
    for s in (service, flooder, victim):
        s.close()


def test_pipelined_calls_are_all_answered_in_order(bus):
    """Thousands of driver calls in one write, left for later turns past
    each turn's share: every reply comes, in order."""
    flooder, name, parser = _registered(bus)
    flood = b"".join(new_method_call(DBusAddress("/org/freedesktop/DBus", bus_name="org.freedesktop.DBus",
                                                 interface="org.freedesktop.DBus"), "GetId").serialise(serial=s)
                     for s in range(2, FLOOD + 2))
    flooder.sendall(flood)
    got = _read(flooder, parser, FLOOD)
    assert [m.header.fields[5] for m in got] == list(range(2, FLOOD + 2))
    assert all(m.header.message_type == MessageType.method_return for m in got)
    flooder.close()
