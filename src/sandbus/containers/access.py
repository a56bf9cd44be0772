"""Default-deny mediation of connections in a mediated container instance
(one created with the Allow named argument), and GrantAccess/RevokeAccess.

The baseline (docs/containers.md): a mediated connection may call the bus
driver (filtered), talk within its own instance, receive method calls and
unicast signals from outside and answer each once, and send broadcasts.
Everything else needs a rule.  A name it may not see is answered exactly
like a name that does not exist."""

import logging

from ..core import errors
from ..core.driver import OWN, TALK, missing_name_error
from ..core.errors import DBusError
from ..core.match import MatchRule
from ..core.mediation import DROP, HIDDEN, Denial, Mediator
from ..core.peer import Credentials, Peer
from ..wire.message import ERROR, METHOD_CALL, METHOD_RETURN, SIGNAL
from . import quotas
from .learn import Observation, describe, shape
from .rules import (
    CALL_METHODS,
    FLAG_NAMES,
    OWN_BUS_NAME,
    RECEIVE_BROADCASTS,
    SEND_UNIX_FDS,
    UNIQUE_NAMES,
    RuleSet,
    compile_allow,
)

log = logging.getLogger("sandbus.containers.access")

DRIVER_NAME = "org.freedesktop.DBus"
DRIVER_PATH = "/org/freedesktop/DBus"
IFACE_CONTAINERS = "org.freedesktop.DBus.Containers1"
# Kinds of denial (rule shapes) logged per instance, at most.
MAX_LOGGED_DENIALS = 256
ALL_INSTANCES = "/"
HIDDEN_NAME_ERRORS = (errors.SERVICE_UNKNOWN, errors.NAME_HAS_NO_OWNER)
# Methods a connection in a mediated instance may call for its own nested
# instances (containers/driver_methods.py checks the rest).
NESTABLE = ("AddServer", "StopInstance", "StopListening")


def _mediated(peer) -> bool:
    inst = peer.container
    return inst is not None and inst.access is not None


def _nobody():
    """Stands in for the owner of a name nobody owns, so that _sight does
    the same work for a missing name as for one that exists (issue 11,
    hole 7): a Peer like any (the same attribute reads), in no instance,
    with no well-known names and a unique name no rule names but the
    every-unique-name rule, which _shows_names_of leaves out."""
    nobody = Peer(0, None, Credentials(), False)
    nobody.unique_name = ":"
    return nobody


NOBODY = _nobody()


def _names_of(peer):
    return (peer.unique_name, *peer.names)


def _well_known(peer) -> tuple:
    return tuple(sorted(peer.names))


def _observe(what, peer, dest, other, msg) -> Observation:
    """peer (in the instance concerned) and other, which dest names."""
    return Observation(what, peer.unique_name, dest, _well_known(other), msg.path, msg.interface, msg.member)


class _View:
    """A contained caller's view of names, for the driver (core/driver.py
    Driver.lookup): a lookup of a hidden name is a denial (logged, or
    learned), a listing just leaves hidden names out."""

    __slots__ = ("access", "viewer")

    def __init__(self, access, viewer):
        self.access = access
        self.viewer = viewer

    def sees(self, name: str, owner) -> bool:
        return self.access.can_see(self.viewer, name)

    def lists(self, name: str) -> bool:
        return self.viewer.container.learner is not None or self.access._visible(self.viewer, name)

    def owner(self, name: str, owner):
        return scoped_owner(self.viewer, name, owner)


class _ScopedView:
    """The view of a caller in an unmediated instance with ScopedNames: it
    sees every name, and its scoped names as their instance resolves them."""

    __slots__ = ("viewer",)

    def __init__(self, viewer):
        self.viewer = viewer

    def sees(self, name: str, owner) -> bool:
        return True

    def lists(self, name: str) -> bool:
        return True

    def owner(self, name: str, owner):
        return scoped_owner(self.viewer, name, owner)


