"""Learn mode: what the mediation of a container instance would have denied,
recorded instead of denied, and the minimal Allow rules that would have
allowed exactly that traffic (plus the xdg-dbus-proxy / Flatpak-style
arguments saying the same).

An Observation is also the shape of a denial in the log (access._deny), so
a denial log line and a learned record say the same thing the same way."""

from collections import namedtuple

from .rules import (
    BUS_NAME_IS_SUBTREE,
    CALL_METHODS,
    EXACT_MEMBER,
    OBJECT_PATH_IS_SUBTREE,
    OWN_BUS_NAME,
    RECEIVE_BROADCASTS,
    SEND_UNIX_FDS,
    UNIQUE_NAMES,
    Rule,
    RuleSet,
)

# what: one of
#   "call"      a method call to a name outside the instance (CALL_METHODS)
#   "signal"    a unicast signal to a name outside (CALL_METHODS)
#   "broadcast" a broadcast from outside delivered to the instance (RECEIVE_BROADCASTS)
#   "own"       RequestName/ReleaseName/ListQueuedOwners (OWN_BUS_NAME)
#   "see"       a driver lookup of a hidden name, or its NameOwnerChanged (SEE)
#   "fds"       file descriptors passed to a name outside (SEND_UNIX_FDS)
#   "activation" StartServiceByName or auto-start (CALL_METHODS, any object)
#   "reach"     another mediated instance whose rules do not name this one (SEE, on that side)
#   "GetId"     org.freedesktop.DBus.GetId (no rule can allow it)
#   "driver-signal" a Containers1 signal from the driver (no rule can allow it)
# dest: the name the other end was addressed by (for a broadcast: its
#   sender's unique name); names: the well-known names the other end owned
#   then (a rule for any of them covers it).
Observation = namedtuple("Observation", "what sender dest names path interface member")

CALL_KINDS = ("call", "signal")
RULELESS = ("GetId", "driver-signal")

# Distinct observations kept per instance; beyond that, only counted.
MAX_RECORDS = 4096


def shape(obs: Observation) -> tuple:
    """What a rule allowing obs depends on: the key for logging a denial
    once and for recording a learned one once (the sender does not matter,
    nor does a unique name when the other end has a well-known one)."""
    dest = obs.dest
    if dest and dest.startswith(":"):
        dest = obs.names or ":unique"
    return (obs.what, dest, obs.path, obs.interface, obs.member)


def describe(inst, obs: Observation) -> str:
    """One log line's worth: instance, app, sender, destination, object."""
    dest = obs.dest or "-"
    if obs.names and obs.dest and obs.dest not in obs.names:
        dest += f" ({', '.join(obs.names)})"
    parts = [f"container {inst.path} (app {inst.type} {inst.name!r})", obs.what, f"from {obs.sender}",
             f"to {dest}"]
    if obs.path is not None or obs.interface is not None or obs.member is not None:
        parts.append(f"path {obs.path or '-'} interface {obs.interface or '-'} member {obs.member or '-'}")
    return ": ".join(parts[:2]) + " " + " ".join(parts[2:])


class Learner:
    """The observations of one learn-mode instance, deduplicated by shape."""

    def __init__(self):
        self.records = {}  # shape -> Observation (first seen)
        self.counts = {}  # shape -> times seen
        self.dropped = 0

    def record(self, obs: Observation) -> bool:
        """True if obs is new (worth a log line)."""
        key = shape(obs)
        n = self.counts.get(key)
        if n is not None:
            self.counts[key] = n + 1
            return False
        if len(self.records) >= MAX_RECORDS:
            self.dropped += 1
            return False
        self.records[key] = obs
        self.counts[key] = 1
        return True

    def observations(self):
        return list(self.records.values())


# -- the minimiser ---------------------------------------------------------------------

def _choose_name(obs: Observation, preferred: set):
    """The bus name a rule for obs should name, or None if none can."""
    dest = obs.dest
    if obs.what not in ("broadcast",) and dest and not dest.startswith(":"):
        return dest
    names = [n for n in obs.names if not n.startswith(":")]
    if not names:
        return None
    for n in sorted(names):
        if n in preferred:
            return n
    return sorted(names)[0]


def _covered(base: RuleSet, name: str, flag: int, path=None, interface=None, member=None,
             check_object=True) -> bool:
    for r in base.for_name(name):
        if r.flags & flag and (not check_object or (r.covers_path(path) and r.covers_interface(interface, member))):
            return True
    return False


