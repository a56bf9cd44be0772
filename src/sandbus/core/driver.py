"""The bus driver: org.freedesktop.DBus and its companion interfaces,
answering as dbus-daemon 1.14 does (same error names and texts)."""

import logging

from ..wire.marshal import MarshalError, Variant
from ..wire.message import METHOD_CALL, METHOD_RETURN, NO_AUTO_START, NO_REPLY_EXPECTED, build_message
from ..wire.names import is_valid_bus_name
from . import errors
from .errors import DBusError
from .introspect import driver_introspection
from .match import MatchRule

log = logging.getLogger("sandbus.driver")

DRIVER_NAME = "org.freedesktop.DBus"
IFACE_DBUS = "org.freedesktop.DBus"
IFACE_PROPERTIES = "org.freedesktop.DBus.Properties"
IFACE_INTROSPECTABLE = "org.freedesktop.DBus.Introspectable"
IFACE_PEER = "org.freedesktop.DBus.Peer"
IFACE_MONITORING = "org.freedesktop.DBus.Monitoring"
IFACE_STATS = "org.freedesktop.DBus.Debug.Stats"
IFACE_CONTAINERS = "org.freedesktop.DBus.Containers1"

# Interfaces answered on any object path (as dbus-daemon does); the others
# only on /org/freedesktop/DBus.
_ANY_PATH = {IFACE_DBUS, IFACE_PROPERTIES, IFACE_INTROSPECTABLE, IFACE_PEER}

FEATURES = ["ActivatableServicesChanged", "HeaderFiltering"]


def missing_name_error(msg) -> DBusError:
    """dbus-daemon's answer to a message for a name nobody owns (once
    activation is ruled out); hidden names must get exactly this too."""
    dest = msg.destination
    if not msg.flags & NO_AUTO_START:
        return errors.service_unknown(dest)
    return DBusError(errors.NAME_HAS_NO_OWNER, f'Name "{dest}" does not exist')


class Reply:
    """A handler's answer when something must happen after the reply is sent."""

    __slots__ = ("values", "after", "fds")

    def __init__(self, values=(), after=None, fds=()):
        self.values = values
        self.after = after
        self.fds = fds


# A handler's answer when it will send the reply itself later (activation).
DEFERRED = object()

_METHODS = {}


def method(interface: str, name: str, in_sig: str, out_sig: str):
    def register(fn):
        _METHODS[(interface, name)] = (in_sig, out_sig, fn)
        return fn
    return register


def _no_such_name(what: str, name: str) -> DBusError:
    return DBusError(errors.NAME_HAS_NO_OWNER, f"Could not get {what} of name '{name}': no such name")


