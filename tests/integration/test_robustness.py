"""Regressions for ways one client could hurt the bus or others: unbounded
queues, allocation driven by a declared length, a poisoned header cache, and
replies smuggled out of a mediated container."""

import socket
import struct
import time

import pytest
from jeepney.low_level import Header, HeaderFields, Message, MessageType, Endianness

from containers_util import add_server, allow, cbus, cbus_factory  # noqa: F401  (fixtures)
from itutil import (
    IS_DBUS_DAEMON,
    TIMEOUT,
    Client,
    assert_bus_alive,
    hello_bytes,
    raw_auth,
    raw_connect,
    read_until_closed,
)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def registered(bus):
    s = raw_connect(bus)
    raw_auth(s)
    s.sendall(hello_bytes())
    return s


def test_signal_flood_to_a_non_reader_stays_bounded(bus_factory):
    """Signals to a subscriber that never reads are dropped past
    max_outgoing_bytes; the bus's memory stays bounded and others are served."""
    bus = bus_factory('<limit name="max_outgoing_bytes">262144</limit>')
    slow = registered(bus)
    slow.sendall(_add_match_bytes("type='signal',interface='com.example.Flood'"))
    time.sleep(0.3)
    before = rss_kib(bus.pid)
    with Client(bus.address) as emitter:
        payload = "x" * 16384
        for i in range(1500):  # about 24 MB if nothing were dropped
            emitter.send(_signal(payload))
        emitter.bus("GetId")  # a round trip: the bus has routed every signal
    assert rss_kib(bus.pid) - before < 40 * 1024
    assert_bus_alive(bus)
    slow.close()


def test_declared_length_does_not_allocate(bus_factory):
    """A bare header declaring a large message must not make the bus
    allocate that much before the bytes arrive."""
    bus = bus_factory()
    before = rss_kib(bus.pid)
    socks = []
    for _ in range(20):
        s = registered(bus)
        # 30 MiB body declared, one header field, then nothing more
        fields = b"\x05\x01u\x00" + struct.pack("<I", 1)
        s.sendall(b"l\x02\x00\x01" + struct.pack("<III", 30 << 20, 7, len(fields)) + fields)
        socks.append(s)
    time.sleep(0.5)
    assert rss_kib(bus.pid) - before < 60 * 1024
    assert_bus_alive(bus)
    for s in socks:
        s.close()


def test_header_cache_cannot_be_poisoned(module_bus):
    """A malformed header stays malformed after a well-formed header with
    the same leading bytes has been seen."""
    good = registered(module_bus)
    fields = b"\x05\x01u\x00" + struct.pack("<I", 5)
    good.sendall(b"l\x02\x00\x01" + struct.pack("<III", 0, 9, 8) + fields)  # a valid reply to nobody
    bad = registered(module_bus)
    # fields_len 5: the REPLY_SERIAL field is cut short
    bad.sendall(b"l\x02\x00\x01" + struct.pack("<III", 0, 9, 5) + fields[:5] + b"\0\0\0")
    read_until_closed(bad)
    bad.close()
    good.close()
    assert_bus_alive(module_bus)


@pytest.mark.skipif(IS_DBUS_DAEMON, reason="Containers1 mediation is sandbus's")
def test_mediated_peer_cannot_smuggle_replies(cbus):  # noqa: F811
    """An unrequested reply out of a mediated container never arrives, and a
    hidden destination answers exactly like a missing one."""
    with cbus.client() as outside:
        _, _, address = add_server(outside, named=allow())
        with cbus.client(address) as inside:
            answers = {}
            for dest in (outside.unique_name, ":1.9999"):
                reply = Message(Header(Endianness.little, MessageType.method_return, 0, 1, 0, 0,
                                       {HeaderFields.reply_serial: 3, HeaderFields.destination: dest}), ())
                serial = inside.send(reply)
                err = inside.wait_for(lambda m: m.header.fields.get(HeaderFields.reply_serial) == serial,
                                      what="error for the smuggled reply")
                answers[dest] = (err.header.fields[HeaderFields.error_name],
                                 err.body[0].replace(dest, "NAME"))
            assert answers[outside.unique_name] == answers[":1.9999"]
            outside.assert_no(lambda m: m.header.message_type == MessageType.method_return
                              and m.header.fields.get(HeaderFields.reply_serial) == 3)


def _add_match_bytes(rule: str) -> bytes:
    from itutil import BUS_NAME, BUS_PATH, BUS_IFACE, raw_message
    body = struct.pack("<I", len(rule.encode())) + rule.encode() + b"\0"
    return raw_message(1, fields=[(1, "o", BUS_PATH), (2, "s", BUS_IFACE), (3, "s", "AddMatch"),
                                  (6, "s", BUS_NAME), (8, "g", "s")], body=body, serial=2)


def _signal(payload: str) -> Message:
    from jeepney import new_signal, DBusAddress
    return new_signal(DBusAddress("/flood", interface="com.example.Flood"), "Tick", "s", (payload,))


def _send_with_fds(s, data: bytes, count: int) -> None:
    import array
    import os
    import socket
    r, w = os.pipe()
    try:
        s.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r] * count))])
    finally:
        os.close(r)
        os.close(w)


def _fd_client(bus):
    s = raw_connect(bus)
    raw_auth(s, unix_fd=True)
    s.sendall(hello_bytes())
    return s


@pytest.mark.skipif(IS_DBUS_DAEMON, reason="dbus-daemon stops reading such a client instead; "
                    "sandbus disconnects it, since fds come with their message's first bytes")
