"""Bodies that do not match their signature: the sender is disconnected
before the message goes anywhere, the addressee never sees it, and everyone
else keeps being served (as with dbus-daemon, which validates every body)."""

import struct

import pytest
from jeepney import DBusAddress, new_signal

from itutil import IS_DBUS_DAEMON, Client, assert_bus_alive, hello_bytes, raw_auth, raw_connect, raw_message, read_until_closed
from test_bad_input import recv_messages


def u32(n):
    return struct.pack("<I", n)


def s(raw: bytes) -> bytes:
    return u32(len(raw)) + raw + b"\0"


def nested_variants(n: int) -> bytes:
    return b"\x01v\0" * (n - 1) + b"\x01y\0\x2a"


# signature, body: each invalid for one rule
BAD_BODIES = {
    "nonzero-padding": ("ys", b"\x07\x01\0\0" + s(b"x")),
    "boolean-2": ("b", u32(2)),
    "boolean-in-array": ("ab", u32(8) + u32(1) + u32(7)),
    "invalid-utf8": ("s", s(b"\xc3\x28")),
    "surrogate-in-utf8": ("s", s(b"\xed\xa0\x80")),
    "interior-nul": ("s", s(b"a\0b")),
    "missing-nul": ("s", u32(1) + b"ab" + b"\0\0"),
    "string-past-end": ("s", u32(100) + b"abc\0"),
    "array-past-end": ("ay", u32(100) + b"abc"),
    "array-length-not-multiple": ("ai", u32(6) + b"\0" * 8),
    "array-ends-mid-element": ("as", u32(7) + s(b"x") + b"\0"),
    "array-over-64MiB": ("ay", u32(64 * 1024 * 1024 + 4)),
    "invalid-object-path": ("o", s(b"/a//b")),
    "invalid-signature-value": ("g", b"\x02a{\0"),
    "variant-two-types": ("v", b"\x02uu\0" + u32(1) + u32(2)),
    "variant-empty-signature": ("v", b"\x00\0"),
    "variants-65-deep": ("v", nested_variants(65)),
    # dbus-daemon leaves this one to the receiver's libdbus; sandbus checks
    # it at the bus so receivers that trust the index are safe too
    "fd-index-without-fds": pytest.param(("h", u32(0)), marks=pytest.mark.skipif(
        IS_DBUS_DAEMON, reason="dbus-daemon does not check fd indices")),
    "trailing-bytes": ("u", u32(1) + b"\0\0\0\0"),
}


def _registered(bus):
    sock = raw_connect(bus)
    raw_auth(sock)
    sock.sendall(hello_bytes())
    recv_messages(sock, 2)  # Hello's reply, NameAcquired
    return sock


@pytest.mark.parametrize("case", [BAD_BODIES[k] for k in sorted(BAD_BODIES)], ids=sorted(BAD_BODIES))
def test_invalid_body_disconnects_its_sender_only(module_bus, case):
    sig, body = case
    with Client(module_bus.address) as receiver, Client(module_bus.address) as bystander:
        receiver.add_match("member='Bad'")
        offender = _registered(module_bus)
        unicast = raw_message(1, fields=[(1, "o", "/x"), (3, "s", "Bad"), (6, "s", receiver.unique_name),
                                         (8, "g", sig)], body=body, serial=2, flags=1)
        broadcast = raw_message(4, fields=[(1, "o", "/x"), (2, "s", "org.example.T"), (3, "s", "Bad"),
                                           (8, "g", sig)], body=body, serial=3)
        try:
            offender.sendall(unicast + broadcast)
        except (BrokenPipeError, ConnectionResetError):
            pass
        read_until_closed(offender)
        offender.close()
        # nothing of it reached the receiver, which is still served
        receiver.assert_no(lambda m: m.header.fields.get(3) == "Bad", what="invalid message")
        assert bystander.bus("GetId")
        # and messages from well-behaved peers still flow to it
        bystander.send(new_signal(DBusAddress("/x", interface="org.example.T"), "Bad", "s", ("fine",)))
        m = receiver.wait_signal("Bad")
        assert m.body == ("fine",)
    assert_bus_alive(module_bus)


def test_valid_bodies_of_every_kind_are_delivered(module_bus):
    # the counterpart: the same shapes, valid, arrive unchanged
    good = {
        "ys": b"\x07\0\0\0" + s(b"x"), "ab": u32(8) + u32(1) + u32(0), "s": s("Grüße".encode()),
        "ay": u32(3) + b"abc", "o": s(b"/a/b"), "g": b"\x05a{sv}\0", "v": nested_variants(64),
        "as": u32(6) + s(b"x"), "ai": u32(8) + u32(1) + u32(2),
    }
    with Client(module_bus.address) as receiver:
        receiver.add_match("member='Good'")
        sender = _registered(module_bus)
        try:
            for serial, (sig, body) in enumerate(good.items(), 2):
                sender.sendall(raw_message(4, fields=[(1, "o", "/x"), (2, "s", "org.example.T"),
                                                      (3, "s", "Good"), (8, "g", sig)],
                                           body=body, serial=serial))
            for sig, body in good.items():
                m = receiver.wait_signal("Good")
                assert m.header.fields[8] == sig
        finally:
            sender.close()