class Driver:
    def __init__(self, bus):
        self.bus = bus
        self.activation_environment = {}
        self.reload_config = None  # set by the daemon: () -> None, raises on failure
        self.interfaces = [IFACE_MONITORING, IFACE_STATS, IFACE_CONTAINERS]
        self._by_member = {}
        for (iface, member), entry in _METHODS.items():
            self._by_member.setdefault(member, (iface, entry))

    # -- dispatch --------------------------------------------------------------

    def handle(self, peer, msg) -> None:
        if msg.type != METHOD_CALL:
            # signals and replies to the bus are dropped, as dbus-daemon does,
            # except systemd's answer to an activation request (activation)
            if msg.member == "ActivationFailure" and msg.interface == "org.freedesktop.systemd1.Activator" \
                    and self.bus.settings.activation is not None:
                self.bus.settings.activation.systemd_failure(peer, msg)
            return
        bus = self.bus
        try:
            # dbus-daemon validates every body it loads: a malformed one is
            # a protocol violation, not an argument error.
            args = msg.body()
        except (MarshalError, ValueError) as e:
            bus.kick(peer, f"malformed message body: {e}")
            return
        member = msg.member
        iface = msg.interface
        if iface is None:
            found = self._by_member.get(member)
            entry = found[1] if found else None
            iface = found[0] if found else None
        else:
            entry = _METHODS.get((iface, member))
        try:
            if iface is not None and not self._interface_here(iface, msg.path):
                raise DBusError(errors.UNKNOWN_INTERFACE, f"{DRIVER_NAME} does not understand message {member}")
            if entry is None:
                raise DBusError(errors.UNKNOWN_METHOD, f"{DRIVER_NAME} does not understand message {member}")
            in_sig, out_sig, fn = entry
            if msg.signature != in_sig:
                raise DBusError(errors.INVALID_ARGS,
                                f"Call to {member} has wrong args ({msg.signature}, expected {in_sig})")
            if peer.container is not None:
                bus.containers.check_driver_call(peer, iface, member, args)
            result = fn(self, peer, msg, *args)
        except DBusError as e:
            # dbus-daemon answers even calls flagged NO_REPLY_EXPECTED.
            bus.send_error_to(peer, msg.serial, e.name, e.message)
            return
        if result is DEFERRED:
            return  # the handler replies later (activation)
        if isinstance(result, Reply):
            values, after, fds = result.values, result.after, result.fds
        else:
            values, after, fds = result, None, ()
        if not peer.closed:
            self.send_reply(peer, msg.serial, out_sig, values, fds)
        if after is not None:
            after()

    def _interface_here(self, iface: str, path: str) -> bool:
        if iface in _ANY_PATH:
            return True
        return iface in self.interfaces and path == "/org/freedesktop/DBus"

    def _interface_enabled(self, iface: str) -> bool:
        return iface in _ANY_PATH or iface in self.interfaces

    def send_reply(self, peer, reply_serial: int, sig: str, values, fds=()) -> None:
        data = build_message(METHOD_RETURN, self.bus.next_serial(), flags=NO_REPLY_EXPECTED, reply_serial=reply_serial,
                             destination=peer.unique_name, sender=DRIVER_NAME,
                             signature=sig, body=values, unix_fds=len(fds))
        self.bus.send_bus_message(peer, data, fds)

    def hello(self, peer, msg) -> None:
        bus = self.bus
        name = bus.new_unique_name()
        peer.register(name)
        bus.peers[name] = peer
        self.send_reply(peer, msg.serial, "s", (name,))
        bus.emit_name_owner_changed(name, "", name)
        bus.emit_signal("NameAcquired", "s", (name,), destination=peer)

    def deliver_to_missing(self, sender, msg) -> None:
        """A message to a name nobody owns: activate, or answer as dbus-daemon
        does (whatever the message's type and NO_REPLY_EXPECTED flag)."""
        bus = self.bus
        activation = bus.settings.activation
        dest = msg.destination
        if msg.type == METHOD_CALL and not msg.flags & NO_AUTO_START:
            if activation is not None and dest[0] != ":" and activation.can_activate(dest) \
                    and bus.containers.access.may_activate(sender, dest):
                activation.activate_for_message(sender, msg)
                return
        e = missing_name_error(msg)
        bus.send_error_to(sender, msg.serial, e.name, e.message)

    def on_disconnect(self, peer) -> None:
        pass

    # -- helpers ---------------------------------------------------------------

    def lookup(self, name: str):
        """The peer owning name (unique or well-known), or None."""
        bus = self.bus
        if name.startswith(":"):
            return bus.peers.get(name)
        return bus.registry.owner(name)

    def is_privileged(self, peer) -> bool:
        uid = peer.creds.uid
        return uid == 0 or uid == self.bus.settings.bus_uid

    def require_privileged(self, peer, what: str) -> None:
        if peer.container is not None or not self.is_privileged(peer):
            raise DBusError(errors.ACCESS_DENIED, f"{what} is only allowed for the bus owner or root, "
                            f"and never from inside a container")

    def credentials_of(self, name: str, what: str):
        if name == DRIVER_NAME:
            settings = self.bus.settings
            from .peer import Credentials
            return Credentials(uid=settings.bus_uid, pid=settings.bus_pid)
        peer = self.lookup(name)
        if peer is None:
            raise _no_such_name(what, name)
        return peer.creds


# -- org.freedesktop.DBus ---------------------------------------------------------

@method(IFACE_DBUS, "Hello", "", "s")
def _hello_again(driver, peer, msg):
    raise DBusError(errors.FAILED, "Already handled an Hello message")


