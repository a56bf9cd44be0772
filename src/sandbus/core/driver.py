"""The bus driver: org.freedesktop.DBus and its companion interfaces,
answering as dbus-daemon 1.14 does (same error names and texts)."""

import logging

from ..wire.marshal import MarshalError, Variant
from ..wire.message import ERROR, METHOD_CALL, METHOD_RETURN, NO_AUTO_START, NO_REPLY_EXPECTED, build_message
from ..wire.names import is_valid_bus_name
from . import errors
from .errors import DBusError
from .introspect import driver_introspection
from .match import MatchRule
from .monitors import NOT_ACTIVE_YET
from .peer import Credentials

log = logging.getLogger("sandbus.driver")

DRIVER_NAME = "org.freedesktop.DBus"
IFACE_DBUS = "org.freedesktop.DBus"
IFACE_PROPERTIES = "org.freedesktop.DBus.Properties"
IFACE_INTROSPECTABLE = "org.freedesktop.DBus.Introspectable"
IFACE_PEER = "org.freedesktop.DBus.Peer"
IFACE_MONITORING = "org.freedesktop.DBus.Monitoring"
IFACE_STATS = "org.freedesktop.DBus.Debug.Stats"
DRIVER_PATH = "/org/freedesktop/DBus"

# Interfaces answered on any object path (as dbus-daemon does); the others,
# Properties included, only on /org/freedesktop/DBus.
_ANY_PATH = {IFACE_DBUS, IFACE_INTROSPECTABLE, IFACE_PEER}

FEATURES = ["ActivatableServicesChanged", "HeaderFiltering"]

# What a mediator checks on a driver method's first argument before it runs
# (DriverMethod.access): the caller may own the name, or talk to it.
OWN = "own"
TALK = "talk"


def missing_name_error(msg) -> DBusError:
    """dbus-daemon's answer to a message for a name nobody owns (once
    activation is ruled out); hidden names must get exactly this too."""
    dest = msg.destination
    if not msg.flags & NO_AUTO_START:
        return errors.service_unknown(dest)
    return DBusError(errors.NAME_HAS_NO_OWNER, f'Name "{dest}" does not exist')


class DriverMethod:
    """One row of the driver's method table."""

    __slots__ = ("interface", "member", "in_sig", "out_sig", "handler", "needs_hello", "privileged",
                 "owner_only", "filtered", "access", "canonical_only")

    def __init__(self, interface, member, in_sig, out_sig, handler, *, needs_hello=True, privileged=False,
                 owner_only=False, filtered=False, access=None, canonical_only=False):
        self.interface = interface
        self.member = member
        self.in_sig = in_sig
        self.out_sig = out_sig
        self.handler = handler  # fn(driver, call, *args) -> values | Reply | DEFERRED
        self.needs_hello = needs_hello  # False for Hello alone
        self.privileged = privileged  # never from inside a container
        self.owner_only = owner_only  # only the bus owner's uid or root
        self.filtered = filtered  # a contained caller sees only the names its rules show it
        self.access = access  # OWN / TALK: what the caller needs on the name in argument 0
        # only at /org/freedesktop/DBus, though its interface is on every path
        self.canonical_only = canonical_only

    def __repr__(self) -> str:
        return f"<DriverMethod {self.interface}.{self.member}>"


class Call:
    """One driver call being answered: who, what, and which names the
    caller may see (None: all of them)."""

    __slots__ = ("peer", "msg", "view")

    def __init__(self, peer, msg, view):
        self.peer = peer
        self.msg = msg
        self.view = view


class Reply:
    """A handler's answer when something must happen after the reply is sent."""

    __slots__ = ("values", "after", "fds")

    def __init__(self, values=(), after=None, fds=()):
        self.values = values
        self.after = after
        self.fds = fds


# A handler's answer when it will send the reply itself later (activation).
DEFERRED = object()


def _no_such_name(what: str, name: str) -> DBusError:
    return DBusError(errors.NAME_HAS_NO_OWNER, f"Could not get {what} of name '{name}': no such name")