def learned_rules(observations, base_rules=()):
    """(rules, unexpressed): the minimal a(usos) list that, together with
    base_rules (the instance's own Allow list, returned first), allows
    exactly the observed traffic, and the observations no rule can express
    (a unique name with no well-known name, GetId, ...).

    Rules are never widened to subtrees: the observed (path, interface)
    pairs are kept as exact rules, and only merged where that changes
    nothing (same object with several flags; OWN, SEND_UNIX_FDS and
    activation, which do not depend on the object, folded into any rule for
    the name; a rule with interface "" subsuming the same path's others)."""
    base_rules = [tuple(r) for r in base_rules]
    base = RuleSet(Rule(*r) for r in base_rules)
    preferred = {o.dest for o in observations if o.dest and not o.dest.startswith(":")}
    objects = {}  # name -> {(path, iface): flags}
    extra = {}  # name -> flags not tied to an object (OWN, FDS, activation)
    seen = set()  # names that need at least SEE
    unexpressed = []
    # Broadcasts last, senders with fewer names first: a sender with several
    # names is covered by a rule for any of them, maybe one made already.
    order = sorted(observations, key=lambda o: (o.what == "broadcast", len(o.names), o.what, o.dest or "",
                                                o.path or "", o.interface or "", o.member or ""))
    for obs in order:
        if obs.what in RULELESS:
            unexpressed.append(obs)
            continue
        name = _choose_name(obs, preferred)
        if name is None:
            unexpressed.append(obs)
            continue
        if obs.what in CALL_KINDS or obs.what == "broadcast":
            flag = RECEIVE_BROADCASTS if obs.what == "broadcast" else CALL_METHODS
            if _covered(base, name, flag, obs.path, obs.interface, obs.member):
                continue
            # judged by all the target's names (a broadcast, or a call to a
            # unique name): a rule made already for any of them may do
            by_all_names = obs.what == "broadcast" or (obs.dest or "").startswith(":")
            if by_all_names and any(
                    _covered(base, n, flag, obs.path, obs.interface, obs.member)
                    or objects.get(n, {}).get((obs.path or "/", obs.interface or ""), 0) & flag
                    or objects.get(n, {}).get((obs.path or "/", ""), 0) & flag for n in obs.names):
                continue
            key = (obs.path or "/", obs.interface or "")
            per = objects.setdefault(name, {})
            per[key] = per.get(key, 0) | flag
        elif obs.what == "own":
            if not _covered(base, name, OWN_BUS_NAME, check_object=False):
                extra[name] = extra.get(name, 0) | OWN_BUS_NAME
        elif obs.what == "fds":
            if not _covered(base, name, SEND_UNIX_FDS, check_object=False):
                extra[name] = extra.get(name, 0) | SEND_UNIX_FDS
        elif obs.what == "activation":
            if not _covered(base, name, CALL_METHODS, check_object=False):
                extra[name] = extra.get(name, 0) | CALL_METHODS
        else:  # see, reach
            if not base.for_name(name):
                seen.add(name)
    learned = []
    for name in sorted(set(objects) | set(extra) | seen):
        per = objects.get(name, {})
        # A rule with interface "" covers the same path's rules for its flags.
        for (path, iface), flags in list(per.items()):
            if iface:
                flags &= ~per.get((path, ""), 0)
                if flags:
                    per[(path, iface)] = flags
                else:
                    del per[(path, iface)]
        rules = [[flags, name, path, iface] for (path, iface), flags in sorted(per.items())]
        more = extra.get(name, 0)
        if more & CALL_METHODS and any(r[0] & CALL_METHODS for r in rules):
            more &= ~CALL_METHODS  # activation needs any CALL rule for the name
        if more:
            if rules:
                rules[0][0] |= more
            else:
                rules.append([more, name, "/", ""])
        if not rules:
            rules.append([0, name, "/", ""])  # SEE
        learned.extend(tuple(r) for r in rules)
    return base_rules + _prune(base_rules, learned, [o for o in observations if o not in unexpressed]), \
        unexpressed


def _allowed(rules: RuleSet, obs: Observation) -> bool:
    """What mediation decides for obs under rules: a target addressed by a
    well-known name is judged by that name, otherwise by all its names."""
    if obs.what not in CALL_KINDS and obs.what not in ("broadcast", "fds"):
        names = (obs.dest,)
    elif obs.what != "broadcast" and not obs.dest.startswith(":"):
        names = (obs.dest,)
    else:
        names = obs.names
    if obs.what in CALL_KINDS:
        return any(_covered(rules, n, CALL_METHODS, obs.path, obs.interface, obs.member) for n in names)
    if obs.what == "broadcast":
        return any(_covered(rules, n, RECEIVE_BROADCASTS, obs.path, obs.interface, obs.member) for n in names)
    if obs.what == "fds":
        return any(_covered(rules, n, SEND_UNIX_FDS, check_object=False) for n in names)
    if obs.what == "own":
        return _covered(rules, obs.dest, OWN_BUS_NAME, check_object=False)
    if obs.what == "activation":
        return _covered(rules, obs.dest, CALL_METHODS, check_object=False)
    return bool(rules.for_name(obs.dest))  # see, reach


