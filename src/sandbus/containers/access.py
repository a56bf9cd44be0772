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
from .learn import Observation, describe, shape
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
DRIVER_PATH = "/org/freedesktop/DBus"
# Kinds of denial (rule shapes) logged per instance, at most.
MAX_LOGGED_DENIALS = 256
ALL_INSTANCES = "/"


def _mediated(peer) -> bool:
    inst = peer.container
    return inst is not None and inst.access is not None


def _names_of(peer):
    return (peer.unique_name, *peer.names)


def _well_known(peer) -> tuple:
    return tuple(sorted(peer.names))


def _observe(what, peer, dest, other, msg) -> Observation:
    """peer (in the instance concerned) and other, which dest names."""
    return Observation(what, peer.unique_name, dest, _well_known(other), msg.path, msg.interface, msg.member)


class AccessControl:
    FLAG_NAMES = FLAG_NAMES

    def __init__(self, manager):
        self.manager = manager
        self.bus = manager.bus
        self.grants = {}  # instance path or "/" -> RuleSet of granted rules
        self.callers_seen = {}  # contained Peer -> unique names that called it
        self.departing = None  # the peer whose disconnect is being announced

    def compile_rules(self, raw) -> RuleSet:
        return compile_allow(raw)

    # -- rule lookup -------------------------------------------------------------

    def _rule_sets(self, inst):
        """inst's own rules, then what was granted to it and to every instance."""
        sets = [inst.access]
        for key in (inst.path, ALL_INSTANCES):
            granted = self.grants.get(key)
            if granted is not None:
                sets.append(granted)
        return sets

    def _rules_for(self, inst, names):
        own, *granted = self._rule_sets(inst)
        found = own.for_names(names)
        for rule_set in granted:
            found.extend(r for r in rule_set.for_names(names) if r not in found)
        return found

    def _peer_by_name(self, name):
        p = self.bus.peers.get(name)
        if p is None and self.departing is not None and self.departing.unique_name == name:
            p = self.departing
        return p

    def _visible(self, viewer, name: str) -> bool:
        """Whether the rules let viewer see name (no recording, no log)."""
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

    def can_see(self, viewer, name: str) -> bool:
        """A driver lookup of name by viewer (NameHasOwner, GetNameOwner,
        GetConnection*...): a hidden name is a denial (logged; recorded and
        allowed in learn mode).  A name nobody owns is not worth a log line,
        but learn mode records a well-known one: the app looked it up."""
        if self._visible(viewer, name):
            return True
        inst = viewer.container
        if name.startswith(":"):
            p = self._peer_by_name(name)
            if p is None:
                return False
            names = _well_known(p)
        else:
            names = ()
            if inst.learner is None and self.bus.registry.owner(name) is None:
                return False
        obs = Observation("see", viewer.unique_name, name, names, None, None, None)
        return self._note(inst, obs)

    def filter_names(self, viewer, names):
        """ListNames / ListActivatableNames: hidden names are left out, not
        denied (nothing logged); learn mode lists everything."""
        if not _mediated(viewer) or viewer.container.learner is not None:
            return names
        return [n for n in names if self._visible(viewer, n)]

    def _allows(self, inst, target_names, flag, path=None, interface=None, check_object=True) -> bool:
        # The first matching rule decides: no need to collect and de-duplicate
        # them as _rules_for does (this runs for every call out of an instance).
        for rule_set in self._rule_sets(inst):
            for name in target_names:
                for r in rule_set.for_name(name):
                    if r.flags & flag and (not check_object or (r.covers_path(path)
                                                                and r.covers_interface(interface))):
                        return True
        return False

    # -- denials and learning ------------------------------------------------------

    def _note(self, inst, obs, level=logging.WARNING) -> bool:
        """Something inst's rules do not allow: True (allow it) if inst is
        learning, after recording it; else False, after logging it once per
        instance and rule shape."""
        learner = inst.learner
        if learner is not None:
            if learner.record(obs):
                log.info("learned: %s", describe(inst, obs))
            return True
        logged = inst.denials_logged
        if len(logged) < MAX_LOGGED_DENIALS:
            key = shape(obs)
            if key not in logged:
                logged.add(key)
                log.log(level, "denied: %s", describe(inst, obs))
                if len(logged) == MAX_LOGGED_DENIALS:
                    log.warning("container %s: %d kinds of denial logged, not logging more", inst.path,
                                MAX_LOGGED_DENIALS)
        return False

    def _deny(self, peer, obs, detail: str, error=None):
        """None if peer's instance is learning (obs recorded), else the
        DBusError to answer with (error, or AccessDenied saying detail)."""
        inst = peer.container
        if self._note(inst, obs):
            return None
        if error is not None:
            return error
        return DBusError(errors.ACCESS_DENIED, f"Connection {peer.unique_name} in container {inst.path} "
                         f"({inst.type} {inst.name!r}) is not allowed to {detail}")

    # -- routing hooks ---------------------------------------------------------

    def check_unicast(self, sender, target, msg):
        """None to allow a method call or unicast signal, else the DBusError."""
        if sender.container is target.container:
            return None
        dest = msg.destination
        sender_mediated = _mediated(sender)
        if sender_mediated:
            inst = sender.container
            names = _names_of(target)
            if not self._allows(inst, names, CALL_METHODS, msg.path, msg.interface):
                what = "call" if msg.type == METHOD_CALL else "signal"
                hidden = missing_name_error(msg) if not self._visible(sender, dest) else None
                err = self._deny(sender, _observe(what, sender, dest, target, msg),
                                 f"call {msg.interface}.{msg.member} on {msg.path} of {dest}", hidden)
                if err is not None:
                    return err
            if msg.fds and not self._allows(inst, names, SEND_UNIX_FDS, check_object=False):
                err = self._deny(sender, _observe("fds", sender, dest, target, msg),
                                 f"pass file descriptors to {dest}")
                if err is not None:
                    return err
        if _mediated(target):
            if sender_mediated and not self._rules_for(target.container, _names_of(sender)):
                # Two instances talk only if both sides' rules allow it: this
                # is a denial of target's instance (it needs SEE of sender).
                obs = _observe("reach", target, sender.unique_name, sender, msg)
                if not self._note(target.container, obs):
                    if not self._visible(sender, dest):
                        return missing_name_error(msg)
                    inst = sender.container
                    return DBusError(errors.ACCESS_DENIED, f"Connection {sender.unique_name} in container "
                                     f"{inst.path} ({inst.type} {inst.name!r}) is not allowed to reach {dest}, "
                                     "whose container has no rule for it")
            if msg.type == METHOD_CALL:
                self.callers_seen.setdefault(target, set()).add(sender.unique_name)
        return None

    def unrequested_reply(self, sender, target, msg):
        """An unrequested reply crossing a container boundary is dropped; a
        mediated sender addressing a name it may not see gets exactly what a
        missing name would have given it (see Bus.route), nothing more."""
        if _mediated(sender) and not self.can_see(sender, msg.destination):
            return missing_name_error(msg)
        return None

    def allow_broadcast(self, sender, receiver, msg) -> bool:
        if not _mediated(receiver) or sender.container is receiver.container:
            return True
        inst = receiver.container
        if sender is self.bus.driver_peer:
            if msg.member == "NameOwnerChanged":
                try:
                    name, old, new = msg.body()
                except ValueError:
                    return False
                if self._visible(receiver, name):
                    return True
                p = self._peer_by_name(name) if name.startswith(":") else None
                obs = Observation("see", receiver.unique_name, name, _well_known(p) if p else (),
                                  msg.path, msg.interface, msg.member)
                return self._note(inst, obs, logging.INFO)
            if msg.interface != IFACE_CONTAINERS:
                return True
            obs = Observation("driver-signal", receiver.unique_name, DRIVER_NAME, (), msg.path, msg.interface,
                              msg.member)
            return self._note(inst, obs, logging.INFO)
        if _mediated(sender) and not self._rules_for(sender.container, _names_of(receiver)):
            if not self._note(sender.container, _observe("reach", sender, receiver.unique_name, receiver, msg)):
                return False
        if self._allows(inst, _names_of(sender), RECEIVE_BROADCASTS, msg.path, msg.interface):
            return True
        return self._note(inst, _observe("broadcast", receiver, sender.unique_name, sender, msg))

    # -- driver hooks ----------------------------------------------------------

    def check_driver_call(self, peer, iface, member, args) -> None:
        if _mediated(peer) and iface == "org.freedesktop.DBus" and member == "GetId":
            obs = Observation("GetId", peer.unique_name, DRIVER_NAME, (), DRIVER_PATH, iface, member)
            err = self._deny(peer, obs, "learn the bus id")
            if err is not None:
                raise err

    def check_own(self, peer, name: str) -> None:
        if _mediated(peer) and not self._allows(peer.container, (name,), OWN_BUS_NAME, check_object=False):
            err = self._deny(peer, Observation("own", peer.unique_name, name, (), None, None, None),
                             f"own the name {name}")
            if err is not None:
                raise err

    check_list_queued = check_own

    def check_start_service(self, peer, name: str) -> None:
        if _mediated(peer) and not self._allows(peer.container, (name,), CALL_METHODS, check_object=False):
            hidden = errors.service_unknown(name) if not self._visible(peer, name) else None
            err = self._deny(peer, Observation("activation", peer.unique_name, name, (), None, None, None),
                             f"start {name}", hidden)
            if err is not None:
                raise err

    def may_activate(self, peer, name: str) -> bool:
        """Auto-start of name for a message from peer."""
        if not _mediated(peer) or self._allows(peer.container, (name,), CALL_METHODS, check_object=False):
            return True
        return self._deny(peer, Observation("activation", peer.unique_name, name, (), None, None, None),
                          f"start {name}") is None

    # -- bookkeeping -----------------------------------------------------------

    def on_disconnect(self, peer) -> None:
        self.callers_seen.pop(peer, None)
        if self.callers_seen and peer.unique_name is not None:
            # a caller that left is nobody's to see any more (and the sets
            # must not grow with every short-lived outside caller)
            for seen in self.callers_seen.values():
                seen.discard(peer.unique_name)
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