@method(IFACE_DBUS, "RequestName", "su", "u")
def _request_name(driver, peer, msg, name, flags):
    bus = driver.bus
    bus.containers.check_own(peer, name)
    if not is_valid_bus_name(name):
        raise DBusError(errors.INVALID_ARGS, f'Requested bus name "{name}" is not valid')
    if name.startswith(":"):
        raise DBusError(errors.INVALID_ARGS, f'Cannot acquire a service starting with \':\' such as "{name}"')
    if name == DRIVER_NAME:
        raise DBusError(errors.INVALID_ARGS, f'Connection "{peer.unique_name}" is not allowed to own the '
                        f'service "{DRIVER_NAME}"because it is reserved for D-Bus\' use only')
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


@method(IFACE_DBUS, "ReleaseName", "s", "u")
def _release_name(driver, peer, msg, name):
    bus = driver.bus
    bus.containers.check_own(peer, name)
    if not is_valid_bus_name(name):
        raise DBusError(errors.INVALID_ARGS, f'Given bus name "{name}" is not valid')
    if name.startswith(":"):
        raise DBusError(errors.INVALID_ARGS, f'Cannot release a service starting with \':\' such as "{name}"')
    if name == DRIVER_NAME:
        raise DBusError(errors.INVALID_ARGS,
                        f"Cannot release the {DRIVER_NAME} service because it is owned by the bus")
    code, changes = bus.registry.release(peer, name)
    for change in changes:
        bus.announce(change)
    return (code,)


@method(IFACE_DBUS, "StartServiceByName", "su", "u")
def _start_service_by_name(driver, peer, msg, name, flags):
    bus = driver.bus
    bus.containers.check_start_service(peer, name)
    if name != DRIVER_NAME and driver.lookup(name) is not None:
        return (2,)  # DBUS_START_REPLY_ALREADY_RUNNING
    activation = bus.settings.activation
    if activation is not None and activation.can_activate(name):
        return activation.start_by_name(peer, msg, name)
    raise errors.service_unknown(name)


@method(IFACE_DBUS, "UpdateActivationEnvironment", "a{ss}", "")
def _update_activation_environment(driver, peer, msg, env):
    driver.require_privileged(peer, "UpdateActivationEnvironment")
    driver.activation_environment.update(env)
    return ()


@method(IFACE_DBUS, "NameHasOwner", "s", "b")
def _name_has_owner(driver, peer, msg, name):
    if name == DRIVER_NAME:
        return (True,)
    if not driver.bus.containers.can_see(peer, name):
        return (False,)
    return (driver.lookup(name) is not None,)


@method(IFACE_DBUS, "ListNames", "", "as")
def _list_names(driver, peer, msg):
    bus = driver.bus
    result = [DRIVER_NAME]
    result.extend(bus.registry.names())
    result.extend(bus.peers)
    result = bus.containers.filter_names(peer, result)
    return (result,)


@method(IFACE_DBUS, "ListActivatableNames", "", "as")
def _list_activatable_names(driver, peer, msg):
    bus = driver.bus
    result = [DRIVER_NAME]
    if bus.settings.activation is not None:
        result.extend(bus.settings.activation.names())
    result = bus.containers.filter_names(peer, result)
    return (result,)


@method(IFACE_DBUS, "AddMatch", "s", "")
def _add_match(driver, peer, msg, text):
    bus = driver.bus
    rule = MatchRule(text, owner=peer)
    bus.containers.check_add_match(peer, rule)
    if len(peer.rules) >= bus.limits.max_match_rules_per_connection:
        raise DBusError(errors.LIMITS_EXCEEDED, "Connection \"%s\" is not allowed to add more match rules "
                        "(increase limits in configuration file if required; "
                        "max_match_rules_per_connection=%d)" % (peer.unique_name,
                                                                bus.limits.max_match_rules_per_connection))
    bus.add_rule(peer, rule)
    return ()


@method(IFACE_DBUS, "RemoveMatch", "s", "")
def _remove_match(driver, peer, msg, text):
    wanted = MatchRule(text).key
    for rule in reversed(peer.rules):
        if rule.key == wanted:
            driver.bus.remove_rule(peer, rule)
            return ()
    raise DBusError(errors.MATCH_RULE_NOT_FOUND, "The given match rule wasn't found and can't be removed")