class Driver:
    def __init__(self, bus):
        self.bus = bus
        self.activation_environment = {}
        self.reload_config = None  # set by the daemon: () -> None, raises on failure
        self.interfaces = [IFACE_MONITORING, IFACE_STATS]
        self.properties = {IFACE_DBUS: self._bus_properties}  # interface -> () -> {name: Variant}
        self.methods = {}  # (interface, member) -> DriverMethod
        self._by_member = {}  # member -> DriverMethod, for calls without an interface
        self.add_methods(METHODS)

    def add_methods(self, rows, interface=None, properties=None) -> None:
        """Add rows to the table (another layer's interface: containers)."""
        for row in rows:
            self.methods[(row.interface, row.member)] = row
        if interface is not None and interface not in self.interfaces:
            self.interfaces.append(interface)
        if properties is not None:
            self.properties[interface] = properties
        # A call without an interface goes to the first interface that has
        # the member, in the order the interfaces were added.
        self._by_member = {}
        for row in self.methods.values():
            self._by_member.setdefault(row.member, row)

    # -- dispatch --------------------------------------------------------------

    def handle_unregistered(self, peer, msg) -> None:
        """Before Hello only Hello is answered (dbus-daemon's error otherwise,
        addressed to its placeholder name); a message for anyone but the bus
        closes the connection (bus/dispatch.c).  Monitors see each, under
        the sender ":not.active.yet"; the Hello itself under the name it
        gets (_hello)."""
        bus = self.bus
        if msg.destination != DRIVER_NAME:
            if bus.monitors:
                bus.monitors.copy(peer, msg, None)
            bus.kick(peer, "it sent a message to another connection before Hello")
            return
        row = self._find(msg.interface, msg.member) if msg.type == METHOD_CALL else None
        hello = row is not None and not row.needs_hello
        if bus.monitors and not (hello and msg.signature == row.in_sig):
            bus.monitors.copy(peer, msg, None)
        if hello:
            if self.handle(peer, msg) and bus.eavesdrop_rules and peer.unique_name is not None:
                bus._copy_to_eavesdroppers(peer, msg, bus.driver_peer)
            return
        bus._send_error(peer, NOT_ACTIVE_YET, msg.serial, errors.ACCESS_DENIED,
                        "Client tried to send a message other than Hello without being registered")

    def answer_locally(self, peer, msg) -> None:
        """A message with no destination that is not a signal, or that is on
        the Peer interface: dbus-daemon leaves these to libdbus on the
        connection (dbus/dbus-connection.c), which answers Peer's Ping and
        GetMachineId, bounces any other Peer message and any other method
        call with UnknownMethod, and ignores the rest; its answers carry
        neither sender nor destination, and monitors never see them."""
        iface = msg.interface
        if iface == IFACE_PEER:
            if msg.type == METHOD_CALL and msg.member == "Ping":
                self._send_local(peer, METHOD_RETURN, msg.serial, "", ())
            elif msg.type == METHOD_CALL and msg.member == "GetMachineId":
                self._send_local(peer, METHOD_RETURN, msg.serial, "s", _get_machine_id(self, Call(peer, msg, None)))
            else:
                self._send_local(peer, ERROR, msg.serial, "s",
                                 ("Unknown method invoked on org.freedesktop.DBus.Peer interface",),
                                 errors.UNKNOWN_METHOD)
        elif msg.type == METHOD_CALL:
            text = (f'Method "{msg.member}" with signature "{msg.signature}" on interface '
                    f'"{iface if iface is not None else "(null)"}" doesn\'t exist\n')
            self._send_local(peer, ERROR, msg.serial, "s", (text,), errors.UNKNOWN_METHOD)

    def _send_local(self, peer, mtype, reply_serial, sig, values, error_name=None) -> None:
        bus = self.bus
        data = build_message(mtype, bus.next_serial(), flags=NO_REPLY_EXPECTED, reply_serial=reply_serial,
                             error_name=error_name, signature=sig, body=values)
        if not peer.closed and not bus._queue_full(peer, mtype):
            peer.sink.send(data, ())

    def _find(self, iface, member):
        if iface is None:
            return self._by_member.get(member)
        return self.methods.get((iface, member))

    def handle(self, peer, msg) -> bool:
        """True unless msg was answered with an error: only then does
        dbus-daemon go on to match it against eavesdroppers' rules
        (bus/dispatch.c skips bus_dispatch_matches on an error)."""
        if msg.type != METHOD_CALL:
            # signals and replies to the bus are dropped, as dbus-daemon does,
            # except systemd's answer to an activation request (activation)
            if msg.member == "ActivationFailure" and msg.interface == "org.freedesktop.systemd1.Activator" \
                    and self.bus.settings.activation is not None:
                self.bus.settings.activation.systemd_failure(peer, msg)
            return True
        bus = self.bus
        member = msg.member
        try:
            try:
                row, args = self.resolve_call(msg)
            except (MarshalError, ValueError) as e:
                # dbus-daemon validates every body it loads: a malformed one is
                # a protocol violation, not an argument error.
                bus.kick(peer, f"malformed message body: {e}")
                return False
            view = bus.mediation.driver_call(peer, row, msg, args) if peer.restricted else None
            if row.owner_only and not self.is_privileged(peer):
                raise DBusError(errors.ACCESS_DENIED, f"{member} is only allowed for the bus owner or root, "
                                f"and never from inside a container")
            if row.canonical_only and msg.path != DRIVER_PATH:
                raise DBusError(errors.ACCESS_DENIED, f"Method '{member}' is only available at the "
                                f"canonical object path '{DRIVER_PATH}'")
            result = row.handler(self, Call(peer, msg, view), *args)
        except DBusError as e:
            # dbus-daemon answers even calls flagged NO_REPLY_EXPECTED.
            bus.send_error_to(peer, msg.serial, e.name, e.message)
            return False
        if result is DEFERRED:
            return True  # the handler replies later (activation)
        if isinstance(result, Reply):
            values, after, fds = result.values, result.after, result.fds
        else:
            values, after, fds = result, None, ()
        if not peer.closed:
            self.send_reply(peer, msg.serial, row.out_sig, values, fds)
        if after is not None:
            after()
        return True

    def resolve_call(self, msg):
        """(row, args) of the method a call to the bus names: DBusError for
        one the driver answers with an error, MarshalError or ValueError
        for a malformed body.  Also the proxy back end's (proxy/filter.py),
        which answers as the bus would.  The method and its signature are
        checked before the body is read, and the body is parsed only when
        it is what the method takes: no other body costs more than a
        glance."""
        member = msg.member
        row = self._find(msg.interface, member)
        iface = row.interface if row is not None else msg.interface
        if iface is not None and not self._interface_here(iface, msg.path):
            if msg.interface is None:
                row = None  # dbus-daemon looks for the member only where it is here
            else:
                raise DBusError(errors.UNKNOWN_INTERFACE, f"{DRIVER_NAME} does not understand message {member}")
        if row is None:
            raise DBusError(errors.UNKNOWN_METHOD, f"{DRIVER_NAME} does not understand message {member}")
        if msg.signature != row.in_sig:
            raise DBusError(errors.INVALID_ARGS,
                            f"Call to {member} has wrong args ({msg.signature}, expected {row.in_sig})")
        return row, (msg.body() if row.in_sig else ())

    def _interface_here(self, iface: str, path: str) -> bool:
        if iface in _ANY_PATH:
            return True
        return path == DRIVER_PATH and (iface == IFACE_PROPERTIES or iface in self.interfaces)

    def send_reply(self, peer, reply_serial: int, sig: str, values, fds=()) -> None:
        data = build_message(METHOD_RETURN, self.bus.next_serial(), flags=NO_REPLY_EXPECTED, reply_serial=reply_serial,
                             destination=peer.unique_name, sender=DRIVER_NAME,
                             signature=sig, body=values, unix_fds=len(fds))
        self.bus.send_bus_message(peer, data, fds)

    def deliver_to_missing(self, sender, msg, capture: bool = False) -> None:
        """A message to a name nobody owns (or one the sender may not see):
        activate, or answer as dbus-daemon does (whatever the message's type
        and NO_REPLY_EXPECTED flag).  capture: monitors have not seen msg
        yet; they see it after what activation sent (systemd's
        ActivationRequest, which dbus-daemon sends in a transaction of its
        own, bus/activation.c) and before any error about it."""
        bus = self.bus
        activation = bus.settings.activation
        dest = msg.destination
        monitors = bus.monitors if capture else None
        # any message may start its destination, signals too (dbus-daemon's
        # bus/dispatch.c looks only at the NO_AUTO_START flag)
        if not msg.flags & NO_AUTO_START:
            if activation is not None and dest[0] != ":" and activation.can_activate(dest):
                verdict = bus.mediation.unicast(sender, None, msg, False) if sender.restricted else None
                if verdict is None:
                    try:
                        activation.activate_for_message(sender, msg)
                    except DBusError as e:
                        if monitors:
                            monitors.copy(sender, msg, None)
                        bus.send_error_to(sender, msg.serial, e.name, e.message)
                        return
                    if monitors:
                        monitors.copy(sender, msg, None)
                    return
                if verdict.error is not None:
                    if monitors:
                        monitors.copy(sender, msg, None)
                    bus.send_error_to(sender, msg.serial, verdict.error.name, verdict.error.message)
                    return
        if monitors:
            monitors.copy(sender, msg, None)
        e = missing_name_error(msg)
        bus.send_error_to(sender, msg.serial, e.name, e.message)

    # -- helpers ---------------------------------------------------------------

    def lookup(self, name: str, view=None):
        """The peer owning name (unique or well-known), or None: also when
        view, the caller's view of names, hides it.  The one place where
        "hidden" becomes "missing" for every driver method."""
        bus = self.bus
        owner = bus.peers.get(name) if name.startswith(":") else bus.registry.owner(name)
        if view is not None:
            if not name.startswith(":"):
                owner = view.owner(name, owner)  # as routing resolves it (Bus.route)
            if not view.sees(name, owner):
                return None
        return owner

    def visible_names(self, names, view):
        """names without those view hides (a listing: nothing is logged)."""
        if view is None:
            return names
        return [n for n in names if n == DRIVER_NAME or view.lists(n)]

    def is_privileged(self, peer) -> bool:
        uid = peer.creds.uid
        return uid == 0 or uid == self.bus.settings.bus_uid

    def credentials_of(self, name: str, what: str, view=None):
        if name == DRIVER_NAME:
            settings = self.bus.settings
            return Credentials(uid=settings.bus_uid, pid=settings.bus_pid)
        peer = self.lookup(name, view)
        if peer is None:
            raise _no_such_name(what, name)
        return peer.creds

    def _bus_properties(self) -> dict:
        features = list(FEATURES)
        activation = self.bus.settings.activation
        if activation is not None and activation.systemd_activation:
            features.append("SystemdActivation")
        return {"Features": Variant("as", features),
                "Interfaces": Variant("as", list(self.interfaces))}


