#!/usr/bin/env python3
"""A tiny activatable D-Bus service for the activation tests.

usage: activation_service.py NAME [--exit N] [--sleep S] [--signal]

Connects to $DBUS_STARTER_ADDRESS, takes NAME and answers, on any path and
interface: Echo(s) -> s, Env(s) -> s (the variable's value, or "<unset>"),
Calls() -> as (members of every call received so far, in order), Quit().
--exit N exits with status N before connecting; --sleep S sleeps first;
--signal kills itself with SIGTERM before connecting."""

import os
import signal
import sys
import time

from jeepney import MessageType, new_error, new_method_return
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import open_dbus_connection


def main():
    name = sys.argv[1]
    args = sys.argv[2:]
    if "--sleep" in args:
        time.sleep(float(args[args.index("--sleep") + 1]))
    if "--exit" in args:
        sys.exit(int(args[args.index("--exit") + 1]))
    if "--signal" in args:
        os.kill(os.getpid(), signal.SIGTERM)
    conn = open_dbus_connection(bus=os.environ["DBUS_STARTER_ADDRESS"])
    calls = []
    conn.send(message_bus.RequestName(name, 4))
    while True:
        msg = conn.receive()
        h = msg.header
        if h.message_type != MessageType.method_call:
            continue
        member = h.fields.get(3)
        calls.append(member)
        if member == "Echo":
            reply = new_method_return(msg, "s", (msg.body[0],))
        elif member == "Env":
            reply = new_method_return(msg, "s", (os.environ.get(msg.body[0], "<unset>"),))
        elif member == "Calls":
            reply = new_method_return(msg, "as", (calls,))
        elif member == "Quit":
            conn.send(new_method_return(msg))
            conn.close()
            return
        else:
            reply = new_error(msg, "com.example.Error.Unknown", "s", (member or "",))
        conn.send(reply)


if __name__ == "__main__":
    main()
