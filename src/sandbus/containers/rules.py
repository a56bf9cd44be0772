"""Access rules of a mediated container instance: the Allow named argument
a(usos) (flags, bus name, object path, interface), compiled into an index
so a check costs a few dict lookups however many rules there are."""

from ..core import errors
from ..core.errors import DBusError
from ..wire.names import is_valid_bus_name, is_valid_interface, is_valid_object_path

OBJECT_PATH_IS_SUBTREE = 1
BUS_NAME_IS_SUBTREE = 2
CALL_METHODS = 4
RECEIVE_BROADCASTS = 8
SEND_UNIX_FDS = 16
OWN_BUS_NAME = 32
ALL_FLAGS = 63

FLAG_NAMES = {
    "ObjectPathIsSubtree": OBJECT_PATH_IS_SUBTREE,
    "BusNameIsSubtree": BUS_NAME_IS_SUBTREE,
    "CallMethods": CALL_METHODS,
    "ReceiveBroadcasts": RECEIVE_BROADCASTS,
    "SendUnixFds": SEND_UNIX_FDS,
    "OwnBusName": OWN_BUS_NAME,
}


class Rule:
    __slots__ = ("flags", "bus_name", "path", "interface", "granter")

    def __init__(self, flags: int, bus_name: str, path: str, interface: str, granter=None):
        self.flags = flags
        self.bus_name = bus_name
        self.path = path
        self.interface = interface
        self.granter = granter  # the Peer that granted it (GrantAccess), else None

    def covers_path(self, path) -> bool:
        if path is None:
            return self.path == "/" and bool(self.flags & OBJECT_PATH_IS_SUBTREE)
        if path == self.path:
            return True
        if self.flags & OBJECT_PATH_IS_SUBTREE:
            return self.path == "/" or path.startswith(self.path + "/")
        return False

    def covers_interface(self, interface) -> bool:
        return self.interface == "" or self.interface == interface

    def as_tuple(self) -> tuple:
        return (self.flags, self.bus_name, self.path, self.interface)


def validate_rule(index: int, flags: int, bus_name: str, path: str, interface: str) -> None:
    def bad(why):
        raise DBusError(errors.INVALID_ARGS, f"Allow rule {index}: {why}")

    if flags & ~ALL_FLAGS:
        bad(f"unknown flag bits {flags & ~ALL_FLAGS:#x}")
    if bus_name:
        if not is_valid_bus_name(bus_name):
            bad(f"invalid bus name {bus_name!r}")
        if bus_name.startswith(":") and flags & (BUS_NAME_IS_SUBTREE | OWN_BUS_NAME):
            bad("a unique name can be neither a subtree nor owned")
    elif flags & (BUS_NAME_IS_SUBTREE | OWN_BUS_NAME):
        bad("BUS_NAME_IS_SUBTREE and OWN_BUS_NAME need a bus name; '' means any name")
    if not is_valid_object_path(path):
        bad(f"invalid object path {path!r}")
    if interface and not is_valid_interface(interface):
        bad(f"invalid interface {interface!r}")


class RuleSet:
    """Rules indexed by bus name: exact names, subtree roots, and 'any'."""

    def __init__(self, rules=()):
        self.exact = {}
        self.subtree = {}
        self.any = []
        self.rules = []
        for r in rules:
            self.add(r)

    def add(self, rule: Rule) -> None:
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
        if self.subtree and not name.startswith(":"):
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