# -- org.freedesktop.DBus ---------------------------------------------------------

def _check_connection_limits(bus, peer) -> None:
    """dbus-daemon checks the connection limits when a connection asks to
    complete (Hello), counting only completed ones, and answers
    LimitsExceeded: the connection stays and may try its Hello again."""
    limits = bus.limits
    completed = len(bus.peers)
    if completed >= limits.max_completed_connections:
        raise DBusError(errors.LIMITS_EXCEEDED, "The maximum number of active connections has been reached")
    uid = peer.creds.uid
    if uid is not None and completed >= limits.max_connections_per_user and sum(
            1 for p in bus.peers.values() if p.creds.uid == uid) >= limits.max_connections_per_user:
        raise DBusError(errors.LIMITS_EXCEEDED,
                        f"The maximum number of active connections for UID {uid} has been reached")


def _hello(driver, call):
    peer = call.peer
    if peer.unique_name is not None:
        raise DBusError(errors.FAILED, "Already handled an Hello message")
    bus = driver.bus
    try:
        _check_connection_limits(bus, peer)
    except DBusError:
        if bus.monitors:
            bus.monitors.copy(peer, call.msg, None)
        raise
    name = bus.new_unique_name()
    peer.register(name)
    bus.peers[name] = peer
    if bus.monitors:
        # dbus-daemon stamps the Hello with the name it hands out before
        # monitors get their copy (bus/driver.c: bus_driver_handle_hello)
        bus.monitors.copy(peer, call.msg, None)
    return Reply((name,), after=lambda: _announce_hello(bus, peer, name))


