"""The Flatpak / xdg-dbus-proxy shorthand (--see/--talk/--own/--call/
--broadcast, and sandbus's --allow FLAGS:BUSNAME:PATH:IFACE) compiled to
Containers1 Allow rules (docs/containers.md); shared by `sandbus container
add` (containers/cli.py) and `sandbus run` (launcher/options.py)."""

from .rules import (
    BUS_NAME_IS_SUBTREE,
    CALL_METHODS,
    EXACT_MEMBER,
    OBJECT_PATH_IS_SUBTREE,
    OWN_BUS_NAME,
    RECEIVE_BROADCASTS,
)

SEE = 0
TALK = CALL_METHODS | RECEIVE_BROADCASTS
OWN = CALL_METHODS | RECEIVE_BROADCASTS | OWN_BUS_NAME


class ShorthandError(ValueError):
    pass


def name_rule(name: str, flags: int):
    """(flags, bus name) for NAME or NAME.* (subtree)."""
    if name.endswith(".*"):
        return flags | BUS_NAME_IS_SUBTREE, name[:-2]
    return flags, name


def path_rule(path: str):
    if path.endswith("/*"):
        base = path[:-2] or "/"
        return OBJECT_PATH_IS_SUBTREE, base
    return 0, path


def method_rule(spec: str, flag: int):
    """NAME=RULE where RULE is [METHOD][@PATH], METHOD interface.method or
    interface.*, PATH /p or /p/* (xdg-dbus-proxy --call/--broadcast)."""
    name, eq, rule = spec.partition("=")
    if not eq or not name:
        raise ShorthandError(f"expected NAME=RULE, not {spec!r}")
    flags, bus_name = name_rule(name, flag)
    method, at, path = rule.partition("@")
    if at:
        pflags, path = path_rule(path)
        flags |= pflags
    else:
        flags |= OBJECT_PATH_IS_SUBTREE
        path = "/"
    interface = ""
    if method and method != "*":
        iface, dot, member = method.rpartition(".")
        if not dot:
            raise ShorthandError(f"method {method!r} must be interface.method or interface.*")
        if member == "*":
            interface = iface
        else:
            # exactly that method or signal, as xdg-dbus-proxy matches it
            flags |= EXACT_MEMBER
            interface = method
    return (flags, bus_name, path, interface)


def allow_rule(spec: str):
    parts = spec.split(":")
    if len(parts) != 4:
        raise ShorthandError(f"--allow needs FLAGS:BUSNAME:PATH:IFACE, not {spec!r}")
    flags, bus_name, path, iface = parts
    try:
        flags = int(flags, 0)
    except ValueError:
        raise ShorthandError(f"--allow flags must be a number, not {flags!r}") from None
    return (flags, bus_name, path or "/", iface)


def compile_rules(allow=(), see=(), talk=(), own=(), call=(), broadcast=()) -> list:
    """The a(usos) Allow rules for the shorthand options, in this order."""
    rules = [allow_rule(a) for a in allow]
    for flag, names in ((SEE, see), (TALK, talk), (OWN, own)):
        for n in names:
            f, bus_name = name_rule(n, flag)
            rules.append((f | OBJECT_PATH_IS_SUBTREE, bus_name, "/", ""))
    rules += [method_rule(s, CALL_METHODS) for s in call]
    rules += [method_rule(s, RECEIVE_BROADCASTS) for s in broadcast]
    return rules
