"""`sandbus container ...`: create, list, inspect and stop container
instances on a running bus, through a tiny blocking client of our own
(SASL EXTERNAL over a unix socket, sandbus.wire marshalling).

The Flatpak / xdg-dbus-proxy shorthand (--see/--talk/--own/--call/
--broadcast) compiles to Allow rules (docs/containers.md).

Learn mode: `add --learn` creates an instance that records what its rules
would deny instead of denying it; `rules PATH` (or ending `add --learn`
with Ctrl-C / SIGTERM) prints the Allow rules that would have allowed it,
as `--allow` arguments for `add` and as xdg-dbus-proxy arguments."""

import argparse
import os
import signal
import socket
import sys

from ..wire.address import parse_addresses
from ..wire.marshal import Variant
from ..wire.message import ERROR, METHOD_CALL, METHOD_RETURN, Message, build_message, message_length
from .rules import (
    BUS_NAME_IS_SUBTREE,
    CALL_METHODS,
    OBJECT_PATH_IS_SUBTREE,
    OWN_BUS_NAME,
    RECEIVE_BROADCASTS,
)

BUS = "org.freedesktop.DBus"
BUS_PATH = "/org/freedesktop/DBus"
IFACE = "org.freedesktop.DBus.Containers1"

SEE = 0
TALK = CALL_METHODS | RECEIVE_BROADCASTS
OWN = CALL_METHODS | RECEIVE_BROADCASTS | OWN_BUS_NAME


class CliError(Exception):
    pass


class BusError(CliError):
    def __init__(self, name, text):
        super().__init__(f"{name}: {text}")
        self.name = name
        self.text = text


# -- a tiny blocking client ----------------------------------------------------