@method(IFACE_DBUS, "GetNameOwner", "s", "s")
def _get_name_owner(driver, peer, msg, name):
    if name == DRIVER_NAME:
        return (DRIVER_NAME,)
    owner = driver.lookup(name)
    hidden = not driver.bus.containers.can_see(peer, name)
    if owner is None or hidden:
        raise _no_such_name("owner", name)
    return (owner.unique_name,)


@method(IFACE_DBUS, "ListQueuedOwners", "s", "as")
def _list_queued_owners(driver, peer, msg, name):
    bus = driver.bus
    bus.containers.check_list_queued(peer, name)
    if name == DRIVER_NAME:
        return ([DRIVER_NAME],)
    if name.startswith(":"):
        if name in bus.peers:
            return ([name],)
        raise _no_such_name("owners", name)
    queue = bus.registry.queue(name)
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


def _visible_creds(driver, peer, name, what):
    if name != DRIVER_NAME \
            and not driver.bus.containers.can_see(peer, name):
        raise _no_such_name(what, name)
    return driver.credentials_of(name, what)


@method(IFACE_DBUS, "GetConnectionUnixUser", "s", "u")
def _get_unix_user(driver, peer, msg, name):
    creds = _visible_creds(driver, peer, name, "UID")
    if creds.uid is None:
        raise DBusError(errors.FAILED, f"Could not determine UID for '{name}'")
    return (creds.uid,)


@method(IFACE_DBUS, "GetConnectionUnixProcessID", "s", "u")
def _get_unix_pid(driver, peer, msg, name):
    creds = _visible_creds(driver, peer, name, "PID")
    if creds.pid is None:
        raise DBusError(errors.UNIX_PROCESS_ID_UNKNOWN, f"Could not determine PID for '{name}'")
    return (creds.pid,)


@method(IFACE_DBUS, "GetAdtAuditSessionData", "s", "ay")
def _get_adt(driver, peer, msg, name):
    _visible_creds(driver, peer, name, "audit session data")
    raise DBusError(errors.ADT_AUDIT_DATA_UNKNOWN, f"Could not determine audit session data for '{name}'")


@method(IFACE_DBUS, "GetConnectionSELinuxSecurityContext", "s", "ay")
def _get_selinux(driver, peer, msg, name):
    _visible_creds(driver, peer, name, "security context")
    raise DBusError(errors.SELINUX_CONTEXT_UNKNOWN, f"Could not determine security context for '{name}'")


@method(IFACE_DBUS, "GetConnectionCredentials", "s", "a{sv}")
def _get_credentials(driver, peer, msg, name):
    creds = _visible_creds(driver, peer, name, "credentials")
    result = credentials_dict(creds)
    fds = ()
    target = driver.lookup(name) if name != DRIVER_NAME else None
    after = None
    if target is not None and peer.unix_fds:
        get_pidfd = getattr(target.sink, "pidfd", None)
        pidfd = get_pidfd() if get_pidfd is not None else None
        if pidfd is not None:
            result["ProcessFD"] = Variant("h", 0)
            fds = (pidfd,)
            after = lambda: driver.bus.release_fds(fds)  # the sink sent its own copy
    if target is not None:
        driver.bus.containers.add_credentials(target, result)
    return Reply((result,), fds=fds, after=after)


@method(IFACE_DBUS, "ReloadConfig", "", "")
def _reload_config(driver, peer, msg):
    if driver.reload_config is not None:
        try:
            driver.reload_config()
        except Exception as e:  # a broken file keeps the old configuration
            raise DBusError(errors.FAILED, f"Failed to reload configuration: {e}")
    return ()


@method(IFACE_DBUS, "GetId", "", "s")
def _get_id(driver, peer, msg):
    return (driver.bus.settings.guid,)


# -- org.freedesktop.DBus.Properties ---------------------------------------------

def _properties(driver, iface):
    if iface == IFACE_DBUS:
        return {"Features": Variant("as", list(FEATURES)),
                "Interfaces": Variant("as", list(driver.interfaces))}
    if iface == IFACE_CONTAINERS:
        return driver.bus.containers.properties()
    return None


