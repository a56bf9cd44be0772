"""Default-deny mediation of connections in a mediated container instance
(one created with the Allow named argument), and GrantAccess/RevokeAccess.

The baseline (DESIGN.md section 3): a mediated connection may call the bus
driver (filtered), talk within its own instance, receive method calls and
unicast signals from outside and answer each once, and send broadcasts.
Everything else needs a rule.  A name it may not see is answered exactly
like a name that does not exist."""

import logging

from ..core import errors
from ..core.driver import IFACE_CONTAINERS, method, missing_name_error
from ..core.errors import DBusError
from ..wire.message import METHOD_CALL
from .rules import (
    BUS_NAME_IS_SUBTREE,
    CALL_METHODS,
    FLAG_NAMES,
    OWN_BUS_NAME,
    RECEIVE_BROADCASTS,
    SEND_UNIX_FDS,
    Rule,
    RuleSet,
    compile_allow,
    validate_rule,
)

log = logging.getLogger("sandbus.containers.access")

DRIVER_NAME = "org.freedesktop.DBus"
ALL_INSTANCES = "/"


def _mediated(peer) -> bool:
    inst = peer.container
    return inst is not None and inst.access is not None


def _names_of(peer):
    return (peer.unique_name, *peer.names)


def _missing_service(name: str) -> DBusError:
    # Must be byte-identical to the error for a name nobody ever owned.
    return DBusError(errors.SERVICE_UNKNOWN, f"The name {name} was not provided by any .service files")


class AccessControl:
    FLAG_NAMES = FLAG_NAMES

    def __init__(self, manager):
        self.manager = manager
        self.bus = manager.bus
        self.grants = {}  # instance path or "/" -> RuleSet of granted rules
        self.callers_seen = {}  # contained Peer -> unique names that called it
        self.departing = None  # the peer whose disconnect is being announced
        self._logged = set()

    def compile_rules(self, raw) -> RuleSet:
        return compile_allow(raw)

    # -- rule lookup -------------------------------------------------------------

    def _rules_for(self, inst, names):
        found = inst.access.for_names(names)
        for key in (inst.path, ALL_INSTANCES):
            granted = self.grants.get(key)
            if granted is not None:
                found.extend(r for r in granted.for_names(names) if r not in found)
        return found

    def _peer_by_name(self, name):
        p = self.bus.peers.get(name)
        if p is None and self.departing is not None and self.departing.unique_name == name:
            p = self.departing
        return p

    def can_see(self, viewer, name: str) -> bool:
        if not _mediated(viewer) or name == DRIVER_NAME:
            return True
        inst = viewer.container
        if name.startswith(":"):
            p = self._peer_by_name(name)
            if p is None:
                return False
            if p.container is inst or name in self.callers_seen.get(viewer, ()):
                return True
            return bool(self._rules_for(inst, _names_of(p)))
        if self._rules_for(inst, (name,)):
            return True
        owner = self.bus.registry.owner(name)
        if owner is None:
            return False
        # Rules naming the owner's unique name (GrantAccess always does)
        # cover the names it owns, as they do for calls (check_unicast).
        return owner.container is inst or bool(self._rules_for(inst, (owner.unique_name,)))

    def _allows(self, inst, target_names, flag, path=None, interface=None, check_object=True) -> bool:
        for r in self._rules_for(inst, target_names):
            if r.flags & flag and (not check_object or (r.covers_path(path) and r.covers_interface(interface))):
                return True
        return False

    def _deny(self, peer, what: str, detail: str, name: str, msg=None) -> DBusError:
        inst = peer.container
        key = (inst.path, what, name, msg.interface if msg else None, msg.member if msg else None)
        if key not in self._logged:
            self._logged.add(key)
            log.warning("container %s (type %s, app %r): denied %s from %s to %s%s", inst.path, inst.type,
                        inst.name, what, peer.unique_name, name,
                        f" (path {msg.path}, {msg.interface}.{msg.member})" if msg else "")
        return DBusError(errors.ACCESS_DENIED, f"Connection {peer.unique_name} in container {inst.path} "
                         f"({inst.type} {inst.name!r}) is not allowed to {detail}")

    # -- routing hooks ---------------------------------------------------------

    def check_unicast(self, sender, target, msg):
        """None to allow a method call or unicast signal, else the DBusError."""
        if sender.container is target.container:
            return None
        dest = msg.destination
        if _mediated(sender):
            inst = sender.container
            names = _names_of(target)
            if target.container is not inst and not self._allows(inst, names, CALL_METHODS, msg.path, msg.interface):
                if not self.can_see(sender, dest):
                    return missing_name_error(msg)
                return self._deny(sender, "call", f"call {msg.interface}.{msg.member} on {msg.path} of {dest}",
                                  dest, msg)
            if msg.fds and not self._allows(inst, names, SEND_UNIX_FDS, check_object=False):
                return self._deny(sender, "fd passing", f"pass file descriptors to {dest}", dest, msg)
        if _mediated(target):
            if _mediated(sender) and not self._rules_for(target.container, _names_of(sender)):
                # Two instances talk only if both sides' rules allow it.
                if not self.can_see(sender, dest):
                    return missing_name_error(msg)
                return self._deny(sender, "call", f"reach {dest}, whose container has no rule for it", dest, msg)
            if msg.type == METHOD_CALL:
                self.callers_seen.setdefault(target, set()).add(sender.unique_name)
        return None

    def allow_reply(self, sender, target, msg) -> bool:
        # Reply tracking already limits replies to one per received call.
        return True

    def allow_broadcast(self, sender, receiver, msg) -> bool:
        if not _mediated(receiver) or sender.container is receiver.container:
            return True
        if sender is self.bus.driver_peer:
            if msg.member == "NameOwnerChanged":
                try:
                    name, old, new = msg.body()
                except ValueError:
                    return False
                return self.can_see(receiver, name)
            return msg.interface != IFACE_CONTAINERS
        inst = receiver.container
        if _mediated(sender) and not self._rules_for(sender.container, _names_of(receiver)):
            return False
        return self._allows(inst, _names_of(sender), RECEIVE_BROADCASTS, msg.path, msg.interface)

    # -- driver hooks ----------------------------------------------------------

    def check_driver_call(self, peer, iface, member, args) -> None:
        if _mediated(peer) and iface == "org.freedesktop.DBus" and member == "GetId":
            raise self._deny(peer, "GetId", "learn the bus id", DRIVER_NAME)

    def check_own(self, peer, name: str) -> None:
        if _mediated(peer) and not self._allows(peer.container, (name,), OWN_BUS_NAME, check_object=False):
            raise self._deny(peer, "own", f"own the name {name}", name)

    check_list_queued = check_own

    def check_start_service(self, peer, name: str) -> None:
        if _mediated(peer) and not self._allows(peer.container, (name,), CALL_METHODS, check_object=False):
            if not self.can_see(peer, name):
                raise _missing_service(name)
            raise self._deny(peer, "activation", f"start {name}", name)

    def may_activate(self, peer, name: str) -> bool:
        return not _mediated(peer) or self._allows(peer.container, (name,), CALL_METHODS, check_object=False)

    # -- bookkeeping -----------------------------------------------------------

    def on_disconnect(self, peer) -> None:
        self.callers_seen.pop(peer, None)
        for granted in self.grants.values():
            granted.remove_granter(peer)

    def on_instance_removed(self, inst) -> None:
        self.grants.pop(inst.path, None)


