"""`sandbus monitor`: the bus's traffic, one message per paragraph, with
the container instance of each sender, which dbus-monitor cannot show.

It asks for the CONTAINER_INSTANCE header (Containers1.RequestHeader) and
then becomes a monitor (Monitoring.BecomeMonitor) with the match rules
given (none: everything), so each copy names its sender's instance itself
(core/monitors.py).  The instance's type and name come from
GetInstanceInfo on a second, ordinary connection (a monitor may not send),
once per instance.  On a bus without that header it asks
GetConnectionInstance once per sender instead (unique names are never
reused, so the answer stays right; a sender gone by then shows as ``?``)."""

import argparse
import datetime
import signal
import sys

from ..io.client import BusError, Client, ClientError
from ..io.fds import close_fds
from ..wire.marshal import Variant, unmarshal
from ..wire.message import ERROR, FIELD_CONTAINER_INSTANCE, METHOD_CALL, METHOD_RETURN, SIGNAL
from .common import add_bus_options, bus_address

MONITORING = "org.freedesktop.DBus.Monitoring"
CONTAINERS = "org.freedesktop.DBus.Containers1"
TYPES = {METHOD_CALL: "call", METHOD_RETURN: "return", ERROR: "error", SIGNAL: "signal"}
MAX_ARG = 300
CACHE_LIMIT = 100000


def format_value(v, limit=MAX_ARG) -> str:
    text = _fmt(v)
    return text if limit is None or len(text) <= limit else text[:limit] + "…"


def _fmt(v) -> str:
    if isinstance(v, Variant):
        return f"<{v.signature}: {_fmt(v.value)}>"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (bytes, bytearray)):
        if all(32 <= b < 127 for b in v):
            return "b\"" + v.decode() + "\""
        return "bytes " + v.hex()
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_fmt(k)}: {_fmt(x)}" for k, x in v.items()) + "}"
    if isinstance(v, tuple):
        return "(" + ", ".join(_fmt(x) for x in v) + ")"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def instance_field(data):
    """The CONTAINER_INSTANCE header field of a message as received, or None."""
    endian = chr(data[0])
    length = int.from_bytes(data[12:16], "little" if endian == "l" else "big")
    for code, v in unmarshal("yyyyuua(yv)", data, endian, 0, 16 + length)[6]:
        if code == FIELD_CONTAINER_INSTANCE:
            return v.value
    return None


_NO_CONTAINERS = ("org.freedesktop.DBus.Error.UnknownMethod", "org.freedesktop.DBus.Error.UnknownInterface")


class Instances:
    """Which container instance a message comes from: (path, type, name),
    None for none, or "gone" when that can no longer be found out."""

    def __init__(self, client):
        self.client = client  # None: the bus has no Containers1, ask nothing
        self.by_sender = {}
        self.by_path = {}

    def _ask(self, member, sig, arg):
        return self.client.call("org.freedesktop.DBus", "/org/freedesktop/DBus", CONTAINERS, member, sig, (arg,))

    def of(self, m):
        if self.client is None:
            return None
        path = instance_field(m.data)
        if path is not None:
            return None if path == "/" else self._info(path)
        unique = m.sender
        if not unique or not unique.startswith(":"):
            return None
        if unique not in self.by_sender:
            if len(self.by_sender) > CACHE_LIMIT:
                self.by_sender.clear()
            try:
                path, _creator, ctype, cname, _meta = self._ask("GetConnectionInstance", "s", unique)
                found = (path, ctype, cname)
            except BusError as e:
                if e.name in _NO_CONTAINERS:
                    self.client = None   # dbus-daemon without Containers1
                # NotContainer, or gone before we asked (NameHasNoOwner)
                found = "gone" if e.name == "org.freedesktop.DBus.Error.NameHasNoOwner" else None
            self.by_sender[unique] = found
        return self.by_sender[unique]

    def _info(self, path):
        if path not in self.by_path:
            if len(self.by_path) > CACHE_LIMIT:
                self.by_path.clear()
            try:
                _creator, ctype, cname, _meta = self._ask("GetInstanceInfo", "o", path)
                self.by_path[path] = (path, ctype, cname)
            except BusError:
                return (path, "?", "(instance gone)")  # not cached: it may be asked about in time next time
        return self.by_path[path]


