"""`sandbus status`: a running bus at a glance.

Everything comes from the bus's own interfaces, so it works on any bus
that has them (on dbus-daemon without the sandbus parts): ListNames and the
GetConnection* calls for who is connected, Debug.Stats for match rules,
queued bytes and sandbus's denial counts (core/mediation.py), Containers1
for the container instances.  Debug.Stats and ListInstances are only for
the bus's own user and root; without them the columns say ``?``."""

import argparse
import pwd
import sys

from ..io.client import BUS_NAME, Client, ClientError
from .common import Failed, add_bus_options, bus_address, call_many

DBUS = BUS_NAME
STATS = "org.freedesktop.DBus.Debug.Stats"
CONTAINERS = "org.freedesktop.DBus.Containers1"
PROPERTIES = "org.freedesktop.DBus.Properties"
UNKNOWN = "?"


def _value(v):
    return getattr(v, "value", v)


def user_name(uid) -> str:
    if not isinstance(uid, int):
        return UNKNOWN
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


class Snapshot:
    """The answers, gathered in two batches of pipelined calls."""

    def __init__(self, client: Client):
        me = client.unique_name
        (names, bus_id, stats, rules, features, instances) = call_many(client, [
            (DBUS, "ListNames", "", ()),
            (DBUS, "GetId", "", ()),
            (STATS, "GetStats", "", ()),
            (STATS, "GetAllMatchRules", "", ()),
            (PROPERTIES, "Get", "ss", (DBUS, "Features")),
            (CONTAINERS, "ListInstances", "", ()),
        ])
        if isinstance(names, Failed):
            raise ClientError(f"ListNames failed: {names.name}: {names.text}")
        names = names[0]
        self.bus_id = bus_id[0] if bus_id else UNKNOWN
        self.stats = {k: _value(v) for k, v in stats[0].items()} if stats else None
        self.rules = rules[0] if rules else None
        self.features = list(_value(features[0])) if features else []
        # (path, type, name, creator, connections, listening)
        self.instances = instances[0] if instances else None
        self.uniques = sorted((n for n in names if n.startswith(":") and n != me), key=_unique_order)
        well_known = sorted(n for n in names if not n.startswith(":") and n != DBUS)
        per_conn = []
        for n in self.uniques:
            per_conn += [(DBUS, "GetConnectionUnixUser", "s", (n,)),
                         (DBUS, "GetConnectionUnixProcessID", "s", (n,)),
                         (STATS, "GetConnectionStats", "s", (n,)),
                         (CONTAINERS, "GetConnectionInstance", "s", (n,))]
        answers = call_many(client, per_conn + [(DBUS, "GetNameOwner", "s", (n,)) for n in well_known])
        self.connections = {}
        for i, n in enumerate(self.uniques):
            uid, pid, cstats, inst = answers[4 * i:4 * i + 4]
            self.connections[n] = {
                "uid": uid[0] if uid else None,
                "pid": pid[0] if pid else None,
                "stats": {k: _value(v) for k, v in cstats[0].items()} if cstats else None,
                "instance": inst[0] if inst else None,
                "names": [],
            }
        self.names = {}
        for name, owner in zip(well_known, answers[4 * len(self.uniques):]):
            if owner:
                self.names[name] = owner[0]
                if owner[0] in self.connections:
                    self.connections[owner[0]]["names"].append(name)

    def rule_count(self, unique):
        if self.rules is not None:
            return len(self.rules.get(unique, ()))
        st = self.connections[unique]["stats"]
        return st.get("MatchRules") if st else None

    def stat(self, unique, key):
        st = self.connections[unique]["stats"]
        return st.get(key) if st else None


def _unique_order(name):
    try:
        a, b = name[1:].split(".", 1)
        return (int(a), int(b))
    except ValueError:
        return (1 << 62, 0)


def _add(total, value):
    if total is None or value is None:
        return None
    return total + value


def _show(value):
    return UNKNOWN if value is None else str(value)


