"""Misbehaving clients on raw sockets. In every case the offender gets an
error reply or is disconnected, and the bus keeps serving everyone else."""

import os
import struct
import time

import pytest
from jeepney.low_level import HeaderFields, Parser

from itutil import (
    BUS_NAME,
    BUS_PATH,
    Client,
    MessageType,
    assert_bus_alive,
    describe,
    driver_call_fields,
    error_name,
    hello_bytes,
    raw_auth,
    raw_connect,
    raw_message,
    read_until_closed,
    recv_line,
)

UID_HEX = str(os.getuid()).encode().hex().encode()
PEER_IFACE = "org.freedesktop.DBus.Peer"
ERR = "org.freedesktop.DBus.Error."


def recv_messages(s, count, timeout=5.0):
    """Read ``count`` complete messages from a raw socket."""
    p = Parser()
    out = []
    s.settimeout(timeout)
    while len(out) < count:
        m = p.get_next_message()
        if m is not None:
            out.append(m)
            continue
        data = s.recv(65536)
        if not data:
            raise AssertionError(f"closed after {[describe(m) for m in out]}")
        p.add_data(data)
    return out


def registered_named(bus):
    """A raw socket that has authenticated and said Hello (reply consumed),
    and its unique name."""
    s = raw_connect(bus)
    raw_auth(s)
    s.sendall(hello_bytes())
    msgs = recv_messages(s, 2)  # Hello reply, NameAcquired
    assert msgs[0].header.message_type == MessageType.method_return
    return s, msgs[0].body[0]


def registered(bus):
    return registered_named(bus)[0]


# -- SASL ----------------------------------------------------------------------


def test_garbage_before_auth_disconnects(module_bus):
    s = raw_connect(module_bus)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # no leading NUL byte
    read_until_closed(s)
    s.close()
    assert_bus_alive(module_bus)


@pytest.mark.parametrize("line,reply", [
    (b"FOO", b"ERROR"),                       # unknown command
    (b"AUTH BOGUS", b"REJECTED EXTERNAL"),    # unsupported mechanism lists ours
    (b"AUTH", b"REJECTED EXTERNAL"),
    (b"AUTH EXTERNAL " + b"99999".hex().encode(), b"REJECTED EXTERNAL"),  # wrong uid
    (b"AUTH EXTERNAL zz", b"ERROR"),          # invalid hex
    (b"AUTH EXTERNAL " + (b"9" * 5000).hex().encode(), b"REJECTED EXTERNAL"),  # no uid has 5000 digits
    (b"AUTH EXTERNAL " + (b"0" * 4990 + str(os.getuid() + 1).encode()).hex().encode(), b"REJECTED EXTERNAL"),
    (b"DATA 00", b"ERROR"),                   # not in a conversation
    (b"CANCEL", b"ERROR"),
    (b"NEGOTIATE_UNIX_FD", b"ERROR"),         # before authenticating
    (b"AUTH \xff\xfe", b"ERROR"),             # non-ASCII
    (b"ERROR", b"REJECTED EXTERNAL"),
])
def test_bad_sasl_line_gets_error_and_can_retry(module_bus, line, reply):
    s = raw_connect(module_bus)
    try:
        s.sendall(b"\0" + line + b"\r\n")
        got = recv_line(s)
        assert got.startswith(reply), got
        # the conversation can continue: authenticate properly afterwards
        s.sendall(b"AUTH EXTERNAL " + UID_HEX + b"\r\n")
        assert recv_line(s).startswith(b"OK ")
        s.sendall(b"BEGIN\r\n" + hello_bytes())
        (m, _) = recv_messages(s, 2)
        assert m.header.message_type == MessageType.method_return
    finally:
        s.close()
    assert_bus_alive(module_bus)


