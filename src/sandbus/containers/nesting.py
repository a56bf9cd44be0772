"""Sub-instances that only narrow (docs/containers.md, "Nested instances"):
a connection in a mediated instance may create an instance of its own when
every Allow rule it asks for is covered by what its own instance may do.

A requested rule is covered when each of its permission bits (call, receive
broadcasts, send fds, own) is granted by one rule of the parent whose bus
name, object path and interface each contain the requested ones: a name
subtree contains its root and the names below it, "" (any name) contains
every name; a path subtree contains its root and the paths below it; an
empty interface contains every interface, an interface contains its
members (EXACT_MEMBER rules).  A rule with no permission bit
(see the name) needs a parent rule that contains its name."""

from .rules import (
    BUS_NAME_IS_SUBTREE,
    CALL_METHODS,
    EXACT_MEMBER,
    OBJECT_PATH_IS_SUBTREE,
    OWN_BUS_NAME,
    RECEIVE_BROADCASTS,
    SEND_UNIX_FDS,
    UNIQUE_NAMES,
)

PERMISSIONS = (CALL_METHODS, RECEIVE_BROADCASTS, SEND_UNIX_FDS, OWN_BUS_NAME)


def name_contains(parent_flags: int, parent: str, flags: int, name: str) -> bool:
    if not parent:
        return True
    if not name:
        return False  # "any name" is wider than any one name
    if parent_flags & BUS_NAME_IS_SUBTREE:
        if parent == UNIQUE_NAMES:
            return name.startswith(":")
        return name == parent or name.startswith(parent + ".")
    return not flags & BUS_NAME_IS_SUBTREE and name == parent


def path_contains(parent_flags: int, parent: str, flags: int, path: str) -> bool:
    if parent_flags & OBJECT_PATH_IS_SUBTREE:
        return parent == "/" or path == parent or path.startswith(parent + "/")
    return not flags & OBJECT_PATH_IS_SUBTREE and path == parent


def interface_contains(parent_flags: int, parent: str, flags: int, interface: str) -> bool:
    """"" contains every interface, an interface its members, a member itself."""
    if not parent:
        return True
    if parent_flags & EXACT_MEMBER:
        return bool(flags & EXACT_MEMBER) and interface == parent
    if flags & EXACT_MEMBER:
        return interface.rpartition(".")[0] == parent
    return interface == parent


def rule_covered(rule, parent_rules) -> bool:
    """rule (flags, bus name, path, interface) within the union of parent_rules
    (the same tuples)."""
    flags, name, path, interface = rule

    def contains(p):
        pflags, pname, ppath, piface = p
        return name_contains(pflags, pname, flags, name) and path_contains(pflags, ppath, flags, path) \
            and interface_contains(pflags, piface, flags, interface)

    wanted = [bit for bit in PERMISSIONS if flags & bit]
    if not wanted:
        return any(name_contains(p[0], p[1], flags, name) for p in parent_rules)
    return all(any(p[0] & bit and contains(p) for p in parent_rules) for bit in wanted)


def first_uncovered(rules, parent_rules):
    """(index, rule) of the first requested rule the parent's do not cover, or None."""
    parent_rules = [tuple(p) for p in parent_rules]
    for i, rule in enumerate(rules):
        if not rule_covered(tuple(rule), parent_rules):
            return i, tuple(rule)
    return None