def _announce_hello(bus, peer, name) -> None:
    bus.emit_name_owner_changed(name, "", name)
    bus.emit_signal("NameAcquired", "s", (name,), destination=peer)


def _request_name(driver, call, name, flags):
    bus = driver.bus
    peer = call.peer
    if not is_valid_bus_name(name):
        raise DBusError(errors.INVALID_ARGS, f'Requested bus name "{name}" is not valid')
    if name.startswith(":"):
        raise DBusError(errors.INVALID_ARGS, f'Cannot acquire a service starting with \':\' such as "{name}"')
    if name == DRIVER_NAME:
        raise DBusError(errors.INVALID_ARGS, f'Connection "{peer.unique_name}" is not allowed to own the '
                        f'service "{DRIVER_NAME}"because it is reserved for D-Bus\' use only')
    # The XML policy's own rules are checked after the name's syntax, as in
    # dbus-daemon (the containers' OWN rule is checked before anything).
    if peer.policy is not None and not peer.policy.can_own(name):
        raise DBusError(errors.ACCESS_DENIED, f'Connection "{peer.unique_name}" is not allowed to own the '
                        f'service "{name}" due to security policies in the configuration file')
    # the unique name counts too, as in dbus-daemon
    if name not in peer.names and \
            1 + bus.registry.queued_names_count(peer) >= bus.limits.max_names_per_connection:
        raise DBusError(errors.LIMITS_EXCEEDED, f'Connection "{peer.unique_name}" is not allowed to own '
                        f'more services (increase limits in configuration file if required; '
                        f'max_names_per_connection={bus.limits.max_names_per_connection})')
    code, changes = bus.registry.request(peer, name, flags)
    for change in changes:
        bus.announce(change)
    return (code,)


