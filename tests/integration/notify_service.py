#!/usr/bin/env python3
"""A notification-like test service for the `sandbus run` tests.

usage: notify_service.py ADDRESS LOG NAME [NAME...]

Connects to ADDRESS, owns each NAME (the first is usually
org.freedesktop.Notifications) and answers the org.freedesktop.Notifications
methods notify-send uses (Notify, GetCapabilities, GetServerInformation,
plus Introspect for gdbus).  For every call it appends one JSON line to LOG:
the member, the sender, the body, and what the bus says about the sender
(GetConnectionInstance, GetConnectionCredentials), which is how a real
service would identify a sandboxed app.  Prints "ready" once it owns the names."""

import json
import sys

from jeepney import DBusAddress, MessageType, new_error, new_method_call, new_method_return
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import open_dbus_connection

IFACE = "org.freedesktop.Notifications"
CONTAINERS = DBusAddress("/org/freedesktop/DBus", bus_name="org.freedesktop.DBus",
                         interface="org.freedesktop.DBus.Containers1")
INTROSPECTION = """<node>
 <interface name="org.freedesktop.Notifications">
  <method name="Notify">
   <arg type="s" direction="in"/><arg type="u" direction="in"/><arg type="s" direction="in"/>
   <arg type="s" direction="in"/><arg type="s" direction="in"/><arg type="as" direction="in"/>
   <arg type="a{sv}" direction="in"/><arg type="i" direction="in"/><arg type="u" direction="out"/>
  </method>
  <method name="GetCapabilities"><arg type="as" direction="out"/></method>
  <method name="GetServerInformation">
   <arg type="s" direction="out"/><arg type="s" direction="out"/>
   <arg type="s" direction="out"/><arg type="s" direction="out"/>
  </method>
 </interface>
</node>"""


def plain(v):
    """JSON-friendly: jeepney gives variants as (signature, value)."""
    if isinstance(v, tuple):
        return [plain(x) for x in v]
    if isinstance(v, list):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    return v


def about(conn, sender):
    out = {}
    try:
        reply = conn.send_and_get_reply(new_method_call(CONTAINERS, "GetConnectionInstance", "s", (sender,)))
        out["instance"] = plain(reply.body) if reply.header.message_type == MessageType.method_return \
            else None
        reply = conn.send_and_get_reply(message_bus.GetConnectionCredentials(sender))
        out["credentials"] = plain(reply.body[0])
    except Exception as e:  # the sender may be gone already
        out["error"] = str(e)
    return out


def main():
    address, log, names = sys.argv[1], sys.argv[2], sys.argv[3:]
    conn = open_dbus_connection(bus=address)
    for name in names:
        conn.send_and_get_reply(message_bus.RequestName(name, 4))
    print("ready", flush=True)
    next_id = 1
    while True:
        msg = conn.receive()
        h = msg.header
        if h.message_type != MessageType.method_call:
            continue
        member = h.fields.get(3)
        sender = h.fields.get(7)
        if member == "Introspect":
            reply = new_method_return(msg, "s", (INTROSPECTION,))
        elif member == "Notify":
            reply = new_method_return(msg, "u", (next_id,))
            next_id += 1
        elif member == "GetCapabilities":
            reply = new_method_return(msg, "as", (["body"],))
        elif member == "GetServerInformation":
            reply = new_method_return(msg, "ssss", ("notify_service", "sandbus tests", "1", "1.2"))
        elif member == "Quit":
            conn.send(new_method_return(msg))
            return
        else:
            reply = new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", "s", (f"no {member}",))
        record = {"member": member, "sender": sender, "dest": h.fields.get(6), "body": plain(msg.body)}
        if member != "Introspect":
            record.update(about(conn, sender))
        with open(log, "a") as f:
            f.write(json.dumps(record) + "\n")
        conn.send(reply)


if __name__ == "__main__":
    main()
