"""`sandbus container ...`: create, list, inspect and stop container
instances on a running bus, through sandbus's blocking client
(io/client.py).

The Flatpak / xdg-dbus-proxy shorthand (--see/--talk/--own/--call/
--broadcast) compiles to Allow rules (containers/shorthand.py, docs/containers.md).

Learn mode: `add --learn` creates an instance that records what its rules
would deny instead of denying it; `rules PATH` (or ending `add --learn`
with Ctrl-C / SIGTERM) prints the Allow rules that would have allowed it,
as `--allow` arguments for `add` and as xdg-dbus-proxy arguments."""

import argparse
import os
import signal
import sys

from ..io.client import Client, ClientError
from ..wire.marshal import Variant
from .shorthand import ShorthandError, compile_rules

BUS = "org.freedesktop.DBus"
BUS_PATH = "/org/freedesktop/DBus"
IFACE = "org.freedesktop.DBus.Containers1"


class CliError(ClientError):
    pass


class BlockingClient(Client):
    """io/client.py's client, with the Containers1 calls."""

    def containers(self, member, sig="", *body):
        return self.call(BUS, BUS_PATH, IFACE, member, sig, body)

    _read_message = Client.read_message


def compile_shorthand(args) -> list:
    try:
        return compile_rules(args.allow, args.see, args.talk, args.own, args.call, args.broadcast)
    except ShorthandError as e:
        raise CliError(str(e)) from None


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
    except ClientError as e:
        print(f"sandbus container: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"sandbus container: {e}", file=sys.stderr)
        return 1


__all__ = ["container_main", "compile_shorthand", "BlockingClient"]