def _release_name(driver, call, name):
    bus = driver.bus
    if not is_valid_bus_name(name):
        raise DBusError(errors.INVALID_ARGS, f'Given bus name "{name}" is not valid')
    if name.startswith(":"):
        raise DBusError(errors.INVALID_ARGS, f'Cannot release a service starting with \':\' such as "{name}"')
    if name == DRIVER_NAME:
        raise DBusError(errors.INVALID_ARGS,
                        f"Cannot release the {DRIVER_NAME} service because it is owned by the bus")
    code, changes = bus.registry.release(call.peer, name)
    for change in changes:
        bus.announce(change)
    return (code,)


def _start_service_by_name(driver, call, name, flags):
    # As dbus-daemon's bus_activation_activate_service: the pending-start
    # limit, then the .service file, and only then whether the name has an
    # owner (an owned name without a .service file is ServiceUnknown).
    activation = driver.bus.settings.activation
    if activation is None:
        raise errors.service_unknown(name)
    activation.check_limit(name)
    if not activation.can_activate(name):
        raise errors.service_unknown(name)
    if driver.lookup(name, call.view) is not None:
        return (2,)  # DBUS_START_REPLY_ALREADY_RUNNING
    activation.start_by_name(call.peer, call.msg, name)
    return DEFERRED


def _update_activation_environment(driver, call, env):
    driver.activation_environment.update(env)
    activation = driver.bus.settings.activation
    if activation is not None:
        activation.forward_environment(env)  # even an empty update, as dbus-daemon
    return ()


def _name_has_owner(driver, call, name):
    if name == DRIVER_NAME:
        return (True,)
    return (driver.lookup(name, call.view) is not None,)


def _list_names(driver, call):
    bus = driver.bus
    result = [DRIVER_NAME]
    result.extend(bus.registry.names())
    result.extend(bus.peers)
    return (driver.visible_names(result, call.view),)


def _list_activatable_names(driver, call):
    bus = driver.bus
    result = [DRIVER_NAME]
    if bus.settings.activation is not None:
        result.extend(bus.settings.activation.names())
    return (driver.visible_names(result, call.view),)