def test_auth_external_without_initial_response(module_bus):
    s = raw_connect(module_bus)
    try:
        s.sendall(b"\0AUTH EXTERNAL\r\n")
        assert recv_line(s) == b"DATA\r\n"
        s.sendall(b"DATA\r\n")  # empty response: use the socket credentials
        line = recv_line(s)
        assert line.startswith(b"OK ") and len(line.strip()) == 3 + 32, line
    finally:
        s.close()


def test_ok_reply_carries_server_guid(module_bus):
    s = raw_connect(module_bus)
    try:
        s.sendall(b"\0AUTH EXTERNAL " + UID_HEX + b"\r\n")
        line = recv_line(s).decode()
        guid = line.split()[1]
        assert module_bus.address.endswith("guid=" + guid)
    finally:
        s.close()


def test_begin_before_auth_disconnects(module_bus):
    s = raw_connect(module_bus)
    s.sendall(b"\0BEGIN\r\n")
    read_until_closed(s)
    s.close()
    assert_bus_alive(module_bus)


def test_too_many_rejections_disconnect(module_bus):
    s = raw_connect(module_bus)
    s.sendall(b"\0" + b"AUTH BOGUS\r\n" * 6)
    data = read_until_closed(s)
    assert data.count(b"REJECTED") == 6, data
    s.close()
    assert_bus_alive(module_bus)


def test_five_rejections_still_allowed(module_bus):
    s = raw_connect(module_bus)
    try:
        s.sendall(b"\0" + b"AUTH BOGUS\r\n" * 5)
        for _ in range(5):
            assert recv_line(s) == b"REJECTED EXTERNAL\r\n"
        s.sendall(b"AUTH EXTERNAL " + UID_HEX + b"\r\n")
        assert recv_line(s).startswith(b"OK ")
    finally:
        s.close()


@pytest.mark.parametrize("terminated", [True, False])
def test_huge_sasl_line_disconnects(module_bus, terminated):
    s = raw_connect(module_bus)
    try:
        s.sendall(b"\0AUTH " + b"A" * 65536 + (b"\r\n" if terminated else b""))
    except (BrokenPipeError, ConnectionResetError):
        pass
    read_until_closed(s)
    s.close()
    assert_bus_alive(module_bus)


def test_long_but_acceptable_sasl_line(module_bus):
    s = raw_connect(module_bus)
    try:
        s.sendall(b"\0AUTH " + b"A" * 8000 + b"\r\n")
        assert recv_line(s) == b"REJECTED EXTERNAL\r\n"
    finally:
        s.close()


def test_disconnect_mid_auth(module_bus):
    for payload in (b"", b"\0", b"\0AUTH EXTERNAL", b"\0AUTH EXTERNAL " + UID_HEX + b"\r\n"):
        s = raw_connect(module_bus)
        s.sendall(payload)
        s.close()
    assert_bus_alive(module_bus)


@pytest.mark.parametrize("stage", ["connected", "sasl", "authenticated"])
def test_auth_timeout(bus_factory, stage):
    """A connection that does not complete auth + Hello within auth_timeout
    is closed (dbus-daemon counts Hello as part of it)."""
    b = bus_factory('<limit name="auth_timeout">300</limit>')
    s = raw_connect(b)
    if stage == "sasl":
        s.sendall(b"\0AUTH EXTERNAL\r\n")
    elif stage == "authenticated":
        raw_auth(s)
    t = time.monotonic()
    read_until_closed(s, timeout=5)
    assert time.monotonic() - t < 4
    s.close()
    assert_bus_alive(b)


# -- invalid messages after auth ----------------------------------------------------


def _f(**kw):
    return driver_call_fields(**kw)


GOOD = raw_message(fields=_f(), serial=5)
PEER_FIELDS = [(1, "o", "/"), (3, "s", "M"), (6, "s", BUS_NAME)]


def _patched(offset, value):
    d = bytearray(GOOD)
    d[offset:offset + len(value)] = value
    return bytes(d)


