"""Access rules of a mediated container instance: the Allow named argument
a(usos) (flags, bus name, object path, interface), compiled into an index
so a check costs a few dict lookups however many rules there are."""

import itertools

from ..core import errors
from ..core.errors import DBusError
from ..wire.names import is_valid_bus_name, is_valid_interface, is_valid_member, is_valid_object_path

OBJECT_PATH_IS_SUBTREE = 1
BUS_NAME_IS_SUBTREE = 2
CALL_METHODS = 4
RECEIVE_BROADCASTS = 8
SEND_UNIX_FDS = 16
OWN_BUS_NAME = 32
# The interface field is INTERFACE.MEMBER: the rule covers that one method
# or signal (xdg-dbus-proxy's --call=NAME=iface.Member), not the interface.
EXACT_MEMBER = 64
ALL_FLAGS = 127
# With BUS_NAME_IS_SUBTREE, the bus name ":" covers every unique name, and
# only to see them (xdg-dbus-proxy's --sloppy-names): not the well-known
# names they own.
UNIQUE_NAMES = ":"

FLAG_NAMES = {
    "ObjectPathIsSubtree": OBJECT_PATH_IS_SUBTREE,
    "BusNameIsSubtree": BUS_NAME_IS_SUBTREE,
    "CallMethods": CALL_METHODS,
    "ReceiveBroadcasts": RECEIVE_BROADCASTS,
    "SendUnixFds": SEND_UNIX_FDS,
    "OwnBusName": OWN_BUS_NAME,
    "ExactMember": EXACT_MEMBER,
}


class Rule:
    __slots__ = ("flags", "bus_name", "path", "interface", "granter", "_iface", "_member")

    def __init__(self, flags: int, bus_name: str, path: str, interface: str, granter=None):
        self.flags = flags
        self.bus_name = bus_name
        self.path = path
        self.interface = interface  # as given (INTERFACE.MEMBER with EXACT_MEMBER)
        self.granter = granter  # the Peer that granted it (GrantAccess), else None
        if flags & EXACT_MEMBER:
            self._iface, _, self._member = interface.rpartition(".")
        else:
            self._iface, self._member = interface, None

    def covers_path(self, path) -> bool:
        if path is None:
            return self.path == "/" and bool(self.flags & OBJECT_PATH_IS_SUBTREE)
        if path == self.path:
            return True
        if self.flags & OBJECT_PATH_IS_SUBTREE:
            return self.path == "/" or path.startswith(self.path + "/")
        return False

    def covers_interface(self, interface, member=None) -> bool:
        if self._member is not None:
            return self._member == member and self._iface == interface
        return self._iface == "" or self._iface == interface

    def as_tuple(self) -> tuple:
        return (self.flags, self.bus_name, self.path, self.interface)


def validate_rule(index: int, flags: int, bus_name: str, path: str, interface: str) -> None:
    def bad(why):
        raise DBusError(errors.INVALID_ARGS, f"Allow rule {index}: {why}")

    if flags & ~ALL_FLAGS:
        bad(f"unknown flag bits {flags & ~ALL_FLAGS:#x}")
    if bus_name == UNIQUE_NAMES:
        if flags & ~(BUS_NAME_IS_SUBTREE | OBJECT_PATH_IS_SUBTREE) or not flags & BUS_NAME_IS_SUBTREE:
            bad("the bus name ':' (every unique name) is for seeing them only: flags BUS_NAME_IS_SUBTREE "
                "and at most OBJECT_PATH_IS_SUBTREE")
    elif bus_name:
        if not is_valid_bus_name(bus_name):
            bad(f"invalid bus name {bus_name!r}")
        if bus_name.startswith(":") and flags & (BUS_NAME_IS_SUBTREE | OWN_BUS_NAME):
            bad("a unique name can be neither a subtree nor owned")
    elif flags & (BUS_NAME_IS_SUBTREE | OWN_BUS_NAME):
        bad("BUS_NAME_IS_SUBTREE and OWN_BUS_NAME need a bus name; '' means any name")
    if not is_valid_object_path(path):
        bad(f"invalid object path {path!r}")
    if flags & EXACT_MEMBER:
        iface, _, member = interface.rpartition(".")
        if not is_valid_interface(iface) or not is_valid_member(member):
            bad(f"EXACT_MEMBER needs INTERFACE.MEMBER, not {interface!r}")
    elif interface and not is_valid_interface(interface):
        bad(f"invalid interface {interface!r}")


# Rule set versions come from one counter, so the highest version among an
# instance's rule sets grows whenever any of them changes (and when one is
# created), even if another set is dropped: access.py's verdict caches are
# stamped with it.
_versions = itertools.count(1)


class RuleSet:
    """Rules indexed by bus name: exact names, subtree roots, and 'any'."""

    def __init__(self, rules=()):
        self.version = next(_versions)
        self.exact = {}
        self.subtree = {}
        self.any = []
        self.rules = []
        for r in rules:
            self.add(r)

    def add(self, rule: Rule) -> None:
        self.version = next(_versions)
        self.rules.append(rule)
        if not rule.bus_name:
            self.any.append(rule)
        elif rule.flags & BUS_NAME_IS_SUBTREE:
            self.subtree.setdefault(rule.bus_name, []).append(rule)
            # a subtree rule covers its root name too
        else:
            self.exact.setdefault(rule.bus_name, []).append(rule)

    def remove_one(self, flags, bus_name, path, interface, granter=None) -> bool:
        for r in self.rules:
            if r.as_tuple() == (flags, bus_name, path, interface) and r.granter is granter:
                self.version = next(_versions)
                self.rules.remove(r)
                if not r.bus_name:
                    self.any.remove(r)
                elif r.flags & BUS_NAME_IS_SUBTREE:
                    self.subtree[r.bus_name].remove(r)
                else:
                    self.exact[r.bus_name].remove(r)
                return True
        return False

    def remove_granter(self, granter) -> None:
        for r in [r for r in self.rules if r.granter is granter]:
            self.remove_one(*r.as_tuple(), granter=granter)

    def for_name(self, name: str):
        """Rules whose bus name covers name."""
        found = list(self.exact.get(name, ()))
        if self.subtree:
            if name.startswith(":"):
                found.extend(self.subtree.get(UNIQUE_NAMES, ()))
            else:
                prefix = name
                while True:
                    found.extend(self.subtree.get(prefix, ()))
                    cut = prefix.rfind(".")
                    if cut <= 0:
                        break
                    prefix = prefix[:cut]
        found.extend(self.any)
        return found

    def for_names(self, names):
        seen = []
        for n in names:
            for r in self.for_name(n):
                if r not in seen:
                    seen.append(r)
        return seen


def compile_allow(raw_rules) -> RuleSet:
    rules = []
    for i, (flags, bus_name, path, interface) in enumerate(raw_rules):
        validate_rule(i, flags, bus_name, path, interface)
        rules.append(Rule(flags, bus_name, path, interface))
    return RuleSet(rules)