def scoped_owner(peer, name: str, owner):
    """Who owns name for peer: for a name its instance scopes (ScopedNames,
    docs/containers.md) the instance's creator while it is connected, and
    nobody after (never the global owner: the app asked for its creator)."""
    inst = peer.container
    if inst is not None and name in inst.scoped:
        return inst.creator
    return owner


class AccessControl(Mediator):
    """The containers' access rules as the bus's mediator (core/mediation.py);
    docs/containers.md says what they allow."""

    FLAG_NAMES = FLAG_NAMES

    def __init__(self, manager):
        self.manager = manager
        self.bus = manager.bus
        self.grants = {}  # instance path or "/" -> RuleSet of granted rules
        self.callers_seen = {}  # contained Peer -> unique names that called it

    def compile_rules(self, raw) -> RuleSet:
        return compile_allow(raw)

    # -- the mediation interface -------------------------------------------------

    def connected(self, peer, listener) -> None:
        inst = getattr(listener, "container", None)
        if inst is not None:
            self.manager.on_connect(peer, inst)

    def disconnected(self, peer) -> None:
        self.callers_seen.pop(peer, None)
        if self.callers_seen and peer.unique_name is not None:
            # a caller that left is nobody's to see any more (and the sets
            # must not grow with every short-lived outside caller)
            for seen in self.callers_seen.values():
                seen.discard(peer.unique_name)
        for granted in self.grants.values():
            granted.remove_granter(peer)
        self.manager.on_disconnect(peer)

    def restricts(self, peer) -> bool:
        return peer.container is not None

    def restricts_replies(self, peer) -> bool:
        return False  # a requested reply always passes (unicast below)

    def owner(self, peer, name: str, owner):
        return scoped_owner(peer, name, owner)

    def hides(self, sender, msg) -> bool:
        """A call or unicast signal from a mediated connection to a name it
        may not see, or that nobody has: answered as missing before the bus
        looks the name up (core/mediation.py).  Not in learn mode (the
        rules decide later, and record it) nor for a scoped name (its
        instance resolves it, owner()); replies are judged in unicast."""
        inst = sender.container
        if inst is None or inst.access is None or inst.learner is not None:
            return False
        mtype = msg.type
        if mtype != METHOD_CALL and mtype != SIGNAL:
            return False
        dest = msg.destination
        if dest in inst.scoped:
            return False
        well_known = dest[0] != ":"
        if well_known:
            # shown before, and still owned by the same peer (containers/verdicts.py);
            # a hidden or missing name does this same lookup, and misses
            p = self.bus.registry.owner(dest) or NOBODY
            hit = inst.verdicts.get(self._stamp(inst), dest)
            if hit is not None and hit[0] is p and hit[1] is p.container:
                return False
        seen, p = self._sight(sender, dest)
        if seen:
            if well_known:
                inst.verdicts.put(dest, (p, p.container))
            return False
        # a hidden name is a denial, logged once per shape as check_unicast
        # logs it; a missing one costs the same short of the log line
        what = "call" if mtype == METHOD_CALL else "signal"
        self._note(inst, _observe(what, sender, dest, p, msg), logging.WARNING, p is NOBODY)
        return True

    def unicast(self, sender, target, msg, requested: bool):
        if target is None:
            return self._activation(sender, msg)
        if target is self.bus.driver_peer:
            return None  # driver calls are mediated per method (driver_call)
        mtype = msg.type
        if mtype == METHOD_RETURN or mtype == ERROR:
            if requested or (sender.container is None and target.container is None):
                return None
            # Never into or out of a container; a mediated sender addressing
            # a name it may not see gets what a missing name would give it.
            if _mediated(sender) and not self.can_see(sender, msg.destination):
                return HIDDEN
            return DROP
        error = self.check_unicast(sender, target, msg)
        if error is None:
            # allowed by the rules; the instances' quotas may still refuse it
            return quotas.unicast(self.bus, sender, target, msg)
        if error.name in HIDDEN_NAME_ERRORS:
            return HIDDEN
        return Denial(error)

    def receive(self, sender, receiver, msg, target=None) -> bool:
        if target is not None:
            return receiver.container is None  # nobody in a container eavesdrops
        return self.allow_broadcast(sender, receiver, msg) and quotas.may_receive_broadcast(self.bus, receiver, msg)

    def driver_call(self, peer, method, msg, args):
        inst = peer.container
        if inst is None:
            return None
        if method.interface == IFACE_CONTAINERS and method.member in NESTABLE and inst.access is not None:
            return None  # they check the caller themselves (containers/nesting.py)
        if method.privileged:
            self._log_once(inst, ("privileged", method.interface, method.member),
                           "denied %s.%s to %s in container %s (type %s, name %r)",
                           method.interface, method.member, peer.unique_name, inst.path, inst.type, inst.name)
            raise DBusError(errors.ACCESS_DENIED,
                            f"{method.interface}.{method.member} may not be called from inside a container "
                            f"({inst.path}, {inst.type} {inst.name!r})")
        if method.member == "AddMatch" and MatchRule(args[0]).eavesdrop:
            self._log_once(inst, ("eavesdrop",), "denied eavesdropping match rule to %s in container %s "
                           "(type %s, name %r)", peer.unique_name, inst.path, inst.type, inst.name)
            raise DBusError(errors.ACCESS_DENIED, "Connections inside a container may not eavesdrop")
        if method.interface == DRIVER_NAME and method.member in ("AddMatch", "RequestName"):
            self.check_quotas(peer, method.member, args)
        if inst.access is None:
            return _ScopedView(peer) if inst.scoped and method.filtered else None
        if method.member == "GetId" and method.interface == "org.freedesktop.DBus":
            obs = Observation("GetId", peer.unique_name, DRIVER_NAME, (), DRIVER_PATH, method.interface,
                              method.member)
            err = self._deny(peer, obs, "learn the bus id")
            if err is not None:
                raise err
        if method.access == OWN:
            self.check_own(peer, args[0])
        elif method.access == TALK:
            self.check_start_service(peer, args[0])
        return _View(self, peer) if method.filtered else None

    def check_quotas(self, peer, member: str, args) -> None:
        """The instance's quotas for AddMatch and RequestName; a filtering
        proxy (proxy/filter.py) leaves them to the bus it forwards to."""
        quotas.check_driver_call(self.bus, peer, member, args)

    def _activation(self, sender, msg):
        """A message that would start its destination (no owner yet)."""
        # A refused auto-start is answered as if nothing could be started.
        # A scoped name is its creator's, whose leaving starts nothing.
        if msg.destination in sender.container.scoped:
            return HIDDEN
        if not _mediated(sender) or self.may_activate(sender, msg.destination):
            return None
        return HIDDEN

    def _log_once(self, inst, key, fmt, *args) -> None:
        """Log a denial once per instance and kind, like rule denials (_note):
        a contained app must not be able to flood the log."""
        logged = inst.denials_logged
        if inst.log_denials and len(logged) < MAX_LOGGED_DENIALS and key not in logged:
            logged.add(key)
            log.warning(fmt, *args)

    # -- rule lookup -------------------------------------------------------------

    def _rule_sets(self, inst):
        """inst's own rules, then what was granted to it and to every instance."""
        sets = [inst.access]
        for key in (inst.path, ALL_INSTANCES):
            granted = self.grants.get(key)
            if granted is not None:
                sets.append(granted)
        return sets

    def effective_rules(self, inst) -> list:
        """What inst may do, as a(usos) tuples: its rules and its grants."""
        return [r.as_tuple() for rule_set in self._rule_sets(inst) for r in rule_set.rules]

    def _stamp(self, inst) -> int:
        """The version of inst's rules and grants (containers/verdicts.py)."""
        stamp = inst.access.version
        grants = self.grants
        if grants:
            for key in (inst.path, ALL_INSTANCES):
                granted = grants.get(key)
                if granted is not None and granted.version > stamp:
                    stamp = granted.version
        return stamp

    def _rules_for(self, inst, names):
        own, *granted = self._rule_sets(inst)
        found = own.for_names(names)
        for rule_set in granted:
            found.extend(r for r in rule_set.for_names(names) if r not in found)
        return found

    def _peer_by_name(self, name):
        return self.bus.peers.get(name)

    def _visible(self, viewer, name: str) -> bool:
        """Whether the rules let viewer see name (no recording, no log)."""
        if not _mediated(viewer) or name == DRIVER_NAME:
            return True
        return self._sight(viewer, name)[0]

    def _sight(self, viewer, name: str):
        """(whether mediated viewer sees name, its owner or NOBODY), with
        the same work whether name has an owner or not: no shortcut for a
        missing one, so the time of the answer does not tell a hidden name
        from a missing one (issue 11, hole 7).  A name nobody owns is seen
        only where a rule covers the name itself, and then it is answered as
        missing anyway."""
        inst = viewer.container
        if name[0] == ":":
            p = self.bus.peers.get(name, NOBODY)
            seen = p.container is inst
            seen = name in self.callers_seen.get(viewer, ()) or seen
            seen = bool(self._rules_for(inst, (name, *p.names))) or seen
            return seen, p
        p = self.bus.registry.owner(name) or NOBODY
        seen = bool(self._rules_for(inst, (name,)))
        seen = self._shows_names_of(inst, p) or seen
        return seen, p

    def _shows_names_of(self, inst, owner) -> bool:
        """Whether inst sees every well-known name owner owns: rules naming
        its unique name (GrantAccess always does) cover them, as they do
        for calls (check_unicast); the every-unique-name rule does not."""
        if owner is None:
            return False
        shown = any(r.bus_name != UNIQUE_NAMES for r in self._rules_for(inst, (owner.unique_name,)))
        return owner.container is inst or shown

    def can_see(self, viewer, name: str) -> bool:
        """A driver lookup of name by viewer (NameHasOwner, GetNameOwner,
        GetConnection*...): a hidden name is a denial (logged; recorded and
        allowed in learn mode).  A name nobody owns is not worth a log line,
        but learn mode records a well-known one: the app looked it up."""
        if not _mediated(viewer) or name == DRIVER_NAME:
            return True
        seen, p = self._sight(viewer, name)
        if seen:
            return True
        inst = viewer.container
        unique = name[0] == ":"
        obs = Observation("see", viewer.unique_name, name, _well_known(p) if unique else (), None, None, None)
        # a missing name: the same work as for a hidden one (the very same
        # call, positional arguments and all), but nothing logged or learned
        return self._note(inst, obs, logging.WARNING, p is NOBODY and (unique or inst.learner is None))

    def _allows(self, inst, target_names, flag, path=None, interface=None, member=None,
                check_object=True) -> bool:
        # The first matching rule decides: no need to collect and de-duplicate
        # them as _rules_for does (this runs for every call out of an instance).
        for rule_set in self._rule_sets(inst):
            for name in target_names:
                for r in rule_set.for_name(name):
                    if r.flags & flag and (not check_object or (r.covers_path(path)
                                                                and r.covers_interface(interface, member))):
                        return True
        return False

    # -- denials and learning ------------------------------------------------------

    def _note(self, inst, obs, level=logging.WARNING, quiet=False) -> bool:
        """Something inst's rules do not allow: True (allow it) if inst is
        learning, after recording it; else False, after logging it once per
        instance and rule shape.  quiet: not learning, just False, after
        the same work short of the log line (a missing name's lookup, which
        must cost what a hidden one's does)."""
        learner = inst.learner
        if learner is not None and not quiet:
            if learner.record(obs):
                log.info("learned: %s", describe(inst, obs))
            return True
        logged = inst.denials_logged
        if inst.log_denials and len(logged) < MAX_LOGGED_DENIALS:
            key = shape(obs)
            if key not in logged and not quiet:
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
            if not self._allowed_before(inst, dest, target, msg):
                denied = self._check_call(sender, inst, dest, target, msg)
                if denied is not None:
                    return denied
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

    def _allowed_before(self, inst, dest, target, msg) -> bool:
        """Whether a message of this shape to this very target passed inst's
        rules since they last changed (containers/verdicts.py)."""
        if dest[0] == ":" or inst.learner is not None:
            return False
        hit = inst.verdicts.get(self._stamp(inst), (dest, msg.path, msg.interface, msg.member, not msg.fds))
        return hit is not None and hit[0] is target and hit[1] is target.container

    def _check_call(self, sender, inst, dest, target, msg):
        """None if the rules of sender's instance let it send msg to target
        (remembered when they do, for a well-known name), else the DBusError."""
        # A target addressed by a well-known name is judged by the rules
        # for that name (and for its unique name, which cover all it
        # owns), as _visible judges it: else a name answered as missing
        # could be called, through a rule for another of its owner's
        # names.  Addressed by its unique name, by all its names.
        well_known = dest[0] != ":"
        names = (dest, target.unique_name) if well_known else _names_of(target)
        allowed = True
        if not self._allows(inst, names, CALL_METHODS, msg.path, msg.interface, msg.member):
            what = "call" if msg.type == METHOD_CALL else "signal"
            hidden = missing_name_error(msg) if not self._visible(sender, dest) else None
            err = self._deny(sender, _observe(what, sender, dest, target, msg),
                             f"call {msg.interface}.{msg.member} on {msg.path} of {dest}", hidden)
            if err is not None:
                return err
            allowed = False  # learn mode: let through, recorded
        if msg.fds and not self._allows(inst, names, SEND_UNIX_FDS, check_object=False):
            err = self._deny(sender, _observe("fds", sender, dest, target, msg),
                             f"pass file descriptors to {dest}")
            if err is not None:
                return err
            allowed = False
        if allowed and well_known and inst.learner is None:
            inst.verdicts.put((dest, msg.path, msg.interface, msg.member, not msg.fds),
                              (target, target.container))
        return None

    def allow_broadcast(self, sender, receiver, msg) -> bool:
        if sender.container is receiver.container:
            return True
        if msg.fds and _mediated(sender) and not self._allows(sender.container, _names_of(receiver),
                                                               SEND_UNIX_FDS, check_object=False):
            # fds leave an instance only where its rules say, broadcast or not
            if not self._note(sender.container, _observe("fds", sender, receiver.unique_name, receiver, msg)):
                return False
        scoping = receiver.container
        if scoping is not None and scoping.scoped and sender is self.bus.driver_peer \
                and msg.member == "NameOwnerChanged" and self._global_change_of_scoped(receiver, msg):
            return False
        if not _mediated(receiver):
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
                # A name it saw through its owner (a grant) is seen to go
                # too, and to come to a new owner it sees: the registry has
                # the new owner by now, the old one is still connected.
                if not name.startswith(":") and any(
                        self._shows_names_of(inst, self._peer_by_name(u)) for u in (old, new) if u):
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
        if self._allows(inst, _names_of(sender), RECEIVE_BROADCASTS, msg.path, msg.interface, msg.member):
            return True
        return self._note(inst, _observe("broadcast", receiver, sender.unique_name, sender, msg))

    @staticmethod
    def _global_change_of_scoped(receiver, msg) -> bool:
        """A NameOwnerChanged of a name receiver's instance scopes: it is
        about the global owner, which that instance does not see under the
        name (manager.py announces the creator's leaving to it instead)."""
        try:
            name = msg.body()[0]
        except (ValueError, IndexError):
            return True
        return name in receiver.container.scoped

    # -- driver checks ----------------------------------------------------------

    def check_own(self, peer, name: str) -> None:
        if _mediated(peer) and not self._allows(peer.container, (name,), OWN_BUS_NAME, check_object=False):
            err = self._deny(peer, Observation("own", peer.unique_name, name, (), None, None, None),
                             f"own the name {name}")
            if err is not None:
                raise err

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

    def on_instance_removed(self, inst) -> None:
        self.grants.pop(inst.path, None)