def _table(rows, header, out):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    for r in [header] + rows:
        out.write("  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() + "\n")


def render(snap: Snapshot, address: str, out) -> None:
    st = snap.stats or {}
    conns = snap.connections
    queued = None if snap.stats is None else sum(snap.stat(n, "OutgoingBytes") or 0 for n in conns)
    rules = (sum(len(v) for k, v in snap.rules.items()) if snap.rules is not None else st.get("MatchRules"))
    out.write(f"bus {address}\n  id {snap.bus_id}; features: {', '.join(snap.features) or 'none'}\n")
    out.write(f"connections: {len(conns)}" + (f" (+{st['IncompleteConnections']} authenticating)"
                                             if st.get("IncompleteConnections") else "") +
              f"; well-known names: {len(snap.names)}; match rules: {_show(rules)}; "
              f"queued bytes: {_show(queued)}\n")
    if "DenialsLastMinute" in st:
        out.write(f"denials in the last minute: {st['DenialsLastMinute']} (since start: {st['Denials']})\n")
    else:
        out.write("denials in the last minute: ? (" + ("Debug.Stats refused: run as the bus's user or root"
                                                     if snap.stats is None else "this bus does not count them")
                  + ")\n")
    if snap.stats is None:
        out.write("(Debug.Stats is only for the bus's own user and root: match rules and queues are ?)\n")

    # by uid
    by_uid = {}
    for n, c in conns.items():
        row = by_uid.setdefault(c["uid"], [0, 0, 0, 0, 0])
        row[0] += 1
        row[1] += len(c["names"])
        row[2] = _add(row[2], snap.rule_count(n))
        row[3] = _add(row[3], snap.stat(n, "OutgoingBytes"))
        row[4] = _add(row[4], snap.stat(n, "DenialsLastMinute"))
    out.write("\nby uid:\n")
    _table([[_show(uid), user_name(uid), r[0], r[1], _show(r[2]), _show(r[3]), _show(r[4])]
            for uid, r in sorted(by_uid.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))],
           ["UID", "USER", "CONNS", "NAMES", "RULES", "QUEUED", "DENIED/MIN"], out)

    # by container instance
    if snap.instances is not None or any(c["instance"] for c in conns.values()):
        out.write("\nby container instance:\n")
        rows = []
        known = {}
        for path, ctype, cname, creator, nconns, listening in (snap.instances or []):
            known[path] = [path, ctype, cname, creator, 0, "yes" if listening else "no", 0]
        for n, c in conns.items():
            path = c["instance"] or "(none)"
            row = known.setdefault(path, [path, "", "", "", 0, "", 0])
            row[4] += 1
            row[6] = _add(row[6], snap.stat(n, "DenialsLastMinute"))
        for path in sorted(known, key=lambda p: (p == "(none)", _instance_order(p))):
            r = known[path]
            rows.append(r[:6] + [_show(r[6])])
        _table(rows, ["INSTANCE", "TYPE", "NAME", "CREATOR", "CONNS", "LISTENING", "DENIED/MIN"], out)

    out.write("\nconnections:\n")
    _table([[n, _show(c["uid"]), _show(c["pid"]), _short_instance(c["instance"]), _show(snap.rule_count(n)),
             _show(snap.stat(n, "OutgoingBytes")), _show(snap.stat(n, "DenialsLastMinute")),
             " ".join(c["names"])] for n, c in conns.items()],
           ["NAME", "UID", "PID", "INSTANCE", "RULES", "QUEUED", "DENIED/MIN", "WELL-KNOWN NAMES"], out)


def _instance_order(path):
    tail = path.rsplit("/", 1)[-1]
    digits = "".join(ch for ch in tail if ch.isdigit())
    return (int(digits) if digits else 0, path)


def _short_instance(path):
    return path.rsplit("/", 1)[-1] if path else "-"


def main(argv) -> int:
    p = argparse.ArgumentParser(prog="sandbus status", description=__doc__.split("\n\n")[0])
    add_bus_options(p)
    args = p.parse_args(argv)
    try:
        address = bus_address(args)
        client = Client(address, timeout=10.0)
        try:
            snap = Snapshot(client)
        finally:
            client.close()
    except (ClientError, OSError) as e:
        print(f"sandbus status: {e}", file=sys.stderr)
        return 1
    render(snap, address, sys.stdout)
    return 0