def format_message(m, instances: Instances, limit=MAX_ARG, now=None) -> str:
    now = now or datetime.datetime.now()
    kind = TYPES.get(m.type, f"type{m.type}")
    head = f"{now:%H:%M:%S.%f} {kind:<6} {m.sender or '?'} -> {m.destination or '(broadcast)'}"
    if m.type in (METHOD_CALL, SIGNAL):
        head += f"  {m.path} {m.interface or ''}{'.' if m.interface else ''}{m.member}"
    elif m.type == ERROR:
        head += f"  {m.error_name}"
    head += f"  serial={m.serial}"
    if m.reply_serial:
        head += f" reply_serial={m.reply_serial}"
    if m.flags & 1 and m.type == METHOD_CALL:
        head += " no-reply"
    lines = [head]
    inst = instances.of(m)
    if inst == "gone":
        lines.append("    container: ? (the sender left before it could be asked)")
    elif inst is not None:
        path, ctype, cname = inst
        lines.append(f"    container: {path} ({ctype} {format_value(cname, 80)})")
    if m.fds:
        lines.append(f"    fds: {len(m.fds)}")
    if m.signature:
        try:
            body = m.body()
        except Exception as e:   # a message the bus passed but we cannot decode: say so, go on
            lines.append(f"    ({m.signature}: undecodable: {e})")
        else:
            for sig_value in body:
                lines.append("    " + format_value(sig_value, limit))
    return "\n".join(lines)


def main(argv) -> int:
    p = argparse.ArgumentParser(prog="sandbus monitor", description=__doc__.split("\n\n")[0])
    add_bus_options(p)
    p.add_argument("--full", action="store_true", help=f"do not shorten arguments to {MAX_ARG} characters")
    p.add_argument("rules", nargs="*", metavar="RULE",
                   help="match rules, as dbus-monitor's (e.g. \"type='signal',interface='org.foo'\")")
    args = p.parse_args(argv)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)   # `| head` ends us quietly
    try:
        address = bus_address(args)
        lookups = Client(address, timeout=5.0)
        mon = Client(address, timeout=10.0)
        try:
            mon.call("org.freedesktop.DBus", "/org/freedesktop/DBus", CONTAINERS, "RequestHeader")
        except BusError:
            pass   # no Containers1 (dbus-daemon): GetConnectionInstance, or nothing
        mon.call("org.freedesktop.DBus", "/org/freedesktop/DBus", MONITORING, "BecomeMonitor", "asu",
                 (list(args.rules), 0))
        mon.timeout = None   # a quiet bus is no error: wait for as long as it takes
        mon.sock.settimeout(None)
    except (ClientError, OSError) as e:
        print(f"sandbus monitor: {e}", file=sys.stderr)
        return 1
    print(f"monitoring {address} ({'rules: ' + '; '.join(args.rules) if args.rules else 'everything'})",
          file=sys.stderr, flush=True)
    instances = Instances(lookups)
    limit = None if args.full else MAX_ARG
    try:
        while True:
            try:
                m = mon.read_message()
            except ClientError as e:
                print(f"sandbus monitor: {e}", file=sys.stderr)
                return 0 if "closed" in str(e) else 1
            close_fds(m.fds)
            # our own lookups would echo back into the stream; and what came
            # to the monitor connection itself (NameAcquired, NameLost) is
            # its own business, not the bus's traffic
            if lookups.unique_name in (m.sender, m.destination) or m.destination == mon.unique_name:
                continue
            print(format_message(m, instances, limit), flush=True)
    except KeyboardInterrupt:
        return 0
    finally:
        mon.close()
        lookups.close()