BAD_MESSAGES = {
    "bad-endianness-byte": _patched(0, b"X"),
    "zero-serial": _patched(8, b"\0\0\0\0"),
    "protocol-version-2": _patched(3, b"\x02"),
    "message-type-0": _patched(1, b"\x00"),
    "body-length-256MiB": _patched(4, struct.pack("<I", 0x10000000)),
    "body-length-4GiB": _patched(4, struct.pack("<I", 0xF0000000)),
    "nonzero-header-padding": GOOD[:-1] + b"\x01",
    "path-not-an-object-path": raw_message(fields=_f(f1=("o", "no-slash")), serial=5),
    "path-wrong-type": raw_message(fields=_f(f1=("s", BUS_PATH)), serial=5),
    "member-wrong-type": raw_message(fields=_f(f3=("u", 5)), serial=5),
    "invalid-member": raw_message(fields=_f(f3=("s", "a.b")), serial=5),
    "invalid-interface": raw_message(fields=_f(f2=("s", "noDots")), serial=5),
    "invalid-destination": raw_message(fields=_f(f6=("s", "a..b")), serial=5),
    "invalid-signature": raw_message(fields=_f(f8=("g", "(")), serial=5),
    "signature-without-body": raw_message(fields=_f(f8=("g", "s")), serial=5),
    "body-without-signature": raw_message(fields=_f(), body=b"\1\0\0\0", serial=5),
    "trailing-body-bytes": raw_message(fields=_f(f8=("g", "u")), body=b"\1\0\0\0\0\0\0\0",
                                       serial=5),
    "unix-fds-field-without-fds": raw_message(fields=_f(f9=("u", 1)), serial=5),
    "method-call-without-member": raw_message(fields=_f(f3=None), serial=5),
    "method-call-without-path": raw_message(fields=_f(f1=None), serial=5),
    "return-without-reply-serial": raw_message(2, fields=[(6, "s", ":1.0")], serial=5),
    "error-without-error-name": raw_message(3, fields=[(6, "s", ":1.0"), (5, "u", 1)], serial=5),
    "signal-without-interface": raw_message(4, fields=[(1, "o", "/x"), (3, "s", "M")], serial=5),
    "signal-on-local-path": raw_message(4, fields=[
        (1, "o", "/org/freedesktop/DBus/Local"), (2, "s", "a.b"), (3, "s", "M")], serial=5),
    "signal-on-local-interface": raw_message(4, fields=[
        (1, "o", "/x"), (2, "s", "org.freedesktop.DBus.Local"), (3, "s", "M")], serial=5),
    "string-with-invalid-utf8": raw_message(fields=_f(member="NameHasOwner", f8=("g", "s")),
                                            body=struct.pack("<I", 1) + b"\xff\0", serial=5),
    "string-with-embedded-nul": raw_message(fields=PEER_FIELDS + [(8, "g", "s")],
                                            body=struct.pack("<I", 5) + b"ab\0cd\0", serial=5),
    "string-overruns-body": raw_message(fields=PEER_FIELDS + [(8, "g", "s")],
                                        body=struct.pack("<I", 50) + b"ab\0", serial=5),
    "boolean-value-2": raw_message(fields=PEER_FIELDS + [(8, "g", "b")], body=b"\2\0\0\0",
                                   serial=5),
    "garbage-bytes": b"GET / HTTP/1.1\r\n\r\n" + b"\0" * 32,
}


@pytest.mark.parametrize("name", sorted(BAD_MESSAGES))
def test_invalid_message_disconnects(module_bus, name):
    with Client(module_bus.address) as bystander:
        s = registered(module_bus)
        try:
            s.sendall(BAD_MESSAGES[name])
        except (BrokenPipeError, ConnectionResetError):
            pass
        read_until_closed(s)
        s.close()
        # the bystander's connection is unaffected
        assert bystander.bus("GetId")
    assert_bus_alive(module_bus)


def test_invalid_message_before_hello_disconnects(module_bus):
    s = raw_connect(module_bus)
    raw_auth(s)
    s.sendall(_patched(0, b"X"))
    read_until_closed(s)
    s.close()
    assert_bus_alive(module_bus)