@method(IFACE_PROPERTIES, "Get", "ss", "v")
def _prop_get(driver, peer, msg, iface, prop):
    props = _properties(driver, iface)
    if props is None:
        raise DBusError(errors.UNKNOWN_INTERFACE, f'Interface "{iface}" not found')
    if prop not in props:
        raise DBusError(errors.UNKNOWN_PROPERTY, f'Property "{iface}.{prop}" not found')
    return (props[prop],)


@method(IFACE_PROPERTIES, "GetAll", "s", "a{sv}")
def _prop_get_all(driver, peer, msg, iface):
    props = _properties(driver, iface)
    if props is None:
        raise DBusError(errors.UNKNOWN_INTERFACE, f'Interface "{iface}" not found')
    return (props,)


@method(IFACE_PROPERTIES, "Set", "ssv", "")
def _prop_set(driver, peer, msg, iface, prop, value):
    props = _properties(driver, iface)
    if props is None:
        raise DBusError(errors.UNKNOWN_INTERFACE, f'Interface "{iface}" not found')
    if prop not in props:
        raise DBusError(errors.UNKNOWN_PROPERTY, f'Property "{iface}.{prop}" not found')
    raise DBusError(errors.PROPERTY_READ_ONLY, f"Property '{iface}.{prop}' cannot be set")


# -- Introspectable, Peer ----------------------------------------------------------

@method(IFACE_INTROSPECTABLE, "Introspect", "", "s")
def _introspect(driver, peer, msg):
    return (driver_introspection(driver.interfaces, msg.path),)


@method(IFACE_PEER, "Ping", "", "")
def _ping(driver, peer, msg):
    return ()


@method(IFACE_PEER, "GetMachineId", "", "s")
def _get_machine_id(driver, peer, msg):
    override = driver.bus.containers.machine_id_for(peer)
    if override is not None:
        return (override,)
    return (driver.bus.settings.machine_id,)


# -- Monitoring ----------------------------------------------------------------------

@method(IFACE_MONITORING, "BecomeMonitor", "asu", "")
def _become_monitor(driver, peer, msg, rules, flags):
    driver.require_privileged(peer, "BecomeMonitor")
    if flags != 0:
        raise DBusError(errors.INVALID_ARGS, "BecomeMonitor does not support any flags yet")
    parsed = [MatchRule(text, owner=peer) for text in rules]
    return Reply((), after=lambda: _make_monitor(driver.bus, peer, parsed))


def _make_monitor(bus, peer, rules) -> None:
    # A monitor looks to everyone else as if it had disconnected.
    for rule in list(peer.rules):
        bus.remove_rule(peer, rule)
    unique = peer.unique_name
    for change in bus.registry.drop_peer(peer):
        bus.announce(change)
    bus.emit_signal("NameLost", "s", (unique,), destination=peer)
    del bus.peers[unique]
    peer.is_monitor = True
    peer.monitor_rules = rules
    bus.monitors.append(peer)
    bus.emit_name_owner_changed(unique, unique, "")


# -- Debug.Stats ---------------------------------------------------------------------

@method(IFACE_STATS, "GetStats", "", "a{sv}")
def _get_stats(driver, peer, msg):
    driver.require_privileged(peer, "GetStats")
    bus = driver.bus
    return ({
        "Serial": Variant("u", bus._serial),
        "ActiveConnections": Variant("u", len(bus.peers)),
        "IncompleteConnections": Variant("u", len(bus.connections) - len(bus.peers) - len(bus.monitors)),
        "MatchRules": Variant("u", bus.matches.count),
        "BusNames": Variant("u", len(bus.registry.names()) + len(bus.peers)),
    },)


@method(IFACE_STATS, "GetConnectionStats", "s", "a{sv}")
def _get_connection_stats(driver, peer, msg, name):
    driver.require_privileged(peer, "GetConnectionStats")
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
    },)


@method(IFACE_STATS, "GetAllMatchRules", "", "a{sas}")
def _get_all_match_rules(driver, peer, msg):
    driver.require_privileged(peer, "GetAllMatchRules")
    return ({p.unique_name: [r.text for r in p.rules] for p in driver.bus.peers.values()},)


def register_methods(interface: str, table: dict) -> None:
    """Let another layer (containers) add driver methods: {member: (in, out, fn)}."""
    for member, (in_sig, out_sig, fn) in table.items():
        _METHODS[(interface, member)] = (in_sig, out_sig, fn)