def _add_match(driver, call, text):
    # as dbus-daemon's bus_driver_handle_add_match: the limit, the rule's
    # syntax, then who may eavesdrop
    bus = driver.bus
    peer = call.peer
    if len(peer.rules) >= bus.limits.max_match_rules_per_connection:
        raise DBusError(errors.LIMITS_EXCEEDED, "Connection \"%s\" is not allowed to add more match rules "
                        "(increase limits in configuration file if required; "
                        "max_match_rules_per_connection=%d)" % (peer.unique_name,
                                                                bus.limits.max_match_rules_per_connection))
    rule = MatchRule(text, owner=peer)
    if rule.eavesdrop and not driver.is_privileged(peer):
        # only the bus's own uid and root may eavesdrop, as with
        # BecomeMonitor (dbus 1.11.14 and later; whatever the XML policy says)
        creds = peer.creds
        raise DBusError(errors.ACCESS_DENIED, f"rejected attempt to call AddMatch by connection {peer.unique_name} "
                        f"(uid={creds.uid} pid={creds.pid}) with uid {creds.uid}")
    bus.add_rule(peer, rule)
    return ()


def _remove_match(driver, call, text):
    peer = call.peer
    wanted = MatchRule(text).key
    for rule in reversed(peer.rules):
        if rule.key == wanted:
            driver.bus.remove_rule(peer, rule)
            return ()
    raise DBusError(errors.MATCH_RULE_NOT_FOUND, "The given match rule wasn't found and can't be removed")


def _get_name_owner(driver, call, name):
    if name == DRIVER_NAME:
        return (DRIVER_NAME,)
    owner = driver.lookup(name, call.view)
    if owner is None:
        raise _no_such_name("owner", name)
    return (owner.unique_name,)


def _list_queued_owners(driver, call, name):
    bus = driver.bus
    if name == DRIVER_NAME:
        return ([DRIVER_NAME],)
    if name.startswith(":"):
        if driver.lookup(name, call.view) is not None:
            return ([name],)
        raise _no_such_name("owners", name)
    queue = bus.registry.queue(name)
    view = call.view
    if view is not None:
        # each queued owner is a peer the caller may or may not see
        queue = [p for p in queue if view.lists(p.unique_name)]
    if not queue:
        raise _no_such_name("owners", name)
    return ([p.unique_name for p in queue],)


def credentials_dict(creds) -> dict:
    """GetConnectionCredentials' a{sv} for what the kernel told us (no fds)."""
    result = {}
    if creds.pid is not None:
        result["ProcessID"] = Variant("u", creds.pid)
    if creds.uid is not None:
        result["UnixUserID"] = Variant("u", creds.uid)
    if creds.gids is not None:
        result["UnixGroupIDs"] = Variant("au", list(creds.gids))
    if creds.security_label:
        result["LinuxSecurityLabel"] = Variant("ay", creds.security_label + b"\0")
    return result


def _get_unix_user(driver, call, name):
    creds = driver.credentials_of(name, "UID", call.view)
    if creds.uid is None:
        raise DBusError(errors.FAILED, f"Could not determine UID for '{name}'")
    return (creds.uid,)


def _get_unix_pid(driver, call, name):
    creds = driver.credentials_of(name, "PID", call.view)
    if creds.pid is None:
        raise DBusError(errors.UNIX_PROCESS_ID_UNKNOWN, f"Could not determine PID for '{name}'")
    return (creds.pid,)


def _get_adt(driver, call, name):
    driver.credentials_of(name, "audit session data", call.view)
    raise DBusError(errors.ADT_AUDIT_DATA_UNKNOWN, f"Could not determine audit session data for '{name}'")


def _get_selinux(driver, call, name):
    driver.credentials_of(name, "security context", call.view)
    raise DBusError(errors.SELINUX_CONTEXT_UNKNOWN, f"Could not determine security context for '{name}'")