def _parse_grant_rules(rules, granter):
    parsed = []
    for i, (flags, path, interface) in enumerate(rules):
        if flags & (BUS_NAME_IS_SUBTREE | OWN_BUS_NAME):
            raise DBusError(errors.INVALID_ARGS, f"Access rule {i}: granted rules name the caller itself, "
                            "so BUS_NAME_IS_SUBTREE and OWN_BUS_NAME make no sense")
        validate_rule(i, flags, granter.unique_name, path, interface)
        parsed.append(Rule(flags, granter.unique_name, path, interface, granter=granter))
    return parsed


def _grant_target(driver, path: str) -> str:
    if path != ALL_INSTANCES:
        driver.bus.containers.lookup(path)  # NotContainer if unknown
    return path


@method(IFACE_CONTAINERS, "GrantAccess", "oa(uos)", "")
def _grant_access(driver, peer, msg, path, rules):
    access = driver.bus.containers.access
    key = _grant_target(driver, path)
    ruleset = access.grants.setdefault(key, RuleSet())
    for rule in _parse_grant_rules(rules, peer):
        ruleset.add(rule)
    return ()


@method(IFACE_CONTAINERS, "RevokeAccess", "oa(uos)", "")
def _revoke_access(driver, peer, msg, path, rules):
    access = driver.bus.containers.access
    key = _grant_target(driver, path)
    ruleset = access.grants.get(key)
    for rule in _parse_grant_rules(rules, peer):
        if ruleset is not None:
            ruleset.remove_one(*rule.as_tuple(), granter=peer)
    return ()