class BlockingClient:
    def __init__(self, address: str, timeout: float = 30.0):
        self.sock = None
        last = None
        for transport, params in parse_addresses(address):
            if transport != "unix":
                continue
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            try:
                if "path" in params:
                    s.connect(params["path"])
                elif "abstract" in params:
                    s.connect("\0" + params["abstract"])
                else:
                    raise OSError(f"unsupported unix address {params}")
            except OSError as e:
                s.close()
                last = e
                continue
            self.sock = s
            break
        if self.sock is None:
            raise CliError(f"cannot connect to {address}: {last or 'no unix address'}")
        self.buf = b""
        self.serial = 0
        self._auth()
        self.unique_name = self.call(BUS, BUS_PATH, BUS, "Hello")[0]

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise CliError("the bus closed the connection during authentication")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _auth(self) -> None:
        self.sock.sendall(b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\n")
        line = self._line()
        if not line.startswith(b"OK "):
            raise CliError(f"authentication failed: {line!r}")
        self.sock.sendall(b"BEGIN\r\n")

    def _read_message(self) -> Message:
        while True:
            if len(self.buf) >= 16:
                n = message_length(self.buf)
                if n is not None and len(self.buf) >= n:
                    data, self.buf = self.buf[:n], self.buf[n:]
                    return Message(data)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise CliError("the bus closed the connection")
            self.buf += chunk

    def call(self, dest, path, iface, member, sig="", body=()):
        self.serial += 1
        serial = self.serial
        self.sock.sendall(build_message(METHOD_CALL, serial, path=path, interface=iface, member=member,
                                        destination=dest, signature=sig, body=body))
        while True:
            m = self._read_message()
            if m.type in (METHOD_RETURN, ERROR) and m.reply_serial == serial:
                if m.type == ERROR:
                    args = m.body()
                    raise BusError(m.error_name, args[0] if args and isinstance(args[0], str) else "")
                return m.body()

    def containers(self, member, sig="", *body):
        return self.call(BUS, BUS_PATH, IFACE, member, sig, body)

    def wait_closed(self) -> None:
        """Block until the bus hangs up (or a signal interrupts).  Messages
        to us (signals, calls) are read whole and ignored, so the
        connection stays usable after an interruption."""
        self.sock.settimeout(None)
        try:
            while True:
                self._read_message()
        except CliError:
            return
        finally:
            self.sock.settimeout(30.0)

    def close(self) -> None:
        self.sock.close()


# -- shorthand -> Allow rules ----------------------------------------------------

def _name_rule(name: str, flags: int):
    """(flags, bus name) for NAME or NAME.* (subtree)."""
    if name.endswith(".*"):
        return flags | BUS_NAME_IS_SUBTREE, name[:-2]
    return flags, name


def _path_rule(path: str):
    if path.endswith("/*"):
        base = path[:-2] or "/"
        return OBJECT_PATH_IS_SUBTREE, base
    return 0, path


def _method_rule(spec: str, flag: int):
    """NAME=RULE where RULE is [METHOD][@PATH], METHOD interface.method or
    interface.*, PATH /p or /p/* (xdg-dbus-proxy --call/--broadcast)."""
    name, eq, rule = spec.partition("=")
    if not eq or not name:
        raise CliError(f"expected NAME=RULE, not {spec!r}")
    flags, bus_name = _name_rule(name, flag)
    method, at, path = rule.partition("@")
    if at:
        pflags, path = _path_rule(path)
        flags |= pflags
    else:
        flags |= OBJECT_PATH_IS_SUBTREE
        path = "/"
    interface = ""
    if method and method != "*":
        iface, dot, member = method.rpartition(".")
        if not dot:
            raise CliError(f"method {method!r} must be interface.method or interface.*")
        # Allow rules have no member: interface.method grants the interface.
        interface = iface
    return (flags, bus_name, path, interface)


def _allow_rule(spec: str):
    parts = spec.split(":")
    if len(parts) != 4:
        raise CliError(f"--allow needs FLAGS:BUSNAME:PATH:IFACE, not {spec!r}")
    flags, bus_name, path, iface = parts
    try:
        flags = int(flags, 0)
    except ValueError:
        raise CliError(f"--allow flags must be a number, not {flags!r}") from None
    return (flags, bus_name, path or "/", iface)


def compile_shorthand(args) -> list:
    rules = [_allow_rule(a) for a in args.allow]
    for flag, names in ((SEE, args.see), (TALK, args.talk), (OWN, args.own)):
        for n in names:
            f, bus_name = _name_rule(n, flag)
            rules.append((f | OBJECT_PATH_IS_SUBTREE, bus_name, "/", ""))
    rules += [_method_rule(s, CALL_METHODS) for s in args.call]
    rules += [_method_rule(s, RECEIVE_BROADCASTS) for s in args.broadcast]
    return rules


def _mediated(args) -> bool:
    return any((args.allow, args.see, args.talk, args.own, args.call, args.broadcast))


def format_learned(path: str, rules, args) -> str:
    """What `rules PATH` prints: the a(usos) rules as `add --allow`
    arguments, then the xdg-dbus-proxy / Flatpak-style arguments."""
    from .learn import format_allow
    out = [f"# Allow rules learned by {path} (sandbus container add ... --allow ...):"]
    out += [format_allow(r) for r in rules] or ["# (none needed)"]
    out.append("# xdg-dbus-proxy / Flatpak:")
    out += list(args) or ["# (none needed)"]
    return "\n".join(out) + "\n"


# -- commands ---------------------------------------------------------------------

def _parser():
    p = argparse.ArgumentParser(prog="sandbus container",
                                description="Manage Containers1 instances on a running bus.")
    p.add_argument("--address", help="bus address (default: $DBUS_SESSION_BUS_ADDRESS)")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("add", help="create a container instance (AddServer)")
    a.add_argument("--type", required=True)
    a.add_argument("--name", required=True)
    a.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE")
    a.add_argument("--max-connections", type=int)
    a.add_argument("--allow", action="append", default=[], metavar="FLAGS:BUSNAME:PATH:IFACE")
    a.add_argument("--see", action="append", default=[], metavar="NAME")
    a.add_argument("--talk", action="append", default=[], metavar="NAME")
    a.add_argument("--own", action="append", default=[], metavar="NAME")
    a.add_argument("--call", action="append", default=[], metavar="NAME=RULE")
    a.add_argument("--broadcast", action="append", default=[], metavar="NAME=RULE")
    a.add_argument("--detach", action="store_true",
                   help="StopOnDisconnect=false: print and exit, the instance stays")
    a.add_argument("--learn", action="store_true",
                   help="learn mode: record instead of deny what the rules (maybe none) do not allow; "
                        "the learned rules are printed on exit (and by `rules PATH`)")
    r = sub.add_parser("rules", help="print the rules a learn-mode instance learned (GetLearnedRules)")
    r.add_argument("path")
    sub.add_parser("list", help="list instances")
    i = sub.add_parser("info", help="show one instance (GetInstanceInfo)")
    i.add_argument("path")
    s = sub.add_parser("stop", help="StopInstance, or StopListening with --listening-only")
    s.add_argument("--listening-only", action="store_true")
    s.add_argument("path")
    return p


def _format_value(v):
    if isinstance(v, Variant):
        return _format_value(v.value)
    if isinstance(v, bytes):
        return repr(v.rstrip(b"\0").decode(errors="replace"))
    if isinstance(v, list):
        return "[" + ", ".join(_format_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_format_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, str):
        return repr(v)
    return str(v)


def _add(client, args) -> int:
    metadata = {}
    for kv in args.metadata:
        k, eq, v = kv.partition("=")
        if not eq:
            raise CliError(f"--metadata needs KEY=VALUE, not {kv!r}")
        metadata[k] = Variant("s", v)
    named = {}
    if _mediated(args) or args.learn:
        named["Allow"] = Variant("a(usos)", compile_shorthand(args))
    if args.learn:
        named["Learn"] = Variant("b", True)
    if args.max_connections is not None:
        named["MaxConnections"] = Variant("u", args.max_connections)
    if args.detach:
        named["StopOnDisconnect"] = Variant("b", False)
    path, _socket_path, address = client.containers("AddServer", "ssa{sv}a{sv}", args.type, args.name,
                                                    metadata, named)
    print(path)
    print(address, flush=True)
    if args.detach:
        return 0

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        client.wait_closed()
    except KeyboardInterrupt:
        if args.learn:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            rules, fargs = client.containers("GetLearnedRules", "o", path)
            sys.stdout.write(format_learned(path, rules, fargs))
            sys.stdout.flush()
    return 0


def _rules(client, args) -> int:
    rules, fargs = client.containers("GetLearnedRules", "o", args.path)
    sys.stdout.write(format_learned(args.path, rules, fargs))
    return 0


def _list(client, args) -> int:
    instances = client.containers("ListInstances")[0]
    print(f"{'INSTANCE':<40} {'TYPE':<24} {'NAME':<20} {'CREATOR':<10} {'CONNS':>5} LISTENING")
    for path, ctype, name, creator, conns, listening in instances:
        print(f"{path:<40} {ctype:<24} {name or '-':<20} {creator:<10} {conns:>5} "
              f"{'yes' if listening else 'no'}")
    return 0


def _info(client, args) -> int:
    creds, ctype, name, metadata = client.containers("GetInstanceInfo", "o", args.path)
    print(f"Instance: {args.path}")
    print(f"Type: {ctype}")
    print(f"Name: {name}")
    print("Creator:")
    for k in sorted(creds):
        print(f"  {k}: {_format_value(creds[k])}")
    print("Metadata:")
    for k in sorted(metadata):
        print(f"  {k}: {_format_value(metadata[k])}")
    return 0


def _stop(client, args) -> int:
    client.containers("StopListening" if args.listening_only else "StopInstance", "o", args.path)
    return 0


def container_main(argv) -> int:
    args = _parser().parse_args(argv)
    address = args.address or os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    if not address:
        print("sandbus container: no --address and DBUS_SESSION_BUS_ADDRESS is not set", file=sys.stderr)
        return 2
    try:
        if args.command == "add":
            compile_shorthand(args)  # report syntax errors before connecting
        client = BlockingClient(address)
        try:
            return {"add": _add, "list": _list, "info": _info, "stop": _stop,
                    "rules": _rules}[args.command](client, args)
        finally:
            client.close()
    except CliError as e:
        print(f"sandbus container: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"sandbus container: {e}", file=sys.stderr)
        return 1


__all__ = ["container_main", "compile_shorthand", "BlockingClient"]