def _get_credentials(driver, call, name):
    peer = call.peer
    creds = driver.credentials_of(name, "credentials", call.view)
    result = credentials_dict(creds)
    fds = ()
    target = driver.lookup(name, call.view) if name != DRIVER_NAME else None
    after = None
    # A contained caller gets no handle on a process outside its own
    # instance: a pidfd would let it signal or inspect that process
    # (docs/containers.md); the ProcessID stays, as the kernel tells anyone.
    if target is not None and peer.unix_fds and (peer.container is None or target.container is peer.container):
        # the io layer's sink fetches a fresh pidfd on demand
        get_pidfd = getattr(target.sink, "pidfd", None)
        pidfd = get_pidfd() if get_pidfd is not None else None
        if pidfd is not None:
            result["ProcessFD"] = Variant("h", 0)
            fds = (pidfd,)
            after = lambda: driver.bus.release_fds(fds)  # the sink sent its own copy
    if target is not None and target.extra_credentials:
        result.update(target.extra_credentials)
    return Reply((result,), fds=fds, after=after)


def _reload_config(driver, call):
    if driver.reload_config is not None:
        try:
            driver.reload_config()
        except Exception as e:  # a broken file keeps the old configuration
            raise DBusError(errors.FAILED, f"Failed to reload configuration: {e}")
    return ()


def _get_id(driver, call):
    return (driver.bus.settings.guid,)


# -- org.freedesktop.DBus.Properties ---------------------------------------------

def _properties(driver, iface):
    props = driver.properties.get(iface)
    if props is not None:
        return props()
    # an interface of the bus without properties has none, it is not unknown
    if iface in _ANY_PATH or iface == IFACE_PROPERTIES or iface in driver.interfaces:
        return {}
    return None


def _prop_get(driver, call, iface, prop):
    props = _properties(driver, iface)
    if props is None:
        raise DBusError(errors.UNKNOWN_INTERFACE, f'Interface "{iface}" not found')
    if prop not in props:
        raise DBusError(errors.UNKNOWN_PROPERTY, f'Property "{iface}.{prop}" not found')
    return (props[prop],)


def _prop_get_all(driver, call, iface):
    props = _properties(driver, iface)
    if props is None:
        raise DBusError(errors.UNKNOWN_INTERFACE, f'Interface "{iface}" not found')
    return (props,)


def _prop_set(driver, call, iface, prop, value):
    props = _properties(driver, iface)
    if props is None:
        raise DBusError(errors.UNKNOWN_INTERFACE, f'Interface "{iface}" not found')
    if prop not in props:
        raise DBusError(errors.UNKNOWN_PROPERTY, f'Property "{iface}.{prop}" not found')
    raise DBusError(errors.PROPERTY_READ_ONLY, f"Property '{iface}.{prop}' cannot be set")


# -- Introspectable, Peer ----------------------------------------------------------

def _introspect(driver, call):
    return (driver_introspection(driver.interfaces, call.msg.path),)


def _ping(driver, call):
    return ()


def _get_machine_id(driver, call):
    override = call.peer.machine_id
    return (override if override is not None else driver.bus.settings.machine_id,)


# -- Monitoring ----------------------------------------------------------------------

def _become_monitor(driver, call, rules, flags):
    if flags != 0:
        raise DBusError(errors.INVALID_ARGS, "BecomeMonitor does not support any flags yet")
    peer = call.peer
    parsed = [MatchRule(text, owner=peer) for text in rules]
    return Reply((), after=lambda: driver.bus.monitors.add(peer, parsed))


# -- Debug.Stats ---------------------------------------------------------------------

def _get_stats(driver, call):
    bus = driver.bus
    return ({
        "Serial": Variant("u", bus._serial),
        "ActiveConnections": Variant("u", len(bus.peers)),
        "IncompleteConnections": Variant("u", len(bus.connections) - len(bus.peers) - len(bus.monitors)),
        "MatchRules": Variant("u", bus.matches.count),
        "BusNames": Variant("u", len(bus.registry.names()) + len(bus.peers)),
        # sandbus's own: what its mediators refused (core/mediation.py)
        "Denials": Variant("u", bus.mediation.denials.total),
        "DenialsLastMinute": Variant("u", bus.mediation.denials.count()),
    },)


