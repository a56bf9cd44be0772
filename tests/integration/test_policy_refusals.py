"""The XML policy's refusals as the sender sees them, next to dbus-daemon:
which refused messages are answered with AccessDenied."""

import pytest
from jeepney import DBusAddress, HeaderFields, MessageType, new_method_call, new_signal

from itutil import Client, describe

ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
POLICY = ('<policy context="default">'
          '<deny send_interface="com.example.NoSend"/>'
          '<deny receive_interface="com.example.NoReceive"/>'
          '</policy>')


def _message(kind, iface, dest):
    if kind == "broadcast":
        return new_signal(DBusAddress("/p", interface=iface), "S")
    if kind == "signal":
        m = new_signal(DBusAddress("/p", interface=iface), "S")
        m.header.fields[HeaderFields.destination] = dest
        return m
    m = new_method_call(DBusAddress("/p", bus_name=dest, interface=iface), "M")
    if kind == "no-reply call":
        m.header.flags |= 1  # NO_REPLY_EXPECTED
    return m


@pytest.mark.parametrize("iface", ["com.example.NoSend", "com.example.NoReceive"])
def test_which_refused_messages_the_sender_hears_about(bus_factory, iface):
    """dbus-daemon answers every refused unicast with AccessDenied, a signal
    or a call that expects no reply too (bus/dispatch.c sends the error it
    set whatever the message); a broadcast is only withheld from the
    receivers whose rules refuse it, and its sender hears nothing."""
    b = bus_factory(extra_xml=POLICY)
    with Client(b.address) as a, Client(b.address) as r:
        r.add_match("interface='%s'" % iface)
        serials = {}
        for kind in ("call", "no-reply call", "signal", "broadcast"):
            serials[kind] = a.send(_message(kind, iface, r.unique_name))
        # the bus answers in order: any error for them came before this reply
        a.bus("GetId")
        errors = {m.header.fields.get(HeaderFields.reply_serial): m for m in a.inbox
                  if m.header.message_type == MessageType.error}
        answered = {kind for kind, serial in serials.items() if serial in errors}
        assert answered == {"call", "no-reply call", "signal"}, [describe(m) for m in a.inbox]
        assert all(m.header.fields[HeaderFields.error_name] == ACCESS_DENIED for m in errors.values())
        r.assert_no(lambda m: m.header.fields.get(HeaderFields.interface) == iface)