def test_valid_big_endian_message_accepted(module_bus):
    s = registered(module_bus)
    try:
        s.sendall(raw_message(fields=_f(), serial=7, endian=b"B"))
        (m,) = recv_messages(s, 1)
        assert m.header.message_type == MessageType.method_return
        assert m.header.fields[5] == 7
        assert len(m.body[0]) == 32
    finally:
        s.close()


def test_unknown_header_field_ignored(module_bus):
    s = registered(module_bus)
    try:
        s.sendall(raw_message(fields=_f(f99=("s", "whatever")), serial=7))
        (m,) = recv_messages(s, 1)
        assert m.header.message_type == MessageType.method_return, describe(m)
    finally:
        s.close()


def test_unknown_flags_ignored(module_bus):
    s = registered(module_bus)
    try:
        s.sendall(raw_message(fields=_f(), serial=7, flags=0x80))
        (m,) = recv_messages(s, 1)
        assert m.header.message_type == MessageType.method_return, describe(m)
    finally:
        s.close()


def test_unknown_message_type_gets_error(module_bus):
    """Type 9 is well-formed but unknown: dbus-daemon answers AccessDenied
    and keeps the connection."""
    s = registered(module_bus)
    try:
        s.sendall(_patched(1, b"\x09"))
        (m,) = recv_messages(s, 1)
        assert error_name(m) == ERR + "AccessDenied", describe(m)
        assert m.header.fields[5] == 5
        s.sendall(raw_message(fields=_f(), serial=8))
        (m,) = recv_messages(s, 1)
        assert m.header.message_type == MessageType.method_return
    finally:
        s.close()


def test_message_before_hello_gets_access_denied(module_bus):
    s = raw_connect(module_bus)
    try:
        raw_auth(s)
        s.sendall(GOOD)
        (m,) = recv_messages(s, 1)
        assert error_name(m) == ERR + "AccessDenied", describe(m)
        assert m.header.fields[5] == 5
        # dbus-daemon addresses it to a placeholder, not a unique name
        assert m.header.fields[6] == ":not.active.yet"
    finally:
        s.close()
    assert_bus_alive(module_bus)


def test_split_writes_reassembled(module_bus):
    """A message dribbled one byte at a time is still one message."""
    s = registered(module_bus)
    try:
        msg = raw_message(fields=_f(), serial=9)
        for i in range(len(msg)):
            s.send(msg[i:i + 1])
        (m,) = recv_messages(s, 1)
        assert m.header.fields[5] == 9
    finally:
        s.close()


def test_many_messages_in_one_write(module_bus):
    s = registered(module_bus)
    try:
        s.sendall(b"".join(raw_message(fields=_f(), serial=i) for i in range(10, 210)))
        msgs = recv_messages(s, 200)
        assert [m.header.fields[5] for m in msgs] == list(range(10, 210))
    finally:
        s.close()


# -- resource abuse -------------------------------------------------------------------


def test_flooding_client_that_never_reads(bus):
    """A client that sends lots of calls and never reads its replies must
    not stop the bus from serving others."""
    s = registered(bus)
    s.settimeout(30)
    data = b"".join(raw_message(fields=_f(member="ListNames"), serial=i)
                    for i in range(2, 20002))
    s.sendall(data)
    assert_bus_alive(bus)
    with Client(bus.address) as c:
        t = time.monotonic()
        for _ in range(20):
            c.bus("GetId")
        assert time.monotonic() - t < 5
    s.close()
    assert_bus_alive(bus)


def test_receiver_that_never_reads(bus):
    """A sender floods a peer that never reads; other traffic still flows and
    the bus survives the receiver disconnecting with a full queue."""
    from jeepney import DBusAddress, new_method_call
    sink, sink_name = registered_named(bus)
    with Client(bus.address) as a:
        for i in range(500):
            msg = new_method_call(DBusAddress("/", bus_name=sink_name,
                                              interface="com.example.F"),
                                  "Flood", "s", ("x" * 4000,))
            msg.header.flags |= 1
            a.send(msg)
        assert a.bus("GetId")
        assert_bus_alive(bus)
    sink.close()
    assert_bus_alive(bus)


