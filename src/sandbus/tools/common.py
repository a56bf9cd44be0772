"""What the tools share: which bus (dbus-monitor's --session / --system /
--address), and many calls on one connection answered in any order."""

import os

from ..io.client import BUS_NAME, BUS_PATH, BusError, ClientError
from ..wire.message import ERROR, METHOD_CALL, METHOD_RETURN, build_message

SYSTEM_BUS_DEFAULT = "unix:path=/run/dbus/system_bus_socket"


def add_bus_options(parser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--session", dest="bus", action="store_const", const="session",
                       help="the session bus (the default)")
    which.add_argument("--system", dest="bus", action="store_const", const="system", help="the system bus")
    which.add_argument("--address", help="the bus at this D-Bus address")


def bus_address(args) -> str:
    if args.address:
        return args.address
    if args.bus == "system":
        return os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or SYSTEM_BUS_DEFAULT
    address = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    if address:
        return address
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.exists(os.path.join(runtime, "bus")):
        return "unix:path=" + os.path.join(runtime, "bus")
    raise ClientError("no session bus: DBUS_SESSION_BUS_ADDRESS is not set (use --address or --system)")


class Failed:
    """An ERROR answer in call_many's results (a value, not an exception:
    one refused call must not hide the others)."""

    __slots__ = ("name", "text")

    def __init__(self, name, text):
        self.name, self.text = name, text

    def __bool__(self):
        return False

    def __repr__(self):
        return f"Failed({self.name!r})"


def call_many(client, calls, timeout=None):
    """Send every (interface, member, signature, body) to the bus driver at
    once, then collect the answers: bodies, or Failed.  One round trip for a
    whole status screen instead of one per connection and question."""
    serials = []
    for iface, member, sig, body in calls:
        serial = client.next_serial()
        client.send(build_message(METHOD_CALL, serial, path=BUS_PATH, interface=iface, member=member,
                                  destination=BUS_NAME, signature=sig, body=body))
        serials.append(serial)
    wanted = set(serials)
    answers = {}
    while wanted:
        m = client.wait_for(lambda m: m.type in (METHOD_RETURN, ERROR) and m.reply_serial in wanted,
                            client.timeout if timeout is None else timeout)
        wanted.discard(m.reply_serial)
        if m.type == ERROR:
            args = m.body()
            answers[m.reply_serial] = Failed(m.error_name, args[0] if args and isinstance(args[0], str) else "")
        else:
            answers[m.reply_serial] = m.body()
    return [answers[s] for s in serials]


__all__ = ["BusError", "ClientError", "Failed", "add_bus_options", "bus_address", "call_many"]