def _get_connection_stats(driver, call, name):
    target = driver.lookup(name)
    if target is None:
        raise _no_such_name("statistics", name)
    return ({
        "UniqueName": Variant("s", target.unique_name),
        "MatchRules": Variant("u", len(target.rules)),
        "OwnedNames": Variant("u", len(target.names)),
        "IncomingFDs": Variant("u", len(target.incoming_fds)),
        "OutgoingBytes": Variant("u", target.sink.queued_bytes),
        "PendingReplies": Variant("u", target.pending_calls),
        "DenialsLastMinute": Variant("u", driver.bus.mediation.denials.count(target.unique_name)),
    },)


def _get_all_match_rules(driver, call):
    # in dbus-daemon's spelling, which clients compare (core/match.py)
    return ({p.unique_name: [r.canonical() for r in p.rules] for p in driver.bus.peers.values()},)


# -- the table -------------------------------------------------------------------------

_M = DriverMethod
METHODS = (
    # the order of interfaces decides where a call without an interface goes
    _M(IFACE_DBUS, "Hello", "", "s", _hello, needs_hello=False),
    _M(IFACE_DBUS, "RequestName", "su", "u", _request_name, access=OWN),
    _M(IFACE_DBUS, "ReleaseName", "s", "u", _release_name, access=OWN),
    _M(IFACE_DBUS, "StartServiceByName", "su", "u", _start_service_by_name, filtered=True, access=TALK),
    _M(IFACE_DBUS, "UpdateActivationEnvironment", "a{ss}", "", _update_activation_environment,
       privileged=True, owner_only=True, canonical_only=True),
    _M(IFACE_DBUS, "NameHasOwner", "s", "b", _name_has_owner, filtered=True),
    _M(IFACE_DBUS, "ListNames", "", "as", _list_names, filtered=True),
    _M(IFACE_DBUS, "ListActivatableNames", "", "as", _list_activatable_names, filtered=True),
    _M(IFACE_DBUS, "AddMatch", "s", "", _add_match),
    _M(IFACE_DBUS, "RemoveMatch", "s", "", _remove_match),
    _M(IFACE_DBUS, "GetNameOwner", "s", "s", _get_name_owner, filtered=True),
    _M(IFACE_DBUS, "ListQueuedOwners", "s", "as", _list_queued_owners, filtered=True, access=OWN),
    _M(IFACE_DBUS, "GetConnectionUnixUser", "s", "u", _get_unix_user, filtered=True),
    _M(IFACE_DBUS, "GetConnectionUnixProcessID", "s", "u", _get_unix_pid, filtered=True),
    _M(IFACE_DBUS, "GetAdtAuditSessionData", "s", "ay", _get_adt, filtered=True),
    _M(IFACE_DBUS, "GetConnectionSELinuxSecurityContext", "s", "ay", _get_selinux, filtered=True),
    _M(IFACE_DBUS, "GetConnectionCredentials", "s", "a{sv}", _get_credentials, filtered=True),
    _M(IFACE_DBUS, "ReloadConfig", "", "", _reload_config, privileged=True),
    _M(IFACE_DBUS, "GetId", "", "s", _get_id),
    _M(IFACE_PROPERTIES, "Get", "ss", "v", _prop_get),
    _M(IFACE_PROPERTIES, "GetAll", "s", "a{sv}", _prop_get_all),
    _M(IFACE_PROPERTIES, "Set", "ssv", "", _prop_set),
    _M(IFACE_INTROSPECTABLE, "Introspect", "", "s", _introspect),
    _M(IFACE_PEER, "Ping", "", "", _ping),
    _M(IFACE_PEER, "GetMachineId", "", "s", _get_machine_id),
    _M(IFACE_MONITORING, "BecomeMonitor", "asu", "", _become_monitor, privileged=True, owner_only=True),
    _M(IFACE_STATS, "GetStats", "", "a{sv}", _get_stats, privileged=True, owner_only=True),
    _M(IFACE_STATS, "GetConnectionStats", "s", "a{sv}", _get_connection_stats, privileged=True, owner_only=True),
    _M(IFACE_STATS, "GetAllMatchRules", "", "a{sas}", _get_all_match_rules, privileged=True, owner_only=True),
)