def _prune(base_rules, learned, observations) -> list:
    """Drop learned rules the others make redundant: building them one
    observation at a time can leave a rule that a later one covers."""
    kept = list(learned)
    for rule in list(learned):
        fewer = [r for r in kept if r is not rule]
        rs = RuleSet(Rule(*r) for r in base_rules + fewer)
        if all(_allowed(rs, o) for o in observations):
            kept = fewer
    return kept


# -- Flatpak / xdg-dbus-proxy form ------------------------------------------------------

def _flatpak_name(flags: int, name: str) -> str:
    return name + ".*" if flags & BUS_NAME_IS_SUBTREE else name


def _flatpak_object(flags: int, path: str, interface: str, member=None) -> str:
    if flags & EXACT_MEMBER:
        method = interface  # INTERFACE.MEMBER already
    elif interface:
        method = f"{interface}.{member or '*'}"
    else:
        method = "*"
    if flags & OBJECT_PATH_IS_SUBTREE:
        path = "/*" if path == "/" else path + "/*"
    return f"{method}@{path}"


def rule_to_flatpak(rule) -> list:
    """xdg-dbus-proxy arguments for one a(usos) rule (SEND_UNIX_FDS has no
    equivalent there; OWN there implies TALK)."""
    flags, name, path, interface = rule
    if not name:
        return []  # "any name" has no xdg-dbus-proxy spelling
    if name == UNIQUE_NAMES:
        return ["--sloppy-names"]
    fname = _flatpak_name(flags, name)
    out = []
    if flags & OWN_BUS_NAME:
        return [f"--own={fname}"]
    whole = flags & OBJECT_PATH_IS_SUBTREE and path == "/" and not interface
    if flags & CALL_METHODS and flags & RECEIVE_BROADCASTS and whole:
        return [f"--talk={fname}"]
    if flags & CALL_METHODS:
        out.append(f"--call={fname}={_flatpak_object(flags, path, interface)}")
    if flags & RECEIVE_BROADCASTS:
        out.append(f"--broadcast={fname}={_flatpak_object(flags, path, interface)}")
    if not out:
        out.append(f"--see={fname}")
    return out


def flatpak_args(observations, base_rules=()) -> list:
    """The xdg-dbus-proxy / Flatpak-style arguments for base_rules plus the
    observed traffic, member-precise where the traffic was (--call and
    --broadcast name the method or signal)."""
    rules, _ = learned_rules(observations, base_rules)
    learned_part = rules[len(list(base_rules)):]
    out = []
    for r in base_rules:
        out.extend(a for a in rule_to_flatpak(tuple(r)) if a not in out)
    base = RuleSet(Rule(*r) for r in base_rules)
    preferred = {o.dest for o in observations if o.dest and not o.dest.startswith(":")}
    per_name = {}
    for obs in observations:
        if obs.what in RULELESS:
            continue
        name = _choose_name(obs, preferred)
        if name is None:
            continue
        per_name.setdefault(name, []).append(obs)
    for r in learned_part:
        flags, name = r[0], r[1]
        if name not in per_name:
            continue
        obs_list = sorted(per_name.pop(name), key=lambda o: (o.what, o.path or "", o.interface or "",
                                                             o.member or ""))
        args = []
        if flags & OWN_BUS_NAME:
            args.append(f"--own={name}")
        for o in obs_list:
            if o.what in CALL_KINDS and not _covered(base, name, CALL_METHODS, o.path, o.interface, o.member):
                args.append(f"--call={name}={_flatpak_object(0, o.path or '/', o.interface or '', o.member)}")
            elif o.what == "broadcast" and not _covered(base, name, RECEIVE_BROADCASTS, o.path, o.interface, o.member):
                args.append(f"--broadcast={name}="
                            f"{_flatpak_object(0, o.path or '/', o.interface or '', o.member)}")
        if flags & CALL_METHODS and not any(a.startswith(("--call=", "--own=")) for a in args):
            args.append(f"--talk={name}")  # activation only
        if not args:
            args.append(f"--see={name}")
        for a in args:
            if a not in out:
                out.append(a)
    return out


def format_allow(rule) -> str:
    """The `sandbus container add --allow` spelling of one rule."""
    flags, name, path, interface = rule
    return f"--allow {flags}:{name}:{path}:{interface}"