def test_many_connections(bus):
    clients = [Client(bus.address) for _ in range(50)]
    try:
        (names,) = clients[0].bus("ListNames")
        assert {c.unique_name for c in clients} <= set(names)
    finally:
        for c in clients:
            c.close()
    assert_bus_alive(bus)


def test_half_open_connections_do_not_block(bus):
    """Connections parked mid-handshake do not stop new clients."""
    parked = []
    try:
        for i in range(20):
            s = raw_connect(bus)
            s.sendall(b"\0AUTH EXTERNAL\r\n" if i % 2 else b"\0")
            parked.append(s)
        assert_bus_alive(bus)
    finally:
        for s in parked:
            s.close()


@pytest.mark.parametrize("kind", ["call-to-a-name", "broadcast-signal", "reply-to-a-peer"])
def test_message_for_others_before_hello_closes_the_connection(bus, kind):
    """Before Hello a connection may talk only to the bus: dbus-daemon closes
    it for anything else, answers nothing, and shows monitors the message
    under the sender ":not.active.yet" (bus/dispatch.c)."""
    fields = {
        "call-to-a-name": (1, [(1, "o", "/x"), (2, "s", "com.example.I"), (3, "s", "M"),
                               (6, "s", "com.example.Nobody")]),
        "broadcast-signal": (4, [(1, "o", "/x"), (2, "s", "com.example.I"), (3, "s", "S")]),
        "reply-to-a-peer": (2, [(5, "u", 1), (6, "s", ":1.0")]),
    }[kind]
    mon = Client(bus.address)
    mon.call(BUS_NAME, BUS_PATH, "org.freedesktop.DBus.Monitoring", "BecomeMonitor", "asu", ([], 0))
    s = raw_connect(bus)
    try:
        raw_auth(s)
        s.sendall(raw_message(fields[0], fields=fields[1], serial=7))
        assert read_until_closed(s) == b""
    finally:
        s.close()
    m = mon.wait_for(lambda m: m.header.fields.get(HeaderFields.sender) == ":not.active.yet")
    assert (m.header.serial, m.header.message_type.value) == (7, fields[0]), describe(m)
    mon.close()
    assert_bus_alive(bus)


def test_destinationless_calls_before_hello_are_answered_by_the_connection(module_bus):
    """A method call with no destination never reaches dbus-daemon's
    dispatcher, not even before Hello: libdbus on the connection answers
    Peer.Ping, and UnknownMethod to anything else, from no sender to no
    destination; the connection may still say Hello afterwards."""
    s = raw_connect(module_bus)
    try:
        raw_auth(s)
        s.sendall(raw_message(fields=[(1, "o", "/"), (2, "s", PEER_IFACE), (3, "s", "Ping")], serial=3))
        s.sendall(raw_message(fields=[(1, "o", "/"), (2, "s", "com.example.I"), (3, "s", "M")], serial=4))
        ping, unknown = recv_messages(s, 2)
        assert ping.header.message_type == MessageType.method_return, describe(ping)
        assert ping.header.fields[5] == 3
        assert error_name(unknown) == ERR + "UnknownMethod", describe(unknown)
        assert unknown.header.fields[5] == 4
        assert unknown.body == ('Method "M" with signature "" on interface "com.example.I" doesn\'t exist\n',)
        for m in (ping, unknown):
            assert 6 not in m.header.fields and 7 not in m.header.fields, describe(m)  # no destination, no sender
        s.sendall(hello_bytes(serial=5))
        (reply, _acquired) = recv_messages(s, 2)
        assert reply.header.message_type == MessageType.method_return
        assert reply.body[0].startswith(":")
    finally:
        s.close()