def test_unclaimed_fds_beyond_one_message_disconnect(bus_factory):
    """Fds with no message to carry them are not hoarded by the bus."""
    bus = bus_factory('<limit name="max_message_unix_fds">4</limit>')
    s = _fd_client(bus)
    time.sleep(0.2)
    try:
        for _ in range(3):  # a byte of a message that never completes, 4 fds each time
            _send_with_fds(s, b"l", 4)
            time.sleep(0.05)
    except (BrokenPipeError, ConnectionResetError):
        pass  # already disconnected: what we want
    read_until_closed(s)
    s.close()
    assert_bus_alive(bus)


def test_fds_left_waiting_time_out(bus_factory):
    bus = bus_factory('<limit name="pending_fd_timeout">300</limit>')
    s = _fd_client(bus)
    from test_bad_input import recv_messages
    recv_messages(s, 2)  # Hello's reply and NameAcquired: registered
    _send_with_fds(s, b"l", 1)  # the message's first byte, then silence
    t0 = time.monotonic()
    read_until_closed(s, timeout=TIMEOUT)
    assert time.monotonic() - t0 < 5
    s.close()
    assert_bus_alive(bus)


@pytest.mark.skipif(IS_DBUS_DAEMON, reason="dbus-daemon 1.14 disconnects a client whose first fds "
                    "arrive in the same read as BEGIN; the protocol allows pipelining")
def test_fds_pipelined_behind_begin_are_delivered(bus):
    """BEGIN, Hello and a call carrying an fd in one write: the fd arrives
    before the bus has a connection to give it to, and must not be lost."""
    import os
    import socket
    import array
    from itutil import Service, raw_message

    def read_fd(msg):
        fd = msg.body[0]
        with fd.to_file("rb") as f:
            return "s", (f.read().decode(),)

    with Service(bus.address, "com.example.FdReader", {"Read": read_fd}, enable_fds=True):
        s = raw_connect(bus)
        s.sendall(b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\n")
        assert s.recv(4096).startswith(b"OK ")
        s.sendall(b"NEGOTIATE_UNIX_FD\r\n")
        assert s.recv(4096).startswith(b"AGREE_UNIX_FD")
        call = raw_message(1, fields=[(1, "o", "/Test"), (2, "s", "com.example.Test"), (3, "s", "Read"),
                                      (6, "s", "com.example.FdReader"), (8, "g", "h"), (9, "u", 1)],
                           body=struct.pack("<I", 0), serial=2)
        r, w = os.pipe()
        os.write(w, b"through the bus")
        os.close(w)
        try:
            s.sendmsg([b"BEGIN\r\n" + hello_bytes() + call],
                      [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r]))])
        finally:
            os.close(r)
        from test_bad_input import recv_messages
        replies = [m for m in recv_messages(s, 3) if m.header.fields.get(5) == 2]  # reply to serial 2
        assert replies and replies[0].body == ("through the bus",), replies
        s.close()


def test_replies_to_a_slow_reader_arrive_whole_and_in_order(bus):
    # The bus writes what it queued for one peer as one sendmsg of many
    # buffers; a reader that lets its socket fill makes those writes end
    # part-way through a message, and the rest must follow in order.
    from jeepney import DBusAddress, new_method_call
    from jeepney.low_level import Parser

    s = registered(bus)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ping = DBusAddress("/", bus_name="org.freedesktop.DBus", interface="org.freedesktop.DBus.Peer")
    calls = 20000  # over 1 MB of replies: far more than the sockets hold
    s.sendall(b"".join(new_method_call(ping, "Ping").serialise(serial=2 + i) for i in range(calls)))
    time.sleep(0.5)  # the replies fill the socket before we read any
    parser = Parser()
    serials = []
    deadline = time.monotonic() + TIMEOUT
    while len(serials) < calls + 1 and time.monotonic() < deadline:
        data = s.recv(65536)
        assert data, "bus hung up"
        for m in parser.feed(data):
            if m.header.message_type == MessageType.method_return:
                serials.append(m.header.fields[HeaderFields.reply_serial])
    assert serials == list(range(1, calls + 2))  # Hello's reply, then every Ping's
    s.close()
    assert_bus_alive(bus)


def test_large_messages_to_a_slow_reader_arrive_whole_and_in_order(bus):
    # A large body leaves the bus as a view of the buffer it was read into,
    # written with its header by one sendmsg; writes that stop part-way
    # (the reader lets its socket fill) must resume in the body and keep
    # the small messages queued behind it in order.
    import os
    import threading

    from jeepney import DBusAddress, new_method_call
    from jeepney.low_level import Parser

    receiver = registered(bus)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    parser = Parser()
    unique = None
    while unique is None:
        for m in parser.feed(receiver.recv(65536)):
            if m.header.message_type == MessageType.method_return:
                unique = m.body[0]
    target = DBusAddress("/", bus_name=unique, interface="com.example.Sink")
    bodies = []
    for i in range(12):
        bodies.append(os.urandom(300000) if i % 2 == 0 else os.urandom(40))
    wire = []
    for i, body in enumerate(bodies):
        msg = new_method_call(target, "Take", "ay", (body,))
        msg.header.flags = 1  # NO_REPLY_EXPECTED
        wire.append(msg.serialise(serial=2 + i))
    sender = registered(bus)
    sending = threading.Thread(target=sender.sendall, args=(b"".join(wire),), daemon=True)
    sending.start()
    time.sleep(0.5)  # the bus fills the receiver's socket before it reads
    got = []
    deadline = time.monotonic() + TIMEOUT
    while len(got) < len(bodies) and time.monotonic() < deadline:
        data = receiver.recv(65536)
        assert data, "bus hung up"
        for m in parser.feed(data):
            if m.header.message_type == MessageType.method_call:
                got.append(m.body[0])
    sending.join(TIMEOUT)
    assert [len(b) for b in got] == [len(b) for b in bodies]
    assert got == bodies
    receiver.close()
    sender.close()
    assert_bus_alive(bus)
